package hub

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/internal/jsonstr"
)

// Error codes of the wire protocol.
const (
	CodeBadRequest  = "bad_request"
	CodeForbidden   = "forbidden"
	CodeNotFound    = "not_found"
	CodeTooLarge    = "too_large"
	CodeRateLimited = "rate_limited"
	CodeUnavailable = "unavailable"
	CodeInternal    = "internal"
)

// inFrame is any client → server frame; which fields count depends on Type.
type inFrame struct {
	Type   string   `json:"type"`
	ID     *string  `json:"id"`
	To     string   `json:"to"`
	Text   *string  `json:"text"`
	With   string   `json:"with"`
	Before *int64   `json:"before"`
	Seq    *int64   `json:"seq"`
	Limit  *int     `json:"limit"`
	Users  []string `json:"users"`
	Watch  *bool    `json:"watch"`
	Peek   *bool    `json:"peek"`
}

type readyFrame struct {
	Type    string           `json:"type"`
	User    string           `json:"user"`
	Replica string           `json:"replica"`
	Unread  map[string]int64 `json:"unread"`
}

type historyFrame struct {
	Type     string      `json:"type"`
	ID       string      `json:"id,omitempty"`
	With     string      `json:"with"`
	Messages messageList `json:"messages"`
	Unread   int64       `json:"unread"`
	Read     int64       `json:"read"`
	PeerRead int64       `json:"peer_read"`
	More     bool        `json:"more"`
}

// readFrame answers "read": the reader's read position and what is left
// unread. The reader's other sockets get the same values in an "unread"
// frame (unreadFrame).
type readFrame struct {
	Type   string `json:"type"`
	ID     string `json:"id,omitempty"`
	With   string `json:"with"`
	Read   int64  `json:"read"`
	Unread int64  `json:"unread"`
}

type inboxFrame struct {
	Type          string           `json:"type"`
	ID            string           `json:"id,omitempty"`
	Conversations conversationList `json:"conversations"`
	More          bool             `json:"more"`
}

type presenceFrame struct {
	Type   string          `json:"type"`
	ID     string          `json:"id,omitempty"`
	Online map[string]bool `json:"online"`
}

type pongFrame struct {
	Type string `json:"type"`
	ID   string `json:"id,omitempty"`
}

type errorFrame struct {
	Type       string   `json:"type"`
	ID         string   `json:"id,omitempty"`
	Code       string   `json:"code"`
	Message    string   `json:"message"`
	RetryAfter *float64 `json:"retry_after,omitempty"`
}

var resyncFrame = []byte(`{"type":"resync"}`)

// encode marshals a frame; every frame type above always marshals. Frames
// are JSON, not HTML: <, > and & are written as they are, so a text costs
// at most its JSON-escaped size.
func encode(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic("hub: encode frame: " + err.Error())
	}
	return bytes.TrimSuffix(b.Bytes(), []byte{'\n'})
}

// encodeCut encodes a reply holding n entries (messages of a page,
// conversations of an inbox) with build(k), which renders the first k of
// them. When the frame is over limit bytes it keeps fewer entries, at least
// one, and build is told so (cut true); the client pages on for the rest.
func encodeCut(n, limit int, build func(k int, cut bool) any) []byte {
	b := encode(build(n, false))
	for k := n; len(b) > limit && k > 1; {
		k = min(k-1, max(1, k*limit/len(b)*9/10))
		b = encode(build(k, true))
	}
	return b
}

// The frames below are rendered by hand: they are written for every
// message, receipt and typing notice, where encoding/json's reflection
// would cost several times more.

// appendMessage writes m as the protocol's message object.
func appendMessage(b []byte, m chat.Message) []byte {
	b = append(b, `{"conv":`...)
	b = jsonstr.Append(b, m.Conv)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, m.Seq, 10)
	b = append(b, `,"from":`...)
	b = jsonstr.Append(b, m.From)
	b = append(b, `,"to":`...)
	b = jsonstr.Append(b, m.To)
	b = append(b, `,"text":`...)
	b = jsonstr.Append(b, m.Text)
	b = append(b, `,"time":`...)
	b = appendSeconds(b, m.Time)
	return append(b, '}')
}

