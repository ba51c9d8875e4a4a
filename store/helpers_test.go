package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/internal/logbuf"
	"github.com/chatd/chatd/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// clock is a controllable Config.Now. It is safe for concurrent use.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// logBuf collects what a Store logs, for tests that expect a warning.
type logBuf = logbuf.Buffer

// fixture is one test's Redis and a Store over it, with a controllable clock.
type fixture struct {
	r     *redistest.Redis
	s     *Store
	k     keys        // the seed's layout, on a single Redis
	ck    clusterKeys // the Redis Cluster layout
	clock *clock
	log   *logBuf
	ctx   context.Context
}

// newFixture returns a Store on a fresh Redis (miniredis, REDIS_URL's or
// REDIS_CLUSTER_URL's with a per-test prefix). cfg.Prefix is always the
// test's; a nil cfg.Now is the fixture's clock.
func newFixture(t testing.TB, cfg Config) *fixture {
	t.Helper()
	r := redistest.New(t)
	f := &fixture{r: r, k: keys{prefix: r.Prefix}, ck: clusterKeys{prefix: r.Prefix}, clock: newClock(), log: &logBuf{},
		ctx: context.Background()}
	cfg.Prefix = r.Prefix
	if cfg.Now == nil {
		cfg.Now = f.clock.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	f.s = New(r.Client, cfg)
	t.Cleanup(f.s.Close)
	return f
}

// cluster reports whether the Store keeps the Redis Cluster layout.
func (f *fixture) cluster() bool { return f.s.cl != nil }

// seedLayout skips a test that is about the seed's own layout (its unread
// hash, or data its msgsend writes), which only a single Redis keeps.
func (f *fixture) seedLayout(t testing.TB) {
	t.Helper()
	if f.cluster() {
		t.Skip("about the seed's layout (its unread hash, its msgsend), which the Redis Cluster layout does not keep")
	}
}

// The keys of the layout the Store keeps, for tests that look at Redis.

func (f *fixture) convKey(conv string) string {
	if f.cluster() {
		return f.ck.conv(conv)
	}
	return f.k.conv(conv)
}

func (f *fixture) readKey(conv string) string {
	if f.cluster() {
		return f.ck.read(conv)
	}
	return f.k.read(conv)
}

func (f *fixture) idemKey(conv, user, id string) string {
	if f.cluster() {
		return f.ck.idem(conv, user, id)
	}
	return f.k.idem(user, id)
}

func (f *fixture) inboxKey(user string) string {
	if f.cluster() {
		return f.ck.inbox(user)
	}
	return f.k.inbox(user)
}

// unreadIndexKey is the single Redis's unread index or the cluster's
// unread hints: both name the conversations with unread messages.
func (f *fixture) unreadIndexKey(user string) string {
	if f.cluster() {
		return f.ck.unreadHints(user)
	}
	return f.k.unreadIndex(user)
}

func (f *fixture) presenceKey(user string) string {
	if f.cluster() {
		return f.ck.presence(user)
	}
	return f.k.presence(user)
}

func (f *fixture) replicaChannel(replica string) string {
	if f.cluster() {
		return f.ck.replicaChannel(replica)
	}
	return f.k.replicaChannel(replica)
}

// publish publishes a payload as the layout does: PUBLISH on a single
// Redis, SPUBLISH on a cluster.
func (f *fixture) publish(t testing.TB, channel, payload string) {
	t.Helper()
	var err error
	if f.cluster() {
		err = f.r.Client.SPublish(f.ctx, channel, payload).Err()
	} else {
		err = f.r.Client.Publish(f.ctx, channel, payload).Err()
	}
	if err != nil {
		t.Fatalf("publishing to %s: %v", channel, err)
	}
}

// wantSeed fails unless the seed's count of user for conv is want ("" for
// none). The Redis Cluster layout has no seed hash: there it fails if
// chatd wrote one.
func (f *fixture) wantSeed(t testing.TB, user, conv, want string) {
	t.Helper()
	if f.cluster() {
		if n, err := f.r.Client.Exists(f.ctx, f.k.unread(user)).Result(); err != nil || n != 0 {
			t.Fatalf("EXISTS %s = %d, %v: the Redis Cluster layout writes no seed hash", f.k.unread(user), n, err)
		}
		return
	}
	if got := f.unreadField(t, user, conv); got != want {
		t.Fatalf("the seed's HGET %s %s = %q, want %q", user, conv, got, want)
	}
}

// send stores a message and fails the test on error.
func (f *fixture) send(t testing.TB, from, to, text string) chat.Message {
	t.Helper()
	m, dup, err := f.s.Send(f.ctx, chat.SendRequest{From: from, To: to, Text: text})
	if err != nil {
		t.Fatalf("Send %s→%s %q: %v", from, to, text, err)
	}
	if dup {
		t.Fatalf("Send %s→%s %q without client id: dup", from, to, text)
	}
	return m
}

// hget returns HGET key field, and "" with ok false when it is absent.
func (f *fixture) hget(t testing.TB, key, field string) (string, bool) {
	t.Helper()
	v, err := f.r.Client.HGet(f.ctx, key, field).Result()
	if errors.Is(err, redis.Nil) {
		return "", false
	}
	if err != nil {
		t.Fatalf("HGET %s %s: %v", key, field, err)
	}
	return v, true
}

// unreadField returns the seed's HGET <prefix><user> <conv>, "" when absent.
func (f *fixture) unreadField(t testing.TB, user, conv string) string {
	t.Helper()
	v, _ := f.hget(t, f.k.unread(user), conv)
	return v
}

// llen returns the length of conversation conv's list.
func (f *fixture) llen(t testing.TB, conv string) int64 {
	t.Helper()
	n, err := f.r.Client.LLen(f.ctx, f.convKey(conv)).Result()
	if err != nil {
		t.Fatalf("LLEN %s: %v", conv, err)
	}
	return n
}

// rawList returns conversation conv's list elements, newest first.
func (f *fixture) rawList(t testing.TB, conv string) []string {
	t.Helper()
	l, err := f.r.Client.LRange(f.ctx, f.convKey(conv), 0, -1).Result()
	if err != nil {
		t.Fatalf("LRANGE %s: %v", conv, err)
	}
	return l
}

// lpush pushes raw elements onto conversation conv's list, as the seed does.
func (f *fixture) lpush(t testing.TB, conv string, elements ...string) {
	t.Helper()
	for _, e := range elements {
		if err := f.r.Client.LPush(f.ctx, f.convKey(conv), e).Err(); err != nil {
			t.Fatalf("LPUSH %s: %v", conv, err)
		}
	}
}

// hset sets a field of user's unread hash, as the seed does.
func (f *fixture) hset(t testing.TB, user, field, value string) {
	t.Helper()
	if f.cluster() {
		t.Fatal("the Redis Cluster layout has no seed hash: skip the test with seedLayout")
	}
	if err := f.r.Client.HSet(f.ctx, f.k.unread(user), field, value).Err(); err != nil {
		t.Fatalf("HSET %s %s: %v", user, field, err)
	}
}

// keysUnder lists every key under the test's prefix, sorted.
func (f *fixture) keysUnder(t testing.TB) []string {
	t.Helper()
	keys, err := redistest.Keys(f.ctx, f.r.Client, f.r.Prefix+"*")
	if err != nil {
		t.Fatalf("SCAN %s*: %v", f.r.Prefix, err)
	}
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = strings.TrimPrefix(k, f.r.Prefix)
	}
	slices.Sort(out)
	return out
}

