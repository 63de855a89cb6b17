-- What the guard already knows about every command of a fetched batch, in one call (the
-- read-only half of `guard.lua`, for the whole batch at once). It only decides whether a
-- handler runs; the guard checks again, atomically, when the outcome is stored.
--
-- KEYS  three per command, in the batch's order: outcome, done, tombstone (guard.lua's
--       KEYS[1..3] for that command; on a Redis Cluster they share the participant's slot)
--
-- Returns one element per command: its stored outcome (JSON text) when it has one; otherwise
-- a number, 1 if the step's done record exists plus 2 if its tombstone does.
local out = {}
for i = 1, #KEYS, 3 do
  local prior = redis.call('GET', KEYS[i])
  if prior then
    out[#out + 1] = prior
  else
    out[#out + 1] = redis.call('EXISTS', KEYS[i + 1]) + 2 * redis.call('EXISTS', KEYS[i + 2])
  end
end
return out
