--[[
citekeys.lua: Manubot citation keys (@doi:, @arxiv:, @pmid:, @url:, bare keys and
aliases) replaced by the ids of their CSL items, inside pandoc, for citeproc.

Rootstock does this with the pandoc-manubot-cite JSON filter. Here the part that needs
Manubot's Python code, turning a key into its standard form and finding its item in
the manual references, runs once in the build (livingreview.citekeys) before pandoc
starts; it writes the file named by LIVINGREVIEW_CITEKEYS, holding pandoc metadata:

  livingreview-resolve          map from a (de-aliased) key to its CSL item id
  livingreview-references       the CSL items those ids name, sorted by standard id
  livingreview-bibliography     the bibliography files the build read them from
  livingreview-alias-paragraphs false when the text holds no "[@tag]: ..." paragraph
  livingreview-allow-unresolved true under citations.unresolved: warn
  livingreview-as-cited         true when the items are under the keys that cite them

This filter does the rest as Manubot's filter does: it reads aliases from the
citekey-aliases metadata and from "[@tag]: doi:..." paragraphs (which it removes),
leaves @fig:, @tbl:, @eq: and @sec: keys alone, renames every other citation, and sets
the metadata citeproc reads (references: the cited items in Manubot's order;
bibliography: empty). It writes the keys it saw to the file named by
LIVINGREVIEW_CITATIONS, and fails when any key has no item, so that the build can
report every place that cites it; when unresolved keys are allowed, it leaves them as
they were cited, as Manubot's filter does, and citeproc prints each as the key in bold
with "?".

With livingreview-as-cited (which the build sets for its HTML page when no two keys
name the same item and no alias paragraph can rename one), the items are already under
the keys as cited: the filter renames nothing, walks nothing, and hands every item to
citeproc (which keeps the cited ones); the build then renames the keys in the page and
reads the keys cited from it. The report only says so ({"as_cited": true}).

As a module (manuscript.lua loads it so, with LIVINGREVIEW_MODULE set), it exports
prepare(doc), which returns the renaming function the walk of crossref.lua calls on each
citation, and finish(doc, state).
]]

local XNOS_PREFIXES = {fig = true, tbl = true, eq = true, sec = true}

local function fail(message)
  error('citekeys.lua: ' .. message, 0)
end

--- The metadata written by the build, read as a pandoc JSON document around it.
local function read_data()
  local path = os.getenv('LIVINGREVIEW_CITEKEYS')
  if not path then
    fail('LIVINGREVIEW_CITEKEYS is not set: run pandoc through livingreview, which prepares the references')
  end
  local handle = assert(io.open(path, 'rb'))
  local meta_json = handle:read('a')
  handle:close()
  local api = table.concat(PANDOC_API_VERSION, ',')
  local wrapper = '{"pandoc-api-version":[' .. api .. '],"meta":' .. meta_json .. ',"blocks":[]}'
  return pandoc.read(wrapper, 'json').meta
end

local function json_string(text)
  return '"' .. text:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == '\\' then return '\\\\' end
    return string.format('\\u%04x', c:byte())
  end) .. '"'
end

local function json_pairs(list)
  local out = {}
  for i, pair in ipairs(list) do out[i] = '[' .. json_string(pair[1]) .. ',' .. json_string(pair[2]) .. ']' end
  return '[' .. table.concat(out, ',') .. ']'
end

local function write_report(cited, unresolved, as_cited)
  local path = os.getenv('LIVINGREVIEW_CITATIONS')
  if not path then return end
  local handle = assert(io.open(path, 'wb'))
  if as_cited then
    handle:write('{"as_cited":true}\n')
  else
    handle:write('{"cited":', json_pairs(cited), ',"unresolved":', json_pairs(unresolved), '}\n')
  end
  handle:close()
end

local function as_strings(value)
  local out = {}
  local kind = pandoc.utils.type(value)
  if value == nil then return out end
  if kind == 'List' then
    for i, item in ipairs(value) do out[i] = pandoc.utils.stringify(item) end
  else
    out[1] = pandoc.utils.stringify(value)
  end
  return out
end

