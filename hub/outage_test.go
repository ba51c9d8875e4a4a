package hub_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/hub"
	"github.com/chatd/chatd/internal/logbuf"
)

// downStore is a Store whose Send fails as on a Redis outage.
type downStore struct{ hub.Store }

func (downStore) Send(context.Context, chat.SendRequest) (chat.Message, bool, error) {
	return chat.Message{}, false, errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")
}

// logLines returns the lines of logs that hold substr.
func logLines(logs *logbuf.Buffer, substr string) []string {
	var out []string
	for _, l := range strings.Split(logs.String(), "\n") {
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
	var logs logbuf.Buffer
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
	logged := len(logLines(&logs, "send failed"))
	if logged == 0 || logged > sends/4 {
		t.Fatalf("%d of %d failed sends logged, want a few", logged, sends)
	}
	// A second later one more failure is logged, with the count of those
	// left out since the last line.
	time.Sleep(1100 * time.Millisecond)
	if f := c.call(map[string]any{"type": "send", "to": "43", "text": "x", "id": "late"}); f["code"] != "unavailable" {
		t.Fatalf("late send: %v", f)
	}
	lines := logLines(&logs, "send failed")
	if len(lines) != logged+1 {
		t.Fatalf("after a second, %d lines logged, want %d", len(lines), logged+1)
	}
	if want := fmt.Sprintf("not_logged_since=%d", sends-logged); !strings.Contains(lines[len(lines)-1], want) {
		t.Fatalf("last line %q does not say %s", lines[len(lines)-1], want)
	}
}
