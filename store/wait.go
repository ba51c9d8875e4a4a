package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Waiting for replicas (Config.Wait). Redis answers a write once it is in
// the master's memory; its replicas get it a moment later. A master that
// dies in that moment takes the write with it, and the failover promotes
// a replica without it. WAIT n timeout blocks the connection it is sent on
// until n replicas have acknowledged every write made on that connection
// so far, or the timeout passes, and says how many did. (Precisely: until
// they have the master's replication stream up to where it was after the
// connection's last write; Redis 7.0 counts any command there, newer
// versions only writes.)
//
// So a write that waits is a pipeline on one connection to the master:
// the scripts, then a fence, then WAIT. The fence (SET of keys.fence, in
// the scripts' slot on a cluster) is there because a script does not
// always leave a write of its own: a repeated send finds its idempotency
// record and returns the message an earlier attempt stored, perhaps on
// another connection whose WAIT timed out. WAIT on this connection would cover only the
// writes made on it, and could say yes while that message is still only
// on the master. The fence is a write on this connection after every
// script of the pipeline has run, so it comes after, in the master's one
// replication stream, every write those scripts saw: their own, and the
// earlier attempt's that the idempotency record proves. A replica that
// acknowledges the fence has all of them. This holds for whatever a
// script found already written (an inbox entry, a read position).
//
// When fewer than n replicas acknowledge in time, the write is still on
// the master, and may or may not survive: the caller answers
// `unavailable`, and the client retries with the same id, which runs the
// pipeline again, fence and WAIT included.
//
// Nothing is published about a write before its WAIT has said yes (on a
// single Redis the scripts are told not to publish, and routeScript
// delivers afterwards), so no socket sees a message or a receipt that a
// failover could take back.

// ErrNotReplicated is returned, wrapped, by a write that Redis stored but
// that fewer than Config.Wait replicas acknowledged within
// Config.WaitTimeout. The write may survive a failover or be lost;
// repeating it with the same client id is safe.
var ErrNotReplicated = errors.New("store: not acknowledged by enough replicas")

// fenceTTL is how long a fence stays; only writing it matters.
const fenceTTL = time.Second

// DefaultWaitTimeout is Config.WaitTimeout's default.
const DefaultWaitTimeout = 500 * time.Millisecond

// clusterWaitTries bounds how often a write that waits is sent to the master
// of its slot on a Redis Cluster, and clusterWaitBackoff is the first pause
// between tries (it doubles). A failover takes seconds: the tries ride out
// a redirection or a stale slot map, and a client retries the rest.
const (
	clusterWaitTries   = 4
	clusterWaitBackoff = 100 * time.Millisecond
)

// durability is what a write must have before it is answered.
type durability struct {
	replicas int           // acknowledgements WAIT needs; 0: no WAIT
	timeout  time.Duration // WAIT's timeout
}

// check reads WAIT's reply into the error of a write it covered: nil when
// enough replicas acknowledged it.
func (d durability) check(acked int64, err error) error {
	if err != nil {
		return fmt.Errorf("wait for %d replicas: %w", d.replicas, err)
	}
	if acked < int64(d.replicas) {
		return fmt.Errorf("%w: %d of %d within %v", ErrNotReplicated, acked, d.replicas, d.timeout)
	}
	return nil
}

// ValidateWait checks Config.Wait and Config.WaitTimeout for the Redis
// rdb: replicas must not be negative, and a timeout must leave room within
// the client's read timeout, which bounds the pipeline WAIT runs in (half
// of it at most).
func ValidateWait(rdb redis.UniversalClient, replicas int, timeout time.Duration) error {
	if replicas < 0 {
		return fmt.Errorf("store: %d replicas to wait for: want 0 or more", replicas)
	}
	if replicas == 0 {
		return nil
	}
	if timeout <= 0 {
		return fmt.Errorf("store: wait timeout %v: want a positive duration", timeout)
	}
	var read time.Duration
	switch c := rdb.(type) {
	case *redis.Client:
		read = c.Options().ReadTimeout
	case *redis.ClusterClient:
		read = c.Options().ReadTimeout
	}
	if read > 0 && 2*timeout > read {
		return fmt.Errorf("store: wait timeout %v: want at most half the Redis read timeout (%v; read_timeout in the URL)", timeout, read)
	}
	return nil
}

