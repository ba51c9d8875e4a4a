package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Delivery is one frame to hand to the local sockets of some users.
type Delivery struct {
	// Kind is 'm' for a message, 'r' for a read receipt, 'u' for a new
	// unread count for the reader's own sockets, 't' for typing.
	Kind byte
	// Origin is the presence member of the sending connection, which
	// already has its reply, or "-".
	Origin string
	// Users are the users whose sockets get the frame.
	Users []string
	// Frame is the JSON frame, ready to write.
	Frame []byte
	// Stored is when a message was stored (zero for other kinds).
	Stored time.Time
}

// Events receives what arrives on a replica's channels. Its methods are
// called from the subscriber's goroutine, one at a time, and must not block.
type Events interface {
	// Deliver hands a frame to local sockets.
	Deliver(Delivery)
	// PresenceChanged says user came online or went offline.
	PresenceChanged(user string, online bool)
	// Resync says the pub/sub link was interrupted and restored: live
	// delivery may have had a gap.
	Resync()
}

// Subscriber is a replica's one pub/sub link: its own channel, which the
// store's scripts route frames to, and the presence channel. Redis pub/sub
// is at most once; go-redis reconnects and resubscribes on its own, and the
// Subscriber notices it (a second subscribe confirmation of its channel)
// and calls Events.Resync.
type Subscriber struct {
	s       *Store
	replica string
	ev      Events

	ready      chan struct{}
	readyOnce  sync.Once
	reconnects atomic.Int64

	mu     sync.Mutex
	canary map[string]chan struct{}
	lastOK atomic.Int64 // unix ns of the last canary that came back
}

// Subscribe returns the Subscriber of replica; Run starts it.
func (s *Store) Subscribe(replica string, ev Events) *Subscriber {
	return &Subscriber{s: s, replica: replica, ev: ev, ready: make(chan struct{}), canary: map[string]chan struct{}{}}
}

// Ready is closed once the replica's channel is subscribed for the first time.
func (sub *Subscriber) Ready() <-chan struct{} { return sub.ready }

// Reconnects counts how often the link was restored after a break.
func (sub *Subscriber) Reconnects() int64 { return sub.reconnects.Load() }

// Run holds the subscription until ctx ends, handing what arrives to the
// Events. It returns nil when ctx ends.
func (sub *Subscriber) Run(ctx context.Context) error {
	own := sub.s.keys.replicaChannel(sub.replica)
	ps := sub.s.rdb.Subscribe(ctx, own, sub.s.keys.presenceChannel())
	defer ps.Close()
	ch := ps.ChannelWithSubscriptions(
		redis.WithChannelSize(8192),
		redis.WithChannelHealthCheckInterval(2*time.Second),
	)
	confirmations := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case v, ok := <-ch:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("pubsub: channel closed")
			}
			switch m := v.(type) {
			case *redis.Subscription:
				if m.Kind != "subscribe" || m.Channel != own {
					continue
				}
				confirmations++
				if confirmations == 1 {
					sub.readyOnce.Do(func() { close(sub.ready) })
				} else {
					sub.reconnects.Add(1)
					sub.ev.Resync()
				}
			case *redis.Message:
				sub.handle(m.Payload)
			}
		}
	}
}

// appendEnvelope starts a delivery payload for handle: the tab-separated
// line "<kind> <origin> <user>[,<user>] <stored unix µs>" and a newline; the
// frame follows. An empty origin is written "-".
func appendEnvelope(b []byte, kind byte, origin string, users []string, stored int64) []byte {
	if origin == "" {
		origin = "-"
	}
	b = append(b, kind, '\t')
	b = append(b, origin...)
	b = append(b, '\t')
	for i, u := range users {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, u...)
	}
	b = append(b, '\t')
	b = strconv.AppendInt(b, stored, 10)
	return append(b, '\n')
}

// handle parses one payload: "c <nonce>", "p <0|1> <user>", or the
// tab-separated "<kind> <origin> <user>[,<user>] <stored unix µs>" line of
// a delivery, a newline, and the frame.
func (sub *Subscriber) handle(payload string) {
	if len(payload) < 2 || (payload[1] != ' ' && payload[1] != '\t') {
		sub.s.log.Warn("pubsub: malformed payload", "payload", truncate(payload))
		return
	}
	switch payload[0] {
	case 'c':
		sub.mu.Lock()
		done, ok := sub.canary[payload[2:]]
		delete(sub.canary, payload[2:])
		sub.mu.Unlock()
		if ok {
			close(done)
		}
	case 'p':
		online, user, ok := strings.Cut(payload[2:], " ")
		if !ok {
			sub.s.log.Warn("pubsub: malformed presence", "payload", truncate(payload))
			return
		}
		sub.ev.PresenceChanged(user, online == "1")
	default:
		head, frame, ok := strings.Cut(payload, "\n")
		f := strings.Split(head, "\t")
		if !ok || len(f) != 4 {
			sub.s.log.Warn("pubsub: malformed delivery", "payload", truncate(payload))
			return
		}
		d := Delivery{Kind: f[0][0], Origin: f[1], Users: strings.Split(f[2], ","), Frame: []byte(frame)}
		if us, err := strconv.ParseInt(f[3], 10, 64); err == nil && us > 0 {
			d.Stored = time.UnixMicro(us)
		}
		sub.ev.Deliver(d)
	}
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// Canary publishes a nonce to the replica's own channel and waits for it to
// come back, proving the subscription delivers. It returns the round trip.
func (sub *Subscriber) Canary(ctx context.Context) (time.Duration, error) {
	nonce := randomID()
	done := make(chan struct{})
	sub.mu.Lock()
	sub.canary[nonce] = done
	sub.mu.Unlock()
	defer func() {
		sub.mu.Lock()
		delete(sub.canary, nonce)
		sub.mu.Unlock()
	}()
	start := time.Now()
	if err := sub.s.rdb.Publish(ctx, sub.s.keys.replicaChannel(sub.replica), "c "+nonce).Err(); err != nil {
		return 0, fmt.Errorf("canary: %w", err)
	}
	select {
	case <-done:
		rtt := time.Since(start)
		sub.lastOK.Store(time.Now().UnixNano())
		return rtt, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("canary: %w", ctx.Err())
	}
}

// LastCanary returns when a canary last came back (zero if never).
func (sub *Subscriber) LastCanary() time.Time {
	ns := sub.lastOK.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
