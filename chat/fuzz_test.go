package chat

import (
	"strings"
	"testing"
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
