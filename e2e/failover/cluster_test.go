package failover

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// deliveryBackMax bounds, with -redis-wait 1, the time from the SIGKILL of
// a Redis master until every client has had a message stored after the
// kill delivered live: the cluster notices the dead master (its node
// timeout is 2 s), promotes its replica, the killed node comes back as the
// new master's replica (until then, with no replica to acknowledge, writes
// in its slots answer unavailable), and chatd follows the new slot map.
const deliveryBackMax = 15 * time.Second

// TestClusterFailoverWait runs three replicas with -redis-wait 1 on a
// private six-node Redis Cluster behind nginx, with 200 clients chatting
// in pairs, kills a Redis master (SIGKILL) while they chat, and restarts
// it once its replica has taken over, as an orchestrator would. The master
// killed serves the presence channel, so every replica resubscribes and
// every client resyncs. No acknowledged message may be lost or stored
// twice, unread counts must be exact, every client must have every
// message, and live delivery must be back within deliveryBackMax.
func TestClusterFailoverWait(t *testing.T) {
	clusterFailover(t, true)
}

// TestClusterFailoverNoWait is the same scenario without -redis-wait: a
// message the master acknowledged but had not yet sent to its replica is
// lost in the failover, and a message whose recipient's slot was on the
// dying master is stored and acknowledged but neither indexed nor
// delivered live (its send logs that, and the recipient is not told to
// resync: it sees the message once it reconnects). The test counts both
// and reports them; it fails on anything else the other test fails on.
func TestClusterFailoverNoWait(t *testing.T) {
	clusterFailover(t, false)
}

