package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/redistest"
	"github.com/chatd/chatd/store"
)

// TestRedisWaitConfig: -redis-wait needs a Redis with replicas, which the
// embedded one is not, and a timeout that fits in the Redis read timeout.
func TestRedisWaitConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-redis-wait", "1"}, nil, "the embedded Redis has none"},
		{nil, map[string]string{"CHAT_REDIS_WAIT": "1"}, "the embedded Redis has none"},
		{[]string{"-redis-wait", "-1", "-redis", "redis://127.0.0.1:1/0"}, nil, "-redis-wait must be 0 or more"},
		{[]string{"-redis-wait", "1", "-redis", "redis://127.0.0.1:1/0", "-redis-wait-timeout", "0s"}, nil, "must be positive"},
		{[]string{"-redis-wait", "1", "-redis", "redis://127.0.0.1:1/0?read_timeout=2s"},
			map[string]string{"CHAT_REDIS_WAIT_TIMEOUT": "1500ms"}, "half the Redis read timeout"},
		{[]string{"-redis-wait", "1", "-redis", "redis://127.0.0.1:1?addr=127.0.0.1:2", "-redis-wait-timeout", "3s"}, nil,
			"half the Redis read timeout"},
		{nil, map[string]string{"CHAT_REDIS_WAIT": "one"}, "CHAT_REDIS_WAIT"},
		{[]string{"-redis-batch-delay", "-1ms"}, nil, "-redis-batch-delay must be from 0 to 10ms"},
		{nil, map[string]string{"CHAT_REDIS_BATCH_DELAY": "1s"}, "-redis-batch-delay must be from 0 to 10ms"},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		err := run(ctx, append([]string{"-addr", "127.0.0.1:0"}, tc.args...), func(k string) string { return tc.env[k] }, io.Discard, io.Discard)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: err = %v, want it to mention %q", tc.args, tc.env, err, tc.want)
		}
	}
}

// TestRedisWait serves with -redis-wait 1. On a Redis without replicas
// (miniredis, or REDIS_URL's) chatd warns at start, and a send answers
// unavailable, again when retried, and delivers nothing; on a Redis
// Cluster, whose masters have a replica each, it answers sent (after a
// few retries at most, as a client would) and delivers the message.
func TestRedisWait(t *testing.T) {
	t.Parallel()
	r := redistest.New(t)
	s := start(t, nil, "-redis", r.URL, "-prefix", r.Prefix, "-redis-wait", "1", "-redis-wait-timeout", "100ms")
	warned := strings.Contains(s.logs.String(), "fewer Redis replicas than -redis-wait")
	a, _ := dial(t, "ws://"+s.addr+"/ws?user=23")
	b, _ := dial(t, "ws://"+s.addr+"/ws?user=43")

	if redistest.Cluster() {
		if warned {
			t.Fatalf("warned of missing replicas on the test cluster:\n%s", s.logs)
		}
		for try := 1; ; try++ {
			write(t, a, `{"type":"send","to":"43","text":"on two nodes","id":"c1"}`)
			f := read(t, a)
			if f["type"] == "sent" {
				break
			}
			if f["code"] != "unavailable" || try == 10 {
				t.Fatalf("try %d: got %v, want sent", try, f)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if f := read(t, b); f["type"] != "message" {
			t.Fatalf("got %v, want the message", f)
		}
		return
	}
	if !warned {
		t.Skip("this Redis has a replica")
	}
	for try := 1; try <= 2; try++ {
		write(t, a, `{"type":"send","to":"43","text":"only on the master","id":"c1"}`)
		if f := read(t, a); f["type"] != "error" || f["code"] != "unavailable" {
			t.Fatalf("try %d: got %v, want unavailable", try, f)
		}
	}
	// Nothing was published: the next frame 43 gets answers its ping.
	write(t, b, `{"type":"ping","id":"p"}`)
	if f := read(t, b); f["type"] != "pong" {
		t.Fatalf("43 got %v before its pong: a message no replica acknowledged was delivered", f)
	}
}

// -redis-batch-delay 0 turns the delay off; the store reads its zero as
// the default.
func TestBatchDelayFlag(t *testing.T) {
	t.Parallel()
	for flag, want := range map[time.Duration]time.Duration{0: -1, time.Millisecond: time.Millisecond} {
		if got := storeBatchDelay(flag); got != want {
			t.Errorf("storeBatchDelay(%v) = %v, want %v", flag, got, want)
		}
	}
	c, err := parseConfig(nil, func(string) string { return "" }, io.Discard, io.Discard)
	if err != nil || c.batchDelay != store.DefaultBatchDelay {
		t.Errorf("default -redis-batch-delay = %v, %v; want %v", c.batchDelay, err, store.DefaultBatchDelay)
	}
}
