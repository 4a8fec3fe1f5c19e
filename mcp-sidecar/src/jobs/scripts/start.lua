-- A worker received queue entry ARGV[1] for this job: decide whether to run it.
-- Returns {'run', attempt, spec, trace} and marks the job running under a new attempt number
-- (the fence: later writes must quote it); otherwise removes the entry and says why not.
-- KEYS: 1 job hash, 2 queue stream
-- ARGV: 1 entry id, 2 group, 3 worker name, 4 now (ms), 5 max attempts, 6 finished TTL (ms),
--       7 task-events channel, 8 job id (published there when the job changes)
local function drop_entry()
  redis.call('XACK', KEYS[2], ARGV[2], ARGV[1])
  redis.call('XDEL', KEYS[2], ARGV[1])
end
local job = redis.call('HMGET', KEYS[1], 'state', 'attempts', 'last_error', 'entry', 'spec', 'trace')
local state = job[1]
if not state then drop_entry(); return {'missing'} end
if job[4] ~= ARGV[1] then drop_entry(); return {'stale'} end
if state == 'succeeded' or state == 'failed' or state == 'cancelled' then drop_entry(); return {'terminal'} end
local last_error = job[3]
if state == 'running' then
  -- Reclaimed: the worker holding the previous attempt stopped renewing its lease.
  last_error = 'attempt ' .. job[2] .. ' stopped: its worker stopped renewing the lease'
  redis.call('HSET', KEYS[1], 'last_error', last_error)
end
local attempt = tonumber(job[2]) + 1
if attempt > tonumber(ARGV[5]) then
  local err = 'gave up after ' .. job[2] .. ' attempts'
  if last_error then err = err .. '; last error: ' .. last_error end
  redis.call('HSET', KEYS[1], 'state', 'failed', 'error', err, 'message', 'failed: ' .. err,
    'failure', 'internal', 'updated_at', ARGV[4], 'finished_at', ARGV[4])
  redis.call('HDEL', KEYS[1], 'spec')
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  drop_entry()
  redis.call('PUBLISH', ARGV[7], ARGV[8])
  return {'exhausted', err}
end
redis.call('HSET', KEYS[1], 'state', 'running', 'attempts', attempt, 'worker', ARGV[3],
  'stage', '0', 'message', 'starting', 'updated_at', ARGV[4], 'started_at', ARGV[4])
redis.call('PUBLISH', ARGV[7], ARGV[8])
return {'run', tostring(attempt), job[5], job[6] or ''}
