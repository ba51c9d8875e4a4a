package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/chatd/chatd/auth"
	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/hub"
	"github.com/chatd/chatd/internal/redistest"
	"github.com/chatd/chatd/presence"
	"github.com/chatd/chatd/store"
)

// cluster is several replicas on one Redis (which may be a Redis Cluster).
type cluster struct {
	t     *testing.T
	redis *redistest.Redis
	clock *redistest.Clock
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	return &cluster{t: t, redis: redistest.New(t), clock: &redistest.Clock{}}
}

// presenceKeys names user's presence set and the presence index, in the
// layout the store keeps on this Redis (PROTOCOL.md section 4).
func (cl *cluster) presenceKeys(user string) []string {
	p := cl.redis.Prefix
	if redistest.Cluster() {
		return []string{p + "{" + user + "}:presence", p + "chat:presence-index"}
	}
	return []string{p + "chat:presence:" + user, p + "chat:presence-index"}
}

// replica is one in-process chatd replica.
type replica struct {
	name    string
	hub     *hub.Hub
	store   *store.Store
	tracker *presence.Tracker
	sub     *store.Subscriber
	rdb     redis.UniversalClient
	client  string // the name of rdb's connections
	srv     *httptest.Server
	stop    context.CancelFunc
	done    chan struct{}
}

// settle waits until everything published to the replica before the call
// has been handed to its sockets: a canary sent through its own channel
// comes back after them.
func (r *replica) settle(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := r.sub.Canary(ctx); err != nil {
		t.Fatalf("replica %s: canary: %v", r.name, err)
	}
}

type option func(*hub.Config, *string)

func withSecret(s string) option { return func(_ *hub.Config, secret *string) { *secret = s } }
func withHub(f func(*hub.Config)) option {
	return func(c *hub.Config, _ *string) { f(c) }
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// replica starts a replica named name; it stops (without presence cleanup,
// like a crash, when crash is called) at the end of the test.
func (cl *cluster) replica(name string, opts ...option) *replica {
	t := cl.t
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	clientName := "chatdtest-" + name + "-" + strings.TrimSuffix(cl.redis.Prefix[len("chatdtest:"):], ":")
	rdb := cl.redis.NewClient(t, clientName, nil)
	var tr *presence.Tracker
	st := store.New(rdb, store.Config{Prefix: cl.redis.Prefix, Now: cl.clock.Now, Logger: log})
	var h *hub.Hub // as in cmd/chatd: the tracker's lapses go to the hub
	tr, err := presence.New(presence.Config{Backend: st, Replica: name, Now: cl.clock.Now, Logger: log,
		ReapInterval: 50 * time.Millisecond, Heartbeat: time.Hour, OnLapse: func() { h.RequestResync() }})
	if err != nil {
		t.Fatal(err)
	}
	secret := ""
	cfg := hub.Config{Store: st, Presence: tr, Replica: name, Logger: log}
	for _, o := range opts {
		o(&cfg, &secret)
	}
	cfg.Auth = auth.New(secret, chat.ValidateUser)
	h = hub.New(cfg)
	r := &replica{name: name, hub: h, store: st, tracker: tr, rdb: rdb, client: clientName, done: make(chan struct{})}
	r.sub = st.Subscribe(name, h)
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); _ = r.sub.Run(ctx) }()
	go func() { defer wg.Done(); _ = tr.Run(ctx) }()
	go func() { defer wg.Done(); _ = h.Run(ctx) }()
	go func() { wg.Wait(); close(r.done) }()
	select {
	case <-r.sub.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("subscriber not ready")
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", h)
	r.srv = httptest.NewServer(mux)
	t.Cleanup(r.close)
	return r
}

