package store

import (
	"context"
	"errors"
	"sync"

	"github.com/redis/go-redis/v9"
)

// ErrClosed is returned by a send on a Store that has been closed.
var ErrClosed = errors.New("store: closed")

// batcher runs the send script for concurrent callers in shared pipelines:
// while one pipeline is in flight, the sends that arrive queue up and go
// out together in the next. A lone send goes out at once, so this adds no
// delay; under load it saves a write and a read per message on both sides
// of the connection. Each send is still one EVALSHA and one atomic script.
//
// One goroutine, started by the first send and stopped by close, runs the
// pipelines; the queue is bounded (a caller waits for room, or for its
// context). With Config.Wait, a pipeline ends with one fence and one WAIT
// for all its sends (see wait.go), so waiting for replicas costs a batch,
// not each send, one replica round trip.
type batcher struct {
	rdb    redis.UniversalClient
	script *redis.Script
	wait   func(ctx context.Context, script *redis.Script, calls []call) []*redis.Cmd // nil: no WAIT

	start   sync.Once
	calls   chan *batchCall
	quit    chan struct{} // closed by close
	stopped chan struct{} // closed when the loop has ended
	stop    sync.Once
}

// batchCall is one queued script call and, once done is closed, its reply.
type batchCall struct {
	ctx  context.Context
	keys []string
	args []any
	res  any
	err  error
	done chan struct{}
}

// maxBatch bounds one pipeline; queueLen bounds the calls waiting for one.
const (
	maxBatch = 256
	queueLen = 4 * maxBatch
)

// newBatcher returns a batcher of script calls on rdb; wait, when not nil,
// runs a batch instead, and has replicas acknowledge it (Store.evalWait).
func newBatcher(rdb redis.UniversalClient, script *redis.Script,
	wait func(ctx context.Context, script *redis.Script, calls []call) []*redis.Cmd) *batcher {
	return &batcher{rdb: rdb, script: script, wait: wait, calls: make(chan *batchCall, queueLen),
		quit: make(chan struct{}), stopped: make(chan struct{})}
}

// run queues one call and waits for its reply or for ctx.
func (b *batcher) run(ctx context.Context, keys []string, args ...any) (any, error) {
	b.start.Do(func() { go b.loop() })
	c := &batchCall{ctx: ctx, keys: keys, args: args, done: make(chan struct{})}
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
		b.exec(batch)
		clear(batch)
	}
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
