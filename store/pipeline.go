package store

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// batcher runs the send script for concurrent callers in shared pipelines:
// while one pipeline is in flight, the sends that arrive queue up and go
// out together in the next. A lone send goes out at once, so this adds no
// delay; under load it saves a write and a read per message on both sides
// of the connection. Each send is still one EVALSHA and one atomic script.
type batcher struct {
	rdb    redis.UniversalClient
	script *redis.Script

	mu       sync.Mutex
	queue    []*batchCall
	flushing bool // a flush goroutine is running; it ends when queue is empty
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

// maxBatch bounds one pipeline.
const maxBatch = 256

// run queues one call and waits for its reply or for ctx.
func (b *batcher) run(ctx context.Context, keys []string, args ...any) (any, error) {
	c := &batchCall{ctx: ctx, keys: keys, args: args, done: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, c)
	if !b.flushing {
		b.flushing = true
		go b.flush()
	}
	b.mu.Unlock()
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		// The call may still run; its idempotency key makes a retry safe.
		return nil, ctx.Err()
	}
}

// flush sends queued calls, a pipeline at a time, until none are left.
func (b *batcher) flush() {
	for {
		b.mu.Lock()
		n := min(len(b.queue), maxBatch)
		if n == 0 {
			b.flushing = false
			b.mu.Unlock()
			return
		}
		batch := b.queue[:n:n]
		b.queue = b.queue[n:]
		if len(b.queue) == 0 {
			b.queue = nil
		}
		b.mu.Unlock()
		b.exec(batch)
	}
}

func (b *batcher) exec(batch []*batchCall) {
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
