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
// but skip (a socket that needs nothing published: it caused the message)
// to set and returns how many live entries there are.
const luaRoute = `
local function route(set, key, now, skip)
  local members = redis.call('ZRANGEBYSCORE', key, now, '+inf')
  for _, m in ipairs(members) do
    if m ~= skip then
      local r = string.match(m, '^(%S+) ')
      if r then set[r] = true end
    end
  end
  return #members
end
local function publish(set, prefix, payload)
  for r in pairs(set) do redis.call('PUBLISH', prefix .. r, payload) end
end
`

// luaPositions is shared by the scripts that read or move read positions.
//
// One rule makes the positions: a message's sender has read everything up
// to it. A conversation's read hash (keys.read) holds "r:<user>", the seq up
// to which user has read, for both users, and "len", the list length the
// last script that wrote the hash accounted for. chatd's own sends move the
// sender's position to the new seq, so after a user's position there are
// only the peer's messages, and unread is the list length minus the
// position. Elements past "len" were pushed by someone else (the seed's
// msgsend): the newest of them from a user moves that user's position to it.
//
// A conversation without a read hash (written by the seed only, or before
// chatd kept positions) starts from the seed's unread counts, length -
// count (so that unread is the seed's count, never more than the length),
// and the same rule applies to the elements after that.
//
// Of the elements the rule has to look at, at most maxTail (the newest) are.
// The first script that writes the hash starts from the positions found, so
// nothing a user sees jumps.
const luaPositions = luaTail + `
-- count parses one of the seed's unread counts; junk counts 0.
local function count(v)
  local c = tonumber(v)
  if type(v) ~= 'string' or not c or c < 0 or c ~= math.floor(c) then return 0 end
  return c
end
local function seedCount(key, conv)
  return count(redis.pcall('HGET', key, conv))
end
-- positions returns the read positions of users a and b in the conversation
-- conv (list key list, length n, read hash rk; seedA and seedB the users'
-- seed hashes). skip is how many elements were pushed after those n (the
-- message a send is storing), 0 when nil.
local function positions(rk, list, n, a, b, seedA, seedB, conv, skip)
  local st = redis.call('HMGET', rk, 'len', 'r:' .. a, 'r:' .. b)
  local len = tonumber(st[1])
  local ra, rb, k
  if len then
    ra = math.min(tonumber(st[2]) or 0, n)
    rb = math.min(tonumber(st[3]) or 0, n)
    k = n - len
  else
    ra = n - math.min(seedCount(seedA, conv), n)
    rb = n - math.min(seedCount(seedB, conv), n)
    k = n - math.min(ra, rb)
  end
  return tail(list, n, k, skip, a, b, ra, rb)
end
`

// luaPage reads one page of a conversation (both layouts' history): up to
// limit elements older than seq before (0: from the newest), newest first.
// It returns the list's length, the seq of the page's first element, and
// the elements.
const luaPage = `
local function page(list, before, limit)
  local n = redis.call('LLEN', list)
  local top = n
  if before > 0 and before - 1 < top then top = before - 1 end
  local items = {}
  if top > 0 then
    local start = n - top
    items = redis.call('LRANGE', list, start, start + limit - 1)
  end
  return n, top, items
end
`

// luaTail applies the one rule of read positions to the k newest elements
// of a list of length n that no script accounted for (skip newer ones were
// pushed after them): the newest each of users a and b sent moves that
// user's position (ra, rb) to it. Of those elements at most maxTail (the
// newest) are read. Shared by both layouts' position functions.
const luaTail = `
local maxTail = 1000
-- sender returns a list element's fromid (a JSON string or number).
local function sender(el)
  return string.match(el, '"fromid"%s*:%s*"([^"\\]*)"') or string.match(el, '"fromid"%s*:%s*(%d+)')
end
local function tail(list, n, k, skip, a, b, ra, rb)
  if k <= 0 then return ra, rb end
  skip = skip or 0
  local items = redis.call('LRANGE', list, skip, skip + math.min(k, maxTail) - 1)
  for i, el in ipairs(items) do
    local seq = n - i + 1
    if seq <= ra and seq <= rb then break end
    local f = sender(el)
    if f == a and seq > ra then ra = seq end
    if f == b and seq > rb then rb = seq end
  end
  return ra, rb
end
`

