-- Cancels a queued or running job: it ends in the terminal state 'cancelled' at once. A
-- running attempt learns of it at its next lease renewal and stops. Terminal jobs are left as
-- they are.
-- KEYS: 1 job hash, 2 queue stream
-- ARGV: 1 now (ms), 2 finished TTL (ms), 3 group, 4 task-events channel, 5 job id
local job = redis.call('HMGET', KEYS[1], 'state', 'entry')
if not job[1] then return 'missing' end
if job[1] ~= 'queued' and job[1] ~= 'running' then return job[1] end
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'message', 'cancelled',
  'updated_at', ARGV[1], 'finished_at', ARGV[1])
redis.call('HDEL', KEYS[1], 'spec')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if job[2] then
  redis.call('XACK', KEYS[2], ARGV[3], job[2])
  redis.call('XDEL', KEYS[2], job[2])
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 'cancelled'