func clusterFailover(t *testing.T, wait bool) {
	ctx, logf, began := e2eStart(t, "the Redis Cluster failover test", 3*time.Minute)

	names := []string{"chatd-a", "chatd-b", "chatd-c"}
	root, tmp, logDir := workspace(t, append([]string{"nginx"}, names...)...)
	bin := buildChatd(ctx, t, root, tmp)
	cl := startCluster(ctx, t, root, filepath.Join(tmp, "cluster"))
	logf("redis cluster on 127.0.0.1:%d-%d", cl.from, cl.from+5)

	secret := randomSecret(t)
	flags := []string{"-drain-delay", "1s", "-drain-window", "3s"}
	if wait {
		flags = append(flags, "-redis-wait", "1")
	}
	_, ports := startReplicas(ctx, t, bin, tmp, logDir, cl.url, secret, names, flags...)
	_, lbPort := startNginx(ctx, t, root, filepath.Join(tmp, "nginx"), logDir, ports)
	lbWS := fmt.Sprintf("ws://127.0.0.1:%d", lbPort)
	logf("replicas %v behind nginx on %d (-redis-wait %v)", ports, lbPort, map[bool]int{true: 1}[wait])

	users := make([]string, numClients)
	for i := range users {
		users[i] = strconv.Itoa(2000 + i)
	}
	w := &world{lb: lbWS, stopChat: make(chan struct{})}
	chatters := make([]*chatter, numClients)
	tokens := map[string]string{}
	for i := range chatters {
		tok, err := mintToken(secret, users[i], time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		tokens[users[i]] = tok
		chatters[i] = newChatter(w, i, users[i], users[i^1], tok)
	}
	group := startCrowd(ctx, t, chatters, logf)

	// The victim: the master of the presence channel, to which every
	// replica subscribes, so that every replica loses a subscription and
	// tells its sockets to resync; it also holds about a third of the
	// conversations.
	convs := map[string]bool{}
	for _, c := range chatters {
		convs[convKey(c.user, c.partner)] = true
	}
	victim, held, err := cl.masterOf(ctx, "chat:presence-events", convs)
	if err != nil {
		t.Fatal(err)
	}
	sleepCtx(ctx, 5*time.Second)

	killAt := time.Now()
	w.backAfter.Store(killAt.UnixNano())
	if err := cl.kill(victim.port); err != nil {
		t.Fatal(err)
	}
	logf("SIGKILL redis master 127.0.0.1:%d (the presence channel's, and %d of %d conversations; its replica: 127.0.0.1:%d)",
		victim.port, held, len(convs), victim.replica)
	promoted, err := cl.waitPromoted(ctx, victim, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	logf("127.0.0.1:%d promoted %.1fs after the kill", victim.replica, promoted.Sub(killAt).Seconds())
	if err := cl.restart(ctx, victim.port); err != nil {
		t.Fatal(err)
	}
	rejoined, err := cl.waitHealthy(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	logf("127.0.0.1:%d restarted, back as a replica %.1fs after the kill", victim.port, rejoined.Sub(killAt).Seconds())

	// Chat on until every client has had a message stored after the kill
	// delivered live, and a little longer.
	backAll := waitAll(ctx, chatters, 30*time.Second-time.Since(killAt), func(c *chatter) bool { return !c.liveBack.IsZero() })
	sleepCtx(ctx, 3*time.Second)
	close(w.stopChat)
	logf("chat stopped; clients now %v", spread(chatters))

	group.finish(ctx, t)

	// From here on, the chatters are still: read their state without locks.
	var back time.Duration
	var late []string
	for _, c := range chatters {
		if c.liveBack.IsZero() {
			late = append(late, c.user)
			continue
		}
		back = max(back, c.liveBack.Sub(killAt))
	}
	a := auditCluster(ctx, t, cl.rdb, chatters, wait)
	unreadOK := checkClusterUnread(ctx, t, lbWS, chatters, tokens, a.lists)

	var resyncs, dialFails int
	codes := map[string]int{}
	var problems []string
	for _, c := range chatters {
		resyncs += c.resyncs
		dialFails += c.dialFails
		for k, n := range c.errCodes {
			codes[k] += n
		}
		problems = append(problems, c.problems...)
	}
	for i, p := range problems {
		if i == 30 {
			t.Errorf("... and %d more protocol problems", len(problems)-30)
			break
		}
		t.Errorf("protocol: %s", p)
	}
	if resyncs == 0 {
		t.Errorf("no client got a resync, yet every replica's presence channel was on the killed master")
	}
	switch {
	case !backAll || len(late) > 0:
		t.Errorf("live delivery not back for %d client(s) 30s after the kill: %v", len(late), late[:min(len(late), 10)])
	case wait && back > deliveryBackMax:
		t.Errorf("live delivery back %.1fs after the kill, want within %v", back.Seconds(), deliveryBackMax)
	}
	logf("error replies %v; dial failures %d; resyncs %d", codes, dialFails, resyncs)
	logf("RESULT -redis-wait %d: sent=%d acked=%d stored=%d (acked after a retry %d), delivered=%d, stored but never delivered=%d",
		map[bool]int{true: 1}[wait], a.sent, a.acked, a.stored, a.ackedAfterRetry, a.delivered, a.undelivered)
	logf("RESULT -redis-wait %d: lost acknowledged=%d (their seqs since taken by other messages: %d), seen live but lost=%d, duplicated=%d, unread exact=%v",
		map[bool]int{true: 1}[wait], a.lostAcked, a.seqTaken, a.phantoms, a.duplicates, unreadOK)
	logf("RESULT -redis-wait %d: promoted after %.1fs, live delivery back after %.1fs (bound %v with -redis-wait), took %.1fs",
		map[bool]int{true: 1}[wait], promoted.Sub(killAt).Seconds(), back.Seconds(), deliveryBackMax, time.Since(began).Seconds())
}

// TestClusterAuditCountsLosses feeds the audit of the failover tests what
// a failover without -redis-wait can leave, and checks that it counts each
// kind: an acknowledged message that is gone, whose seq another message
// took; a message a client saw live that is gone; a stored message its
// recipient never got. It needs no cluster: the audit reads lists only.
func TestClusterAuditCountsLosses(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	w := &world{}
	a, b := newChatter(w, 0, "2000", "2001", ""), newChatter(w, 1, "2001", "2000", "")
	const conv = "2001-2000"
	msg := func(c *chatter, n int, seq int64) message {
		id := fmt.Sprintf("%s-m%d", c.user, n)
		o := &outgoing{id: id, to: c.partner, text: id + " hi", attempts: 1}
		c.sent = append(c.sent, o)
		m := message{Conv: conv, Seq: seq, From: c.user, To: c.partner, Text: o.text}
		c.acked[id] = m
		return m
	}
	a1, a2, b1, a3 := msg(a, 1, 1), msg(a, 2, 2), msg(b, 1, 2), msg(a, 3, 3)
	// a2 was acknowledged as seq 2, then lost in the failover; b1 took seq
	// 2. 2001 saw a2 live before that; a3 never reached it.
	for _, m := range []message{a1, b1, a3} {
		el := fmt.Sprintf(`{"fromid":%s,"toid":%s,"msg":%q,"time":1.5}`, m.From, m.To, m.Text)
		if err := rdb.LPush(t.Context(), "{"+conv+"}", el).Err(); err != nil {
			t.Fatal(err)
		}
	}
	b.receive(a1, true)
	b.receive(a2, true)
	a.receive(b1, true)

	got := auditCluster(t.Context(), t, rdb, []*chatter{a, b}, false)
	if got.sent != 4 || got.acked != 4 || got.stored != 3 || got.lostAcked != 1 || got.seqTaken != 1 ||
		got.phantoms != 1 || got.undelivered != 1 || got.delivered != 2 || got.duplicates != 0 {
		t.Fatalf("audit = %+v, want 4 sent and acked, 3 stored, 1 lost (its seq taken), 1 seen live but lost, 1 never delivered", got)
	}
}

// clusterAudit is what auditCluster found.
type clusterAudit struct {
	sent, acked, stored, ackedAfterRetry, delivered, undelivered int

	lostAcked  int // acknowledged, and not in the conversation
	seqTaken   int // of those, acknowledged at a seq another message holds now
	phantoms   int // received by a client, and not in the conversation
	duplicates int // extra copies of one client id in a conversation
	lists      map[string][]element
}

// auditCluster compares what the clients sent, saw acknowledged and
// received with the conversation lists in the cluster. Acknowledged
// messages that are not stored, received ones that are not stored, and
// stored ones their recipient never got are failures with -redis-wait
// (wait) and counted without it: that is what the failover costs there.
// Everything else fails either way.
func auditCluster(ctx context.Context, t testing.TB, rdb redis.Cmdable, chatters []*chatter, wait bool) clusterAudit {
	t.Helper()
	a := clusterAudit{lists: map[string][]element{}}
	type origin struct {
		c *chatter
		o *outgoing
	}
	byID := map[string]origin{}
	for _, c := range chatters {
		for _, o := range c.sent {
			byID[o.id] = origin{c, o}
			a.sent++
		}
		a.acked += len(c.acked)
		if c.offTo != "" {
			t.Fatalf("chatter %s writes to an offline user: not in this scenario", c.user)
		}
	}
	lossf := t.Errorf
	if !wait {
		lossf = t.Logf
	}
	stored := map[string][]element{} // client id -> its copies
	bySeq := map[convSeq]element{}
	for _, c := range chatters {
		conv := convKey(c.user, c.partner)
		if _, ok := a.lists[conv]; ok {
			continue
		}
		els, bad, err := readConv(ctx, rdb, "{"+conv+"}")
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bad {
			t.Errorf("redis: %s", b)
		}
		slices.SortFunc(els, func(x, y element) int { return int(x.seq - y.seq) })
		a.lists[conv] = els
		for _, e := range els {
			a.stored++
			bySeq[convSeq{conv, e.seq}] = e
			id, _, _ := strings.Cut(e.text, " ")
			org, ok := byID[id]
			if !ok || org.o.text != e.text || org.c.user != e.from || org.o.to != e.to {
				t.Errorf("redis: %s seq %d is no message a client sent: from %s to %s %q", conv, e.seq, e.from, e.to, e.text)
				continue
			}
			stored[id] = append(stored[id], e)
		}
	}
	byUser := map[string]*chatter{}
	for _, c := range chatters {
		byUser[c.user] = c
	}
	var lost []string
	for _, c := range chatters {
		for _, o := range c.sent {
			copies := stored[o.id]
			m, acked := c.acked[o.id]
			if !acked {
				t.Errorf("never acknowledged: %s of user %s after %d attempts", o.id, c.user, o.attempts)
			}
			if len(copies) > 1 {
				a.duplicates += len(copies) - 1
				var seqs []int64
				for _, e := range copies {
					seqs = append(seqs, e.seq)
				}
				t.Errorf("duplicate: client id %s of user %s stored %d times (seqs %v)", o.id, c.user, len(copies), seqs)
			}
			switch {
			case acked && len(copies) == 0:
				a.lostAcked++
				if e, ok := bySeq[convSeq{m.Conv, m.Seq}]; ok && e.text != o.text {
					a.seqTaken++
				}
				lost = append(lost, fmt.Sprintf("%s (acked as %s seq %d)", o.id, m.Conv, m.Seq))
			case !acked && len(copies) == 0:
				t.Errorf("not stored and never acknowledged: %s", o.id)
			case acked:
				if !slices.ContainsFunc(copies, func(e element) bool { return e.seq == m.Seq }) || m.Conv != convKey(c.user, o.to) {
					t.Errorf("sent for %s said %s seq %d, redis has it at seq %d", o.id, m.Conv, m.Seq, copies[0].seq)
				}
				if o.attempts > 1 {
					a.ackedAfterRetry++
				}
			}
		}
	}
	sort.Strings(lost)
	if len(lost) > 0 {
		lossf("lost %d acknowledged message(s) in the failover: %s", len(lost), strings.Join(lost[:min(len(lost), 30)], ", "))
	}
	// Every stored message reached its recipient (live or by catching up),
	// and nothing reached one that is not stored.
	for conv, els := range a.lists {
		for _, e := range els {
			r := byUser[e.to]
			if r != nil && r.got[conv][e.seq] == e.text {
				a.delivered++
				continue
			}
			a.undelivered++
			if a.undelivered <= 20 {
				lossf("not delivered: %s seq %d %q never reached user %s (live or by history)", conv, e.seq, e.text, e.to)
			}
		}
	}
	for _, c := range chatters {
		for conv, seqs := range c.got {
			for seq, text := range seqs {
				if e, ok := bySeq[convSeq{conv, seq}]; !ok || e.text != text || e.to != c.user {
					a.phantoms++
					lossf("user %s received %s seq %d %q, redis has %+v there", c.user, conv, seq, text, e)
				}
			}
		}
	}
	return a
}

// checkClusterUnread connects as each user once the chat is over and
// compares the unread count of its one conversation in `ready`, `inbox`
// and `history` (peeking) with the conversation itself: nobody reads in
// this test, so a user's read position is its own newest message, and
// its unread count is the messages after it.
func checkClusterUnread(ctx context.Context, t *testing.T, lb string, chatters []*chatter, tokens map[string]string, lists map[string][]element) bool {
	t.Helper()
	var mu sync.Mutex
	ok := true
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		ok = false
		t.Errorf(format, args...)
	}
	work := make(chan *chatter)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for c := range work {
				conv := convKey(c.user, c.partner)
				els := lists[conv]
				n := int64(len(els))
				var pos int64
				for _, e := range els {
					if e.from == c.user {
						pos = e.seq
					}
				}
				want := int(n - pos)
				conn, err := dialChat(ctx, lb, tokens[c.user], func(frame) {})
				if err != nil {
					fail("unread: connect as %s: %v", c.user, err)
					continue
				}
				if got := conn.ready.unreadMap[c.partner]; got != want {
					fail("unread: ready of %s says %d from %s, want %d (%d messages, own newest at seq %d)", c.user, got, c.partner, want, n, pos)
				}
				in, err := conn.request(ctx, "i", map[string]any{"type": "inbox", "id": "i"}, 5*time.Second)
				switch {
				case err != nil:
					fail("unread: inbox of %s: %v", c.user, err)
				case len(in.Conversations) != 1 || in.Conversations[0].With != c.partner || in.Conversations[0].Last == nil:
					fail("unread: inbox of %s: %s, want its one conversation", c.user, in.raw)
				case in.Conversations[0].Unread != want || in.Conversations[0].Last.Seq != n:
					fail("unread: inbox of %s: unread %d, last seq %d; want %d and %d", c.user, in.Conversations[0].Unread, in.Conversations[0].Last.Seq, want, n)
				}
				h, err := conn.request(ctx, "h", map[string]any{"type": "history", "with": c.partner, "limit": 1, "peek": true, "id": "h"}, 5*time.Second)
				if err != nil {
					fail("unread: history of %s: %v", c.user, err)
				} else if h.unreadCount != want {
					fail("unread: history of %s with %s says unread %d, want %d", c.user, c.partner, h.unreadCount, want)
				}
				conn.close()
			}
		})
	}
	for _, c := range chatters {
		work <- c
	}
	close(work)
	wg.Wait()
	return ok
}

