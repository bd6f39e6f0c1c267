-- Find the entries of a stream whose values contain any needle (one person's identifiers,
-- JSON-escaped), a page at a time: the server does the reading, so forgetting one person
-- in a long backlog ships only the few candidate entries, not the backlog.
-- A shard's stream is read under its lease (KEYS[2], ARGV[1] = token): the drain is kept
-- out between this read and the removal, so what is found is what is removed.
-- KEYS: stream, then the lease when fenced
-- ARGV: token ('' when unfenced), start ('-' or '(<id>'), count, needles...
-- Returns {last id read ('' none), entries read, {{id, {field, value, ...}}, ...}}, or -1
-- when the lease is another's.
if KEYS[2] and redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return -1
end
local rows = redis.call('XRANGE', KEYS[1], ARGV[2], '+', 'COUNT', ARGV[3])
local found = {}
local last = ''
for _, row in ipairs(rows) do
  last = row[1]
  local fields = row[2]
  local hit = false
  for f = 2, #fields, 2 do
    for n = 4, #ARGV do
      if string.find(fields[f], ARGV[n], 1, true) then
        hit = true
        break
      end
    end
    if hit then break end
  end
  if hit then found[#found + 1] = row end
end
return {last, #rows, found}
