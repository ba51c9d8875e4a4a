package failover

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// world is what every chatter shares.
type world struct {
	lb       string        // ws://127.0.0.1:port of the balancer
	stopChat chan struct{} // closed: start no new message to the partner
	// backAfter, when set (unix ns), has each chatter note when a message
	// stored after it first arrives live (chatter.liveBack).
	backAfter atomic.Int64
}

// outgoing is a message being sent; it keeps its id over every retry.
type outgoing struct {
	id, to, text string
	attempts     int
}

// chatter is one simulated user: one socket through the balancer, chatting
// with its partner, reconnecting with jittered backoff and catching up as
// PROTOCOL.md section 3a says.
type chatter struct {
	w       *world
	idx     int
	user    string
	partner string
	token   string

	offTo   string // offline user this chatter also writes to ("" for none)
	offLeft int    // messages still to start to offTo; owned by run

	mu         sync.Mutex
	replica    string // replica of the live socket, "" while down
	live       bool   // connected and caught up
	hold       bool   // after the next drop, wait for release
	release    chan struct{}
	heldDown   time.Time
	contig     map[string]int64          // conv -> highest seq up to which every message is known
	known      map[string]map[int64]bool // conv -> seqs known (own acked and received)
	got        map[string]map[int64]string
	gotLive    int       // distinct messages first seen live
	gotHistory int       // distinct messages first seen in history
	dupFrames  int       // a (conv, seq) seen again, in a history page overlapping live delivery
	dupLive    int       // a (conv, seq) delivered live twice
	liveBack   time.Time // first live arrival of a message stored after w.backAfter
	liveSeen   map[convSeq]bool
	sent       []*outgoing
	acked      map[string]message // client id -> stored message from `sent`
	errCodes   map[string]int
	drops      map[string]int // cause -> count
	reconnects []time.Duration
	resyncs    int
	dialFails  int
	lastDial   string
	problems   []string // the server contradicting PROTOCOL.md
}

func newChatter(w *world, idx int, user, partner, token string) *chatter {
	return &chatter{
		w: w, idx: idx, user: user, partner: partner, token: token,
		release:  make(chan struct{}),
		contig:   map[string]int64{},
		known:    map[string]map[int64]bool{},
		got:      map[string]map[int64]string{},
		acked:    map[string]message{},
		errCodes: map[string]int{},
		drops:    map[string]int{},
		liveSeen: map[convSeq]bool{},
	}
}

// convSeq names one stored message.
type convSeq struct {
	conv string
	seq  int64
}

// problem records a protocol violation, at most 20 per chatter.
func (c *chatter) problem(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.problems) < 20 {
		c.problems = append(c.problems, fmt.Sprintf("user %s: ", c.user)+fmt.Sprintf(format, args...))
	}
}

// markKnown notes that seq of conv is known; c.mu must be held.
func (c *chatter) markKnown(conv string, seq int64) {
	k := c.known[conv]
	if k == nil {
		k = map[int64]bool{}
		c.known[conv] = k
	}
	k[seq] = true
	n := c.contig[conv]
	for k[n+1] {
		n++
	}
	c.contig[conv] = n
}

// receive records a message addressed to c, live or from history.
func (c *chatter) receive(m message, live bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.got[m.Conv]
	if g == nil {
		g = map[int64]string{}
		c.got[m.Conv] = g
	}
	if live {
		k := convSeq{m.Conv, m.Seq}
		if c.liveSeen[k] {
			c.dupLive++
		}
		c.liveSeen[k] = true
		if at := c.w.backAfter.Load(); at != 0 && c.liveBack.IsZero() && m.Time*1e9 > float64(at) {
			c.liveBack = time.Now()
		}
	}
	if prev, ok := g[m.Seq]; ok {
		c.dupFrames++
		if prev != m.Text {
			if len(c.problems) < 20 {
				c.problems = append(c.problems, fmt.Sprintf("user %s: %s seq %d came as %q and as %q", c.user, m.Conv, m.Seq, prev, m.Text))
			}
		}
		return
	}
	g[m.Seq] = m.Text
	if live {
		c.gotLive++
	} else {
		c.gotHistory++
	}
	c.markKnown(m.Conv, m.Seq)
}

