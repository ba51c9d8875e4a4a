package store

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
)

// online fails unless Online reports exactly want for its keys.
func (f *fixture) online(t testing.TB, want map[string]bool) {
	t.Helper()
	got, err := f.s.Online(f.ctx, slices.Collect(maps.Keys(want)))
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, want) {
		t.Fatalf("Online = %v, want %v", got, want)
	}
}

func (f *fixture) connect(t testing.TB, user, member string, ttl time.Duration) bool {
	t.Helper()
	came, err := f.s.Connect(f.ctx, user, member, f.clock.Now().Add(ttl))
	if err != nil {
		t.Fatalf("Connect %s %q: %v", user, member, err)
	}
	return came
}

func (f *fixture) disconnect(t testing.TB, user, member string) bool {
	t.Helper()
	went, err := f.s.Disconnect(f.ctx, user, member)
	if err != nil {
		t.Fatalf("Disconnect %s %q: %v", user, member, err)
	}
	return went
}

func TestPresenceConnectDisconnect(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.online(t, map[string]bool{"23": false, "43": false})
	if got, err := f.s.Online(f.ctx, nil); err != nil || len(got) != 0 {
		t.Fatalf("Online(nil) = %v, %v", got, err)
	}

	if !f.connect(t, "23", "r1 c1", time.Minute) {
		t.Fatal("first connection: came online = false")
	}
	if f.connect(t, "23", "r2 c1", time.Minute) {
		t.Fatal("second connection: came online = true")
	}
	if f.connect(t, "23", "r1 c1", time.Minute) {
		t.Fatal("refresh: came online = true")
	}
	f.online(t, map[string]bool{"23": true, "43": false})

	if f.disconnect(t, "23", "r1 c1") {
		t.Fatal("one of two connections gone: went offline = true")
	}
	f.online(t, map[string]bool{"23": true})
	if f.disconnect(t, "23", "r1 c1") {
		t.Fatal("disconnecting an unknown member: went offline = true")
	}
	if !f.disconnect(t, "23", "r2 c1") {
		t.Fatal("last connection gone: went offline = false")
	}
	f.online(t, map[string]bool{"23": false})
	if f.disconnect(t, "23", "r2 c1") {
		t.Fatal("disconnecting twice: went offline = true")
	}
	if !f.connect(t, "23", "r1 c3", time.Minute) {
		t.Fatal("back: came online = false")
	}
}

func TestPresenceExpiry(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.connect(t, "23", "r1 c1", 30*time.Second)
	f.connect(t, "43", "r1 c2", 90*time.Second)
	f.clock.Advance(29 * time.Second)
	f.online(t, map[string]bool{"23": true, "43": true})
	f.clock.Advance(2 * time.Second)
	f.online(t, map[string]bool{"23": false, "43": true})
	// An expired entry does not count: connecting again comes online.
	if !f.connect(t, "23", "r1 c3", 30*time.Second) {
		t.Fatal("connect after expiry: came online = false")
	}
	// A heartbeat pushes the expiry forward.
	f.clock.Advance(50 * time.Second)
	f.connect(t, "43", "r1 c2", 90*time.Second)
	f.clock.Advance(50 * time.Second)
	f.online(t, map[string]bool{"23": false, "43": true})
	// The key itself outlives its latest expiry, and is not kept forever.
	ttl, err := f.r.Client.PTTL(f.ctx, f.presenceKey("43")).Result()
	if err != nil || ttl <= 0 || ttl > 90*time.Second+time.Minute {
		t.Fatalf("PTTL of 43's presence = %v, %v; want the entry's 90s plus a minute at most", ttl, err)
	}
}

