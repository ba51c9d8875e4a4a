package hub_test

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/hub"
)

// dialNonReader connects user with a 4 KiB receive buffer and never reads:
// the server's writes to it stall as soon as the kernel buffers are full.
func dialNonReader(t *testing.T, r *replica, user string) *websocket.Conn {
	t.Helper()
	dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	httpc := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	ws, _, err := websocket.Dial(t.Context(), r.wsURL("user="+user), &websocket.DialOptions{HTTPClient: httpc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	return ws
}

// heapWatch samples the heap until stopped and reports the largest growth
// over the heap it started from.
func heapWatch() (stop func() uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > base && ms.HeapAlloc-base > peak.Load() {
				peak.Store(ms.HeapAlloc - base)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 { close(done); wg.Wait(); return peak.Load() }
}

// TestNonReaderAskingHistoryIsBoundedInBytes is the attack of a client
// that never reads and asks, at its rate limit, for 200-message history
// pages of 4096-byte texts made of '<' (six bytes each if HTML-escaped).
// The server must not hold more than its byte bound for it, and must close
// it with 1008 at once, not after a write timeout.
func TestNonReaderAskingHistoryIsBoundedInBytes(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := hub.NewMetrics(reg)
	r := newCluster(t).replica("a", withHub(func(c *hub.Config) {
		c.Metrics = m
		c.WriteTimeout = 30 * time.Second // the close must not wait for it
	}))
	text := strings.Repeat("<", 4096)
	for i := range 200 {
		if _, _, err := r.store.Send(t.Context(), chat.SendRequest{From: "43", To: "23", Text: text}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	bystander := r.dial(t, "65")

	stopWatch := heapWatch()
	v := dialNonReader(t, r, "23")
	frame := []byte(`{"type":"history","with":"43","limit":200}`)
	// Flood at the rate limit until the server gives up on the socket,
	// then note how long the close takes from there.
	start := time.Now()
	var overAt, closedAt time.Time
	for time.Since(start) < 20*time.Second && closedAt.IsZero() {
		if overAt.IsZero() && testutil.ToFloat64(m.SlowCloses) > 0 {
			overAt = time.Now()
		}
		if r.hub.Len() == 1 {
			closedAt = time.Now()
			break
		}
		if overAt.IsZero() {
			// A write whose context expires closes the client's socket
			// (coder/websocket), so the bound is generous: a stall of the
			// test's own goroutine must not look like the server's close.
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			_ = v.Write(ctx, websocket.MessageText, frame)
			cancel()
		}
		time.Sleep(50 * time.Millisecond) // 20 frames a second: the default rate limit
	}
	growth := stopWatch()
	switch {
	case closedAt.IsZero():
		t.Fatalf("a client that never reads was still connected after 20 s (over its bound: %v)", !overAt.IsZero())
	case overAt.IsZero():
		t.Fatalf("the socket ended after %v, but not as a slow consumer", closedAt.Sub(start).Round(time.Millisecond))
	}
	t.Logf("over its bound after %v, closed %v later; heap grew at most %.1f MiB",
		overAt.Sub(start).Round(time.Millisecond), closedAt.Sub(overAt).Round(time.Millisecond), float64(growth)/(1<<20))
	if growth > 64<<20 {
		t.Errorf("heap grew %.1f MiB for one socket, want under 64 MiB", float64(growth)/(1<<20))
	}
	if got := closedAt.Sub(overAt); got > 2*time.Second {
		t.Errorf("closed %v after it went over its bound: it waited for something", got)
	}
	if got := testutil.ToFloat64(m.SlowCloses); got != 1 {
		t.Errorf("chatd_slow_consumer_closes_total = %v, want 1 (one socket closed)", got)
	}
	if f := bystander.call(map[string]any{"type": "ping", "id": "ok"}); f["type"] != "pong" {
		t.Fatalf("bystander hurt: %v", f)
	}
}

// TestHistoryRepliesAreNotHTMLEscaped: frames are JSON, not HTML, so '<',
// '>' and '&' cost one byte each.
func TestHistoryRepliesAreNotHTMLEscaped(t *testing.T) {
	t.Parallel()
	r := newCluster(t).replica("a")
	text := "<b>&amp;</b> \u2028 x"
	if _, _, err := r.store.Send(t.Context(), chat.SendRequest{From: "43", To: "23", Text: text}); err != nil {
		t.Fatal(err)
	}
	ws, _, err := websocket.Dial(t.Context(), r.wsURL("user=23"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if _, _, err := ws.Read(t.Context()); err != nil { // ready
		t.Fatal(err)
	}
	if err := ws.Write(t.Context(), websocket.MessageText, []byte(`{"type":"history","with":"43","id":"h"}`)); err != nil {
		t.Fatal(err)
	}
	_, data, err := ws.Read(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(`"text":"<b>&amp;</b>`)) || bytes.Contains(data, []byte(`\u003c`)) {
		t.Fatalf("history frame escapes HTML: %s", data)
	}
}

// TestLargeHistoryPageIsCutToFit: a page whose frame would be over a
// half of the queue's byte bound holds fewer messages, newest first,
// and says there is more; paging on from its oldest seq gets the rest.
func TestLargeHistoryPageIsCutToFit(t *testing.T) {
	t.Parallel()
	r := newCluster(t).replica("a", withHub(func(c *hub.Config) { c.QueueBytes = 256 << 10 }))
	text := strings.Repeat("\x01", 4096) // six bytes each in JSON
	for i := range 30 {
		if _, _, err := r.store.Send(t.Context(), chat.SendRequest{From: "43", To: "23", Text: text}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	c := r.dial(t, "23")
	seen := map[float64]bool{}
	before := 0.0
	for pages := 0; ; pages++ {
		if pages > 30 {
			t.Fatal("paging did not end")
		}
		req := map[string]any{"type": "history", "with": "43", "limit": 200, "id": "h"}
		if before > 0 {
			req["before"] = before
		}
		f := c.call(req)
		msgs, _ := f["messages"].([]any)
		if len(msgs) == 0 || len(msgs) > 6 { // 128 KiB holds five of 24.6 KiB
			t.Fatalf("page of %d messages, want 1 to 6: the cut did not hold", len(msgs))
		}
		for _, m := range msgs {
			seq := m.(map[string]any)["seq"].(float64)
			if seen[seq] {
				t.Fatalf("seq %v twice", seq)
			}
			seen[seq] = true
			before = seq
		}
		if f["more"] != true {
			break
		}
	}
	if len(seen) != 30 {
		t.Fatalf("paged %d messages, want 30", len(seen))
	}
}

// TestTypingFloodNeverClosesAReader: eight sockets of one user flood
// another with typing frames. The reader gets at most one a second from
// that sender, is never closed, and a real message still arrives.
func TestTypingFloodNeverClosesAReader(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	r := cl.replica("a", withHub(func(c *hub.Config) {
		c.QueueSize = 16
		c.Rate = 1e6
		c.Burst = 1e6
	}))
	y := r.dial(t, "43")
	xs := make([]*client, 8)
	for i := range xs {
		xs[i] = r.dial(t, "23")
	}
	start := time.Now()
	var wg sync.WaitGroup
	for _, x := range xs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 40 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_ = x.ws.Write(ctx, websocket.MessageText, []byte(`{"type":"typing","to":"43"}`))
				cancel()
			}
		}()
	}
	wg.Wait()
	if f := xs[0].call(map[string]any{"type": "send", "to": "43", "text": "real", "id": "m"}); f["type"] != "sent" {
		t.Fatalf("send: %v", f)
	}
	typing := 0
	for {
		f := y.next()
		if f["type"] == "typing" {
			typing++
			continue
		}
		if f["type"] != "message" || msgOf(f)["text"] != "real" {
			t.Fatalf("reader got %v, want typing frames and then the message", f)
		}
		break
	}
	if limit := 1 + int(time.Since(start)/time.Second); typing > limit {
		t.Errorf("reader got %d typing frames from one sender in %v, want at most %d", typing, time.Since(start), limit)
	}
	if typing == 0 {
		t.Errorf("no typing frame reached the reader")
	}
	if f := y.call(map[string]any{"type": "ping", "id": "alive"}); f["type"] != "pong" {
		t.Fatalf("reader closed or hurt: %v", f)
	}
}
