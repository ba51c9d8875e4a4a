package hub

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatd/chatd/chat"
)

// writePair returns a server-side conn, as ServeHTTP sets it up, and the
// client's end, which offered subprotocols.
func writePair(t testing.TB, subprotocols []string) (*conn, *websocket.Conn) {
	t.Helper()
	h := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	accepted := make(chan *conn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		uw := &upgradeWriter{ResponseWriter: w, pool: &h.outBufs}
		ws, err := websocket.Accept(uw, r, &websocket.AcceptOptions{Subprotocols: []string{BatchSubprotocol}})
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		accepted <- &conn{h: h, ws: ws, out: uw.out, batch: batchSelected(ws), quit: make(chan struct{})}
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"),
		&websocket.DialOptions{Subprotocols: subprotocols})
	if err != nil {
		t.Fatal(err)
	}
	ws.SetReadLimit(1 << 20)
	t.Cleanup(func() { ws.CloseNow() })
	c := <-accepted
	t.Cleanup(func() { c.ws.CloseNow() })
	return c, ws
}

// writeAndRead writes frames with c.write and returns the messages the
// client read until it had them all.
func writeAndRead(t *testing.T, c *conn, ws *websocket.Conn, frames []outItem) [][]byte {
	t.Helper()
	done := make(chan bool, 1)
	go func() { done <- c.write(frames...) }()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	var msgs [][]byte
	for got := 0; got < len(frames); {
		_, data, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("read after %d of %d frames: %v", got, len(frames), err)
		}
		msgs = append(msgs, data)
		got++
		if c.batch {
			got += bytes.Count(data, []byte{'\n'})
		}
	}
	if !<-done {
		t.Fatal("write failed")
	}
	return msgs
}

// testFrames are frames of many sizes: small ones, ones that fill a batch
// in a few dozen, and one larger than a batch.
func testFrames() []outItem {
	var frames []outItem
	add := func(size int) {
		f := fmt.Sprintf(`{"type":"x","n":%d,"pad":"`, len(frames))
		f += strings.Repeat("y", max(0, size-len(f)-2)) + `"}`
		frames = append(frames, outItem{frame: []byte(f)})
	}
	for range 3 {
		add(30)
	}
	for range 100 {
		add(1000)
	}
	add(maxBatch + 5000)
	add(40)
	add(maxBatch - 41) // with the one before it, exactly a full batch
	add(maxBatch)      // alone, exactly the bound
	for range 5 {
		add(20)
	}
	return frames
}

// TestBatchedWriteJoinsGreedilyWithinTheBound: with batch framing, one write
// of many frames is as few messages as the bound allows, taken in order:
// each message is frames joined by "\n", at most maxBatch bytes unless it
// is one larger frame, and the next frame would not have fitted.
func TestBatchedWriteJoinsGreedilyWithinTheBound(t *testing.T) {
	t.Parallel()
	c, ws := writePair(t, []string{BatchSubprotocol})
	if !c.batch || ws.Subprotocol() != BatchSubprotocol {
		t.Fatalf("batch %v, client's subprotocol %q", c.batch, ws.Subprotocol())
	}
	frames := testFrames()
	msgs := writeAndRead(t, c, ws, frames)
	var got [][]byte
	for i, m := range msgs {
		parts := bytes.Split(m, []byte{'\n'})
		if len(m) > maxBatch && len(parts) > 1 {
			t.Errorf("message %d: %d frames in %d bytes, over the bound %d", i, len(parts), len(m), maxBatch)
		}
		if i+1 < len(msgs) {
			next, _, _ := bytes.Cut(msgs[i+1], []byte{'\n'})
			if len(m)+1+len(next) <= maxBatch {
				t.Errorf("message %d (%d bytes) went out without the next frame (%d bytes), which fit", i, len(m), len(next))
			}
		}
		got = append(got, parts...)
	}
	if len(got) != len(frames) {
		t.Fatalf("%d frames in %d messages, want %d", len(got), len(msgs), len(frames))
	}
	for i := range frames {
		if !bytes.Equal(got[i], frames[i].frame) {
			t.Fatalf("frame %d: got %.60q, want %.60q", i, got[i], frames[i].frame)
		}
	}
	// 3 small and 65 of 1000 bytes; the other 35; the large one alone; the
	// two that make a full batch; the one of exactly maxBatch; 5 small.
	if len(msgs) != 6 {
		t.Errorf("%d messages, want 6", len(msgs))
	}
	t.Logf("%d frames in %d messages", len(frames), len(msgs))

	// A lone frame is a message of its own, as without batch framing.
	if m := writeAndRead(t, c, ws, frames[:1]); len(m) != 1 || !bytes.Equal(m[0], frames[0].frame) {
		t.Fatalf("one frame came as %q", m)
	}
}

