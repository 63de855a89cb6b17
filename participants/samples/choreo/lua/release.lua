-- Release an order's reservation (a guard body). Safe to repeat, and safe before any
-- reservation: it then records the saga as void, and the guard refuses a late reservation.
-- KEYS[1] stock, KEYS[2] reservations; ARGV[1] saga id
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then
  redis.call('HSET', KEYS[2], ARGV[1], cjson.encode({status = 'void'}))
  return {'ok', 'released', '0'}
end
local r = cjson.decode(raw)
if r.status ~= 'reserved' then return {'ok', 'released', '0'} end
local units = 0
for product, qty in pairs(r.items) do
  redis.call('HINCRBY', KEYS[1], product, qty)
  units = units + qty
end
r.status = 'released'
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(r))
return {'ok', 'released', tostring(units)}
