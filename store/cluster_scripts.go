package store

import "github.com/redis/go-redis/v9"

// The scripts of the Redis Cluster layout (clusterKeys). Each touches the
// keys of one slot only, all passed in KEYS, and computes no key name: a
// conversation's scripts its list, read hash and idempotency records; a
// user's scripts its inbox, unread hints and presence entries. What a
// single Redis does in one script, a cluster does in a few calls, one per
// slot, in an order chosen so that a crash between them leaves nothing
// that is wrong, only things that are missing and repaired later (see
// cluster.go).

// luaClusterPositions reads read positions as luaPositions does, with one
// difference: a cluster has no seed hash, so a conversation without a read
// hash starts from 0 for both users. The one rule (a message's sender has
// read everything up to it) applies to the elements no chatd script
// accounted for, as on a single Redis: there, all of them.
const luaClusterPositions = luaTail + `
-- positions returns the read positions of users a and b in a conversation
-- (list key list, length n, read hash rk). skip is how many elements were
-- pushed after those n (the message a send is storing), 0 when nil.
local function positions(rk, list, n, a, b, skip)
  local st = redis.call('HMGET', rk, 'len', 'r:' .. a, 'r:' .. b)
  local len = math.min(tonumber(st[1]) or 0, n)
  local ra = math.min(tonumber(st[2]) or 0, n)
  local rb = math.min(tonumber(st[3]) or 0, n)
  return tail(list, n, n - len, skip, a, b, ra, rb)
end
`

// clusterSendScript stores one message in its conversation's slot: the
// idempotency check, the list, both read positions (the sender's moves to
// the new message) and the idempotency record. Its success is the send's
// commit point; the inboxes, unread hints and delivery follow (cluster.go).
//
// KEYS: 1 conversation list, 2 its read hash, 3 idempotency key.
// ARGV: 1 seed-format element, 2 idempotency TTL (ms), 3 sender,
// 4 recipient.
//
// Returns {stored, seq, length, sender's read position, recipient's read
// position, element}: stored is 1 for a new message (element is then ""),
// 0 when the idempotency key names an earlier one, which element holds
// (positions and length are then the conversation's now).
var clusterSendScript = redis.NewScript(luaClusterPositions + `
local from, to = ARGV[3], ARGV[4]
local prev = tonumber(redis.call('GET', KEYS[3]))
if prev then
  local n = redis.call('LLEN', KEYS[1])
  local el = redis.call('LINDEX', KEYS[1], n - prev) or ''
  local rf, rt = positions(KEYS[2], KEYS[1], n, from, to)
  return {0, prev, n, rf, rt, el}
end
local seq = redis.call('LPUSH', KEYS[1], ARGV[1])
local _, rt = positions(KEYS[2], KEYS[1], seq - 1, from, to, 1)
if to == from then rt = seq end
-- Numbers are turned into text once (see sendScript).
local sseq = tostring(seq)
redis.call('HSET', KEYS[2], 'len', sseq, 'r:' .. from, sseq, 'r:' .. to, tostring(rt))
redis.call('SET', KEYS[3], sseq, 'PX', ARGV[2])
return {1, seq, seq, seq, rt, ''}
`)

// clusterUserScript brings one user's side of a conversation up to date in
// the user's slot, and says where the user's sockets are.
//
// The unread hint of a conversation is "<read position> <length>", a state
// of the conversation as the conversation's script saw it. Hints arrive
// from several replicas in any order, so a hint only replaces an older
// one: states are ordered by (length, read position), which never go back.
// A state with nothing unread (position = length) removes the hint,
// unless a later state is there.
//
// KEYS: 1 user's inbox, 2 user's unread hints, 3 user's presence.
// ARGV: 1 conversation name, 2 inbox score (ms; "" leaves the inbox
// alone), 3 ZADD condition for it ("GT" or "NX"), 4 the user's read
// position, 5 the conversation's length, 6 now (ms; "" asks for no
// replicas), 7 a presence member to leave out (the socket that sent the
// message, which has its answer; "" for none).
//
// Returns the names of the replicas that hold live sockets of the user
// (but the one left out).
var clusterUserScript = redis.NewScript(`
local conv = ARGV[1]
if ARGV[2] ~= '' then redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2], conv) end
local r, n = tonumber(ARGV[4]), tonumber(ARGV[5])
local cur = redis.call('HGET', KEYS[2], conv)
local cr, cn
if cur then
  cr, cn = string.match(cur, '^(%d+) (%d+)$')
  cr, cn = tonumber(cr), tonumber(cn)
end
if not cn or cn < n or (cn == n and cr <= r) then
  if r < n then
    redis.call('HSET', KEYS[2], conv, r .. ' ' .. n)
  elseif cur then
    redis.call('HDEL', KEYS[2], conv)
  end
end
local out = {}
if ARGV[6] ~= '' then
  local seen = {}
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], ARGV[6], '+inf')) do
    local r = m ~= ARGV[7] and string.match(m, '^(%S+) ')
    if r and not seen[r] then
      seen[r] = true
      out[#out + 1] = r
    end
  end
end
return out
`)

