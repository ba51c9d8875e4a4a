// Package hub runs chatd's WebSocket connections: it authenticates them,
// tracks every live socket per user on this replica, answers the frames of
// the wire protocol (docs/PROTOCOL.md) through a Store, and hands frames that
// arrive from Redis pub/sub to the right local sockets.
//
// Each connection has one reader (a goroutine of the hub), a bounded
// outbound queue, and a rate limiter. One goroutine at a time owns its
// writes: a writer goroutine that exists only while there is something to
// write, or the reader answering a request while nothing else is queued. A
// hub-wide sweep pings silent sockets and drops stuck writes. Fan-out never
// blocks: a socket whose queue is full is closed (1008) rather than
// delaying anyone else.
package hub

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/coder/websocket"
	"golang.org/x/time/rate"
)

// Store is what the hub needs from chatd's data layer (store.Store).
// Validation failures are *chat.Error (chat.ErrInvalid or
// chat.ErrTooLarge); any other error means the data layer is unavailable. It must be safe for
// concurrent use.
type Store interface {
	// Send stores a message and routes it live; dup is true for a repeated
	// (sender, client id), with the first message.
	Send(ctx context.Context, req chat.SendRequest) (msg chat.Message, dup bool, err error)
	// History reads a page with both users' read positions; it marks
	// nothing read.
	History(ctx context.Context, user, peer string, before int64, limit int) (chat.Page, error)
	// MarkRead moves the user's read position forward to seq (0: the
	// newest), sends a receipt to both sides and the new unread count to
	// the user's other sockets.
	MarkRead(ctx context.Context, user, peer string, seq int64, origin string) (chat.ReadState, error)
	// Unread returns the user's unread counts by peer (only those above 0).
	Unread(ctx context.Context, user string) (map[string]int64, error)
	// Inbox returns the user's most recent conversations and whether there are more.
	Inbox(ctx context.Context, user string, limit int) ([]chat.Conversation, bool, error)
	// Typing routes an ephemeral typing frame to the peer's sockets.
	Typing(ctx context.Context, user, peer string) error
}

// Presence registers this replica's connections and answers who is online
// (presence.Tracker). It must be safe for concurrent use.
type Presence interface {
	// Add registers a socket of user and returns its presence member.
	Add(ctx context.Context, user string) (member string, err error)
	// Remove unregisters it and removes its entry, or leaves that to the
	// heartbeat in flight, which would otherwise write it back.
	Remove(ctx context.Context, user, member string) error
	// Online reports whether each user has a live socket on any replica.
	Online(ctx context.Context, users []string) (map[string]bool, error)
	// Refresh writes all of this replica's entries again and reports
	// whether any had lapsed.
	Refresh(ctx context.Context) (lapsed bool, err error)
}

// Authenticator names the user of an upgrade request (auth.Verifier). It
// must be safe for concurrent use.
type Authenticator interface {
	// User returns the request's user and when its credential stops being
	// valid (zero: never); then the socket is closed with 1008 "token
	// expired". An error's text is the body of the answer, so it must be
	// meant for the client; the status is 401, or what the error's
	// HTTPStatus() int method returns (found with errors.As). The error
	// itself is logged at debug level.
	User(r *http.Request) (user string, expires time.Time, err error)
}

