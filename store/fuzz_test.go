package store

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzUserIDs: ValidateUser accepts exactly the ids of the protocol, and
// for any two valid ids the conversation key names both, the same way
// round, and gives each one the other as peer.
func FuzzUserIDs(f *testing.F) {
	for _, p := range [][2]string{
		{"23", "43"}, {"9", "10"}, {"007", "7"}, {"a.b@c", "Z_9"}, {"", "1"}, {"4-3", "2"},
		{"0", "00"}, {strings.Repeat("9", 64), strings.Repeat("9", 63)}, {"é", "x"}, {"a:b", "c"},
	} {
		f.Add(p[0], p[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		errA := ValidateUser(a)
		want := a != "" && len(a) <= MaxUserLen
		for _, r := range a {
			if r > 0x7f || !userByte(byte(r)) {
				want = false
			}
		}
		if (errA == nil) != want {
			t.Fatalf("ValidateUser(%q) = %v, want valid %v", a, errA, want)
		}
		if errA != nil || ValidateUser(b) != nil {
			return
		}
		k := ConvKey(a, b)
		if k != ConvKey(b, a) {
			t.Fatalf("ConvKey(%q, %q) = %q but ConvKey(%q, %q) = %q", a, b, k, b, a, ConvKey(b, a))
		}
		if strings.Contains(k, ":") {
			t.Fatalf("conversation key %q holds ':', the mark of chatd's own keys", k)
		}
		if a == b {
			return
		}
		if p, ok := Peer(k, a); !ok || p != b {
			t.Fatalf("Peer(%q, %q) = %q, %v; want %q", k, a, p, ok, b)
		}
		if p, ok := Peer(k, b); !ok || p != a {
			t.Fatalf("Peer(%q, %q) = %q, %v; want %q", k, b, p, ok, a)
		}
		if less(a, b) == less(b, a) {
			t.Fatalf("less(%q, %q) is not a strict order", a, b)
		}
	})
}

// FuzzClientID: ValidateClientID accepts 1 to 128 bytes of printable ASCII
// without spaces, and nothing else.
func FuzzClientID(f *testing.F) {
	for _, s := range []string{"c1", "", " ", "a b", "x\x7f", strings.Repeat("x", 129), "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		want := id != "" && len(id) <= MaxClientIDBytes && !strings.ContainsFunc(id, func(r rune) bool { return r <= ' ' || r > '~' })
		if got := ValidateClientID(id) == nil; got != want {
			t.Fatalf("ValidateClientID(%q) valid = %v, want %v", id, got, want)
		}
	})
}

// FuzzElement: any list element, the seed's or garbage, decodes or is
// refused without a panic, and an element chatd encodes decodes to what
// was encoded.
func FuzzElement(f *testing.F) {
	f.Add(`{"fromid":23,"toid":43,"msg":"hi","time":1732567890.123}`, "23", "43", "hi")
	f.Add(`{"fromid":"a","toid":"b","msg":"\u00e9","time":"1.5"}`, "a", "b", "<&>\"\\\n\x01")
	f.Add(`{"fromid":2.5,"toid":1e3,"msg":null,"time":NaN}`, "9", "10", "\u2028")
	f.Fuzz(func(t *testing.T, raw, from, to, text string) {
		_, _ = decodeElement("43-23", 1, raw)
		if ValidateUser(from) != nil || ValidateUser(to) != nil || ValidateText(text) != nil {
			return
		}
		_, ts := formatTime(time.Unix(1732567890, 123000000))
		el := encodeElement(from, to, text, ts)
		if !json.Valid(el) || !utf8.Valid(el) {
			t.Fatalf("element %q is not valid JSON", el)
		}
		m, err := decodeElement("c", 7, string(el))
		if err != nil {
			t.Fatalf("decode %q: %v", el, err)
		}
		if m.From != from || m.To != to || m.Text != text || m.Seq != 7 {
			t.Fatalf("round trip of %q %q %q gave %+v", from, to, text, m)
		}
	})
}
