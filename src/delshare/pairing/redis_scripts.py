"""The Lua scripts that carry the rendezvous mailbox rules in Redis (``redis_backend``).

Each script is one atomic step (open, allocate, add, close, heartbeat, node registration) of
the rules ``mailbox.MailboxTable`` applies in memory; ``LUA_COMMON`` is prepended to each.
Above every script: its ARGV and what it returns.

Keys, under ``prefix`` (nameplates cannot contain ``:``)::

    mb:<nameplate>            hash: id, nameplate, deadline (ms, Redis clock), members,
                              connected, s1/s2 (sender/receiver seat: "on" | "left"),
                              ip1/ip2 (the seat holder's ip key), messages, bytes
    mb:<nameplate>:in1, :in2  streams: bodies for side 1, 2; a "left" entry ends them
    mb:<nameplate>:live1, :live2  leases: the side's node is alive
    index                     sorted set nameplate -> deadline (the ``max_mailboxes`` bound)
    sizes                     hash nameplate -> bytes, and ":total" (the memory bound)
    nodes, capacity           sorted set node -> lease deadline; hash m:<node>, b:<node> -> limits
    ip:<address>              sorted set "<mailbox id>:<side>" -> lease deadline (per-IP bound)
    node:<id>                 stream: wakes that node's reader

One Redis (or a primary with replicas) serves all nodes; the scripts touch the shared index key,
so this is not meant for Redis Cluster.
"""

__all__ = ["ADD", "ALLOCATE", "BEAT", "CLOSE", "LUA_COMMON", "NODE", "OPEN"]

LUA_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- k: hash, inbox of side 1, inbox of side 2, lease of side 1, lease of side 2, index, sizes,
--    nodes, capacities
local function field(k, name)
  return redis.call('HGET', k[1], name)
end

local function current(k, id, now)
  local deadline = tonumber(field(k, 'deadline'))
  return deadline ~= nil and field(k, 'id') == id and now < deadline
end

local function forget_size(k, nameplate)
  local size = tonumber(redis.call('HGET', k[7], nameplate) or '0')
  redis.call('HDEL', k[7], nameplate)
  if size > 0 and redis.call('HINCRBY', k[7], ':total', -size) <= 0 then
    redis.call('HDEL', k[7], ':total')
  end
end

-- Forget (a bounded number of) mailboxes whose deadline passed, and their bytes.
local function sweep(k, now)
  for _, nameplate in ipairs(redis.call('ZRANGEBYSCORE', k[6], '-inf', now, 'LIMIT', 0, 100)) do
    forget_size(k, nameplate)
    redis.call('ZREM', k[6], nameplate)
  end
end

local function drop(k)
  local nameplate = field(k, 'nameplate')
  if nameplate then
    redis.call('ZREM', k[6], nameplate)
    forget_size(k, nameplate)
  end
  redis.call('DEL', k[1], k[2], k[3], k[4], k[5])
end

local function release_ip(k, side)
  local ipkey = field(k, 'ip' .. side)
  if ipkey and ipkey ~= '' then
    redis.call('ZREM', ipkey, field(k, 'id') .. ':' .. side)
  end
end

local function leave(k, side)
  release_ip(k, side)
  redis.call('HSET', k[1], 's' .. side, 'left')
  redis.call('HINCRBY', k[1], 'connected', -1)
  local other = 3 - side
  if field(k, 's' .. other) == 'on' then
    redis.call('XADD', k[1 + other], '*', 'left', '1')
    redis.call('PEXPIREAT', k[1 + other], field(k, 'deadline'))
  end
end

local function reap(k)
  for side = 1, 2 do
    if field(k, 's' .. side) == 'on' and redis.call('EXISTS', k[3 + side]) == 0 then
      leave(k, side)
    end
  end
  if tonumber(field(k, 'connected')) <= 0 then
    drop(k)
  end
end

-- The cluster's bounds: the sum over live nodes (this one counted even if not registered yet).
local function capacity(k, now, own_m, own_b, node)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', k[8], '-inf', now)) do
    redis.call('HDEL', k[9], 'm:' .. id, 'b:' .. id)
  end
  redis.call('ZREMRANGEBYSCORE', k[8], '-inf', now)
  local m, b, seen = 0, 0, false
  for _, id in ipairs(redis.call('ZRANGE', k[8], 0, -1)) do
    m = m + tonumber(redis.call('HGET', k[9], 'm:' .. id) or '0')
    b = b + tonumber(redis.call('HGET', k[9], 'b:' .. id) or '0')
    seen = seen or id == node
  end
  if not seen then
    m, b = m + own_m, b + own_b
  end
  return m, b
