package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// refusingConn is a connection to Redis that, while refuse is set, answers
// SUBSCRIBE and SSUBSCRIBE itself with the error Redis gives a user whose
// ACL does not allow the channels, and does not pass them on.
type refusingConn struct {
	net.Conn
	refuse *atomic.Bool

	mu      sync.Mutex
	pending []byte // the refusal, read before anything from Redis
}

func (c *refusingConn) Write(b []byte) (int, error) {
	if c.refuse.Load() && isSubscribe(b) {
		c.mu.Lock()
		c.pending = append(c.pending, "-NOPERM User has no permissions to access one of the channels\r\n"...)
		c.mu.Unlock()
		return len(b), nil
	}
	return c.Conn.Write(b)
}

func (c *refusingConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	return c.Conn.Read(b)
}

// isSubscribe reports whether a RESP command starts with SUBSCRIBE or
// SSUBSCRIBE: "*<n>\r\n$<len>\r\n<name>\r\n".
func isSubscribe(b []byte) bool {
	parts := bytes.SplitN(b, []byte("\r\n"), 4)
	if len(parts) < 3 || len(parts[0]) == 0 || parts[0][0] != '*' {
		return false
	}
	name := strings.ToUpper(string(parts[2]))
	return name == "SUBSCRIBE" || name == "SSUBSCRIBE"
}

// TestSubscriberRetriesRefusedSubscribe refuses the subscriber's SUBSCRIBE
// (on a cluster, its SSUBSCRIBEs), as Redis does after an ACL change: the
// refusal is logged, the subscriber is not ready, and it subscribes once
// Redis allows it, without a restart; delivery then works.
func TestSubscriberRetriesRefusedSubscribe(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	var refuse atomic.Bool
	refuse.Store(true)
	c := f.r.NewClient(t, "", func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &refusingConn{Conn: c, refuse: &refuse}, nil
	})
	t.Cleanup(func() { c.Close() })
	logs := &logBuf{}
	s := New(c, Config{Prefix: f.r.Prefix, Now: f.clock.Now, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	rec := newRecorder()
	sub := s.Subscribe("r1", rec)
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "NOPERM") {
		if time.Now().After(deadline) {
			t.Fatalf("the refusal was not logged in 10s; log:\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-sub.Ready():
		t.Fatal("ready while every subscription is refused")
	default:
	}

	refuse.Store(false)
	select {
	case <-sub.Ready():
	case <-time.After(20 * time.Second):
		t.Fatalf("not subscribed 20s after Redis allowed it; log:\n%s", logs)
	}
	f.connect(t, "43", "r1 c1", time.Minute)
	f.send(t, "23", "43", "once allowed")
	if d := rec.waitDeliveries(t, 1)[0]; d.Message.Text != "once allowed" {
		t.Fatalf("delivery = %+v", d)
	}
	// The first subscription, however late, is no break of a link.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.resyncs != 0 || sub.Reconnects() != 0 {
		t.Fatalf("Resync called %d times, %d reconnects; want none for the first subscription", rec.resyncs, sub.Reconnects())
	}
}

// timeoutErr is a network error that says it timed out.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// TestIsQuiet: a read that timed out is a quiet link, to be pinged; a dial
// that timed out is a broken one, and so is any other error.
func TestIsQuiet(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "read", Net: "tcp", Err: timeoutErr{}}, true},
		{fmt.Errorf("receive: %w", &net.OpError{Op: "read", Net: "tcp", Err: timeoutErr{}}), true},
		{&net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}}, false},
		{&net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}, false},
		{errors.New("redis: client is closed"), false},
	} {
		if got := isQuiet(tc.err); got != tc.want {
			t.Errorf("isQuiet(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
