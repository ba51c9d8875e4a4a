package hub_test

import (
	"fmt"
	"testing"

	"github.com/coder/websocket"

	"github.com/chatd/chatd/internal/redistest"
)

// onReplicas runs test on one replica and on three replicas of one Redis.
func onReplicas(t *testing.T, test func(t *testing.T, rs []*replica)) {
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("replicas=%d", n), func(t *testing.T) {
			t.Parallel()
			cl := newCluster(t)
			rs := make([]*replica, n)
			for i := range rs {
				rs[i] = cl.replica(string(rune('a' + i)))
			}
			test(t, rs)
		})
	}
}

// pick returns replica i of rs, wrapping around.
func pick(rs []*replica, i int) *replica { return rs[i%len(rs)] }

// connect dials user on r and returns the socket and its ready frame.
func (r *replica) connect(t *testing.T, user string) (*client, map[string]any) {
	t.Helper()
	c := r.dialURL(t, r.wsURL("user="+user), nil)
	c.user = user
	ready := c.expect("ready")
	if ready["user"] != user || ready["replica"] != r.name {
		t.Fatalf("ready = %v", ready)
	}
	return c, ready
}

// leave closes the socket the way a reloading page does.
func (c *client) leave() {
	c.t.Helper()
	if err := c.ws.Close(websocket.StatusGoingAway, ""); err != nil {
		c.t.Fatalf("%s: close: %v", c.user, err)
	}
}

// wantUnread fails unless a ready frame's unread map is exactly want.
func wantUnread(t *testing.T, ready map[string]any, want map[string]float64) {
	t.Helper()
	got, ok := ready["unread"].(map[string]any)
	if !ok || len(got) != len(want) {
		t.Fatalf("ready unread = %v, want %v", ready["unread"], want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("ready unread = %v, want %v", got, want)
		}
	}
}

// conversation returns the inbox entry for peer, failing if there is none.
func (c *client) conversation(peer string) map[string]any {
	c.t.Helper()
	f := c.call(map[string]any{"type": "inbox", "id": "inbox"})
	convs, _ := f["conversations"].([]any)
	for _, v := range convs {
		if conv, _ := v.(map[string]any); conv["with"] == peer {
			return conv
		}
	}
	c.t.Fatalf("%s: inbox %v has no conversation with %s", c.user, f, peer)
	return nil
}

// wantRead fails unless frame f says unread, read and peer_read as given.
func wantRead(t *testing.T, what string, f map[string]any, unread, read, peerRead float64) {
	t.Helper()
	if f["unread"] != unread || f["read"] != read || f["peer_read"] != peerRead {
		t.Fatalf("%s = %v; want unread %v, read %v, peer_read %v", what, f, unread, read, peerRead)
	}
}

// A message delivered live and never read is unread after a reload, on
// every device, on any replica.
func TestLiveMessageIsUnreadAfterReload(t *testing.T) {
	t.Parallel()
	onReplicas(t, func(t *testing.T, rs []*replica) {
		sender, _ := pick(rs, 0).connect(t, "23")
		// The sender's other socket shows when its replica has handled the
		// message, so that no socket connected later can get it live.
		senderTab, _ := pick(rs, 0).connect(t, "23")
		page, ready := pick(rs, 2).connect(t, "43")
		wantUnread(t, ready, map[string]float64{})
		sender.call(map[string]any{"type": "send", "to": "43", "text": "while you look elsewhere", "id": "s1"})
		senderTab.expect("message")
		if m := msgOf(page.expect("message")); m["seq"] != 1.0 {
			t.Fatalf("delivered %v", m)
		}
		page.leave() // no read

		for i, r := range rs { // the reload, and every other device
			again, ready := r.connect(t, "43")
			wantUnread(t, ready, map[string]float64{"23": 1})
			wantRead(t, fmt.Sprintf("inbox on replica %d", i), again.conversation("23"), 1, 0, 1)
			h := again.call(map[string]any{"type": "history", "with": "23", "peek": true, "id": "h"})
			wantRead(t, "history", h, 1, 0, 1)
		}
		// The sender has read its own message.
		wantRead(t, "sender's inbox", sender.conversation("43"), 0, 1, 0)
	})
}

// A read on one device clears the badge on the user's other devices: live,
// and on their next ready.
func TestReadOnOneDeviceClearsTheOthers(t *testing.T) {
	t.Parallel()
	onReplicas(t, func(t *testing.T, rs []*replica) {
		friend, _ := pick(rs, 1).connect(t, "23")
		phone, _ := pick(rs, 0).connect(t, "43")
		laptop, _ := pick(rs, 2).connect(t, "43")
		for i := range 2 {
			friend.call(map[string]any{"type": "send", "to": "43", "text": "hi", "id": fmt.Sprint("m", i)})
		}
		for _, c := range []*client{phone, laptop} {
			c.expect("message")
			c.expect("message")
		}
		_, ready := pick(rs, 1).connect(t, "43") // a third device: both unread
		wantUnread(t, ready, map[string]float64{"23": 2})

		rd := phone.call(map[string]any{"type": "read", "with": "23", "id": "r"})
		if rd["type"] != "read" || rd["with"] != "23" || rd["read"] != 2.0 || rd["unread"] != 0.0 {
			t.Fatalf("read reply = %v", rd)
		}
		if f := laptop.expect("receipt"); f["by"] != "43" || f["with"] != "23" || f["seq"] != 2.0 {
			t.Fatalf("laptop's receipt = %v", f)
		}
		if f := laptop.expect("unread"); f["with"] != "23" || f["unread"] != 0.0 || f["read"] != 2.0 || f["id"] != nil {
			t.Fatalf("laptop's unread frame = %v", f)
		}
		if f := friend.expect("receipt"); f["by"] != "43" || f["with"] != "23" || f["seq"] != 2.0 {
			t.Fatalf("friend's receipt = %v", f)
		}

		laptop.leave()
		again, ready := pick(rs, 2).connect(t, "43")
		wantUnread(t, ready, map[string]float64{})
		wantRead(t, "inbox after the reload", again.conversation("23"), 0, 2, 2)
	})
}

