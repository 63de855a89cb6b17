-- Guard body for handlers written in Python: apply the writes the handler queued on `ctx.tx`
-- (each op is {command, key index, args...}) and report its result, or report its failure
-- without writing anything.
-- ARGV[1] JSON {"result": {...}, "ops": [[cmd, key_index, arg, ...], ...]} or {"fail": [retryable, reason]}
local spec = cjson.decode(ARGV[1])
if spec.fail then return {'fail', spec.fail[1], spec.fail[2]} end
for _, op in ipairs(spec.ops) do
  local call = {op[1], KEYS[op[2]]}
  for i = 3, #op do call[#call + 1] = op[i] end
  redis.call(unpack(call))
end
local r = {'ok'}
for k, v in pairs(spec.result) do
  r[#r + 1] = k
  r[#r + 1] = v
end
return r
