package store

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
