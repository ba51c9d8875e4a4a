// Package redistest gives each test a Redis: an in-process miniredis by
// default, or the real Redis named by REDIS_URL, with a key prefix of the
// test's own that is deleted when the test ends. The same tests run in both
// modes.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Redis is one test's Redis.
type Redis struct {
	// Client talks to it.
	Client *redis.Client
	// Prefix is unique to the test and ends in ':'; every key the test
	// writes must start with it (it is deleted at cleanup).
	Prefix string
	// URL is the address for a separate process or client, without the prefix.
	URL string
	// Mini is the miniredis server, nil against a real Redis.
	Mini *miniredis.Miniredis
}

// Real reports whether tests run against a real Redis (REDIS_URL is set).
func Real() bool { return os.Getenv("REDIS_URL") != "" }

// New returns a Redis for t, cleaned up when t ends.
func New(t testing.TB) *Redis {
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

// Clean deletes every key matching pattern.
func Clean(t testing.TB, c *redis.Client, pattern string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
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