func TestPresenceReap(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	sub, rec := f.subscribe(t, "r1")
	f.connect(t, "23", "dead c1", 10*time.Second)
	f.connect(t, "23", "dead c2", 10*time.Second)
	f.connect(t, "43", "dead c3", 10*time.Second)
	f.connect(t, "43", "r1 c4", time.Minute)
	f.connect(t, "65", "r1 c5", time.Minute)
	rec.waitPresence(t, 3)

	if n, err := f.s.Reap(f.ctx, 100); err != nil || n != 0 {
		t.Fatalf("Reap before anything expired = %d, %v; want 0", n, err)
	}
	f.clock.Advance(11 * time.Second)
	if n, err := f.s.Reap(f.ctx, 2); err != nil || n != 2 {
		t.Fatalf("Reap(batch 2) = %d, %v; want 2", n, err)
	}
	if n, err := f.s.Reap(f.ctx, 100); err != nil || n != 1 {
		t.Fatalf("second Reap = %d, %v; want the 1 left", n, err)
	}
	if n, err := f.s.Reap(f.ctx, 100); err != nil || n != 0 {
		t.Fatalf("third Reap = %d, %v; want 0", n, err)
	}
	barrier(t, sub)
	_, got := rec.snapshot()
	want := []string{"23 1", "43 1", "65 1", "23 0"}
	if !slices.Equal(got, want) {
		t.Fatalf("presence changes %v, want %v (43 still has a live connection)", got, want)
	}
	f.online(t, map[string]bool{"23": false, "43": true, "65": true})
	// The expired entries are gone from the user's set and the index.
	for user, want := range map[string]int64{"23": 0, "43": 1} {
		if n, err := f.r.Client.ZCard(f.ctx, f.presenceKey(user)).Result(); err != nil || n != want {
			t.Fatalf("ZCARD presence of %s = %d, %v; want %d", user, n, err, want)
		}
	}
	if members, err := f.r.Client.ZRange(f.ctx, f.k.presenceIndex(), 0, -1).Result(); err != nil ||
		!slices.Equal(members, []string{"43 r1 c4", "65 r1 c5"}) {
		t.Fatalf("presence index = %q, %v; want the two live entries", members, err)
	}
}

func TestPresenceEvents(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	sub, rec := f.subscribe(t, "r1")
	f.connect(t, "23", "r1 c1", time.Minute)
	f.connect(t, "23", "r2 c2", time.Minute) // second live connection: no event
	f.connect(t, "23", "r1 c1", time.Minute) // refresh: no event
	f.disconnect(t, "23", "r1 c1")           // one left: no event
	f.disconnect(t, "23", "r2 c2")           // last: offline
	f.connect(t, "alice", "r2 c3", time.Minute)
	barrier(t, sub)
	_, got := rec.snapshot()
	if want := []string{"23 1", "23 0", "alice 1"}; !slices.Equal(got, want) {
		t.Fatalf("presence changes %v, want %v", got, want)
	}
}

func TestDeliveryRouting(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	sub1, rec1 := f.subscribe(t, "r1")
	sub2, rec2 := f.subscribe(t, "r2")
	sub3, rec3 := f.subscribe(t, "r3")
	f.connect(t, "23", "r1 c1", time.Minute)
	f.connect(t, "43", "r2 c2", time.Minute)
	f.connect(t, "43", "r2 c3", time.Minute) // two sockets on one replica: one delivery

	// A message goes to the replicas of both users, once each.
	f.clock.Advance(time.Second)
	m := f.send(t, "23", "43", "hi \"there\" 你好 🎉")
	m2, _, err := f.s.Send(f.ctx, chat.SendRequest{From: "23", To: "43", Text: "second", Origin: "r1 c1"})
	if err != nil {
		t.Fatal(err)
	}
	// The second came from 23's only socket, which has its answer: 23's
	// replica is not published to for it. With another socket of 23 there,
	// it is.
	f.connect(t, "23", "r1 c9", time.Minute)
	m3, _, err := f.s.Send(f.ctx, chat.SendRequest{From: "23", To: "43", Text: "third", Origin: "r1 c1"})
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		msg    chat.Message
		origin string
	}
	for _, tt := range []struct {
		name string
		sub  *Subscriber
		rec  *recorder
		want []want
	}{
		{"r1", sub1, rec1, []want{{m, ""}, {m3, "r1 c1"}}},
		{"r2", sub2, rec2, []want{{m, ""}, {m2, "r1 c1"}, {m3, "r1 c1"}}},
	} {
		ds := tt.rec.waitDeliveries(t, len(tt.want))
		barrier(t, tt.sub)
		ds, _ = tt.rec.snapshot()
		if len(ds) != len(tt.want) {
			t.Fatalf("%s got %d deliveries, want %d", tt.name, len(ds), len(tt.want))
		}
		for i, want := range tt.want {
			d := ds[i]
			if d.Kind != 'm' || d.Origin != want.origin || !slices.Equal(d.Users, []string{"43", "23"}) {
				t.Fatalf("%s delivery %d = kind %c origin %q users %q; want m %q [43 23]", tt.name, i, d.Kind, d.Origin, d.Users, want.origin)
			}
			if d.Message != want.msg {
				t.Fatalf("%s delivery %d: message %+v, want %+v", tt.name, i, d.Message, want.msg)
			}
			if !d.Stored.Equal(time.UnixMicro(f.clock.Now().UnixMicro())) {
				t.Fatalf("%s delivery %d: stored %v, want %v", tt.name, i, d.Stored, f.clock.Now())
			}
		}
	}
	barrier(t, sub3)
	if ds, _ := rec3.snapshot(); len(ds) != 0 {
		t.Fatalf("r3 holds nobody's socket but got %d deliveries", len(ds))
	}

	// A message between users elsewhere reaches no one here.
	f.send(t, "65", "99", "elsewhere")
	// Expired entries route nothing: 23's replica died.
	f.clock.Advance(2 * time.Minute)
	f.connect(t, "43", "r2 c2", time.Minute)
	f.send(t, "43", "23", "to a dead replica")
	barrier(t, sub1)
	barrier(t, sub2)
	ds1, _ := rec1.snapshot()
	ds2, _ := rec2.snapshot()
	if len(ds1) != 2 || len(ds2) != 4 {
		t.Fatalf("deliveries r1 %d, r2 %d; want 2 (nothing new) and 4 (the sender's replica)", len(ds1), len(ds2))
	}
	f.wantSeed(t, "23", "43-23", "1") // 23 is offline
}