// cluster is a private six-node Redis Cluster made by .ci/redis-cluster.
type cluster struct {
	root, dir string
	from      int
	url       string
	rdb       *redis.ClusterClient
}

// clusterPortsFrom is the first port of the test's cluster (its six nodes
// take it and the five after, and their buses those plus 10000), unless
// CHATD_E2E_CLUSTER_PORT says otherwise.
const clusterPortsFrom = 7100

// startCluster starts a cluster with .ci/redis-cluster, its files in dir,
// and stops it when the test ends. When the test fails, the last lines of
// each node's log are printed.
func startCluster(ctx context.Context, t *testing.T, root, dir string) *cluster {
	t.Helper()
	lookTool(t, "redis-server")
	from := clusterPortsFrom
	if v := os.Getenv("CHATD_E2E_CLUSTER_PORT"); v != "" {
		var err error
		if from, err = strconv.Atoi(v); err != nil {
			t.Fatalf("CHATD_E2E_CLUSTER_PORT=%q: %v", v, err)
		}
	}
	// .ci/redis-cluster would take over a healthy cluster on these ports,
	// data and all: one left behind, or another run's.
	for p := from; p < from+6; p++ {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), time.Second); err == nil {
			c.Close()
			t.Fatalf("127.0.0.1:%d is in use: stop what runs on %d-%d (a cluster left behind: CLUSTER_PORTS_FROM=%d .ci/redis-cluster stop), or set CHATD_E2E_CLUSTER_PORT",
				p, from, from+5, from)
		}
	}
	cl := &cluster{root: root, dir: dir, from: from}
	out, err := cl.script(ctx, "start")
	t.Cleanup(func() {
		if t.Failed() {
			for i := range 6 {
				t.Logf("--- last lines of redis 127.0.0.1:%d's log:\n%s", from+i, tail(filepath.Join(dir, fmt.Sprintf("redis-%d.log", from+i)), 15))
			}
		}
		if out, err := cl.script(context.Background(), "stop"); err != nil {
			t.Errorf(".ci/redis-cluster stop: %v\n%s", err, out)
		}
	})
	if err != nil {
		t.Fatalf(".ci/redis-cluster (CLUSTER_PORTS_FROM=%d): %v\n%s", from, err, out)
	}
	cl.url = strings.TrimSpace(lastLine(out))
	opt, err := redis.ParseClusterURL(cl.url)
	if err != nil {
		t.Fatalf(".ci/redis-cluster printed %q: %v", cl.url, err)
	}
	opt.ClusterStateReloadInterval = time.Second
	cl.rdb = redis.NewClusterClient(opt)
	t.Cleanup(func() { cl.rdb.Close() })
	return cl
}

