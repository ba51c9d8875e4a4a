package failover

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// isDecimal reports whether id is a decimal integer as the seed writes one
// (no sign, no leading zero).
func isDecimal(id string) bool {
	if id == "" || id[0] == '0' && id != "0" {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < '0' || id[i] > '9' {
			return false
		}
	}
	return true
}

// convKey is PROTOCOL.md section 4's conversation key: the larger id first,
// compared as numbers when both are decimal integers, else as strings.
func convKey(a, b string) string {
	less := a < b
	if isDecimal(a) && isDecimal(b) && len(a) != len(b) {
		less = len(a) < len(b)
	}
	if less {
		a, b = b, a
	}
	return a + "-" + b
}

// element is one message read straight from a conversation list.
type element struct {
	seq            int64
	from, to, text string
}

// readConv reads the list key (newest at the head) and numbers its elements
// from the oldest, as `seq` does. Ids written as strings where the seed
// writes numbers are reported in bad.
func readConv(ctx context.Context, rdb redis.Cmdable, key string) (els []element, bad []string, err error) {
	vals, err := rdb.LRange(ctx, key, 0, -1).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("LRANGE %s: %w", key, err)
	}
	n := int64(len(vals))
	for i, v := range vals {
		var raw struct {
			FromID json.RawMessage `json:"fromid"`
			ToID   json.RawMessage `json:"toid"`
			Msg    *string         `json:"msg"`
			Time   json.RawMessage `json:"time"`
		}
		if err := json.Unmarshal([]byte(v), &raw); err != nil {
			bad = append(bad, fmt.Sprintf("%s[%d] is not JSON: %q", key, i, v))
			continue
		}
		from, err1 := jsonID(raw.FromID)
		to, err2 := jsonID(raw.ToID)
		var tm float64
		err3 := json.Unmarshal(raw.Time, &tm)
		if err1 != nil || err2 != nil || raw.Msg == nil || err3 != nil {
			bad = append(bad, fmt.Sprintf("%s[%d] lacks fromid/toid/msg/time: %q", key, i, v))
			continue
		}
		for _, id := range []struct {
			name string
			id   string
			raw  json.RawMessage
		}{{"fromid", from, raw.FromID}, {"toid", to, raw.ToID}} {
			if isDecimal(id.id) && bytes.HasPrefix(bytes.TrimSpace(id.raw), []byte(`"`)) {
				bad = append(bad, fmt.Sprintf("%s[%d]: %s %s is a string, the seed writes a number", key, i, id.name, id.raw))
			}
		}
		els = append(els, element{seq: n - int64(i), from: from, to: to, text: *raw.Msg})
	}
	return els, bad, nil
}

// jsonID reads a user id written as a JSON number or string.
func jsonID(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", fmt.Errorf("missing")
	}
	if raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", err
	}
	return n.String(), nil
}

// seedKeys lists the keys without ':' (the seed's layout) by type.
func seedKeys(ctx context.Context, rdb *redis.Client) (map[string]string, error) {
	keys := map[string]string{}
	iter := rdb.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		if strings.Contains(k, ":") {
			continue
		}
		typ, err := rdb.Type(ctx, k).Result()
		if err != nil {
			return nil, fmt.Errorf("TYPE %s: %w", k, err)
		}
		keys[k] = typ
	}
	return keys, iter.Err()
}
