-- Progress report and lease renewal for a running attempt, in one round trip.
-- Returns 'running' while the attempt still owns the job; otherwise the job's state when it
-- ended ('cancelled' after a cancel; 'failed' when another worker gave up on it after its last
-- attempt, for one), 'superseded' when a newer attempt owns it, or 'missing'.
-- KEYS: 1 job hash, 2 queue stream
-- ARGV: 1 attempt, 2 stage ("" for a bare lease renewal), 3 message, 4 now (ms),
--       5 group, 6 worker name, 7 entry id, 8 task-events channel, 9 job id
local job = redis.call('HMGET', KEYS[1], 'state', 'attempts')
if job[1] ~= 'running' then return job[1] or 'missing' end
if job[2] ~= ARGV[1] then return 'superseded' end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'stage', ARGV[2], 'message', ARGV[3], 'updated_at', ARGV[4])
  redis.call('PUBLISH', ARGV[8], ARGV[9])
end
-- Claiming our own entry with min-idle 0 resets its idle time: that is the lease renewal.
redis.call('XCLAIM', KEYS[2], ARGV[5], ARGV[6], 0, ARGV[7], 'JUSTID')
return 'running'
