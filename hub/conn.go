package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/chatd/chatd/chat"
	"github.com/coder/websocket"
	"golang.org/x/time/rate"
)

// outItem is one queued frame; stored is when a message was stored (unix
// µs, 0 for other frames), for the delivery latency metric.
type outItem struct {
	frame  []byte
	stored int64
}

// slowCloseGrace is how long a slow consumer's close handshake may take
// before its TCP connection is dropped outright.
const slowCloseGrace = 250 * time.Millisecond

// conn is one WebSocket. Its reader goroutine reads and answers frames.
// After "ready", one goroutine at a time owns the socket's writes (writing
// is true): a writer goroutine, started when the queue goes non-empty and
// ended when it stays empty, or the reader writing a reply itself while
// nothing else is queued. An idle socket has no writer goroutine.
//
// Who owns what: the hub's lock guards registration (ws, out and id are
// set under it, before anything else can see them) and watching; qmu
// guards everything queued and who writes, and is never held across a
// Redis call, a network write, a close or a log line; busy is held by the
// reader while it answers a request (Redis call included) and taken by
// nothing but a drain, which waits on it for that answer; the atomics are
// single values that the sweep reads.
type conn struct {
	h       *Hub
	ws      *websocket.Conn // set under h.mu
	out     *outbox         // under ws; set with it
	batch   bool            // chatd.batch was negotiated; set with ws
	user    string
	id      string // presence member; set under h.mu
	limiter *rate.Limiter
	expires time.Time // when the credential stops being valid; zero: never

	// The outbound queue: a slice that is empty (and costs nothing) while
	// the socket is idle, bounded by QueueSize frames and QueueBytes bytes.
	// spare is the array of the batch the writer wrote last, reused for the
	// next one. qmu also guards typingSeen, writing, live, ended, querying
	// and pushed.
	qmu    sync.Mutex
	queue  []outItem
	spare  []outItem
	qbytes int
	// writing: one goroutine owns the socket's writes. live: "ready" has
	// been written, so queued frames may go out. ended: the reader has
	// returned, and no goroutine may start any more.
	writing, live, ended bool
	// workers are the socket's writer and ping goroutines; run waits for them.
	workers sync.WaitGroup
	// writeSince is when the write in progress began (unix ns; 0: none).
	// The hub's sweep drops a socket whose write takes over WriteTimeout.
	writeSince atomic.Int64
	pinging    atomic.Bool // a ping is in flight
	// typingSeen holds when each typing frame (which names its sender) was
	// last queued, to pass at most one per sender a second. It is nil until
	// a typing frame arrives.
	typingSeen map[string]time.Time

	// watching is guarded by h.mu.
	watching map[string]struct{}

	// While presence queries are in flight (querying > 0), pushed changes
	// are remembered in pushed, so that a query's answer, read from Redis
	// before a push arrived, cannot be queued after it and undo it. Both
	// are guarded by qmu, under which answers and pushes are queued.
	querying int
	pushed   map[string]bool

	quit      chan struct{}
	quitOnce  sync.Once
	quitCode  websocket.StatusCode
	quitWhy   string
	slow      atomic.Bool // closed as a slow consumer: nothing more is queued
	busy      sync.Mutex  // held while a request is answered
	closing   atomic.Bool // no new request is answered
	lastHeard atomic.Int64
}

func (c *conn) touch() { c.lastHeard.Store(time.Now().UnixNano()) }

// enqueue queues a frame without blocking. A queue over its bound, in
// frames or bytes, closes the socket as a slow consumer.
func (c *conn) enqueue(it outItem) {
	c.qmu.Lock()
	over, frames, bytes := c.enqueueLocked(it)
	c.qmu.Unlock()
	if over {
		c.closeSlow(frames, bytes)
	}
}

// enqueueLocked queues a frame; over reports that the queue went over its
// bound with it (frames and bytes queued then), and was dropped: the
// caller then calls closeSlow, without c.qmu. c.qmu is held.
func (c *conn) enqueueLocked(it outItem) (over bool, frames, bytes int) {
	if c.slow.Load() {
		return false, 0, 0
	}
	if len(c.queue) >= c.h.cfg.QueueSize || c.qbytes+len(it.frame) > c.h.cfg.QueueBytes {
		frames, bytes = len(c.queue), c.qbytes
		c.dropQueueLocked()
		return true, frames, bytes
	}
	c.queue = append(c.queue, it)
	c.qbytes += len(it.frame)
	c.kickLocked()
	return false, 0, 0
}

