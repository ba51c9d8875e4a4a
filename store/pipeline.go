package store

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrClosed is returned by a send on a Store that has been closed.
var ErrClosed = errors.New("store: closed")

// batcher runs the send script for concurrent callers in shared pipelines:
// while one pipeline is in flight, the sends that arrive queue up and go
// out together in the next, which saves a write and a read per message on
// both sides of the connection. Each send is still one EVALSHA and one atomic script.
//
// Under load it also waits a moment for company: while sends arrive fast
// enough to bring several others within delay, a pipeline waits for them
// until its first send has waited delay since it was queued (or the
// pipeline is full enough), so that each of Redis's reads and writes
// carries several sends: at a few thousand sends a second, most of
// Redis's time per send is spent on those. At a lower rate nothing waits.
//
// The callers run the pipelines themselves, one at a time: a caller whose
// send is queued waits for its reply or for the lead, and the one that
// takes the lead runs a pipeline of what is queued, its own send or
// others', then passes the lead on. A send that finds nothing in flight so
// goes out on its caller's goroutine, with no hand-off to another and back.
// The queue is bounded (a caller waits for room, or for its context). With
// Config.Wait, a pipeline ends with one fence and one WAIT for all its
// sends (see wait.go), so waiting for replicas costs a batch, not each
// send, one replica round trip.
type batcher struct {
	rdb    redis.UniversalClient
	script *redis.Script
	// wait, when not nil, runs a batch and has replicas acknowledge it.
	wait func(ctx context.Context, script *redis.Script, calls []call) []*redis.Cmd

	// lead holds a value while a caller runs a pipeline; close takes it
	// for good. Its holder owns pace, batch and timer.
	lead  chan struct{}
	pace  pacer // how long a pipeline waits for company
	batch []*batchCall
	timer *time.Timer

	calls chan *batchCall
	quit  chan struct{} // closed by close
	stop  sync.Once
}

// batchCall is one queued script call and, once done is closed, its reply.
type batchCall struct {
	ctx    context.Context
	queued time.Time // when run queued it
	keys   []string
	args   []any
	// state is queued, then taken by a pipeline or given up by its caller.
	state atomic.Int32
	res   any
	err   error
	done  chan struct{}
}

// batchCall states.
const (
	callQueued int32 = iota
	callTaken
	callGivenUp
)

// maxBatch bounds one pipeline; queueLen bounds the calls waiting for one.
const (
	maxBatch = 256
	queueLen = 4 * maxBatch
)

// newBatcher returns a batcher of script calls on rdb, whose sends wait up
// to delay for company under load (0: never); wait, when not nil, runs a
// batch instead, and has replicas acknowledge it (Store.evalWait).
func newBatcher(rdb redis.UniversalClient, script *redis.Script, delay time.Duration,
	wait func(ctx context.Context, script *redis.Script, calls []call) []*redis.Cmd) *batcher {
	return &batcher{rdb: rdb, script: script, wait: wait,
		lead:  make(chan struct{}, 1),
		pace:  pacer{delay: delay, window: rateWindow, start: time.Now()},
		batch: make([]*batchCall, 0, maxBatch),
		calls: make(chan *batchCall, queueLen),
		quit:  make(chan struct{})}
}

// run queues one call and waits for its reply or for ctx, running
// pipelines while it holds the lead.
func (b *batcher) run(ctx context.Context, keys []string, args ...any) (any, error) {
	if b.closed() {
		return nil, ErrClosed
	}
	c := &batchCall{ctx: ctx, queued: time.Now(), keys: keys, args: args, done: make(chan struct{})}
	for queued := false; !queued; {
		select {
		case b.calls <- c:
			queued = true
		case b.lead <- struct{}{}:
			// A free lead is taken while waiting for room: when every
			// caller of a full queue has given up, nobody else is left
			// to empty it.
			b.drive()
			<-b.lead
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-b.quit:
			return nil, ErrClosed
		}
	}
	for {
		select {
		case <-c.done:
			return c.res, c.err
		default:
		}
		if ctx.Err() != nil {
			return nil, b.giveUp(c)
		}
		select {
		case <-c.done:
			return c.res, c.err
		case b.lead <- struct{}{}:
			b.drive()
			<-b.lead
		case <-ctx.Done():
			return nil, b.giveUp(c)
		case <-b.quit:
			b.failQueued()
			select {
			case <-c.done: // failed just now, or in the pipeline in flight
				return c.res, c.err
			case <-ctx.Done():
				return nil, b.giveUp(c)
			}
		}
	}
}

// giveUp marks c given up by its caller, whose context has ended, and
// returns the context's error. Unless a pipeline has taken it, it will not
// run; if one has, it may still be stored, and its idempotency key makes a
// retry safe.
func (b *batcher) giveUp(c *batchCall) error {
	c.state.CompareAndSwap(callQueued, callGivenUp)
	return c.ctx.Err()
}