// appendSeconds writes a time in seconds as the seed's time.time() does:
// always with a fraction, "1732567890.0" on a whole second.
func appendSeconds(b []byte, t float64) []byte {
	start := len(b)
	b = strconv.AppendFloat(b, t, 'f', -1, 64)
	if bytes.IndexByte(b[start:], '.') < 0 {
		b = append(b, ".0"...)
	}
	return b
}

// messageFrame is the frame of a message delivered live.
func messageFrame(m chat.Message) []byte {
	b := make([]byte, 0, 128+len(m.Text))
	b = append(b, `{"type":"message","message":`...)
	b = appendMessage(b, m)
	return append(b, '}')
}

// sentFrame answers "send" with the stored message.
func sentFrame(id string, m chat.Message) []byte {
	b := make([]byte, 0, 128+len(id)+len(m.Text))
	b = append(b, `{"type":"sent",`...)
	if id != "" {
		b = append(b, `"id":`...)
		b = jsonstr.Append(b, id)
		b = append(b, ',')
	}
	b = append(b, `"message":`...)
	b = appendMessage(b, m)
	return append(b, '}')
}

// receiptFrame tells both users of a conversation that by has read up to
// seq of the conversation with with.
func receiptFrame(by, with string, seq int64) []byte {
	b := make([]byte, 0, 64+len(by)+len(with))
	b = append(b, `{"type":"receipt","by":`...)
	b = jsonstr.Append(b, by)
	b = append(b, `,"with":`...)
	b = jsonstr.Append(b, with)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	return append(b, '}')
}

// unreadFrame gives a reader's other sockets its new position and count
// in the conversation with with.
func unreadFrame(with string, read, unread int64) []byte {
	b := make([]byte, 0, 64+len(with))
	b = append(b, `{"type":"unread","with":`...)
	b = jsonstr.Append(b, with)
	b = append(b, `,"read":`...)
	b = strconv.AppendInt(b, read, 10)
	b = append(b, `,"unread":`...)
	b = strconv.AppendInt(b, unread, 10)
	return append(b, '}')
}

// typingFrame says from is typing.
func typingFrame(from string) []byte {
	b := append(make([]byte, 0, 32+len(from)), `{"type":"typing","from":`...)
	b = jsonstr.Append(b, from)
	return append(b, '}')
}

// deliveryFrame renders the frame of a delivery; nil for an unknown kind.
func deliveryFrame(d chat.Delivery) []byte {
	switch d.Kind {
	case chat.KindMessage:
		return messageFrame(d.Message)
	case chat.KindReceipt:
		return receiptFrame(d.By, d.With, d.Read)
	case chat.KindUnread:
		return unreadFrame(d.With, d.Read, d.Unread)
	case chat.KindTyping:
		return typingFrame(d.By)
	}
	return nil
}

// messageList renders messages as a JSON array of message objects.
type messageList []chat.Message

// MarshalJSON implements json.Marshaler.
func (l messageList) MarshalJSON() ([]byte, error) {
	b := append(make([]byte, 0, 160*len(l)+2), '[')
	for i, m := range l {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendMessage(b, m)
	}
	return append(b, ']'), nil
}

// conversationList renders an inbox's conversations as a JSON array.
type conversationList []chat.Conversation

// MarshalJSON implements json.Marshaler.
func (l conversationList) MarshalJSON() ([]byte, error) {
	b := append(make([]byte, 0, 224*len(l)+2), '[')
	for i, c := range l {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"with":`...)
		b = jsonstr.Append(b, c.With)
		b = append(b, `,"unread":`...)
		b = strconv.AppendInt(b, c.Unread, 10)
		b = append(b, `,"read":`...)
		b = strconv.AppendInt(b, c.Read, 10)
		b = append(b, `,"peer_read":`...)
		b = strconv.AppendInt(b, c.PeerRead, 10)
		b = append(b, `,"last":`...)
		if c.Last == nil {
			b = append(b, "null"...)
		} else {
			b = appendMessage(b, *c.Last)
		}
		b = append(b, '}')
	}
	return append(b, ']'), nil
}
