package store

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

var echoScript = redis.NewScript(`return ARGV[1]`)

// countedBatcher returns a batcher of echoScript with the given delay,
// whose pacer sees sends arriving at rate a second, and the record of its
// round trips. The rate is fixed: its window never ends.
func countedBatcher(t *testing.T, delay time.Duration, rate float64) (*batcher, *roundTrips) {
	t.Helper()
	f := newFixture(t, Config{})
	c := f.r.NewClient(t, "", nil)
	t.Cleanup(func() { c.Close() })
	g := &roundTrips{}
	c.AddHook(g)
	if err := echoScript.Load(t.Context(), c).Err(); err != nil {
		t.Fatal(err)
	}
	g.take()
	b := newBatcher(c, echoScript, delay, nil)
	b.pace.rate, b.pace.window = rate, 24*time.Hour // before the loop starts, which owns it
	t.Cleanup(b.close)
	return b, g
}

// scriptTrips returns the round trips g saw that ran scripts, leaving out
// the handshakes of new connections.
func scriptTrips(g *roundTrips) []string {
	return slices.DeleteFunc(g.take(), func(trip string) bool { return !strings.Contains(trip, "evalsha") })
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

// TestBatchSlowSendsAreNotHeld: at a rate too low to bring company within
// the delay, each send goes out at once, though the delay is an hour.
func TestBatchSlowSendsAreNotHeld(t *testing.T) {
	t.Parallel()
	b, g := countedBatcher(t, time.Hour, 1.0/3600)
	for _, arg := range []string{"a", "b", "c"} {
		runEcho(t, b, arg)
	}
	if got := scriptTrips(g); !slices.Equal(got, []string{"evalsha", "evalsha", "evalsha"}) {
		t.Fatalf("round trips %q, want three of one send", got)
	}
}

// TestBatchDelayGathersCompanyUnderLoad: while sends arrive fast, a send
// waits for company, and one queued a moment after it shares its round
// trip.
func TestBatchDelayGathersCompanyUnderLoad(t *testing.T) {
	t.Parallel()
	b, g := countedBatcher(t, 2*time.Second, 1e6)
	var wg sync.WaitGroup
	wg.Go(func() { runEcho(t, b, "early") })
	time.Sleep(100 * time.Millisecond)
	runEcho(t, b, "late")
	wg.Wait()
	if got := scriptTrips(g); !slices.Equal(got, []string{"pipeline evalsha evalsha"}) {
		t.Fatalf("round trips %q, want one of both sends", got)
	}
}

// TestPacerWaitsOnlyUnderLoad: a pipeline waits for company only while
// sends arrive fast enough to bring minCompany others within the delay,
// and never past the delay after its first send was queued.
func TestPacerWaitsOnlyUnderLoad(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const delay = 500 * time.Microsecond
	p := pacer{delay: delay, window: rateWindow, start: t0}
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
	p = pacer{window: rateWindow, start: t0}
	for i := range 1000 {
		p.sent(1, t0.Add(time.Duration(i)*time.Microsecond))
	}
	if w := p.wait(now, now); w > 0 {
		t.Fatalf("with no delay a send waits %v", w)
	}
}

// TestBatchCallGivenUpBeforeItsPipelineDoesNotRun: a send whose caller
// gives up while it is still queued is left out of the next pipeline.
func TestBatchCallGivenUpBeforeItsPipelineDoesNotRun(t *testing.T) {
	t.Parallel()
	b, g := countedBatcher(t, 0, 0)
	b.lead <- struct{}{} // a pipeline in flight, as far as callers can tell
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := b.run(ctx, []string{"k"}, "given up"); err != context.DeadlineExceeded {
		t.Fatalf("run with an expired context: %v, want DeadlineExceeded", err)
	}
	<-b.lead
	runEcho(t, b, "next")
	if got := scriptTrips(g); !slices.Equal(got, []string{"evalsha"}) {
		t.Fatalf("round trips %q, want one of the send still waited for", got)
	}
}

// TestBatchCloseFailsQueuedCalls: Close lets the pipeline in flight end,
// fails what is still queued, and no pipeline runs after it.
func TestBatchCloseFailsQueuedCalls(t *testing.T) {
	t.Parallel()
	b, g := countedBatcher(t, 0, 0)
	b.lead <- struct{}{}
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := b.run(t.Context(), []string{"k"}, "queued")
			errs <- err
		}()
	}
	for len(b.calls) < 3 {
		time.Sleep(time.Millisecond)
	}
	closed := make(chan struct{})
	go func() { b.close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while a pipeline was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	<-b.lead
	<-closed
	for range 3 {
		if err := <-errs; err != ErrClosed {
			t.Fatalf("queued call: %v, want ErrClosed", err)
		}
	}
	if _, err := b.run(t.Context(), []string{"k"}, "after"); err != ErrClosed {
		t.Fatalf("call after Close: %v, want ErrClosed", err)
	}
	if got := scriptTrips(g); len(got) != 0 {
		t.Fatalf("round trips %q after Close, want none", got)
	}
}

// TestBatchQueueOfGivenUpCallsIsCleared: when every caller of a full
// queue has given up, with nobody left to lead, the next send still goes
// out.
func TestBatchQueueOfGivenUpCallsIsCleared(t *testing.T) {
	t.Parallel()
	b, g := countedBatcher(t, 0, 0)
	b.lead <- struct{}{} // Redis stalls under a pipeline in flight
	var wg sync.WaitGroup
	for range queueLen {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
			defer cancel()
			if _, err := b.run(ctx, []string{"k"}, "given up"); err != context.DeadlineExceeded {
				t.Errorf("run with an expired context: %v", err)
			}
		})
	}
	wg.Wait()
	<-b.lead
	if n := len(b.calls); n != queueLen {
		t.Fatalf("%d calls queued, want a full queue of %d", n, queueLen)
	}
	runEcho(t, b, "next")
	if got := scriptTrips(g); !slices.Equal(got, []string{"evalsha"}) {
		t.Fatalf("round trips %q, want one of the send still waited for", got)
	}
}
