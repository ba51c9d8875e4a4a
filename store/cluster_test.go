package store

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/redis/go-redis/v9"
)

// clusterLayout skips a test about the Redis Cluster layout unless the
// tests run against a Redis Cluster.
func (f *fixture) clusterLayout(t testing.TB) *redis.ClusterClient {
	t.Helper()
	if !f.cluster() {
		t.Skip("about the Redis Cluster layout: set REDIS_CLUSTER_URL to run it")
	}
	return f.s.cl.rdb
}

// TestClusterKeysHashTags: a conversation's keys share its name as hash
// tag, a user's keys the user id; channels and the presence index have
// none. A prefix with a brace is refused on a cluster only.
func TestClusterKeysHashTags(t *testing.T) {
	t.Parallel()
	k := clusterKeys{prefix: "app:"}
	tag := func(key string) string {
		_, rest, ok := strings.Cut(key, "{")
		tag, _, ok2 := strings.Cut(rest, "}")
		if !ok || !ok2 {
			return ""
		}
		return tag
	}
	for _, tt := range []struct{ key, want, tag string }{
		{k.conv("43-23"), "app:{43-23}", "43-23"},
		{k.read("43-23"), "app:{43-23}:read", "43-23"},
		{k.idem("43-23", "23", "c1"), "app:{43-23}:idem:23:c1", "43-23"},
		{k.inbox("43"), "app:{43}:inbox", "43"},
		{k.unreadHints("43"), "app:{43}:unread", "43"},
		{k.presence("43"), "app:{43}:presence", "43"},
		{k.presenceIndex(), "app:chat:presence-index", ""},
		{k.replicaChannel("r1"), "app:chat:replica:r1", ""},
		{k.presenceChannel(), "app:chat:presence-events", ""},
	} {
		if tt.key != tt.want || tag(tt.key) != tt.tag {
			t.Errorf("key %q (tag %q), want %q (tag %q)", tt.key, tag(tt.key), tt.want, tt.tag)
		}
	}

	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	t.Cleanup(func() { cc.Close() })
	single := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { single.Close() })
	for _, p := range []string{"a{b:", "a}b:", "{x}"} {
		if err := ValidatePrefix(cc, p); err == nil {
			t.Errorf("ValidatePrefix(cluster, %q) = nil, want an error", p)
		}
		if err := ValidatePrefix(single, p); err != nil {
			t.Errorf("ValidatePrefix(single Redis, %q) = %v, want nil", p, err)
		}
	}
	if err := ValidatePrefix(cc, "app:"); err != nil {
		t.Errorf("ValidatePrefix(cluster, app:) = %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("New on a cluster with the prefix a{b: did not panic")
		}
	}()
	New(cc, Config{Prefix: "a{b:"})
}

// slotCheck is a go-redis hook that keeps the keys of every script call.
type slotCheck struct {
	mu    sync.Mutex
	calls [][]string // per call: the script's SHA (or source), then its keys
}

func (h *slotCheck) add(cmd redis.Cmder) {
	args := cmd.Args()
	if name := cmd.Name(); name != "evalsha" && name != "eval" || len(args) < 3 {
		return
	}
	n, _ := strconv.Atoi(fmt.Sprint(args[2]))
	call := []string{fmt.Sprint(args[1])}
	for _, k := range args[3 : 3+n] {
		call = append(call, fmt.Sprint(k))
	}
	h.mu.Lock()
	h.calls = append(h.calls, call)
	h.mu.Unlock()
}

func (h *slotCheck) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *slotCheck) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.add(cmd)
		return next(ctx, cmd)
	}
}

func (h *slotCheck) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			h.add(cmd)
		}
		return next(ctx, cmds)
	}
}

