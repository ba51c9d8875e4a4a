package hub_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatd/chatd/hub"
)

// settledGoroutines waits until the number of goroutines stops changing
// and returns it.
func settledGoroutines() int {
	n, same := runtime.NumGoroutine(), 0
	for same < 10 {
		time.Sleep(20 * time.Millisecond)
		if m := runtime.NumGoroutine(); m == n {
			same++
		} else {
			n, same = m, 0
		}
	}
	return n
}

// TestIdleSocketsHaveNoWriterGoroutine: an idle socket's only server-side
// goroutine is its reader; a writer exists only while something is to be
// written, and ends when the queue stays empty. Each test client has one
// goroutine of its own (its read loop), so n idle sockets add 2n
// goroutines, where a writer per socket would add 3n. Not parallel: it
// counts the process's goroutines.
func TestIdleSocketsHaveNoWriterGoroutine(t *testing.T) {
	r := newCluster(t).replica("a")
	const n = 40
	before := settledGoroutines()
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = r.dial(t, fmt.Sprint(1000+i))
	}
	idle := settledGoroutines() - before
	t.Logf("%d idle sockets: %d goroutines more", n, idle)
	if idle >= 3*n {
		t.Fatalf("%d idle sockets added %d goroutines: a writer per socket is still there", n, idle)
	}

	// Traffic both ways (replies and live deliveries), then idle again: the
	// writers that ran have ended.
	for i := 0; i < n; i += 2 {
		a, b := clients[i], clients[i+1]
		for range 3 {
			a.send(map[string]any{"type": "send", "to": b.user, "text": strings.Repeat("x", 100)})
			b.send(map[string]any{"type": "send", "to": a.user, "text": "y"})
		}
	}
	for _, c := range clients {
		for range 6 {
			c.next()
		}
	}
	if f := clients[0].call(map[string]any{"type": "ping", "id": "p"}); f["type"] != "pong" {
		t.Fatalf("got %v, want pong", f)
	}
	after := settledGoroutines() - before
	t.Logf("after traffic: %d goroutines more", after)
	// A little slack for the process's own machinery (Redis connections
	// opened by the traffic); a writer left per socket would add n.
	if after >= idle+n/2 {
		t.Fatalf("after traffic %d goroutines more, %d before it: writers did not end", after, idle)
	}
}

// TestStuckWriteIsDropped: a socket whose write stalls (its peer does not
// read) is dropped once the write has taken WriteTimeout, although its
// queue is far from full, so it is not closed as a slow consumer.
func TestStuckWriteIsDropped(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := hub.NewMetrics(reg)
	r := newCluster(t).replica("a", withHub(func(c *hub.Config) {
		c.Metrics = m
		c.QueueSize = 1 << 20
		c.QueueBytes = 1 << 30
		c.Rate = 1e6
		c.Burst = 1e6
		c.WriteTimeout = 300 * time.Millisecond
	}))
	dialNonReader(t, r, "43")
	fast := r.dial(t, "23")
	text := strings.Repeat("y", 4000)
	deadline := time.Now().Add(30 * time.Second)
	for r.hub.Len() == 2 && time.Now().Before(deadline) {
		for range 20 {
			fast.send(map[string]any{"type": "send", "to": "43", "text": text})
		}
		for range 20 {
			fast.expect("sent")
		}
	}
	if r.hub.Len() != 1 {
		t.Fatal("a socket whose writes stall is still connected after 30 s")
	}
	if got := testutil.ToFloat64(m.SlowCloses); got != 0 {
		t.Fatalf("closed as a slow consumer (%v), want the write bound to drop it", got)
	}
	if f := fast.call(map[string]any{"type": "ping", "id": "ok"}); f["type"] != "pong" {
		t.Fatalf("fast client hurt: %v", f)
	}
}

// TestSilentPeerIsPingedAndClosed: a peer that stays silent and never
// answers a ping (it never reads) is closed by the hub's sweep.
func TestSilentPeerIsPingedAndClosed(t *testing.T) {
	t.Parallel()
	r := newCluster(t).replica("a", withHub(func(c *hub.Config) {
		c.PingInterval = 200 * time.Millisecond
	}))
	dialNonReader(t, r, "43")
	deadline := time.Now().Add(30 * time.Second)
	for r.hub.Len() != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if r.hub.Len() != 0 {
		t.Fatal("a peer that answers no ping is still connected after 30 s")
	}
}
