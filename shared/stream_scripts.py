"""The Lua steps of `shared.streams.ConsumerGroup`: each changes entries only if they are held.

Each script runs atomically on the server. "Held" is what `XPENDING stream group id id 1` says:
the entry is pending and delivered to this consumer. Keeping the check and the change in one
step is what stops a consumer whose lease lapsed from changing an entry another one took over.
"""

from __future__ import annotations

from shared.jobstate import OWNER_LUA, RECORD_OUTCOME_LUA

RENEW_IF_OWNED = """
-- KEYS[1] stream; ARGV: group, consumer, entry ids. Returns {renewed ids, deleted ids}.
-- An entry deleted from the stream while pending is not claimed (XCLAIM would silently drop it
-- from the pending list): it is reported, so that its holder records it.
local renewed, deleted = {}, {}
for i, entry_id in ipairs(ARGV) do
  if i > 2 then
    local pending = redis.call('XPENDING', KEYS[1], ARGV[1], entry_id, entry_id, 1)
    if pending[1] and pending[1][2] == ARGV[2] then
      if #redis.call('XRANGE', KEYS[1], entry_id, entry_id) == 0 then
        table.insert(deleted, entry_id)
      else
        redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, entry_id, 'JUSTID')
        table.insert(renewed, entry_id)
      end
    end
  end
end
return {renewed, deleted}
"""

ACK_IF_OWNED = """
-- KEYS[1] stream, KEYS[2] errors hash; ARGV: group, consumer, entry ids in ascending order.
-- One XPENDING of this consumer's entries over the ids' range finds those it holds; only when
-- that reply was cut short are the ids it did not reach looked up one by one.
local wanted = #ARGV - 2
local limit = wanted * 2
local held = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[#ARGV], limit, ARGV[2])
local owned = {}
for _, entry in ipairs(held) do
  owned[entry[1]] = true
end
local acked = {}
for i = 3, #ARGV do
  local entry_id = ARGV[i]
  if not owned[entry_id] and #held >= limit then
    local pending = redis.call('XPENDING', KEYS[1], ARGV[1], entry_id, entry_id, 1)
    owned[entry_id] = pending[1] ~= nil and pending[1][2] == ARGV[2]
  end
  if owned[entry_id] then
    acked[#acked + 1] = entry_id
  end
end
if #acked > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(acked))
  redis.call('HDEL', KEYS[2], unpack(acked))
end
return acked
"""

