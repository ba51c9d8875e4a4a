package store

import "strings"

// keys builds every Redis key and channel name chatd uses. The seed's keys
// (conversation lists and unread hashes) have no ':'; every key chatd adds
// starts with "chat:" so it can never collide with them.
type keys struct{ prefix string }

// conv is the list holding the conversation named name (see ConvKey).
func (k keys) conv(name string) string { return k.prefix + name }

// unread is the seed's hash of user's unread counts, field = conversation name.
func (k keys) unread(user string) string { return k.prefix + user }

// inbox is a sorted set of user's conversation names scored by last activity (ms).
func (k keys) inbox(user string) string { return k.prefix + "chat:inbox:" + user }

// readPrefix is the prefix of the per-conversation read-position hashes.
func (k keys) readPrefix() string { return k.prefix + "chat:read:" }

// read is the hash of conversation name's read positions: field "r:<user>"
// is the seq up to which user has read, field "len" the list length the
// scripts last accounted for (see scripts.go, luaPositions).
func (k keys) read(name string) string { return k.readPrefix() + name }

// unreadIndex is the hash of the conversations in which user may have
// unread messages, so that "ready" reads only those: field = conversation
// name, value = "<user's read position> <list length>" when it was written.
func (k keys) unreadIndex(user string) string { return k.prefix + "chat:unread:" + user }

// idem records the message stored for (user, client id) for the idempotency window.
func (k keys) idem(user, id string) string { return k.prefix + "chat:idem:" + user + ":" + id }

// presencePrefix is the prefix of the per-user presence sorted sets.
func (k keys) presencePrefix() string { return k.prefix + "chat:presence:" }

// presence is user's sorted set of live connections scored by expiry (ms).
func (k keys) presence(user string) string { return k.presencePrefix() + user }

// presenceIndex is the sorted set of every "user conn" entry scored by
// expiry (ms), which the reaper walks to find connections of dead replicas.
func (k keys) presenceIndex() string { return k.prefix + "chat:presence-index" }

// replicaChannelPrefix is the prefix of the per-replica pub/sub channels.
func (k keys) replicaChannelPrefix() string { return k.prefix + "chat:replica:" }

// replicaChannel is the channel replica subscribes to.
func (k keys) replicaChannel(replica string) string { return k.replicaChannelPrefix() + replica }

// presenceChannel carries online/offline changes to every replica.
func (k keys) presenceChannel() string { return k.prefix + "chat:presence-events" }

// fence is the string a write that waits for replicas sets just before its
// WAIT (see wait.go); it expires at once.
func (k keys) fence() string { return k.prefix + "chat:fence" }

// clusterKeys builds the keys of the Redis Cluster layout (PROTOCOL.md,
// section 4, "Redis Cluster layout"). Each key holds a hash tag, so that
// every key one script touches lives in one slot: a conversation's keys
// are tagged with its name ("{43-23}"), a user's with the user id ("{43}").
// User ids never hold '-' and conversation names always do, so the two
// kinds of tag never meet. The prefix holds no '{' or '}' (ValidatePrefix):
// it would move the tag. Channels have no tag; each hashes to its own slot,
// so the replicas' channels spread over the shards.
type clusterKeys struct{ prefix string }

// conv is the list holding the conversation named name, in the seed's
// element format, newest first.
func (k clusterKeys) conv(name string) string { return k.prefix + "{" + name + "}" }

// read is the hash of the conversation's read positions: "r:<user>" and
// "len", as keys.read.
func (k clusterKeys) read(name string) string { return k.conv(name) + ":read" }

// idem records the seq a (sender, client id) stored in the conversation
// name, for the idempotency window.
func (k clusterKeys) idem(name, user, id string) string {
	return k.conv(name) + ":idem:" + user + ":" + id
}

// user is the common part of user's keys.
func (k clusterKeys) user(user string) string { return k.prefix + "{" + user + "}" }

// inbox is a sorted set of user's conversation names scored by last activity (ms).
func (k clusterKeys) inbox(user string) string { return k.user(user) + ":inbox" }

// unreadHints is the hash of the conversations in which user may have
// unread messages: field = conversation name, value = "<user's read
// position> <list length>" when it was written (see cluster_scripts.go).
func (k clusterKeys) unreadHints(user string) string { return k.user(user) + ":unread" }

// presence is user's sorted set of live connections scored by expiry (ms).
func (k clusterKeys) presence(user string) string { return k.user(user) + ":presence" }

// presenceIndex is the sorted set of every "user conn" entry scored by
// expiry (ms), which the reaper walks. It has the name it has on a single
// Redis; on a cluster it is written before the entry it names.
func (k clusterKeys) presenceIndex() string { return keys(k).presenceIndex() }

// replicaChannel is the shard channel replica subscribes to; it has the
// name of the channel it subscribes to on a single Redis.
func (k clusterKeys) replicaChannel(replica string) string { return keys(k).replicaChannel(replica) }

// presenceChannel is the shard channel that carries online/offline changes
// to every replica, named as on a single Redis.
func (k clusterKeys) presenceChannel() string { return keys(k).presenceChannel() }

// fence is the string a write that waits for replicas sets just before its
// WAIT (see wait.go), in the slot of key, a key of this layout: the same
// hash tag with ":fence" after it ("{43-23}:fence", "{43}:fence").
func (k clusterKeys) fence(key string) string {
	open := strings.IndexByte(key, '{')
	end := strings.IndexByte(key[open+1:], '}')
	return key[:open+1+end+1] + ":fence"
}
