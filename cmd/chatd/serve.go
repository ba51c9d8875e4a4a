package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	neturl "net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/chatd/chatd/auth"
	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/hub"
	"github.com/chatd/chatd/internal/fdlimit"
	"github.com/chatd/chatd/presence"
	"github.com/chatd/chatd/store"
	"github.com/chatd/chatd/web"
)

var (
	_ hub.Store         = (*store.Store)(nil)
	_ hub.Presence      = (*presence.Tracker)(nil)
	_ hub.Authenticator = (*auth.Verifier)(nil)
	_ presence.Backend  = (*store.Store)(nil)
	_ store.Events      = (*hub.Hub)(nil)
)

// canaryInterval is how often the replica proves its pub/sub link; the
// replica is not ready when no canary came back for 3 intervals.
const canaryInterval = 2 * time.Second

// clusterReload is how often a Redis Cluster's slot map is read again.
const clusterReload = time.Second

func newLogger(cfg config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.logLevel)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	format := cfg.logFormat
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format %q: want text, json or auto", cfg.logFormat)
}

// fileHeadroom is how many open files a replica needs besides its
// sockets: Redis connections, listeners, plain HTTP requests.
const fileHeadroom = 256

// checkFileLimit raises the limit on open files to what -max-conns sockets
// need, and warns when the process may not have that many: sockets past
// the limit would fail to connect.
func checkFileLimit(log *slog.Logger, maxConns int) {
	need := uint64(maxConns) + fileHeadroom
	have, err := fdlimit.Raise(need)
	if have < need {
		attrs := []any{"max_conns", maxConns, "need", need, "limit", have}
		if err != nil {
			attrs = append(attrs, "err", err)
		}
		log.Warn("the open-file limit is below what -max-conns needs; connects past it fail until it is raised (ulimit -n, or LimitNOFILE in a systemd unit)",
			attrs...)
	}
}