SETTLE = (
    OWNER_LUA
    + RECORD_OUTCOME_LUA
    + """
-- One change of one entry by its owner, with its job's outcome when there is a job.
-- KEYS: 1 stream, 2 errors, 3 dead, 4 dead index, 5 entry -> job index,
--       6 job, 7 request, 8 job index, 9 results, 10 request's job list
-- ARGV: 1 group, 2 consumer, 3 entry id, 4 action, 5 now, 6 job id ('' when none),
--       7 job state, 8 result, 9 retention, 10 results maxlen, 11 dead-letter cap,
--       12 and 13 action arguments, 14 n (number of job field/value items),
--       15..14+n job fields, then the dead letter's field/value items.
-- Actions: ack; retry (12 idle ms, 13 error); handback (12 idle ms, 13 delivery count);
--          dead; dead_deleted (the entry is gone from the stream and its pending list).
-- Returns {status, detail[, dropped dead letter]}: status ok | lost (not this consumer's) |
-- already (done before: a retry of this step after its reply was lost).
local stream, group, consumer, entry_id = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local action, job_id, state = ARGV[4], ARGV[6], ARGV[7]
local n = tonumber(ARGV[14])
local fields = {}
for i = 15, 14 + n do
  fields[#fields + 1] = ARGV[i]
end
local dead_fields = {}
for i = 15 + n, #ARGV do
  dead_fields[#dead_fields + 1] = ARGV[i]
end
local job_keys = {KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]}

local function record(outcome)
  if job_id == '' then
    return ''
  end
  return record_outcome(job_keys, job_id, outcome, ARGV[5], ARGV[8], ARGV[9], ARGV[10],
                        entry_id .. ' ' .. consumer, fields)
end

local holder = owner_of(stream, group, entry_id)
if (action == 'retry' or action == 'handback') and holder == consumer
    and #redis.call('XRANGE', stream, entry_id, entry_id) == 0 then
  -- Deleted while pending (XDEL, XTRIM): XCLAIM would drop it from the pending list without a
  -- trace, so it is dead-lettered instead (the dead-letter fields given are for this case).
  action = 'dead_deleted'
  fields = {'error', 'the entry was deleted from the stream while pending',
            'dead_reason', 'entry_deleted'}
end

if action == 'dead' or action == 'dead_deleted' then
  local index_field = stream .. ' ' .. entry_id
  local existing = redis.call('HGET', KEYS[4], index_field)
  if existing then
    return {'already', existing}
  end
  if action == 'dead' and holder ~= consumer then
    return {'lost', ''}
  end
  local dropped = ''
  if redis.call('XLEN', KEYS[3]) >= tonumber(ARGV[11]) then
    local oldest = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)[1]
    local record_fields = {}
    for i = 1, #oldest[2], 2 do
      record_fields[oldest[2][i]] = oldest[2][i + 1]
    end
    redis.call('HDEL', KEYS[4], (record_fields['stream'] or '') .. ' ' ..
               (record_fields['entry_id'] or ''))
    redis.call('XDEL', KEYS[3], oldest[1])
    dropped = oldest[1]
  end
  local dead_id = redis.call('XADD', KEYS[3], '*', unpack(dead_fields))
  redis.call('HSET', KEYS[4], index_field, dead_id)
  redis.call('XACK', stream, group, entry_id)
  redis.call('HDEL', KEYS[2], entry_id)
  redis.call('HDEL', KEYS[5], entry_id)
  record('dead')
  return {'ok', dead_id, dropped}
end

if holder ~= consumer then
  if job_id ~= '' and redis.call('HGET', KEYS[6], 'settled_by') == entry_id .. ' ' .. consumer then
    return {'already', redis.call('HGET', KEYS[6], 'state') or ''}
  end
  return {'lost', ''}
end

if action == 'ack' then
  redis.call('XACK', stream, group, entry_id)
  redis.call('HDEL', KEYS[2], entry_id)
  redis.call('HDEL', KEYS[5], entry_id)
  return {'ok', record(state)}
elseif action == 'retry' then
  redis.call('HSET', KEYS[2], entry_id, ARGV[13])
  redis.call('XCLAIM', stream, group, consumer, 0, entry_id, 'IDLE', ARGV[12], 'JUSTID')
  return {'ok', record('failed')}
elseif action == 'handback' then
  -- The delivery count is set back to what it was before this delivery: the reclaim that
  -- follows counts it again, so a hand-back does not use up an attempt.
  redis.call('XCLAIM', stream, group, consumer, 0, entry_id, 'IDLE', ARGV[12],
             'RETRYCOUNT', ARGV[13], 'JUSTID')
  return {'ok', record('queued')}
end
return redis.error_reply('unknown action ' .. action)
"""
)

RECLAIM = """
-- KEYS[1] stream; ARGV: group, consumer, min idle ms, cursor, count, most entries to look at.
-- XAUTOCLAIM from the cursor until `count` are claimed, the pending list has been walked to its
-- end, or enough entries were looked at; then each claimed entry's delivery count.
-- Returns {next cursor, {{id, fields, deliveries}...}, {deleted ids...}}.
local cursor = ARGV[4]
local count = tonumber(ARGV[5])
local budget = tonumber(ARGV[6])
local claimed, deleted = {}, {}
repeat
  local want = count - #claimed
  local reply = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], cursor,
                           'COUNT', want)
  cursor = reply[1]
  for _, entry in ipairs(reply[2]) do
    claimed[#claimed + 1] = entry
  end
  for _, entry_id in ipairs(reply[3] or {}) do
    deleted[#deleted + 1] = entry_id
  end
  budget = budget - want * 10
until #claimed >= count or cursor == '0-0' or budget <= 0
for _, entry in ipairs(claimed) do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
  entry[3] = pending[1] and pending[1][4] or 1
end
return {cursor, claimed, deleted}
"""

LEAVE_IF_EMPTY = """
-- KEYS[1] stream; ARGV: group, consumer, least idle ms (0: any). Deletes the consumer when it
-- holds no pending entry (and has been idle that long); returns 1 when deleted.
local held = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #held > 0 then
  return 0
end
if tonumber(ARGV[3]) > 0 then
  local idle = nil
  for _, info in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
    local name, consumer_idle = nil, nil
    for i = 1, #info, 2 do
      if info[i] == 'name' then name = info[i + 1] end
      if info[i] == 'idle' then consumer_idle = info[i + 1] end
    end
    if name == ARGV[2] then idle = consumer_idle end
  end
  if idle == nil or idle < tonumber(ARGV[3]) then
    return 0
  end
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