// TestClusterScriptsKeepToOneSlot runs every operation through a client
// that notes each script call, and asks the cluster (CLUSTER KEYSLOT) for
// the slot of every key a script was given: one slot per call.
func TestClusterScriptsKeepToOneSlot(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	cc := f.clusterLayout(t)
	c := f.r.NewClient(t, "", nil)
	t.Cleanup(func() { c.Close() })
	hook := &slotCheck{}
	c.AddHook(hook)
	s := New(c, Config{Prefix: f.r.Prefix, Now: f.clock.Now, Logger: slog.New(slog.NewTextHandler(f.log, nil))})
	t.Cleanup(s.Close)
	ctx := f.ctx
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.Connect(ctx, "43", "r1 c1", f.clock.Now().Add(time.Minute))
	must(err)
	_, err = s.Connect(ctx, "23", "r2 c2", f.clock.Now().Add(time.Second))
	must(err)
	for _, req := range []chat.SendRequest{
		{From: "23", To: "43", Text: "one", ClientID: "a"},
		{From: "23", To: "43", Text: "one", ClientID: "a"}, // a duplicate
		{From: "43", To: "23", Text: "two"},
		{From: "23", To: "23", Text: "note"},
		{From: "alice", To: "43", Text: "three"},
	} {
		_, _, err := s.Send(ctx, req)
		must(err)
	}
	_, err = s.History(ctx, "43", "23", 0, 10)
	must(err)
	_, err = s.MarkRead(ctx, "43", "23", 1, "r1 c1")
	must(err)
	_, err = s.MarkRead(ctx, "43", "alice", 0, "")
	must(err)
	_, err = s.Unread(ctx, "43")
	must(err)
	_, _, err = s.Inbox(ctx, "23", 0)
	must(err)
	must(s.Typing(ctx, "23", "43"))
	_, err = s.Refresh(ctx, map[string]string{"r1 c1": "43", "r1 c3": "65"}, f.clock.Now().Add(time.Minute))
	must(err)
	_, err = s.Online(ctx, []string{"23", "43", "65"})
	must(err)
	_, err = s.Disconnect(ctx, "65", "r1 c3")
	must(err)
	f.clock.Advance(2 * time.Second)
	if n, err := s.Reap(ctx, 100); err != nil || n != 1 {
		t.Fatalf("Reap = %d, %v; want 23's expired entry", n, err)
	}

	scripts := map[string]string{}
	for name, sc := range map[string]*redis.Script{
		"send": clusterSendScript, "user": clusterUserScript, "history": clusterHistoryScript,
		"read": clusterReadScript, "conv": clusterConvScript, "connect": clusterConnectScript,
		"disconnect": clusterDisconnectScript, "reap": clusterReapScript, "trim": clusterTrimScript,
	} {
		scripts[sc.Hash()] = name
	}
	slots := map[string]int64{}
	slot := func(key string) int64 {
		if s, ok := slots[key]; ok {
			return s
		}
		s, err := cc.ClusterKeySlot(ctx, key).Result()
		must(err)
		slots[key] = s
		return s
	}
	seen := map[string]bool{}
	hook.mu.Lock()
	defer hook.mu.Unlock()
	for _, call := range hook.calls {
		name, ok := scripts[call[0]]
		if !ok {
			name = "EVAL"
		}
		seen[name] = true
		keys := call[1:]
		if len(keys) == 0 {
			t.Errorf("%s script called without keys", name)
			continue
		}
		for _, k := range keys[1:] {
			if slot(k) != slot(keys[0]) {
				t.Errorf("%s script: key %s is in slot %d, %s in slot %d", name, k, slot(k), keys[0], slot(keys[0]))
			}
		}
	}
	for _, name := range scripts {
		if !seen[name] {
			t.Errorf("the %s script was never called: the test misses an operation", name)
		}
	}
}

