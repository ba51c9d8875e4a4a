package presence_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/redistest"
	"github.com/chatd/chatd/presence"
	"github.com/chatd/chatd/store"
)

type clock = redistest.Clock

func setup(t *testing.T, replica string, clk *clock, r *redistest.Redis) (*presence.Tracker, *store.Store) {
	t.Helper()
	st := store.New(r.Client, store.Config{Prefix: r.Prefix, Now: clk.Now})
	tr, err := presence.New(presence.Config{Backend: st, Replica: replica, Now: clk.Now,
		TTL: 10 * time.Second, Heartbeat: 20 * time.Millisecond, ReapInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return tr, st
}

func online(t *testing.T, tr *presence.Tracker, user string) bool {
	t.Helper()
	m, err := tr.Online(t.Context(), []string{user})
	if err != nil {
		t.Fatal(err)
	}
	return m[user]
}

func TestAddRemoveAcrossReplicas(t *testing.T) {
	t.Parallel()
	r := redistest.New(t)
	clk := &clock{}
	a, _ := setup(t, "a", clk, r)
	b, _ := setup(t, "b", clk, r)
	m1, err := a.Add(t.Context(), "23")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m1, "a ") {
		t.Fatalf("member %q does not start with its replica", m1)
	}
	m2, err := b.Add(t.Context(), "23")
	if err != nil || m2 == m1 {
		t.Fatalf("second member %q, %v", m2, err)
	}
	if !online(t, b, "23") || online(t, b, "43") {
		t.Fatal("wrong presence")
	}
	if err := a.Remove(t.Context(), "23", m1); err != nil {
		t.Fatal(err)
	}
	if !online(t, a, "23") {
		t.Fatal("23 offline while a socket on b is live")
	}
	if err := b.Remove(t.Context(), "23", m2); err != nil {
		t.Fatal(err)
	}
	if online(t, a, "23") {
		t.Fatal("23 online with no socket")
	}
	if a.Len() != 0 || b.Len() != 0 {
		t.Fatalf("Len = %d, %d", a.Len(), b.Len())
	}
}

func TestHeartbeatKeepsAliveAndDeadReplicaExpires(t *testing.T) {
	t.Parallel()
	r := redistest.New(t)
	clk := &clock{}
	live, _ := setup(t, "live", clk, r)
	dead, _ := setup(t, "dead", clk, r)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = live.Run(ctx) }()
	defer func() { cancel(); <-done }()

	if _, err := live.Add(t.Context(), "alive"); err != nil {
		t.Fatal(err)
	}
	if _, err := dead.Add(t.Context(), "ghost"); err != nil { // dead never runs: no heartbeat
		t.Fatal(err)
	}
	// Move time past the TTL in small steps, as heartbeats would see it.
	// Half a second per step: a heartbeat would have to stall for 20 steps
	// (over a second of real time) for the live entry to lapse.
	for range 24 {
		clk.Advance(500 * time.Millisecond)
		time.Sleep(60 * time.Millisecond) // a few heartbeat ticks
	}
	if !online(t, live, "alive") {
		t.Fatal("heartbeat did not keep a live socket online")
	}
	if online(t, live, "ghost") {
		t.Fatal("a socket of a replica without heartbeat is still online after its TTL")
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	if _, err := presence.New(presence.Config{Replica: "a"}); err == nil {
		t.Error("no backend accepted")
	}
	r := redistest.New(t)
	if _, err := presence.New(presence.Config{Backend: store.New(r.Client, store.Config{})}); err == nil {
		t.Error("no replica accepted")
	}
}

// racyBackend runs hook inside Refresh, before the entries are written:
// a socket closing while a heartbeat is in flight. With failDisconnect,
// every removal fails.
type racyBackend struct {
	*store.Store
	hook           func()
	failDisconnect bool
}

func (b *racyBackend) Disconnect(ctx context.Context, user, member string) (bool, error) {
	if b.failDisconnect {
		return false, errors.New("i/o timeout")
	}
	return b.Store.Disconnect(ctx, user, member)
}

func (b *racyBackend) Refresh(ctx context.Context, conns map[string]string, expiry time.Time) (bool, error) {
	if b.hook != nil {
		b.hook()
		b.hook = nil
	}
	return b.Store.Refresh(ctx, conns, expiry)
}

func TestRemoveDuringHeartbeatStaysRemoved(t *testing.T) {
	t.Parallel()
	r := redistest.New(t)
	clk := &clock{}
	b := &racyBackend{Store: store.New(r.Client, store.Config{Prefix: r.Prefix, Now: clk.Now})}
	tr, err := presence.New(presence.Config{Backend: b, Replica: "a", Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	m, err := tr.Add(t.Context(), "23")
	if err != nil {
		t.Fatal(err)
	}
	b.hook = func() {
		if err := tr.Remove(t.Context(), "23", m); err != nil {
			t.Error(err)
		}
	}
	if lapsed, err := tr.Refresh(t.Context()); err != nil || lapsed {
		t.Fatalf("Refresh = %v, %v; want no lapse: the socket ended, nothing lapsed", lapsed, err)
	}
	if online(t, tr, "23") {
		t.Fatal("a socket removed during a heartbeat reads online again")
	}
}

// addPair adds a socket of 23 and one of 43, and returns 43's member.
func addPair(t *testing.T, tr *presence.Tracker) string {
	t.Helper()
	if _, err := tr.Add(t.Context(), "23"); err != nil {
		t.Fatal(err)
	}
	m, err := tr.Add(t.Context(), "43")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestLapseReportedWhenARemovalFails: a heartbeat that finds the
// replica's entries lapsed reports it even when removing a socket that
// ended meanwhile fails: the next heartbeat, having written the entries
// again, could not find the lapse any more.
func TestLapseReportedWhenARemovalFails(t *testing.T) {
	t.Parallel()
	r := redistest.New(t)
	clk := &clock{}
	b := &racyBackend{Store: store.New(r.Client, store.Config{Prefix: r.Prefix, Now: clk.Now}), failDisconnect: true}
	lapses := make(chan struct{}, 10)
	tr, err := presence.New(presence.Config{Backend: b, Replica: "a", Now: clk.Now,
		TTL: 10 * time.Second, Heartbeat: 20 * time.Millisecond, ReapInterval: time.Hour,
		OnLapse: func() { lapses <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	m := addPair(t, tr)
	b.hook = func() { _ = tr.Remove(t.Context(), "43", m) }
	clk.Advance(11 * time.Second) // as if the replica had stalled past the TTL
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = tr.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-lapses:
	case <-time.After(5 * time.Second):
		t.Fatal("no lapse reported: a failed removal hid it")
	}
}

// TestRefreshesTakeTurns: a refresh asked for while another runs (a
// resync during a heartbeat) waits for it, then runs, and a socket that
// ended during the first stays removed; one whose context ends while it
// waits returns.
func TestRefreshesTakeTurns(t *testing.T) {
	t.Parallel()
	r := redistest.New(t)
	clk := &clock{}
	b := &racyBackend{Store: store.New(r.Client, store.Config{Prefix: r.Prefix, Now: clk.Now})}
	tr, err := presence.New(presence.Config{Backend: b, Replica: "a", Now: clk.Now, TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	m := addPair(t, tr)
	type result struct {
		lapsed bool
		err    error
	}
	second := make(chan result, 1)
	b.hook = func() {
		// A refresh whose context has ended gives up its wait.
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := tr.Refresh(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Refresh with an ended context while another runs: %v", err)
		}
		go func() {
			lapsed, err := tr.Refresh(t.Context())
			second <- result{lapsed, err}
		}()
		_ = tr.Remove(t.Context(), "43", m)
	}
	if lapsed, err := tr.Refresh(t.Context()); err != nil || lapsed {
		t.Fatalf("first Refresh = %v, %v; want no lapse", lapsed, err)
	}
	if got := <-second; got.err != nil || got.lapsed {
		t.Fatalf("second Refresh = %v, %v; want no lapse", got.lapsed, got.err)
	}
	if !online(t, tr, "23") || online(t, tr, "43") || tr.Len() != 1 {
		t.Fatal("after both refreshes: want 23 online, 43 removed")
	}
}

// failingBackend writes the entry, then reports failure: a timeout on the
// way back from Redis.
type failingBackend struct{ *store.Store }

func (b failingBackend) Connect(ctx context.Context, user, member string, expiry time.Time) (bool, error) {
	if _, err := b.Store.Connect(ctx, user, member, expiry); err != nil {
		return false, err
	}
	return false, errors.New("i/o timeout")
}

func TestFailedAddLeavesNoEntry(t *testing.T) {
	t.Parallel()
	r := redistest.New(t)
	clk := &clock{}
	tr, err := presence.New(presence.Config{
		Backend: failingBackend{store.New(r.Client, store.Config{Prefix: r.Prefix, Now: clk.Now})},
		Replica: "a", Now: clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Add(t.Context(), "23"); err == nil {
		t.Fatal("Add succeeded")
	}
	if online(t, tr, "23") || tr.Len() != 0 {
		t.Fatal("a failed Add left 23 online")
	}
}

// gatedBackend holds Connect until open is closed, telling entered first:
// a connect in flight while a heartbeat runs.
type gatedBackend struct {
	*store.Store
	entered, open chan struct{}
}

func (b gatedBackend) Connect(ctx context.Context, user, member string, expiry time.Time) (bool, error) {
	close(b.entered)
	<-b.open
	return b.Store.Connect(ctx, user, member, expiry)
}

// TestHeartbeatDuringAddIsNoLapse: a heartbeat while a connection's entry
// is being written writes it too (a resync's refresh must not miss a socket
// that is connecting) but does not report a lapse (which would tell every
// socket of the replica to resync), and the connection is kept alive after.
func TestHeartbeatDuringAddIsNoLapse(t *testing.T) {
	t.Parallel()
	r := redistest.New(t)
	clk := &clock{}
	b := gatedBackend{Store: store.New(r.Client, store.Config{Prefix: r.Prefix, Now: clk.Now}),
		entered: make(chan struct{}), open: make(chan struct{})}
	tr, err := presence.New(presence.Config{Backend: b, Replica: "a", Now: clk.Now, TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	added := make(chan error, 1)
	go func() {
		_, err := tr.Add(t.Context(), "23")
		added <- err
	}()
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(b.open) }) })
	<-b.entered
	if lapsed, err := tr.Refresh(t.Context()); err != nil || lapsed {
		t.Fatalf("heartbeat during a connect: lapsed %v, %v; want no lapse", lapsed, err)
	}
	if !online(t, tr, "23") {
		t.Fatal("the heartbeat during a connect did not write its entry")
	}
	release.Do(func() { close(b.open) })
	if err := <-added; err != nil {
		t.Fatal(err)
	}
	clk.Advance(9 * time.Second)
	if lapsed, err := tr.Refresh(t.Context()); err != nil || lapsed {
		t.Fatalf("heartbeat after the connect: lapsed %v, %v; want no lapse", lapsed, err)
	}
	clk.Advance(9 * time.Second) // past the first expiry, within the refreshed one
	if !online(t, tr, "23") || tr.Len() != 1 {
		t.Fatal("the heartbeat did not keep the connection alive")
	}
}

func TestHeartbeatReportsLapse(t *testing.T) {
	t.Parallel()
	r := redistest.New(t)
	clk := &clock{}
	lapses := make(chan struct{}, 10)
	st := store.New(r.Client, store.Config{Prefix: r.Prefix, Now: clk.Now})
	tr, err := presence.New(presence.Config{Backend: st, Replica: "a", Now: clk.Now,
		TTL: 10 * time.Second, Heartbeat: 20 * time.Millisecond, ReapInterval: time.Hour,
		OnLapse: func() { lapses <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Add(t.Context(), "23"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = tr.Run(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(100 * time.Millisecond) // heartbeats of live entries: no lapse
	select {
	case <-lapses:
		t.Fatal("lapse reported for live entries")
	default:
	}
	clk.Advance(11 * time.Second) // as if the replica had stalled past the TTL
	select {
	case <-lapses:
	case <-time.After(5 * time.Second):
		t.Fatal("no lapse reported after the entries expired")
	}
	// The heartbeat that found the lapse may have computed its expiry just
	// before the clock moved; the next one brings 23 back for good.
	deadline := time.Now().Add(5 * time.Second)
	for !online(t, tr, "23") {
		if time.Now().After(deadline) {
			t.Fatal("the heartbeat did not bring 23 back")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