// enqueueEphemeral queues a frame that may be lost without harm (typing,
// pushed presence): it is dropped, not queued, while the queue is over
// half full, so that what other users cause can never fill a socket's
// queue and close it. A typing frame (typing true) passes at most once a
// second per sender; the frame itself names the sender.
func (c *conn) enqueueEphemeral(frame []byte, typing bool) {
	c.qmu.Lock()
	c.enqueueEphemeralLocked(frame, typing)
	c.qmu.Unlock()
}

// enqueueEphemeralLocked is enqueueEphemeral with c.qmu held.
func (c *conn) enqueueEphemeralLocked(frame []byte, typing bool) {
	cfg := &c.h.cfg
	if c.slow.Load() || len(c.queue) > cfg.QueueSize/2 || c.qbytes+len(frame) > cfg.QueueBytes/2 ||
		typing && !c.typingAllowedLocked(frame, time.Now()) {
		c.h.m.ephemeralDropped()
		return
	}
	c.queue = append(c.queue, outItem{frame: frame})
	c.qbytes += len(frame)
	c.kickLocked()
}

// maxTypingSenders bounds typingSeen: past it, typing from new senders is
// dropped until older entries age out.
const maxTypingSenders = 256

// typingAllowedLocked reports whether a typing frame may pass now, and
// records it. c.qmu is held.
func (c *conn) typingAllowedLocked(frame []byte, now time.Time) bool {
	if last, ok := c.typingSeen[string(frame)]; ok && now.Sub(last) < time.Second {
		return false
	}
	if c.typingSeen == nil {
		c.typingSeen = map[string]time.Time{}
	}
	if len(c.typingSeen) >= maxTypingSenders/2 {
		for k, t := range c.typingSeen {
			if now.Sub(t) >= time.Second {
				delete(c.typingSeen, k)
			}
		}
		if len(c.typingSeen) >= maxTypingSenders {
			return false
		}
	}
	c.typingSeen[string(frame)] = now
	return true
}

// kickLocked starts a writer goroutine when the socket is live, has
// something to write or to close, and nobody owns its writes. c.qmu is held.
func (c *conn) kickLocked() {
	if c.live && !c.writing && !c.ended && (len(c.queue) > 0 || c.quitting()) {
		c.writing = true
		c.workers.Add(1)
		go func() {
			defer c.workers.Done()
			c.writeLoop()
		}()
	}
}

// quitting reports whether a close has been asked for.
func (c *conn) quitting() bool {
	select {
	case <-c.quit:
		return true
	default:
		return false
	}
}

// dropQueueLocked marks the socket slow and releases its queued frames.
// c.qmu is held.
func (c *conn) dropQueueLocked() {
	c.slow.Store(true)
	c.queue, c.spare, c.qbytes, c.typingSeen = nil, nil, 0, nil
}

// closeSlow closes a socket that does not read its own traffic: it stops
// answering its requests at once, asks the writer for a close with 1008,
// and drops the TCP connection if that has not happened within
// slowCloseGrace (a writer stuck on a full socket cannot send it).
func (c *conn) closeSlow(frames, bytes int) {
	c.closing.Store(true)
	if !c.shutdownFirst(websocket.StatusPolicyViolation, "slow consumer: outbound queue full", c.h.m.slowConsumer) {
		return // already closing for another reason
	}
	c.h.log.Warn("closed a slow consumer", "user", c.user, "queued_frames", frames, "queued_bytes", bytes)
	if ws := c.ws; ws != nil {
		time.AfterFunc(slowCloseGrace, func() { ws.CloseNow() })
	}
}

// maxSpare is the largest array kept for reuse by a socket's queue; a
// larger one, left by a burst, goes back to the garbage collector.
const maxSpare = 64

// take empties the queue and returns what it held; the queue continues in
// the spare array.
func (c *conn) take() []outItem {
	c.qmu.Lock()
	q := c.queue
	c.queue, c.spare, c.qbytes = c.spare[:0], nil, 0
	c.qmu.Unlock()
	return q
}

// recycle keeps a written batch's array for the next one.
func (c *conn) recycle(q []outItem) {
	if cap(q) > maxSpare {
		return
	}
	clear(q)
	c.qmu.Lock()
	if c.spare == nil && !c.slow.Load() {
		c.spare = q[:0]
	}
	c.qmu.Unlock()
}

