package hub

import (
	"context"
	"time"
)

// Resync says the replica's pub/sub link was interrupted and restored
// (store.Events): live delivery may have had a gap. It counts the break and
// hands it to Run; it never blocks.
func (h *Hub) Resync() {
	if h.m != nil {
		h.m.PubSubRestarts.Inc()
	}
	h.RequestResync()
}

// RequestResync asks Run to register this replica's sockets again and then
// tell them to catch up: after a pub/sub break, or when a presence heartbeat
// found this replica's entries lapsed (nothing was routed here while they
// were gone). Requests made while one is pending are merged. It never blocks.
func (h *Hub) RequestResync() {
	select {
	case h.resync <- struct{}{}:
	default: // one is pending already
	}
}

// Run answers resync requests until ctx ends. For each, it first writes the
// replica's presence entries again (a restarted Redis has lost them, and
// without them nothing is routed here), retrying until Redis takes them,
// and only then sends resync to every socket, so that anything stored after
// a socket's resync reaches it live. It returns nil when ctx ends.
func (h *Hub) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-h.resync:
		}
		for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
			_, err := h.cfg.Presence.Refresh(ctx)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			h.log.Warn("re-registering presence before resync failed; retrying", "err", err, "in", wait)
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		h.resyncSockets()
	}
}

// resyncSockets tells every local socket that live delivery may have had a gap.
func (h *Hub) resyncSockets() {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, set := range h.users {
		for c := range set {
			c.enqueue(outItem{frame: resyncFrame})
		}
	}
	h.log.Warn("live delivery may have had a gap: told every socket to resync", "sockets", h.count)
}
