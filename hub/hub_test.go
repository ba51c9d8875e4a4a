package hub_test

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/redistest"
)

func TestChatBothWays(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	r := cl.replica("a")
	a := r.dial(t, "23")
	b := r.dial(t, "43")

	sent := a.call(map[string]any{"type": "send", "to": "43", "text": "hi", "id": "c1"})
	if sent["type"] != "sent" {
		t.Fatalf("got %v", sent)
	}
	m := msgOf(sent)
	if m["conv"] != "43-23" || m["seq"] != 1.0 || m["from"] != "23" || m["to"] != "43" || m["text"] != "hi" {
		t.Fatalf("sent message = %v", m)
	}
	got := msgOf(b.expect("message"))
	if got["seq"] != 1.0 || got["text"] != "hi" || got["time"] != m["time"] {
		t.Fatalf("delivered %v, stored %v", got, m)
	}
	reply := b.call(map[string]any{"type": "send", "to": "23", "text": "hello back", "id": "x"})
	if msgOf(reply)["seq"] != 2.0 {
		t.Fatalf("reply = %v", reply)
	}
	if got := msgOf(a.expect("message")); got["text"] != "hello back" || got["from"] != "43" {
		t.Fatalf("a got %v", got)
	}
	a.quiet(100 * 1e6)
}

func TestOfflineUnreadHistoryAndReceipt(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	r := cl.replica("a")
	a := r.dial(t, "23")
	for i, text := range []string{"one", "two", "three"} {
		f := a.call(map[string]any{"type": "send", "to": "43", "text": text, "id": "m" + string(rune('0'+i))})
		if f["type"] != "sent" {
			t.Fatalf("got %v", f)
		}
	}
	r.settle(t) // the messages' live deliveries are done: 43 was offline for them
	b := r.dial(t, "9")
	b.ws.CloseNow()
	c := r.dialURL(t, r.wsURL("user=43"), nil)
	c.user = "43"
	ready := c.expect("ready")
	if u, _ := ready["unread"].(map[string]any); u["23"] != 3.0 || len(u) != 1 {
		t.Fatalf("ready unread = %v", ready["unread"])
	}
	inbox := c.call(map[string]any{"type": "inbox", "id": "i"})
	convs, _ := inbox["conversations"].([]any)
	if len(convs) != 1 {
		t.Fatalf("inbox = %v", inbox)
	}
	conv := convs[0].(map[string]any)
	if conv["with"] != "23" || conv["unread"] != 3.0 || conv["last"].(map[string]any)["seq"] != 3.0 {
		t.Fatalf("inbox conversation = %v", conv)
	}
	h := c.call(map[string]any{"type": "history", "with": "23", "limit": 2, "id": "h1"})
	msgs, _ := h["messages"].([]any)
	if h["unread"] != 3.0 || h["more"] != true || len(msgs) != 2 ||
		msgs[0].(map[string]any)["seq"] != 3.0 || msgs[1].(map[string]any)["text"] != "two" {
		t.Fatalf("history = %v", h)
	}
	// Reading history marked the conversation read, as the seed's msgread
	// does: the reply said what was unread before, the sender has a receipt.
	if h["read"] != 3.0 {
		t.Fatalf("history did not move the read position: %v", h)
	}
	rc := a.expect("receipt")
	if rc["by"] != "43" || rc["with"] != "23" || rc["seq"] != 3.0 {
		t.Fatalf("receipt = %v", rc)
	}
	h = c.call(map[string]any{"type": "history", "with": "23", "before": 2, "id": "h2"})
	msgs, _ = h["messages"].([]any)
	if h["unread"] != 0.0 || h["more"] != false || len(msgs) != 1 || msgs[0].(map[string]any)["text"] != "one" {
		t.Fatalf("second page = %v", h)
	}
	if rd := c.call(map[string]any{"type": "read", "with": "23", "id": "r"}); rd["type"] != "read" || rd["with"] != "23" ||
		rd["read"] != 3.0 || rd["unread"] != 0.0 {
		t.Fatalf("read reply = %v", rd)
	}
	if u := c.call(map[string]any{"type": "inbox", "id": "i2"}); u["conversations"].([]any)[0].(map[string]any)["unread"] != 0.0 {
		t.Fatalf("inbox after history = %v", u)
	}
}

// TestHistoryPeekMarksNothing: a client catching up in the background
// peeks; the count stays for the user to see, on every device.
func TestHistoryPeekMarksNothing(t *testing.T) {
	t.Parallel()
	r := newCluster(t).replica("a")
	a := r.dial(t, "23")
	b := r.dial(t, "43")
	if f := a.call(map[string]any{"type": "send", "to": "43", "text": "hi", "id": "m"}); f["type"] != "sent" {
		t.Fatalf("send: %v", f)
	}
	b.expect("message")
	h := b.call(map[string]any{"type": "history", "with": "23", "peek": true, "id": "h"})
	if h["unread"] != 1.0 || h["read"] != 0.0 || h["peer_read"] != 1.0 {
		t.Fatalf("peek = %v", h)
	}
	a.quiet(200 * time.Millisecond) // no receipt
	b3 := r.dialURL(t, r.wsURL("user=43"), nil)
	b3.user = "43"
	if u, _ := b3.expect("ready")["unread"].(map[string]any); u["23"] != 1.0 {
		t.Fatalf("ready after a peek = %v", u)
	}
}

