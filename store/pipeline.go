package store

import (
	"context"
	"errors"
	"sync"
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
// One goroutine, started by the first send and stopped by close, runs the
// pipelines; the queue is bounded (a caller waits for room, or for its
// context). With Config.Wait, a pipeline ends with one fence and one WAIT
// for all its sends (see wait.go), so waiting for replicas costs a batch,
// not each send, one replica round trip.
type batcher struct {
	rdb    redis.UniversalClient
	script *redis.Script
	// wait, when not nil, runs a batch and has replicas acknowledge it.
	wait func(ctx context.Context, script *redis.Script, calls []call) []*redis.Cmd
	// pace decides how long a pipeline waits for company; the loop owns it.
	pace pacer

	start   sync.Once
	calls   chan *batchCall
	quit    chan struct{} // closed by close
	stopped chan struct{} // closed when the loop has ended
	stop    sync.Once
}

// batchCall is one queued script call and, once done is closed, its reply.
type batchCall struct {
	ctx    context.Context
	queued time.Time // when run queued it
	keys   []string
	args   []any
	res    any
	err    error
	done   chan struct{}
}

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
		pace:  pacer{delay: delay, window: rateWindow, start: time.Now()},
		calls: make(chan *batchCall, queueLen),
		quit:  make(chan struct{}), stopped: make(chan struct{})}
}

// run queues one call and waits for its reply or for ctx.
func (b *batcher) run(ctx context.Context, keys []string, args ...any) (any, error) {
	b.start.Do(func() { go b.loop() })
	c := &batchCall{ctx: ctx, queued: time.Now(), keys: keys, args: args, done: make(chan struct{})}
	select {
	case b.calls <- c:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.quit:
		return nil, ErrClosed
	}
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		// The call may still run; its idempotency key makes a retry safe.
		return nil, ctx.Err()
	case <-b.stopped:
		select {
		case <-c.done:
			return c.res, c.err
		default:
			return nil, ErrClosed
		}
	}
}

// loop sends the queued calls, a pipeline at a time, until close.
func (b *batcher) loop() {
	defer close(b.stopped)
	batch := make([]*batchCall, 0, maxBatch)
	p := &b.pace
	var timer *time.Timer
	for {
		select {
		case <-b.quit:
			return
		case c := <-b.calls:
			batch = append(batch[:0], c)
		}
	more:
		for len(batch) < maxBatch {
			select {
			case c := <-b.calls:
				batch = append(batch, c)
			default:
				break more
			}
		}
		if wait := p.wait(batch[0].queued, time.Now()); wait > 0 && len(batch) < fillBatch {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
		company:
			for len(batch) < fillBatch {
				select {
				case c := <-b.calls:
					batch = append(batch, c)
				case <-timer.C:
					break company
				case <-b.quit:
					break company // this batch still runs; the loop ends next
				}
			}
			timer.Stop()
		}
		p.sent(len(batch), time.Now())
		b.exec(batch)
		clear(batch)
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

// close stops the loop after the pipeline in flight; calls still queued
// fail with ErrClosed. It returns when the loop has ended.
func (b *batcher) close() {
	b.stop.Do(func() { close(b.quit) })
	b.start.Do(func() { close(b.stopped) }) // no loop was started: none will be
	<-b.stopped
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