// flush writes everything queued, until the queue stays empty.
func (c *conn) flush() bool {
	for q := c.take(); len(q) > 0; q = c.take() {
		if !c.write(q...) || c.slow.Load() {
			return false
		}
		c.recycle(q)
	}
	return true
}

// shutdown asks for a close with code; the first call wins, and only it
// reports true.
func (c *conn) shutdown(code websocket.StatusCode, why string) bool {
	return c.shutdownFirst(code, why, nil)
}

// shutdownFirst is shutdown, calling first (when not nil) before the
// socket starts to end if this is the first reason given, so that what
// it records is visible by the time the socket is gone.
func (c *conn) shutdownFirst(code websocket.StatusCode, why string, first func()) bool {
	won := false
	c.quitOnce.Do(func() {
		won = true
		if first != nil {
			first()
		}
		c.quitCode, c.quitWhy = code, why
		close(c.quit)
	})
	c.qmu.Lock()
	c.kickLocked()
	c.qmu.Unlock()
	return won
}

// open sets the connection up: its presence entry, then "ready". It runs
// on the goroutine that upgraded the socket, whose stack the Redis calls
// may deepen, so that the socket's own goroutine (run) starts small and an
// idle socket keeps only the stack its read needs. On failure it has
// closed the socket and removed what it added, and reports false.
func (c *conn) open(ctx context.Context) (string, bool) {
	h := c.h
	c.touch()
	opCtx, opCancel := context.WithTimeout(ctx, h.cfg.OpTimeout)
	id, err := h.cfg.Presence.Add(opCtx, c.user)
	opCancel()
	if err != nil {
		h.logStoreFailure("presence add", c.user, err)
		c.ws.Close(websocket.StatusTryAgainLater, "unavailable: try again")
		c.ws.CloseNow()
		return "", false
	}
	h.setID(c, id)
	opCtx, opCancel = context.WithTimeout(ctx, h.cfg.OpTimeout)
	unread, err := h.cfg.Store.Unread(opCtx, c.user)
	opCancel()
	if err == nil {
		wctx, wcancel := context.WithTimeout(ctx, h.cfg.WriteTimeout)
		err = c.ws.Write(wctx, websocket.MessageText,
			encode(readyFrame{Type: "ready", User: c.user, Replica: h.cfg.Replica, Unread: unread}))
		wcancel()
	} else {
		h.logStoreFailure("unread", c.user, err)
		c.ws.Close(websocket.StatusTryAgainLater, "unavailable: try again")
	}
	if err != nil {
		c.ws.CloseNow()
		c.removePresence(ctx, id)
		return "", false
	}
	c.qmu.Lock()
	c.live = true
	c.kickLocked() // what was queued before "ready", or a close asked for since
	c.qmu.Unlock()
	return id, true
}

// removePresence removes the socket's presence entry id.
func (c *conn) removePresence(parent context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), c.h.cfg.OpTimeout)
	defer cancel()
	if err := c.h.cfg.Presence.Remove(ctx, c.user, id); err != nil {
		c.h.log.Warn("presence remove failed; the entry expires by itself", "user", c.user, "err", err)
	}
}

// run reads from an opened socket (presence entry id) until it ends. It
// returns only after the writer has ended and the presence entry is
// unregistered (removed, or left to the heartbeat in flight to remove).
func (c *conn) run(parent context.Context, id string) {
	h := c.h
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	defer cancel()
	defer c.ws.CloseNow()
	if !c.expires.IsZero() {
		expiry := time.AfterFunc(time.Until(c.expires), func() {
			c.shutdown(websocket.StatusPolicyViolation, "token expired")
		})
		defer expiry.Stop()
	}
	defer c.removePresence(parent, id)

	err := c.readLoop(ctx)
	cancel()
	c.qmu.Lock()
	c.ended = true
	closing := c.quitting()
	c.qmu.Unlock()
	if !closing {
		// Nothing is closing the socket on our side: make sure that a
		// writer still at work ends now.
		c.ws.CloseNow()
	}
	c.workers.Wait()
	if err != nil && !isNormalClose(err) && websocket.CloseStatus(err) == -1 {
		h.log.Debug("socket ended", "user", c.user, "err", err)
	}
}

