--[[
crossref.lua: numbered figures, tables and equations, and their @fig:/@tbl:/@eq:
cross-references, computed inside pandoc.

Rootstock numbers these with three Python JSON filters (pandoc-fignos 2.4.0,
pandoc-eqnos 2.5.0, pandoc-tablenos 2.3.0), each of which makes pandoc serialise the
whole document to JSON and parse it back, and which only run on pandoc 2. This
filter gives what they give, so a manuscript written for rootstock renders the same:
on pandoc 2.19 their HTML element for element, and on pandoc 3 (which the build runs)
the same text, numbers and links in pandoc 3's markup:

  * targets: a paragraph holding a single image with an id "fig:..." (or a div with
    such an id), a table whose caption ends in {#tbl:...}, and math followed by
    {#eq:...}; numbered in document order, or by level-1 section with
    xnos-number-by-section, or given a fixed label with tag="...";
  * captions start with "Figure 1:" / "Table 1:", and each target is wrapped in the
    same <div class="fignos">, <div class="tablenos"> or <span class="eqnos"> markup;
  * references @fig:x, +@fig:x (lower-case name), *@fig:x (capitalised name), !@fig:x
    (number only), {@fig:x}, [@fig:x] and @fig:x{nolink=True} become numbered links,
    with names when xnos-cleveref (or fignos-/eqnos-/tablenos-cleveref) is set;
  * the xnos metadata options that change HTML (caption names and separators, plus and
    star names, xnos-capitalise, eqnos-eqref, number-by-section, number-offset).

It goes through the top-level blocks in order, numbering targets and putting a
placeholder where each reference's number goes, then fills in the placeholders of the
blocks that have some once every number is known. The first time Lua reads anything
of a pandoc element costs about as much as all the rest of this filter, so a
paragraph whose text shows nothing to do is passed over whole, the elements of the
others are asked for their type once, and a block is walked into only when something
inside it may need work. Without footnotes (which pandoc's stringify leaves out) the
text says it all; the build tells the filter so with LIVINGREVIEW_NO_NOTES. Then a
paragraph whose references are all written plainly ("@fig:x", nothing around them
that the filters read) is not taken apart at all: a second pass, once every number is
known, replaces them in one walk of the paragraph, in the containers where the
filters replace them. The build also says, with LIVINGREVIEW_BRACES, what the text of
a paragraph must hold for an attribute block to follow its math, images or spans, so
that a paragraph whose braces are its formulas' is passed over too.

As a module (manuscript.lua loads it so, with LIVINGREVIEW_MODULE set), it exports
the two passes, number(doc) and refer(doc, plan, rename), so that the second walks
each block once for this filter and citekeys.lua together.

Known differences, all in markup rootstock's chain cannot build or builds at random:
an anonymous target ({#fig:}) gets a counter where the filters use a random uuid, and
a bracketed reference in emphasis, a link or a caption keeps its brackets where the
filters emit a span without attributes, which pandoc then refuses to read. On pandoc 3
an image alone in a list item is a figure with its caption shown (pandoc 3 reads it
as one), where pandoc 2 showed the image alone.
]]

local NBSP = '\u{a0}'
local HTML = FORMAT:match('html') ~= nil or FORMAT:match('epub') ~= nil
-- Pandoc 3 reads a captioned image alone in a paragraph as a Figure block, where pandoc 2
-- (and so the xnos filters) saw a paragraph holding an image titled "fig:". The filter
-- works on pandoc 2's form and turns figures back into Figure blocks when it is done.
local PANDOC3 = PANDOC_VERSION >= {3}
-- Set when a block gets a figure in pandoc 2's form, which pandoc 3 must see as a
-- Figure block: turned into one once the walks are over (they would walk into it).
local figures = false

-- --------------------------------------------------------------- options

-- The three filters read the same kinds of options under their own prefixes.
local KINDS = {
  fig = {prefix = 'fignos', caption = 'Figure', plus = {'fig.', 'figs.'}, star = {'Figure', 'Figures'},
         div = 'fignos'},
  eq = {prefix = 'eqnos', plus = {'eq.', 'eqs.'}, star = {'Equation', 'Equations'}},
  tbl = {prefix = 'tablenos', caption = 'Table', plus = {'table', 'tables'}, star = {'Table', 'Tables'},
         div = 'tablenos'},
}
local ORDER = {'fig', 'eq', 'tbl'}  -- the order rootstock runs the filters in

local SEPARATORS = {none = '', colon = ':', period = '.', space = ' ', quad = '\u{2000}', newline = '\n'}

--- A metadata value as the xnos filters read it: strings, booleans, lists of strings.
local function meta_value(value)
  local kind = pandoc.utils.type(value)
  if kind == 'boolean' or kind == 'string' then
    return value
  elseif kind == 'Inlines' then
    local text = pandoc.utils.stringify(value)
    if text == 'true' or text == 'True' or text == 'TRUE' then return true end
    if text == 'false' or text == 'False' or text == 'FALSE' then return false end
    return text
  elseif kind == 'List' then
    local out = {}
    for i, item in ipairs(value) do out[i] = pandoc.utils.stringify(item) end
    return out
  end
  return pandoc.utils.stringify(value)
end

--- The first of `names` that is set in `meta`, as a Lua value (nil when none is).
local function option(meta, ...)
  for _, name in ipairs({...}) do
    if meta[name] ~= nil then return meta_value(meta[name]) end
  end
  return nil
end

--- Python's str.title(), which the filters apply to derive names: "fig." -> "Fig.".
local function title_case(text)
  local previous_letter = false
  return (text:gsub('.', function(c)
    local letter = c:match('%a') ~= nil
    local out = letter and (previous_letter and c:lower() or c:upper()) or c
    previous_letter = letter
    return out
  end))
end

local function as_pair(value, default)
  if type(value) == 'table' then return {value[1], value[2]} end
  if value ~= nil then return {value, default[2]} end
  return nil
end

local function configure(meta)
  local capitalise = option(meta, 'xnos-capitalise', 'xnos-capitalize') == true
  for _, kind in ipairs(ORDER) do
    local spec = KINDS[kind]
    local p = spec.prefix
    spec.cleveref = option(meta, p .. '-cleveref', 'xnos-cleveref') == true
    spec.by_section = option(meta, p .. '-number-by-section', 'xnos-number-by-section') == true
    spec.offset = tonumber(option(meta, 'xnos-number-offset') or 0) or 0
    if spec.caption then
      spec.caption = option(meta, p .. '-caption-name') or spec.caption
      spec.separator = SEPARATORS[option(meta, p .. '-caption-separator', 'xnos-caption-separator') or 'colon']
        or SEPARATORS.colon
    end
    local plus = as_pair(option(meta, p .. '-plus-name'), spec.plus)
    local plus_changed = plus ~= nil and (plus[1] ~= spec.plus[1] or plus[2] ~= spec.plus[2])
    if plus then
      spec.plus = plus
      if plus_changed then spec.star = {title_case(plus[1]), title_case(plus[2])} end
    end
    spec.star = as_pair(option(meta, p .. '-star-name'), spec.star) or spec.star
    if capitalise and not plus_changed then
      spec.plus = {title_case(spec.plus[1]), title_case(spec.plus[2])}
    end
    spec.eqref = kind == 'eq' and option(meta, 'eqnos-eqref') == true
    spec.targets = {}
    spec.count = 0
    spec.section = nil
  end
end

-- --------------------------------------------------------------- inline lists

--- An inline list being edited, each element's type read once (see the header).
local Seq = {}
Seq.__index = Seq

local function seq_of(list)
  local tags = {}
  for i = 1, #list do tags[i] = list[i].t end
  return setmetatable({x = list, t = tags}, Seq)
end

function Seq:len() return #self.x end
function Seq:tag(i) return self.t[i] end
function Seq:get(i) return self.x[i] end
function Seq:set(i, el, tag) self.x[i] = el; self.t[i] = tag end
function Seq:insert(i, el, tag) table.insert(self.x, i, el); table.insert(self.t, i, tag) end
function Seq:remove(i) table.remove(self.x, i); table.remove(self.t, i) end

--- The text of a Str at index i, or nil when the element is not a Str.
function Seq:str(i)
  if self.t[i] == 'Str' then return self.x[i].text end
  return nil
end

function Seq:set_str(i, text) self:set(i, pandoc.Str(text), 'Str') end

-- --------------------------------------------------------------- attributes

--- Text of inlines as pandocfilters' stringify sees them after the xnos quotify and
--- dollarfy steps: quotes kept, math between dollars.
local function flat_text(inlines, out)
  out = out or {}
  for _, el in ipairs(inlines) do
    local t = el.t
    if t == 'Str' then out[#out + 1] = el.text
    elseif t == 'Space' or t == 'SoftBreak' or t == 'LineBreak' then out[#out + 1] = ' '
    elseif t == 'Math' then out[#out + 1] = '$' .. el.text .. '$'
    elseif t == 'Code' then out[#out + 1] = el.text
    elseif t == 'Quoted' then
      local q = el.quotetype == 'DoubleQuote' and '"' or "'"
      out[#out + 1] = q
      flat_text(el.content, out)
      out[#out + 1] = q
    elseif t == 'Cite' or t == 'Emph' or t == 'Strong' or t == 'Span' or t == 'Link' or t == 'Underline'
      or t == 'Strikeout' or t == 'Superscript' or t == 'Subscript' or t == 'SmallCaps' then
      flat_text(el.content, out)
    elseif t == 'Image' then
      flat_text(el.caption, out)
    end
  end
  return out
end

local function stringify(inlines)
  return table.concat(flat_text(inlines))
end

--- Split an attribute string into words the way pandocattributes does: runs of
--- characters other than space and newline, where "..." and '...' may hold spaces.
local function attribute_words(text)
  local words, i, n = {}, 1, #text
  while i <= n do
    local start, j = i, i
    while j <= n do
      local c = text:sub(j, j)
      if c == ' ' or c == '\n' then break end
      if c == '"' or c == "'" then
        local close = text:find(c, j + 1, true)
        if not close then break end
        j = close + 1
      else
        j = j + 1
      end
    end
    if j > start then words[#words + 1] = text:sub(start, j - 1) end
    i = math.max(j, start) + 1
  end
  return words
end

--- Parse "{#id .class key=value}" as pandoc-xnos does; returns id, classes, and the
--- key-value pairs in order.
local function parse_attributes(text)
  text = text:gsub('^[{}]+', ''):gsub('[{}]+$', '')
  local words = attribute_words(text)
  if #words == 1 and not text:match('^[#.]') and not text:find('=', 1, true) then
    return '', {text}, {}
  end
  local id, classes, pairs_, seen = '', {}, {}, {}
  for _, w in ipairs(words) do
    if w:sub(1, 1) == '#' and id == '' then id = w:sub(2) end
  end
  for _, w in ipairs(words) do
    if w:sub(1, 1) == '.' then classes[#classes + 1] = w:sub(2) end
  end
  for _, w in ipairs(words) do
    if w == '-' then classes[#classes + 1] = 'unnumbered' end
  end
  for _, w in ipairs(words) do
    local first = w:sub(1, 1)
    if first ~= '#' and first ~= '.' and w:find('=', 1, true) and first ~= '=' and w:sub(-1) ~= '=' then
      local key, value = w:match('^([^=]*)=(.*)$')
      local a, b = value:sub(1, 1), value:sub(-1)
      if (a == '"' and b == '"') or (a == "'" and b == "'") then value = value:sub(2, -2) end
      if seen[key] then
        pairs_[seen[key]][2] = value
      else
        pairs_[#pairs_ + 1] = {key, value}
        seen[key] = #pairs_
      end
    end
  end
  return id, classes, pairs_
end

--- Remove an attribute block "{...}" that starts with the Str at index n of `s` (it
--- may run over several elements); returns id, classes, pairs, or nil when there is
--- none. Quotes protect braces, as in pandoc-xnos.
local function extract_attributes(s, n)
  local first = s:str(n)
  if not (first and first:sub(1, 1) == '{') then return nil end
  local parts, quote = {}, nil
  for i = n, s:len() do
    local text = s:str(i)
    if text then
      for j = 1, #text do
        local c = text:sub(j, j)
        if c == quote then
          quote = nil
        elseif c == '"' or c == "'" then
          quote = c
        elseif c == '}' and quote == nil then
          parts[#parts + 1] = pandoc.Str(text:sub(1, j))
          local tail = text:sub(j + 1)
          for _ = n, i do s:remove(n) end
          if tail ~= '' then s:insert(n, pandoc.Str(tail), 'Str') end
          local attrs = stringify(parts):gsub('^%s+', ''):gsub('%s+$', '')
          return parse_attributes(attrs)
        end
      end
    end
    parts[#parts + 1] = s:get(i)
  end
  return nil
end

local function get_pair(pairs_, key)
  for _, kv in ipairs(pairs_) do
    if kv[1] == key then return kv[2] end
  end
  return nil
end

local function set_pair(pairs_, key, value)
  for _, kv in ipairs(pairs_) do
    if kv[1] == key then kv[2] = value; return end
  end
  pairs_[#pairs_ + 1] = {key, value}
end

local function attr_pairs(attr)
  local out = {}
  for _, kv in ipairs(attr.attributes) do out[#out + 1] = {kv[1], kv[2]} end
  return out
end

-- --------------------------------------------------------------- targets

local section = 0   -- level-1 sections seen so far (for number-by-section)
local sections_in_document = 0
local unreferenceable = 0

--- Register a target of `kind` with id `id`; returns its number (an integer) or its tag
--- (a string), the possibly rewritten id, and the attribute pairs (with the tag set).
local function register(kind, id, pairs_, section_shift)
  local spec = KINDS[kind]
  local secno = section + (section_shift or 0)
  if id == kind .. ':' then
    -- The filters give an anonymous target a random uuid; a counter keeps builds reproducible.
    unreferenceable = unreferenceable + 1
    id = id .. 'unreferenceable-' .. unreferenceable
  end
  if secno ~= spec.section then
    spec.section = secno
    if spec.by_section then spec.count = 0 end
  end
  local tag = get_pair(pairs_, 'tag')
  if tag == nil then
    spec.count = spec.count + 1
    if spec.by_section and HTML then
      tag = tostring(secno + spec.offset) .. '.' .. tostring(spec.count)
    end
  end
  local number
  if tag ~= nil then
    if tag:sub(1, 1) == '"' and tag:sub(-1) == '"' then
      tag = tag:gsub('^"+', ''):gsub('"+$', '')
    elseif tag:sub(1, 1) == "'" and tag:sub(-1) == "'" then
      tag = tag:gsub("^'+", ''):gsub("'+$", '')
    end
    set_pair(pairs_, 'tag', tag)
    number = tag
  else
    number = spec.count
  end
  spec.targets[id] = {number = number, duplicate = spec.targets[id] ~= nil}
  return number, id, pairs_
end

local function is_math_tag(number)
  return type(number) == 'string' and #number >= 2 and number:sub(1, 1) == '$' and number:sub(-1) == '$'
end

--- "Figure 1:" (or "Figure B.1:"), the label that starts a numbered caption.
local function caption_label(spec, number)
  local label
  if type(number) == 'number' then
    label = {pandoc.Str(spec.caption .. NBSP), pandoc.Str(tostring(number) .. spec.separator)}
  elseif is_math_tag(number) then
    label = {pandoc.Str(spec.caption .. NBSP),
             pandoc.Math('InlineMath', number:gsub(' ', '\\ '):sub(2, -2)), pandoc.Str(spec.separator)}
  else
    label = {pandoc.Str(spec.caption .. NBSP), pandoc.Str(number .. spec.separator)}
  end
  if HTML then
    table.insert(label, 1, pandoc.RawInline('html', '<span>'))
    table.insert(label, pandoc.RawInline('html', '</span>'))
  end
  return label
end

local function labelled_caption(spec, number, caption)
  local out = caption_label(spec, number)
  out[#out + 1] = pandoc.Space()
  for _, el in ipairs(caption) do out[#out + 1] = el end
  return out
end

-- Math whose attributes have been read, until the walk reaches it in document order
-- and numbers it (pandoc's Math has no attributes of its own).
local EQ_MARK = 'livingreview-crossref-equation'
-- A [@fig:x] reference, until we know whether attributes follow its brackets.
local BRACKETS_MARK = 'livingreview-crossref-bracketed'
-- The number a reference shows, filled in once every target is numbered.
local NUMBER_MARK = 'livingreview-crossref-number'
local placeholders = false  -- set when a block gets a number to fill in

-- Whether footnotes may occur: pandoc's stringify leaves them out, so only without
-- them does a paragraph's text tell all that lies inside it, and only without them is
-- every numbered equation reached, in document order, as a paragraph is taken in hand
-- (with them, one in a footnote precedes the rest of its paragraph). The build sets
-- LIVINGREVIEW_NO_NOTES when manuscript.md has no footnote syntax at all.
local NOTES_POSSIBLE = os.getenv('LIVINGREVIEW_NO_NOTES') == nil

-- What the text of a paragraph holds wherever an attribute block "{...}" follows math,
-- an image or a span in it, which the filters would attach: the build reads them from
-- the Markdown (LIVINGREVIEW_BRACES, one a line, each "{" and what follows it there), so
-- that a paragraph whose braces all belong to its formulas is passed over. Unset: any
-- "{" may start one.
local BRACE_NEEDLES = nil
do
  local hint = os.getenv('LIVINGREVIEW_BRACES')
  if hint then
    BRACE_NEEDLES = {}
    for needle in hint:gmatch('[^\n]+') do BRACE_NEEDLES[#BRACE_NEEDLES + 1] = needle end
  end
end

-- Whether references written plainly ("@fig:x", nothing around them) can wait for a
-- walk of their paragraph once every number is known, instead of the paragraph being
-- taken apart (see the header). Only where a paragraph's text tells all (no footnotes)
-- and where elements are read lazily (pandoc 3).
local DEFER = PANDOC3 and not NOTES_POSSIBLE

local replaced_refs = 0  -- references replaced so far (to tell whether any were missed)
local placeholder_count = 0  -- number placeholders made so far

local function has_class(el, class)
  return el.classes[1] == class
end

--- pandoc-fignos: an attribute block right after an image replaces its attributes.
local function attach_images(s)
  local changed = false
  for i = 1, s:len() do
    if s:tag(i) == 'Image' then
      local id, classes, pairs_ = extract_attributes(s, i + 1)
      if id then
        local image = s:get(i)
        image.attr = pandoc.Attr(id, classes, pairs_)
        s:set(i, image, 'Image')
        changed = true
      end
    end
  end
  return changed
end

--- pandoc-eqnos: an attribute block after math (a space may come between) labels it.
local number_equation  -- defined below

local function attach_math(s)
  local changed = false
  local i = 1
  while i <= s:len() do
    if s:tag(i) == 'Math' then
      local n = s:tag(i + 1) == 'Space' and i + 2 or i + 1
      local id, classes, pairs_ = extract_attributes(s, n)
      if id then
        table.insert(classes, 1, EQ_MARK)
        local marked = pandoc.Span({s:get(i)}, pandoc.Attr(id, classes, pairs_))
        changed = true
        if NOTES_POSSIBLE then
          s:set(i, marked, 'Span')  -- numbered when the walk reaches it
        else
          s:remove(i)
          local numbered = number_equation(marked)
          for k, el in ipairs(numbered) do s:insert(i + k - 1, el, el.t) end
          i = i + #numbered - 1
        end
      end
    end
    i = i + 1
  end
  return changed
end

--- pandoc-xnos marks any paragraph or plain block made of one image as a figure
--- (which also drops the image's title).
local function mark_figure(x)
  if #x ~= 1 or x[1].t ~= 'Image' then return false end
  figures = true
  if x[1].title == 'fig:' then return false end
  local image = x[1]
  image.title = 'fig:'
  x[1] = image
  return true
end

--- A Figure block (pandoc 3) as pandoc 2 read it: a paragraph with one image titled "fig:".
local function figure_as_para(figure)
  local content = figure.content
  if #content ~= 1 or (content[1].t ~= 'Plain' and content[1].t ~= 'Para') then return nil end
  local inlines = content[1].content
  if #inlines ~= 1 or inlines[1].t ~= 'Image' then return nil end
  local image = inlines[1]
  if image.identifier == '' then image.identifier = figure.identifier end
  image.title = 'fig:' .. image.title
  figures = true
  return pandoc.Para({image})
end

--- A paragraph holding one image titled "fig:...", as a Figure block with the image's
--- caption (as pandoc 2's writer shows it); nil for any other block.
local function as_figure(block)
  if block.t ~= 'Para' then return nil end
  local x = block.content
  if not (#x == 1 and x[1].t == 'Image' and x[1].title:sub(1, 4) == 'fig:') then return nil end
  local image = x[1]
  image.title = image.title:sub(5)
  local id = image.identifier
  if HTML then id = '' else image.identifier = '' end
  return pandoc.Figure({pandoc.Plain({image})}, {pandoc.Plain(image.caption)}, pandoc.Attr(id))
end

local function number_figure(image)
  local number, id, pairs_ = register('fig', image.identifier, attr_pairs(image.attr))
  local spec = KINDS.fig
  image.caption = labelled_caption(spec, number, image.caption)
  figures = true
  if not HTML then
    image.identifier = id
    return {pandoc.Para({image})}
  end
  image.attr = pandoc.Attr('', image.classes, pairs_)
  return {
    pandoc.RawBlock('html', '<div id="' .. id .. '" class="' .. spec.div .. '">'),
    pandoc.Para({image}),
    pandoc.RawBlock('html', '</div>'),
  }
end

number_equation = function(span)
  local math_ = span.content[1]
  local id = span.identifier
  if not id:match('^eq:') then
    return {math_}
  end
  local anonymous = id == 'eq:'
  local number
  number, id = register('eq', id, attr_pairs(span.attr))
  if not HTML then
    local text = type(number) == 'number' and tostring(number)
      or (is_math_tag(number) and number:gsub(' ', '\\ '):sub(2, -2) or '\\text{' .. number:gsub(' ', '\\ ') .. '}')
    return {pandoc.Math(math_.mathtype, math_.text .. '\\qquad (' .. text .. ')')}
  end
  local label = tostring(number)
  local eqno = is_math_tag(label) and pandoc.Math('InlineMath', '(' .. label:sub(2, -2) .. ')')
    or pandoc.Str('(' .. label .. ')')
  return {
    pandoc.RawInline('html', anonymous and '<span class="eqnos">' or '<span id="' .. id .. '" class="eqnos">'),
    math_,
    pandoc.RawInline('html', '<span class="eqnos-number">'),
    eqno,
    pandoc.RawInline('html', '</span></span>'),
  }
end

-- --------------------------------------------------------------- references

local warned = {}
local function warn(message)
  if not warned[message] then
    warned[message] = true
    io.stderr:write('[WARNING] crossref: ', message, '\n')
  end
end

local function kind_of(label)
  local prefix = label:match('^(%a+):')
  if prefix and KINDS[prefix] then return prefix end
  return nil
end

--- The */+/! written just before a reference, removed from the text; returns the new
--- index of the reference and the modifier.
local function take_modifier(s, i, citation)
  local prefix = citation.prefix
  local text, in_prefix
  if #prefix > 0 and prefix[#prefix].t == 'Str' then
    text, in_prefix = prefix[#prefix].text, true
  elseif i > 1 then
    text = s:str(i - 1)
  end
  if not text or text == '' then return i, nil end
  local modifier = text:sub(-1)
  if modifier ~= '*' and modifier ~= '+' and modifier ~= '!' then return i, nil end
  if #text > 1 then
    if in_prefix then prefix[#prefix] = pandoc.Str(text:sub(1, -2)) else s:set_str(i - 1, text:sub(1, -2)) end
  elseif in_prefix then
    prefix:remove(#prefix)
  else
    s:remove(i - 1)
    i = i - 1
  end
  citation.prefix = prefix
  return i, modifier
end

--- Curly braces around a reference, {@fig:x}, are dropped.
local function drop_braces(s, i, citation)
  local prefix, suffix = citation.prefix, citation.suffix
  if #prefix > 0 and #suffix > 0 then
    local last, head = prefix[#prefix], suffix[1]
    if last.t == 'Str' and head.t == 'Str' and last.text:sub(-1) == '{' and head.text:sub(1, 1) == '}' then
      if #head.text > 1 then suffix[1] = pandoc.Str(head.text:sub(2)) else suffix:remove(1) end
      if #last.text > 1 then prefix[#prefix] = pandoc.Str(last.text:sub(1, -2)) else prefix:remove(#prefix) end
      citation.prefix, citation.suffix = prefix, suffix
    end
  elseif i > 1 and i < s:len() then
    local before, after = s:str(i - 1), s:str(i + 1)
    if before and after and before:sub(-1) == '{' and after:sub(1, 1) == '}' then
      if #after > 1 then s:set_str(i + 1, after:sub(2)) else s:remove(i + 1) end
      if #before > 1 then
        s:set_str(i - 1, before:sub(1, -2))
      else
        s:remove(i - 1)
        return i - 1
      end
    end
  end
  return i
end

--- The inlines that replace a reference: the name (with clever references) and a
--- placeholder for the number, which may not be known yet.
local function replacement(kind, label, modifier, nolink)
  local spec = KINDS[kind]
  local clever, plus
  if modifier then
    clever, plus = modifier == '*' or modifier == '+', modifier == '+'
  else
    clever, plus = spec.cleveref, spec.cleveref
  end
  placeholders = true
  placeholder_count = placeholder_count + 1
  local number = pandoc.Span({pandoc.Str(label)},
    pandoc.Attr('', {NUMBER_MARK}, {{'kind', kind}, {'label', label}, {'nolink', nolink and '1' or ''}}))
  if clever then
    return {pandoc.Str((plus and spec.plus[1] or spec.star[1]) .. NBSP), number}, {'Str', 'Span'}
  end
  return {number}, {'Span'}
end

--- The number a reference to `label` shows: a link to the target, or "??" for an
--- unknown label.
local function number_for(kind, label, nolink)
  local spec = KINDS[kind]
  local target = spec.targets[label]
  if not target then
    warn('bad reference: @' .. label)
  elseif target.duplicate then
    warn('referenced label has duplicate: ' .. label)
  end
  local text = target and tostring(target.number) or '??'
  if spec.eqref then text = '(' .. text .. ')' end
  local elem
  if #text >= 2 and text:sub(1, 1) == '$' and text:sub(-1) == '$' then
    elem = pandoc.Math('InlineMath', text:sub(2, -2))
  else
    elem = pandoc.Str(text)
  end
  if target and not nolink then
    elem = pandoc.Link({elem}, '#' .. label, '')
  end
  return elem
end

--- The number a placeholder stands for.
local function fill_number(span)
  local attributes = span.attributes
  return number_for(attributes.kind, attributes.label, attributes.nolink ~= '')
end

--- What replaces a reference written plainly, "@fig:x", once every number is known:
--- what replacement() and fill_number() make of it together.
local function plain_reference(kind, label)
  local spec = KINDS[kind]
  local number = number_for(kind, label, false)
  if spec.cleveref then return {pandoc.Str(spec.plus[1] .. NBSP), number} end
  return {number}
end

local process_nested  -- defined below: references inside a reference's prefix and suffix

--- Replace every reference of `kind` in `s`; returns whether any was, and whether any
--- was bracketed (and so wrapped in a span to settle).
local function replace_references(s, kind)
  local changed, bracketed = false, false
  local i = 1
  while i <= s:len() do
    if s:tag(i) == 'Cite' then
      local cite = s:get(i)
      local citation = cite.citations[1]
      local label = citation.id
      if kind_of(label) == kind then
        changed = true
        replaced_refs = replaced_refs + 1
        local modifier
        i, modifier = take_modifier(s, i, citation)
        i = drop_braces(s, i, citation)
        local shown = stringify(cite.content)
        local pairs_ = {}
        if #citation.suffix == 0 and shown:sub(-1) ~= ']' then
          local _, _, found = extract_attributes(s, i + 1)
          if found then pairs_ = found end
        end
        process_nested(citation)
        local nolink = get_pair(pairs_, 'nolink')
        nolink = nolink ~= nil and (nolink:sub(1, 1):upper() .. nolink:sub(2):lower()) == 'True'
        local inlines, tags = replacement(kind, label, modifier, nolink)
        if shown:sub(1, 1) == '[' and shown:sub(-1) == ']' then
          -- A bracketed reference keeps its prefix and suffix (pandoc drops the space
          -- after the prefix, which the filters put back).
          local prefix = citation.prefix
          local content = {}
          for _, p in ipairs(prefix) do content[#content + 1] = p end
          if #prefix > 0 then
            local last = stringify(prefix):sub(-1)
            if last ~= '{' and last ~= '+' and last ~= '*' and last ~= '!' then
              content[#content + 1] = pandoc.Space()
            end
          end
          for _, r in ipairs(inlines) do content[#content + 1] = r end
          for _, x in ipairs(citation.suffix) do content[#content + 1] = x end
          s:set(i, pandoc.Span(content, pandoc.Attr('', {BRACKETS_MARK})), 'Span')
          bracketed = true
          i = i + 1
        else
          s:remove(i)
          for k, r in ipairs(inlines) do s:insert(i + k - 1, r, tags[k]) end
          i = i + #inlines
        end
      else
        i = i + 1
      end
    else
      i = i + 1
    end
  end
  return changed, bracketed
end

local function unwrap(s, i, span)
  s:remove(i)
  s:insert(i, pandoc.Str('['), 'Str')
  local n = 0
  for _, c in ipairs(span.content) do
    n = n + 1
    s:insert(i + n, c, c.t)
  end
  s:insert(i + n + 1, pandoc.Str(']'), 'Str')
end

--- What the filters do to a paragraph after its references: a span followed by an
--- attribute block takes those attributes; a bracketed reference without any is shown
--- with its brackets.
local function settle_spans(s)
  local changed = false
  local i = 1
  while i <= s:len() do
    if s:tag(i) == 'Span' and not has_class(s:get(i), NUMBER_MARK) then
      local span = s:get(i)
      local id, classes, pairs_ = extract_attributes(s, i + 1)
      if id then
        span.attr = pandoc.Attr(id, classes, pairs_)
        s:set(i, span, 'Span')
        changed = true
        i = i + 1
      elseif has_class(span, BRACKETS_MARK) then
        unwrap(s, i, span)
        changed = true  -- and rescan the unwrapped content, which may hold spans
      else
        i = i + 1
      end
    else
      i = i + 1
    end
  end
  return changed
end

--- Bracketed references in containers the filters never settle keep their brackets.
local function unwrap_all(s)
  local changed = false
  for i = s:len(), 1, -1 do
    if s:tag(i) == 'Span' and has_class(s:get(i), BRACKETS_MARK) then
      unwrap(s, i, s:get(i))
      changed = true
    end
  end
  return changed
end

--- Whether `text` may hold an attribute block the filters would attach (see BRACE_NEEDLES).
local function may_hold_attributes(text)
  if not text:find('{', 1, true) then return false end
  if BRACE_NEEDLES == nil then return true end
  for _, needle in ipairs(BRACE_NEEDLES) do
    if text:find(needle, 1, true) then return true end
  end
  return false
end

--- What the text of an element says it may hold, so that most paragraphs are passed
--- over on their text alone: an attribute block, and references of each kind.
local function features(el)
  local text = pandoc.utils.stringify(el)
  local figs, eqs, tbls = 0, 0, 0
  -- Most paragraphs cite, few refer: a plain search first, the count only then.
  if text:find('@fig:', 1, true) or text:find('@eq:', 1, true) or text:find('@tbl:', 1, true) then
    for prefix in text:gmatch('@(%a+):') do
      if prefix == 'fig' then figs = figs + 1
      elseif prefix == 'eq' then eqs = eqs + 1
      elseif prefix == 'tbl' then tbls = tbls + 1 end
    end
  end
  return {
    text = text,
    empty = text == '',
    brace = may_hold_attributes(text),
    fig = figs > 0, eq = eqs > 0, tbl = tbls > 0,
    refs = figs + eqs + tbls,  -- at most this many references, wherever they are
  }
end

--- Whether every reference in a paragraph's text is written plainly: no modifier (*, +,
--- !) or brace before it, no brace, bracket or attributes right after it, and not inside
--- brackets (a bracketed reference, or one in a citation's prefix). Such references need
--- no look at their neighbours, and are replaced by a walk once every number is known.
local function plain_references(text)
  for at, prefix in text:gmatch('()@(%a+):') do
    if KINDS[prefix] then
      if at > 1 and text:find('^[%+%*!{%[%-]', at - 1) then return false end
      if text:match('^[^%s]*', at):find('[{}%[%]]') then return false end
      local before = text:sub(1, at - 1)
      local open = before:match('^.*()%[')
      if open and open > (before:match('^.*()%]') or 0) then return false end
    end
  end
  return true
end

--- References in an inline list other than a paragraph's (emphasis, a caption, a
--- citation's prefix, ...), kind after kind as the three filters run.
local function process_inlines(list)
  local s = seq_of(list)
  local changed = false
  for _, kind in ipairs(ORDER) do
    changed = replace_references(s, kind) or changed
  end
  return unwrap_all(s) or changed
end

process_nested = function(citation)
  local prefix, suffix = citation.prefix, citation.suffix
  if #prefix > 0 and process_inlines(prefix) then citation.prefix = prefix end
  if #suffix > 0 and process_inlines(suffix) then citation.suffix = suffix end
end

--- A paragraph's or plain block's inlines, step by step as the three filters treat
--- them: image attributes, figure references, math attributes, equation references,
--- table references, each followed by settling the spans. Steps the text rules out
--- are skipped.
local function process_paragraph_seq(s, x, found)
  local changed = false
  if found.brace then changed = attach_images(s) end
  changed = mark_figure(x) or changed
  for _, kind in ipairs(ORDER) do
    if kind == 'eq' and found.brace then changed = attach_math(s) or changed end
    if found[kind] then
      local replaced, bracketed = replace_references(s, kind)
      if replaced then
        changed = true
        if bracketed or found.brace then settle_spans(s) end
      end
    end
  end
  if found.brace then changed = settle_spans(s) or changed end
  return changed
end

local function process_paragraph(x, found)
  local s = seq_of(x)
  local changed = process_paragraph_seq(s, x, found)
  return changed, s
end

local function is_figure(x)
  return #x == 1 and x[1].t == 'Image' and x[1].title:sub(1, 4) == 'fig:' and x[1].identifier:match('^fig:') ~= nil
end

--- A paragraph or plain block. Returns what replaces it (nil: unchanged), whether
--- anything inside it still needs a visit, and, when that is not so, its inlines
--- (with their types) for the numbers to be filled in without another walk.
local function take_paragraph(block, from_figure, found)
  found = found or features(block)
  local busy = found.brace or found.refs > 0
  -- Pandoc 3 reads a block's content only when Lua asks for it, and then must convert
  -- the whole block back: a paragraph with nothing to do is left untouched. It may be a
  -- lone image (which the filters make a figure) only when it came from a Figure block
  -- or shows no text: one with a caption would have been read as a Figure.
  local alone = from_figure or found.empty or not PANDOC3
  if not busy and not alone then return nil, NOTES_POSSIBLE, nil end
  local x = block.content
  local changed, s = false, nil
  local before = replaced_refs
  if busy then
    changed, s = process_paragraph(x, found)
  else
    changed = mark_figure(x)
  end
  -- Nested containers (emphasis, captions, a citation's prefix) need a visit when
  -- the text holds references this list did not.
  local descend = NOTES_POSSIBLE or replaced_refs - before < found.refs
  if block.t == 'Para' and is_figure(x) then
    return number_figure(x[1]), descend, nil
  end
  if not changed then return nil, descend, s end
  block.content = x
  return block, descend, s
end

local function on_paragraph(block)
  local result, descend = take_paragraph(block)
  return result, descend
end

local function on_figure(figure)
  local para = figure_as_para(figure)
  if not para then return nil end
  return take_paragraph(para, true) or para
end

--- Fill in the numbers of a paragraph's placeholders from its inlines; false when
--- some of them lie deeper (inside a span with attributes) and a walk must find them.
local function fill_in_place(block, s, expected)
  local filled = 0
  for i = 1, s:len() do
    if s:tag(i) == 'Span' and has_class(s:get(i), NUMBER_MARK) then
      local number = fill_number(s:get(i))
      s:set(i, number, number.t)
      filled = filled + 1
    end
  end
  if filled ~= expected then return false end
  block.content = s.x
  return true
end

--- A table: its caption's figure and equation references, then the attribute block
--- that labels the table, its number, and the table references.
local function on_table(tbl)
  local caption = tbl.caption
  local long = caption.long
  local first = long[1]
  if not first or (first.t ~= 'Plain' and first.t ~= 'Para') then return nil end
  local x = first.content
  local s = seq_of(x)
  local changed = attach_images(s)
  changed = mark_figure(x) or changed
  if replace_references(s, 'fig') then settle_spans(s); changed = true end
  changed = attach_math(s) or changed
  if replace_references(s, 'eq') then settle_spans(s); changed = true end
  local n = 1
  while n <= s:len() and not (s:str(n) or ''):match('^{') do n = n + 1 end
  local id, classes, pairs_ = extract_attributes(s, n)
  if id then
    tbl.attr = pandoc.Attr(id, classes, pairs_)
    changed = true
  end
  local number
  if tbl.identifier:match('^tbl:') then
    -- Unlike a figure, a table keeps the attributes it was written with: a tag from
    -- number-by-section shows in the caption only.
    number, id = register('tbl', tbl.identifier, attr_pairs(tbl.attr))
    tbl.identifier = id
    x = labelled_caption(KINDS.tbl, number, x)
    s = seq_of(x)
    changed = true
  end
  if replace_references(s, 'tbl') then settle_spans(s); changed = true end
  changed = settle_spans(s) or changed
  if not changed then return nil end
  first.content = x
  long[1] = first
  caption.long = long
  tbl.caption = caption
  if number == nil or not HTML then return tbl end
  return {
    pandoc.RawBlock('html', '<div id="' .. tbl.identifier .. '" class="' .. KINDS.tbl.div .. '">'),
    tbl,
    pandoc.RawBlock('html', '</div>'),
  }
end

local function on_inlines_of(field)
  return function(el)
    if features(el).refs == 0 then return nil end
    local x = el[field]
    if process_inlines(x) then
      el[field] = x
      return el
    end
    return nil
  end
end

-- --------------------------------------------------------------- the walks

local function count_sections(doc)
  local count = 0
  doc:walk{
    Header = function(h)
      if h.level == 1 and not h.classes:includes('unnumbered') then count = count + 1 end
      return nil
    end,
  }
  return count
end

local function add_equation_style(meta)
  -- pandoc-eqnos's stylesheet, which sets equation numbers on the right.
  local style = pandoc.RawBlock('html', '\n<!-- pandoc-eqnos: equation style -->\n<style'
    .. (FORMAT == 'html4' and ' type="text/css"' or '') .. '>\n'
    .. '  .eqnos { display: inline-block; position: relative; width: 100%; }\n'
    .. '  .eqnos br { display: none; }\n'
    .. '  .eqnos-number { position: absolute; right: 0em; top: 50%; line-height: 0; }\n'
    .. '</style>\n')
  local includes = meta['header-includes']
  local block = pandoc.MetaBlocks({style})
  if includes == nil then
    meta['header-includes'] = block
  elseif pandoc.utils.type(includes) == 'List' then
    includes:insert(block)
    meta['header-includes'] = includes
  else
    meta['header-includes'] = pandoc.MetaList({includes, block})
  end
end

-- The walk that numbers targets and turns references into placeholders, inside any
-- block but a paragraph taken in hand directly.
local walker = {
  traverse = 'topdown',
  Header = function(h)
    if h.level == 1 and not h.classes:includes('unnumbered') then section = section + 1 end
    return on_inlines_of('content')(h)
  end,
  Div = function(div)
    if div.identifier:match('^fig:') then
      -- pandoc-fignos counts the sections twice before it reaches a div figure, so with
      -- number-by-section such a figure's section number is off by their total.
      register('fig', div.identifier, attr_pairs(div.attr), sections_in_document)
    end
    return nil
  end,
  Para = on_paragraph,
  Plain = on_paragraph,
  Figure = on_figure,
  Table = on_table,
  Span = function(span)
    if has_class(span, EQ_MARK) then return number_equation(span) end
    if has_class(span, NUMBER_MARK) then return nil end
    return on_inlines_of('content')(span)
  end,
  Emph = on_inlines_of('content'),
  Strong = on_inlines_of('content'),
  Image = on_inlines_of('caption'),
  Cite = function(cite)
    local citations = cite.citations
    local first = citations[1]
    if #first.prefix == 0 and #first.suffix == 0 then return nil end
    process_nested(first)
    citations[1] = first
    cite.citations = citations
    return cite
  end,
}

-- The same walk for the inside of a paragraph already taken in hand: the paragraph
-- itself (the walk's first block) is not treated twice.
local inside_paragraph, roots = {}, 0
for name, handler in pairs(walker) do inside_paragraph[name] = handler end
local function skip_root(handler)
  return function(block)
    if roots > 0 then
      roots = roots - 1
      return nil
    end
    return handler(block)
  end
end
inside_paragraph.Para = skip_root(on_paragraph)
inside_paragraph.Plain = skip_root(on_paragraph)

-- Every number being known, the placeholders become the numbers.
local fill = {
  traverse = 'topdown',
  Span = function(span)
    if has_class(span, NUMBER_MARK) then return {fill_number(span)} end
    return nil
  end,
}

local to_figures = {traverse = 'topdown', Para = as_figure}

--- A paragraph (or plain block) taken in hand, and walked into when something inside
--- it needs a visit; returns the blocks that replace it and, when no walk was needed,
--- its inlines with their types.
local function paragraph_blocks(block, from_figure, found)
  local result, descend, inlines = take_paragraph(block, from_figure, found)
  result = result or block
  if result.t then result = {result} end
  if not descend then return result, inlines end
  roots = 0
  for _, b in ipairs(result) do
    if b.t == 'Para' or b.t == 'Plain' then roots = roots + 1 end
  end
  return pandoc.Pandoc(result):walk(inside_paragraph).blocks, nil
end

--- The first pass, in document order: number the targets, and turn references into
--- placeholders, then fill those in. The filters never look at the metadata, so the
--- blocks are walked alone, one by one, to know which of them hold placeholders.
--- Returns the document and, for each of its blocks (by index), what the second pass
--- must do there: 'plain' (replace its plain references), 'none' (it cites nothing)
--- or nil (rename its citations, if asked to).
local function number(doc)
  configure(doc.meta)
  if KINDS.fig.by_section then sections_in_document = count_sections(doc) end

  local blocks, pending, in_place, figure_at, plan = pandoc.List(), {}, {}, {}, {}
  for _, block in ipairs(doc.blocks) do
    placeholders = false
    figures = false
    local made = placeholder_count
    local results, inlines, how
    local kind, from_figure = block.t, false
    if kind == 'Figure' then
      local para = figure_as_para(block)
      if para then block, kind, from_figure = para, 'Para', true end
    end
    if kind == 'Para' or kind == 'Plain' then
      -- Most blocks are paragraphs: take them in hand directly, and walk into one
      -- only when something inside it needs a visit. One whose references are all
      -- written plainly waits for the second pass, untouched.
      local found = features(block)
      if DEFER and found.refs > 0 and not found.brace and not from_figure and plain_references(found.text) then
        results, how = {block}, 'plain'
      else
        results, inlines = paragraph_blocks(block, from_figure, found)
      end
      if not NOTES_POSSIBLE and not found.text:find('@', 1, true) then how = 'none' end
    elseif kind == 'Header' and not NOTES_POSSIBLE and block.level > 1 then
      -- A heading's text tells all it holds, as a paragraph's does.
      local found = features(block)
      if found.refs == 0 then
        results = {block}
        if not found.text:find('@', 1, true) then how = 'none' end
      else
        results = pandoc.Pandoc({block}):walk(walker).blocks
      end
    else
      results = pandoc.Pandoc({block}):walk(walker).blocks
    end
    for _, result in ipairs(results) do
      blocks:insert(result)
      plan[#blocks] = how
      if figures and PANDOC3 then figure_at[#figure_at + 1] = #blocks end
      if placeholders then
        if inlines and #results == 1 then
          in_place[#in_place + 1] = {#blocks, inlines, placeholder_count - made}
        else
          pending[#pending + 1] = #blocks
        end
      end
    end
  end

  -- Every number is known: fill in the references.
  for _, entry in ipairs(in_place) do
    local index, inlines, expected = entry[1], entry[2], entry[3]
    local block = blocks[index]
    if fill_in_place(block, inlines, expected) then
      blocks[index] = block
    else
      pending[#pending + 1] = index
    end
  end
  for _, index in ipairs(pending) do
    blocks[index] = pandoc.Pandoc({blocks[index]}):walk(fill).blocks[1]
  end
  if PANDOC3 then
    for _, index in ipairs(figure_at) do
      local block = blocks[index]
      local kind = block.t
      if kind == 'Para' then
        blocks[index] = as_figure(block) or block
      elseif kind ~= 'RawBlock' then
        blocks[index] = pandoc.Pandoc({block}):walk(to_figures).blocks[1]
      end
    end
  end
  doc.blocks = blocks

  if HTML and next(KINDS.eq.targets) ~= nil then add_equation_style(doc.meta) end
  return doc, plan
end

-- Inline containers whose references the filters leave as they are (a reference in a
-- link or a quotation stays a citation), where emphasis, spans and captions have theirs
-- replaced: the second pass walks each kind with its own walker.
local LEFT_ALONE = {'Link', 'Quoted', 'Underline', 'Strikeout', 'Superscript', 'Subscript', 'SmallCaps'}

--- The second pass, once every number is known: the references deferred by the first
--- (see number) are replaced where they stand, in one walk of their paragraph, and,
--- given `rename` (a function from a Cite to the Cite that replaces it, or nil), every
--- other citation of the document is handed to it on the way, in document order (the
--- metadata first, as a walk of the whole document visits it). A deferred paragraph in
--- which the walk finds anything but plain references (an image, a reference with a
--- prefix, ...) is taken in hand as in the first pass instead.
local function refer(doc, plan, rename)
  local deferred = false
  for _, how in pairs(plan) do
    if how == 'plain' then deferred = true; break end
  end
  if not deferred and not rename then return doc end

  local unusual = false
  local function on_citation(cite)
    if rename then return rename(cite) end
    return nil
  end
  local renaming = {traverse = 'topdown', Cite = on_citation}
  local replacing, leaving = {traverse = 'topdown'}, {traverse = 'topdown', Cite = on_citation}
  local function into(walk)
    return function(el) return el:walk(walk), false end
  end
  replacing.Cite = function(cite)
    local citations = cite.citations
    local first = citations[1]
    local kind = kind_of(first.id)
    if not kind then return on_citation(cite) end
    if #citations > 1 or first.mode ~= 'AuthorInText' or #first.prefix > 0 or #first.suffix > 0
        or stringify(cite.content) ~= '@' .. first.id then
      unusual = true
      return nil, false
    end
    return plain_reference(kind, first.id), false
  end
  local function on_image()
    unusual = true  -- it may be alone in its paragraph, which the filters make a figure
    return nil, false
  end
  replacing.Image, leaving.Image = on_image, on_image
  for _, name in ipairs(LEFT_ALONE) do replacing[name] = into(leaving) end
  for _, name in ipairs({'Emph', 'Strong', 'Span'}) do leaving[name] = into(replacing) end

  --- The blocks that replace deferred paragraph `block`.
  local function referred(block)
    unusual = false
    local result = block:walk(replacing)
    if not unusual then return {result} end
    figures = false
    local taken = paragraph_blocks(block, false)
    local results = pandoc.Pandoc(taken):walk(fill)
    if figures and PANDOC3 then results = results:walk(to_figures) end
    if rename then results = results:walk(renaming) end
    return results.blocks
  end

  local all = doc.blocks
  if not rename then
    -- Only the deferred paragraphs change: the others are not even read (pandoc hands
    -- Lua a list's elements as they are asked for), unless one became several blocks.
    local changed, spread = {}, false
    for i = 1, #all do  -- in document order, as the warnings are
      if plan[i] == 'plain' then
        changed[i] = referred(all[i])
        spread = spread or #changed[i] ~= 1
      end
    end
    if not spread then
      for i, results in pairs(changed) do all[i] = results[1] end
      doc.blocks = all
      return doc
    end
    plan = changed
  else
    doc.meta = pandoc.Pandoc({}, doc.meta):walk(renaming).meta
  end
  local blocks = pandoc.List()
  for i, block in ipairs(all) do
    local how = plan[i]
    if type(how) == 'table' then
      blocks:extend(how)  -- already referred (above)
    elseif how == 'plain' then
      blocks:extend(referred(block))
    elseif how == 'none' or not rename then
      blocks:insert(block)
    else
      blocks:insert(block:walk(renaming))
    end
  end
  doc.blocks = blocks
  return doc
end

local crossref = {number = number, refer = refer, KINDS = KINDS}

-- Loaded by another filter (manuscript.lua), this file is a module; run by pandoc, it
-- is the filter.
if LIVINGREVIEW_MODULE then return crossref end

function Pandoc(doc)
  local plan
  doc, plan = number(doc)
  return refer(doc, plan, nil)
end