end

local function ip_allows(ipkey, now, limit)
  if ipkey == '' then
    return true
  end
  redis.call('ZREMRANGEBYSCORE', ipkey, '-inf', now)
  return redis.call('ZCARD', ipkey) < limit
end

local function create(k, id, nameplate, now, max_age)
  forget_size(k, nameplate)  -- a stale size left by an expired mailbox with this number
  redis.call('DEL', k[2], k[3], k[4], k[5])
  local deadline = now + max_age
  redis.call('HSET', k[1], 'id', id, 'nameplate', nameplate, 'deadline', deadline,
    'members', 0, 'connected', 0, 'messages', 0, 'bytes', 0)
  redis.call('PEXPIREAT', k[1], deadline)
  redis.call('ZADD', k[6], deadline, nameplate)
  if redis.call('PTTL', k[6]) < max_age then
    redis.call('PEXPIREAT', k[6], deadline)
  end
end

-- -> {side, remaining_ms, id, seats taken}
local function take_seat(k, side, now, lease, ipkey)
  local deadline = tonumber(field(k, 'deadline'))
  redis.call('HSET', k[1], 's' .. side, 'on', 'ip' .. side, ipkey)
  local members = redis.call('HINCRBY', k[1], 'members', 1)
  redis.call('HINCRBY', k[1], 'connected', 1)
  local expiry = math.min(lease, deadline - now)
  redis.call('SET', k[3 + side], '1', 'PX', expiry)
  if ipkey ~= '' then
    redis.call('ZADD', ipkey, now + expiry, field(k, 'id') .. ':' .. side)
    if redis.call('PTTL', ipkey) < lease then
      redis.call('PEXPIRE', ipkey, lease)
    end
  end
  return {side, deadline - now, field(k, 'id'), members}
end
"""

# ARGV: new id, nameplate, max_age_ms, lease_ms, side (1 sender, 2 receiver, 0 first unused),
#       ip key ('' for none), max per ip, own max_mailboxes, own max_total_bytes, node id
# -> {side, remaining_ms, id, seats taken} or {0, refusal label}
OPEN = """
local k, now = KEYS, now_ms()
if redis.call('EXISTS', k[1]) == 1 then
  reap(k)
end
local exists = redis.call('EXISTS', k[1]) == 1
if not exists then
  sweep(k, now)
  local max_m = capacity(k, now, tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10])
  if redis.call('ZCARD', k[6]) >= max_m then
    return {0, 'busy'}
  end
end
if not ip_allows(ARGV[6], now, tonumber(ARGV[7])) then
  return {0, 'ip_mailboxes'}
end
if not exists then
  create(k, ARGV[1], ARGV[2], now, tonumber(ARGV[3]))
end
if now >= tonumber(field(k, 'deadline')) then
  return {0, 'expired'}
end
local side = tonumber(ARGV[5])
if side == 0 then
  if not field(k, 's1') then
    side = 1
  elseif not field(k, 's2') then
    side = 2
  else
    return {0, 'full'}
  end
elseif field(k, 's' .. side) then
  return {0, 'in_use'}
end
return take_seat(k, side, now, tonumber(ARGV[4]), ARGV[6])
"""

# KEYS: index, sizes, nodes, capacities
# ARGV: prefix, new id, max_age_ms, lease_ms, ip key, max per ip, own max_mailboxes,
#       own max_total_bytes, node id, then the candidate nameplates
# -> {1, remaining_ms, id, seats taken, nameplate} or {0, refusal label}
ALLOCATE = """
local now = now_ms()
local function keys_of(nameplate)
  local base = ARGV[1] .. 'mb:' .. nameplate
  return {base, base .. ':in1', base .. ':in2', base .. ':live1', base .. ':live2',
    KEYS[1], KEYS[2], KEYS[3], KEYS[4]}
end
local shared = keys_of('')
sweep(shared, now)
local max_m = capacity(shared, now, tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9])
if redis.call('ZCARD', KEYS[1]) >= max_m then
  return {0, 'busy'}
end
if not ip_allows(ARGV[5], now, tonumber(ARGV[6])) then
  return {0, 'ip_mailboxes'}