// CheckReplicas asks each master (the one Redis, or each master of a
// cluster) whether Config.Wait replicas acknowledge its writes within
// Config.WaitTimeout, with a WAIT as a write would. It returns the masters
// that have fewer, with the number that answered, and an error when a
// master does not answer WAIT. With Config.Wait 0 it asks nothing.
func (s *Store) CheckReplicas(ctx context.Context) ([]string, error) {
	if s.dur.replicas == 0 {
		return nil, nil
	}
	var mu sync.Mutex
	var short []string
	check := func(ctx context.Context, node *redis.Client) error {
		n, err := node.Wait(ctx, s.dur.replicas, s.dur.timeout).Result()
		if err != nil {
			return fmt.Errorf("WAIT on %s: %w", node.Options().Addr, err)
		}
		if n < int64(s.dur.replicas) {
			mu.Lock()
			short = append(short, fmt.Sprintf("%s (%d)", node.Options().Addr, n))
			mu.Unlock()
		}
		return nil
	}
	var err error
	if s.cl != nil {
		err = s.cl.rdb.ForEachMaster(ctx, check)
	} else if c, ok := s.rdb.(*redis.Client); ok {
		err = check(ctx, c)
	}
	if err != nil {
		return nil, fmt.Errorf("replicas: %w", err)
	}
	return short, nil
}

// evalAll runs script once per call in one pipeline on rdb (on a cluster,
// go-redis splits it by node and sends to the nodes at once), and returns
// the replies in order. A node that has not loaded the script answers
// NOSCRIPT; those calls run again with EVAL, which loads it.
func evalAll(ctx context.Context, rdb redis.UniversalClient, script *redis.Script, calls []call) []*redis.Cmd {
	cmds := make([]*redis.Cmd, len(calls))
	if len(calls) == 0 {
		return cmds
	}
	_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, cl := range calls {
			cmds[i] = script.EvalSha(ctx, p, cl.keys, cl.args...)
		}
		return nil
	})
	for i, cmd := range cmds {
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			cmds[i] = script.Eval(ctx, rdb, calls[i].keys, calls[i].args...)
		}
	}
	return cmds
}

// evalWait runs script once per call and has Config.Wait replicas
// acknowledge it (see the top of this file). A reply's error is the
// script's, or else the wait's (wrapping ErrNotReplicated when too few
// replicas acknowledged); its value is the script's either way.
func (s *Store) evalWait(ctx context.Context, script *redis.Script, calls []call) []*redis.Cmd {
	if s.cl != nil {
		return s.cl.evalWait(ctx, script, calls)
	}
	out := make([]*redis.Cmd, len(calls))
	todo := make([]int, len(calls))
	for i := range todo {
		todo[i] = i
	}
	// A second round, with EVAL, for the calls Redis answered NOSCRIPT (it
	// lost its scripts: a restart, or a replica promoted).
	for round := 0; round < 2 && len(todo) > 0; round++ {
		var again []int
		cmds, acked, err := pipelineWait(ctx, s.rdb, script, calls, todo, round > 0, s.keys.fence(), s.dur)
		for k, i := range todo {
			cmd := cmds[k]
			if round == 0 && redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
				again = append(again, i)
				continue
			}
			if cmd.Err() == nil {
				if err := s.dur.check(acked, err); err != nil {
					cmd.SetErr(err)
				}
			}
			out[i] = cmd
		}
		todo = again
	}
	return out
}

