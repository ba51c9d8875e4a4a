package store

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// LatencyHook returns a go-redis hook that times every command, and every
// pipeline as a whole, and hands the time to observe with a command label
// from a small fixed set ("evalsha", "eval", "ping", "publish", "spublish",
// "hgetall", "script", "pipeline", "other"), fit for a metric's label.
func LatencyHook(observe func(cmd string, d time.Duration)) redis.Hook {
	return latencyHook{observe}
}

type latencyHook struct{ observe func(string, time.Duration) }

// DialHook leaves dialing as it is.
func (latencyHook) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook times one command.
func (l latencyHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		l.observe(commandLabel(cmd.Name()), time.Since(start))
		return err
	}
}

// ProcessPipelineHook times one pipeline as a whole.
func (l latencyHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		l.observe("pipeline", time.Since(start))
		return err
	}
}

// commandLabel keeps the label set small and fixed.
func commandLabel(name string) string {
	switch name {
	case "evalsha", "eval", "ping", "publish", "spublish", "hgetall", "script":
		return name
	}
	return "other"
}

// RunCanary proves the pub/sub link every interval until ctx ends: it
// publishes a nonce to the replica's own channel and waits for it to come
// back, handing each round trip to observe (nil: none). LastCanary tells
// when one last came back; a canary that does not come back is logged.
func (sub *Subscriber) RunCanary(ctx context.Context, interval time.Duration, observe func(time.Duration)) {
	select {
	case <-sub.Ready():
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, interval)
		rtt, err := sub.Canary(cctx)
		cancel()
		switch {
		case err == nil && observe != nil:
			observe(rtt)
		case err != nil && ctx.Err() == nil:
			sub.s.log.Warn("pub/sub canary did not come back", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
