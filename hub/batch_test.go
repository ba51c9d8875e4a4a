package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatd/chatd/hub"
)

// TestBatchSubprotocolIsNegotiated: a client offering chatd.batch gets it
// selected in the 101 answer; a client offering nothing or only other
// subprotocols is accepted with none selected, and every socket works.
func TestBatchSubprotocolIsNegotiated(t *testing.T) {
	t.Parallel()
	r := newCluster(t).replica("a")
	for i, tc := range []struct {
		offer []string
		want  string
	}{
		{nil, ""},
		{[]string{hub.BatchSubprotocol}, hub.BatchSubprotocol},
		{[]string{"v2.chat.example", "mqtt"}, ""},
		{[]string{"graphql-ws", hub.BatchSubprotocol}, hub.BatchSubprotocol},
	} {
		user := fmt.Sprint(100 + i)
		c := r.dialURL(t, r.wsURL("user="+user), &websocket.DialOptions{Subprotocols: tc.offer})
		c.user = user
		if got := c.ws.Subprotocol(); got != tc.want {
			t.Errorf("offering %q: subprotocol %q, want %q", tc.offer, got, tc.want)
		}
		c.expect("ready")
		if f := c.call(map[string]any{"type": "ping", "id": "p"}); f["type"] != "pong" {
			t.Errorf("offering %q: got %v, want pong", tc.offer, f)
		}
	}
}

// smallSendBuffers is a listener whose connections have a 4 KiB send
// buffer, so that the server's writes to a peer that does not read stall
// after a few KiB, not after the megabytes the kernel grows it to.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}

// dialStalled connects user to r's hub, offering subprotocols, through a
// server with small send buffers and with a 4 KiB receive buffer, and
// reads only "ready": until the test reads on, the server's writes to it
// stall, and what is delivered to it meanwhile waits in its queue.
func dialStalled(t *testing.T, r *replica, user string, subprotocols []string) *websocket.Conn {
	t.Helper()
	srv := httptest.NewUnstartedServer(r.hub)
	srv.Listener = smallSendBuffers{srv.Listener}
	srv.Start()
	t.Cleanup(srv.Close)
	dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	httpc := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws?user=" + user
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: httpc, Subprotocols: subprotocols})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	ws.SetReadLimit(1 << 20)
	if _, data, err := ws.Read(ctx); err != nil || !bytes.HasPrefix(data, []byte(`{"type":"ready"`)) {
		t.Fatalf("ready: %q, %v", data, err)
	}
	return ws
}

// deliverWhileStalled sends n messages from a reading client to a socket
// that reads nothing meanwhile, then reads that socket until all n have
// arrived, and returns the WebSocket messages it read.
func deliverWhileStalled(t *testing.T, subprotocols []string, n int) [][]byte {
	t.Helper()
	r := newCluster(t).replica("a", withHub(func(c *hub.Config) {
		c.Rate, c.Burst = 1e6, 1e6
	}))
	ws := dialStalled(t, r, "43", subprotocols)
	a := r.dial(t, "23")
	text := strings.Repeat("x", 1000)
	for i := range n {
		a.send(map[string]any{"type": "send", "to": "43", "text": text, "id": fmt.Sprint("s", i)})
	}
	for range n {
		a.expect("sent")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var msgs [][]byte
	for got := 0; got < n; {
		_, data, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("read after %d of %d messages: %v", got, n, err)
		}
		msgs = append(msgs, data)
		got += bytes.Count(data, []byte(`{"type":"message"`))
	}
	return msgs
}

// checkInOrder decodes frames and fails unless they are n "message" frames
// with seq 1 to n, in order.
func checkInOrder(t *testing.T, frames [][]byte, n int) {
	t.Helper()
	if len(frames) != n {
		t.Fatalf("%d frames, want %d", len(frames), n)
	}
	for i, f := range frames {
		var m struct {
			Type    string `json:"type"`
			Message struct {
				Seq int `json:"seq"`
			} `json:"message"`
		}
		if err := json.Unmarshal(f, &m); err != nil {
			t.Fatalf("frame %d is not JSON (%v): %.80q", i, err, f)
		}
		if m.Type != "message" || m.Message.Seq != i+1 {
			t.Fatalf("frame %d: type %q seq %d, want message seq %d", i, m.Type, m.Message.Seq, i+1)
		}
	}
}

