package hub_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/hub"
)

// downStore is a Store whose Send fails as on a Redis outage.
type downStore struct{ hub.Store }

func (downStore) Send(context.Context, chat.SendRequest) (chat.Message, bool, error) {
	return chat.Message{}, false, errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")
}

// syncBuf is a log destination safe for concurrent writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) lines(substr string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range strings.Split(s.b.String(), "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

// TestOutageIsNotLoggedPerRequest: every send during a Redis outage is
// answered unavailable, but only a few are logged, and the next line says
// how many were left out.
func TestOutageIsNotLoggedPerRequest(t *testing.T) {
	t.Parallel()
	var logs syncBuf
	r := newCluster(t).replica("a", withHub(func(c *hub.Config) {
		c.Store = downStore{c.Store}
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		c.Rate, c.Burst = 1000, 1000
	}))
	c := r.dial(t, "23")
	const sends = 40
	for i := range sends {
		f := c.call(map[string]any{"type": "send", "to": "43", "text": "x", "id": fmt.Sprint("s", i)})
		if f["type"] != "error" || f["code"] != "unavailable" {
			t.Fatalf("send %d during the outage: %v", i, f)
		}
	}
	logged := len(logs.lines("send failed"))
	if logged == 0 || logged > sends/4 {
		t.Fatalf("%d of %d failed sends logged, want a few", logged, sends)
	}
	// A second later one more failure is logged, with the count of those
	// left out since the last line.
	time.Sleep(1100 * time.Millisecond)
	if f := c.call(map[string]any{"type": "send", "to": "43", "text": "x", "id": "late"}); f["code"] != "unavailable" {
		t.Fatalf("late send: %v", f)
	}
	lines := logs.lines("send failed")
	if len(lines) != logged+1 {
		t.Fatalf("after a second, %d lines logged, want %d", len(lines), logged+1)
	}
	if want := fmt.Sprintf("not_logged_since=%d", sends-logged); !strings.Contains(lines[len(lines)-1], want) {
		t.Fatalf("last line %q does not say %s", lines[len(lines)-1], want)
	}
}
