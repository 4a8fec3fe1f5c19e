-- Records the outcome of a running attempt, if that attempt still owns the job.
-- Returns 'done'; when the outcome was not recorded, the job's state when it ended otherwise
-- ('cancelled' after a cancel; 'failed' when another worker gave up on it after its last
-- attempt, for one), 'superseded' when a newer attempt owns the job, or 'missing'.
-- KEYS: 1 job hash, 2 queue stream
-- ARGV: 1 attempt, 2 entry id, 3 group, 4 now (ms), 5 finished TTL (ms),
--       6 'succeeded' or 'failed', 7 message, 8 error, 9 task-events channel, 10 job id,
--       11 failure kind ('render' or 'internal'; failure only, '' on success),
--       12 artifact key, 13 content type, 14 bytes, 15 sha256 (success only)
local job = redis.call('HMGET', KEYS[1], 'state', 'attempts', 'total_stages')
if job[1] ~= 'running' then return job[1] or 'missing' end
if job[2] ~= ARGV[1] then return 'superseded' end
if ARGV[6] == 'succeeded' then
  redis.call('HSET', KEYS[1], 'state', 'succeeded', 'stage', job[3], 'message', ARGV[7],
    'artifact', ARGV[12], 'content_type', ARGV[13], 'bytes', ARGV[14], 'sha256', ARGV[15],
    'updated_at', ARGV[4], 'finished_at', ARGV[4])
else
  redis.call('HSET', KEYS[1], 'state', 'failed', 'message', ARGV[7], 'error', ARGV[8],
    'failure', ARGV[11], 'updated_at', ARGV[4], 'finished_at', ARGV[4])
end
redis.call('HDEL', KEYS[1], 'spec')
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('XACK', KEYS[2], ARGV[3], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[9], ARGV[10])
return 'done'
