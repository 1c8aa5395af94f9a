local RANK = {queued = 1, preprocessed = 2, embedded = 3, moderated = 4, indexed = 5, failed = 5}
local IDENTITY = {id = true, runs = true, submitted_at = true, modality = true,
                  source = true, tenant = true, object = true}
local record, results, counts, recent, deliveries, inflight = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local dead = KEYS[7]
local mode, target, id, now, now_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ttl_s, maxlen, recent_max = tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8])
local submitted_at, failing_stage_status = ARGV[9], ARGV[10]
local dead_letter, dead_maxlen = ARGV[11], ARGV[12]
local FIRST_FIELD = 13

local function is_terminal(status) return status == 'indexed' or status == 'failed' end

local function set_given_fields()
  if #ARGV >= FIRST_FIELD then redis.call('HSET', record, unpack(ARGV, FIRST_FIELD)) end
end

local function json_or_null(value)
  if value then return cjson.encode(value) end
  return 'null'
end

local function touch_recent()
  redis.call('ZADD', recent, now_ms, id)
  redis.call('ZREMRANGEBYRANK', recent, 0, -(recent_max + 1))
end

-- The in-flight index: every unfinished upload, scored by its last progress (epoch ms), so
-- uploads whose message was lost can be found and sent again (workers/sweeper.py).
local function enter(status, previous)
  if previous then redis.call('HINCRBY', counts, previous, -1) end
  redis.call('HINCRBY', counts, status, 1)
  redis.call('HSET', record, 'id', id, 'status', status, status .. '_at', now, 'updated_at', now)
  if is_terminal(status) then
    redis.call('ZREM', inflight, id)
    redis.call('HDEL', record, 'event')  -- kept only while in flight (to send it again)
  else
    -- Progress is stamped by Redis' clock, not the caller's: every host's sweeper compares
    -- it with that same clock (StatusStore.stalled), so a skewed worker clock cannot make an
    -- upload look stalled (tests/robustness/test_clock_skew.py).
    local clock = redis.call('TIME')
    redis.call('ZADD', inflight, clock[1] * 1000 + math.floor(clock[2] / 1000), id)
  end
end

-- A new run of the pipeline for this id: forget everything the previous run wrote.
-- Redis checks maxmemory only before a script's first write and then lets it run to its end
-- (it cannot stop half-way), so the first write here is an HSET, which a full Redis refuses:
-- a DEL or HDEL first would start the run past maxmemory while every other write is refused.
local function start_run(previous, keep_identity)
  local runs = tonumber(redis.call('HGET', record, 'runs') or '0') + 1
  redis.call('HSET', record, 'runs', runs)
  set_given_fields()
  local keep = {runs = true}
  for i = FIRST_FIELD, #ARGV, 2 do keep[ARGV[i]] = true end
  for _, field in ipairs(redis.call('HKEYS', record)) do
    if not (keep[field] or (keep_identity and IDENTITY[field])) then redis.call('HDEL', record, field) end
  end
  redis.call('PERSIST', record)
  redis.call('DEL', deliveries)
  enter('queued', previous)
  touch_recent()
  return 1
end

local function publish_result()
  local f = redis.call('HMGET', record, 'modality', 'object', 'flagged', 'categories', 'error_reason', 'error', 'runs',
                    'x:transcript')
  local flagged = (f[3] == '1') and 'true' or 'false'
  local categories = f[4] or '[]'
  local doc = '{"upload_id":' .. cjson.encode(id) .. ',"status":' .. cjson.encode(target)
    .. ',"modality":' .. json_or_null(f[1]) .. ',"object":' .. (f[2] or 'null')
    .. ',"flagged":' .. flagged .. ',"categories":' .. categories
    .. ',"error_reason":' .. json_or_null(f[5]) .. ',"error":' .. json_or_null(f[6])
    .. ',"transcript":' .. (f[8] or 'null')
    .. ',"at":' .. cjson.encode(now) .. '}'
  local entry = {'v', '1', 'upload_id', id, 'status', target, 'run', f[7] or '1', 'at', now,
                 'flagged', flagged, 'categories', categories}
  if f[1] then table.insert(entry, 'modality'); table.insert(entry, f[1]) end
  if f[5] then table.insert(entry, 'error_reason'); table.insert(entry, f[5]) end
  if f[6] then table.insert(entry, 'error'); table.insert(entry, f[6]) end
  table.insert(entry, 'result'); table.insert(entry, doc)
  redis.call('XADD', results, 'MAXLEN', '~', maxlen, '*', unpack(entry))
end

local current = redis.call('HGET', record, 'status')

-- create answers {1 if a run started else 0, the run number, its status}: checking for a
-- run in flight and starting one are one step, so concurrent submissions start one run.
if mode == 'create' then
  if current and (not is_terminal(current) or redis.call('HGET', record, 'submitted_at') == submitted_at) then
    return {0, tonumber(redis.call('HGET', record, 'runs') or '1'), current}
  end
  start_run(current, false)
  return {1, tonumber(redis.call('HGET', record, 'runs')), 'queued'}
end

if mode == 'requeue' then
  if not (current and is_terminal(current)) then return 0 end
  return start_run(current, true)
end

-- advance (failed included): forward only, never out of a terminal status. An unknown
-- id gets a record, so a failure is never lost even if its record was never created.
if current and (is_terminal(current) or RANK[target] <= RANK[current]) then return 0 end
-- A failure reported by a stage the record has already passed comes from a stale
-- redelivery of that stage; the run went on without it.
if current and failing_stage_status ~= '' and RANK[current] >= RANK[failing_stage_status] then return 0 end
if not current then
  redis.call('HSET', record, 'runs', 1)
  touch_recent()
end
set_given_fields()
enter(target, current)
if is_terminal(target) then
  publish_result()
  -- A failure and its dead letter are one step: a failed upload always has its dead letter.
  if target == 'failed' and dead_letter ~= '' then
    redis.call('XADD', dead, 'MAXLEN', '~', dead_maxlen, '*', unpack(cjson.decode(dead_letter)))
  end
  redis.call('DEL', deliveries)
  if ttl_s > 0 then redis.call('EXPIRE', record, math.max(1, math.ceil(ttl_s))) end
end
return 1
