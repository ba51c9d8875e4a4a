package store

import "github.com/redis/go-redis/v9"

// Every script runs atomically in Redis and is called with EVALSHA (go-redis
// falls back to EVAL on NOSCRIPT, which also loads it again).
//
// Presence entries are sorted-set members "<replica> <conn>" scored by their
// expiry in milliseconds; a member whose score is below "now" is offline even
// before the reaper removes it. Routing reads the replica names out of them.

// luaRoute is shared by the scripts that publish to the replicas holding
// sockets of some users: route adds the replica of every live entry of key
// to set and returns how many live entries there are.
const luaRoute = `
local function route(set, key, now)
  local members = redis.call('ZRANGEBYSCORE', key, now, '+inf')
  for _, m in ipairs(members) do
    local r = string.match(m, '^(%S+) ')
    if r then set[r] = true end
  end
  return #members
end
local function publish(set, prefix, payload)
  for r in pairs(set) do redis.call('PUBLISH', prefix .. r, payload) end
end
`

// sendScript stores one message, all in one step.
//
// KEYS: 1 conversation list, 2 recipient's unread hash, 3 idempotency key,
// 4 sender's inbox, 5 recipient's inbox, 6 recipient's presence,
// 7 sender's presence.
// ARGV: 1 seed-format element, 2 conversation name, 3 now (ms),
// 4 idempotency TTL (ms), 5 replica channel prefix, 6 envelope head (up to
// the seq), 7 envelope tail (after the seq), 8 key prefix.
//
// Returns {1, seq} for a new message, or {0, conv, seq, element} when the
// idempotency key names an earlier one.
var sendScript = redis.NewScript(luaRoute + `
local prev = redis.call('GET', KEYS[3])
if prev then
  local conv, seq = string.match(prev, '^(%S+) (%d+)$')
  if conv then
    local list = ARGV[8] .. conv
    local n = redis.call('LLEN', list)
    local el = redis.call('LINDEX', list, n - tonumber(seq))
    return {0, conv, tonumber(seq), el or ''}
  end
end
local seq = redis.call('LPUSH', KEYS[1], ARGV[1])
local now = tonumber(ARGV[3])
local set = {}
if route(set, KEYS[6], now) == 0 then
  redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
end
route(set, KEYS[7], now)
redis.call('SET', KEYS[3], ARGV[2] .. ' ' .. seq, 'PX', ARGV[4])
redis.call('ZADD', KEYS[4], now, ARGV[2])
redis.call('ZADD', KEYS[5], now, ARGV[2])
publish(set, ARGV[5], ARGV[6] .. seq .. ARGV[7])
return {1, seq}
`)

// historyScript reads one page of a conversation and resets the reader's
// unread count, as the seed's msgread does.
//
// KEYS: 1 conversation list, 2 reader's unread hash.
// ARGV: 1 before (0: from the newest), 2 limit, 3 conversation name.
//
// Returns {length, top, unread, elements}: elements are the newest first and
// the first has seq top.
var historyScript = redis.NewScript(`
local n = redis.call('LLEN', KEYS[1])
local top = n
local before = tonumber(ARGV[1])
if before > 0 and before - 1 < top then top = before - 1 end
local items = {}
if top > 0 then
  local start = n - top
  items = redis.call('LRANGE', KEYS[1], start, start + tonumber(ARGV[2]) - 1)
end
local unread = redis.call('HGET', KEYS[2], ARGV[3])
if unread and unread ~= '0' then redis.call('HSET', KEYS[2], ARGV[3], 0) end
return {n, top, unread or '0', items}
`)

// readScript marks a conversation read and sends a receipt to both sides
// (none for an empty conversation: there is nothing to have read).
//
// KEYS: 1 reader's unread hash, 2 conversation list, 3 peer's presence,
// 4 reader's presence.
// ARGV: 1 conversation name, 2 now (ms), 3 replica channel prefix,
// 4 envelope head (up to the seq), 5 envelope tail.
//
// Returns the conversation's last seq.
var readScript = redis.NewScript(luaRoute + `
local unread = redis.call('HGET', KEYS[1], ARGV[1])
if unread and unread ~= '0' then redis.call('HSET', KEYS[1], ARGV[1], 0) end
local n = redis.call('LLEN', KEYS[2])
if n == 0 then return 0 end
local now = tonumber(ARGV[2])
local set = {}
route(set, KEYS[3], now)
route(set, KEYS[4], now)
publish(set, ARGV[3], ARGV[4] .. n .. ARGV[5])
return n
`)

