-- Creates a job atomically: its record, its queue entry and its place in the recent list,
-- or returns the job an idempotency key already names.
-- KEYS: 1 job hash, 2 queue stream, 3 recent zset, 4 idempotency key
-- ARGV: 1 job id, 2 now (ms), 3 spec JSON, 4 total stages, 5 spec digest,
--       6 "1" when an idempotency key was given, 7 idempotency TTL (ms), 8 recent-list cap,
--       9 trace context ("" when none), 10 queue bound (entries queued or running)
if ARGV[6] == '1' then
  local existing = redis.call('GET', KEYS[4])
  if existing then
    local space = string.find(existing, ' ', 1, true)
    local id = string.sub(existing, 1, space - 1)
    if string.sub(existing, space + 1) ~= ARGV[5] then
      return {'conflict', id}
    end
    return {'existing', id}
  end
end
local depth = redis.call('XLEN', KEYS[2])
if depth >= tonumber(ARGV[10]) then
  return {'full', tostring(depth)}
end
local entry = redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])
redis.call('HSET', KEYS[1],
  'state', 'queued', 'stage', '0', 'total_stages', ARGV[4], 'message', 'queued',
  'spec', ARGV[3], 'attempts', '0', 'created_at', ARGV[2], 'updated_at', ARGV[2],
  'entry', entry, 'trace', ARGV[9])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[8]) + 1))
if ARGV[6] == '1' then
  redis.call('SET', KEYS[4], ARGV[1] .. ' ' .. ARGV[5], 'PX', ARGV[7])
end
return {'created', ARGV[1]}