// serve runs the server until ctx ends, then drains.
func serve(ctx context.Context, cfg config, stderr io.Writer) error {
	log, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	if err := store.ValidateReplica(cfg.replica); err != nil {
		return fmt.Errorf("-replica: %w", err)
	}
	checkFileLimit(log, cfg.maxConns)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := hub.NewMetrics(reg)
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "chatd_build_info", Help: "Always 1; labels name the build.",
	}, []string{"version", "goversion"})
	build.WithLabelValues(version, runtime.Version()).Set(1)
	reg.MustRegister(build)

	rdb, redisName, stopRedis, err := openRedis(cfg.redisURL, "chatd-"+cfg.replica)
	if err != nil {
		return err
	}
	defer stopRedis()
	defer rdb.Close()
	if err := store.ValidatePrefix(rdb, cfg.prefix); err != nil {
		return fmt.Errorf("-prefix (or CHAT_PREFIX): %w", err)
	}
	if err := store.ValidateWait(rdb, cfg.redisWait, cfg.waitTimeout); err != nil {
		return fmt.Errorf("-redis-wait-timeout (or CHAT_REDIS_WAIT_TIMEOUT): %w", err)
	}
	rdb.AddHook(store.LatencyHook(func(cmd string, d time.Duration) {
		metrics.RedisLatency.WithLabelValues(cmd).Observe(d.Seconds())
	}))

	st := store.New(rdb, store.Config{Prefix: cfg.prefix, Logger: log, Wait: cfg.redisWait, WaitTimeout: cfg.waitTimeout,
		BatchDelay: storeBatchDelay(cfg.batchDelay)})
	defer st.Close()
	var h *hub.Hub // the tracker's lapses go to the hub, which needs the tracker
	tracker, err := presence.New(presence.Config{Backend: st, Replica: cfg.replica, TTL: cfg.presenceTTL,
		Logger: log, OnLapse: func() { h.RequestResync() }})
	if err != nil {
		return err
	}
	verifier := auth.New(cfg.secret, chat.ValidateUser)
	h = hub.New(hub.Config{
		Store: st, Presence: tracker, Auth: verifier, Replica: cfg.replica, Origins: cfg.origins,
		QueueSize: cfg.queue, QueueBytes: cfg.queueBytes, Rate: rate.Limit(cfg.rate), Burst: cfg.burst,
		MaxConns: cfg.maxConns, MaxConnsPerUser: cfg.maxPerUser,
		ConnectRate: rate.Limit(cfg.connRate), ConnectBurst: cfg.connBurst, Metrics: metrics, Logger: log,
	})
	sub := st.Subscribe(cfg.replica, h)

	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	metricsAt := "/metrics on addr"
	var metricsLn net.Listener
	if cfg.metricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", cfg.metricsAddr); err != nil {
			ln.Close()
			return fmt.Errorf("listen -metrics-addr: %w", err)
		}
		defer metricsLn.Close()
		metricsAt = metricsLn.Addr().String()
	}
	mode := "token (HS256)"
	if verifier.Dev() {
		mode = "dev (?user=, no authentication)"
	}
	log.Info("chatd starting", "version", version, "addr", ln.Addr().String(), "redis", redisName,
		"replica", cfg.replica, "auth", mode, "prefix", cfg.prefix, "metrics", metricsAt,
		"redis_wait", cfg.redisWait)
	if verifier.Dev() && !loopback(cfg.addr) {
		log.Warn("DEV MODE ON A PUBLIC ADDRESS: anyone who can reach " + ln.Addr().String() + " can read and send as any user")
	}

	// Background work lives until bg is cancelled, after the sockets are gone.
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer func() { stopBG(); wg.Wait() }()
	wg.Add(4)
	go func() { defer wg.Done(); _ = h.Run(bg) }()
	go func() {
		defer wg.Done()
		if err := sub.Run(bg); err != nil {
			log.Error("pub/sub stopped", "err", err)
		}
	}()
	go func() { defer wg.Done(); _ = tracker.Run(bg) }()
	go func() {
		defer wg.Done()
		sub.RunCanary(bg, canaryInterval, func(rtt time.Duration) { metrics.CanaryRTT.Observe(rtt.Seconds()) })
	}()

	select {
	case <-sub.Ready():
	case <-time.After(10 * time.Second):
		ln.Close()
		return errors.New("pub/sub did not subscribe within 10s: is Redis reachable?")
	case <-ctx.Done():
		ln.Close()
		return nil
	}
	if cfg.redisWait > 0 {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		short, err := st.CheckReplicas(cctx)
		cancel()
		if err != nil {
			ln.Close()
			return fmt.Errorf("-redis-wait: %w", err)
		}
		if len(short) > 0 {
			// Not fatal: replicas come and go, and reads work meanwhile.
			log.Warn("fewer Redis replicas than -redis-wait: sends and reads answer unavailable until they are back",
				"redis_wait", cfg.redisWait, "masters", short)
		}
	}

	mux := http.NewServeMux()
	mux.Handle("GET /", web.Handler())
	mux.Handle("GET /ws", h)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if why := notReady(r.Context(), h, st, sub); why != "" {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	guard := func(h http.Handler) http.Handler { return h }
	if verifier.Dev() && !cfg.devPublic {
		origins, _ := hub.ParseOrigins(cfg.origins) // parseConfig has checked them
		guard = func(h http.Handler) http.Handler { return devHosts(h, origins) }
	}
	metricsHandler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	if metricsLn == nil {
		mux.Handle("GET /metrics", metricsHandler)
	} else {
		// Only on its own listener, which the balancer does not publish.
		mmux := http.NewServeMux()
		mmux.Handle("GET /metrics", metricsHandler)
		msrv := httpServer(guard(mmux), cfg.idleTimeout, log)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := msrv.Serve(metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "err", err)
			}
		}()
		defer msrv.Close()
	}
	srv := httpServer(guard(mux), cfg.idleTimeout, log)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if cfg.debugAddr != "" {
		dbg := httpServer(guard(debugMux()), cfg.idleTimeout, log)
		dbg.Addr = cfg.debugAddr
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := dbg.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("debug server", "err", err)
			}
		}()
		defer dbg.Close()
	}

	var serveErr error
	select {
	case err := <-served:
		// The listener failed: close the sockets now, without a delay.
		serveErr = fmt.Errorf("serve: %w", err)
		cfg.drainDelay = 0
	case <-ctx.Done():
	}

	h.StartDrain() // first: /readyz turns 503 at once
	log.Info("draining", "delay", cfg.drainDelay, "window", cfg.drainWindow, "sockets", h.Len())
	time.Sleep(cfg.drainDelay)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.drainWindow+15*time.Second)
	defer cancel()
	if err := h.Shutdown(sctx, cfg.drainWindow); err != nil {
		log.Warn("sockets did not all close in time", "err", err)
	}
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	log.Info("stopped")
	return serveErr
}

