// Package chat holds chatd's domain values, shared by the packages that
// serve the wire protocol (hub) and keep the data (store): user ids and
// conversation names, messages and read positions, the protocol's limits,
// and the validation that enforces them, with errors whose text is meant
// for the client. It knows nothing of Redis or of how frames are written.
package chat

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits of the wire protocol (docs/PROTOCOL.md).
const (
	MaxUserLen       = 64   // longest user id, in bytes
	MaxTextBytes     = 4096 // longest message text, in bytes
	MaxClientIDBytes = 128  // longest client-chosen message id, in bytes
	DefaultPageSize  = 50   // history page size when none is asked
	MaxPageSize      = 200  // largest history page
	DefaultInboxSize = 100  // conversations in an inbox when none is asked
	MaxInboxSize     = 500  // largest inbox
)

// Kinds of refusal, for errors.Is. Each means nothing was stored.
var (
	ErrInvalid  = errors.New("invalid request")
	ErrTooLarge = errors.New("too large")
)

// Error is a request refused for its content. Its text is meant for the
// client as it is; errors.Is matches its Kind (ErrInvalid or ErrTooLarge).
type Error struct {
	Kind error
	Text string
}

func (e *Error) Error() string { return e.Text }

// Unwrap returns the kind of refusal.
func (e *Error) Unwrap() error { return e.Kind }

// Invalid returns an ErrInvalid refusal with the text fmt.Sprintf(format, args...).
func Invalid(format string, args ...any) error {
	return &Error{Kind: ErrInvalid, Text: fmt.Sprintf(format, args...)}
}

// ValidateUser checks a user id: 1 to 64 characters of A-Z a-z 0-9 _ . @.
func ValidateUser(id string) error {
	if id == "" {
		return Invalid("user id is empty")
	}
	if len(id) > MaxUserLen {
		return Invalid("user id is longer than %d characters", MaxUserLen)
	}
	for i := 0; i < len(id); i++ {
		if !userByte(id[i]) {
			return Invalid("user id may hold only A-Z a-z 0-9 _ . @")
		}
	}
	return nil
}

func userByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_' || b == '.' || b == '@'
}

// ValidateText checks a message text: 1 to 4096 bytes of valid UTF-8.
func ValidateText(text string) error {
	switch {
	case text == "":
		return Invalid("text must be 1 to %d bytes", MaxTextBytes)
	case len(text) > MaxTextBytes:
		return &Error{Kind: ErrTooLarge, Text: fmt.Sprintf("text must be 1 to %d bytes", MaxTextBytes)}
	case !utf8.ValidString(text):
		return Invalid("text is not valid UTF-8")
	}
	return nil
}

// ValidateClientID checks a client-chosen message id: 1 to 128 bytes of
// printable ASCII without spaces.
func ValidateClientID(id string) error {
	if id == "" || len(id) > MaxClientIDBytes {
		return Invalid("id must be 1 to %d characters", MaxClientIDBytes)
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return Invalid("id must be printable ASCII without spaces")
		}
	}
	return nil
}

// IsDecimal reports whether id is a canonical decimal integer (no sign, no
// leading zero), the form the seed writes as a JSON number.
func IsDecimal(id string) bool {
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
	if IsDecimal(a) && IsDecimal(b) && len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// ConvKey is the name of the conversation between users a and b: the
// larger id first, then "-", then the smaller ("43-23"), as the seed names
// its lists.
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

// Message is one stored chat message.
type Message struct {
	Conv string  // the conversation's name (ConvKey)
	Seq  int64   // its position, counted from 1 at the oldest
	From string  // sender
	To   string  // recipient
	Text string  // 1 to MaxTextBytes of UTF-8
	Time float64 // when it was stored, seconds since the epoch
}

// SendRequest is one message to store.
type SendRequest struct {
	From, To, Text string
	// ClientID makes the send idempotent per sender. When empty a random one
	// is assigned before the call, so a retried command cannot store twice;
	// its record is kept for 10 minutes, not for the idempotency TTL.
	ClientID string
	// Origin is the sending connection's presence member; it is left out of
	// live delivery (it gets the reply instead). May be empty.
	Origin string
}

// Page is one page of a conversation's history.
type Page struct {
	Messages []Message // newest first
	Unread   int64     // the reader's unread messages: the peer's after Read
	Read     int64     // the seq up to which the reader has read
	PeerRead int64     // the seq up to which the peer has read
	More     bool      // older messages exist
}

// ReadState is a user's read position in one conversation after a read.
type ReadState struct {
	Last   int64 // the conversation's last seq (0: it is empty)
	Read   int64 // the seq up to which the user has read
	Unread int64 // the peer's messages after Read
}

// Conversation is one entry of a user's inbox.
type Conversation struct {
	With     string
	Unread   int64    // the peer's messages after Read
	Read     int64    // the seq up to which the user has read
	PeerRead int64    // the seq up to which the peer has read
	Last     *Message // nil when the newest element is not a message
}

// Kind says what a Delivery carries.
type Kind byte

// Kinds of Delivery.
const (
	KindMessage Kind = 'm' // a stored message, to both users
	KindReceipt Kind = 'r' // a read receipt, to both users
	KindUnread  Kind = 'u' // a reader's new unread count, to the reader
	KindTyping  Kind = 't' // a typing notice, to the peer
)

// Delivery is one event for the live sockets of some users, as it arrives
// from another replica (or this one) through Redis.
type Delivery struct {
	Kind Kind
	// Origin is the presence member of the connection that caused it,
	// which has its answer already; empty for none.
	Origin string
	// Users are the users whose sockets get it.
	Users []string
	// Stored is when a message was stored (zero for other kinds).
	Stored time.Time

	Message Message // KindMessage
	// By is the reader (KindReceipt) or the typist (KindTyping).
	By string
	// With is the other user of the conversation, seen from By
	// (KindReceipt) or from the reader (KindUnread).
	With string
	// Read is the reader's new read position (KindReceipt, KindUnread).
	Read int64
	// Unread is the reader's unread count after it (KindUnread).
	Unread int64
}