// expire makes the key at full name key pass its TTL: miniredis is fast
// forwarded by d; a real Redis (where the test gave the key a short TTL) is
// polled until the key is gone.
func (f *fixture) expire(t testing.TB, key string, d time.Duration) {
	t.Helper()
	if f.r.Mini != nil {
		f.r.FastForward(d)
	} else {
		deadline := time.Now().Add(10 * time.Second)
		for {
			n, err := f.r.Client.Exists(f.ctx, key).Result()
			if err != nil {
				t.Fatalf("EXISTS %s: %v", key, err)
			}
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still exists after 10s", key)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if n, err := f.r.Client.Exists(f.ctx, key).Result(); err != nil || n != 0 {
		t.Fatalf("EXISTS %s after expiry = %d, %v; want 0", key, n, err)
	}
}

// wantSeqs fails unless msgs have exactly the seqs want, in order.
func wantSeqs(t testing.TB, msgs []chat.Message, want ...int64) {
	t.Helper()
	got := make([]int64, len(msgs))
	for i, m := range msgs {
		got[i] = m.Seq
	}
	if !slices.Equal(got, want) {
		t.Fatalf("seqs = %v, want %v", got, want)
	}
}

// seqRange returns hi, hi-1, …, lo.
func seqRange(hi, lo int64) []int64 {
	var out []int64
	for s := hi; s >= lo; s-- {
		out = append(out, s)
	}
	return out
}

// recorder is a fake Events: it keeps what arrives and signals each arrival.
type recorder struct {
	mu         sync.Mutex
	deliveries []chat.Delivery
	presence   []string // "user 1" or "user 0"
	resyncs    int
	changed    chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) signal() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) Deliver(d chat.Delivery) {
	r.mu.Lock()
	r.deliveries = append(r.deliveries, d)
	r.mu.Unlock()
	r.signal()
}

