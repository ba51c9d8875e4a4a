// Package presence answers "who is online, on any replica". Each live
// connection is an entry in a shared backend (Redis, through the store) with
// an expiry that this replica's heartbeat pushes forward; a replica that
// dies stops refreshing, and its connections read as offline once their
// expiry passes (TTL, 25 s by default, so within 30 s). A reaper, run by
// every replica, removes expired entries and announces users who went
// offline that way, so watchers hear of it too.
package presence

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Backend stores presence entries. The store package implements it.
type Backend interface {
	// Connect adds or refreshes member of user until expiry.
	Connect(ctx context.Context, user, member string, expiry time.Time) (bool, error)
	// Refresh pushes the expiry of many entries (member → user) forward and
	// reports whether any had lapsed (its user had read offline).
	Refresh(ctx context.Context, conns map[string]string, expiry time.Time) (lapsed bool, err error)
	// Disconnect removes member of user.
	Disconnect(ctx context.Context, user, member string) (bool, error)
	// Online reports whether each user has a live entry.
	Online(ctx context.Context, users []string) (map[string]bool, error)
	// Reap removes up to batch expired entries of any replica.
	Reap(ctx context.Context, batch int) (int, error)
}

// Config configures a Tracker.
type Config struct {
	// Backend holds the entries. Required.
	Backend Backend
	// Replica names this process; it is the first field of every member, so
	// the backend can route to it. Required; no spaces.
	Replica string
	// TTL is how long an entry lives without a heartbeat. Defaults to 25 s.
	TTL time.Duration
	// Heartbeat is how often live entries are refreshed. Defaults to TTL/3.
	Heartbeat time.Duration
	// ReapInterval is how often expired entries are looked for. Defaults to 2 s.
	ReapInterval time.Duration
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// OnLapse, if set, is called (from Run's goroutine) when a heartbeat
	// finds that entries of this replica had expired: while they were gone,
	// nothing was routed to this replica. It must not block.
	OnLapse func()
}

// Tracker registers this replica's connections and refreshes them. It is
// safe for concurrent use.
type Tracker struct {
	cfg  Config
	boot string
	seq  atomic.Uint64

	// refreshTurn holds a token while a refresh runs: refreshes run one at
	// a time, and one asked for by a resync (after Redis lost its data)
	// must start after the data was lost, so it waits for the one in
	// flight rather than sharing it.
	refreshTurn chan struct{}

	mu    sync.Mutex
	conns map[string]string // member → user
	// fresh holds the members of conns whose first entry Add is writing.
	// A refresh writes them too (a resync's refresh must not miss a
	// socket that is connecting), but their users coming online is no
	// lapse.
	fresh map[string]bool
	// refreshing is what the refresh in flight is refreshing (nil: none).
	// A connection of it that ends meanwhile is removed by the refresh,
	// once done: removed before, it would be written back, and read as its
	// user coming online again (a lapse, and a flicker for watchers).
	refreshing map[string]string
}

// New returns a Tracker; Run keeps its entries alive.
func New(cfg Config) (*Tracker, error) {
	if cfg.Backend == nil {
		return nil, fmt.Errorf("presence: no backend")
	}
	if cfg.Replica == "" {
		return nil, fmt.Errorf("presence: no replica name")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 25 * time.Second
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = cfg.TTL / 3
	}
	if cfg.ReapInterval <= 0 {
		cfg.ReapInterval = 2 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return &Tracker{cfg: cfg, boot: hex.EncodeToString(b[:]), refreshTurn: make(chan struct{}, 1),
		conns: map[string]string{}, fresh: map[string]bool{}}, nil
}

// Add registers a new live connection of user and returns its member name,
// "<replica> <boot>-<n>", unique across restarts of the replica.
func (t *Tracker) Add(ctx context.Context, user string) (string, error) {
	member := fmt.Sprintf("%s %s-%d", t.cfg.Replica, t.boot, t.seq.Add(1))
	t.mu.Lock()
	t.conns[member] = user
	t.fresh[member] = true
	t.mu.Unlock()
	_, err := t.cfg.Backend.Connect(ctx, user, member, t.cfg.Now().Add(t.cfg.TTL))
	t.mu.Lock()
	delete(t.fresh, member)
	later := false
	if err != nil {
		later = t.forgetLocked(member)
	}
	t.mu.Unlock()
	if err != nil {
		// The entry may have been written before the call failed (a timeout
		// on the way back): remove it, or it reads online until it expires.
		if !later {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			_, _ = t.cfg.Backend.Disconnect(cctx, user, member)
		}
		return "", err
	}
	return member, nil
}

// Remove unregisters the connection member of user and removes its entry.
// While a refresh that covers it is in flight, Remove returns at once and
// the refresh removes the entry when done: removed now, it would be
// written back.
func (t *Tracker) Remove(ctx context.Context, user, member string) error {
	t.mu.Lock()
	later := t.forgetLocked(member)
	t.mu.Unlock()
	if later {
		return nil
	}
	_, err := t.cfg.Backend.Disconnect(ctx, user, member)
	return err
}

// removeConcurrency bounds the removals removeAll makes at once.
const removeConcurrency = 16

// removeAll removes the entries of connections that ended while a refresh
// covering them ran (member → user), several at a time, each with a time
// of its own, even when ctx has ended: they are owed to Remove. Failures
// are logged: such an entry reads online until it expires.
func (t *Tracker) removeAll(ctx context.Context, conns map[string]string) {
	if len(conns) == 0 {
		return
	}
	type entry struct{ user, member string }
	work := make(chan entry)
	var failed atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range min(len(conns), removeConcurrency) {
		wg.Go(func() {
			for e := range work {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
				if _, err := t.cfg.Backend.Disconnect(rctx, e.user, e.member); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
				}
				cancel()
			}
		})
	}
	for m, u := range conns {
		work <- entry{u, m}
	}
	close(work)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.cfg.Logger.Warn("presence: entries of sockets that ended during a heartbeat were not removed; they expire by themselves",
			"failed", n, "of", len(conns), "err", *firstErr.Load())
	}
}