// TestClusterUnreadHintsOnlyMoveForward: hints from several replicas
// arrive in any order; a hint never replaces a later one, and a state with
// nothing unread removes the hint unless a later one is there.
func TestClusterUnreadHintsOnlyMoveForward(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.clusterLayout(t)
	hint := func(read, n int64) {
		t.Helper()
		if _, err := f.s.cl.touch(f.ctx, "43-23", n, 0, "", 0, side{user: "43", read: read}); err != nil {
			t.Fatal(err)
		}
	}
	want := func(v string) {
		t.Helper()
		got, _ := f.hget(t, f.ck.unreadHints("43"), "43-23")
		if got != v {
			t.Fatalf("hint = %q, want %q", got, v)
		}
	}
	hint(0, 2)
	want("0 2")
	hint(0, 1) // older: ignored
	want("0 2")
	hint(1, 2) // a read in the same length: newer
	want("1 2")
	hint(0, 2) // older
	want("1 2")
	hint(2, 2) // read up to the end: gone
	want("")
	hint(2, 3) // a send by the peer
	want("2 3")
	hint(2, 2) // a late read of the older state does not remove it
	want("2 3")
	hint(3, 3)
	want("")
	if err := f.r.Client.HSet(f.ctx, f.ck.unreadHints("43"), "43-23", "junk").Err(); err != nil {
		t.Fatal(err)
	}
	hint(1, 4) // junk is replaced
	want("1 4")
	if inbox, err := f.r.Client.Exists(f.ctx, f.ck.inbox("43")).Result(); err != nil || inbox != 0 {
		t.Fatalf("a hint without an inbox score wrote the inbox: %d, %v", inbox, err)
	}
}

