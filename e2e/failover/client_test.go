package failover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
)

// message is a stored message as PROTOCOL.md section 3 shows it.
type message struct {
	Conv string  `json:"conv"`
	Seq  int64   `json:"seq"`
	From string  `json:"from"`
	To   string  `json:"to"`
	Text string  `json:"text"`
	Time float64 `json:"time"`
}

// inboxEntry is one conversation of an `inbox` reply.
type inboxEntry struct {
	With   string   `json:"with"`
	Unread int      `json:"unread"`
	Last   *message `json:"last"`
}

// frame is any server frame. Message is raw because it is an object in
// `sent`/`message` and a string in `error`.
type frame struct {
	Type          string          `json:"type"`
	ID            string          `json:"id"`
	User          string          `json:"user"`
	Replica       string          `json:"replica"`
	Unread        json.RawMessage `json:"unread"`
	Message       json.RawMessage `json:"message"`
	Messages      []message       `json:"messages"`
	More          bool            `json:"more"`
	With          string          `json:"with"`
	Conversations []inboxEntry    `json:"conversations"`
	Online        map[string]bool `json:"online"`
	Code          string          `json:"code"`
	RetryAfter    float64         `json:"retry_after"`
	By            string          `json:"by"`
	Seq           int64           `json:"seq"`
	From          string          `json:"from"`

	raw         []byte         // the frame as received
	unreadMap   map[string]int // decoded Unread, for `ready`
	unreadCount int            // decoded Unread, for `history`
	msg         *message       // decoded Message, for `sent` and `message`
	errorText   string         // decoded Message, for `error`
}

// decode fills the typed views of the fields whose JSON type depends on the
// frame's type.
func (f *frame) decode() error {
	switch f.Type {
	case "sent", "message":
		var m message
		if err := json.Unmarshal(f.Message, &m); err != nil {
			return fmt.Errorf("%s frame: message: %w", f.Type, err)
		}
		f.msg = &m
	case "error":
		_ = json.Unmarshal(f.Message, &f.errorText)
	case "ready":
		if len(f.Unread) > 0 && string(f.Unread) != "null" {
			if err := json.Unmarshal(f.Unread, &f.unreadMap); err != nil {
				return fmt.Errorf("ready frame: unread: %w", err)
			}
		}
	case "history":
		if len(f.Unread) > 0 && string(f.Unread) != "null" {
			if err := json.Unmarshal(f.Unread, &f.unreadCount); err != nil {
				return fmt.Errorf("history frame: unread: %w", err)
			}
		}
	}
	return nil
}

// protoError is an `error` frame as a Go error.
type protoError struct {
	Code       string
	Text       string
	RetryAfter float64
}

func (e *protoError) Error() string { return e.Code + ": " + e.Text }

// errDropped means the socket ended before the reply came; errNoReply, that
// no reply came in time (the test then closes the socket itself).
var (
	errDropped = errors.New("socket dropped")
	errNoReply = fmt.Errorf("%w: no reply", errDropped)
)

// mintToken signs a chatd token: HS256, sub and exp, as PROTOCOL.md section 1.
func mintToken(secret, user string, ttl time.Duration) (string, error) {
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": user,
		"iat": time.Now().Unix(),
		"exp": time.Now().Add(ttl).Unix(),
	})
	return tok.SignedString([]byte(secret))
}

// wsConn is one WebSocket to chatd: a reader goroutine dispatches replies to
// the request waiting for their id and everything else to onPush.
type wsConn struct {
	c       *websocket.Conn
	ready   frame
	cancel  context.CancelFunc
	done    chan struct{} // closed when the reader has ended
	readErr error         // why the reader ended, valid after done

	mu      sync.Mutex
	pending map[string]chan frame
}

// dialChat opens a socket to base (ws://host:port) as the token's user and
// waits for `ready`. onPush gets every frame that answers no request, from
// the reader goroutine; it must not block.
func dialChat(ctx context.Context, base, token string, onPush func(frame)) (*wsConn, error) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(dctx, base+"/ws?token="+url.QueryEscape(token), nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial: HTTP %s: %w", resp.Status, err)
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	c.SetReadLimit(4 << 20)
	_, data, err := c.Read(dctx)
	if err != nil {
		c.CloseNow()
		return nil, fmt.Errorf("read ready: %w", err)
	}
	var ready frame
	if err := json.Unmarshal(data, &ready); err != nil || ready.decode() != nil {
		c.CloseNow()
		return nil, fmt.Errorf("first frame %q: not JSON", data)
	}
	if ready.Type != "ready" {
		c.CloseNow()
		return nil, fmt.Errorf("first frame %s, want ready", data)
	}
	ready.raw = data
	rctx, rcancel := context.WithCancel(context.Background())
	w := &wsConn{c: c, ready: ready, cancel: rcancel, done: make(chan struct{}), pending: map[string]chan frame{}}
	go w.readLoop(rctx, onPush)
	return w, nil
}

func (w *wsConn) readLoop(ctx context.Context, onPush func(frame)) {
	defer close(w.done)
	for {
		_, data, err := w.c.Read(ctx)
		if err != nil {
			w.readErr = err
			return
		}
		var f frame
		if err := json.Unmarshal(data, &f); err != nil {
			w.readErr = fmt.Errorf("frame %q: %w", data, err)
			w.c.CloseNow()
			return
		}
		if err := f.decode(); err != nil {
			w.readErr = err
			w.c.CloseNow()
			return
		}
		f.raw = data
		if f.ID != "" {
			w.mu.Lock()
			ch := w.pending[f.ID]
			delete(w.pending, f.ID)
			w.mu.Unlock()
			if ch != nil {
				ch <- f // buffered
				continue
			}
		}
		onPush(f)
	}
}

// closeCode is the close status the socket ended with, -1 if none.
func (w *wsConn) closeCode() websocket.StatusCode {
	return websocket.CloseStatus(w.readErr)
}

// close ends the socket at once.
func (w *wsConn) close() {
	w.c.CloseNow()
	w.cancel()
	<-w.done
}

// request writes f (which carries id) and waits up to timeout for the frame
// answering id. An `error` frame comes back as *protoError.
func (w *wsConn) request(ctx context.Context, id string, f map[string]any, timeout time.Duration) (frame, error) {
	ch := make(chan frame, 1)
	w.mu.Lock()
	w.pending[id] = ch
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.pending, id)
		w.mu.Unlock()
	}()
	data, err := json.Marshal(f)
	if err != nil {
		return frame{}, err
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := w.c.Write(tctx, websocket.MessageText, data); err != nil {
		return frame{}, fmt.Errorf("%w: write: %v", errDropped, err)
	}
	select {
	case r := <-ch:
		if r.Type == "error" {
			return r, &protoError{Code: r.Code, Text: r.errorText, RetryAfter: r.RetryAfter}
		}
		return r, nil
	case <-w.done:
		return frame{}, fmt.Errorf("%w: %v", errDropped, w.readErr)
	case <-tctx.Done():
		return frame{}, fmt.Errorf("%w to %s in %v", errNoReply, id, timeout)
	}
}

// jitter returns a duration in [d/2, d).
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// sleepCtx sleeps d or until ctx ends; false if ctx ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