func TestDeliveryTypingAndReceipt(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	sub1, rec1 := f.subscribe(t, "r1")
	sub2, rec2 := f.subscribe(t, "r2")
	f.connect(t, "23", "r1 c1", time.Minute)
	f.connect(t, "43", "r2 c2", time.Minute)
	// Nothing to have read yet: no receipt.
	if st, err := f.s.MarkRead(f.ctx, "43", "23", 0, "r2 c2"); err != nil || st != (chat.ReadState{}) {
		t.Fatalf("MarkRead of an empty conversation = %+v, %v", st, err)
	}
	barrier(t, sub1)
	barrier(t, sub2)
	if d1, _ := rec1.snapshot(); len(d1) != 0 {
		t.Fatalf("receipt for an empty conversation: %+v", d1)
	}
	if d2, _ := rec2.snapshot(); len(d2) != 0 {
		t.Fatalf("receipt for an empty conversation: %+v", d2)
	}
	f.send(t, "23", "43", "one")
	f.send(t, "23", "43", "two")
	rec1.waitDeliveries(t, 2)
	rec2.waitDeliveries(t, 2)

	// Typing goes to the peer's replicas only.
	if err := f.s.Typing(f.ctx, "23", "43"); err != nil {
		t.Fatal(err)
	}
	d := rec2.waitDeliveries(t, 3)[2]
	if d.Kind != chat.KindTyping || d.Origin != "" || !slices.Equal(d.Users, []string{"43"}) || d.By != "23" {
		t.Fatalf("typing delivery = %+v, want typing by 23 to [43]", d)
	}
	if !d.Stored.IsZero() {
		t.Fatalf("typing delivery stored = %v, want zero", d.Stored)
	}

	// A receipt goes to both sides, with the last seq.
	if _, err := f.s.MarkRead(f.ctx, "43", "23", 0, "r2 c2"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		rec  *recorder
		n    int
	}{{"r1", rec1, 3}, {"r2", rec2, 4}} {
		d := tt.rec.waitDeliveries(t, tt.n)[tt.n-1]
		if d.Kind != 'r' || d.Origin != "r2 c2" || !slices.Equal(d.Users, []string{"23", "43"}) {
			t.Fatalf("%s receipt delivery = %c %q %q", tt.name, d.Kind, d.Origin, d.Users)
		}
		if d.By != "43" || d.With != "23" || d.Read != 2 {
			t.Fatalf("%s receipt %+v, want by 43 with 23 read 2", tt.name, d)
		}
	}
	barrier(t, sub1)
	barrier(t, sub2)
	if ds, _ := rec1.snapshot(); len(ds) != 3 {
		t.Fatalf("r1 got %d deliveries, want 3 (the typing was not for 23)", len(ds))
	}
	if err := f.s.Typing(f.ctx, "2:3", "43"); err == nil {
		t.Fatal("Typing from an invalid user: nil error")
	}
}

func TestSubscriberIgnoresMalformed(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	sub, rec := f.subscribe(t, "r1")
	for _, p := range []string{"", "x", "m", "mx", "p 1", "m a b\n{}", "m a b c d\n{}", "m a b c"} {
		f.publish(t, f.replicaChannel("r1"), p)
	}
	barrier(t, sub)
	if ds, ps := rec.snapshot(); len(ds) != 0 || len(ps) != 0 {
		t.Fatalf("malformed payloads were handed on: %+v %v", ds, ps)
	}
}

func TestCanary(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	sub, _ := f.subscribe(t, "r1")
	if !sub.LastCanary().IsZero() {
		t.Fatal("LastCanary before any canary is not zero")
	}
	before := time.Now()
	ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
	defer cancel()
	rtt, err := sub.Canary(ctx)
	if err != nil || rtt <= 0 {
		t.Fatalf("Canary = %v, %v", rtt, err)
	}
	if last := sub.LastCanary(); last.Before(before) {
		t.Fatalf("LastCanary = %v, before the canary was sent (%v)", last, before)
	}
	if sub.Reconnects() != 0 {
		t.Fatalf("Reconnects = %d on a steady link", sub.Reconnects())
	}
}

