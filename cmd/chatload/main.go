// Command chatload puts a chat load on a chatd server and reports the
// throughput and latencies it saw: users connected in pairs, each sending
// at a fixed rate, every send acknowledged and delivered.
//
//	chatload -url ws://127.0.0.1:8080/ws -users 1000 -rate 15000 -duration 30s
//
// Latencies: "ack" is send to "sent"; "delivery" is send to the peer's
// "message". With -secret, clients present tokens; otherwise ?user=.
// Clients offer batch framing (the chatd.batch subprotocol) unless
// -batch=false; every figure counts frames, not WebSocket messages.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"github.com/chatd/chatd/auth"
	"github.com/chatd/chatd/internal/fdlimit"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "chatload:", err)
		os.Exit(1)
	}
}

type config struct {
	url      string
	users    int
	rate     float64
	duration time.Duration
	warmup   time.Duration
	secret   string
	prefix   string
	text     int
	metrics  string
	batch    bool
	pid      int
	redisPID int
	grace    time.Duration
	from     string
	// clients dial from the -from addresses, in turn; empty: the
	// default client.
	clients []*http.Client
}

// fileHeadroom is how many open files chatload needs besides its sockets.
const fileHeadroom = 64

// sourceClients returns an HTTP client per local address in the
// comma-separated list from, each dialing from its address.
func sourceClients(from string) ([]*http.Client, error) {
	var clients []*http.Client
	for _, a := range strings.Split(from, ",") {
		ip := net.ParseIP(strings.TrimSpace(a))
		if ip == nil {
			return nil, fmt.Errorf("-from: %q is not an IP address", a)
		}
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 10 * time.Second}
		clients = append(clients, &http.Client{Transport: &http.Transport{DialContext: d.DialContext}})
	}
	return clients, nil
}

// batchSubprotocol is the subprotocol of batch framing (docs/PROTOCOL.md,
// section 1): a message holds one or more frames, separated by "\n".
const batchSubprotocol = "chatd.batch"

// stats gathers latencies from every connection.
type stats struct {
	mu       sync.Mutex
	ack      []time.Duration
	delivery []time.Duration
	sent     atomic.Int64
	acked    atomic.Int64
	recv     atomic.Int64
	errs     atomic.Int64
	messages atomic.Int64 // WebSocket messages read
	frames   atomic.Int64 // frames in them
	counting atomic.Bool
	// Over the whole run, warm-up and grace included: sends answered
	// (acknowledged or refused), acknowledged messages not delivered yet,
	// and deliveries of a message delivered before.
	answered atomic.Int64
	owed     atomic.Int64
	dups     atomic.Int64
}

// flow is what became of one user's messages. Each text carries the
// sender's count, 1, 2, 3, …; the sender's socket reads the acks and the
// peer's socket the deliveries, so both mark the count here.
type flow struct {
	mu    sync.Mutex
	state []uint8 // by count - 1: flowAcked, flowDelivered
}

const (
	flowAcked uint8 = 1 << iota
	flowDelivered
)

// mark sets bit for count n (from 1) and returns what was set before.
func (f *flow) mark(n int64, bit uint8) uint8 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n < 1 || n > 1<<30 {
		return 0
	}
	for int64(len(f.state)) < n {
		f.state = append(f.state, 0)
	}
	before := f.state[n-1]
	f.state[n-1] |= bit
	return before
}

// textCount returns the sender's count from a frame's text ("<ns> <n> …").
func textCount(frame []byte) (int64, bool) {
	_, rest, _ := bytes.Cut(field(frame, `"text":"`), []byte(" "))
	count, _, _ := bytes.Cut(rest, []byte(" "))
	n, err := strconv.ParseInt(string(count), 10, 64)
	return n, err == nil
}