// pipelineWait sends, in one pipeline on one connection of node, script for
// the calls named by idx (with EVAL when eval is set, else EVALSHA), a
// fence and WAIT. It returns the scripts' replies and WAIT's (the fence's
// error in its place when the fence failed: WAIT then proves nothing).
func pipelineWait(ctx context.Context, node redis.UniversalClient, script *redis.Script, calls []call, idx []int,
	eval bool, fence string, d durability) ([]*redis.Cmd, int64, error) {
	cmds := make([]*redis.Cmd, len(idx))
	var set *redis.StatusCmd
	var wait *redis.Cmd
	_, _ = node.Pipelined(ctx, func(p redis.Pipeliner) error {
		for k, i := range idx {
			if eval {
				cmds[k] = script.Eval(ctx, p, calls[i].keys, calls[i].args...)
			} else {
				cmds[k] = script.EvalSha(ctx, p, calls[i].keys, calls[i].args...)
			}
		}
		set = p.Set(ctx, fence, "1", fenceTTL)
		wait = p.Do(ctx, "wait", d.replicas, d.timeout.Milliseconds())
		return nil
	})
	if err := set.Err(); err != nil {
		return cmds, 0, fmt.Errorf("fence: %w", err)
	}
	acked, err := wait.Int64()
	return cmds, acked, err
}

// evalWait is Store.evalWait on a Redis Cluster: each call goes to the
// master of its slot (its first key's), and each master gets one pipeline
// of its calls, a fence in the first call's slot and WAIT, on one of its
// connections; the masters are asked at once. go-redis's own redirection
// does not apply to a node's client, so a call that fails (MOVED after a
// failover or a slot migration, ASK, CLUSTERDOWN, TRYAGAIN, a master that
// is gone) is sent again after the slot map is reloaded, a few times with
// a pause between; one answered NOSCRIPT (a promoted replica has no
// scripts) is sent again with EVAL. Sending a call again is safe: every
// script is idempotent, and the new pipeline has a fence and WAIT of its
// own.
func (c *cluster) evalWait(ctx context.Context, script *redis.Script, calls []call) []*redis.Cmd {
	out := make([]*redis.Cmd, len(calls))
	eval := make([]bool, len(calls))
	todo := make([]int, len(calls))
	for i := range todo {
		todo[i] = i
	}
	backoff := clusterWaitBackoff
	for try := 0; len(todo) > 0; try++ {
		type group struct {
			node *redis.Client
			idx  []int
		}
		var groups []*group
		byNode := map[*redis.Client]*group{}
		var again []int
		for _, i := range todo {
			node, err := c.rdb.MasterForKey(ctx, calls[i].keys[0])
			if err != nil {
				cmd := redis.NewCmd(ctx)
				cmd.SetErr(err)
				out[i] = cmd
				again = append(again, i)
				continue
			}
			// The calls of one pipeline all EVAL or all EVALSHA.
			g := byNode[node]
			if g == nil || eval[g.idx[0]] != eval[i] {
				g = &group{node: node}
				byNode[node] = g
				groups = append(groups, g)
			}
			g.idx = append(g.idx, i)
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		failed := len(again) > 0 // calls that failed for more than a missing script
		for _, g := range groups {
			wg.Go(func() {
				first := calls[g.idx[0]].keys[0]
				cmds, acked, werr := pipelineWait(ctx, g.node, script, calls, g.idx, eval[g.idx[0]], c.keys.fence(first), c.dur)
				mu.Lock()
				defer mu.Unlock()
				for k, i := range g.idx {
					cmd := cmds[k]
					out[i] = cmd
					switch err := cmd.Err(); {
					case err == nil:
						if err := c.dur.check(acked, werr); err != nil {
							cmd.SetErr(err)
						}
					case redis.HasErrorPrefix(err, "NOSCRIPT") && !eval[i]:
						eval[i] = true
						again = append(again, i)
					default:
						failed = true
						again = append(again, i)
					}
				}
			})
		}
		wg.Wait()
		if len(again) == 0 || try+1 == clusterWaitTries || ctx.Err() != nil {
			break
		}
		todo = again
		if !failed {
			continue // only NOSCRIPT: EVAL at once, on the same masters
		}
		c.rdb.ReloadState(ctx)
		pause(ctx, backoff)
		backoff *= 2
	}
	return out
}
