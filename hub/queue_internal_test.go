package hub

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func testConn(t *testing.T, frames, bytes int) *conn {
	t.Helper()
	h := New(Config{QueueSize: frames, QueueBytes: bytes, Metrics: NewMetrics(prometheus.NewRegistry()),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return &conn{h: h, user: "23", quit: make(chan struct{})}
}

func TestEphemeralFramesAreDroppedOverHalfFull(t *testing.T) {
	c := testConn(t, 8, 1<<20)
	for range 4 {
		c.enqueue(outItem{frame: []byte(`{"type":"message"}`)})
	}
	c.enqueueEphemeral([]byte(`{"type":"presence"}`), false) // 4 of 8: not over half
	if len(c.queue) != 5 {
		t.Fatalf("queue = %d frames, want 5", len(c.queue))
	}
	c.enqueueEphemeral([]byte(`{"type":"presence"}`), false) // 5 of 8: over half
	if len(c.queue) != 5 {
		t.Fatalf("an ephemeral frame was queued over half full: %d frames", len(c.queue))
	}
	if got := testutil.ToFloat64(c.h.m.Dropped); got != 1 {
		t.Fatalf("dropped = %v, want 1", got)
	}
	c.enqueue(outItem{frame: []byte(`{"type":"message"}`)}) // a real frame still fits
	if len(c.queue) != 6 || c.slow.Load() {
		t.Fatalf("queue = %d, slow = %v", len(c.queue), c.slow.Load())
	}

	// By bytes: half of 100 bytes.
	c = testConn(t, 100, 100)
	c.enqueue(outItem{frame: []byte(strings.Repeat("x", 45))})
	c.enqueueEphemeral([]byte(strings.Repeat("y", 10)), false)
	if len(c.queue) != 1 {
		t.Fatalf("an ephemeral frame went over half the bytes: %d frames", len(c.queue))
	}
}

func TestTypingPassesOncePerSecondPerSender(t *testing.T) {
	c := testConn(t, 100, 1<<20)
	x, y := []byte(`{"type":"typing","from":"x"}`), []byte(`{"type":"typing","from":"y"}`)
	now := time.Now()
	for i, tc := range []struct {
		frame []byte
		at    time.Duration
		want  bool
	}{
		{x, 0, true},
		{x, 500 * time.Millisecond, false},
		{y, 500 * time.Millisecond, true},
		{x, 1000 * time.Millisecond, true},
		{y, 1200 * time.Millisecond, false},
		{y, 1500 * time.Millisecond, true},
	} {
		if got := c.typingAllowedLocked(tc.frame, now.Add(tc.at)); got != tc.want {
			t.Errorf("%d: %s at %v: allowed %v, want %v", i, tc.frame, tc.at, got, tc.want)
		}
	}
	// Many senders: the map stays bounded.
	for i := range 10 * maxTypingSenders {
		c.typingAllowedLocked([]byte(strings.Repeat("z", i)), now.Add(2*time.Second))
	}
	if len(c.typingSeen) > maxTypingSenders {
		t.Fatalf("typingSeen holds %d senders, want at most %d", len(c.typingSeen), maxTypingSenders)
	}
}

func TestOverflowDropsTheQueueAndClosesOnce(t *testing.T) {
	c := testConn(t, 100, 100)
	c.enqueue(outItem{frame: []byte(strings.Repeat("x", 60))})
	c.enqueue(outItem{frame: []byte(strings.Repeat("x", 60))}) // 120 > 100
	if !c.slow.Load() || c.queue != nil || c.qbytes != 0 {
		t.Fatalf("after overflow: slow %v, queue %d frames, %d bytes", c.slow.Load(), len(c.queue), c.qbytes)
	}
	select {
	case <-c.quit:
	default:
		t.Fatal("overflow did not ask the writer to close")
	}
	if c.quitCode != 1008 || !c.closing.Load() {
		t.Fatalf("close code %d, closing %v", c.quitCode, c.closing.Load())
	}
	c.enqueue(outItem{frame: []byte("x")}) // nothing more is queued or counted
	if c.queue != nil {
		t.Fatal("a frame was queued after the close")
	}
	if got := testutil.ToFloat64(c.h.m.SlowCloses); got != 1 {
		t.Fatalf("slow consumer closes = %v, want 1", got)
	}
}