// maxHeaderBytes bounds a request's line and headers to 32 KiB: a token is
// a few hundred bytes; nginx's own default allows 32 KiB. net/http lets
// 4096 bytes past MaxHeaderBytes through, so it is set that much lower.
const maxHeaderBytes = 32<<10 - 4096

// httpServer returns a server for handler with chatd's limits: a client
// has 10 s to send a request's headers, which may be at most
// maxHeaderBytes, and a keep-alive connection idle for idle is closed.
// None of them touches a WebSocket, which leaves the server when it is
// upgraded (and -max-conns counts it from then on).
func httpServer(handler http.Handler, idle time.Duration, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       idle,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// debugMux serves the Go runtime's profiles. Not /debug/pprof/cmdline: the
// command line may hold -secret.
func debugMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/cmdline", http.NotFound)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// notReady says why the replica should not get new clients, or "".
func notReady(ctx context.Context, h *hub.Hub, st *store.Store, sub *store.Subscriber) string {
	if h.Draining() {
		return "draining"
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := st.Ping(ctx); err != nil {
		return "redis does not answer"
	}
	if time.Since(sub.LastCanary()) > 3*canaryInterval {
		return "pub/sub canary has not come back"
	}
	return ""
}

// openRedis connects to url, or starts an embedded in-memory Redis when url
// is empty. A URL with an "addr" parameter names a Redis Cluster, in
// go-redis's ParseClusterURL form (redis://host1:port1?addr=host2:port2&…;
// the host and every addr are seed nodes) and gets a cluster client, for
// which the store keeps its Redis Cluster layout. Its connections are named
// client (CLIENT LIST shows it). It returns a name for the log without
// credentials.
func openRedis(url, client string) (redis.UniversalClient, string, func(), error) {
	if url == "" {
		mr := miniredis.NewMiniRedis()
		if err := mr.StartAddr("127.0.0.1:0"); err != nil {
			return nil, "", nil, fmt.Errorf("embedded redis: %w", err)
		}
		// miniredis only expires keys when told time passed: tell it.
		done := make(chan struct{})
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			t := time.NewTicker(time.Second)
			defer t.Stop()
			last := time.Now()
			for {
				select {
				case <-done:
					return
				case now := <-t.C:
					mr.FastForward(now.Sub(last))
					last = now
				}
			}
		}()
		stop := func() { close(done); <-stopped; mr.Close() }
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ClientName: client})
		return rdb, "embedded (in memory, nothing is kept; use -redis for a real Redis)", stop, nil
	}
	if u, err := neturl.Parse(url); err == nil && u.Query().Has("addr") {
		return openCluster(u, client)
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		// A *url.Error quotes the whole URL, password included.
		var ue *neturl.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, "", nil, fmt.Errorf("-redis (or REDIS_URL): not a valid redis:// URL: %w", err)
	}
	opt.ClientName = client
	name := opt.Addr + "/" + fmt.Sprint(opt.DB)
	if i := strings.Index(url, "://"); i > 0 {
		name = url[:i] + "://" + name
	}
	return redis.NewClient(opt), name, func() {}, nil
}

// openCluster returns a client of the Redis Cluster that u names (see
// openRedis), and a name for the log without credentials.
func openCluster(u *neturl.URL, client string) (redis.UniversalClient, string, func(), error) {
	if p := strings.TrimPrefix(u.Path, "/"); p != "" && p != "0" {
		return nil, "", nil, errors.New("-redis (or REDIS_URL): a Redis Cluster has only database 0")
	}
	opt, err := redis.ParseClusterURL(u.String())
	if err != nil {
		var ue *neturl.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, "", nil, fmt.Errorf("-redis (or REDIS_URL): not a valid Redis Cluster URL: %w", err)
	}
	opt.ClientName = client
	if opt.ClusterStateReloadInterval == 0 {
		// go-redis reloads its slot map on MOVED and otherwise every 60 s.
		// A master that died answers nothing, not MOVED, so after a
		// failover its slots would be unreachable for up to a minute.
		opt.ClusterStateReloadInterval = clusterReload
	}
	name := u.Scheme + "://" + strings.Join(opt.Addrs, ",") + " (cluster)"
	return redis.NewClusterClient(opt), name, func() {}, nil
}

// storeBatchDelay turns -redis-batch-delay into store.Config.BatchDelay,
// whose zero is its default: the flag's 0, never wait, is negative there.
func storeBatchDelay(flag time.Duration) time.Duration {
	if flag == 0 {
		return -1
	}
	return flag
}