// script runs .ci/redis-cluster with args for this cluster and returns
// what it printed, stdout last.
func (cl *cluster) script(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(cl.root, ".ci", "redis-cluster")}, args...)...)
	cmd.Env = append(cleanEnv(), fmt.Sprintf("CLUSTER_PORTS_FROM=%d", cl.from), "CLUSTER_DIR="+cl.dir, "CLUSTER_WAIT=30")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stderr.String() + stdout.String(), err
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// master is a master and its replica, by port.
type master struct {
	id            string
	port, replica int
}

// nodes reads CLUSTER NODES from the node of port.
func (cl *cluster) nodes(ctx context.Context, port int) ([]clusterNode, error) {
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), MaxRetries: -1})
	defer c.Close()
	out, err := c.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, err
	}
	var nodes []clusterNode
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		_, p, _ := strings.Cut(addr, ":")
		n := clusterNode{id: f[0], flags: f[2], masterID: f[3]}
		n.port, _ = strconv.Atoi(p)
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// clusterNode is a line of CLUSTER NODES.
type clusterNode struct {
	id, flags, masterID string
	port                int
}

func (n clusterNode) is(flag string) bool { return slices.Contains(strings.Split(n.flags, ","), flag) }

// masterOf returns the master of key's slot, and how many of convs it
// holds.
func (cl *cluster) masterOf(ctx context.Context, key string, convs map[string]bool) (master, int, error) {
	node, err := cl.rdb.MasterForKey(ctx, key)
	if err != nil {
		return master{}, 0, fmt.Errorf("master of %s: %w", key, err)
	}
	best := node.Options().Addr
	n := 0
	for conv := range convs {
		node, err := cl.rdb.MasterForKey(ctx, "{"+conv+"}")
		if err != nil {
			return master{}, 0, fmt.Errorf("master of %s: %w", conv, err)
		}
		if node.Options().Addr == best {
			n++
		}
	}
	_, p, _ := strings.Cut(best, ":")
	port, _ := strconv.Atoi(p)
	nodes, err := cl.nodes(ctx, port)
	if err != nil {
		return master{}, 0, err
	}
	m := master{port: port}
	for _, nd := range nodes {
		if nd.port == port {
			m.id = nd.id
		}
	}
	for _, nd := range nodes {
		if m.id != "" && nd.masterID == m.id {
			m.replica = nd.port
		}
	}
	if m.id == "" || m.replica == 0 {
		return master{}, 0, fmt.Errorf("no master with a replica on port %d in %+v", port, nodes)
	}
	return m, n, nil
}

