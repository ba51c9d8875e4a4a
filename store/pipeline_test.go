package store

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

var echoScript = redis.NewScript(`return ARGV[1]`)

// gate counts the script calls in each round trip to Redis and can hold
// the first one until released.
type gate struct {
	mu      sync.Mutex
	sizes   []int
	hold    chan struct{} // nil: hold nothing
	holding chan struct{} // closed once the first round trip is held
}

func (g *gate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *gate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		return g.trip(ctx, []redis.Cmder{cmd}, func() error { return next(ctx, cmd) })
	}
}

func (g *gate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		return g.trip(ctx, cmds, func() error { return next(ctx, cmds) })
	}
}

func (g *gate) trip(_ context.Context, cmds []redis.Cmder, next func() error) error {
	n := 0
	for _, c := range cmds {
		if c.Name() == "evalsha" || c.Name() == "eval" {
			n++
		}
	}
	if n == 0 {
		return next()
	}
	g.mu.Lock()
	g.sizes = append(g.sizes, n)
	hold := g.hold
	g.hold = nil
	g.mu.Unlock()
	if hold != nil {
		close(g.holding)
		<-hold
	}
	return next()
}

func (g *gate) trips() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int(nil), g.sizes...)
}

func gatedBatcher(t *testing.T, delay time.Duration) (*batcher, *gate) {
	t.Helper()
	f := newFixture(t, Config{})
	c := f.r.NewClient(t, "", nil)
	t.Cleanup(func() { c.Close() })
	g := &gate{}
	c.AddHook(g)
	if err := echoScript.Load(t.Context(), c).Err(); err != nil {
		t.Fatal(err)
	}
	b := newBatcher(c, echoScript, delay, nil)
	t.Cleanup(b.close)
	return b, g
}

func runEcho(t *testing.T, b *batcher, arg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	res, err := b.run(ctx, []string{"k"}, arg)
	if err != nil || res != arg {
		t.Errorf("run(%q) = %v, %v", arg, res, err)
	}
}

// TestPacerWaitsOnlyUnderLoad: a pipeline waits for company only while
// sends arrive fast enough to bring minCompany others within the delay,
// and never past the delay after its first send was queued.
func TestPacerWaitsOnlyUnderLoad(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const delay = 500 * time.Microsecond
	p := pacer{delay: delay, start: t0}
	if w := p.wait(t0, t0); w > 0 {
		t.Fatalf("the first send waits %v", w)
	}
	// 2,000 sends a second bring one other within 500 µs: nothing waits.
	now := t0
	for range 100 {
		now = now.Add(500 * time.Microsecond)
		p.sent(1, now)
		if w := p.wait(now, now); w > 0 {
			t.Fatalf("at 2,000 sends/s a send waits %v (rate %.0f)", w, p.rate)
		}
	}
	// 20,000 a second bring ten: a pipeline waits until its first send
	// has waited the delay.
	for range 1000 {
		now = now.Add(50 * time.Microsecond)
		p.sent(1, now)
	}
	if w := p.wait(now, now); w != delay {
		t.Fatalf("at 20,000 sends/s a fresh send waits %v, want %v (rate %.0f)", w, delay, p.rate)
	}
	if w := p.wait(now.Add(-200*time.Microsecond), now); w != 300*time.Microsecond {
		t.Fatalf("a send queued 200 µs ago waits %v more, want 300µs", w)
	}
	if w := p.wait(now.Add(-time.Millisecond), now); w > 0 {
		t.Fatalf("a send queued 1 ms ago waits %v more", w)
	}
	// After a quiet second the rate has fallen: the next send goes at once.
	now = now.Add(time.Second)
	if w := p.wait(now, now); w > 0 {
		t.Fatalf("after a quiet second a send waits %v (rate %.0f)", w, p.rate)
	}
	// With no delay, nothing ever waits.
	p = pacer{start: t0}
	for i := range 1000 {
		p.sent(1, t0.Add(time.Duration(i)*time.Microsecond))
	}
	if w := p.wait(now, now); w > 0 {
		t.Fatalf("with no delay a send waits %v", w)
	}
}

// TestBatchDelayGathersCompanyUnderLoad: once sends have been arriving
// fast, a send waits for company: one queued a moment after it shares its
// round trip.
func TestBatchDelayGathersCompanyUnderLoad(t *testing.T) {
	t.Parallel()
	b, g := gatedBatcher(t, 2*time.Second)
	// Load: hold the first round trip while four more sends queue.
	release := make(chan struct{})
	g.hold, g.holding = release, make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { runEcho(t, b, "first") })
	<-g.holding
	for _, arg := range []string{"q1", "q2", "q3", "q4"} {
		wg.Go(func() { runEcho(t, b, arg) })
	}
	for len(b.calls) < 4 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if got := g.trips(); len(got) != 2 || got[0] != 1 || got[1] != 4 {
		t.Fatalf("round trips %v, want [1 4]", got)
	}
	time.Sleep(2 * rateWindow) // five sends in a window: a rate that waits for company
	// Now a send is held for company, and one queued 100 ms later joins it.
	wg.Go(func() { runEcho(t, b, "early") })
	time.Sleep(100 * time.Millisecond)
	runEcho(t, b, "late")
	wg.Wait()
	if got := g.trips(); len(got) != 3 || got[2] != 2 {
		t.Fatalf("round trips %v, want a third of both sends", got)
	}
}