end
for i = 10, #ARGV do
  local k = keys_of(ARGV[i])
  if redis.call('EXISTS', k[1]) == 1 then
    reap(k)
  end
  if redis.call('EXISTS', k[1]) == 0 then
    create(k, ARGV[2], ARGV[i], now, tonumber(ARGV[3]))
    local taken = take_seat(k, 1, now, tonumber(ARGV[4]), ARGV[5])
    taken[5] = ARGV[i]
    return taken
  end
end
return {0, 'no_number'}
"""

# ARGV: id, side, body, max_messages, max_bytes, max_message_size, own max_total_bytes, node id
# -> '' or the refusal label ('gone': the mailbox is not in Redis)
ADD = """
local k, now = KEYS, now_ms()
if not current(k, ARGV[1], now) then
  if redis.call('EXISTS', k[1]) == 0 then
    return 'gone'
  end
  return 'expired'
end
local side = tonumber(ARGV[2])
if field(k, 's' .. side) ~= 'on' then
  return 'mailbox closed'
end
local size = string.len(ARGV[3])
if size > tonumber(ARGV[6]) then
  return 'size'
end
if tonumber(field(k, 'messages')) + 1 > tonumber(ARGV[4]) then
  return 'messages'
end
if tonumber(field(k, 'bytes')) + size > tonumber(ARGV[5]) then
  return 'bytes'
end
sweep(k, now)
local _, max_b = capacity(k, now, 0, tonumber(ARGV[7]), ARGV[8])
if tonumber(redis.call('HGET', k[7], ':total') or '0') + size > max_b then
  return 'memory'
end
redis.call('HINCRBY', k[1], 'messages', 1)
redis.call('HINCRBY', k[1], 'bytes', size)
redis.call('HINCRBY', k[7], field(k, 'nameplate'), size)
redis.call('HINCRBY', k[7], ':total', size)
local deadline = tonumber(field(k, 'deadline'))
if redis.call('PTTL', k[7]) < deadline - now then
  redis.call('PEXPIREAT', k[7], deadline)
end
local other = 3 - side
if field(k, 's' .. other) ~= 'left' then
  redis.call('XADD', k[1 + other], 'MAXLEN', ARGV[4], '*', 'body', ARGV[3])
  redis.call('PEXPIREAT', k[1 + other], field(k, 'deadline'))
end
return ''
"""

# ARGV: id, side, ip key -> 1 if the side was closed here
CLOSE = """
local k, now = KEYS, now_ms()
if ARGV[3] ~= '' then
  redis.call('ZREM', ARGV[3], ARGV[1] .. ':' .. ARGV[2])
end
if field(k, 'id') ~= ARGV[1] then
  return 0
end
if not current(k, ARGV[1], now) then
  drop(k)
  return 0
end
local side = tonumber(ARGV[2])
redis.call('DEL', k[3 + side])
if field(k, 's' .. side) == 'on' then
  leave(k, side)
end
if tonumber(field(k, 'connected')) <= 0 then
  drop(k)
end
return 1
"""

# KEYS: 9 per member; ARGV: lease_ms, then id, side per member -> 'ok' | 'left' | 'expired' each
BEAT = """
local now, lease, statuses = now_ms(), tonumber(ARGV[1]), {}
for i = 0, #KEYS / 9 - 1 do
  local k = {unpack(KEYS, 9 * i + 1, 9 * i + 9)}
  local id, side = ARGV[2 + 2 * i], tonumber(ARGV[3 + 2 * i])
  local status = 'expired'
  if current(k, id, now) then
    status = 'left'
    if field(k, 's' .. side) == 'on' then
      local deadline = tonumber(field(k, 'deadline'))
      local expiry = math.min(lease, deadline - now)
      redis.call('SET', k[3 + side], '1', 'PX', expiry)
      local ipkey = field(k, 'ip' .. side)
      if ipkey and ipkey ~= '' then
        redis.call('ZADD', ipkey, now + expiry, id .. ':' .. side)
        redis.call('PEXPIRE', ipkey, lease)
      end
      reap(k)
      status = 'ok'
    end
  end
  statuses[i + 1] = status
end
return statuses
"""

# KEYS: nodes, capacities; ARGV: node id, lease_ms (0: leave), max_mailboxes, max_total_bytes
NODE = """
local now = now_ms()
if tonumber(ARGV[2]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], 'm:' .. ARGV[1], 'b:' .. ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], 'm:' .. ARGV[1], ARGV[3], 'b:' .. ARGV[1], ARGV[4])
for _, key in ipairs(KEYS) do
  if redis.call('PTTL', key) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', key, ARGV[2])
  end
end
return 1
"""