// The peer's read position survives a reload: a client can draw ✓✓ from
// history and inbox alone.
func TestPeerReadPositionAfterReload(t *testing.T) {
	t.Parallel()
	onReplicas(t, func(t *testing.T, rs []*replica) {
		me, _ := pick(rs, 0).connect(t, "23")
		peer, _ := pick(rs, 2).connect(t, "43")
		for i := range 3 {
			me.call(map[string]any{"type": "send", "to": "43", "text": "hi", "id": fmt.Sprint("m", i)})
			peer.expect("message")
		}
		rd := peer.call(map[string]any{"type": "read", "with": "23", "seq": 2, "id": "r"})
		if rd["read"] != 2.0 || rd["unread"] != 1.0 {
			t.Fatalf("read up to 2 = %v", rd)
		}
		if f := me.expect("receipt"); f["seq"] != 2.0 {
			t.Fatalf("receipt = %v", f)
		}

		me.leave()
		me, _ = pick(rs, 1).connect(t, "23")
		wantRead(t, "history after a reload", me.call(map[string]any{"type": "history", "with": "43", "peek": true, "id": "h"}), 0, 3, 2)
		wantRead(t, "inbox after a reload", me.conversation("43"), 0, 3, 2)

		// A read never moves back; a read of everything moves to the newest.
		if rd := peer.call(map[string]any{"type": "read", "with": "23", "seq": 1, "id": "r1"}); rd["read"] != 2.0 {
			t.Fatalf("read up to 1 after 2 = %v", rd)
		}
		if f := me.expect("receipt"); f["seq"] != 2.0 {
			t.Fatalf("receipt = %v", f)
		}
		peer.call(map[string]any{"type": "read", "with": "23", "id": "r2"})
		if f := me.expect("receipt"); f["seq"] != 3.0 {
			t.Fatalf("receipt = %v", f)
		}
		// A reply reads everything before it.
		peer.call(map[string]any{"type": "send", "to": "23", "text": "back", "id": "b"})
		me.expect("message")

		// Back on the replica that delivered the reply (the peer's may still
		// be handing it out, and would give it to a new socket live).
		me.leave()
		me, ready := pick(rs, 1).connect(t, "23")
		wantUnread(t, ready, map[string]float64{"43": 1})
		wantRead(t, "history after the reply", me.call(map[string]any{"type": "history", "with": "43", "peek": true, "id": "h"}), 1, 3, 4)
	})
}

func TestReadRejectsABadSeq(t *testing.T) {
	t.Parallel()
	c := newCluster(t).replica("a").dial(t, "23")
	for _, frame := range []string{
		`{"type":"read","with":"43","seq":0,"id":"r0"}`,
		`{"type":"read","with":"43","seq":-4,"id":"r0"}`,
		`{"type":"read","with":"43","seq":"7","id":"r0"}`,
	} {
		c.send([]byte(frame))
		if f := c.expect("error"); f["code"] != "bad_request" {
			t.Fatalf("%s: %v", frame, f)
		}
	}
	if rd := c.call(map[string]any{"type": "read", "with": "43", "seq": 5, "id": "r"}); rd["type"] != "read" ||
		rd["read"] != 0.0 || rd["unread"] != 0.0 {
		t.Fatalf("read of an empty conversation = %v", rd)
	}
}

// TestHistoryResetsTheSeedCount: reading a conversation resets the seed's
// count, as the seed's msgread does, even when chatd's own count is
// already 0 because the reader answered first.
func TestHistoryResetsTheSeedCount(t *testing.T) {
	t.Parallel()
	if redistest.Cluster() {
		t.Skip("about the seed's unread hash, which only the single-Redis (seed's) layout keeps: the Redis Cluster layout has none")
	}
	cl := newCluster(t)
	r := cl.replica("a")
	a := r.dial(t, "23")
	for _, id := range []string{"m1", "m2"} {
		if f := a.call(map[string]any{"type": "send", "to": "43", "text": "while you are away", "id": id}); f["type"] != "sent" {
			t.Fatalf("send: %v", f)
		}
	}
	seed := func() string {
		v, _ := cl.redis.Client.HGet(t.Context(), cl.redis.Prefix+"43", "43-23").Result()
		return v
	}
	if got := seed(); got != "2" {
		t.Fatalf("seed count = %q, want 2", got)
	}
	r.settle(t) // 23's messages are not delivered to 43's socket below
	b := r.dial(t, "43")
	if f := b.call(map[string]any{"type": "send", "to": "23", "text": "back", "id": "r"}); f["type"] != "sent" {
		t.Fatalf("send: %v", f)
	}
	h := b.call(map[string]any{"type": "history", "with": "23", "id": "h"})
	if h["unread"] != 0.0 {
		t.Fatalf("history = %v, want unread 0 (the answer read what came before)", h)
	}
	if got := seed(); got != "0" {
		t.Fatalf("seed count after history = %q, want 0", got)
	}
}