// onPush handles frames that answer no request; it runs on the reader goroutine.
func (c *chatter) onPush(resync chan<- struct{}) func(frame) {
	return func(f frame) {
		switch f.Type {
		case "message":
			m := *f.msg
			switch {
			case m.To == c.user && m.From != c.user:
				c.receive(m, true)
			case m.From == c.user:
				// PROTOCOL.md: the sender's other sockets get it; this user has one.
				c.problem("own message %s seq %d echoed to the sending socket", m.Conv, m.Seq)
			default:
				c.problem("got a message of someone else: %s", f.raw)
			}
		case "resync":
			c.mu.Lock()
			c.resyncs++
			c.mu.Unlock()
			select {
			case resync <- struct{}{}:
			default:
			}
		case "presence", "receipt", "typing":
		case "error":
			c.problem("error frame without request: %s", f.raw)
		default:
			c.problem("unexpected frame: %s", f.raw)
		}
	}
}

// next picks the next message to send, nil when the plan is done. n counts
// the messages started.
func (c *chatter) next(n *int) *outgoing {
	stopped := false
	select {
	case <-c.w.stopChat:
		stopped = true
	default:
	}
	var to string
	switch {
	case c.offLeft > 0 && (stopped || *n%5 == 4):
		c.offLeft--
		to = c.offTo
	case !stopped:
		to = c.partner
	default:
		return nil
	}
	*n++
	id := fmt.Sprintf("%s-m%d", c.user, *n)
	o := &outgoing{id: id, to: to, text: fmt.Sprintf("%s %s>%s héllo 你好 #%d", id, c.user, to, *n)}
	c.mu.Lock()
	c.sent = append(c.sent, o)
	c.mu.Unlock()
	return o
}