// writeLoop writes what is queued until the queue stays empty, then
// returns and gives up ownership of the socket's writes; or it closes the
// socket when asked to, and keeps ownership, so that nothing is written
// after the close.
func (c *conn) writeLoop() {
	for {
		if c.quitting() {
			c.closeAsked()
			return
		}
		q := c.take()
		if len(q) == 0 {
			c.qmu.Lock()
			if len(c.queue) > 0 || c.quitting() {
				c.qmu.Unlock()
				continue
			}
			c.writing = false
			if cap(c.queue) > maxSpare {
				c.queue = nil
			}
			c.qmu.Unlock()
			return
		}
		if !c.write(q...) {
			return
		}
		c.recycle(q) // if the socket went slow meanwhile, closeAsked comes next
	}
}

// closeAsked closes the socket with the code shutdown was given. A drain
// (1012) first lets the request in flight finish and flushes its reply.
func (c *conn) closeAsked() {
	if c.quitCode == websocket.StatusServiceRestart {
		c.closing.Store(true)
		c.busy.Lock()
		c.busy.Unlock() //nolint:staticcheck // an empty section waits for the reader
		if !c.flush() {
			return
		}
	}
	c.ws.Close(c.quitCode, c.quitWhy)
}

// write writes frames, in one system call (see outbox): one message each,
// or joined into few messages with batch framing (writeJoined). It stops
// early when the socket turns out to be a slow consumer. A write is not
// given a context (which would arm a timer per write); the hub's sweep
// bounds it instead, dropping a socket whose write takes over WriteTimeout.
// An error drops the socket.
func (c *conn) write(frames ...outItem) bool {
	c.writeSince.Store(time.Now().UnixNano())
	c.out.cork()
	var err error
	if c.batch && len(frames) > 1 {
		err = c.writeJoined(frames)
	} else {
		for _, it := range frames {
			if c.slow.Load() {
				break
			}
			if err = c.ws.Write(context.Background(), websocket.MessageText, it.frame); err != nil {
				break
			}
		}
	}
	if uerr := c.out.uncork(); err == nil {
		err = uerr
	}
	c.writeSince.Store(0)
	if err != nil {
		c.ws.CloseNow()
		return false
	}
	for _, it := range frames {
		if it.stored != 0 {
			c.h.m.delivered(time.Since(time.UnixMicro(it.stored)))
		}
	}
	return true
}

// sweep is the hub's periodic look at the socket, under the hub's read
// lock: it reports a write that has taken over WriteTimeout (stuck), whose
// TCP connection the hub then drops; a peer silent for PingInterval is
// pinged by a short-lived goroutine, and closed with 1008 if no pong comes
// within PingInterval/2. now is in unix ns.
func (c *conn) sweep(now int64) (stuck bool) {
	cfg := &c.h.cfg
	if since := c.writeSince.Load(); since != 0 && now-since > int64(cfg.WriteTimeout) {
		return c.ws != nil
	}
	if now-c.lastHeard.Load() < int64(cfg.PingInterval) || !c.pinging.CompareAndSwap(false, true) {
		return false
	}
	c.qmu.Lock()
	if !c.live || c.ended {
		c.qmu.Unlock()
		c.pinging.Store(false)
		return false
	}
	c.workers.Add(1)
	c.qmu.Unlock()
	go func() {
		defer c.workers.Done()
		defer c.pinging.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), cfg.PingInterval/2)
		err := c.ws.Ping(ctx)
		cancel()
		if err != nil {
			c.shutdown(websocket.StatusPolicyViolation, "no pong")
		}
	}()
	return false
}

// readLoop reads and answers frames until the socket ends. Reads take no
// context: a context would cost a timer registration per frame, and every
// way a socket ends (the peer, the writer, a drain) closes it, which ends
// the read. Each frame is read into a pooled buffer, which goes back to
// the pool once the frame is answered (nothing keeps a reference to it).
func (c *conn) readLoop(ctx context.Context) error {
	for {
		typ, r, err := c.ws.Reader(context.Background())
		if err != nil {
			return err
		}
		buf := c.h.getBuf()
		if _, err := buf.ReadFrom(r); err != nil {
			c.h.putBuf(buf)
			return err
		}
		c.touch()
		c.busy.Lock()
		if c.closing.Load() {
			// The replica is draining: the client retries elsewhere.
			c.busy.Unlock()
			c.h.putBuf(buf)
			continue
		}
		c.handle(ctx, typ, buf.Bytes())
		c.busy.Unlock()
		c.h.putBuf(buf)
	}
}

