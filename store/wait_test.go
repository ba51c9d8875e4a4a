package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/redis/go-redis/v9"
)

func TestValidateWait(t *testing.T) {
	t.Parallel()
	single := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ReadTimeout: 3 * time.Second})
	t.Cleanup(func() { single.Close() })
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}, ReadTimeout: time.Second})
	t.Cleanup(func() { cc.Close() })
	for _, tt := range []struct {
		rdb      redis.UniversalClient
		replicas int
		timeout  time.Duration
		ok       bool
	}{
		{single, 0, 0, true},
		{single, 1, 500 * time.Millisecond, true},
		{single, 2, 1500 * time.Millisecond, true},
		{single, -1, time.Second, false},
		{single, 1, 0, false},
		{single, 1, 2 * time.Second, false}, // more than half of 3s
		{cc, 1, 500 * time.Millisecond, true},
		{cc, 1, 600 * time.Millisecond, false}, // more than half of 1s
	} {
		err := ValidateWait(tt.rdb, tt.replicas, tt.timeout)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateWait(%T, %d, %v) = %v, want ok %v", tt.rdb, tt.replicas, tt.timeout, err, tt.ok)
		}
	}
}

// waitingFixture returns a fixture whose Store waits for replicas, with a
// clock that stands still at at.
func waitingFixture(t *testing.T, replicas int, timeout time.Duration, at time.Time) *fixture {
	t.Helper()
	return newFixture(t, Config{Wait: replicas, WaitTimeout: timeout, Now: func() time.Time { return at }})
}

// noReplicas skips a test that needs a single Redis without replicas: a
// Redis Cluster, or a REDIS_URL that has replicas, cannot show it.
func (f *fixture) noReplicas(t *testing.T) {
	t.Helper()
	if f.cluster() {
		t.Skip("about a Redis without replicas; each master of the test cluster has one")
	}
	s := New(f.r.Client, Config{Prefix: f.r.Prefix, Wait: 1, WaitTimeout: 50 * time.Millisecond})
	defer s.Close()
	short, err := s.CheckReplicas(f.ctx)
	if err != nil {
		t.Fatalf("CheckReplicas: %v", err)
	}
	if len(short) == 0 {
		t.Skip("this Redis has replicas")
	}
}

