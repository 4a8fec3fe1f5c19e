-- Hands a running attempt's job back to the queue (a worker is stopping): a fresh entry that
-- any worker can take at once, and the attempt not counted against the job.
-- KEYS: 1 job hash, 2 queue stream
-- ARGV: 1 attempt, 2 entry id, 3 group, 4 now (ms), 5 job id, 6 task-events channel
local job = redis.call('HMGET', KEYS[1], 'state', 'attempts')
if job[1] ~= 'running' then return job[1] or 'missing' end
if job[2] ~= ARGV[1] then return 'superseded' end
redis.call('XACK', KEYS[2], ARGV[3], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
local entry = redis.call('XADD', KEYS[2], '*', 'job', ARGV[5])
redis.call('HSET', KEYS[1], 'state', 'queued', 'stage', '0',
  'message', 'queued (handed back by a stopping worker)', 'attempts', tonumber(ARGV[1]) - 1,
  'entry', entry, 'updated_at', ARGV[4])
redis.call('PUBLISH', ARGV[6], ARGV[5])
return 'requeued'