// routeScript publishes an ephemeral envelope to the replicas of some users.
//
// KEYS: the users' presence sets. ARGV: 1 now (ms), 2 replica channel
// prefix, 3 envelope. Returns the number of replicas reached.
var routeScript = redis.NewScript(luaRoute + `
local now = tonumber(ARGV[1])
local set = {}
for _, k in ipairs(KEYS) do route(set, k, now) end
local count = 0
for _ in pairs(set) do count = count + 1 end
publish(set, ARGV[2], ARGV[3])
return count
`)

// inboxScript gathers a user's conversations: the newest of the inbox index,
// and those the unread hash counts (the seed's msgsend writes no index).
//
// KEYS: 1 inbox index, 2 unread hash. ARGV: 1 limit, 2 key prefix.
//
// Returns flat quadruples {conv, length, newest element, unread}.
var inboxScript = redis.NewScript(`
local seen = {}
local out = {}
local unread = {}
local h = redis.call('HGETALL', KEYS[2])
for i = 1, #h, 2 do unread[h[i]] = h[i + 1] end
local function add(conv)
  if seen[conv] then return end
  seen[conv] = true
  -- Only "<id>-<id>" names a conversation; skip other fields and keys
  -- that are not lists.
  if not string.match(conv, '^[%w_.@]+%-[%w_.@]+$') then return end
  local list = ARGV[2] .. conv
  local n = redis.pcall('LLEN', list)
  if type(n) ~= 'number' or n == 0 then return end
  out[#out + 1] = conv
  out[#out + 1] = n
  out[#out + 1] = redis.call('LINDEX', list, 0)
  out[#out + 1] = unread[conv] or '0'
end
for _, conv in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)) do add(conv) end
for conv, count in pairs(unread) do
  if count ~= '0' then add(conv) end
end
return out
`)

// connectScript adds or refreshes one live connection of a user and
// announces the user online when it was not.
//
// KEYS: 1 user's presence, 2 presence index.
// ARGV: 1 member, 2 expiry (ms), 3 now (ms), 4 user, 5 presence channel,
// 6 key TTL (ms).
//
// Returns 1 when the user came online.
var connectScript = redis.NewScript(`
local now = tonumber(ARGV[3])
local before = redis.call('ZCOUNT', KEYS[1], now, '+inf')
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4] .. ' ' .. ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
if before == 0 then
  redis.call('PUBLISH', ARGV[5], 'p 1 ' .. ARGV[4])
  return 1
end
return 0
`)

// disconnectScript removes one connection and announces the user offline
// when it was the last live one.
//
// KEYS: 1 user's presence, 2 presence index.
// ARGV: 1 member, 2 now (ms), 3 user, 4 presence channel.
//
// Returns 1 when the user went offline.
var disconnectScript = redis.NewScript(`
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[3] .. ' ' .. ARGV[1])
if removed == 1 and redis.call('ZCOUNT', KEYS[1], ARGV[2], '+inf') == 0 then
  redis.call('PUBLISH', ARGV[4], 'p 0 ' .. ARGV[3])
  return 1
end
return 0
`)

// reapScript removes expired connections (those of replicas that died
// without cleaning up) and announces users who went offline by it.
//
// KEYS: 1 presence index. ARGV: 1 now (ms), 2 batch size, 3 presence key
// prefix, 4 presence channel.
//
// Returns the number of entries removed.
var reapScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[2]))
local users = {}
for _, item in ipairs(items) do
  redis.call('ZREM', KEYS[1], item)
  local user, member = string.match(item, '^(%S+) (.+)$')
  if user then
    local key = ARGV[3] .. user
    redis.call('ZREM', key, member)
    users[user] = key
  end
end
for user, key in pairs(users) do
  if redis.call('ZCOUNT', key, now, '+inf') == 0 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. now)
    redis.call('PUBLISH', ARGV[4], 'p 0 ' .. user)
  end
end
return #items
`)

// onlineScript counts live connections for each user.
//
// KEYS: the users' presence sets. ARGV: 1 now (ms).
var onlineScript = redis.NewScript(`
local out = {}
for i, k in ipairs(KEYS) do out[i] = redis.call('ZCOUNT', k, ARGV[1], '+inf') end
return out
`)