// reply answers the client. When nothing is queued and nobody owns the
// socket's writes, the reader writes the reply itself, which spares a
// hand-off to a writer goroutine; otherwise the reply is queued behind
// what is there.
func (c *conn) reply(v any) { c.replyFrame(encode(v)) }

// replyFrame answers a request with a rendered frame, as reply does.
func (c *conn) replyFrame(frame []byte) {
	c.qmu.Lock()
	if !c.live || c.writing || c.ended || len(c.queue) > 0 || c.slow.Load() || c.quitting() {
		c.qmu.Unlock()
		c.enqueue(outItem{frame: frame})
		return
	}
	c.writing = true
	c.qmu.Unlock()
	if !c.write(outItem{frame: frame}) {
		return // the socket is closed; it keeps its owner, so nothing else is written
	}
	c.qmu.Lock()
	c.writing = false
	c.kickLocked() // what was queued meanwhile, or a close asked for
	c.qmu.Unlock()
}

func (c *conn) fail(id, code, msg string) {
	c.h.m.error(code)
	c.reply(errorFrame{Type: "error", ID: id, Code: code, Message: msg})
}

// handle answers one client frame. Bad input gets an error frame; the
// socket stays open.
func (c *conn) handle(ctx context.Context, typ websocket.MessageType, data []byte) {
	// Every frame counts against the rate limit, bad ones too: they cost
	// parsing and a reply as well.
	if r := c.limiter.Reserve(); r.Delay() > 0 {
		wait := r.Delay()
		r.Cancel()
		c.h.m.rateLimited()
		secs := math.Ceil(wait.Seconds()*1000) / 1000
		c.h.m.error(CodeRateLimited)
		c.reply(errorFrame{Type: "error", ID: lenientID(data), Code: CodeRateLimited,
			Message: "too many frames: slow down", RetryAfter: &secs})
		return
	}
	if typ != websocket.MessageText {
		c.fail("", CodeBadRequest, "frames must be text frames holding JSON")
		return
	}
	f, err := decodeFrame(data)
	if err != nil {
		id := ""
		if utf8.Valid(data) {
			id = lenientID(data)
		}
		c.fail(id, CodeBadRequest, err.Error())
		return
	}
	id := ""
	if f.ID != nil {
		id = *f.ID
	}
	c.h.m.frame(f.Type)
	// Redis calls are bounded by the client's own read, write and pool
	// timeouts; ctx ends them early when the socket ends.
	switch f.Type {
	case "send":
		c.send(ctx, id, &f)
	case "history":
		c.history(ctx, id, &f)
	case "read":
		c.read(ctx, id, &f)
	case "inbox":
		c.inbox(ctx, id, &f)
	case "presence":
		c.presence(ctx, id, &f)
	case "typing":
		c.typing(ctx, id, &f)
	case "ping":
		c.reply(pongFrame{Type: "pong", ID: id})
	case "":
		c.fail(id, CodeBadRequest, `missing "type"`)
	default:
		c.fail(id, CodeBadRequest, fmt.Sprintf("unknown frame type %q", f.Type))
	}
}

// loneSurrogate reports whether a JSON text holds a \uD800-\uDFFF escape
// that is not a high surrogate followed by a low one.
func loneSurrogate(data []byte) bool {
	hex4 := func(b []byte) (rune, bool) {
		if len(b) < 4 {
			return 0, false
		}
		var r rune
		for _, ch := range b[:4] {
			switch {
			case ch >= '0' && ch <= '9':
				r = r<<4 | rune(ch-'0')
			case ch >= 'a' && ch <= 'f':
				r = r<<4 | rune(ch-'a'+10)
			case ch >= 'A' && ch <= 'F':
				r = r<<4 | rune(ch-'A'+10)
			default:
				return 0, false
			}
		}
		return r, true
	}
	for i := 0; i < len(data); i++ {
		if data[i] != '\\' {
			continue
		}
		i++ // the escaped character
		if i >= len(data) || data[i] != 'u' {
			continue
		}
		r, ok := hex4(data[i+1:])
		if !ok {
			continue // not a valid escape: the JSON decoder reports it
		}
		i += 4
		switch {
		case r >= 0xDC00 && r <= 0xDFFF:
			return true // a low surrogate with no high one before it
		case r >= 0xD800 && r <= 0xDBFF:
			if i+2 >= len(data) || data[i+1] != '\\' || data[i+2] != 'u' {
				return true
			}
			lo, ok := hex4(data[i+3:])
			if !ok || lo < 0xDC00 || lo > 0xDFFF {
				return true
			}
			i += 6
		}
	}
	return false
}