func (b *batcher) closed() bool {
	select {
	case <-b.quit:
		return true
	default:
		return false
	}
}

// drive runs one pipeline of the calls queued, if any. Its caller holds
// the lead.
func (b *batcher) drive() {
	if b.closed() {
		b.failQueued()
		return
	}
	batch := b.batch[:0]
	defer func() { clear(batch); b.batch = batch[:0] }()
	take := func(c *batchCall) {
		if c.state.CompareAndSwap(callQueued, callTaken) {
			batch = append(batch, c)
		} else {
			close(c.done) // given up: nobody waits for it
		}
	}
more:
	for len(batch) < maxBatch {
		select {
		case c := <-b.calls:
			take(c)
		default:
			break more
		}
	}
	if len(batch) == 0 {
		return
	}
	p := &b.pace
	if wait := p.wait(batch[0].queued, time.Now()); wait > 0 && len(batch) < fillBatch {
		if b.timer == nil {
			b.timer = time.NewTimer(wait)
		} else {
			b.timer.Reset(wait)
		}
	company:
		for len(batch) < fillBatch {
			select {
			case c := <-b.calls:
				take(c)
			case <-b.timer.C:
				break company
			case <-b.quit:
				break company // this batch still runs
			}
		}
		b.timer.Stop()
	}
	p.sent(len(batch), time.Now())
	b.exec(batch)
}

// failQueued fails every call still queued with ErrClosed.
func (b *batcher) failQueued() {
	for {
		select {
		case c := <-b.calls:
			c.res, c.err = nil, ErrClosed
			close(c.done)
		default:
			return
		}
	}
}

// A pipeline waits for company only while sends arrive fast enough to
// bring minCompany others within the delay, and only until it holds
// fillBatch sends; the arrival rate is measured over rateWindow.
const (
	minCompany = 4
	fillBatch  = 16
	rateWindow = 20 * time.Millisecond
)

// pacer decides how long a pipeline waits for company, from the rate at
// which sends have been arriving. The batcher's loop owns it.
type pacer struct {
	delay  time.Duration // the longest a send waits; 0: never
	window time.Duration // over which the rate is measured
	start  time.Time     // of the current window
	sends  int           // in the current window
	rate   float64       // sends per second over the last window
}

// sent counts n sends going out at now.
func (p *pacer) sent(n int, now time.Time) {
	p.sends += n
	if elapsed := now.Sub(p.start); elapsed >= p.window {
		p.rate = float64(p.sends) / elapsed.Seconds()
		p.start, p.sends = now, 0
	}
}

// wait returns how much longer, at now, a pipeline whose first send was
// queued at first waits for company; 0 or less: none.
func (p *pacer) wait(first, now time.Time) time.Duration {
	p.sent(0, now) // after a quiet spell, the rate falls before anything waits
	if p.delay <= 0 || p.rate*p.delay.Seconds() < minCompany {
		return 0
	}
	return p.delay - now.Sub(first)
}

// close lets the pipeline in flight finish and fails the calls still
// queued with ErrClosed; later calls fail at once. It keeps the lead, so
// no pipeline runs after it returns.
func (b *batcher) close() {
	b.stop.Do(func() {
		close(b.quit)
		b.lead <- struct{}{}
		b.failQueued()
	})
}

func (b *batcher) exec(batch []*batchCall) {
	if b.wait != nil {
		calls := make([]call, len(batch))
		for i, c := range batch {
			calls[i] = call{keys: c.keys, args: c.args}
		}
		for i, cmd := range b.wait(context.WithoutCancel(batch[0].ctx), b.script, calls) {
			batch[i].res, batch[i].err = cmd.Val(), cmd.Err()
			close(batch[i].done)
		}
		return
	}
	if len(batch) == 1 {
		c := batch[0]
		c.res, c.err = b.script.Run(c.ctx, b.rdb, c.keys, c.args...).Result()
		close(c.done)
		return
	}
	// The pipeline outlives any one caller's context: a caller that gives
	// up does not cancel the others.
	ctx := context.WithoutCancel(batch[0].ctx)
	cmds := make([]*redis.Cmd, len(batch))
	_, _ = b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, c := range batch {
			cmds[i] = b.script.EvalSha(ctx, p, c.keys, c.args...)
		}
		return nil
	})
	for i, c := range batch {
		c.res, c.err = cmds[i].Result()
		if c.err != nil && redis.HasErrorPrefix(c.err, "NOSCRIPT") {
			// Redis lost its scripts (a restart): EVAL loads it again.
			c.res, c.err = b.script.Eval(ctx, b.rdb, c.keys, c.args...).Result()
		}
		close(c.done)
	}
}