// Config configures a Hub. Zero values mean the documented defaults.
type Config struct {
	Store    Store         // required
	Presence Presence      // required
	Auth     Authenticator // required
	// Replica is this process's name, sent in "ready".
	Replica string
	// Origins are the patterns of browser origins allowed besides the
	// server's own host (see Origins for the syntax; check them with
	// ParseOrigins first). Empty: only the same host. If one is invalid,
	// New logs it and allows only the same host.
	Origins []string
	// QueueSize and QueueBytes bound each socket's outbound queue, in
	// frames and in bytes; a socket over either bound is closed with 1008
	// (slow consumer). Frames that other users cause and that may be lost
	// (typing, pushed presence, read receipts) are dropped instead while the
	// queue is over half of either bound. Defaults: 1024 frames, 1 MiB.
	// History and inbox replies are cut to fit in half of QueueBytes.
	QueueSize  int
	QueueBytes int
	// MaxFrameBytes is the largest client frame; a larger one closes the
	// socket with 1009. Defaults to 32 KiB (a 4096-byte text fully escaped).
	MaxFrameBytes int64
	// Rate and Burst limit each socket's frames. Default 20/s, burst 40.
	Rate  rate.Limit
	Burst int
	// MaxConns bounds this replica's sockets (default 10000): a full
	// replica answers 503, so a balancer tries another. MaxConnsPerUser
	// bounds one user's sockets on it (default 16): the user's next
	// connect is answered 429 with Retry-After.
	MaxConns        int
	MaxConnsPerUser int
	// ConnectRate and ConnectBurst limit how often one user may open a
	// socket on this replica (default 10/s, burst 20); a connect over the
	// limit is answered 429 with Retry-After.
	ConnectRate  rate.Limit
	ConnectBurst int
	// MaxWatch bounds how many users one socket may watch. Defaults to 1000.
	MaxWatch int
	// WriteTimeout bounds each write: a socket whose write takes longer is
	// dropped (checked every second or more often). Defaults to 10 s.
	WriteTimeout time.Duration
	// PingInterval is how long a socket may be silent before a ping checks
	// it; no pong within PingInterval/2 closes it. Defaults to 30 s.
	PingInterval time.Duration
	// OpTimeout bounds the Store and Presence calls that set a socket up
	// and tear it down. Defaults to 5 s. (The calls a frame causes are
	// bounded by the Redis client's own timeouts.)
	OpTimeout time.Duration
	// Metrics records what happens; nil records nothing.
	Metrics *Metrics
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Hub is the set of this replica's live sockets. It is safe for concurrent use.
type Hub struct {
	cfg     Config
	log     *slog.Logger
	m       *Metrics
	origins Origins

	mu       sync.RWMutex
	users    map[string]map[*conn]struct{}
	watchers map[string]map[*conn]struct{}
	count    int

	connects *connectLimits

	// The sweep goroutine runs while there are sockets (sweeping, guarded
	// by mu); sweepStop wakes it when the last one ends.
	sweeping  bool
	sweepStop chan struct{}
	sweeper   sync.WaitGroup

	// bufs holds *bytes.Buffer for reading client frames; outBufs holds
	// *[]byte for outboxes.
	bufs, outBufs sync.Pool

	draining atomic.Bool
	wg       sync.WaitGroup
	resync   chan struct{} // a pending resync request for Run

	// storeErrs paces the log lines of failed Store calls; storeErrsQuiet
	// counts those left out since the last line.
	storeErrs      *rate.Limiter
	storeErrsQuiet atomic.Int64
}

// New returns a Hub.
func New(cfg Config) *Hub {
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 1024
	}
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = 1 << 20
	}
	if cfg.MaxFrameBytes <= 0 {
		cfg.MaxFrameBytes = 32 << 10
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 20
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 40
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 10000
	}
	if cfg.MaxConnsPerUser <= 0 {
		cfg.MaxConnsPerUser = 16
	}
	if cfg.ConnectRate <= 0 {
		cfg.ConnectRate = 10
	}
	if cfg.ConnectBurst <= 0 {
		cfg.ConnectBurst = 20
	}
	if cfg.MaxWatch <= 0 {
		cfg.MaxWatch = 1000
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 30 * time.Second
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	origins, err := ParseOrigins(cfg.Origins)
	if err != nil {
		cfg.Logger.Error("origin patterns refused: only the server's own host is allowed", "err", err)
	}
	return &Hub{
		cfg:       cfg,
		log:       cfg.Logger,
		m:         cfg.Metrics,
		origins:   origins,
		connects:  newConnectLimits(cfg.ConnectRate, cfg.ConnectBurst),
		users:     map[string]map[*conn]struct{}{},
		watchers:  map[string]map[*conn]struct{}{},
		sweepStop: make(chan struct{}, 1),
		resync:    make(chan struct{}, 1),
		storeErrs: rate.NewLimiter(storeErrLogRate, storeErrLogBurst),
	}
}