// TestBatchJoinsFramesQueuedTogether: with chatd.batch, frames that were
// queued together while the socket did not read arrive joined by "\n" in
// fewer messages, none over 64 KiB, each part a JSON frame, all in order.
func TestBatchJoinsFramesQueuedTogether(t *testing.T) {
	t.Parallel()
	const n = 200
	msgs := deliverWhileStalled(t, []string{hub.BatchSubprotocol}, n)
	var frames [][]byte
	most := 0
	for _, m := range msgs {
		if len(m) > 64<<10 {
			t.Errorf("a batched message of %d bytes, over 64 KiB", len(m))
		}
		parts := bytes.Split(m, []byte{'\n'})
		most = max(most, len(parts))
		frames = append(frames, parts...)
	}
	t.Logf("%d frames in %d messages, at most %d in one", len(frames), len(msgs), most)
	if most < 2 {
		t.Fatalf("%d frames queued together came in %d messages, one frame each", n, len(msgs))
	}
	checkInOrder(t, frames, n)
}

// TestWithoutBatchEachMessageIsOneFrame: a client that offers no
// subprotocol, or an unknown one, gets exactly one JSON frame per message,
// even when frames were queued together.
func TestWithoutBatchEachMessageIsOneFrame(t *testing.T) {
	t.Parallel()
	for _, offer := range [][]string{nil, {"chatd.batch.v9"}} {
		t.Run(fmt.Sprint(offer), func(t *testing.T) {
			t.Parallel()
			const n = 200
			msgs := deliverWhileStalled(t, offer, n)
			for _, m := range msgs {
				if bytes.IndexByte(m, '\n') >= 0 {
					t.Fatalf("a message holds a newline: %.200q", m)
				}
			}
			checkInOrder(t, msgs, n)
		})
	}
}

// TestFramesHoldNoRawNewline: batch framing splits on "\n", so no frame
// may hold one: texts with line breaks come out escaped, in the live
// message, the sender's reply, a history page and the inbox alike, and
// reach a batch client intact.
func TestFramesHoldNoRawNewline(t *testing.T) {
	t.Parallel()
	r := newCluster(t).replica("a")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	raw, _, err := websocket.Dial(ctx, r.wsURL("user=43"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.CloseNow()
	raw.SetReadLimit(1 << 20)
	read := func(want string) {
		t.Helper()
		_, data, err := raw.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.ContainsAny(data, "\n\r") {
			t.Errorf("a %s frame holds a raw line break: %q", want, data)
		}
		if !bytes.Contains(data, []byte(`"type":"`+want+`"`)) {
			t.Fatalf("got %s, want a %s frame", data, want)
		}
	}
	read("ready")
	a := r.dialURL(t, r.wsURL("user=23"), &websocket.DialOptions{Subprotocols: []string{hub.BatchSubprotocol}})
	a.user = "23"
	a.expect("ready")

	const text = "one\ntwo\r\nthree\u2028four\u0085five\n"
	if f := a.call(map[string]any{"type": "send", "to": "43", "text": text, "id": "bad\nid"}); f["type"] != "error" {
		t.Fatalf("got %v, want an error naming the id", f)
	}
	sent := a.call(map[string]any{"type": "send", "to": "43", "text": text, "id": "nl"})
	if msgOf(sent)["text"] != text {
		t.Fatalf("sent %v, want the text intact", sent)
	}
	read("message")
	send := func(v any) {
		t.Helper()
		b, _ := json.Marshal(v)
		if err := raw.Write(ctx, websocket.MessageText, b); err != nil {
			t.Fatal(err)
		}
	}
	send(map[string]any{"type": "history", "with": "23", "id": "h", "peek": true})
	read("history")
	send(map[string]any{"type": "inbox", "id": "i"})
	read("inbox")
	send(map[string]any{"type": "send", "to": "23", "text": text, "id": "x"})
	read("sent")
	if m := msgOf(a.expect("message")); m["text"] != text {
		t.Fatalf("batch client got %v, want the text intact", m)
	}
	h := a.call(map[string]any{"type": "history", "with": "43", "id": "h"})
	if msgs, _ := h["messages"].([]any); len(msgs) != 2 {
		t.Fatalf("history %v, want 2 messages", h)
	}
}

// TestBatchClientStillSendsOneFramePerMessage: batch framing is for what
// the server writes; a client's message is one frame, and two joined by
// "\n" are a bad_request, answered and nothing more.
func TestBatchClientStillSendsOneFramePerMessage(t *testing.T) {
	t.Parallel()
	r := newCluster(t).replica("a")
	c := r.dialURL(t, r.wsURL("user=23"), &websocket.DialOptions{Subprotocols: []string{hub.BatchSubprotocol}})
	c.user = "23"
	c.expect("ready")
	c.send([]byte(`{"type":"ping","id":"a"}` + "\n" + `{"type":"ping","id":"b"}`))
	if f := c.expect("error"); f["code"] != hub.CodeBadRequest {
		t.Fatalf("got %v, want a bad_request", f)
	}
	if f := c.call(map[string]any{"type": "ping", "id": "c"}); f["type"] != "pong" {
		t.Fatalf("got %v, want pong", f)
	}
}
