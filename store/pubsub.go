package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/redis/go-redis/v9"
)

// Events receives what arrives on a replica's channels. Its methods are
// called from the subscriber's goroutine, one at a time, and must not block.
type Events interface {
	// Deliver hands an event to local sockets.
	Deliver(chat.Delivery)
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
// and calls Events.Resync. On a Redis Cluster the two are shard channels,
// each with a link of its own (see cluster_pubsub.go), and a
// re-subscription of either calls Events.Resync.
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

// isQuiet reports whether err says that a link heard nothing in its time:
// a read that timed out, not a dial that did (a dial that fails is a broken
// link, whatever the reason).
func isQuiet(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) && ne.Timeout() && !(errors.As(err, &oe) && oe.Op == "dial")
}

// pause waits d, or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// linkCheck is how long a pub/sub link may be idle before it pings; a
// link that hears nothing for three of them, its ping's answer included,
// is dropped and made again.
const linkCheck = 2 * time.Second

// Subscribe returns the Subscriber of replica; Run starts it.
func (s *Store) Subscribe(replica string, ev Events) *Subscriber {
	return &Subscriber{s: s, replica: replica, ev: ev, ready: make(chan struct{}), canary: map[string]chan struct{}{}}
}

// Ready is closed once the replica's channel (on a Redis Cluster, both
// channels) is subscribed for the first time.
func (sub *Subscriber) Ready() <-chan struct{} { return sub.ready }

// Reconnects counts how often the link was restored after a break.
func (sub *Subscriber) Reconnects() int64 { return sub.reconnects.Load() }