// A Redis outage fails every request at once: its failures are logged at
// most storeErrLogRate times a second after a burst, each line saying how
// many were left out since the one before (the metrics count them all).
const (
	storeErrLogRate  = 1
	storeErrLogBurst = 5
)

// logStoreFailure logs a failed Store call, paced by storeErrs.
func (h *Hub) logStoreFailure(what, user string, err error) {
	if !h.storeErrs.Allow() {
		h.storeErrsQuiet.Add(1)
		return
	}
	h.log.Error(what+" failed", "user", user, "err", err, "not_logged_since", h.storeErrsQuiet.Swap(0))
}

// maxPooledBuf is the largest read buffer kept for reuse.
const maxPooledBuf = 64 << 10

func (h *Hub) getBuf() *bytes.Buffer {
	if b, ok := h.bufs.Get().(*bytes.Buffer); ok {
		return b
	}
	return new(bytes.Buffer)
}

func (h *Hub) putBuf(b *bytes.Buffer) {
	if b.Cap() > maxPooledBuf {
		return
	}
	b.Reset()
	h.bufs.Put(b)
}

// sweepInterval is how often the sweep looks at every socket.
func (h *Hub) sweepInterval() time.Duration {
	return max(10*time.Millisecond, min(time.Second, h.cfg.PingInterval/2, h.cfg.WriteTimeout/2))
}

// sweep pings silent sockets and drops stuck writes (conn.sweep) while
// there are sockets; it returns when the last one has ended.
func (h *Hub) sweep() {
	defer h.sweeper.Done()
	tick := time.NewTicker(h.sweepInterval())
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-h.sweepStop:
		}
		h.mu.Lock()
		if h.count == 0 {
			h.sweeping = false
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
		now := time.Now().UnixNano()
		var stuck []*websocket.Conn
		h.mu.RLock()
		for _, set := range h.users {
			for c := range set {
				if c.sweep(now) {
					stuck = append(stuck, c.ws)
				}
			}
		}
		h.mu.RUnlock()
		for _, ws := range stuck { // outside the lock: a close may block
			ws.CloseNow()
		}
	}
}