// connect dials through the balancer until it gets `ready`, backing off with
// jitter. nil when ctx ended.
func (c *chatter) connect(ctx context.Context, resync chan struct{}, reconnect bool) *wsConn {
	if reconnect && !sleepCtx(ctx, jitter(300*time.Millisecond)) {
		return nil
	}
	backoff := 100 * time.Millisecond
	for {
		conn, err := dialChat(ctx, c.w.lb, c.token, c.onPush(resync))
		if err == nil {
			if conn.ready.User != c.user {
				c.problem("ready names user %q", conn.ready.User)
			}
			if conn.ready.Replica == "" {
				c.problem("ready names no replica: %s", conn.ready.raw)
			}
			c.mu.Lock()
			c.replica = conn.ready.Replica
			c.mu.Unlock()
			return conn
		}
		c.mu.Lock()
		c.dialFails++
		c.lastDial = err.Error()
		c.mu.Unlock()
		if !sleepCtx(ctx, jitter(backoff)) {
			return nil
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// request sends a request frame, retrying unavailable/internal a few times
// on the same socket.
func (c *chatter) request(ctx context.Context, conn *wsConn, id string, f map[string]any) (frame, error) {
	for try := 0; ; try++ {
		r, err := conn.request(ctx, id, f, 5*time.Second)
		var pe *protoError
		if errors.As(err, &pe) && (pe.Code == "unavailable" || pe.Code == "internal") && try < 5 {
			c.mu.Lock()
			c.errCodes[pe.Code]++
			c.mu.Unlock()
			sleepCtx(ctx, jitter(200*time.Millisecond))
			continue
		}
		return r, err
	}
}

// catchUp fetches `inbox` and pages `history` back from the newest message
// of each conversation to the last contiguous seq, as PROTOCOL.md 3a says.
func (c *chatter) catchUp(ctx context.Context, conn *wsConn, rid *int) error {
	*rid++
	id := fmt.Sprintf("%s-r%d", c.user, *rid)
	in, err := c.request(ctx, conn, id, map[string]any{"type": "inbox", "id": id})
	if err != nil {
		return fmt.Errorf("inbox: %w", err)
	}
	for _, e := range in.Conversations {
		if e.Last == nil {
			c.problem("inbox entry without last: %+v", e)
			continue
		}
		conv := e.Last.Conv
		c.mu.Lock()
		have := c.contig[conv]
		c.mu.Unlock()
		if e.Last.Seq <= have {
			continue
		}
		before := int64(0)
		for page := 0; page < 1000; page++ {
			*rid++
			id := fmt.Sprintf("%s-r%d", c.user, *rid)
			// Ask for the gap, not more: the page overlaps live delivery least.
			limit := min(max(e.Last.Seq-have, 1), 200)
			if before > 0 {
				limit = min(max(before-1-have, 1), 200)
			}
			req := map[string]any{"type": "history", "with": e.With, "limit": limit, "peek": true, "id": id}
			if before > 0 {
				req["before"] = before
			}
			h, err := c.request(ctx, conn, id, req)
			if err != nil {
				return fmt.Errorf("history with %s: %w", e.With, err)
			}
			lowest := int64(-1)
			for _, m := range h.Messages {
				if m.Conv != conv {
					c.problem("history with %s returned conv %s, inbox said %s", e.With, m.Conv, conv)
				}
				if before > 0 && m.Seq >= before {
					c.problem("history before %d returned seq %d", before, m.Seq)
				}
				if lowest < 0 || m.Seq < lowest {
					lowest = m.Seq
				}
				switch {
				case m.From == c.user:
					c.mu.Lock()
					c.markKnown(m.Conv, m.Seq)
					c.mu.Unlock()
				case m.To == c.user:
					c.receive(m, false)
				default:
					c.problem("history with %s has a message of others: %+v", e.With, m)
				}
			}
			if !h.More || len(h.Messages) == 0 || lowest <= have+1 {
				break
			}
			before = lowest
		}
	}
	return nil
}

// setLive records whether the chatter is connected and caught up.
func (c *chatter) setLive(live bool) {
	c.mu.Lock()
	c.live = live
	if !live {
		c.replica = ""
	}
	c.mu.Unlock()
}

// waitHeld blocks, while the chatter is held, until it is released.
func (c *chatter) waitHeld(ctx context.Context) bool {
	c.mu.Lock()
	held := c.hold
	if held {
		c.heldDown = time.Now()
	}
	c.mu.Unlock()
	if !held {
		return true
	}
	select {
	case <-c.release:
		return true
	case <-ctx.Done():
		return false
	}
}

// dropped closes conn and records why it ended.
func (c *chatter) dropped(conn *wsConn, cause string) {
	conn.close()
	if code := conn.closeCode(); code != -1 && cause == "" {
		cause = fmt.Sprintf("close %d", int(code))
	}
	if cause == "" {
		cause = "dropped"
	}
	c.setLive(false)
	c.mu.Lock()
	c.drops[cause]++
	c.mu.Unlock()
}

// run is the chatter's life: it ends when ctx does. sendsDone is called once,
// when every planned message has been acknowledged.
func (c *chatter) run(ctx context.Context, sendsDone func()) {
	resync := make(chan struct{}, 1)
	var (
		conn       *wsConn
		cur        *outgoing
		n, rid     int
		doneSends  bool
		downSince  time.Time
		everUp     bool
		wasHeld    bool
		paceTimer  = time.NewTimer(0)
		pacePassed = true
	)
	defer func() {
		if conn != nil {
			conn.close()
		}
		if !doneSends {
			sendsDone()
		}
	}()
	for ctx.Err() == nil {
		if conn == nil {
			c.mu.Lock()
			wasHeld = c.hold
			c.mu.Unlock()
			if !c.waitHeld(ctx) {
				return
			}
			conn = c.connect(ctx, resync, everUp)
			if conn == nil {
				return
			}
			if everUp && !wasHeld {
				c.mu.Lock()
				c.reconnects = append(c.reconnects, time.Since(downSince))
				c.mu.Unlock()
			}
			if wasHeld {
				c.mu.Lock()
				c.hold = false
				c.mu.Unlock()
			}
			everUp = true
			select { // a resync for an older socket is moot after a full catch-up
			case <-resync:
			default:
			}
			if err := c.catchUp(ctx, conn, &rid); err != nil {
				if ctx.Err() == nil {
					c.dropped(conn, "catch-up: "+kind(err))
				}
				conn, downSince = nil, time.Now()
				continue
			}
			c.setLive(true)
		}
		if cur == nil && !doneSends {
			cur = c.next(&n)
			if cur == nil {
				doneSends = true
				sendsDone()
			}
		}
		// Wait for the pace timer (or, with nothing to send, for the end),
		// serving resyncs and noticing a dropped socket meanwhile.
		var wait <-chan time.Time
		if cur != nil && !pacePassed {
			wait = paceTimer.C
		}
		if cur == nil || wait != nil {
			select {
			case <-ctx.Done():
				return
			case <-conn.done:
				c.dropped(conn, "")
				conn, downSince = nil, time.Now()
				continue
			case <-resync:
				if err := c.catchUp(ctx, conn, &rid); err != nil && ctx.Err() == nil {
					c.dropped(conn, "catch-up: "+kind(err))
					conn, downSince = nil, time.Now()
				}
				continue
			case <-wait:
				pacePassed = true
			}
		}
		cur.attempts++
		r, err := conn.request(ctx, cur.id, map[string]any{"type": "send", "to": cur.to, "text": cur.text, "id": cur.id}, 5*time.Second)
		var pe *protoError
		switch {
		case err == nil:
			m := r.msg
			if m == nil || m.From != c.user || m.To != cur.to || m.Text != cur.text || m.Seq < 1 || m.Conv != convKey(c.user, cur.to) {
				c.problem("sent for %s does not match the message sent: %s", cur.id, r.raw)
			}
			c.mu.Lock()
			if m != nil {
				c.acked[cur.id] = *m
				c.markKnown(m.Conv, m.Seq)
			}
			c.mu.Unlock()
			cur = nil
			select {
			case <-c.w.stopChat:
				paceTimer.Reset(0)
			default:
				paceTimer.Reset(100*time.Millisecond + rand.N(100*time.Millisecond))
			}
			pacePassed = false
		case errors.As(err, &pe):
			c.mu.Lock()
			c.errCodes[pe.Code]++
			c.mu.Unlock()
			switch pe.Code {
			case "unavailable", "internal":
				sleepCtx(ctx, jitter(200*time.Millisecond))
			case "rate_limited":
				sleepCtx(ctx, time.Duration(pe.RetryAfter*float64(time.Second))+10*time.Millisecond)
			default:
				c.problem("send %s refused: %v", cur.id, pe)
				cur = nil // nothing was stored; do not retry
			}
		case errors.Is(err, errDropped):
			if ctx.Err() != nil {
				return
			}
			cause := ""
			if errors.Is(err, errNoReply) {
				cause = "no reply"
			}
			c.dropped(conn, cause)
			conn, downSince = nil, time.Now()
		default:
			c.problem("send %s: %v", cur.id, err)
			c.dropped(conn, "error")
			conn, downSince = nil, time.Now()
		}
	}
}

// kind names an error's class for the drop statistics.
func kind(err error) string {
	var pe *protoError
	if errors.As(err, &pe) {
		return pe.Code
	}
	if errors.Is(err, errNoReply) {
		return "no reply"
	}
	if errors.Is(err, errDropped) {
		return "dropped"
	}
	return "error"
}

// crowd is a set of chatters running until the test ends.
type crowd struct {
	chatters       []*chatter
	stop           context.CancelFunc
	running, sends sync.WaitGroup
}

// startCrowd runs every chatter, and returns once all have connected
// through the balancer.
func startCrowd(ctx context.Context, t *testing.T, chatters []*chatter, logf func(string, ...any)) *crowd {
	t.Helper()
	runCtx, stop := context.WithCancel(ctx)
	cr := &crowd{chatters: chatters, stop: stop}
	cr.sends.Add(len(chatters))
	for _, c := range chatters {
		cr.running.Add(1)
		go func() {
			defer cr.running.Done()
			var once sync.Once
			c.run(runCtx, func() { once.Do(cr.sends.Done) })
		}()
	}
	t.Cleanup(func() { stop(); cr.running.Wait() })
	if !waitAll(ctx, chatters, 30*time.Second, func(c *chatter) bool { return c.live }) {
		t.Fatalf("not every client connected in 30s: %s", dialReport(chatters))
	}
	logf("%d clients connected through the balancer: %v", len(chatters), spread(chatters))
	return cr
}

// finish waits, once the chat has stopped, until every message sent is
// acknowledged and every client is back and caught up, lets the last live
// deliveries arrive, and stops the chatters: their state may then be read
// without locks.
func (cr *crowd) finish(ctx context.Context, t *testing.T) {
	t.Helper()
	sendsDone := make(chan struct{})
	go func() { cr.sends.Wait(); close(sendsDone) }()
	select {
	case <-sendsDone:
	case <-time.After(60 * time.Second):
		t.Fatalf("messages still unacknowledged after 60s: %s", pendingReport(cr.chatters))
	}
	if !waitAll(ctx, cr.chatters, 30*time.Second, func(c *chatter) bool { return c.live }) {
		t.Fatalf("not every client back and caught up in 30s: %s", dialReport(cr.chatters))
	}
	sleepCtx(ctx, 1500*time.Millisecond) // the last live deliveries
	cr.stop()
	cr.running.Wait()
}
