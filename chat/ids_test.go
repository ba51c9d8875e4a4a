package chat

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
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("ValidateUser(%q) = %v, want ErrInvalid", tt.id, err)
				}
				if err.Error() == "" || strings.Contains(err.Error(), ErrInvalid.Error()) {
					t.Fatalf("ValidateUser(%q) = %q: want the reason alone, for the client", tt.id, err)
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

func TestValidateText(t *testing.T) {
	t.Parallel()
	a := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		name string
		text string
		want error // nil: valid
	}{
		{"empty", "", ErrInvalid},
		{"1 byte", "a", nil},
		{"4096 bytes", a(4096), nil},
		{"4097 bytes", a(4097), ErrTooLarge},
		{"8192 bytes", a(8192), ErrTooLarge},
		{"2-byte rune ends at 4096", a(4094) + "é", nil},
		{"2-byte rune ends at 4097", a(4095) + "é", ErrTooLarge},
		{"3-byte rune ends at 4096", a(4093) + "用", nil},
		{"3-byte rune ends at 4097", a(4094) + "用", ErrTooLarge},
		{"4-byte rune ends at 4096", a(4092) + "🎉", nil},
		{"4-byte rune ends at 4097", a(4093) + "🎉", ErrTooLarge},
		{"1365 chinese runes (4095 bytes)", strings.Repeat("用", 1365), nil},
		{"1366 chinese runes (4098 bytes)", strings.Repeat("用", 1366), ErrTooLarge},
		{"4096 runes of 2 bytes", strings.Repeat("é", 4096), ErrTooLarge},
		{"chinese", "你好，世界", nil},
		{"emoji", "🎉👍", nil},
		{"quotes backslash newline", "\"a\" \\ b\nc\td", nil},
		{"invalid byte", "\xff", ErrInvalid},
		{"invalid in the middle", "ab\xffcd", ErrInvalid},
		{"truncated rune", "用"[:2], ErrInvalid},
		{"truncated rune at the boundary", a(4094) + "用"[:2], ErrInvalid},
		{"surrogate half", "\xed\xa0\x80", ErrInvalid},
		{"overlong encoding", "\xc0\xaf", ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := ValidateText(tt.text)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("ValidateText(%d bytes) = %v, want nil", len(tt.text), err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("ValidateText(%d bytes) = %v, want %v", len(tt.text), err, tt.want)
			}
			// The two sentinels map to different protocol codes.
			other := ErrInvalid
			if tt.want == ErrInvalid {
				other = ErrTooLarge
			}
			if errors.Is(err, other) {
				t.Fatalf("ValidateText(%d bytes) = %v: also %v", len(tt.text), err, other)
			}
		})
	}
}

func TestValidateClientID(t *testing.T) {
	t.Parallel()
	var printable strings.Builder
	for c := byte('!'); c <= '~'; c++ {
		printable.WriteByte(c)
	}
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{"empty", "", false},
		{"short", "c1", true},
		{"uuid", "6f1c2a9e-8d5b-4c1e-9a7f-0b3d2e1f4a5c", true},
		{"every printable", printable.String(), true},
		{"128 bytes", strings.Repeat("x", 128), true},
		{"129 bytes", strings.Repeat("x", 129), false},
		{"space", "c 1", false},
		{"tab", "c\t1", false},
		{"newline", "c1\n", false},
		{"nul", "c\x001", false},
		{"del", "c\x7f", false},
		{"non-ascii", "cé", false},
		{"emoji", "🎉", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := ValidateClientID(tt.id)
			if tt.ok && err != nil {
				t.Fatalf("ValidateClientID(%q) = %v, want nil", tt.id, err)
			}
			if !tt.ok && !errors.Is(err, ErrInvalid) {
				t.Fatalf("ValidateClientID(%q) = %v, want ErrInvalid", tt.id, err)
			}
		})
	}
}
