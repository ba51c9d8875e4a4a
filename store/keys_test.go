package store

import (
	"errors"
	"strings"
	"testing"

	"github.com/chatd/chatd/chat"
)

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
			if err != nil && !errors.Is(err, chat.ErrInvalid) {
				t.Fatalf("ValidateReplica(%q) = %v, want chat.ErrInvalid", tt.in, err)
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