// sendScript stores one message, all in one step.
//
// The recipient's unread index gets the conversation if it has not got it
// (HSETNX: while both users chat, a send changes no index); the sender's
// entry, if any, stays, counting 0 now, for Unread to remove.
//
// KEYS: 1 conversation list, 2 recipient's unread hash, 3 idempotency key,
// 4 sender's inbox, 5 recipient's inbox, 6 recipient's presence,
// 7 sender's presence, 8 conversation's read hash, 9 sender's unread hash,
// 10 recipient's unread index.
// ARGV: 1 seed-format element, 2 conversation name, 3 now (ms),
// 4 idempotency TTL (ms), 5 replica channel prefix, 6 delivery payload
// head (up to the seq), 7 its tail (after the seq), 8 key prefix,
// 9 sender, 10 recipient, 11 "1" to publish nothing (the caller delivers
// the message once replicas have acknowledged it, see wait.go), "" to
// publish, 12 the sending socket's presence member (empty: none), which
// routing leaves out: the sending socket has its answer, so its replica
// is published to only for the users' other sockets there. (Payloads: see appendHead
// in pubsub.go.)
//
// Returns {1, seq} for a new message, or {0, conv, seq, element} when the
// idempotency key names an earlier one.
var sendScript = redis.NewScript(luaRoute + luaPositions + `
local from, to, now = ARGV[9], ARGV[10], ARGV[3]
local seq = redis.call('LPUSH', KEYS[1], ARGV[1])
-- Numbers are turned into text once: Redis formats every number passed to
-- redis.call with printf, which costs more than the command itself.
local sseq = tostring(seq)
-- The idempotency key is recorded in the same call that finds an earlier
-- one; then the element goes back, and the earlier message is the answer.
local record = ARGV[2] .. ' ' .. sseq
local prev = redis.pcall('SET', KEYS[3], record, 'NX', 'GET', 'PX', ARGV[4])
if type(prev) == 'table' and prev.err then
  redis.call('LPOP', KEYS[1]) -- nothing half-written
  return prev
end
if prev then
  local conv, pseq = string.match(prev, '^(%S+) (%d+)$')
  if conv then
    redis.call('LPOP', KEYS[1])
    local list = ARGV[8] .. conv
    local n = redis.call('LLEN', list)
    local el = redis.call('LINDEX', list, n - tonumber(pseq))
    return {0, conv, tonumber(pseq), el or ''}
  end
  redis.call('SET', KEYS[3], record, 'PX', ARGV[4]) -- not a record of ours: replaced
end
local n = seq - 1
local _, rt = positions(KEYS[8], KEYS[1], n, from, to, KEYS[9], KEYS[2], ARGV[2], 1)
if to == from then
  redis.call('HSET', KEYS[8], 'len', sseq, 'r:' .. from, sseq)
else
  local srt = tostring(rt)
  redis.call('HSET', KEYS[8], 'len', sseq, 'r:' .. from, sseq, 'r:' .. to, srt)
  redis.call('HSETNX', KEYS[10], ARGV[2], srt .. ' ' .. sseq)
end
local set = {}
if route(set, KEYS[6], now, ARGV[12]) == 0 then
  redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
end
route(set, KEYS[7], now, ARGV[12])
redis.call('ZADD', KEYS[4], now, ARGV[2])
redis.call('ZADD', KEYS[5], now, ARGV[2])
if ARGV[11] ~= '1' then publish(set, ARGV[5], ARGV[6] .. sseq .. ARGV[7]) end
return {1, seq}
`)

// historyScript reads one page of a conversation and the read positions of
// both users. It writes nothing: reading history marks nothing read.
//
// KEYS: 1 conversation list, 2 conversation's read hash, 3 reader's unread
// hash, 4 peer's unread hash.
// ARGV: 1 before (0: from the newest), 2 limit, 3 conversation name,
// 4 reader, 5 peer.
//
// Returns {length, top, unread, read, peer read, elements}: elements are
// the newest first and the first has seq top.
var historyScript = redis.NewScript(luaPositions + luaPage + `
local n, top, items = page(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
local r, rp = positions(KEYS[2], KEYS[1], n, ARGV[4], ARGV[5], KEYS[3], KEYS[4], ARGV[3])
return {n, top, n - r, r, rp, items}
`)

