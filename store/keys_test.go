package store

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateUser(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{"empty", "", false},
		{"one char", "a", true},
		{"64 chars", strings.Repeat("a", 64), true},
		{"65 chars", strings.Repeat("a", 65), false},
		{"lower", "abcxyz", true},
		{"upper", "ABCXYZ", true},
		{"digits", "0123456789", true},
		{"underscore", "_", true},
		{"dot", "a.b", true},
		{"at", "alice@example.com", true},
		{"all classes", "Az09_.@", true},
		{"dash", "a-b", false},
		{"colon", "a:b", false},
		{"space", "a b", false},
		{"leading space", " a", false},
		{"tab", "a\tb", false},
		{"newline", "a\n", false},
		{"nul", "a\x00", false},
		{"slash", "a/b", false},
		{"plus", "a+b", false},
		{"star", "a*", false},
		{"comma", "a,b", false},
		{"accented", "é", false},
		{"chinese", "用户", false},
		{"emoji", "🎉", false},
		{"invalid utf-8", "a\xff", false},
		// 22 three-byte runes are 66 bytes: rejected, whatever the reason.
		{"long unicode", strings.Repeat("用", 22), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := ValidateUser(tt.id)
			if tt.ok && err != nil {
				t.Fatalf("ValidateUser(%q) = %v, want nil", tt.id, err)
			}
			if !tt.ok {
				if !errors.Is(err, ErrInvalidUser) {
					t.Fatalf("ValidateUser(%q) = %v, want ErrInvalidUser", tt.id, err)
				}
				if !strings.HasPrefix(err.Error(), ErrInvalidUser.Error()+": ") {
					t.Fatalf("ValidateUser(%q) = %q: want a reason after the sentinel", tt.id, err)
				}
			}
		})
	}
}

func TestConvKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, a, b, want string
	}{
		{"numeric 9 10", "9", "10", "10-9"},
		{"numeric 10 9", "10", "9", "10-9"},
		{"numeric 23 43", "23", "43", "43-23"},
		{"numeric 43 23", "43", "23", "43-23"},
		{"equal", "23", "23", "23-23"},
		{"equal strings", "bob", "bob", "bob-bob"},
		{"zero", "0", "1", "1-0"},
		{"strings", "alice", "bob", "bob-alice"},
		{"strings reversed", "bob", "alice", "bob-alice"},
		{"strings case", "Bob", "alice", "alice-Bob"},
		// Not both decimal: compared as strings, so "9" > "10".
		{"mixed numeric string", "10", "abc", "abc-10"},
		{"mixed string numeric", "abc", "10", "abc-10"},
		{"mixed digits first", "9", "10a", "9-10a"},
		// "007" is no canonical integer: a string, and "7" > "007".
		{"leading zeros", "007", "7", "7-007"},
		{"leading zeros reversed", "7", "007", "7-007"},
		{"leading zeros vs larger", "007", "100", "100-007"},
		{"leading zeros both", "007", "0010", "007-0010"},
		{"longer than int64", "123456789012345678901234567890", "99", "123456789012345678901234567890-99"},
		{"longer than int64 reversed", "99", "123456789012345678901234567890", "123456789012345678901234567890-99"},
		{"huge same length", "99999999999999999999", "99999999999999999998", "99999999999999999999-99999999999999999998"},
		{"max int64 vs next", "9223372036854775807", "9223372036854775808", "9223372036854775808-9223372036854775807"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := ConvKey(tt.a, tt.b); got != tt.want {
				t.Fatalf("ConvKey(%q, %q) = %q, want %q", tt.a, tt.b, got, tt.want)
			}
		})
	}
}

func TestPeer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, conv, me string
		want           string
		ok             bool
	}{
		{"me low", "43-23", "23", "43", true},
		{"me high", "43-23", "43", "23", true},
		{"strings", "bob-alice", "alice", "bob", true},
		{"self", "23-23", "23", "23", true},
		{"not mine", "43-23", "65", "", false},
		{"prefix of an id", "43-23", "2", "", false},
		{"no dash", "4323", "4323", "", false},
		{"empty", "", "23", "", false},
		{"empty low", "43-", "43", "", false},
		{"empty high", "-23", "23", "", false},
		{"two dashes", "43-23-9", "43", "", false},
		{"invalid peer", "43-a:b", "43", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := Peer(tt.conv, tt.me)
			if ok != tt.ok || ok && got != tt.want {
				t.Fatalf("Peer(%q, %q) = %q, %v; want %q, %v", tt.conv, tt.me, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestPeerInvertsConvKey checks that Peer recovers each side of ConvKey.
func TestPeerInvertsConvKey(t *testing.T) {
	t.Parallel()
	pairs := [][2]string{{"9", "10"}, {"23", "43"}, {"alice", "bob"}, {"007", "7"}, {"a.b@c", "Z_9"}, {"5", "5"}}
	for _, p := range pairs {
		conv := ConvKey(p[0], p[1])
		for i, me := range p {
			if got, ok := Peer(conv, me); !ok || got != p[1-i] {
				t.Errorf("Peer(%q, %q) = %q, %v; want %q, true", conv, me, got, ok, p[1-i])
			}
		}
	}
}

func TestValidateReplica(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"plain", "chatd-a", true},
		{"all classes", "Az09_.@-", true},
		{"64", strings.Repeat("r", 64), true},
		{"65", strings.Repeat("r", 65), false},
		{"empty", "", false},
		{"space", "chatd a", false},
		{"colon", "chatd:a", false},
		{"unicode", "chätd", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := ValidateReplica(tt.in)
			if tt.ok != (err == nil) {
				t.Fatalf("ValidateReplica(%q) = %v, want ok %v", tt.in, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("ValidateReplica(%q) = %v, want ErrInvalid", tt.in, err)
			}
		})
	}
}

// TestKeysContainColon checks PROTOCOL.md §4: every key chatd adds contains a
// ':' (user ids cannot), and the seed's keys are the bare names.
func TestKeysContainColon(t *testing.T) {
	t.Parallel()
	k := keys{}
	if got := k.conv("43-23"); got != "43-23" {
		t.Errorf("conv key = %q, want 43-23", got)
	}
	if got := k.unread("43"); got != "43" {
		t.Errorf("unread key = %q, want 43", got)
	}
	for _, key := range []string{
		k.inbox("43"), k.idem("43", "c1"), k.presence("43"), k.presenceIndex(),
		k.replicaChannel("r1"), k.presenceChannel(), k.read("43-23"), k.unreadIndex("43"),
	} {
		if !strings.Contains(key, ":") {
			t.Errorf("key %q has no ':'", key)
		}
	}
	p := keys{prefix: "app:"}
	if got := p.conv("43-23"); got != "app:43-23" {
		t.Errorf("prefixed conv key = %q, want app:43-23", got)
	}
	if got := p.presence("43"); !strings.HasPrefix(got, p.presencePrefix()) || !strings.HasPrefix(got, "app:") {
		t.Errorf("prefixed presence key = %q", got)
	}
	if got := p.read("43-23"); got != "app:chat:read:43-23" || !strings.HasPrefix(got, p.readPrefix()) {
		t.Errorf("prefixed read key = %q", got)
	}
	if got := p.unreadIndex("43"); got != "app:chat:unread:43" {
		t.Errorf("prefixed unread index key = %q", got)
	}
}