// lenientID digs the "id" out of a frame that did not decode, so the error
// still names the request.
func lenientID(data []byte) string {
	var v struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(data, &v) != nil {
		return ""
	}
	var s string
	if json.Unmarshal(v.ID, &s) != nil {
		return ""
	}
	return s
}

// checkUser validates a user id named in field of a frame.
func (c *conn) checkUser(id, field, user string) bool {
	if user == "" {
		c.fail(id, CodeBadRequest, fmt.Sprintf("%q is required", field))
		return false
	}
	if err := chat.ValidateUser(user); err != nil {
		c.fail(id, CodeBadRequest, fmt.Sprintf("%s: %s", field, err))
		return false
	}
	return true
}

// storeFailed answers a failed Store call: bad input is the client's, the
// rest is Redis being unavailable.
func (c *conn) storeFailed(id, what string, err error) {
	switch {
	case errors.Is(err, context.Canceled):
		return // the socket ended while the call ran: nobody to answer
	case errors.Is(err, chat.ErrTooLarge):
		c.fail(id, CodeTooLarge, err.Error())
	case errors.Is(err, chat.ErrInvalid):
		c.fail(id, CodeBadRequest, err.Error())
	default:
		c.h.logStoreFailure(what, c.user, err)
		c.fail(id, CodeUnavailable, what+" failed: storage unavailable, retry with the same id")
	}
}

func (c *conn) send(ctx context.Context, id string, f *inFrame) {
	if !c.checkUser(id, "to", f.To) {
		return
	}
	if f.Text == nil {
		c.fail(id, CodeBadRequest, `"text" is required`)
		return
	}
	if f.ID != nil {
		if err := chat.ValidateClientID(id); err != nil {
			c.fail(id, CodeBadRequest, err.Error())
			return
		}
	}
	msg, dup, err := c.h.cfg.Store.Send(ctx, chat.SendRequest{
		From: c.user, To: f.To, Text: *f.Text, ClientID: id, Origin: c.id,
	})
	if err != nil {
		c.storeFailed(id, "send", err)
		return
	}
	if !dup {
		c.h.m.stored()
	}
	c.replyFrame(sentFrame(id, msg))
}

func (c *conn) history(ctx context.Context, id string, f *inFrame) {
	if !c.checkUser(id, "with", f.With) {
		return
	}
	var before int64
	if f.Before != nil {
		if *f.Before < 1 {
			c.fail(id, CodeBadRequest, `"before" must be a seq of at least 1`)
			return
		}
		before = *f.Before
	}
	limit := chat.DefaultPageSize
	if f.Limit != nil {
		if *f.Limit < 1 || *f.Limit > chat.MaxPageSize {
			c.fail(id, CodeBadRequest, fmt.Sprintf(`"limit" must be 1 to %d`, chat.MaxPageSize))
			return
		}
		limit = *f.Limit
	}
	page, err := c.h.cfg.Store.History(ctx, c.user, f.With, before, limit)
	if err != nil {
		c.storeFailed(id, "history", err)
		return
	}
	// Reading a conversation marks it read up to what it held and resets
	// the seed's count, as the seed's msgread does, unless the client only
	// peeks (catching up in the background). Unread in the reply is the
	// count before.
	if last := page.Read + page.Unread; last > 0 && (f.Peek == nil || !*f.Peek) {
		st, err := c.h.cfg.Store.MarkRead(ctx, c.user, f.With, last, c.id)
		if err != nil {
			c.storeFailed(id, "history", err)
			return
		}
		page.Read = st.Read
	}
	// A page, unlike a small reply, always goes through the queue: a client
	// that asks for pages without reading them then goes over its byte bound
	// and is closed at once, instead of holding its reader in a stalled
	// write until the write timeout.
	c.enqueue(outItem{frame: encodeCut(len(page.Messages), c.h.cfg.QueueBytes/2, func(k int, cut bool) any {
		return historyFrame{Type: "history", ID: id, With: f.With, Messages: messageList(page.Messages[:k]),
			Unread: page.Unread, Read: page.Read, PeerRead: page.PeerRead, More: page.More || cut}
	})})
}