--- "[@tag]: doi:10.1000/x" paragraphs, as Manubot reads them: each definition at the
--- start of a paragraph is recorded and removed, the rest of the paragraph stays. Keys
--- of the kinds in `crossref_kinds` (crossref.lua's, when it runs in the same pass) are
--- no tags: they are references to figures, tables and equations, which it replaces.
local function take_alias_definitions(para, aliases, crossref_kinds)
  local x = para.content
  local changed = false
  while #x >= 3 and x[1].t == 'Cite' and #x[1].citations == 1 and x[2].t == 'Str' and x[2].text == ':' do
    local key = x[1].citations[1].id
    if crossref_kinds and crossref_kinds[key:match('^(%a+):') or ''] then break end
    local at = (x[3].t == 'Space' or x[3].t == 'SoftBreak') and 4 or 3
    local destination = x[at]
    if not destination or destination.t ~= 'Str' then
      io.stderr:write('[WARNING] citekeys: unsupported citation alias: ', pandoc.utils.stringify(para), '\n')
      break
    end
    if aliases[key] ~= nil and aliases[key] ~= destination.text then
      io.stderr:write('[WARNING] citekeys: multiple aliases defined for @', key, '\n')
    end
    aliases[key] = destination.text
    local rest = pandoc.List()
    for i = at + 1, #x do rest:insert(x[i]) end
    if rest[1] and rest[1].t == 'SoftBreak' then rest:remove(1) end
    x = rest
    changed = true
  end
  if changed then
    para.content = x
    return para
  end
  return nil
end

--- Everything before the citations are renamed: the build's data, the aliases (the
--- metadata's, and those of "[@tag]: ..." paragraphs, which are removed). Returns the
--- document and the renaming state, whose `rename` takes a Cite element and returns the
--- one that replaces it (nil: unchanged), and is nil itself when the items are as cited
--- (state.as_cited); `crossref_kinds`: see take_alias_definitions.
local function prepare(doc, crossref_kinds)
  local data = read_data()
  local state = {data = data, cited = {}, unresolved = {}, used = {}}

  local expected = as_strings(data['livingreview-bibliography'])
  local actual = as_strings(doc.meta.bibliography)
  if table.concat(expected, '\n') ~= table.concat(actual, '\n') then
    fail('the bibliography metadata (' .. table.concat(actual, ', ') .. ') is not the one the build read ('
      .. table.concat(expected, ', ') .. ')')
  end

  local aliases = {}
  local configured = doc.meta['citekey-aliases']
  if configured ~= nil then
    if pandoc.utils.type(configured) == 'table' then
      for key, value in pairs(configured) do aliases[key] = pandoc.utils.stringify(value) end
    else
      io.stderr:write('[WARNING] citekeys: citekey-aliases must be a mapping; ignored\n')
    end
  end
  if data['livingreview-alias-paragraphs'] ~= false then
    doc = doc:walk{Para = function(para) return take_alias_definitions(para, aliases, crossref_kinds) end}
  end
  state.aliases = aliases

  local resolve = data['livingreview-resolve'] or {}
  if data['livingreview-as-cited'] then
    -- Pandoc hands citeproc every item a nocite of "@*" names, and the page needs its
    -- reference list: otherwise the items go back under their ids, and the filter renames.
    if doc.meta.nocite == nil and not doc.meta['suppress-bibliography'] then
      state.as_cited = true
      return doc, state  -- state.rename is nil: nothing to rename
    end
    for _, item in ipairs(data['livingreview-references'] or {}) do
      item.id = resolve[aliases[item.id] or item.id]
    end
  end
  local cited, unresolved, used = state.cited, state.unresolved, state.used
  local seen, missing = {}, {}
  state.rename = function(cite)
    local citations = cite.citations
    local changed = false
    for i, citation in ipairs(citations) do
      local key = citation.id
      local dealiased = aliases[key] or key
      local prefix = dealiased:match('^([^:]*):')
      if not (prefix and XNOS_PREFIXES[prefix]) then
        if not seen[key] then
          seen[key] = true
          cited[#cited + 1] = {key, dealiased}
        end
        local id = resolve[dealiased]
        if id then
          used[id] = true
          citation.id = id
          citations[i] = citation
          changed = true
        elseif not missing[key] then
          missing[key] = true
          unresolved[#unresolved + 1] = {key, dealiased}
        end
      end
    end
    if changed then
      cite.citations = citations
      return cite
    end
    return nil
  end
  return doc, state
end

--- Once every citation went through state.rename: the report, the failure on keys
--- without a reference, and the metadata citeproc reads.
local function finish(doc, state)
  local data, unresolved = state.data, state.unresolved
  write_report(state.cited, unresolved, state.as_cited)
  if #unresolved > 0 and not data['livingreview-allow-unresolved'] then
    local keys = {}
    for i, pair in ipairs(unresolved) do keys[i] = '@' .. pair[1] end
    fail('no reference for ' .. table.concat(keys, ', '))
  end

  local references = pandoc.List()
  for _, item in ipairs(data['livingreview-references'] or {}) do
    -- As cited, pandoc itself keeps the cited items (and those of nocite) for citeproc.
    if state.as_cited or state.used[item.id] then references:insert(item) end
  end
  doc.meta.references = pandoc.MetaList(references)
  doc.meta.bibliography = pandoc.MetaList({})
  doc.meta.citekey_aliases = pandoc.MetaMap(state.aliases)
  return doc
end

local citekeys = {prepare = prepare, finish = finish}

-- Loaded by another filter (manuscript.lua), this file is a module; run by pandoc, it
-- is the filter.
if LIVINGREVIEW_MODULE then return citekeys end

function Pandoc(doc)
  local state
  doc, state = prepare(doc)
  if state.rename then
    doc = doc:walk{
      traverse = 'topdown',  -- the cheaper traversal in pandoc 2.19 when only citations are visited
      Cite = state.rename,
    }
  end
  return finish(doc, state)
end