func TestSubscriberRunEndsWithContext(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	sub := f.s.Subscribe("r1", newRecorder())
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	select {
	case <-sub.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestSubscriberResync breaks the subscriber's connection (on a cluster,
// both shard channels' connections): go-redis reconnects and resubscribes,
// the Subscriber calls Resync once, and delivery works again.
func TestSubscriberResync(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	var mu sync.Mutex
	var conns []net.Conn
	c := f.r.NewClient(t, "", func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
		return c, err
	})
	t.Cleanup(func() { c.Close() })
	s := New(c, Config{Prefix: f.r.Prefix, Now: f.clock.Now, Logger: slog.New(slog.NewTextHandler(f.log, nil))})
	broken := *f
	broken.s = s
	sub, rec := broken.subscribe(t, "r1")
	barrier(t, sub)

	mu.Lock()
	for _, c := range conns {
		c.Close()
	}
	mu.Unlock()

	deadline := time.After(20 * time.Second)
	for {
		rec.mu.Lock()
		n := rec.resyncs
		rec.mu.Unlock()
		if n > 0 {
			break
		}
		select {
		case <-rec.changed:
		case <-deadline:
			t.Fatal("no Resync 20s after the connection broke")
		}
	}
	if sub.Reconnects() != 1 {
		t.Fatalf("Reconnects = %d, want 1", sub.Reconnects())
	}
	// chat.Delivery works again, through the resubscribed link.
	f.connect(t, "43", "r1 c1", time.Minute)
	f.send(t, "23", "43", "after the break")
	d := rec.waitDeliveries(t, 1)[0]
	if d.Message.Text != "after the break" {
		t.Fatalf("delivery after resync = %+v", d)
	}
	barrier(t, sub)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.resyncs != 1 {
		t.Fatalf("Resync called %d times, want 1", rec.resyncs)
	}
}

func TestPresenceRefresh(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	sub, rec := f.subscribe(t, "r1")
	if lapsed, err := f.s.Refresh(f.ctx, nil, f.clock.Now().Add(time.Minute)); err != nil || lapsed {
		t.Fatalf("Refresh of nothing: %v, %v", lapsed, err)
	}
	f.connect(t, "23", "r1 a", 30*time.Second)
	f.connect(t, "23", "r1 b", 30*time.Second)
	f.connect(t, "43", "r1 c", 90*time.Second)
	rec.waitPresence(t, 2)
	f.clock.Advance(60 * time.Second) // 23 lapsed (not reaped), 43 still live
	f.online(t, map[string]bool{"23": false, "43": true})

	conns := map[string]string{"r1 a": "23", "r1 b": "23", "r1 c": "43"}
	// More than one pipelined batch (of 500), all for one user.
	for i := range 501 {
		conns[fmt.Sprintf("r1 bulk%d", i)] = "bulk"
	}
	if lapsed, err := f.s.Refresh(f.ctx, conns, f.clock.Now().Add(30*time.Second)); err != nil || !lapsed {
		t.Fatalf("Refresh = %v, %v; want lapsed (23 and bulk were offline)", lapsed, err)
	}
	if lapsed, err := f.s.Refresh(f.ctx, conns, f.clock.Now().Add(30*time.Second)); err != nil || lapsed {
		t.Fatalf("second Refresh = %v, %v; want nothing lapsed", lapsed, err)
	}
	barrier(t, sub)
	_, got := rec.snapshot()
	if want := []string{"23 1", "43 1", "23 1", "bulk 1"}; len(got) != 4 || !slices.Equal(got[:2], want[:2]) ||
		!slices.Equal(sortedCopy(got[2:]), want[2:]) {
		t.Fatalf("presence changes %v, want %v (23 back once, bulk once, 43 never lapsed)", got, want)
	}
	f.online(t, map[string]bool{"23": true, "43": true, "bulk": true})
	if n, err := f.r.Client.ZCard(f.ctx, f.presenceKey("bulk")).Result(); err != nil || n != 501 {
		t.Fatalf("ZCARD presence of bulk = %d, %v; want 501", n, err)
	}
	// The new expiry holds: 29 s later all are live, 31 s later none.
	f.clock.Advance(29 * time.Second)
	f.online(t, map[string]bool{"23": true, "43": true, "bulk": true})
	f.clock.Advance(2 * time.Second)
	f.online(t, map[string]bool{"23": false, "43": false, "bulk": false})
	if n, err := f.s.Reap(f.ctx, 5000); err != nil || n != 504 {
		t.Fatalf("Reap = %d, %v; want all 504 entries", n, err)
	}
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