// close shuts the replica down gracefully.
func (r *replica) close() {
	select {
	case <-r.done:
		return
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = r.hub.Shutdown(ctx, 0)
	r.srv.Close()
	r.stop()
	<-r.done
	r.store.Close()
	r.rdb.Close()
}

// crash stops the replica's background work and drops its sockets without
// removing their presence entries, as a killed process would.
func (r *replica) crash() {
	r.stop()
	<-r.done
	r.rdb.Close() // nothing more reaches Redis: the entries stay behind
	r.srv.CloseClientConnections()
	r.srv.Close()
}

func (r *replica) wsURL(query string) string {
	return "ws" + strings.TrimPrefix(r.srv.URL, "http") + "/ws?" + query
}

// client is a test WebSocket client that records every frame it reads.
// With batch framing negotiated it splits each message on "\n"; without
// it, a message must be one JSON frame.
type client struct {
	t      *testing.T
	user   string
	ws     *websocket.Conn
	frames chan map[string]any
	ended  chan error
}

// dial connects user to r in dev mode and reads the ready frame.
func (r *replica) dial(t *testing.T, user string) *client {
	t.Helper()
	c := r.dialURL(t, r.wsURL("user="+user), nil)
	c.user = user
	ready := c.expect("ready")
	if ready["user"] != user || ready["replica"] != r.name {
		t.Fatalf("ready = %v", ready)
	}
	return c
}

func (r *replica) dialURL(t *testing.T, url string, opts *websocket.DialOptions) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", url, err, status)
	}
	ws.SetReadLimit(1 << 20)
	c := &client{t: t, ws: ws, frames: make(chan map[string]any, 10000), ended: make(chan error, 1)}
	go c.readLoop()
	t.Cleanup(func() { ws.CloseNow() })
	return c
}

func (c *client) readLoop() {
	defer close(c.frames)
	batch := c.ws.Subprotocol() == hub.BatchSubprotocol
	for {
		_, data, err := c.ws.Read(context.Background())
		if err != nil {
			c.ended <- err
			return
		}
		parts := [][]byte{data}
		if batch {
			parts = bytes.Split(data, []byte{'\n'})
		}
		for _, p := range parts {
			var m map[string]any
			if err := json.Unmarshal(p, &m); err != nil {
				c.t.Errorf("server sent invalid JSON %q: %v", p, err)
				continue
			}
			c.frames <- m
		}
	}
}

// send writes one frame.
func (c *client) send(v any) {
	c.t.Helper()
	b, ok := v.([]byte)
	if !ok {
		var err error
		if b, err = json.Marshal(v); err != nil {
			c.t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// next returns the next frame, failing after timeout.
func (c *client) next() map[string]any {
	c.t.Helper()
	select {
	case f, ok := <-c.frames:
		if !ok {
			c.t.Fatalf("%s: socket ended while a frame was expected", c.user)
		}
		return f
	case <-time.After(5 * time.Second):
		c.t.Fatalf("%s: no frame within 5s", c.user)
	}
	return nil
}

// expect returns the next frame and fails unless it has type typ.
func (c *client) expect(typ string) map[string]any {
	c.t.Helper()
	f := c.next()
	if f["type"] != typ {
		c.t.Fatalf("%s: got %v, want a %q frame", c.user, f, typ)
	}
	return f
}

// quiet fails if any frame arrives within d.
func (c *client) quiet(d time.Duration) {
	c.t.Helper()
	select {
	case f, ok := <-c.frames:
		if ok {
			c.t.Fatalf("%s: unexpected frame %v", c.user, f)
		}
	case <-time.After(d):
	}
}

// call sends a frame with an id and returns the reply with that id.
func (c *client) call(frame map[string]any) map[string]any {
	c.t.Helper()
	c.send(frame)
	f := c.next()
	if frame["id"] != nil && f["id"] != frame["id"] {
		c.t.Fatalf("%s: reply %v does not carry id %v", c.user, f, frame["id"])
	}
	return f
}

// closed waits for the socket to end and returns its close status.
func (c *client) closed() websocket.StatusCode {
	c.t.Helper()
	for {
		select {
		case _, ok := <-c.frames:
			if !ok {
				return websocket.CloseStatus(<-c.ended)
			}
		case <-time.After(10 * time.Second):
			c.t.Fatalf("%s: socket did not close", c.user)
		}
	}
}

// eventually polls cond until it holds or 5 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func msgOf(f map[string]any) map[string]any {
	m, _ := f["message"].(map[string]any)
	return m
}
