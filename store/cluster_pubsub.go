package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Pub/sub on a Redis Cluster is sharded: the replica's channel and the
// presence channel are shard channels (SSUBSCRIBE, SPUBLISH), each served
// by the node that owns its slot, so a message reaches only the node of
// the replica it is for, and the replicas' channels spread over the shards.
//
// A go-redis PubSub of a cluster is bound to the node of its first
// channel's slot, so the Subscriber holds one link per channel. go-redis
// reconnects a broken link and subscribes again on its own (to the node
// its slot map names; a new confirmation follows). Redis may also drop a
// subscription while the connection stays up: when the channel's slot
// moves to another shard it pushes an sunsubscribe, and a reconnection
// that reached a node that no longer owns the slot is answered MOVED. A
// link then reloads the slot map and subscribes afresh. Either way the
// confirmation that follows is a re-subscription, and the Subscriber calls
// Events.Resync: what was published meanwhile is lost.
//
// The links break together when a node or the network fails: a
// re-subscription waits a moment (resyncSettle) for the other links that
// are down to come back too, at most resyncMaxWait, so that the sockets
// are told to resync once.

// resyncSettle and resyncMaxWait bound how long a Resync waits for links
// that are down.
const (
	resyncSettle  = 200 * time.Millisecond
	resyncMaxWait = 2 * time.Second
)

// linkEvent is what a link hands to Run: a payload, a confirmation that
// the link is subscribed (again), or word that it lost its subscription.
type linkEvent struct {
	channel   string
	payload   string
	confirmed bool
	down      bool
}

// runCluster is Run on a Redis Cluster: it runs one link per channel and
// handles what they hand it, one at a time, until ctx ends.
func (sub *Subscriber) runCluster(ctx context.Context) error {
	k := sub.s.cl.keys
	channels := []string{k.replicaChannel(sub.replica), k.presenceChannel()}
	events := make(chan linkEvent, 8192)
	lctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	for _, ch := range channels {
		wg.Go(func() { sub.link(lctx, ch, events) })
	}
	confirmed := make(map[string]int, len(channels))
	down := map[string]bool{} // links that lost their subscription and have not confirmed it again
	var (
		settle  *time.Timer      // runs while a Resync is due
		settled <-chan time.Time // settle's channel, nil when none is due
		due     time.Time        // when the due Resync became due
	)
	defer func() {
		if settle != nil {
			settle.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-events:
			switch {
			case ev.down:
				down[ev.channel] = true
			case ev.confirmed:
				delete(down, ev.channel)
				confirmed[ev.channel]++
				if confirmed[ev.channel] > 1 && settled == nil {
					due = time.Now()
					settle = time.NewTimer(resyncSettle)
					settled = settle.C
				}
				if len(confirmed) == len(channels) {
					sub.readyOnce.Do(func() { close(sub.ready) })
				}
			default:
				sub.handle(ev.payload)
			}
		case <-settled:
			if len(down) > 0 && time.Since(due) < resyncMaxWait {
				settle.Reset(resyncSettle)
				continue
			}
			settled = nil
			sub.reconnects.Add(1)
			sub.ev.Resync()
		}
	}
}

// link holds the subscription of one shard channel until ctx ends, making
// it again, after a backoff and with a fresh slot map, whenever Redis
// drops it.
func (sub *Subscriber) link(ctx context.Context, channel string, out chan<- linkEvent) {
	send := func(ev linkEvent) {
		select {
		case out <- ev:
		case <-ctx.Done():
		}
	}
	wait := 100 * time.Millisecond
	for {
		subscribed, err := sub.linkOnce(ctx, channel, send)
		if ctx.Err() != nil {
			return
		}
		send(linkEvent{channel: channel, down: true})
		if subscribed {
			wait = 100 * time.Millisecond
		}
		sub.s.log.Warn("pub/sub: shard channel subscription lost; subscribing again",
			"channel", channel, "err", err, "in", wait)
		sub.s.cl.rdb.ReloadState(ctx)
		if pause(ctx, wait); ctx.Err() != nil {
			return
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// linkOnce subscribes to channel with a new PubSub and hands what arrives
// to send until Redis drops the subscription (the error says how) or ctx
// ends (nil). It reports whether the subscription was confirmed.
func (sub *Subscriber) linkOnce(ctx context.Context, channel string, send func(linkEvent)) (subscribed bool, err error) {
	ps := sub.s.cl.rdb.SSubscribe(ctx, channel)
	defer ps.Close()
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()
	quiet, broken := 0, 0
	for {
		msg, err := ps.ReceiveTimeout(ctx, linkCheck)
		if ctx.Err() != nil {
			return subscribed, nil
		}
		if err != nil {
			var re redis.Error
			switch {
			case isQuiet(err):
				if quiet++; quiet >= 3 {
					return subscribed, errors.New("no answer to pings")
				}
				_ = ps.Ping(ctx) // a failed write makes go-redis reconnect
			case errors.As(err, &re):
				return subscribed, fmt.Errorf("ssubscribe %s: %w", channel, err)
			default:
				// A broken connection: go-redis dials again on the next
				// receive and subscribes again; a node that stays away is
				// given up on, and the slot map reloaded.
				send(linkEvent{channel: channel, down: true})
				if broken++; broken >= 5 {
					return subscribed, err
				}
				pause(ctx, 100*time.Millisecond)
			}
			continue
		}
		quiet, broken = 0, 0
		switch m := msg.(type) {
		case *redis.Subscription:
			switch m.Kind {
			case "ssubscribe":
				subscribed = true
				send(linkEvent{channel: channel, confirmed: true})
			case "sunsubscribe":
				return subscribed, errors.New("the subscription was dropped: its slot moved")
			}
		case *redis.Message:
			send(linkEvent{channel: channel, payload: m.Payload})
		}
	}
}

// clusterCanary proves both links: it publishes a nonce to each channel
// and waits for both to come back. Other replicas ignore the nonce that
// reaches them on the presence channel.
func (sub *Subscriber) clusterCanary(ctx context.Context) (time.Duration, error) {
	k := sub.s.cl.keys
	channels := []string{k.replicaChannel(sub.replica), k.presenceChannel()}
	nonces := make([]string, len(channels))
	dones := make([]chan struct{}, len(channels))
	pubs := make([]publication, len(channels))
	sub.mu.Lock()
	for i, ch := range channels {
		nonces[i] = randomID()
		dones[i] = make(chan struct{})
		sub.canary[nonces[i]] = dones[i]
		pubs[i] = publication{ch, []byte("c " + nonces[i])}
	}
	sub.mu.Unlock()
	defer func() {
		sub.mu.Lock()
		for _, n := range nonces {
			delete(sub.canary, n)
		}
		sub.mu.Unlock()
	}()
	start := time.Now()
	if err := sub.s.cl.publish(ctx, pubs); err != nil {
		return 0, fmt.Errorf("canary: %w", err)
	}
	for _, done := range dones {
		select {
		case <-done:
		case <-ctx.Done():
			return 0, fmt.Errorf("canary: %w", ctx.Err())
		}
	}
	rtt := time.Since(start)
	sub.lastOK.Store(time.Now().UnixNano())
	return rtt, nil
}