// kill sends SIGKILL to the node of port (its pid file names it).
func (cl *cluster) kill(port int) error {
	data, err := os.ReadFile(filepath.Join(cl.dir, fmt.Sprintf("redis-%d.pid", port)))
	if err != nil {
		return fmt.Errorf("pid of the node on %d: %w", port, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return fmt.Errorf("pid file of the node on %d: %w", port, err)
	}
	return syscall.Kill(pid, syscall.SIGKILL)
}

// waitPromoted waits until m's replica is a master and the cluster, as it
// sees it, serves every slot; it returns when.
func (cl *cluster) waitPromoted(ctx context.Context, m master, d time.Duration) (time.Time, error) {
	deadline := time.Now().Add(d)
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", m.replica), MaxRetries: -1})
	defer c.Close()
	for {
		nodes, err := cl.nodes(ctx, m.replica)
		if err == nil {
			i := slices.IndexFunc(nodes, func(n clusterNode) bool { return n.port == m.replica })
			info, _ := c.ClusterInfo(ctx).Result()
			if i >= 0 && nodes[i].is("master") && strings.Contains(info, "cluster_state:ok") {
				return time.Now(), nil
			}
		}
		if time.Now().After(deadline) || !sleepCtx(ctx, 50*time.Millisecond) {
			return time.Time{}, fmt.Errorf("127.0.0.1:%d not promoted after %v (last error %v)", m.replica, d, err)
		}
	}
}

// restart starts the node of port again: it rejoins as a replica.
func (cl *cluster) restart(ctx context.Context, port int) error {
	if out, err := cl.script(ctx, "restart", strconv.Itoa(port)); err != nil {
		return fmt.Errorf(".ci/redis-cluster restart %d: %v\n%s", port, err, out)
	}
	return nil
}

// waitHealthy waits until .ci/redis-cluster status says the cluster is
// whole again (every replica's link up) and returns when.
func (cl *cluster) waitHealthy(ctx context.Context, d time.Duration) (time.Time, error) {
	deadline := time.Now().Add(d)
	for {
		out, err := cl.script(ctx, "status")
		if err == nil {
			return time.Now(), nil
		}
		if time.Now().After(deadline) || !sleepCtx(ctx, 100*time.Millisecond) {
			return time.Time{}, fmt.Errorf("cluster not healthy after %v:\n%s", d, out)
		}
	}
}