// readScript moves the reader's read position forward (never back) to a
// seq or to the newest message, resets the seed's unread count to what is
// left unread, sends a receipt to both sides and the new count to the
// reader's other sockets (none for an empty conversation: there is nothing
// to have read, and nothing is written).
//
// KEYS: 1 conversation's read hash, 2 conversation list, 3 reader's unread
// hash, 4 peer's unread hash, 5 reader's unread index, 6 peer's unread
// index, 7 peer's presence, 8 reader's presence, 9 reader's inbox index,
// 10 peer's inbox index (a conversation only the seed wrote gets its
// entries there, scored by its newest element's time).
// ARGV: 1 conversation name, 2 now (ms), 3 replica channel prefix,
// 4 receipt payload head (up to the seq), 5 its tail, 6 reader, 7 peer,
// 8 seq to read up to (0: the newest), 9 unread payload head (up to the
// read position), 10 its middle (up to the count), 11 its tail, 12 "1" to
// publish nothing (the caller sends the frames once replicas have
// acknowledged the read, see wait.go), "" to publish.
//
// Returns {length, read position, unread}.
var readScript = redis.NewScript(luaRoute + luaPositions + `
local n = redis.call('LLEN', KEYS[2])
if n == 0 then return {0, 0, 0} end
local me, peer = ARGV[6], ARGV[7]
local r, rp = positions(KEYS[1], KEYS[2], n, me, peer, KEYS[3], KEYS[4], ARGV[1])
local upto = tonumber(ARGV[8])
if upto <= 0 or upto > n then upto = n end
if upto > r then r = upto end
if me == peer then rp = r end
redis.call('HSET', KEYS[1], 'len', n, 'r:' .. me, r, 'r:' .. peer, rp)
-- A conversation only the seed wrote has no inbox entries: give it some, so
-- that it stays in both inboxes once chatd has read it.
if not redis.call('ZSCORE', KEYS[9], ARGV[1]) or not redis.call('ZSCORE', KEYS[10], ARGV[1]) then
  local at = tonumber(ARGV[2])
  local ok, e = pcall(cjson.decode, redis.call('LINDEX', KEYS[2], 0))
  if ok and type(e) == 'table' and tonumber(e.time) then at = math.floor(tonumber(e.time) * 1000) end
  redis.call('ZADD', KEYS[9], 'NX', at, ARGV[1])
  redis.call('ZADD', KEYS[10], 'NX', at, ARGV[1])
end
local unread = n - r
local seed = redis.call('HGET', KEYS[3], ARGV[1])
if unread == 0 then
  if seed and seed ~= '0' then redis.call('HSET', KEYS[3], ARGV[1], 0) end
  redis.call('HDEL', KEYS[5], ARGV[1])
else
  if count(seed) > unread then redis.call('HSET', KEYS[3], ARGV[1], unread) end
  redis.call('HSET', KEYS[5], ARGV[1], r .. ' ' .. n)
end
if me ~= peer and rp < n then redis.call('HSET', KEYS[6], ARGV[1], rp .. ' ' .. n) end
if ARGV[12] == '1' then return {n, r, unread} end
local now = tonumber(ARGV[2])
local mine = {}
route(mine, KEYS[8], now)
local set = {}
route(set, KEYS[7], now)
for k in pairs(mine) do set[k] = true end
publish(set, ARGV[3], ARGV[4] .. r .. ARGV[5])
publish(mine, ARGV[3], ARGV[9] .. r .. ARGV[10] .. unread .. ARGV[11])
return {n, r, unread}
`)

