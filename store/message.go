package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/internal/jsonstr"
)

// element is a list entry in the seed's format. Ids are JSON numbers when
// they are decimal integers (as the seed writes them) and strings otherwise.
type element struct {
	FromID json.RawMessage `json:"fromid"`
	ToID   json.RawMessage `json:"toid"`
	Msg    *string         `json:"msg"`
	Time   json.RawMessage `json:"time"`
}

// errMalformed marks a list element that is not a seed-format message.
var errMalformed = errors.New("malformed list element")

// appendID writes a user id as the seed would: a number when decimal.
func appendID(b []byte, id string) []byte {
	if chat.IsDecimal(id) {
		return append(b, id...)
	}
	return strconv.AppendQuote(b, id)
}

// formatTime renders seconds since the epoch with a fraction, as the
// seed's time.time() does: always a float, "1732567890.0" on a whole second.
func formatTime(t time.Time) (float64, []byte) {
	f := float64(t.UnixMicro()) / 1e6
	b := strconv.AppendFloat(nil, f, 'f', -1, 64)
	if !bytes.ContainsRune(b, '.') {
		b = append(b, ".0"...)
	}
	return f, b
}

// encodeElement builds the list entry for a message.
func encodeElement(from, to, text string, ts []byte) []byte {
	b := make([]byte, 0, len(text)+96)
	b = append(b, `{"fromid":`...)
	b = appendID(b, from)
	b = append(b, `,"toid":`...)
	b = appendID(b, to)
	b = append(b, `,"msg":`...)
	b = jsonstr.Append(b, text)
	b = append(b, `,"time":`...)
	b = append(b, ts...)
	return append(b, '}')
}

// decodeID reads an id written as a JSON number or string.
func decodeID(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", fmt.Errorf("%w: missing id", errMalformed)
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("%w: id: %v", errMalformed, err)
		}
		return s, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", fmt.Errorf("%w: id: %v", errMalformed, err)
	}
	if !chat.IsDecimal(n.String()) { // only integers name users: 2.5 or 1e3 is no id
		return "", fmt.Errorf("%w: id %s is not an integer", errMalformed, n)
	}
	return n.String(), nil
}

// decodeTime reads the seed's time: a JSON number, or a numeric string.
func decodeTime(raw json.RawMessage) (float64, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, fmt.Errorf("%w: time: %v", errMalformed, err)
		}
		raw = []byte(s)
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%w: time %q", errMalformed, raw)
	}
	return f, nil
}

// decodeElement parses a list entry of conversation conv at position seq.
func decodeElement(conv string, seq int64, data string) (chat.Message, error) {
	var e element
	if err := json.Unmarshal([]byte(data), &e); err != nil {
		return chat.Message{}, fmt.Errorf("%w: %v", errMalformed, err)
	}
	from, err := decodeID(e.FromID)
	if err != nil {
		return chat.Message{}, err
	}
	to, err := decodeID(e.ToID)
	if err != nil {
		return chat.Message{}, err
	}
	if e.Msg == nil {
		return chat.Message{}, fmt.Errorf("%w: missing msg", errMalformed)
	}
	ts, err := decodeTime(e.Time)
	if err != nil {
		return chat.Message{}, err
	}
	return chat.Message{Conv: conv, Seq: seq, From: from, To: to, Text: *e.Msg, Time: ts}, nil
}