// ServeHTTP upgrades an authenticated request to a WebSocket, opens it
// (its presence entry and the "ready" frame) and returns; a goroutine of
// the hub runs the socket until it closes (Shutdown waits for it). If Redis
// fails the opening, the socket is closed with 1013 before ServeHTTP
// returns. Before the upgrade, failed authentication is 401 (400
// for a request naming two users), a foreign browser origin 403, a user
// over its connect rate or its socket cap 429 with Retry-After, and a
// draining or full replica 503 (where trying another replica is right).
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.draining.Load() {
		http.Error(w, "replica is draining: reconnect", http.StatusServiceUnavailable)
		return
	}
	if !h.checkOrigin(w, r) {
		return
	}
	user, expires, err := h.cfg.Auth.User(r)
	if err != nil {
		status := http.StatusUnauthorized
		var se interface{ HTTPStatus() int }
		if errors.As(err, &se) {
			status = se.HTTPStatus()
		}
		h.log.Debug("authentication refused", "status", status, "err", err)
		http.Error(w, err.Error(), status)
		return
	}
	if wait := h.connects.allow(user, time.Now()); wait > 0 {
		h.log.Debug("connect refused: rate", "user", user, "retry", wait)
		refuse(w, http.StatusTooManyRequests, wait, "too many connects for this user: retry later")
		return
	}
	c := &conn{
		h:       h,
		user:    user,
		expires: expires,
		quit:    make(chan struct{}),
		limiter: rate.NewLimiter(h.cfg.Rate, h.cfg.Burst),
	}
	if status, reason := h.register(c); status != 0 {
		h.log.Debug("connect refused", "user", user, "status", status, "reason", reason)
		var retry time.Duration
		if status == http.StatusTooManyRequests {
			retry = userCapRetry
		}
		refuse(w, status, retry, reason)
		return
	}
	serving := false
	defer func() {
		if !serving {
			h.unregister(c)
		}
	}()
	uw := &upgradeWriter{ResponseWriter: w, pool: &h.outBufs}
	ws, err := websocket.Accept(uw, r, &websocket.AcceptOptions{
		InsecureSkipVerify: true, // checkOrigin has checked the origin
		OnPongReceived:     func(context.Context, []byte) { c.touch() },
		Subprotocols:       []string{BatchSubprotocol},
	})
	if err != nil {
		// Accept has answered (400/426 for a bad upgrade).
		h.log.Debug("websocket accept failed", "user", user, "err", err)
		return
	}
	ws.SetReadLimit(h.cfg.MaxFrameBytes)
	if uw.out == nil {
		// Not hijacked through uw: nothing else can have upgraded it.
		ws.CloseNow()
		return
	}
	h.mu.Lock()
	c.ws, c.out, c.batch = ws, uw.out, batchSelected(ws)
	h.mu.Unlock()
	// The socket is opened here; then it runs in a goroutine of its own,
	// owned by the hub (h.wg, until unregister), so that net/http's
	// connection goroutine, whose stack the request and the opening's Redis
	// calls deepened, ends here: an idle socket keeps one small stack.
	ctx := context.WithoutCancel(r.Context())
	id, ok := c.open(ctx)
	if !ok {
		return
	}
	serving = true
	go func() {
		defer h.unregister(c)
		c.run(ctx, id)
	}()
}

// register adds c to the hub before it is upgraded, so that no frame
// routed to this replica after its presence entry exists can miss it.
// Otherwise it returns the HTTP status and reason of the refusal.
func (h *Hub) register(c *conn) (int, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.draining.Load() {
		return http.StatusServiceUnavailable, "replica is draining: reconnect"
	}
	if h.count >= h.cfg.MaxConns {
		return http.StatusServiceUnavailable, "too many connections on this replica"
	}
	set := h.users[c.user]
	if len(set) >= h.cfg.MaxConnsPerUser {
		return http.StatusTooManyRequests, "too many connections for this user"
	}
	if set == nil {
		set = map[*conn]struct{}{}
		h.users[c.user] = set
	}
	set[c] = struct{}{}
	h.count++
	h.wg.Add(1)
	if !h.sweeping {
		h.sweeping = true
		h.sweeper.Add(1)
		go h.sweep()
	}
	h.m.connOpened(len(set) == 1)
	return 0, ""
}

func (h *Hub) unregister(c *conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.users[c.user]
	if _, ok := set[c]; !ok {
		return
	}
	delete(set, c)
	if len(set) == 0 {
		delete(h.users, c.user)
	}
	h.count--
	h.wg.Done()
	if h.count == 0 {
		select {
		case h.sweepStop <- struct{}{}:
		default:
		}
	}
	for u := range c.watching {
		if w := h.watchers[u]; w != nil {
			delete(w, c)
			if len(w) == 0 {
				delete(h.watchers, u)
			}
		}
	}
	h.m.connClosed(len(set) == 0)
}

// setID records c's presence member under the lock Deliver reads it with.
func (h *Hub) setID(c *conn, id string) {
	h.mu.Lock()
	c.id = id
	h.mu.Unlock()
}

// watch makes c receive presence changes of users; unwatch stops it.
func (h *Hub) watch(c *conn, users []string, on bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if on {
		added := 0
		for _, u := range users {
			if _, ok := c.watching[u]; !ok {
				added++
			}
		}
		if len(c.watching)+added > h.cfg.MaxWatch {
			return false
		}
	}
	for _, u := range users {
		if on {
			if c.watching == nil {
				c.watching = map[string]struct{}{}
			}
			c.watching[u] = struct{}{}
			w := h.watchers[u]
			if w == nil {
				w = map[*conn]struct{}{}
				h.watchers[u] = w
			}
			w[c] = struct{}{}
			continue
		}
		delete(c.watching, u)
		if w := h.watchers[u]; w != nil {
			delete(w, c)
			if len(w) == 0 {
				delete(h.watchers, u)
			}
		}
	}
	return true
}