// unreadScript counts a user's unread messages per conversation, for the
// conversations the unread index names and those the seed's unread hash
// counts (the seed's msgsend writes no index). An index entry "<read> <len>"
// whose len is still the list's length gives the count with one LLEN; any
// other conversation is counted as luaPositions does. An entry whose count
// is 0 (a send leaves the sender's) is removed.
//
// KEYS: 1 user's unread hash, 2 user's unread index.
// ARGV: 1 user, 2 key prefix, 3 read hash prefix.
//
// Returns flat pairs {conv, unread}, only those above 0.
var unreadScript = redis.NewScript(luaPositions + `
local me = ARGV[1]
local seen = {}
local out = {}
local function add(conv, n)
  local r = positions(ARGV[3] .. conv, ARGV[2] .. conv, n, me, me, KEYS[1], KEYS[1], conv)
  if n > r then
    out[#out + 1] = conv
    out[#out + 1] = n - r
    return true
  end
  return false
end
local idx = redis.call('HGETALL', KEYS[2])
for i = 1, #idx, 2 do
  local conv = idx[i]
  seen[conv] = true
  local n = redis.call('LLEN', ARGV[2] .. conv)
  local r, len = string.match(idx[i + 1], '^(%d+) (%d+)$')
  local counted
  if r and tonumber(len) == n then
    counted = n > tonumber(r)
    if counted then
      out[#out + 1] = conv
      out[#out + 1] = n - tonumber(r)
    end
  else
    counted = n > 0 and add(conv, n)
  end
  if not counted then redis.call('HDEL', KEYS[2], conv) end
end
local h = redis.call('HGETALL', KEYS[1])
for i = 1, #h, 2 do
  local conv = h[i]
  if count(h[i + 1]) > 0 and not seen[conv] then
    seen[conv] = true
    -- Only "<id>-<id>" naming a list of a conversation of me counts.
    local hi, lo = string.match(conv, '^([%w_.@]+)%-([%w_.@]+)$')
    if hi == me or lo == me then
      local n = redis.pcall('LLEN', ARGV[2] .. conv)
      if type(n) == 'number' and n > 0 then add(conv, n) end
    end
  end
end
return out
`)

// routeScript publishes an ephemeral payload to the replicas of some users.
//
// KEYS: the users' presence sets. ARGV: 1 now (ms), 2 replica channel
// prefix, 3 payload, 4 a presence member to leave out ("" or none: none).
// Returns the number of replicas reached.
var routeScript = redis.NewScript(luaRoute + `
local now = tonumber(ARGV[1])
local set = {}
for _, k in ipairs(KEYS) do route(set, k, now, ARGV[4]) end
local count = 0
for _ in pairs(set) do count = count + 1 end
publish(set, ARGV[2], ARGV[3])
return count
`)

// inboxScript gathers a user's conversations: the newest of the inbox index,
// and those the unread hash counts (the seed's msgsend writes no index),
// with both users' read positions.
//
// KEYS: 1 inbox index, 2 unread hash. ARGV: 1 limit, 2 key prefix, 3 user,
// 4 read hash prefix.
//
// Returns flat sextuples {conv, length, newest element, unread, read,
// peer read}.
var inboxScript = redis.NewScript(luaPositions + `
local me = ARGV[3]
local seen = {}
local out = {}
local unread = {}
local h = redis.call('HGETALL', KEYS[2])
for i = 1, #h, 2 do unread[h[i]] = h[i + 1] end
local function add(conv)
  if seen[conv] then return end
  seen[conv] = true
  -- Only "<id>-<id>" naming a conversation of me counts; skip other
  -- fields and keys that are not lists.
  local hi, lo = string.match(conv, '^([%w_.@]+)%-([%w_.@]+)$')
  local peer
  if hi == me then peer = lo elseif lo == me then peer = hi else return end
  local list = ARGV[2] .. conv
  local n = redis.pcall('LLEN', list)
  if type(n) ~= 'number' or n == 0 then return end
  local r, rp = positions(ARGV[4] .. conv, list, n, me, peer, KEYS[2], ARGV[2] .. peer, conv)
  out[#out + 1] = conv
  out[#out + 1] = n
  out[#out + 1] = redis.call('LINDEX', list, 0)
  out[#out + 1] = n - r
  out[#out + 1] = r
  out[#out + 1] = rp
end
for _, conv in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)) do add(conv) end
for conv, c in pairs(unread) do
  if count(c) > 0 then add(conv) end
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
