-- ReleaseReservation: give back exactly what the saga's reservation holds, once.
-- KEYS as in inventory_reserve.lua; ARGV[1] saga id, ARGV[2] reservation id (may be empty).
local stock, reserved, reservations = KEYS[1], KEYS[2], KEYS[3]
local saga = ARGV[1]

local existing = redis.call('HGET', reservations, saga)
if not existing then
  -- Released before it was made (the reserve timed out or never arrived): remember it, so a
  -- reserve arriving late finds a released reservation and takes nothing.
  redis.call('HSET', reservations, saga, cjson.encode({id = ARGV[2], status = 'released', items = {}}))
  return {'ok', 'released', '0'}
end

local r = cjson.decode(existing)
if r.status ~= 'reserved' then return {'ok', 'released', '0'} end
local count = 0
for product, qty in pairs(r.items) do
  redis.call('HINCRBY', stock, product, qty)
  redis.call('HINCRBY', reserved, product, -qty)
  count = count + qty
end
r.status = 'released'
redis.call('HSET', reservations, saga, cjson.encode(r))
return {'ok', 'released', tostring(count)}