// TestUnbatchedWriteIsOneFramePerMessage: without batch framing, every
// frame of a write is a message of its own, byte for byte.
func TestUnbatchedWriteIsOneFramePerMessage(t *testing.T) {
	t.Parallel()
	for _, offer := range [][]string{nil, {"something.else"}} {
		c, ws := writePair(t, offer)
		if c.batch || ws.Subprotocol() != "" {
			t.Fatalf("offering %q: batch %v, subprotocol %q", offer, c.batch, ws.Subprotocol())
		}
		frames := testFrames()
		msgs := writeAndRead(t, c, ws, frames)
		if len(msgs) != len(frames) {
			t.Fatalf("offering %q: %d messages for %d frames", offer, len(msgs), len(frames))
		}
		for i := range frames {
			if !bytes.Equal(msgs[i], frames[i].frame) {
				t.Fatalf("offering %q: message %d is %.60q, want %.60q", offer, i, msgs[i], frames[i].frame)
			}
		}
	}
}

// TestRenderedFramesHoldNoRawNewline: batch framing splits messages on "\n",
// which no frame may hold, whatever its strings hold: not the frames
// encode renders, nor those rendered by hand.
func TestRenderedFramesHoldNoRawNewline(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"a\nb", "\r\n", "\n", "\u2028\u2029\u0085", "\x00\x1f", strings.Repeat("\n", 100)} {
		m := chat.Message{Conv: s, Seq: 1, From: s, To: s, Text: s, Time: 1732567890.5}
		frames := map[string][]byte{
			"error":    encode(errorFrame{Type: "error", ID: s, Code: CodeBadRequest, Message: s}),
			"cut":      encodeCut(1, 1<<20, func(int, bool) any { return pongFrame{Type: s, ID: s} }),
			"message":  messageFrame(m),
			"sent":     sentFrame(s, m),
			"receipt":  receiptFrame(s, s, 1),
			"unread":   unreadFrame(s, 1, 2),
			"typing":   typingFrame(s),
			"history":  encode(historyFrame{Type: "history", ID: s, With: s, Messages: messageList{m, m}}),
			"inbox":    encode(inboxFrame{Type: "inbox", ID: s, Conversations: conversationList{{With: s, Last: &m}, {With: s}}}),
			"presence": encode(presenceFrame{Type: "presence", ID: s, Online: map[string]bool{s: true}}),
		}
		for name, f := range frames {
			if bytes.ContainsAny(f, "\n\r") {
				t.Errorf("%s frame with %q holds a raw line break: %q", name, s, f)
			}
		}
	}
}

// BenchmarkWrite writes frames of a typical size (a live message, about 200
// bytes) in batches of 1 and 16, with and without batch framing, to a
// loopback client that reads and discards every message. ns/op is per frame.
func BenchmarkWrite(b *testing.B) {
	frame := []byte(`{"type":"message","message":{"conv":"43-23","seq":123456,"from":"23","to":"43","text":"` +
		strings.Repeat("x", 64) + `","time":1732567890.123456}}`)
	for _, batch := range []bool{false, true} {
		for _, n := range []int{1, 16} {
			b.Run(fmt.Sprintf("batch=%v/frames=%d", batch, n), func(b *testing.B) {
				var offer []string
				if batch {
					offer = []string{BatchSubprotocol}
				}
				c, ws := writePair(b, offer)
				read := make(chan int64, 1)
				go func() {
					var msgs int64
					for {
						_, r, err := ws.Reader(context.Background())
						if err != nil {
							read <- msgs
							return
						}
						if _, err := io.Copy(io.Discard, r); err != nil {
							read <- msgs
							return
						}
						msgs++
					}
				}()
				frames := make([]outItem, n)
				for i := range frames {
					frames[i] = outItem{frame: frame}
				}
				b.SetBytes(int64(len(frame)))
				b.ResetTimer()
				for i := 0; i < b.N; i += n {
					if !c.write(frames[:min(n, b.N-i)]...) {
						b.Fatal("write failed")
					}
				}
				b.StopTimer()
				c.ws.CloseNow()
				b.ReportMetric(float64(b.N)/float64(max(<-read, 1)), "frames/msg")
			})
		}
	}
}
