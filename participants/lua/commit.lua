-- Guard body for handlers written in Python: apply the writes the handler queued on `ctx.tx`
-- (each op is {command, key index, args...}) all or nothing, and report its result; or report
-- its failure without writing anything.
-- ARGV[1] JSON {"result": {...}, "ops": [[cmd, key_index, arg, ...], ...]} or {"fail": [retryable, reason]}
--
-- Lua does not roll back, and a write can fail only when it runs (WRONGTYPE, a hash value that
-- is not an integer, an overflow...). So before each write the script notes what the write
-- will replace, only the part it touches (the hash fields, the set or sorted-set members, the
-- count pushed; a whole-key write keeps a DUMP of the key). When a write fails, the writes
-- before it are undone from those notes, last first, and the command fails non-retryably,
-- naming the write: retrying cannot change its verdict. An error that is the server's state
-- rather than the command's (OOM, READONLY, ...) is raised instead, once the writes are
-- undone: the SDK retries those.
local spec = cjson.decode(ARGV[1])
if spec.fail then return {'fail', spec.fail[1], spec.fail[2]} end

local HASH = {HSET = 2, HSETNX = 0, HINCRBY = 0, HINCRBYFLOAT = 0, HDEL = 1}
local ZADD_FLAGS = {NX = true, XX = true, GT = true, LT = true, CH = true, INCR = true}

-- The members (or hash fields) a write touches: args from `first`, every `step`-th.
local function every(args, first, step)
  local out = {}
  for i = first, #args, step do out[#out + 1] = args[i] end
  return out
end

local function touched(cmd, args)
  local step = HASH[cmd]
  if step then return step == 0 and {args[1]} or every(args, 1, step) end
  if cmd == 'SADD' or cmd == 'SREM' or cmd == 'ZREM' then return every(args, 1, 1) end
  if cmd == 'ZINCRBY' then return {args[2]} end
  local i = 1
  while args[i] and ZADD_FLAGS[string.upper(args[i])] do i = i + 1 end
  return every(args, i + 1, 2)
end

-- The values `names` hold now (false when absent), or the read's error. Hash fields are read
-- one at a time with HGET: a participant allowed to write a hash may read it that way already.
local function prior(read, key, names)
  if read ~= 'HGET' then return redis.pcall(read, key, unpack(names)) end
  local out = {}
  for i, name in ipairs(names) do
    local was = redis.pcall('HGET', key, name)
    if type(was) == 'table' and was.err then return was end
    out[i] = was
  end
  return out
end

-- What a write replaces, read before it runs: returns the function that puts it back (called
-- only if the write succeeded), or the error of the read.
local function note(cmd, key, args)
  if cmd == 'RPUSH' or cmd == 'LPUSH' then
    return function() redis.call(cmd == 'RPUSH' and 'RPOP' or 'LPOP', key, #args) end
  end
  if cmd == 'EXPIRE' or cmd == 'PEXPIRE' then
    local ttl = redis.call('PTTL', key)
    return function()
      if ttl >= 0 then redis.call('PEXPIRE', key, ttl) elseif ttl == -1 then redis.call('PERSIST', key) end
    end
  end
  local read, put, drop
  if HASH[cmd] then
    read, put, drop = 'HGET', function(f, v) redis.call('HSET', key, f, v) end, 'HDEL'
  elseif cmd == 'SADD' or cmd == 'SREM' then
    read, put, drop = 'SMISMEMBER', function(m) redis.call('SADD', key, m) end, 'SREM'
  elseif cmd == 'ZADD' or cmd == 'ZREM' or cmd == 'ZINCRBY' then
    read, put, drop = 'ZMSCORE', function(m, s) redis.call('ZADD', key, s, m) end, 'ZREM'
  end
  if not read then  -- SET, DEL, INCRBY, INCRBYFLOAT, LTRIM, XADD: the whole key
    local dump, ttl = redis.call('DUMP', key), redis.call('PTTL', key)
    return function()
      if dump then redis.call('RESTORE', key, math.max(ttl, 0), dump, 'REPLACE')
      else redis.call('DEL', key) end
    end
  end
  local names = touched(cmd, args)
  if #names == 0 then return function() end end
  local old = prior(read, key, names)
  if old.err then return nil, old.err end
  return function()
    for i, name in ipairs(names) do
      local was = old[i]
      if was and was ~= 0 then put(name, was) else redis.call(drop, key, name) end
    end
  end
end

local undo = {}
local function fail(i, op, err)
  for j = #undo, 1, -1 do undo[j]() end
  local where = 'write ' .. i .. ' of ' .. #spec.ops .. ' (' .. op[1] .. ' ' .. KEYS[op[2]] .. ')'
  local code = string.match(err, '^(%u+)')
  if code ~= 'ERR' and code ~= 'WRONGTYPE' then error({err = err}) end
  return {'fail', '0', where .. ' failed: ' .. err .. '; nothing was written'}
end

for i, op in ipairs(spec.ops) do
  local cmd, key, args = op[1], KEYS[op[2]], {}
  for j = 3, #op do args[#args + 1] = op[j] end
  local restore, err = note(cmd, key, args)
  if not restore then return fail(i, op, err) end
  local reply = redis.pcall(cmd, key, unpack(args))
  if type(reply) == 'table' and reply.err then return fail(i, op, reply.err) end
  undo[#undo + 1] = restore
end
local r = {'ok'}
for k, v in pairs(spec.result) do
  r[#r + 1] = k
  r[#r + 1] = v
end
return r
