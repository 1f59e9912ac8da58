--[[
formats.lua: the last filter of the DOCX, JATS and LaTeX outputs (after crossref.lua,
citekeys.lua and citeproc), which makes the untrusted text of a pull request safe to
put into a file that other programs open or compile, and gives each format what the
HTML gets from its page.

The build (livingreview.render.formats) writes a JSON file and names it in the
LIVINGREVIEW_FORMATS environment variable:

  format      "docx", "jats" or "latex"
  bundle      the folder the JATS and LaTeX outputs are written in (figures/ goes there)
  media       map from an image path as the text may give it ("images/plot.svg") to the
              file of the build it stands for ({path, mime, name}): the only files an
              output may embed or bundle
  svg_to_pdf  rsvg-convert, when installed: the LaTeX bundle gets SVG figures as PDF
  base_url    this version's published folder (links relative to the page go there)
  meta        the metadata the output gets: authors, affiliations, date, the stamp
  report      where to write the images it refused (the build fails, naming their lines)

What it does:

  * raw blocks and inlines (TeX, OpenXML, JATS, HTML) are dropped, in the body and in
    the metadata: no \input, \write18, \openin, field code or entity gets through;
  * math that the LaTeX and JATS outputs carry as TeX may use only the commands on the
    list below (no \input, \csname, \catcode, ^^ notation, ...); other math is shown
    as its source text, in code type;
  * an image is embedded (DOCX) or copied into figures/ (JATS, LaTeX) only when it is
    a file the build vetted (the media map) or a data: URL; any other (an absolute
    path, "..", a URL, a file of the machine) is left out and reported, and the build
    fails; SVG figures go into the LaTeX bundle as PDF (rsvg-convert, reading standard
    input, so that it resolves no reference of the SVG to a file);
  * an injected value (a link of class lr-value) becomes its formatted text; links
    relative to the page point to the published version, links with other schemes
    than http(s) and mailto become their text;
  * attributes are reduced to plain identifiers, classes and values;
  * the metadata is rebuilt from a short list (title, keywords, lang) and the build's
    own (authors, affiliations, date, permalink stamp), so nothing of metadata.yaml
    reaches a template variable (documentclass, header-includes, ...);
  * internal links to targets the output lacks (equations) become their text;
  * Manubot's level-2 sections become the top level of Word and LaTeX;
  * JATS figures and tables get their number as a <label>; LaTeX captions keep
    crossref.lua's numbers (LaTeX adds none), Greek letters and math symbols of the
    text become math, and pdfLaTeX shows any character it has no glyph for as a boxed
    "?" instead of stopping.
]]

local NBSP = '\u{a0}'

local function fail(message)
  error('formats.lua: ' .. message, 0)
end

local function read_file(path)
  local handle = io.open(path, 'rb')
  if not handle then return nil end
  local contents = handle:read('a')
  handle:close()
  return contents
end

local function read_data()
  local path = os.getenv('LIVINGREVIEW_FORMATS')
  if not path then fail('LIVINGREVIEW_FORMATS is not set: run pandoc through livingreview') end
  local text = read_file(path)
  if not text then fail('cannot read ' .. path) end
  return pandoc.json.decode(text, false)
end

local DATA = nil
local FMT = nil
local warned = {}

local function warn(message)
  if not warned[message] then
    warned[message] = true
    io.stderr:write('[WARNING] formats: ', message, '\n')
  end
end

-- --------------------------------------------------------------- math