// TestWaitWithoutReplicas: with no replica to acknowledge it, a send that
// waits for one answers ErrNotReplicated after the timeout (at once on
// miniredis, whose WAIT always answers 0), and so does its retry, which
// waits again. The message is stored whole, exactly as a send that does
// not wait stores it; nothing is published about it; a read of it fails
// the same way, a read with nothing to write does not.
func TestWaitWithoutReplicas(t *testing.T) {
	t.Parallel()
	at := time.Now()
	f := waitingFixture(t, 1, 50*time.Millisecond, at)
	f.noReplicas(t)
	plain := newFixture(t, Config{Now: func() time.Time { return at }})
	sub, rec := f.subscribe(t, "r1")
	for _, x := range []*fixture{f, plain} {
		for _, u := range []string{"43", "23"} {
			if _, err := x.s.Connect(x.ctx, u, "r1 c"+u, at.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
	}
	rec.waitPresence(t, 2)

	req := chat.SendRequest{From: "23", To: "43", Text: "hi", ClientID: "c1", Origin: "c23"}
	for try := 1; try <= 2; try++ {
		start := time.Now()
		_, _, err := f.s.Send(f.ctx, req)
		mustErr(t, err, ErrNotReplicated, fmt.Sprintf("Send, try %d", try))
		if f.r.Mini == nil && time.Since(start) < 50*time.Millisecond {
			t.Errorf("Send, try %d, failed after %v: before WAIT's timeout", try, time.Since(start))
		}
	}
	if m, dup, err := plain.s.Send(plain.ctx, req); err != nil || dup || m.Seq != 1 {
		t.Fatalf("Send without waiting = %+v, %v, %v", m, dup, err)
	}
	// Whole: every key the send writes, as the send that does not wait
	// wrote it (and no second element from the retry).
	got, want := f.dump(t), plain.dump(t)
	delete(got, "chat:fence")
	if !maps.Equal(got, want) {
		t.Errorf("after the send that waited in vain, Redis holds\n%v\nwant what a send that does not wait writes:\n%v", got, want)
	}

	_, err := f.s.MarkRead(f.ctx, "43", "23", 0, "c43")
	mustErr(t, err, ErrNotReplicated, "MarkRead")
	if st, err := f.s.MarkRead(f.ctx, "43", "99", 0, "c43"); err != nil || st != (chat.ReadState{}) {
		t.Errorf("MarkRead of an empty conversation = %+v, %v; want nothing, and no error: it writes nothing", st, err)
	}
	barrier(t, sub)
	if d, _ := rec.snapshot(); len(d) != 0 {
		t.Errorf("published %+v about writes that no replica acknowledged", d)
	}

	// The client's retry, once a replica has it, finds the one message.
	again := New(f.r.Client, Config{Prefix: f.r.Prefix, Now: f.clock.Now})
	t.Cleanup(again.Close)
	if m, dup, err := again.Send(f.ctx, req); err != nil || !dup || m.Seq != 1 || m.Text != "hi" {
		t.Fatalf("retry without waiting = %+v, %v, %v; want the stored message", m, dup, err)
	}
}

// TestWaitOneWaitPerBatch: concurrent sends share pipelines, and each
// pipeline ends with one fence and one WAIT for all its sends.
func TestWaitOneWaitPerBatch(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.noReplicas(t)
	c := f.r.NewClient(t, "", nil)
	t.Cleanup(func() { c.Close() })
	cmds := &commands{}
	c.AddHook(cmds)
	s := New(c, Config{Prefix: f.r.Prefix, Wait: 1, WaitTimeout: 20 * time.Millisecond})
	t.Cleanup(s.Close)

	const sends = 64
	var wg sync.WaitGroup
	errs := make(chan error, sends)
	for i := range sends {
		wg.Go(func() {
			_, _, err := s.Send(f.ctx, chat.SendRequest{From: "23", To: "43", Text: "hi", ClientID: "c" + strconv.Itoa(i)})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		mustErr(t, err, ErrNotReplicated, "Send")
	}
	if n := f.llen(t, "43-23"); n != sends {
		t.Fatalf("%d messages stored, want %d", n, sends)
	}
	count := map[string]int{}
	for _, name := range cmds.take() {
		count[name]++
	}
	if count["evalsha"]+count["eval"] < sends || count["wait"] == 0 || count["set"] != count["wait"] {
		t.Fatalf("commands %v: want every send's script, and one fence before each WAIT", count)
	}
	// On a real Redis each WAIT blocks 20 ms, while the sends that arrive
	// queue for the next pipeline.
	if f.r.Mini == nil && count["wait"] > sends/4 {
		t.Errorf("%d WAITs for %d concurrent sends: the sends were not batched", count["wait"], sends)
	}
}

// onReplica runs fn on a connection to a replica of the master of key's
// slot, in READONLY mode, so that fn reads what that replica holds.
func onReplica(t *testing.T, f *fixture, key string, fn func(conn *redis.Conn)) {
	t.Helper()
	node, err := f.s.cl.rdb.SlaveForKey(f.ctx, key)
	if err != nil {
		t.Fatalf("SlaveForKey(%s): %v", key, err)
	}
	conn := node.Conn()
	defer conn.Close()
	if err := conn.ReadOnly(f.ctx).Err(); err != nil {
		t.Fatalf("READONLY on %s: %v", node.Options().Addr, err)
	}
	fn(conn)
}

// TestWaitCluster: on a Redis Cluster, whose masters have one replica
// each, a send that waits for one is on the replica when it returns, as
// is a read; delivery follows the wait. Waiting for two fails, stores
// the message whole in its conversation and publishes nothing; the retry
// that waits for one returns it and delivers it.
func TestWaitCluster(t *testing.T) {
	t.Parallel()
	f := waitingFixture(t, 1, 500*time.Millisecond, time.Now())
	f.clusterLayout(t)
	if short, err := f.s.CheckReplicas(f.ctx); err != nil || len(short) != 0 {
		t.Fatalf("CheckReplicas = %v, %v; want every master with a replica", short, err)
	}
	sub, rec := f.subscribe(t, "r1")
	f.connect(t, "43", "r1 c43", time.Minute)
	f.connect(t, "23", "r1 c23", time.Minute)
	rec.waitPresence(t, 2)

	m, dup, err := f.s.Send(f.ctx, chat.SendRequest{From: "23", To: "43", Text: "hi", ClientID: "c1", Origin: "c23"})
	if err != nil || dup || m.Seq != 1 {
		t.Fatalf("Send = %+v, %v, %v", m, dup, err)
	}
	conv := f.ck.conv("43-23")
	onReplica(t, f, conv, func(conn *redis.Conn) {
		if n, err := conn.LLen(f.ctx, conv).Result(); err != nil || n != 1 {
			t.Errorf("on the replica, LLEN %s = %d, %v; want the message there when Send returns", conv, n, err)
		}
		idem := f.ck.idem("43-23", "23", "c1")
		if v, err := conn.Get(f.ctx, idem).Result(); err != nil || v != "1" {
			t.Errorf("on the replica, GET %s = %q, %v", idem, v, err)
		}
	})
	// The recipient's inbox and unread hint waited too.
	onReplica(t, f, f.ck.inbox("43"), func(conn *redis.Conn) {
		if _, err := conn.ZScore(f.ctx, f.ck.inbox("43"), "43-23").Result(); err != nil {
			t.Errorf("on the replica, the recipient's inbox lacks the conversation: %v", err)
		}
		if v, err := conn.HGet(f.ctx, f.ck.unreadHints("43"), "43-23").Result(); err != nil || v != "0 1" {
			t.Errorf("on the replica, the recipient's unread hint = %q, %v; want \"0 1\"", v, err)
		}
	})
	if d := rec.waitDeliveries(t, 1); d[0].Kind != chat.KindMessage || d[0].Message != m {
		t.Fatalf("delivered %+v, want the message", d[0])
	}

	st, err := f.s.MarkRead(f.ctx, "43", "23", 0, "c43")
	if err != nil || st.Read != 1 {
		t.Fatalf("MarkRead = %+v, %v", st, err)
	}
	onReplica(t, f, conv, func(conn *redis.Conn) {
		if r, err := conn.HGet(f.ctx, f.ck.read("43-23"), "r:43").Result(); err != nil || r != "1" {
			t.Errorf("on the replica, 43's read position = %q, %v; want 1 when MarkRead returns", r, err)
		}
	})
	if d := rec.waitDeliveries(t, 3); d[1].Kind != chat.KindReceipt || d[1].Read != 1 || d[2].Kind != chat.KindUnread {
		t.Fatalf("delivered %+v, want the receipt and the reader's new count", d[1:])
	}

	two := New(f.r.Client, Config{Prefix: f.r.Prefix, Wait: 2, WaitTimeout: 100 * time.Millisecond, Now: f.clock.Now})
	t.Cleanup(two.Close)
	req := chat.SendRequest{From: "23", To: "43", Text: "again", ClientID: "c2", Origin: "c23"}
	_, _, err = two.Send(f.ctx, req)
	mustErr(t, err, ErrNotReplicated, "Send waiting for 2 replicas")
	barrier(t, sub)
	if d, _ := rec.snapshot(); len(d) != 3 {
		t.Fatalf("deliveries %+v: the send that waited in vain published", d[3:])
	}
	if n := f.llen(t, "43-23"); n != 2 {
		t.Fatalf("LLEN = %d, want 2: the message is stored whole in its conversation", n)
	}
	m2, dup, err := f.s.Send(f.ctx, req)
	if err != nil || !dup || m2.Seq != 2 || m2.Text != "again" {
		t.Fatalf("retry = %+v, %v, %v; want the stored message", m2, dup, err)
	}
	if d := rec.waitDeliveries(t, 4); d[3].Message != m2 {
		t.Fatalf("delivered %+v, want the retried message", d[3])
	}
	if un, err := f.s.Unread(f.ctx, "43"); err != nil || un["23"] != 1 {
		t.Fatalf("Unread(43) = %v, %v; want 1 from 23: the retry wrote the hint", un, err)
	}
}

// TestWaitFenceCoversEarlierAttempt: a retried send whose script finds the
// message an earlier attempt stored writes nothing itself. Its WAIT must
// still cover the earlier attempt's write, made on another connection.
// Redis 7.0 stamps a connection's offset after any command, a read too, so
// there the retry's script already does; newer versions stamp it only
// after a write, and a connection that never wrote would be answered at
// once with every connected replica, even one that has not received the
// message. The fence is what makes it right on those. The replica is
// stopped (SIGSTOP) for well under the cluster's node timeout, so that it
// stays connected but acknowledges nothing; the retry, through a new
// client, must fail too, and succeed once the replica runs again.
func TestWaitFenceCoversEarlierAttempt(t *testing.T) {
	// Not parallel: a stopped replica would fail other tests' waits.
	f := waitingFixture(t, 1, 200*time.Millisecond, time.Now())
	f.clusterLayout(t)
	conv := f.ck.conv("43-23")
	node, err := f.s.cl.rdb.SlaveForKey(f.ctx, conv)
	if err != nil {
		t.Fatal(err)
	}
	pid := localPid(t, f.ctx, node)
	req := chat.SendRequest{From: "23", To: "43", Text: "hi", ClientID: "c1"}
	f.send(t, "43", "23", "first") // the conversation's master has a written connection now

	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Skipf("cannot stop the replica (pid %d): %v", pid, err)
	}
	stopped := true
	resume := func() {
		if stopped {
			stopped = false
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Errorf("SIGCONT %d: %v", pid, err)
			}
		}
	}
	t.Cleanup(resume)
	_, _, err = f.s.Send(f.ctx, req)
	mustErr(t, err, ErrNotReplicated, "Send while the replica is stopped")
	fresh := f.r.NewClient(t, "", nil)
	t.Cleanup(func() { fresh.Close() })
	retry := New(fresh, Config{Prefix: f.r.Prefix, Wait: 1, WaitTimeout: 200 * time.Millisecond})
	t.Cleanup(retry.Close)
	_, _, err = retry.Send(f.ctx, req)
	resume()
	mustErr(t, err, ErrNotReplicated, "retry on a new connection while the replica is stopped")

	// The replica has a backlog to take in once it runs again: a busy
	// machine may need more than one wait for it.
	var m chat.Message
	var dup bool
	for deadline := time.Now().Add(10 * time.Second); ; {
		m, dup, err = retry.Send(f.ctx, req)
		if !errors.Is(err, ErrNotReplicated) || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || !dup || m.Seq != 2 {
		t.Fatalf("retry after the replica resumed = %+v, %v, %v", m, dup, err)
	}
	onReplica(t, f, conv, func(conn *redis.Conn) {
		if n, err := conn.LLen(f.ctx, conv).Result(); err != nil || n != 2 {
			t.Errorf("on the replica, LLEN = %d, %v; want 2", n, err)
		}
	})
}

// localPid returns the pid of the Redis node, which must run on this
// machine (the test skips otherwise).
func localPid(t *testing.T, ctx context.Context, node *redis.Client) int {
	t.Helper()
	addr := node.Options().Addr
	if !strings.HasPrefix(addr, "127.0.0.1:") && !strings.HasPrefix(addr, "localhost:") {
		t.Skipf("replica %s is not on this machine", addr)
	}
	info, err := node.Info(ctx, "server").Result()
	if err != nil {
		t.Fatalf("INFO server on %s: %v", addr, err)
	}
	pid := 0
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, _ = strconv.Atoi(v)
		}
	}
	_, port, _ := strings.Cut(addr, ":")
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if pid == 0 || err != nil || !strings.Contains(string(cmdline), port) {
		t.Skipf("replica %s: no local process found (pid %d, %v)", addr, pid, err)
	}
	return pid
}