func (s *stats) add(ack bool, d time.Duration) {
	if !s.counting.Load() {
		return
	}
	s.mu.Lock()
	if ack {
		s.ack = append(s.ack, d)
	} else {
		s.delivery = append(s.delivery, d)
	}
	s.mu.Unlock()
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c config
	fs := flag.NewFlagSet("chatload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.url, "url", "ws://127.0.0.1:8080/ws", "chatd WebSocket `URL`")
	fs.IntVar(&c.users, "users", 1000, "sockets (users), in pairs")
	fs.Float64Var(&c.rate, "rate", 3000, "messages per second, all users together (3000 is well below what one 2-core box holds); 0 holds idle sockets")
	fs.DurationVar(&c.duration, "duration", 30*time.Second, "how long to measure")
	fs.DurationVar(&c.warmup, "warmup", 5*time.Second, "load before measuring")
	fs.StringVar(&c.secret, "secret", "", "token `secret` (default: env CHAT_SECRET); empty uses ?user=")
	fs.StringVar(&c.prefix, "user-prefix", "load", "user ids are `prefix` plus a number (runs at the same time on one server need different ones)")
	fs.IntVar(&c.text, "text", 64, "message text `bytes`")
	fs.StringVar(&c.metrics, "metrics", "", "the server's /metrics `URL`; with -rate 0, report its memory per idle socket")
	fs.BoolVar(&c.batch, "batch", true, "offer batch framing (subprotocol "+batchSubprotocol+"): frames the server writes at once come in one message")
	fs.IntVar(&c.pid, "pid", 0, "the server's process `id` on this machine; report its CPU time per delivered message (Linux)")
	fs.IntVar(&c.redisPID, "redis-pid", 0, "the Redis server's process `id` on this machine; report its CPU time per delivered message too (Linux)")
	fs.DurationVar(&c.grace, "grace", 5*time.Second, "after the last send, how long to wait for what is still on its way before counting it lost")
	fs.StringVar(&c.from, "from", "", "comma-separated local `addresses` to connect from, in turn: one address reaches one server address with at most as many sockets as it has ephemeral ports (about 28,000 on Linux), so 50,000 sockets on loopback take -from 127.0.0.1,127.0.0.2")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `chatload puts a chat load on a chatd server and reports what it saw.

Users connect in pairs and each sends to its peer at a fixed share of -rate;
every send must be acknowledged ("sent") and delivered (the peer's "message").
It reports throughput, ack and delivery latency percentiles, errors, the
acknowledged messages never delivered (lost) and those delivered twice; with
-rate 0 and -metrics, it holds idle sockets and reports the server's memory
per socket.

Clients offer batch framing (the chatd.batch subprotocol), in which a
message may hold several frames separated by "\n"; -batch=false asks for one
frame per message, as wscat gets. Counts and latencies are per frame either
way. It reports its own CPU time per delivered message and how busy the
machine was; with -pid and -redis-pid, the server's and Redis's too.

Examples:
  chatload -url ws://127.0.0.1:8080/ws -users 1000 -rate 3000 -duration 30s
  chatload -rate 10000 -pid $(pgrep -n chatd) -redis-pid $(pgrep -n redis-server)   # CPU per message
  chatload -users 10000 -rate 0 -metrics http://127.0.0.1:8080/metrics              # memory per idle socket

Many sockets need many file descriptors: chatload raises its limit on open
files as far as it may, and stops at once if -users needs more (raise the
hard limit first: ulimit -n 65536, as root). Past about 28,000 sockets to one
server address, connect from more local addresses with -from.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.secret == "" {
		c.secret = os.Getenv("CHAT_SECRET")
	}
	if c.users < 2 || c.users%2 != 0 || c.rate < 0 || c.pid < 0 || c.redisPID < 0 || c.grace < 0 {
		return errors.New("-users must be even and at least 2; -rate, -pid, -redis-pid and -grace not negative")
	}
	for _, pid := range []int{c.pid, c.redisPID} {
		if pid == 0 {
			continue
		}
		if _, err := cpuTime(pid); err != nil {
			return err
		}
	}
	if c.from != "" {
		var err error
		if c.clients, err = sourceClients(c.from); err != nil {
			return err
		}
	}
	need := uint64(c.users) + fileHeadroom
	if have, err := fdlimit.Raise(need); have < need {
		msg := fmt.Sprintf("-users %d needs about %d open files, and this process may open %d: raise the limit (ulimit -n)",
			c.users, need, have)
		if err != nil {
			return fmt.Errorf("%s: %w", msg, err)
		}
		return errors.New(msg)
	}
	var before map[string]float64
	if c.metrics != "" {
		var err error
		if before, err = memory(ctx, c.metrics); err != nil {
			return err
		}
	}
	st := &stats{}
	conns := make([]*websocket.Conn, c.users)
	fmt.Fprintf(stdout, "connecting %d sockets to %s\n", c.users, c.url)
	for i := range conns {
		ws, err := dial(ctx, c, i)
		if err != nil {
			for _, w := range conns[:i] {
				w.CloseNow()
			}
			return err
		}
		conns[i] = ws
	}
	if c.rate == 0 {
		// Idle sockets: hold them, so the server's memory per socket shows.
		fmt.Fprintf(stdout, "holding %d idle sockets for %v\n", c.users, c.duration)
		select {
		case <-time.After(c.duration):
		case <-ctx.Done():
		}
		if before != nil {
			after, err := memory(ctx, c.metrics)
			if err != nil {
				return err
			}
			for _, name := range memoryMetrics {
				fmt.Fprintf(stdout, "%s: %.1f KiB per idle socket\n", name,
					(after[name]-before[name])/float64(c.users)/1024)
			}
		}
		for _, ws := range conns {
			ws.Close(websocket.StatusNormalClosure, "")
		}
		return nil
	}
	runCtx, cancel := context.WithTimeout(ctx, c.warmup+c.duration)
	defer cancel()
	interval := time.Duration(float64(time.Second) * float64(c.users) / c.rate)
	var readers, senders sync.WaitGroup
	flows := make([]flow, len(conns))
	for i, ws := range conns {
		readers.Go(func() { reader(ctx, ws, st, &flows[i], &flows[i^1]) })
		senders.Go(func() { sender(ctx, runCtx.Done(), ws, c, i^1, interval, st) })
	}
	time.Sleep(c.warmup)
	cpu0 := takeCPU(c)
	st.counting.Store(true)
	sent0, acked0, recv0 := st.sent.Load(), st.acked.Load(), st.recv.Load()
	msgs0, frames0 := st.messages.Load(), st.frames.Load()
	start := time.Now()
	<-runCtx.Done()
	elapsed := time.Since(start)
	st.counting.Store(false)
	sent, acked, recv := st.sent.Load()-sent0, st.acked.Load()-acked0, st.recv.Load()-recv0
	msgs, frames := st.messages.Load()-msgs0, st.frames.Load()-frames0
	cpu := takeCPU(c).since(cpu0)
	senders.Wait()
	// What is still on its way, answers first, has the grace period to
	// arrive; an acknowledged message not delivered then is lost.
	for deadline := time.Now().Add(c.grace); (st.answered.Load() < st.sent.Load() || st.owed.Load() > 0) &&
		time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	lost, unanswered := st.owed.Load(), st.sent.Load()-st.answered.Load()
	for _, ws := range conns {
		ws.Close(websocket.StatusNormalClosure, "")
	}
	readers.Wait()
	st.mu.Lock()
	defer st.mu.Unlock()
	fmt.Fprintf(stdout, "sockets %d, target %.0f msg/s, measured %.1fs\n", c.users, c.rate, elapsed.Seconds())
	fmt.Fprintf(stdout, "sent %d (%.0f/s), acked %d (%.0f/s), delivered %d (%.0f/s), errors %d\n",
		sent, float64(sent)/elapsed.Seconds(), acked, float64(acked)/elapsed.Seconds(),
		recv, float64(recv)/elapsed.Seconds(), st.errs.Load())
	fmt.Fprintf(stdout, "lost %d (acknowledged, not delivered within %v of the last send), duplicates %d, unanswered %d\n",
		lost, c.grace, st.dups.Load(), unanswered)
	fmt.Fprintf(stdout, "ack      %s\n", quantiles(st.ack))
	fmt.Fprintf(stdout, "delivery %s\n", quantiles(st.delivery))
	batched := 0
	for _, ws := range conns {
		if ws.Subprotocol() == batchSubprotocol {
			batched++
		}
	}
	fmt.Fprintf(stdout, "read %d frames in %d WebSocket messages (%.2f per message; batch framing on %d of %d sockets)\n",
		frames, msgs, float64(frames)/float64(max(msgs, 1)), batched, len(conns))
	cpu.report(stdout, c, elapsed, recv)
	return nil
}

// cpuTimes is the CPU time used so far by the processes chatload watches,
// and by the whole machine.
type cpuTimes struct {
	server, redis, self, machine time.Duration
	local                        bool  // self and machine were read (Linux)
	err                          error // reading -pid's or -redis-pid's failed
}

// takeCPU reads the CPU times of the server and Redis (when their pids are
// given), of chatload itself and of the machine.
func takeCPU(c config) cpuTimes {
	var t cpuTimes
	var errs []error
	read := func(pid int) time.Duration {
		d, err := cpuTime(pid)
		errs = append(errs, err)
		return d
	}
	if c.pid != 0 {
		t.server = read(c.pid)
	}
	if c.redisPID != 0 {
		t.redis = read(c.redisPID)
	}
	t.err = errors.Join(errs...)
	self, serr := cpuTime(os.Getpid())
	machine, merr := machineBusy()
	t.self, t.machine, t.local = self, machine, serr == nil && merr == nil
	return t
}

// since returns the CPU times used between t0 and t.
func (t cpuTimes) since(t0 cpuTimes) cpuTimes {
	return cpuTimes{server: t.server - t0.server, redis: t.redis - t0.redis, self: t.self - t0.self,
		machine: t.machine - t0.machine, local: t0.local && t.local, err: errors.Join(t0.err, t.err)}
}

// report writes the CPU used over elapsed, in cores and per delivered
// message; what the machine used besides the server, Redis and chatload is
// other work, which makes the figures less reliable when it is large.
func (t cpuTimes) report(w io.Writer, c config, elapsed time.Duration, delivered int64) {
	if t.err != nil {
		fmt.Fprintf(w, "CPU: %v\n", t.err)
		return
	}
	line := func(what string, d time.Duration) {
		if delivered == 0 {
			fmt.Fprintf(w, "%s %.2f cores, no messages delivered\n", what, d.Seconds()/elapsed.Seconds())
			return
		}
		fmt.Fprintf(w, "%s %.2f cores, %.0f µs per delivered message\n",
			what, d.Seconds()/elapsed.Seconds(), float64(d.Microseconds())/float64(delivered))
	}
	if c.pid != 0 {
		line(fmt.Sprintf("server CPU (pid %d)", c.pid), t.server)
	}
	if c.redisPID != 0 {
		line(fmt.Sprintf("Redis CPU (pid %d)", c.redisPID), t.redis)
	}
	if !t.local {
		return
	}
	line("chatload CPU", t.self)
	// Each process once: in tests the server and Redis run inside chatload.
	other := t.machine - t.self
	if c.pid != 0 && c.pid != os.Getpid() {
		other -= t.server
	}
	if c.redisPID != 0 && c.redisPID != os.Getpid() && c.redisPID != c.pid {
		other -= t.redis
	}
	fmt.Fprintf(w, "machine CPU %.2f cores busy, of which %.2f other work\n",
		t.machine.Seconds()/elapsed.Seconds(), max(0, other).Seconds()/elapsed.Seconds())
}

// machineBusy returns the CPU time the whole machine has spent busy (not
// idle, not waiting for I/O), from /proc/stat.
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("machine cpu time: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, errors.New("machine cpu time: unexpected /proc/stat")
	}
	var busy int64
	for i, v := range f[1:] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("machine cpu time: %w", err)
		}
		// user nice system idle iowait irq softirq steal (guest time is
		// in user already).
		if i != 3 && i != 4 && i < 8 {
			busy += n
		}
	}
	return time.Duration(busy) * (time.Second / 100), nil
}

func dial(ctx context.Context, c config, i int) (*websocket.Conn, error) {
	user := c.prefix + strconv.Itoa(i)
	url := c.url + "?user=" + user
	if c.secret != "" {
		tok, err := auth.Mint(c.secret, user, time.Hour)
		if err != nil {
			return nil, err
		}
		url = c.url + "?token=" + tok
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var opts websocket.DialOptions
	if len(c.clients) > 0 {
		opts.HTTPClient = c.clients[i%len(c.clients)]
	}
	if c.batch {
		opts.Subprotocols = []string{batchSubprotocol}
	}
	ws, _, err := websocket.Dial(dctx, url, &opts)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", user, err)
	}
	ws.SetReadLimit(1 << 20)
	if _, _, err := ws.Read(dctx); err != nil { // ready
		return nil, fmt.Errorf("ready %s: %w", user, err)
	}
	return ws, nil
}

// sender sends one message every interval, starting at a random phase. The
// text carries the send time, so the peer can time the delivery, and the
// sender's count of its messages, so the peer can tell a duplicate; the id
// carries the send time too, for the ack.
//
// It sends until stop is closed. Writes take ctx, not the end of the run:
// a write cut short by a deadline would close the socket, and the message
// would read as unanswered.
func sender(ctx context.Context, stop <-chan struct{}, ws *websocket.Conn, c config, peer int, interval time.Duration, st *stats) {
	select {
	case <-time.After(rand.N(interval)):
	case <-stop:
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	pad := strings.Repeat("x", c.text)
	to := strconv.Quote(c.prefix + strconv.Itoa(peer))
	var frame []byte
	for n := 1; ; n++ {
		// {"type":"send","to":"…","text":"<ns> <n> xxx","id":"<ns>"},
		// built without fmt or reflection so that the tool stays cheap;
		// the text is -text bytes, or the two numbers if they are longer.
		now := strconv.AppendInt(nil, time.Now().UnixNano(), 10)
		frame = append(frame[:0], `{"type":"send","to":`...)
		frame = append(frame, to...)
		frame = append(frame, `,"text":"`...)
		text := len(frame)
		frame = append(frame, now...)
		frame = append(frame, ' ')
		frame = strconv.AppendInt(frame, int64(n), 10)
		frame = append(frame, ' ')
		frame = append(frame, pad[:max(0, c.text-(len(frame)-text))]...)
		frame = append(frame, `","id":"`...)
		frame = append(frame, now...)
		frame = append(frame, `"}`...)
		if err := ws.Write(ctx, websocket.MessageText, frame); err != nil {
			return
		}
		st.sent.Add(1)
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// field returns the string value that follows key (e.g. `"id":"`) in a
// frame, up to the next quote; the tool's own values hold no escapes.
func field(data []byte, key string) []byte {
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return nil
	}
	v := data[i+len(key):]
	if j := bytes.IndexByte(v, '"'); j >= 0 {
		return v[:j]
	}
	return nil
}

// reader reads the socket's messages and counts the frames in them: with
// batch framing negotiated, a message holds one or more frames separated
// by "\n"; without it, a message is one frame. own is the socket's user's
// flow, from the flow of its one peer.
func reader(ctx context.Context, ws *websocket.Conn, st *stats, own, from *flow) {
	batch := ws.Subprotocol() == batchSubprotocol
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			return
		}
		now := time.Now().UnixNano()
		st.messages.Add(1)
		for len(data) > 0 {
			frame := data
			if batch {
				frame, data, _ = bytes.Cut(data, []byte{'\n'})
			} else {
				data = nil
			}
			st.frames.Add(1)
			received(frame, now, st, own, from)
		}
	}
}