-- Commands math may use in the LaTeX and JATS outputs, which carry it as TeX: symbols,
-- operators, fonts, accents, delimiters and spacing of LaTeX, amsmath and amssymb (each
-- defined by pandoc's LaTeX template, with pdfLaTeX and LuaLaTeX). Nothing here reads
-- or writes a file, defines a command or builds a command name.
local MATH_COMMANDS = {}
for name in ([[
alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa varkappa lambda mu nu xi
pi varpi rho varrho sigma varsigma tau upsilon phi varphi chi psi omega digamma
Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega varGamma varDelta varTheta varLambda varXi
varPi varSigma varUpsilon varPhi varPsi varOmega
aleph beth gimel daleth hbar hslash imath jmath ell wp Re Im partial infty nabla emptyset varnothing
forall exists nexists neg lnot top bot angle measuredangle triangle triangledown square blacksquare
Box Diamond lozenge blacklozenge bigstar star ast circ bullet cdot cdots ldots dots dotsc dotsb dotsm
dotsi vdots ddots prime backprime surd checkmark dagger ddagger S P copyright pounds natural flat sharp
clubsuit diamondsuit heartsuit spadesuit mho complement Finv Game eth
pm mp times div setminus smallsetminus cap cup uplus sqcap sqcup vee wedge land lor oplus ominus
otimes oslash odot bigcirc amalg wr diamond bigtriangleup bigtriangledown triangleleft triangleright
lhd rhd unlhd unrhd ltimes rtimes leftthreetimes rightthreetimes curlyvee curlywedge boxplus
boxminus boxtimes boxdot dotplus divideontimes intercal barwedge veebar doublebarwedge Cap Cup
centerdot circledast circledcirc circleddash
leq le geq ge neq ne equiv approx approxeq sim simeq cong propto ll gg lll ggg prec succ preceq succeq
subset supset subseteq supseteq subsetneq supsetneq nsubseteq nsupseteq sqsubset sqsupset sqsubseteq
sqsupseteq in ni notin owns mid nmid parallel nparallel perp models vdash dashv vDash Vdash Vvdash
nvdash nvDash smile frown asymp doteq doteqdot bowtie Join leqslant geqslant lesssim gtrsim lessapprox
gtrapprox lessgtr gtrless leqq geqq nleq ngeq nless ngtr nleqslant ngeqslant lneq gneq lneqq gneqq
ncong nsim thicksim thickapprox backsim backsimeq triangleq trianglelefteq trianglerighteq
ntriangleleft ntriangleright varpropto therefore because between pitchfork eqcirc circeq
risingdotseq fallingdotseq preccurlyeq succcurlyeq precsim succsim precapprox succapprox
curlyeqprec curlyeqsucc shortmid shortparallel Subset Supset blacktriangle
blacktriangleleft blacktriangleright blacktriangledown vartriangle vartriangleleft vartriangleright
leftarrow gets rightarrow to leftrightarrow Leftarrow Rightarrow Leftrightarrow longleftarrow
longrightarrow longleftrightarrow Longleftarrow Longrightarrow Longleftrightarrow mapsto longmapsto
hookleftarrow hookrightarrow uparrow downarrow updownarrow Uparrow Downarrow Updownarrow nearrow
searrow swarrow nwarrow leftharpoonup leftharpoondown rightharpoonup rightharpoondown
rightleftharpoons leftrightharpoons iff implies impliedby upharpoonleft upharpoonright
downharpoonleft downharpoonright leftleftarrows rightrightarrows leftrightarrows rightleftarrows
twoheadleftarrow twoheadrightarrow rightsquigarrow leftrightsquigarrow curvearrowleft
curvearrowright circlearrowleft circlearrowright Lsh Rsh looparrowleft looparrowright
nleftarrow nrightarrow nLeftarrow nRightarrow nleftrightarrow nLeftrightarrow
xleftarrow xrightarrow multimap
sum prod coprod int iint iiint iiiint oint idotsint bigcap bigcup bigsqcup bigvee bigwedge bigoplus
bigotimes bigodot biguplus
sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh coth exp log ln lg lim liminf limsup sup
inf max min arg det dim gcd hom ker Pr deg injlim projlim varliminf varlimsup varinjlim varprojlim
bmod pmod pod mod operatorname operatornamewithlimits
frac dfrac tfrac cfrac sqrt binom dbinom tbinom choose over atop genfrac
left right middle big Big bigg Bigg bigl bigr Bigl Bigr biggl biggr Biggl Biggr bigm Bigm biggm Biggm
langle rangle lceil rceil lfloor rfloor lvert rvert lVert rVert vert Vert lbrace rbrace lbrack rbrack
backslash ulcorner urcorner llcorner lrcorner lgroup rgroup lmoustache rmoustache
hat widehat tilde widetilde bar overline underline vec overrightarrow overleftarrow
overleftrightarrow underrightarrow underleftarrow underleftrightarrow dot ddot dddot ddddot acute
grave breve check mathring overbrace underbrace overset underset stackrel sideset substack
mathrm mathit mathbf mathsf mathtt mathcal mathbb mathfrak mathnormal boldsymbol pmb
text textrm textit textbf textsf texttt textup textmd textnormal emph mbox
displaystyle textstyle scriptstyle scriptscriptstyle limits nolimits displaylimits
quad qquad enspace thinspace medspace thickspace negthinspace negmedspace negthickspace hspace
mkern mspace hphantom vphantom phantom smash mathstrut strut
mathop mathbin mathrel mathord mathopen mathclose mathpunct mathinner
not nonumber notag allowbreak colon cdotp ldotp
color textcolor boxed
begin end
]]):gmatch('%S+') do MATH_COMMANDS[name] = true end

-- The environments \begin{...} may open in math.
local MATH_ENVIRONMENTS = {}
for name in ([[
matrix pmatrix bmatrix Bmatrix vmatrix Vmatrix smallmatrix cases array aligned alignedat gathered
split subarray
]]):gmatch('%S+') do MATH_ENVIRONMENTS[name] = true end

--- Why `tex` may not go into a TeX file, or nil when it may.
local function unsafe_math(tex)
  if tex:find('^^', 1, true) then return '^^ notation' end
  if tex:find(']]>', 1, true) then return ']]>' end
  local i, n = 1, #tex
  while i <= n do
    local c = tex:sub(i, i)
    if c == '%' then
      return 'a % comment'
    elseif c == '\\' then
      local word = tex:match('^[A-Za-z]+', i + 1)
      if word then
        if not MATH_COMMANDS[word] then return '\\' .. word end
        i = i + 1 + #word
        if word == 'begin' or word == 'end' then
          local env, stop = tex:match('^%s*{([A-Za-z]+%*?)}()', i)
          if not env or not MATH_ENVIRONMENTS[env] then return '\\' .. word .. ' of anything but a math environment' end
          i = stop
        end
      else
        -- A control symbol: \, \; \{ \} \| \\ \# \% ... all harmless.
        i = i + 2
      end
    else
      i = i + 1
    end
  end
  return nil
end

local function on_math(math_)
  if FMT ~= 'latex' and FMT ~= 'jats' then return nil end
  local why = unsafe_math(math_.text)
  if not why then return nil end
  warn('math using ' .. why .. ' is shown as its source text: ' .. math_.text:sub(1, 80))
  return pandoc.Code(math_.text)
end

-- --------------------------------------------------------------- text (LaTeX)

-- Characters of the text that LaTeX's text fonts lack, as math.
local AS_MATH = {
  ['α'] = '\\alpha', ['β'] = '\\beta', ['γ'] = '\\gamma', ['δ'] = '\\delta', ['ε'] = '\\varepsilon',
  ['ζ'] = '\\zeta', ['η'] = '\\eta', ['θ'] = '\\theta', ['ι'] = '\\iota', ['κ'] = '\\kappa',
  ['λ'] = '\\lambda', ['μ'] = '\\mu', ['ν'] = '\\nu', ['ξ'] = '\\xi', ['π'] = '\\pi', ['ρ'] = '\\rho',
  ['σ'] = '\\sigma', ['ς'] = '\\varsigma', ['τ'] = '\\tau', ['υ'] = '\\upsilon', ['φ'] = '\\varphi',
  ['ϕ'] = '\\phi', ['χ'] = '\\chi', ['ψ'] = '\\psi', ['ω'] = '\\omega',
  ['Γ'] = '\\Gamma', ['Δ'] = '\\Delta', ['Θ'] = '\\Theta', ['Λ'] = '\\Lambda', ['Ξ'] = '\\Xi',
  ['Π'] = '\\Pi', ['Σ'] = '\\Sigma', ['Υ'] = '\\Upsilon', ['Φ'] = '\\Phi', ['Ψ'] = '\\Psi',
  ['Ω'] = '\\Omega',
  ['≤'] = '\\leq', ['≥'] = '\\geq', ['≠'] = '\\neq', ['≈'] = '\\approx', ['∼'] = '\\sim',
  ['≡'] = '\\equiv', ['∝'] = '\\propto', ['∞'] = '\\infty', ['∑'] = '\\sum', ['∏'] = '\\prod',
  ['∫'] = '\\int', ['√'] = '\\surd', ['∂'] = '\\partial', ['∇'] = '\\nabla', ['∈'] = '\\in',
  ['∉'] = '\\notin', ['⊂'] = '\\subset', ['⊆'] = '\\subseteq', ['∪'] = '\\cup', ['∩'] = '\\cap',
  ['⊗'] = '\\otimes', ['⊕'] = '\\oplus', ['∘'] = '\\circ', ['⋅'] = '\\cdot', ['∗'] = '\\ast',
  ['−'] = '-', ['∓'] = '\\mp', ['→'] = '\\rightarrow', ['←'] = '\\leftarrow', ['↔'] = '\\leftrightarrow',
  ['⇒'] = '\\Rightarrow', ['⇐'] = '\\Leftarrow', ['⇔'] = '\\Leftrightarrow', ['↑'] = '\\uparrow',
  ['↓'] = '\\downarrow', ['↦'] = '\\mapsto', ['∀'] = '\\forall', ['∃'] = '\\exists', ['∅'] = '\\emptyset',
  ['′'] = '{}^{\\prime}', ['″'] = '{}^{\\prime\\prime}', ['⊤'] = '\\top', ['⊥'] = '\\perp',
  ['ℓ'] = '\\ell', ['ℏ'] = '\\hbar', ['⟨'] = '\\langle', ['⟩'] = '\\rangle', ['≪'] = '\\ll', ['≫'] = '\\gg',
  ['≲'] = '\\lesssim', ['≳'] = '\\gtrsim', ['⪯'] = '\\preceq', ['⪰'] = '\\succeq', ['⋆'] = '\\star',
  ['★'] = '\\bigstar', ['■'] = '\\blacksquare', ['□'] = '\\square', ['∖'] = '\\setminus',
}

local function on_str(str)
  local text = str.text
  if not text:find('[\128-\255]') then return nil end
  local out, start, changed = {}, 1, false
  for position, code in utf8.codes(text) do
    local char = utf8.char(code)
    local tex = AS_MATH[char]
    if tex then
      if position > start then out[#out + 1] = pandoc.Str(text:sub(start, position - 1)) end
      out[#out + 1] = pandoc.Math('InlineMath', tex)
      start = position + #char
      changed = true
    end
  end
  if not changed then return nil end
  if start <= #text then out[#out + 1] = pandoc.Str(text:sub(start)) end
  return out
end

-- The LaTeX preamble's additions. Captions start with their number as crossref.lua
-- gives it (the same as the HTML's, tags and all), so LaTeX adds none of its own; and
-- pdfLaTeX, which stops at a character it has no glyph for, shows a boxed "?" instead.
local LATEX_HEADER = [[
\usepackage{caption}
\captionsetup{labelformat=empty,labelsep=none}
\ifPDFTeX
  \makeatletter
  \def\UTFviii@undefined@err#1{{\fboxsep=1pt\fbox{?}}}
  \makeatother
\fi]]

-- --------------------------------------------------------------- attributes

local function plain(value, pattern)
  return type(value) == 'string' and value:match(pattern) ~= nil
end

-- Identifiers and classes as Markdown writes them (and as citeproc and crossref make
-- them); key-value attributes only with short plain values.
local SAFE_ID = '^[%w][%w_:%.%-]*$'
local SAFE_VALUE = '^[%w%.%-_ ]*$'
local SAFE_SIZE = '^%d+%.?%d*[%a%%]*$'

local function clean_attr(attr, sizes)
  local identifier = plain(attr.identifier, SAFE_ID) and attr.identifier or ''
  local classes = {}
  for _, class in ipairs(attr.classes) do
    if plain(class, SAFE_ID) then classes[#classes + 1] = class end
  end
  local attributes = {}
  for _, kv in ipairs(attr.attributes) do
    local key, value = kv[1], kv[2]
    if plain(key, '^[%a][%w%-_]*$') then
      if sizes and (key == 'width' or key == 'height') then
        if plain(value, SAFE_SIZE) then attributes[#attributes + 1] = {key, value} end
      elseif plain(value, SAFE_VALUE) then
        attributes[#attributes + 1] = {key, value}
      end
    end
  end
  return pandoc.Attr(identifier, classes, attributes)
end

local function with_clean_attr(el)
  el.attr = clean_attr(el.attr, false)
  return el
end

local function on_code_block(block)
  -- The language class alone: highlighting needs it, nothing else does.
  local language = block.classes[1]
  local classes = plain(language, '^[%w_+%-]+$') and {language} or {}
  block.attr = pandoc.Attr(plain(block.identifier, SAFE_ID) and block.identifier or '', classes, {})
  return block
end

-- --------------------------------------------------------------- links

local function has_class(el, class)
  for _, c in ipairs(el.classes) do
    if c == class then return true end
  end
  return false
end

local function on_link(link)
  -- An injected value: its formatted text, without the link to its notebook and the
  -- provenance tooltip, which only the HTML page can show.
  if has_class(link, 'lr-value') then return link.content end
  local target = link.target
  local scheme = target:match('^([%a][%w+.%-]*):')
  if target:sub(1, 1) == '#' then
    -- a cross-reference, citation or section link inside the document
  elseif scheme then
    scheme = scheme:lower()
    if scheme ~= 'http' and scheme ~= 'https' and scheme ~= 'mailto' then return link.content end
  elseif DATA.base_url and target ~= '' and not target:find('^[/\\]') and not target:find('%.%.') then
    -- Relative to the page, as the HTML links it: the same file of the published version.
    link.target = DATA.base_url .. target:gsub('^%./', '')
  else
    return link.content
  end
  link.attr = clean_attr(link.attr, false)
  return link
end

-- --------------------------------------------------------------- images

local RASTER = {['image/png'] = 'png', ['image/jpeg'] = 'jpg', ['application/pdf'] = 'pdf'}
local EXTENSIONS = {
  ['image/png'] = 'png', ['image/jpeg'] = 'jpg', ['image/gif'] = 'gif', ['image/svg+xml'] = 'svg',
  ['application/pdf'] = 'pdf', ['image/webp'] = 'webp', ['image/tiff'] = 'tif',
}

local function percent_decode(text)
  return (text:gsub('%%(%x%x)', function(hex) return string.char(tonumber(hex, 16)) end))
end

local written = {}  -- file name in the output -> its contents

--- The bytes and type of an image, or nil and why not.
local function media_of(src)
  if src:match('^data:') then
    local ok, mime, contents = pcall(pandoc.mediabag.fetch, src)
    if not ok or not mime or not EXTENSIONS[mime:gsub(';.*', '')] then return nil, 'a data: URL that is no image' end
    return mime:gsub(';.*', ''), contents, 'inline'
  end
  local key = percent_decode(src):gsub('^%./', '')
  local entry = DATA.media[key]
  if not entry then return nil, "not a file of content/images/ or of an analysis's results" end
  local contents = read_file(entry.path)
  if not contents then return nil, 'unreadable' end
  return entry.mime, contents, entry.name
end

--- The file name an image gets in the output: its own (made plain), or a digest.
local function bundle_name(name, mime, contents)
  local ext = EXTENSIONS[mime] or 'bin'
  local stem
  if name == 'inline' then
    stem = 'inline-' .. pandoc.utils.sha1(contents):sub(1, 12)
  else
    stem = name:gsub('%.[^.]*$', ''):gsub('[^%w_%-]', '-')
  end
  local candidate, n = stem .. '.' .. ext, 1
  while written[candidate] and written[candidate] ~= contents do
    n = n + 1
    candidate = stem .. '-' .. n .. '.' .. ext
  end
  return candidate
end

local refused = {}  -- images that are no file of the build: the build fails, naming where

local function left_out(image, why, refuse)
  if refuse then
    refused[#refused + 1] = {src = image.src, why = why}
  else
    warn('image ' .. image.src:sub(1, 120) .. ' is left out of the ' .. FMT .. ' output (' .. why .. ')')
  end
  if #image.caption > 0 then return pandoc.Span(image.caption) end
  return {}
end

local function on_image(image)
  local mime, contents, name = media_of(image.src)
  if not mime then return left_out(image, contents, true) end
  if FMT == 'latex' and mime == 'image/svg+xml' then
    if not DATA.svg_to_pdf then
      return left_out(image, 'an SVG, which LaTeX cannot include: install rsvg-convert (librsvg2-bin)')
    end
    -- From standard input, rsvg-convert has no folder to resolve references in: it loads no file.
    local ok, pdf = pcall(pandoc.pipe, DATA.svg_to_pdf, {'--format=pdf'}, contents)
    if not ok then return left_out(image, 'rsvg-convert could not convert it') end
    mime, contents = 'application/pdf', pdf
  end
  if FMT == 'latex' and not RASTER[mime] then
    return left_out(image, mime .. ', which LaTeX cannot include')
  end
  local file = bundle_name(name, mime, contents)
  if FMT == 'docx' then
    pandoc.mediabag.insert(file, mime, contents)
    image.src = file
  else
    image.src = 'figures/' .. file
    if not written[file] then
      local handle = io.open(DATA.bundle .. '/' .. image.src, 'wb')
      if not handle then fail('cannot write ' .. image.src) end
      handle:write(contents)
      handle:close()
    end
  end
  written[file] = contents
  image.title = ''
  image.attr = clean_attr(image.attr, true)
  return image
end

-- --------------------------------------------------------------- JATS labels

local function escape_xml(text)
  return (text:gsub('[<>&"]', {['<'] = '&lt;', ['>'] = '&gt;', ['&'] = '&amp;', ['"'] = '&quot;'}))
end

--- The "Figure 1:" that crossref.lua starts a numbered caption with, taken off the
--- caption's first block: returns the label's text ("Figure 1"), or nil.
local function take_label(blocks)
  local first = blocks[1]
  if not first or (first.t ~= 'Plain' and first.t ~= 'Para') then return nil end
  local x = first.content
  if #x < 2 or x[1].t ~= 'Str' or x[1].text:sub(-#NBSP) ~= NBSP then return nil end
  local number = pandoc.utils.stringify(x[2])
  local label = x[1].text .. number:gsub('[:.]$', '')
  x:remove(1)
  x:remove(1)
  if x[1] and x[1].t == 'Space' then x:remove(1) end
  first.content = x
  blocks[1] = first
  return (label:gsub(NBSP, ' '))
end

--- A numbered figure or table as JATS, its number as a <label> of the <fig> or
--- <table-wrap> rather than the start of its caption; nil when it has no number.
local function jats_labelled(block, tag)
  local caption = block.caption
  local long = caption.long
  local label = take_label(long)
  if not label then return nil end
  caption.long = long
  block.caption = caption
  local xml = pandoc.write(pandoc.Pandoc({block}), 'jats')
  local labelled, n = xml:gsub('^(%s*<' .. tag .. '[^>]*>)', '%1\n  <label>' .. escape_xml(label) .. '</label>', 1)
  if n ~= 1 then return nil end
  return pandoc.RawBlock('jats', labelled)
end

local function on_figure(figure)
  figure.attr = clean_attr(figure.attr, false)
  if FMT ~= 'jats' then return figure end
  return jats_labelled(figure, 'fig') or figure
end

local function on_table(tbl)
  tbl.attr = clean_attr(tbl.attr, false)
  if FMT ~= 'jats' then return tbl end
  return jats_labelled(tbl, 'table%-wrap') or tbl
end

-- --------------------------------------------------------------- metadata

--- A JSON value of the build as metadata: text as inlines (which every writer escapes),
--- never as a string a template would insert verbatim.
local function to_meta(value)
  local kind = type(value)
  if kind == 'string' then return pandoc.MetaInlines(pandoc.Inlines(value)) end
  if kind == 'boolean' then return value end
  if kind == 'number' then return pandoc.MetaInlines(pandoc.Inlines(tostring(value))) end
  if kind == 'table' then
    if value.lines then
      -- {lines = {...}}: one text of several lines (a name, then its affiliations).
      local inlines = pandoc.Inlines({})
      for i, line in ipairs(value.lines) do
        if i > 1 then inlines:insert(pandoc.LineBreak()) end
        inlines:extend(pandoc.Inlines(line))
      end
      return pandoc.MetaInlines(inlines)
    end
    if value[1] ~= nil or next(value) == nil then
      local list = {}
      for i, item in ipairs(value) do list[i] = to_meta(item) end
      return pandoc.MetaList(list)
    end
    local map = {}
    for key, item in pairs(value) do map[key] = to_meta(item) end
    return pandoc.MetaMap(map)
  end
  return nil
end

local function stamp(meta_stamp)
  local text = pandoc.Inlines(meta_stamp.text)
  if meta_stamp.url then
    text:insert(pandoc.Space())
    text:insert(pandoc.Link(pandoc.Inlines(meta_stamp.url), meta_stamp.url))
  end
  return text
end

local function build_meta(old)
  local meta = pandoc.Meta({})
  for _, key in ipairs({'title', 'subtitle', 'keywords'}) do
    if old[key] ~= nil then meta[key] = old[key] end
  end
  local lang = old.lang and pandoc.utils.stringify(old.lang)
  if lang and lang:match('^%a%a%a?[%w%-]*$') and #lang <= 35 then meta.lang = lang end
  for key, value in pairs(DATA.meta or {}) do
    if key ~= 'stamp' then meta[key] = to_meta(value) end
  end
  local built = DATA.meta and DATA.meta.stamp
  if built then
    if FMT == 'latex' then
      meta.thanks = pandoc.MetaInlines(stamp(built))
      meta['header-includes'] = pandoc.MetaBlocks({pandoc.RawBlock('latex', LATEX_HEADER)})
    elseif FMT == 'jats' then
      meta.notes = pandoc.MetaBlocks({pandoc.Para(stamp(built))})
      if meta.keywords then meta.tags = meta.keywords end
    else
      -- Word: under the title (after a subtitle of the metadata's), and as a document property.
      local shown = stamp(built)
      if meta.subtitle then
        local subtitle = pandoc.Inlines(pandoc.utils.stringify(meta.subtitle))
        subtitle:insert(pandoc.LineBreak())
        subtitle:extend(shown)
        shown = subtitle
      end
      meta.subtitle = pandoc.MetaInlines(shown)
      meta.permalink = built.url and pandoc.MetaInlines(pandoc.Inlines(built.url)) or nil
    end
  elseif FMT == 'latex' then
    meta['header-includes'] = pandoc.MetaBlocks({pandoc.RawBlock('latex', LATEX_HEADER)})
  end
  return meta
end

-- --------------------------------------------------------------- the document

--- Manubot sections start at level 2 (## Introduction), under the title: in Word and
--- LaTeX they become the top level (Heading 1, \section) unless some heading is level 1.
local function top_level_sections(doc)
  local top = false
  doc:walk({Header = function(h) if h.level == 1 then top = true end end})
  if top then return doc end
  return doc:walk({Header = function(h)
    h.level = h.level - 1
    return h
  end})
end

--- Every identifier an element of the document has: what an internal link may point to.
local function identifiers(doc)
  local ids = {}
  local function note(el)
    if el.identifier and el.identifier ~= '' then ids[el.identifier] = true end
    return nil
  end
  doc:walk({
    Header = note, Div = note, Span = note, Figure = note, Table = note, Image = note,
    Code = note, CodeBlock = note, Link = note,
  })
  return ids
end

local raw_dropped = 0

local function drop(raw)
  -- Raw HTML is the page's layout (<br>, <small>): no other writer shows it anyway.
  if not raw.format:match('^html') then raw_dropped = raw_dropped + 1 end
  return {}
end

local function write_report()
  local handle = io.open(DATA.report, 'wb')
  if not handle then fail('cannot write ' .. DATA.report) end
  handle:write(pandoc.json.encode({refused = refused}))
  handle:close()
end

function Pandoc(doc)
  DATA = read_data()
  FMT = DATA.format
  if FMT ~= 'docx' and FMT ~= 'jats' and FMT ~= 'latex' then fail('unknown format ' .. tostring(FMT)) end
  local untrusted = {
    RawBlock = drop,
    RawInline = drop,
    Math = on_math,
    Link = on_link,
    Image = on_image,
    Code = on_code_block,
    CodeBlock = on_code_block,
    Span = with_clean_attr,
    Div = with_clean_attr,
    Header = with_clean_attr,
  }
  if FMT == 'latex' then untrusted.Str = on_str end
  doc = doc:walk(untrusted)
  if FMT ~= 'jats' then doc = top_level_sections(doc) end
  -- A link to a target the output lacks (an equation: only the HTML gives it an
  -- element) becomes its text; then numbered figures and tables, whose captions are clean.
  local ids = identifiers(doc)
  doc = doc:walk({
    Link = function(link)
      local id = link.target:match('^#(.+)$')
      if id and not ids[id] then return link.content end
      return nil
    end,
    Figure = on_figure,
    Table = on_table,
  })
  doc.meta = build_meta(doc.meta)
  if raw_dropped > 0 then
    warn('raw markup left out of the ' .. FMT .. ' output (' .. raw_dropped .. ' raw TeX, OpenXML or JATS '
      .. (raw_dropped == 1 and 'element' or 'elements') .. '): raw markup of the sections is never passed on')
  end
  write_report()
  return doc
end
