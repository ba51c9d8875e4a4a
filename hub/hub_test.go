package hub_test

import (
	"testing"
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