// Run holds the subscription until ctx ends, handing what arrives to the
// Events. It returns nil when ctx ends.
func (sub *Subscriber) Run(ctx context.Context) error {
	if sub.s.cl != nil {
		return sub.runCluster(ctx)
	}
	confirmations := 0
	wait := 100 * time.Millisecond
	for {
		before := confirmations
		err := sub.receive(ctx, &confirmations)
		if ctx.Err() != nil {
			return nil
		}
		if confirmations > before {
			wait = 100 * time.Millisecond
		}
		sub.s.log.Warn("pub/sub: subscription lost; subscribing again", "err", err, "in", wait)
		if pause(ctx, wait); ctx.Err() != nil {
			return nil
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// receive subscribes with a new PubSub and hands what arrives to the
// Events, on this goroutine, until ctx ends (nil), the link stops
// answering pings, or Redis answers with an error (a SUBSCRIBE refused,
// say, after an ACL change: go-redis would keep the link, pinged and
// unsubscribed). go-redis dials again and subscribes again by itself
// after a broken connection; each confirmation of the replica's channel
// after the first (counted in *confirmations) is a Resync.
func (sub *Subscriber) receive(ctx context.Context, confirmations *int) error {
	own := sub.s.keys.replicaChannel(sub.replica)
	ps := sub.s.rdb.Subscribe(ctx, own, sub.s.keys.presenceChannel())
	defer ps.Close()
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()
	quiet, broken := 0, 0
	for {
		msg, err := ps.ReceiveTimeout(ctx, linkCheck)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			var re redis.Error
			switch {
			case errors.As(err, &re):
				return fmt.Errorf("subscribe: %w", err)
			case isQuiet(err):
				if quiet++; quiet >= 3 {
					return errors.New("no answer to pings")
				}
				_ = ps.Ping(ctx) // a failed write makes go-redis reconnect
			default:
				if broken++; broken == 1 {
					sub.s.log.Warn("pub/sub: the link broke; subscribing again", "err", err)
				} else {
					pause(ctx, 100*time.Millisecond)
				}
			}
			continue
		}
		quiet, broken = 0, 0
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" || m.Channel != own {
				continue
			}
			if *confirmations++; *confirmations == 1 {
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

// A delivery payload is a line of tab-separated fields: the kind, the
// origin ("-" for none), the users (comma-separated), when a message was
// stored (unix µs, 0 for other kinds), then the kind's own fields:
//
//	m: conv, seq, from, to, time; a newline and the text follow
//	r: by, with, seq
//	u: with, read, unread
//	t: from
//
// User ids, conversation names and origins hold no tab, comma or newline
// (chat.ValidateUser, ValidateReplica), so the fields need no escaping;
// the text, last, is taken as it is. The scripts write the numbers only
// they know (seq, read, unread) between parts built here.

// appendHead starts a delivery payload with its four common fields.
func appendHead(b []byte, kind chat.Kind, origin string, users []string, stored int64) []byte {
	if origin == "" {
		origin = "-"
	}
	b = append(b, byte(kind), '\t')
	b = append(b, origin...)
	b = append(b, '\t')
	for i, u := range users {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, u...)
	}
	b = append(b, '\t')
	return strconv.AppendInt(b, stored, 10)
}

// appendFields appends fields to a payload, each after a tab.
func appendFields(b []byte, fields ...string) []byte {
	for _, f := range fields {
		b = append(b, '\t')
		b = append(b, f...)
	}
	return b
}

// messagePayload renders a message's payload around its seq, which only
// the send script knows: head ends just before the seq and tail follows it.
func messagePayload(conv string, req chat.SendRequest, stored time.Time, ts []byte) (head, tail []byte) {
	head = appendHead(make([]byte, 0, 64+len(conv)+2*len(req.To)), chat.KindMessage, req.Origin,
		[]string{req.To, req.From}, stored.UnixMicro())
	head = appendFields(head, conv)
	head = append(head, '\t')
	tail = make([]byte, 0, 32+len(req.From)+len(req.To)+len(ts)+len(req.Text))
	tail = appendFields(tail, req.From, req.To, string(ts))
	tail = append(tail, '\n')
	return head, append(tail, req.Text...)
}

// handle parses one payload: "c <nonce>", "p <0|1> <user>", or a delivery.
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
		d, ok := parseDelivery(payload)
		if !ok {
			sub.s.log.Warn("pubsub: malformed delivery", "payload", truncate(payload))
			return
		}
		sub.ev.Deliver(d)
	}
}

// parseDelivery reads a delivery payload (see appendHead).
func parseDelivery(payload string) (chat.Delivery, bool) {
	head, text, hasText := strings.Cut(payload, "\n")
	var f [9]string
	n := 0
	for more := true; more; n++ {
		if n == len(f) {
			return chat.Delivery{}, false // a field too many
		}
		f[n], head, more = strings.Cut(head, "\t")
	}
	if n < 5 || len(f[0]) != 1 {
		return chat.Delivery{}, false
	}
	d := chat.Delivery{Kind: chat.Kind(f[0][0]), Users: strings.Split(f[2], ",")}
	if f[1] != "-" {
		d.Origin = f[1]
	}
	if us, err := strconv.ParseInt(f[3], 10, 64); err == nil && us > 0 {
		d.Stored = time.UnixMicro(us)
	}
	var err1, err2 error
	switch d.Kind {
	case chat.KindMessage:
		if n != 9 || !hasText {
			return d, false
		}
		d.Message = chat.Message{Conv: f[4], From: f[6], To: f[7], Text: text}
		d.Message.Seq, err1 = strconv.ParseInt(f[5], 10, 64)
		d.Message.Time, err2 = strconv.ParseFloat(f[8], 64)
	case chat.KindReceipt:
		if n != 7 {
			return d, false
		}
		d.By, d.With = f[4], f[5]
		d.Read, err1 = strconv.ParseInt(f[6], 10, 64)
	case chat.KindUnread:
		if n != 7 {
			return d, false
		}
		d.With = f[4]
		d.Read, err1 = strconv.ParseInt(f[5], 10, 64)
		d.Unread, err2 = strconv.ParseInt(f[6], 10, 64)
	case chat.KindTyping:
		if n != 5 {
			return d, false
		}
		d.By = f[4]
	default:
		return d, false
	}
	return d, err1 == nil && err2 == nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// Canary publishes a nonce to the replica's own channel and waits for it to
// come back, proving the subscription delivers. It returns the round trip.
// On a Redis Cluster it proves both links: a nonce goes to each channel.
func (sub *Subscriber) Canary(ctx context.Context) (time.Duration, error) {
	if sub.s.cl != nil {
		return sub.clusterCanary(ctx)
	}
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
