-- Reserve an order's items, all or none (a guard body: the SDK's guard.lua runs it).
-- KEYS[1] stock (hash product -> units), KEYS[2] reservations (hash saga -> JSON)
-- ARGV[1] saga id, ARGV[2] JSON object product -> quantity
-- Every check comes before the first write: Lua does not roll back.
local wanted = cjson.decode(ARGV[2])
local short = {}
for product, qty in pairs(wanted) do
  local has = tonumber(redis.call('HGET', KEYS[1], product) or '0') or 0
  if has < qty then
    short[#short + 1] = product .. ' (wants ' .. qty .. ', has ' .. has .. ')'
  end
end
if #short > 0 then
  table.sort(short)
  return {'fail', '0', 'out of stock: ' .. table.concat(short, ', ')}
end
for product, qty in pairs(wanted) do
  redis.call('HINCRBY', KEYS[1], product, -qty)
end
local id = 'res-' .. ARGV[1]
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode({reservationId = id, items = wanted, status = 'reserved'}))
return {'ok', 'reservationId', id}