// forgetLocked unregisters member and reports whether the refresh in
// flight covers it, and so removes its entry when done. t.mu is held.
func (t *Tracker) forgetLocked(member string) (later bool) {
	delete(t.conns, member)
	_, later = t.refreshing[member]
	return later
}

// Online reports whether each user has a live connection on any replica.
func (t *Tracker) Online(ctx context.Context, users []string) (map[string]bool, error) {
	return t.cfg.Backend.Online(ctx, users)
}

// Len returns the number of this replica's registered connections.
func (t *Tracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// Run refreshes this replica's entries every Heartbeat and reaps expired
// ones every ReapInterval until ctx ends. Backend errors are logged and
// retried at the next tick. It returns nil when ctx ends.
func (t *Tracker) Run(ctx context.Context) error {
	beat := time.NewTicker(t.cfg.Heartbeat)
	defer beat.Stop()
	reap := time.NewTicker(t.cfg.ReapInterval)
	defer reap.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-beat.C:
			// A lapse found counts even when part of the refresh failed:
			// the next one, having written the entries again, cannot find
			// it any more.
			lapsed, err := t.Refresh(ctx)
			if err != nil && ctx.Err() == nil {
				t.cfg.Logger.Warn("presence heartbeat failed", "err", err)
			}
			if lapsed && t.cfg.OnLapse != nil {
				t.cfg.OnLapse()
			}
		case <-reap.C:
			if _, err := t.cfg.Backend.Reap(ctx, 1000); err != nil && ctx.Err() == nil {
				t.cfg.Logger.Warn("presence reap failed", "err", err)
			}
		}
	}
}

// Refresh pushes the expiry of every registered connection forward. It
// reports whether any of them had lapsed; one that Add is still writing
// has not. Connections that end while it runs are removed when it is done
// (see Remove); a failure to remove one is logged, not returned. Refreshes
// run one at a time.
func (t *Tracker) Refresh(ctx context.Context) (lapsed bool, err error) {
	select {
	case t.refreshTurn <- struct{}{}:
	case <-ctx.Done():
		return false, fmt.Errorf("presence refresh: %w", ctx.Err())
	}
	t.mu.Lock()
	conns := make(map[string]string, len(t.conns))
	settled := make(map[string]string, len(t.conns)-len(t.fresh))
	fresh := make(map[string]string, len(t.fresh))
	for m, u := range t.conns {
		conns[m] = u
		if t.fresh[m] {
			fresh[m] = u
		} else {
			settled[m] = u
		}
	}
	t.refreshing = conns
	t.mu.Unlock()
	expiry := t.cfg.Now().Add(t.cfg.TTL)
	lapsed, err = t.cfg.Backend.Refresh(ctx, settled, expiry)
	if len(fresh) > 0 {
		if _, ferr := t.cfg.Backend.Refresh(ctx, fresh, expiry); err == nil {
			err = ferr
		}
	}
	t.mu.Lock()
	t.refreshing = nil
	ended := map[string]string{}
	for m, u := range conns {
		if _, ok := t.conns[m]; !ok {
			ended[m] = u
		}
	}
	t.mu.Unlock()
	<-t.refreshTurn
	// A later refresh cannot write these back (they are not registered any
	// more), so they are removed outside the turn.
	t.removeAll(ctx, ended)
	if err != nil {
		return lapsed, fmt.Errorf("presence refresh: %w", err)
	}
	return lapsed, nil
}
