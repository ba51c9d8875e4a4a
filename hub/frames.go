package hub

import (
	"bytes"
	"encoding/json"

	"github.com/chatd/chatd/store"
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

type sentFrame struct {
	Type    string        `json:"type"`
	ID      string        `json:"id,omitempty"`
	Message store.Message `json:"message"`
}

type historyFrame struct {
	Type     string          `json:"type"`
	ID       string          `json:"id,omitempty"`
	With     string          `json:"with"`
	Messages []store.Message `json:"messages"`
	Unread   int64           `json:"unread"`
	Read     int64           `json:"read"`
	PeerRead int64           `json:"peer_read"`
	More     bool            `json:"more"`
}

// readFrame answers "read": the reader's read position and what is left
// unread. The reader's other sockets get the same values in the "unread"
// frame that the store publishes.
type readFrame struct {
	Type   string `json:"type"`
	ID     string `json:"id,omitempty"`
	With   string `json:"with"`
	Read   int64  `json:"read"`
	Unread int64  `json:"unread"`
}

type inboxFrame struct {
	Type          string               `json:"type"`
	ID            string               `json:"id,omitempty"`
	Conversations []store.Conversation `json:"conversations"`
	More          bool                 `json:"more"`
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
