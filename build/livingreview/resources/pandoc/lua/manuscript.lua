--[[
manuscript.lua: crossref.lua and citekeys.lua in one filter, sharing their walks.

Run one after the other, the two filters would each walk every inline of the document
(crossref.lua to replace the references it deferred, citekeys.lua to rename the
citations), and in pandoc 3 a walk costs about as much as all the rest of either
filter. Here crossref.lua numbers the targets and takes in hand the paragraphs that
need it (its first pass), citekeys.lua reads its data and the aliases, and then one
walk of each block replaces the references crossref.lua deferred and hands every
citation to citekeys.lua, in document order; citekeys.lua then writes its report and
the metadata citeproc reads. The output is the same as that of crossref.lua followed
by citekeys.lua; each keeps its own interface (environment, metadata), described in
its header, and each still runs on its own.
]]

local directory = PANDOC_SCRIPT_FILE and PANDOC_SCRIPT_FILE:match('^(.*[/\\])') or ''

local function module(name)
  LIVINGREVIEW_MODULE = true
  local loaded = dofile(directory .. name)
  LIVINGREVIEW_MODULE = nil
  return loaded
end

local crossref = module('crossref.lua')
local citekeys = module('citekeys.lua')

function Pandoc(doc)
  local plan, state
  doc, plan = crossref.number(doc)
  doc, state = citekeys.prepare(doc, crossref.KINDS)
  doc = crossref.refer(doc, plan, state.rename)
  return citekeys.finish(doc, state)
end
