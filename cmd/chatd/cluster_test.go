package main

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatd/chatd/internal/redistest"
)

// TestOpenRedisCluster: a URL with an addr parameter names a Redis
// Cluster; any other is one Redis. Errors hold no password.
func TestOpenRedisCluster(t *testing.T) {
	t.Parallel()
	const password = "PASSWORD-never-printed"
	rdb, name, stop, err := openRedis("redis://:"+password+"@127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.2:7002", "chatd-a")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	defer rdb.Close()
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("openRedis with addr parameters = %T, want a *redis.ClusterClient", rdb)
	}
	if opt := cc.Options(); !slices.Equal(opt.Addrs, []string{"127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.2:7002"}) ||
		opt.ClientName != "chatd-a" || opt.Password != password {
		t.Fatalf("cluster options: addrs %q, client name %q", opt.Addrs, opt.ClientName)
	}
	if d := cc.Options().ClusterStateReloadInterval; d != time.Second {
		t.Fatalf("the slot map is reloaded every %v, want every second: a dead master's slots stay unreachable until then", d)
	}
	if name != "redis://127.0.0.1:7000,127.0.0.1:7001,127.0.0.2:7002 (cluster)" {
		t.Fatalf("name for the log = %q", name)
	}

	single, _, stop2, err := openRedis("redis://127.0.0.1:6379/2", "chatd-a")
	if err != nil {
		t.Fatal(err)
	}
	defer stop2()
	defer single.Close()
	if _, ok := single.(*redis.Client); !ok {
		t.Fatalf("openRedis without addr = %T, want a *redis.Client", single)
	}

	for _, bad := range []string{
		"redis://:" + password + "@127.0.0.1:7000/3?addr=127.0.0.1:7001",       // a database
		"redis://:" + password + "@127.0.0.1:7000?addr=nohost",                 // a bad addr
		"redis://:" + password + "@127.0.0.1:7000?addr=127.0.0.1:7001&db=2",    // no such option
		"mongodb://:" + password + "@127.0.0.1:7000?addr=127.0.0.1:7001&x=%zz", // not a URL
	} {
		_, _, _, err := openRedis(bad, "chatd-a")
		if err == nil || !strings.Contains(err.Error(), "-redis") {
			t.Errorf("openRedis(%q) = %v, want an error about -redis", bad, err)
		} else if strings.Contains(err.Error(), password) {
			t.Errorf("openRedis(%q) error prints the password: %v", bad, err)
		}
	}
}

// TestClusterPrefixRefused: on a Redis Cluster a prefix may not hold a
// brace, which would move the keys' hash tags; chatd refuses to start.
func TestClusterPrefixRefused(t *testing.T) {
	t.Parallel()
	env := map[string]string{"REDIS_URL": "redis://127.0.0.1:1?addr=127.0.0.1:2", "CHAT_PREFIX": "app{1}:"}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := run(ctx, []string{"-addr", "127.0.0.1:0"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-prefix") || !strings.Contains(err.Error(), "hash tag") {
		t.Fatalf("a prefix with braces on a cluster: %v, want a refusal naming -prefix", err)
	}
}

// TestServeOnACluster serves a chat through run against the Redis Cluster
// of REDIS_CLUSTER_URL.
func TestServeOnACluster(t *testing.T) {
	t.Parallel()
	if !redistest.Cluster() {
		t.Skip("serves on a Redis Cluster: set REDIS_CLUSTER_URL to run it")
	}
	r := redistest.New(t)
	s := start(t, nil, "-redis", r.URL, "-prefix", r.Prefix)
	if !strings.Contains(s.logs.String(), "(cluster)") {
		t.Fatalf("the start line does not name a cluster:\n%s", s.logs)
	}
	a, _ := dial(t, "ws://"+s.addr+"/ws?user=23")
	b, _ := dial(t, "ws://"+s.addr+"/ws?user=43")
	write(t, a, `{"type":"send","to":"43","text":"over the cluster","id":"c1"}`)
	if f := read(t, a); f["type"] != "sent" {
		t.Fatalf("got %v, want sent", f)
	}
	if f := read(t, b); f["type"] != "message" {
		t.Fatalf("got %v, want the message", f)
	}
	if err := s.shutdown(t); err != nil {
		t.Fatal(err)
	}
}