func (r *recorder) PresenceChanged(user string, online bool) {
	r.mu.Lock()
	if online {
		r.presence = append(r.presence, user+" 1")
	} else {
		r.presence = append(r.presence, user+" 0")
	}
	r.mu.Unlock()
	r.signal()
}

func (r *recorder) Resync() {
	r.mu.Lock()
	r.resyncs++
	r.mu.Unlock()
	r.signal()
}

func (r *recorder) snapshot() ([]chat.Delivery, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.deliveries), slices.Clone(r.presence)
}

// waitDeliveries waits until at least n deliveries arrived and returns them.
func (r *recorder) waitDeliveries(t testing.TB, n int) []chat.Delivery {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		if d, _ := r.snapshot(); len(d) >= n {
			return d
		}
		select {
		case <-r.changed:
		case <-timeout:
			d, _ := r.snapshot()
			t.Fatalf("got %d deliveries after 10s, want %d: %+v", len(d), n, d)
		}
	}
}

// waitPresence waits until at least n presence changes arrived.
func (r *recorder) waitPresence(t testing.TB, n int) []string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		if _, p := r.snapshot(); len(p) >= n {
			return p
		}
		select {
		case <-r.changed:
		case <-timeout:
			_, p := r.snapshot()
			t.Fatalf("got presence changes %v after 10s, want %d", p, n)
		}
	}
}

// subscribe runs a Subscriber of replica until the test ends and waits
// until it is ready.
func (f *fixture) subscribe(t testing.TB, replica string) (*Subscriber, *recorder) {
	t.Helper()
	rec := newRecorder()
	sub := f.s.Subscribe(replica, rec)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Subscriber(%s).Run: %v", replica, err)
		}
	})
	select {
	case <-sub.Ready():
	case err := <-done:
		t.Fatalf("Subscriber(%s).Run ended before ready: %v", replica, err)
	case <-time.After(10 * time.Second):
		t.Fatalf("Subscriber(%s) not ready after 10s", replica)
	}
	return sub, rec
}

// barrier returns once everything published to sub's channels before it
// has been handed to the Events: the canary travels the same link after it.
func barrier(t testing.TB, sub *Subscriber) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := sub.Canary(ctx); err != nil {
		t.Fatalf("Canary: %v", err)
	}
}

// commands counts the commands a client sends, by name, leaving out the
// handshake go-redis runs on each new connection (HELLO, CLIENT SETINFO,
// AUTH, SELECT): it is paid per connection, not per operation.
type commands struct {
	mu    sync.Mutex
	names []string
}

func (c *commands) add(cmd redis.Cmder) {
	switch name := strings.ToLower(cmd.Name()); name {
	case "hello", "client", "auth", "select":
	default:
		c.names = append(c.names, name)
	}
}

func (c *commands) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *commands) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.mu.Lock()
		c.add(cmd)
		c.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (c *commands) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.mu.Lock()
		for _, cmd := range cmds {
			c.add(cmd)
		}
		c.mu.Unlock()
		return next(ctx, cmds)
	}
}

// take returns the commands seen since the last take.
func (c *commands) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.names
	c.names = nil
	return out
}

// countingStore returns a Store over its own client of f's Redis whose
// commands are counted.
func (f *fixture) countingStore(t testing.TB) (*Store, *commands) {
	t.Helper()
	c := f.r.NewClient(t, "", nil)
	t.Cleanup(func() { c.Close() })
	cmds := &commands{}
	c.AddHook(cmds)
	return New(c, Config{Prefix: f.r.Prefix, Now: f.clock.Now, Logger: slog.New(slog.NewTextHandler(f.log, nil))}), cmds
}

// mustErr fails unless err is target (errors.Is).
func mustErr(t testing.TB, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: err = %v, want %v", what, err, target)
	}
}

// dump returns every key under the test's prefix with its type and value,
// to show that an operation wrote nothing.
func (f *fixture) dump(t testing.TB) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, k := range f.keysUnder(t) {
		key := f.r.Prefix + k
		typ, err := f.r.Client.Type(f.ctx, key).Result()
		if err != nil {
			t.Fatalf("TYPE %s: %v", key, err)
		}
		var v any
		switch typ {
		case "string":
			v, err = f.r.Client.Get(f.ctx, key).Result()
		case "list":
			v, err = f.r.Client.LRange(f.ctx, key, 0, -1).Result()
		case "hash":
			v, err = f.r.Client.HGetAll(f.ctx, key).Result()
		case "set":
			var m []string
			m, err = f.r.Client.SMembers(f.ctx, key).Result()
			slices.Sort(m)
			v = m
		case "zset":
			v, err = f.r.Client.ZRangeWithScores(f.ctx, key, 0, -1).Result()
		}
		if err != nil {
			t.Fatalf("reading %s %s: %v", typ, key, err)
		}
		out[k] = fmt.Sprintf("%s %v", typ, v)
	}
	return out
}
