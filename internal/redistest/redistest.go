// Package redistest gives each test a Redis: an in-process miniredis by
// default, the real Redis named by REDIS_URL, or the Redis Cluster named by
// REDIS_CLUSTER_URL (go-redis's ParseClusterURL form, e.g.
// redis://127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002), with a
// key prefix of the test's own that is deleted when the test ends. The
// same tests run in all three modes; REDIS_CLUSTER_URL wins when both URLs
// are set. A test that needs a single Redis beside the cluster (the source
// of a migration to it) asks NewSingle for one.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Redis is one test's Redis.
type Redis struct {
	// Client talks to it: a *redis.Client, or a *redis.ClusterClient in
	// cluster mode.
	Client redis.UniversalClient
	// Prefix is unique to the test and ends in ':'; every key the test
	// writes must start with it (it is deleted at cleanup).
	Prefix string
	// URL is the address for a separate process or client, without the
	// prefix; in cluster mode, REDIS_CLUSTER_URL.
	URL string
	// Mini is the miniredis server, nil against a real Redis.
	Mini *miniredis.Miniredis
}

// Real reports whether tests run against a real Redis (REDIS_URL or
// REDIS_CLUSTER_URL is set).
func Real() bool { return os.Getenv("REDIS_URL") != "" || Cluster() }

// Cluster reports whether tests run against a Redis Cluster
// (REDIS_CLUSTER_URL is set), where the store keeps its Redis Cluster
// layout instead of the seed's.
func Cluster() bool { return os.Getenv("REDIS_CLUSTER_URL") != "" }

// New returns a Redis for t, cleaned up when t ends.
func New(t testing.TB) *Redis {
	t.Helper()
	prefix := "chatdtest:" + randomHex(6) + ":"
	if url := os.Getenv("REDIS_CLUSTER_URL"); url != "" {
		opt, err := redis.ParseClusterURL(url)
		if err != nil {
			t.Fatalf("REDIS_CLUSTER_URL: %v", err)
		}
		c := redis.NewClusterClient(opt)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error {
			return n.Ping(ctx).Err()
		}); err != nil {
			t.Fatalf("REDIS_CLUSTER_URL=%s does not answer: %v", url, err)
		}
		t.Cleanup(func() {
			Clean(t, c, prefix+"*")
			c.Close()
		})
		return &Redis{Client: c, Prefix: prefix, URL: url}
	}
	return NewSingle(t)
}

// NewSingle returns a single Redis for t, cleaned up when t ends: the real
// Redis named by REDIS_URL, or an in-process miniredis, whether or not
// REDIS_CLUSTER_URL is set.
func NewSingle(t testing.TB) *Redis {
	t.Helper()
	prefix := "chatdtest:" + randomHex(6) + ":"
	if url := os.Getenv("REDIS_URL"); url != "" {
		opt, err := redis.ParseURL(url)
		if err != nil {
			t.Fatalf("REDIS_URL: %v", err)
		}
		c := redis.NewClient(opt)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Ping(ctx).Err(); err != nil {
			t.Fatalf("REDIS_URL=%s does not answer: %v", url, err)
		}
		t.Cleanup(func() {
			Clean(t, c, prefix+"*")
			c.Close()
		})
		return &Redis{Client: c, Prefix: prefix, URL: url}
	}
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { c.Close() })
	return &Redis{Client: c, Prefix: prefix, URL: "redis://" + mr.Addr() + "/0", Mini: mr}
}

// NewClient returns another client of the same Redis, which the caller
// closes: a *redis.ClusterClient in cluster mode, a *redis.Client
// otherwise. Its connections are named name (CLIENT LIST shows it) unless
// name is empty, and it dials with dial unless dial is nil.
func (r *Redis) NewClient(t testing.TB, name string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) redis.UniversalClient {
	t.Helper()
	if _, ok := r.Client.(*redis.ClusterClient); ok {
		opt, err := redis.ParseClusterURL(r.URL)
		if err != nil {
			t.Fatalf("parsing %s: %v", r.URL, err)
		}
		opt.ClientName, opt.Dialer = name, dial
		return redis.NewClusterClient(opt)
	}
	opt, err := redis.ParseURL(r.URL)
	if err != nil {
		t.Fatalf("parsing %s: %v", r.URL, err)
	}
	opt.ClientName, opt.Dialer = name, dial
	return redis.NewClient(opt)
}

// ForEachNode calls fn for each node, one at a time: the one Redis, or
// every node of a cluster (masters and replicas), for commands that
// concern a node rather than keys (CLIENT LIST, SCAN).
func ForEachNode(ctx context.Context, c redis.UniversalClient, fn func(ctx context.Context, node *redis.Client) error) error {
	switch c := c.(type) {
	case *redis.ClusterClient:
		var mu sync.Mutex
		return c.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			return fn(ctx, node)
		})
	case *redis.Client:
		return fn(ctx, c)
	}
	return fmt.Errorf("redistest: no nodes in a %T", c)
}

// Keys returns every key matching pattern, from every master of a cluster.
func Keys(ctx context.Context, c redis.UniversalClient, pattern string) ([]string, error) {
	scan := func(ctx context.Context, node *redis.Client) ([]string, error) {
		var out []string
		iter := node.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			out = append(out, iter.Val())
		}
		return out, iter.Err()
	}
	cc, ok := c.(*redis.ClusterClient)
	if !ok {
		node, ok := c.(*redis.Client)
		if !ok {
			return nil, fmt.Errorf("redistest: cannot scan a %T", c)
		}
		return scan(ctx, node)
	}
	var mu sync.Mutex
	var out []string
	err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		keys, err := scan(ctx, node)
		mu.Lock()
		out = append(out, keys...)
		mu.Unlock()
		return err
	})
	return out, err
}

// Clean deletes every key matching pattern (on every master of a cluster).
func Clean(t testing.TB, c redis.UniversalClient, pattern string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if cc, ok := c.(*redis.ClusterClient); ok {
		// One key per UNLINK: a node refuses keys of several slots in one.
		err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			iter := node.Scan(ctx, 0, pattern, 1000).Iterator()
			pipe := node.Pipeline()
			for iter.Next(ctx) {
				pipe.Unlink(ctx, iter.Val())
				if pipe.Len() == 1000 {
					if _, err := pipe.Exec(ctx); err != nil {
						return err
					}
				}
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
			return iter.Err()
		})
		if err != nil {
			t.Errorf("cleaning %s: %v", pattern, err)
		}
		return
	}
	iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			c.Unlink(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		c.Unlink(ctx, batch...)
	}
	if err := iter.Err(); err != nil {
		t.Errorf("cleaning %s: %v", pattern, err)
	}
}

// FastForward makes key TTLs see d pass: miniredis is told so; a real Redis
// is simply waited on, so keep d short there.
func (r *Redis) FastForward(d time.Duration) {
	if r.Mini != nil {
		r.Mini.FastForward(d)
		return
	}
	time.Sleep(d)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Clock is a clock for Config.Now fields that runs with real time plus an
// offset that Advance moves forward, so expiries can be passed without
// waiting. The zero value is the real time. It is safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	off time.Duration
}

// Now returns the real time plus the offset.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}