// TestClusterUnreadDropsJunkHints: fields of the hints hash that name no
// conversation of the user (written by something else) are not counted,
// and Unread removes them, so that they are not read again at every
// connect; real hints stay.
func TestClusterUnreadDropsJunkHints(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.clusterLayout(t)
	f.send(t, "23", "43", "unread")
	junk := []string{"nonsense", "23-99", "23-43", "43-43-1"}
	for _, field := range junk {
		if err := f.r.Client.HSet(f.ctx, f.ck.unreadHints("43"), field, "0 5").Err(); err != nil {
			t.Fatal(err)
		}
	}
	un, err := f.s.Unread(f.ctx, "43")
	if err != nil || len(un) != 1 || un["23"] != 1 {
		t.Fatalf("Unread(43) = %v, %v; want 23: 1", un, err)
	}
	fields, err := f.r.Client.HKeys(f.ctx, f.ck.unreadHints("43")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(fields) != 1 || fields[0] != "43-23" {
		t.Fatalf("hint fields after Unread = %v, want only 43-23", fields)
	}
}

// TestClusterSendRepairedByItsRetry: a send that stopped after its commit
// point (the conversation's script ran, the users' did not) left the
// message stored but out of the recipient's inbox and unread counts; the
// retry with the same client id returns it as a duplicate and puts both
// right, and delivers it.
func TestClusterSendRepairedByItsRetry(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.clusterLayout(t)
	f.send(t, "43", "23", "earlier, from 43")
	sub, rec := f.subscribe(t, "r1")
	f.connect(t, "43", "r1 c1", time.Minute)

	// Step 1 of a send, alone, as if the replica died right after it.
	req := chat.SendRequest{From: "23", To: "43", Text: "lost in the crash", ClientID: "c1"}
	conv := chat.ConvKey(req.From, req.To)
	ts, tsText := formatTime(f.clock.Now())
	if _, err := f.s.sends.run(f.ctx, []string{f.ck.conv(conv), f.ck.read(conv), f.ck.idem(conv, req.From, req.ClientID)},
		encodeElement(req.From, req.To, req.Text, tsText), f.s.idemMS, req.From, req.To); err != nil {
		t.Fatal(err)
	}
	// Stored, not wrong, only missing: the history has it, the unread
	// count and the inbox's last message do not.
	page, err := f.s.History(f.ctx, "43", "23", 0, 0)
	if err != nil || len(page.Messages) != 2 || page.Messages[0].Text != req.Text || page.Unread != 1 {
		t.Fatalf("History = %+v, %v; want the stored message, unread", page, err)
	}
	if un, err := f.s.Unread(f.ctx, "43"); err != nil || len(un) != 0 {
		t.Fatalf("Unread(43) = %v, %v; want nothing before the repair", un, err)
	}
	convs, _, err := f.s.Inbox(f.ctx, "23", 0)
	if err != nil || len(convs) != 1 || convs[0].Last.Seq != 2 {
		t.Fatalf("Inbox(23) = %+v, %v", convs, err)
	}

	m, dup, err := f.s.Send(f.ctx, req)
	if err != nil || !dup || m.Seq != 2 || m.Text != req.Text || m.Time != ts {
		t.Fatalf("retry = %+v, dup %v, %v; want the stored message #2", m, dup, err)
	}
	if un, err := f.s.Unread(f.ctx, "43"); err != nil || !maps.Equal(un, map[string]int64{"23": 1}) {
		t.Fatalf("Unread(43) after the retry = %v, %v; want 23: 1", un, err)
	}
	for _, u := range []string{"43", "23"} {
		convs, _, err := f.s.Inbox(f.ctx, u, 0)
		if err != nil || len(convs) != 1 || convs[0].Last == nil || *convs[0].Last != m {
			t.Fatalf("Inbox(%s) after the retry = %+v, %v", u, convs, err)
		}
	}
	d := rec.waitDeliveries(t, 1)[0]
	if d.Kind != chat.KindMessage || d.Message != m {
		t.Fatalf("delivery = %+v, want %+v", d, m)
	}
	barrier(t, sub)
	// A retry after a complete send changes nothing, and delivers again.
	if _, dup, err := f.s.Send(f.ctx, req); err != nil || !dup {
		t.Fatalf("second retry: dup %v, %v", dup, err)
	}
	if d := rec.waitDeliveries(t, 2)[1]; d.Message != m {
		t.Fatalf("second delivery = %+v, want %+v", d, m)
	}
	if un, err := f.s.Unread(f.ctx, "43"); err != nil || !maps.Equal(un, map[string]int64{"23": 1}) {
		t.Fatalf("Unread(43) = %v, %v; want 23: 1", un, err)
	}
}

// shardOf returns the address of the master that serves key's slot.
func shardOf(t testing.TB, cc *redis.ClusterClient, key string) string {
	t.Helper()
	ctx := context.Background()
	slot, err := cc.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	ranges, err := cc.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ranges {
		if int64(r.Start) <= slot && slot <= int64(r.End) && len(r.Nodes) > 0 {
			return r.Nodes[0].Addr
		}
	}
	t.Fatalf("no shard serves slot %d", slot)
	return ""
}

// TestClusterDeliveryAcrossShards: two replicas whose channels live on
// different shards, and two users whose keys live on different shards,
// get each other's messages, receipts, typing, presence and canaries.
func TestClusterDeliveryAcrossShards(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	cc := f.clusterLayout(t)
	// Replica names and users spread over two shards.
	pick := func(kind string, name func(int) string, key func(string) string, not string) (string, string) {
		t.Helper()
		for i := range 200 {
			n := name(i)
			if sh := shardOf(t, cc, key(n)); sh != not {
				return n, sh
			}
		}
		t.Fatalf("no %s off shard %s", kind, not)
		return "", ""
	}
	replica := func(i int) string { return fmt.Sprintf("r%d", i) }
	r1, sh1 := pick("replica", replica, f.ck.replicaChannel, "")
	r2, _ := pick("replica", replica, f.ck.replicaChannel, sh1)
	user := func(i int) string { return strconv.Itoa(100 + i) }
	u1, ush := pick("user", user, f.ck.presence, "")
	u2, _ := pick("user", user, f.ck.presence, ush)

	sub1, rec1 := f.subscribe(t, r1)
	sub2, rec2 := f.subscribe(t, r2)
	f.connect(t, u1, r1+" a", time.Minute)
	f.connect(t, u2, r2+" b", time.Minute)
	for _, rec := range []*recorder{rec1, rec2} {
		if got := sortedCopy(rec.waitPresence(t, 2)); !slices.Equal(got, sortedCopy([]string{u1 + " 1", u2 + " 1"})) {
			t.Fatalf("presence changes %v, want both users online", got)
		}
	}
	m := f.send(t, u1, u2, "across")
	for _, rec := range []*recorder{rec1, rec2} {
		if d := rec.waitDeliveries(t, 1)[0]; d.Kind != chat.KindMessage || d.Message != m {
			t.Fatalf("delivery %+v, want %+v", d, m)
		}
	}
	if err := f.s.Typing(f.ctx, u2, u1); err != nil {
		t.Fatal(err)
	}
	if d := rec1.waitDeliveries(t, 2)[1]; d.Kind != chat.KindTyping || d.By != u2 {
		t.Fatalf("typing delivery %+v", d)
	}
	if _, err := f.s.MarkRead(f.ctx, u2, u1, 0, r2+" b"); err != nil {
		t.Fatal(err)
	}
	if d := rec1.waitDeliveries(t, 3)[2]; d.Kind != chat.KindReceipt || d.By != u2 || d.Read != 1 {
		t.Fatalf("receipt on %s: %+v", r1, d)
	}
	ds := rec2.waitDeliveries(t, 3)
	if ds[1].Kind != chat.KindReceipt || ds[2].Kind != chat.KindUnread || ds[2].Unread != 0 {
		t.Fatalf("receipt and count on %s: %+v", r2, ds[1:])
	}
	f.disconnect(t, u2, r2+" b")
	for _, rec := range []*recorder{rec1, rec2} {
		if got := rec.waitPresence(t, 3)[2]; got != u2+" 0" {
			t.Fatalf("presence change %q, want %s offline", got, u2)
		}
	}
	for _, sub := range []*Subscriber{sub1, sub2} {
		barrier(t, sub)
		if sub.LastCanary().IsZero() {
			t.Fatal("a canary came back, but LastCanary is zero")
		}
	}
	if d, _ := rec1.snapshot(); len(d) != 3 {
		t.Fatalf("%s got %d deliveries, want 3", r1, len(d))
	}
	if d, _ := rec2.snapshot(); len(d) != 3 {
		t.Fatalf("%s got %d deliveries, want 3", r2, len(d))
	}
}

// TestUnreadExactUnderInterleaving: two users send to each other and to
// others and read, at random seqs, through two Stores (two replicas) at
// once. Afterwards Unread and Inbox agree with History on every count, and
// the unread index (on a cluster, the hints, once Unread has dropped spent
// ones) names exactly the conversations with unread messages.
func TestUnreadExactUnderInterleaving(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	other := f.r.NewClient(t, "", nil)
	t.Cleanup(func() { other.Close() })
	s2 := New(other, Config{Prefix: f.r.Prefix, Now: f.clock.Now, Logger: slog.New(slog.NewTextHandler(f.log, nil))})
	t.Cleanup(s2.Close)
	stores := []*Store{f.s, s2}
	users := []string{"23", "43"}
	peers := []string{"23", "43", "65", "alice"}
	const workers, each = 8, 40
	errs := make(chan error, workers*each)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(w), 7))
			s := stores[w%2]
			for i := range each {
				u := users[rnd.IntN(len(users))]
				p := peers[rnd.IntN(len(peers))]
				var err error
				switch rnd.IntN(3) {
				case 0:
					_, _, err = s.Send(f.ctx, chat.SendRequest{From: u, To: p, Text: fmt.Sprintf("%d-%d", w, i)})
				case 1:
					_, _, err = s.Send(f.ctx, chat.SendRequest{From: p, To: u, Text: fmt.Sprintf("%d-%d", w, i)})
				default:
					_, err = s.MarkRead(f.ctx, u, p, rnd.Int64N(30), "")
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, u := range append(users, "65", "alice") {
		want := map[string]int64{}
		for _, p := range peers {
			page, err := f.s.History(f.ctx, u, p, 0, 1)
			if err != nil {
				t.Fatal(err)
			}
			if page.Unread > 0 {
				want[p] = page.Unread
			}
			f.views(t, u, p) // Unread and Inbox say what History says
		}
		got, err := f.s.Unread(f.ctx, u)
		if err != nil || !maps.Equal(got, want) {
			t.Fatalf("Unread(%s) = %v, %v; want %v", u, got, err, want)
		}
		index, err := f.r.Client.HKeys(f.ctx, f.unreadIndexKey(u)).Result()
		if err != nil {
			t.Fatal(err)
		}
		var wantIndex []string
		for p := range want {
			wantIndex = append(wantIndex, chat.ConvKey(u, p))
		}
		if slices.Sort(index); !slices.Equal(index, sortedCopy(wantIndex)) {
			t.Fatalf("unread index of %s = %q, want %q", u, index, sortedCopy(wantIndex))
		}
	}
}

// roundTrips is a go-redis hook that notes each round trip: a command, or
// "pipeline" and the pipeline's commands.
type roundTrips struct {
	mu    sync.Mutex
	trips []string
}

func (h *roundTrips) add(trip string) {
	h.mu.Lock()
	h.trips = append(h.trips, trip)
	h.mu.Unlock()
}

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.add(cmd.Name())
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		trip := "pipeline"
		for _, cmd := range cmds {
			trip += " " + cmd.Name()
		}
		h.add(trip)
		return next(ctx, cmds)
	}
}