func (c *conn) read(ctx context.Context, id string, f *inFrame) {
	if !c.checkUser(id, "with", f.With) {
		return
	}
	var seq int64 // 0: up to the newest
	if f.Seq != nil {
		if *f.Seq < 1 {
			c.fail(id, CodeBadRequest, `"seq" must be a seq of at least 1`)
			return
		}
		seq = *f.Seq
	}
	st, err := c.h.cfg.Store.MarkRead(ctx, c.user, f.With, seq, c.id)
	if err != nil {
		c.storeFailed(id, "read", err)
		return
	}
	c.reply(readFrame{Type: "read", ID: id, With: f.With, Read: st.Read, Unread: st.Unread})
}

func (c *conn) inbox(ctx context.Context, id string, f *inFrame) {
	limit := chat.DefaultInboxSize
	if f.Limit != nil {
		if *f.Limit < 1 || *f.Limit > chat.MaxInboxSize {
			c.fail(id, CodeBadRequest, fmt.Sprintf(`"limit" must be 1 to %d`, chat.MaxInboxSize))
			return
		}
		limit = *f.Limit
	}
	convs, more, err := c.h.cfg.Store.Inbox(ctx, c.user, limit)
	if err != nil {
		c.storeFailed(id, "inbox", err)
		return
	}
	// Through the queue, as a history page is (see history).
	c.enqueue(outItem{frame: encodeCut(len(convs), c.h.cfg.QueueBytes/2, func(k int, cut bool) any {
		return inboxFrame{Type: "inbox", ID: id, Conversations: conversationList(convs[:k]), More: more || cut}
	})})
}

// maxPresenceUsers bounds the users of one presence request.
const maxPresenceUsers = 200

func (c *conn) presence(ctx context.Context, id string, f *inFrame) {
	if len(f.Users) == 0 || len(f.Users) > maxPresenceUsers {
		c.fail(id, CodeBadRequest, fmt.Sprintf(`"users" must list 1 to %d user ids`, maxPresenceUsers))
		return
	}
	for _, u := range f.Users {
		if !c.checkUser(id, "users", u) {
			return
		}
	}
	// Watch first, so that no change after the answer is missed. Without
	// "watch" the watched set is left as it is; "watch":false unwatches.
	if f.Watch != nil && !c.h.watch(c, f.Users, *f.Watch) {
		c.fail(id, CodeBadRequest, fmt.Sprintf("a socket may watch at most %d users", c.h.cfg.MaxWatch))
		return
	}
	c.qmu.Lock()
	c.querying++
	c.qmu.Unlock()
	online, err := c.h.cfg.Presence.Online(ctx, f.Users)
	if err != nil {
		c.qmu.Lock()
		c.endQueryLocked()
		c.qmu.Unlock()
		c.storeFailed(id, "presence", err)
		return
	}
	// The answer is queued under the same lock as pushes, after merging
	// those that arrived meanwhile: no push can slip between the merge
	// and the answer.
	c.qmu.Lock()
	for u, on := range c.pushed {
		if _, asked := online[u]; asked {
			online[u] = on // the push is at least as new as the read
		}
	}
	c.endQueryLocked()
	over, frames, bytes := c.enqueueLocked(outItem{frame: encode(presenceFrame{Type: "presence", ID: id, Online: online})})
	c.qmu.Unlock()
	if over {
		c.closeSlow(frames, bytes)
	}
}

// endQueryLocked ends a presence query. c.qmu is held.
func (c *conn) endQueryLocked() {
	c.querying--
	if c.querying == 0 {
		c.pushed = nil
	}
}

// pushPresence queues a pushed presence change of user.
func (c *conn) pushPresence(user string, online bool, frame []byte) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.querying > 0 {
		if c.pushed == nil {
			c.pushed = map[string]bool{}
		}
		c.pushed[user] = online
	}
	c.enqueueEphemeralLocked(frame, false)
}

func (c *conn) typing(ctx context.Context, id string, f *inFrame) {
	if !c.checkUser(id, "to", f.To) {
		return
	}
	if err := c.h.cfg.Store.Typing(ctx, c.user, f.To); err != nil {
		// Typing is best effort: nothing to retry.
		c.h.log.Debug("typing failed", "user", c.user, "err", err)
	}
}
