package hub

import (
	"context"
	"strings"

	"github.com/coder/websocket"
)

// BatchSubprotocol is the WebSocket subprotocol of batch framing
// (docs/PROTOCOL.md, section 1). A client that offers it in
// Sec-WebSocket-Protocol gets it selected in the upgrade's answer, and then
// the frames the server writes at once go out as one text message, joined
// by "\n", instead of one message each. A client that offers nothing, or
// only other subprotocols, gets one frame per message.
const BatchSubprotocol = "chatd.batch"

// maxBatch bounds one batched message: frames are joined while the message
// stays within it, and a frame larger than it goes alone. It is the outbox's
// bound, so that a batch is one write of the outbox.
const maxBatch = maxOutBuf

// batchSelected reports whether ws negotiated batch framing. The library
// selects a subprotocol the way the client spelt it, and compares without
// regard to case.
func batchSelected(ws *websocket.Conn) bool {
	return strings.EqualFold(ws.Subprotocol(), BatchSubprotocol)
}

// writeJoined writes frames with batch framing: as many frames in a row as
// fit in maxBatch bytes, joined by "\n", make one text message. A frame
// holds no raw newline (JSON escapes it in strings, and frames are never
// indented), so the client can split a message on "\n". It stops early,
// with no error, once the socket turns out to be a slow consumer.
func (c *conn) writeJoined(frames []outItem) error {
	var joined *[]byte
	defer func() {
		if joined != nil && cap(*joined) <= maxBatch {
			*joined = (*joined)[:0]
			c.h.outBufs.Put(joined)
		}
	}()
	for i := 0; i < len(frames); {
		if c.slow.Load() {
			return nil
		}
		j, n := i+1, len(frames[i].frame)
		for j < len(frames) && n+1+len(frames[j].frame) <= maxBatch {
			n += 1 + len(frames[j].frame)
			j++
		}
		msg := frames[i].frame
		if j > i+1 {
			if joined == nil {
				if b, ok := c.h.outBufs.Get().(*[]byte); ok {
					joined = b
				} else {
					b := make([]byte, 0, n)
					joined = &b
				}
			}
			b := append((*joined)[:0], frames[i].frame...)
			for _, it := range frames[i+1 : j] {
				b = append(b, '\n')
				b = append(b, it.frame...)
			}
			*joined = b
			msg = b
		}
		if err := c.ws.Write(context.Background(), websocket.MessageText, msg); err != nil {
			return err
		}
		i = j
	}
	return nil
}