// Deliver hands an event from pub/sub to every local socket of its users
// except the one it came from, as one frame rendered once. It never blocks.
func (h *Hub) Deliver(d chat.Delivery) {
	frame := deliveryFrame(d)
	if frame == nil {
		h.log.Warn("dropping a delivery of unknown kind", "kind", string(rune(d.Kind)))
		return
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	for i, u := range d.Users {
		if i > 0 && u == d.Users[0] {
			continue // a note to self names its user twice
		}
		for c := range h.users[u] {
			if c.id != "" && c.id == d.Origin {
				continue
			}
			switch d.Kind {
			case chat.KindTyping:
				c.enqueueEphemeral(frame, true)
			case chat.KindReceipt, chat.KindUnread:
				c.enqueueEphemeral(frame, false)
			default:
				it := outItem{frame: frame}
				if !d.Stored.IsZero() {
					it.stored = d.Stored.UnixMicro()
				}
				c.enqueue(it)
			}
		}
	}
}

// PresenceChanged pushes a presence change to the local sockets watching user.
func (h *Hub) PresenceChanged(user string, online bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if len(h.watchers[user]) == 0 {
		return
	}
	f := encode(presenceFrame{Type: "presence", Online: map[string]bool{user: online}})
	for c := range h.watchers[user] {
		c.pushPresence(user, online, f)
	}
}

// Len returns the number of live sockets.
func (h *Hub) Len() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.count
}

// Draining reports whether Shutdown has begun.
func (h *Hub) Draining() bool { return h.draining.Load() }

// StartDrain stops accepting sockets; Shutdown does it too.
func (h *Hub) StartDrain() { h.draining.Store(true) }

// Shutdown stops accepting sockets, then closes every socket with 1012
// (service restart) at random moments spread over window, so that clients
// do not all reconnect in the same instant. A socket's close waits for its
// request in flight and flushes its queue first. Shutdown returns when every
// socket has ended, or when ctx ends (then it closes the rest at once).
func (h *Hub) Shutdown(ctx context.Context, window time.Duration) error {
	h.mu.Lock()
	h.draining.Store(true)
	h.mu.Unlock()
	h.mu.RLock()
	conns := make([]*conn, 0, h.count)
	for _, set := range h.users {
		for c := range set {
			conns = append(conns, c)
		}
	}
	h.mu.RUnlock()
	rand.Shuffle(len(conns), func(i, j int) { conns[i], conns[j] = conns[j], conns[i] })
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i, c := range conns {
		if window > 0 && len(conns) > 1 {
			at := start.Add(window * time.Duration(i) / time.Duration(len(conns)))
			timer.Reset(time.Until(at))
			select {
			case <-timer.C:
			case <-ctx.Done():
			}
		}
		c.shutdown(websocket.StatusServiceRestart, "service restart: reconnect")
	}
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
		h.sweeper.Wait()
		return nil
	case <-ctx.Done():
		var left []*websocket.Conn
		h.mu.RLock()
		for _, set := range h.users {
			for c := range set {
				if c.ws != nil {
					left = append(left, c.ws)
				}
			}
		}
		h.mu.RUnlock()
		for _, ws := range left { // outside the lock: a close may block
			ws.CloseNow()
		}
		<-done
		h.sweeper.Wait()
		return ctx.Err()
	}
}

// isNormalClose reports whether err is a client going away in an ordinary way.
func isNormalClose(err error) bool {
	switch websocket.CloseStatus(err) {
	case websocket.StatusNormalClosure, websocket.StatusGoingAway, websocket.StatusNoStatusRcvd:
		return true
	}
	return errors.Is(err, context.Canceled)
}