// take returns the round trips seen since the last take.
func (h *roundTrips) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.trips
	h.trips = nil
	return out
}

// TestClusterRoundTrips counts the round trips of the operations a client
// request causes on a cluster: a send or a read is three (the
// conversation's slot, the users' slots, the deliveries), the others one
// or two.
func TestClusterRoundTrips(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.clusterLayout(t)
	c := f.r.NewClient(t, "", nil)
	t.Cleanup(func() { c.Close() })
	cmds := &roundTrips{}
	c.AddHook(cmds)
	s := New(c, Config{Prefix: f.r.Prefix, Now: f.clock.Now, Logger: slog.New(slog.NewTextHandler(f.log, nil))})
	t.Cleanup(s.Close)
	ctx := f.ctx
	f.connect(t, "43", "r1 c1", time.Minute)
	f.connect(t, "23", "r2 c1", time.Minute)
	for _, op := range []struct {
		name string
		run  func() error
		want []string
	}{
		{"Send", func() error {
			_, _, err := s.Send(ctx, chat.SendRequest{From: "23", To: "43", Text: "hi"})
			return err
		}, []string{"evalsha", "pipeline evalsha evalsha", "pipeline spublish spublish"}},
		{"Send duplicate", func() error {
			_, _, err := s.Send(ctx, chat.SendRequest{From: "23", To: "43", Text: "hi", ClientID: "same"})
			return err
		}, []string{"evalsha", "pipeline evalsha evalsha", "pipeline spublish spublish"}},
		{"History", func() error {
			_, err := s.History(ctx, "43", "23", 0, 0)
			return err
		}, []string{"evalsha"}},
		{"MarkRead", func() error {
			_, err := s.MarkRead(ctx, "43", "23", 1, "")
			return err
		}, []string{"evalsha", "pipeline evalsha evalsha", "pipeline spublish spublish spublish"}},
		{"Unread", func() error {
			_, err := s.Unread(ctx, "43")
			return err
		}, []string{"hkeys", "pipeline evalsha"}},
		{"Inbox", func() error {
			_, _, err := s.Inbox(ctx, "43", 0)
			return err
		}, []string{"zrevrange", "pipeline evalsha"}},
		{"Typing", func() error { return s.Typing(ctx, "23", "43") }, []string{"zrangebyscore", "spublish"}},
	} {
		if err := op.run(); err != nil { // loads the scripts where needed
			t.Fatalf("%s: %v", op.name, err)
		}
		cmds.take()
		if err := op.run(); err != nil {
			t.Fatalf("%s: %v", op.name, err)
		}
		if got := cmds.take(); !slices.Equal(got, op.want) {
			t.Fatalf("%s sent %q, want %q", op.name, got, op.want)
		}
	}
}
