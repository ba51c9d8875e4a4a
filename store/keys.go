package store

import (
	"errors"
	"fmt"
	"strings"
)

// MaxUserLen is the longest user id, in bytes.
const MaxUserLen = 64

// ErrInvalidUser is returned (wrapped) for a user id outside PROTOCOL.md's rules.
var ErrInvalidUser = errors.New("store: invalid user id")

// ValidateUser reports whether id is a valid user id: 1 to 64 characters of
// A-Z a-z 0-9 _ . @. The error says what is wrong in words fit for a client.
func ValidateUser(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty", ErrInvalidUser)
	}
	if len(id) > MaxUserLen {
		return fmt.Errorf("%w: longer than %d characters", ErrInvalidUser, MaxUserLen)
	}
	for i := 0; i < len(id); i++ {
		if !userByte(id[i]) {
			return fmt.Errorf("%w: only A-Z a-z 0-9 _ . @ are allowed", ErrInvalidUser)
		}
	}
	return nil
}

func userByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_' || b == '.' || b == '@'
}

// isDecimal reports whether id is a canonical decimal integer (no sign, no
// leading zero), the form the seed writes as a JSON number.
func isDecimal(id string) bool {
	if id == "" {
		return false
	}
	if id[0] == '0' {
		return id == "0"
	}
	for i := 0; i < len(id); i++ {
		if id[i] < '0' || id[i] > '9' {
			return false
		}
	}
	return true
}

// less orders two user ids as the seed's keyname does: numerically when both
// are decimal integers, otherwise as strings.
func less(a, b string) bool {
	if isDecimal(a) && isDecimal(b) {
		if len(a) != len(b) {
			return len(a) < len(b)
		}
	}
	return a < b
}

// ConvKey is the name of the conversation between users a and b, without the
// key prefix: the larger id first, then "-", then the smaller ("43-23").
func ConvKey(a, b string) string {
	if less(a, b) {
		a, b = b, a
	}
	return a + "-" + b
}

// Peer returns the other participant of conversation conv for user me, and
// false when conv is not a conversation of me.
func Peer(conv, me string) (string, bool) {
	hi, lo, ok := strings.Cut(conv, "-")
	if !ok {
		return "", false
	}
	peer := ""
	switch me {
	case hi:
		peer = lo
	case lo:
		peer = hi
	}
	if peer == "" || ValidateUser(peer) != nil {
		return "", false
	}
	return peer, true
}

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