func TestMultiDeviceAndCrossReplica(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	ra, rb, rc := cl.replica("a"), cl.replica("b"), cl.replica("c")
	phone := ra.dial(t, "23")
	laptop := rb.dial(t, "23")
	friend := rc.dial(t, "43")
	friend2 := ra.dial(t, "43")

	sent := phone.call(map[string]any{"type": "send", "to": "43", "text": "from the phone", "id": "p1"})
	seq := msgOf(sent)["seq"]
	for _, c := range []*client{laptop, friend, friend2} {
		if m := msgOf(c.expect("message")); m["seq"] != seq || m["text"] != "from the phone" {
			t.Fatalf("%s got %v", c.user, m)
		}
	}
	phone.quiet(200 * 1e6) // the sending socket gets "sent", not a copy

	friend.call(map[string]any{"type": "send", "to": "23", "text": "back", "id": "f1"})
	for _, c := range []*client{phone, laptop, friend2} {
		if m := msgOf(c.expect("message")); m["text"] != "back" {
			t.Fatalf("%s got %v", c.user, m)
		}
	}
	// Online recipients are not counted unread.
	un, err := ra.store.Unread(t.Context(), "43")
	if err != nil || len(un) != 0 {
		t.Fatalf("unread of 43 = %v, %v", un, err)
	}
}

func TestTypingIsLiveAndNotStored(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	ra, rb := cl.replica("a"), cl.replica("b")
	a := ra.dial(t, "23")
	b := rb.dial(t, "43")
	a.send(map[string]any{"type": "typing", "to": "43"})
	if f := b.expect("typing"); f["from"] != "23" {
		t.Fatalf("typing = %v", f)
	}
	h := b.call(map[string]any{"type": "history", "with": "23", "id": "h"})
	if msgs, _ := h["messages"].([]any); len(msgs) != 0 {
		t.Fatalf("typing was stored: %v", h)
	}
}

func TestIdempotentSend(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	ra, rb := cl.replica("a"), cl.replica("b")
	a := ra.dial(t, "23")
	a2 := rb.dial(t, "23")
	first := a.call(map[string]any{"type": "send", "to": "43", "text": "once", "id": "same"})
	a2.expect("message")
	again := a2.call(map[string]any{"type": "send", "to": "43", "text": "once", "id": "same"})
	if again["type"] != "sent" || msgOf(again)["seq"] != msgOf(first)["seq"] || msgOf(again)["time"] != msgOf(first)["time"] {
		t.Fatalf("retry = %v, first = %v", again, first)
	}
	if redistest.Cluster() {
		// On a Redis Cluster a retry delivers the message again, with its
		// seq: it may be repairing a send that failed after the store.
		if m := msgOf(a.expect("message")); m["seq"] != msgOf(first)["seq"] || m["text"] != "once" {
			t.Fatalf("redelivery = %v, first = %v", m, first)
		}
	}
	a.quiet(200 * 1e6) // a retry is not delivered again (once again on a cluster)
	h := a.call(map[string]any{"type": "history", "with": "43", "id": "h"})
	if msgs, _ := h["messages"].([]any); len(msgs) != 1 {
		t.Fatalf("stored %d messages, want 1", len(msgs))
	}
}

func TestPing(t *testing.T) {
	t.Parallel()
	r := newCluster(t).replica("a")
	c := r.dial(t, "u1")
	if f := c.call(map[string]any{"type": "ping", "id": "p"}); f["type"] != "pong" {
		t.Fatalf("got %v", f)
	}
}

// A user who connects at the instant a message is sent either gets it live
// or finds it counted unread in "ready": never neither.
func TestConnectWhileSendingNeverMisses(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	ra, rb := cl.replica("a"), cl.replica("b")
	sender := ra.dial(t, "23")
	live, counted := 0, 0
	for i := range 40 {
		user := "race" + strconv.Itoa(i)
		id := "m" + strconv.Itoa(i)
		var wg sync.WaitGroup
		var c *client
		var ready map[string]any
		wg.Add(1)
		go func() {
			defer wg.Done()
			c = rb.dialURL(t, rb.wsURL("user="+user), nil)
			c.user = user
			ready = c.expect("ready")
		}()
		if i%2 == 1 {
			time.Sleep(time.Duration(i%5) * 100 * time.Microsecond)
		}
		sent := sender.call(map[string]any{"type": "send", "to": user, "text": "hello", "id": id})
		wg.Wait()
		if sent["type"] != "sent" {
			t.Fatalf("send: %v", sent)
		}
		unread, _ := ready["unread"].(map[string]any)
		if unread["23"] == 1.0 {
			counted++
			continue
		}
		f := c.expect("message")
		if msgOf(f)["text"] != "hello" || msgOf(f)["to"] != user {
			t.Fatalf("%s got %v", user, f)
		}
		live++
	}
	t.Logf("live %d, counted unread %d", live, counted)
}
