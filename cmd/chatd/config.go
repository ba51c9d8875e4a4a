package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/chatd/chatd/auth"
	"github.com/chatd/chatd/hub"
	"github.com/chatd/chatd/store"
)

// maxBatchDelay bounds -redis-batch-delay: a longer wait would add more
// latency than any saving is worth, and would make a trickle of sends count
// as load.
const maxBatchDelay = 10 * time.Millisecond

// config is everything the serve command is told.
type config struct {
	addr        string
	redisURL    string
	redisWait   int
	waitTimeout time.Duration
	batchDelay  time.Duration
	secret      string
	prefix      string
	replica     string
	origins     []string
	devPublic   bool
	drainDelay  time.Duration
	drainWindow time.Duration
	rate        float64
	burst       int
	maxConns    int
	maxPerUser  int
	connRate    float64
	connBurst   int
	queue       int
	queueBytes  int
	presenceTTL time.Duration
	debugAddr   string
	metricsAddr string
	idleTimeout time.Duration
	logFormat   string
	logLevel    string
	showVersion bool
}

func parseConfig(args []string, getenv func(string) string, stdout, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("chatd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	// An environment value that does not parse is an error, as a bad flag
	// is: a typo must not quietly become the default.
	var envErrs []error
	bad := func(name, v string, err error) {
		envErrs = append(envErrs, fmt.Errorf("%s=%q: %w", name, v, errors.Unwrap(err)))
	}
	dur := func(name string, def time.Duration) time.Duration {
		v := getenv(name)
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			envErrs = append(envErrs, fmt.Errorf("%s=%q: not a duration such as 30s", name, v))
			return def
		}
		return d
	}
	num := func(name string, def int) int {
		v := getenv(name)
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			bad(name, v, err)
			return def
		}
		return n
	}
	flt := func(name string, def float64) float64 {
		v := getenv(name)
		if v == "" {
			return def
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			bad(name, v, err)
			return def
		}
		return f
	}
	switch v := getenv("CHAT_DEV_PUBLIC"); v {
	case "", "0", "1":
	default:
		envErrs = append(envErrs, fmt.Errorf("CHAT_DEV_PUBLIC=%q: want 1 (on) or 0 (off)", v))
	}
	fs.StringVar(&c.addr, "addr", env("CHAT_ADDR", "localhost:8080"), "listen address `host:port` (env CHAT_ADDR)")
	// The secret and the Redis URL (which may hold a password) are read
	// from the environment after parsing, so that -h never prints them as
	// a default.
	fs.StringVar(&c.redisURL, "redis", "", "Redis `URL`, e.g. redis://127.0.0.1:6379/0, or a Redis Cluster's, with one addr parameter or more: redis://10.0.0.1:7000?addr=10.0.0.2:7000&addr=10.0.0.3:7000 (env REDIS_URL); empty starts an embedded in-memory Redis that keeps nothing")
	fs.IntVar(&c.redisWait, "redis-wait", num("CHAT_REDIS_WAIT", 0), "answer sent (and read) only once this many Redis `replicas` have the write (Redis WAIT), so that it survives the loss of the master; fewer within -redis-wait-timeout: unavailable, which the client retries; 0 waits for none (env CHAT_REDIS_WAIT)")
	fs.DurationVar(&c.batchDelay, "redis-batch-delay", dur("CHAT_REDIS_BATCH_DELAY", store.DefaultBatchDelay), "under load, how long a send may wait for others to share its pipeline to Redis (at most 10ms), trading about that much latency for less CPU per message; while sends are too few to bring several others in that time, none waits; 0: never (env CHAT_REDIS_BATCH_DELAY)")
	fs.DurationVar(&c.waitTimeout, "redis-wait-timeout", dur("CHAT_REDIS_WAIT_TIMEOUT", store.DefaultWaitTimeout), "how long a write waits for its -redis-wait replicas (env CHAT_REDIS_WAIT_TIMEOUT)")
	fs.StringVar(&c.secret, "secret", "", "HS256 `secret` that signs client tokens, at least 32 bytes (env CHAT_SECRET, which keeps it out of the process list); empty is dev mode: clients name themselves with ?user=")
	fs.StringVar(&c.prefix, "prefix", env("CHAT_PREFIX", ""), "`prefix` for every Redis key and channel, for a Redis shared with other applications (env CHAT_PREFIX)")
	host, _ := os.Hostname()
	fs.StringVar(&c.replica, "replica", env("CHAT_REPLICA", sanitizeReplica(host)), "this replica's `name`, unique among replicas on one Redis (env CHAT_REPLICA)")
	origins := fs.String("origins", env("CHAT_ORIGINS", ""), "comma-separated browser origin `patterns` allowed besides the server's own host: host or host:port, with \"*.\" matching whole labels, e.g. chat.example.com,*.example.com (env CHAT_ORIGINS)")
	fs.BoolVar(&c.devPublic, "dev-public", getenv("CHAT_DEV_PUBLIC") == "1", "allow dev mode (no secret: anyone can claim any user id) on a non-loopback address, and for any Host besides localhost and the -origins hosts (env CHAT_DEV_PUBLIC=1)")
	fs.DurationVar(&c.drainDelay, "drain-delay", dur("CHAT_DRAIN_DELAY", 5*time.Second), "on SIGTERM, how long /readyz answers 503 before sockets are closed (env CHAT_DRAIN_DELAY)")
	fs.DurationVar(&c.drainWindow, "drain-window", dur("CHAT_DRAIN_WINDOW", 10*time.Second), "on SIGTERM, the window over which sockets are closed with 1012 (env CHAT_DRAIN_WINDOW)")
	fs.Float64Var(&c.rate, "rate", flt("CHAT_RATE", 20), "frames per second each socket may send, sustained (env CHAT_RATE)")
	fs.IntVar(&c.burst, "burst", num("CHAT_BURST", 40), "frames each socket may send in a burst (env CHAT_BURST)")
	fs.IntVar(&c.maxConns, "max-conns", num("CHAT_MAX_CONNS", 10000), "most sockets on this replica (env CHAT_MAX_CONNS)")
	fs.IntVar(&c.maxPerUser, "max-conns-per-user", num("CHAT_MAX_CONNS_PER_USER", 16), "most sockets of one user on this replica; the next connect is answered 429 (env CHAT_MAX_CONNS_PER_USER)")
	fs.Float64Var(&c.connRate, "connect-rate", flt("CHAT_CONNECT_RATE", 10), "sockets per second one user may open on this replica, sustained; more are answered 429 (env CHAT_CONNECT_RATE)")
	fs.IntVar(&c.connBurst, "connect-burst", num("CHAT_CONNECT_BURST", 20), "sockets one user may open on this replica in a burst (env CHAT_CONNECT_BURST)")
	fs.IntVar(&c.queue, "queue", num("CHAT_QUEUE", 1024), "outbound frames queued per socket before it is closed as a slow consumer (env CHAT_QUEUE)")
	fs.IntVar(&c.queueBytes, "queue-bytes", num("CHAT_QUEUE_BYTES", 1<<20), "outbound `bytes` queued per socket before it is closed as a slow consumer; history and inbox replies are cut to half of it (env CHAT_QUEUE_BYTES)")
	fs.DurationVar(&c.presenceTTL, "presence-ttl", dur("CHAT_PRESENCE_TTL", 25*time.Second), "how long a replica's sockets stay online after it stops heartbeating (env CHAT_PRESENCE_TTL)")
	fs.DurationVar(&c.idleTimeout, "idle-timeout", dur("CHAT_IDLE_TIMEOUT", time.Minute), "close a keep-alive HTTP connection idle this long; WebSockets are not affected (env CHAT_IDLE_TIMEOUT)")
	fs.StringVar(&c.metricsAddr, "metrics-addr", env("CHAT_METRICS_ADDR", ""), "serve /metrics on this `host:port` only, not on -addr (keep it private; empty: /metrics on -addr) (env CHAT_METRICS_ADDR)")
	fs.StringVar(&c.debugAddr, "debug-addr", env("CHAT_DEBUG_ADDR", ""), "serve Go's /debug/pprof on this `host:port` (keep it private; empty: off) (env CHAT_DEBUG_ADDR)")
	fs.StringVar(&c.logFormat, "log-format", env("CHAT_LOG_FORMAT", "auto"), "log format: text, json, or auto (text on a terminal) (env CHAT_LOG_FORMAT)")
	fs.StringVar(&c.logLevel, "log-level", env("CHAT_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env CHAT_LOG_LEVEL)")
	fs.BoolVar(&c.showVersion, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "chatd %s: a real-time chat server on Redis.\n\nUsage:\n  chatd [flags]                 serve\n  chatd token -user ID [-ttl D] print a client token (uses -secret or CHAT_SECRET)\n  chatd health [-url URL]       exit 0 when the local replica is ready\n  chatd migrate -from URL -to URL  copy a single Redis into a Redis Cluster (chatd stopped)\n  chatd version                 print the version\n\nFlags:\n", version)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if len(envErrs) > 0 {
		msgs := make([]string, len(envErrs))
		for i, err := range envErrs {
			msgs[i] = err.Error()
		}
		return c, fmt.Errorf("environment: %s", strings.Join(msgs, "; "))
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q (see chatd -h)", fs.Arg(0))
	}
	if !flagSet(fs, "secret") {
		c.secret = getenv("CHAT_SECRET")
	}
	if !flagSet(fs, "redis") {
		c.redisURL = getenv("REDIS_URL")
	}
	if c.secret != "" {
		if err := auth.CheckSecret(c.secret); err != nil {
			return c, fmt.Errorf("-secret (or CHAT_SECRET): %w", err)
		}
	}
	for _, o := range strings.Split(*origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			c.origins = append(c.origins, o)
		}
	}
	if _, err := hub.ParseOrigins(c.origins); err != nil {
		return c, fmt.Errorf("-origins: %w", err)
	}
	if c.secret == "" && !c.devPublic && !loopback(c.addr) {
		return c, errors.New("no -secret and -addr " + c.addr + " is not loopback: dev mode lets anyone claim any user id, " +
			"so it only listens on loopback; set -secret, or -dev-public to accept that risk")
	}
	if c.batchDelay < 0 || c.batchDelay > maxBatchDelay {
		return c, fmt.Errorf("-redis-batch-delay must be from 0 to %v", maxBatchDelay)
	}
	if c.redisWait < 0 {
		return c, errors.New("-redis-wait must be 0 or more")
	}
	if c.redisWait > 0 && c.waitTimeout <= 0 {
		return c, errors.New("-redis-wait-timeout must be positive")
	}
	if c.redisWait > 0 && c.redisURL == "" {
		return c, errors.New("-redis-wait needs a Redis with replicas (-redis or REDIS_URL); the embedded Redis has none")
	}
	if c.idleTimeout <= 0 {
		return c, errors.New("-idle-timeout must be positive")
	}
	if c.rate <= 0 || c.burst < 1 || c.maxConns < 1 || c.maxPerUser < 1 || c.queue < 1 || c.connRate <= 0 || c.connBurst < 1 {
		return c, errors.New("-rate, -burst, -max-conns, -max-conns-per-user, -connect-rate, -connect-burst and -queue must be positive")
	}
	if c.queueBytes < 64<<10 {
		return c, errors.New("-queue-bytes must be at least 65536: a reply of one 4096-byte text, escaped, must fit in half of it")
	}
	return c, nil
}

// flagSet reports whether the command line set the flag name.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// loopback reports whether addr only listens on a loopback interface.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sanitizeReplica turns a host name into a valid replica name.
func sanitizeReplica(s string) string {
	b := []byte(s)
	for i, ch := range b {
		ok := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || strings.IndexByte("_.@-", ch) >= 0
		if !ok {
			b[i] = '-'
		}
	}
	if len(b) == 0 {
		return "chatd"
	}
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}