// clusterHistoryScript reads one page of a conversation and both read
// positions, as historyScript does. It writes nothing.
//
// KEYS: 1 conversation list, 2 its read hash.
// ARGV: 1 before (0: from the newest), 2 limit, 3 reader, 4 peer.
//
// Returns {length, top, unread, read, peer read, elements}: elements are
// the newest first and the first has seq top.
var clusterHistoryScript = redis.NewScript(luaClusterPositions + luaPage + `
local n, top, items = page(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
local r, rp = positions(KEYS[2], KEYS[1], n, ARGV[3], ARGV[4])
return {n, top, n - r, r, rp, items}
`)

// clusterReadScript moves the reader's read position forward (never back)
// to a seq or to the newest message, and writes both positions. An empty
// conversation is left alone.
//
// KEYS: 1 conversation's read hash, 2 conversation list.
// ARGV: 1 reader, 2 peer, 3 seq to read up to (0: the newest).
//
// Returns {length, read position, peer's read position, newest element}
// ({0, 0, 0, ""} for an empty conversation).
var clusterReadScript = redis.NewScript(luaClusterPositions + `
local n = redis.call('LLEN', KEYS[2])
if n == 0 then return {0, 0, 0, ''} end
local me, peer = ARGV[1], ARGV[2]
local r, rp = positions(KEYS[1], KEYS[2], n, me, peer)
local upto = tonumber(ARGV[3])
if upto <= 0 or upto > n then upto = n end
if upto > r then r = upto end
if me == peer then rp = r end
redis.call('HSET', KEYS[1], 'len', n, 'r:' .. me, r, 'r:' .. peer, rp)
return {n, r, rp, redis.call('LINDEX', KEYS[2], 0) or ''}
`)

// clusterConvScript reads a conversation's length and both read
// positions, and its newest element when asked, for Unread and Inbox. It
// writes nothing.
//
// KEYS: 1 conversation list, 2 its read hash.
// ARGV: 1 user, 2 peer, 3 "1" for the newest element.
//
// Returns {length, user's read position, peer's read position, newest
// element ("" when not asked or empty)}.
var clusterConvScript = redis.NewScript(luaClusterPositions + `
local n = redis.call('LLEN', KEYS[1])
if n == 0 then return {0, 0, 0, ''} end
local r, rp = positions(KEYS[2], KEYS[1], n, ARGV[1], ARGV[2])
local last = ''
if ARGV[3] == '1' then last = redis.call('LINDEX', KEYS[1], 0) or '' end
return {n, r, rp, last}
`)

// clusterConnectScript adds or refreshes one live connection in the
// user's presence set (its index entry is written before, by another
// call).
//
// KEYS: 1 user's presence. ARGV: 1 member, 2 expiry (ms), 3 now (ms),
// 4 key TTL (ms).
//
// Returns 1 when the user came online.
var clusterConnectScript = redis.NewScript(`
local before = redis.call('ZCOUNT', KEYS[1], ARGV[3], '+inf')
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if before == 0 then return 1 end
return 0
`)

// clusterDisconnectScript removes one connection from the user's presence
// set.
//
// KEYS: 1 user's presence. ARGV: 1 member, 2 now (ms).
//
// Returns 1 when the user went offline by it.
var clusterDisconnectScript = redis.NewScript(`
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed == 1 and redis.call('ZCOUNT', KEYS[1], ARGV[2], '+inf') == 0 then return 1 end
return 0
`)

// luaRemoveExpired removes the members ARGV[2…] of the sorted set key
// whose scores are still below now (a heartbeat may have refreshed them
// since they were read), and returns how many it removed.
const luaRemoveExpired = `
local function removeExpired(key, now)
  local removed = 0
  for i = 2, #ARGV do
    local s = tonumber(redis.call('ZSCORE', key, ARGV[i]))
    if s and s < now then removed = removed + redis.call('ZREM', key, ARGV[i]) end
  end
  return removed
end
`

// clusterReapScript removes a user's connections that the presence index
// names as expired, each only if it is still expired (a heartbeat may have
// refreshed it since the index was read).
//
// KEYS: 1 user's presence. ARGV: 1 now (ms), 2… members.
//
// Returns 1 when the user went offline by it.
var clusterReapScript = redis.NewScript(luaRemoveExpired + `
local now = tonumber(ARGV[1])
local removed = removeExpired(KEYS[1], now)
if removed > 0 and redis.call('ZCOUNT', KEYS[1], now, '+inf') == 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
  return 1
end
return 0
`)

// clusterTrimScript removes index entries that are still expired (a
// heartbeat writes an entry's index entry again before the entry).
//
// KEYS: 1 presence index. ARGV: 1 now (ms), 2… entries.
//
// Returns how many entries it removed.
var clusterTrimScript = redis.NewScript(luaRemoveExpired + `
return removeExpired(KEYS[1], tonumber(ARGV[1]))
`)