// received counts one frame read at now (unix ns) on the socket whose
// user's flow is own and whose peer's is from.
func received(frame []byte, now int64, st *stats, own, from *flow) {
	switch string(field(frame, `"type":"`)) {
	case "sent":
		st.acked.Add(1)
		st.answered.Add(1)
		if t, err := strconv.ParseInt(string(field(frame, `"id":"`)), 10, 64); err == nil {
			st.add(true, time.Duration(now-t))
		}
		if n, ok := textCount(frame); ok && own.mark(n, flowAcked) == 0 {
			st.owed.Add(1) // acknowledged, not delivered yet
		}
	case "message":
		st.recv.Add(1)
		ts, _, _ := bytes.Cut(field(frame, `"text":"`), []byte(" "))
		if t, err := strconv.ParseInt(string(ts), 10, 64); err == nil {
			st.add(false, time.Duration(now-t))
		}
		if n, ok := textCount(frame); ok {
			switch before := from.mark(n, flowDelivered); {
			case before&flowDelivered != 0:
				st.dups.Add(1)
			case before&flowAcked != 0:
				st.owed.Add(-1)
			}
		}
	case "error":
		st.errs.Add(1)
		st.answered.Add(1)
	}
}

// cpuTime returns the CPU time (user and system) that process pid has used,
// from /proc/<pid>/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("cpu time of pid %d: %w", pid, err)
	}
	// The command name, field 2, is in parentheses and may hold spaces;
	// utime and stime, fields 14 and 15, are the 12th and 13th after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("cpu time of pid %d: unexpected /proc/%d/stat", pid, pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("cpu time of pid %d: unexpected /proc/%d/stat", pid, pid)
	}
	utime, uerr := strconv.ParseInt(f[11], 10, 64)
	stime, serr := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(uerr, serr); err != nil {
		return 0, fmt.Errorf("cpu time of pid %d: %w", pid, err)
	}
	// In clock ticks of USER_HZ, which is 100 on Linux.
	return time.Duration(utime+stime) * (time.Second / 100), nil
}

// memoryMetrics are the server's figures that show what a socket costs.
var memoryMetrics = []string{"go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "process_resident_memory_bytes"}

// memory reads memoryMetrics from a Prometheus text endpoint, after asking
// for nothing else: the figures include what the server holds right now.
func memory(ctx context.Context, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || !slices.Contains(memoryMetrics, name) {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			out[name] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	for _, name := range memoryMetrics {
		if _, ok := out[name]; !ok {
			return nil, fmt.Errorf("metrics: %s has no %s", url, name)
		}
	}
	return out, nil
}

func quantiles(d []time.Duration) string {
	if len(d) == 0 {
		return "no samples"
	}
	slices.Sort(d)
	q := func(p float64) time.Duration {
		return d[min(len(d)-1, int(p*float64(len(d))))].Round(10 * time.Microsecond)
	}
	return fmt.Sprintf("p50 %v  p90 %v  p99 %v  max %v  (n=%d)", q(.5), q(.9), q(.99), d[len(d)-1].Round(10*time.Microsecond), len(d))
}
