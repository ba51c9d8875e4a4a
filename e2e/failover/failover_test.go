package failover

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	numClients  = 200 // 100 pairs
	numHeld     = 5   // clients of the killed replica kept offline until presence says so
	numOffline  = 5   // users who never connect while the others chat
	numOffSend  = 10  // clients that also write to an offline user
	presenceMax = 30 * time.Second
)

// TestFailover runs three replicas behind nginx with 200 clients chatting
// in pairs, drains one replica (SIGTERM) and kills another (SIGKILL), and
// checks that no acknowledged message is lost or stored twice, that every
// message reaches its recipient once, that presence forgets the dead
// replica's users and that unread counts are exact.
func TestFailover(t *testing.T) {
	ctx, logf, began := e2eStart(t, "the multi-replica failover test", 4*time.Minute)

	root, tmp, logDir := workspace(t, "redis", "chatd-a", "chatd-b", "chatd-c", "nginx")

	logf("building chatd in %s", root)
	bin := buildChatd(ctx, t, root, tmp)
	redisAddr, rdb := startRedis(ctx, t, filepath.Join(tmp, "redis"), logDir)
	logf("redis on %s", redisAddr)

	secret := randomSecret(t)

	replicas, ports := startReplicas(ctx, t, bin, tmp, logDir, "redis://"+redisAddr+"/0", secret,
		[]string{"chatd-a", "chatd-b", "chatd-c"}, "-drain-delay", "1s", "-drain-window", "3s")
	logf("replicas ready: %v", ports)

	_, lbPort := startNginx(ctx, t, root, filepath.Join(tmp, "nginx"), logDir, ports)
	lbHTTP := fmt.Sprintf("http://127.0.0.1:%d", lbPort)
	lbWS := fmt.Sprintf("ws://127.0.0.1:%d", lbPort)
	logf("nginx on %s", lbHTTP)
	if n, err := metricsLines(ctx, replicas["chatd-a"].url("/metrics")); err != nil || n == 0 {
		t.Errorf("GET /metrics from chatd-a: %d samples, %v", n, err)
	}
	if resp, err := http.Get(lbHTTP + "/metrics"); err != nil {
		t.Errorf("GET /metrics through the balancer: %v", err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET /metrics through the balancer: %s, want 403: metrics are not public", resp.Status)
		}
	}

	// Tokens: the observer's as deploy/README.md mints one (CHAT_SECRET in the
	// environment), the offline users' with -secret, the chatters' with the
	// JWT library (HS256, sub, exp).
	observerToken := mintCLI(ctx, t, bin, "9000", "", cleanEnv("CHAT_SECRET="+secret))
	offline := make([]string, numOffline)
	offlineTokens := map[string]string{}
	for i := range offline {
		offline[i] = strconv.Itoa(5001 + i)
		offlineTokens[offline[i]] = mintCLI(ctx, t, bin, offline[i], secret, cleanEnv())
	}

	users := make([]string, numClients)
	for i := range users {
		users[i] = strconv.Itoa(1000 + i)
	}
	// One pair with ids that are not numbers: their key compares as strings.
	users[numClients-2], users[numClients-1] = "e2e.alice", "e2e.bob"

	w := &world{lb: lbWS, stopChat: make(chan struct{})}
	chatters := make([]*chatter, numClients)
	offPlan := map[string]map[string]int{} // offline user -> sender -> messages
	for i := range chatters {
		tok, err := mintToken(secret, users[i], time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c := newChatter(w, i, users[i], users[i^1], tok)
		if i < numOffSend {
			c.offTo, c.offLeft = offline[i%numOffline], 3+i%4
			if offPlan[c.offTo] == nil {
				offPlan[c.offTo] = map[string]int{}
			}
			offPlan[c.offTo][c.user] = c.offLeft
		}
		chatters[i] = c
	}

	group := startCrowd(ctx, t, chatters, logf)

	// Drain chatd-b.
	sleepCtx(ctx, 3*time.Second)
	b := replicas["chatd-b"]
	termAt := time.Now()
	if err := b.proc.signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The signal is handled asynchronously: within the 1 s drain delay,
	// /readyz must turn 503 (and stay so until the process exits).
	readyzStatus := ""
	for deadline := time.Now().Add(500 * time.Millisecond); ; time.Sleep(10 * time.Millisecond) {
		resp, err := http.Get(b.url("/readyz"))
		if err != nil {
			readyzStatus = err.Error()
			break
		}
		resp.Body.Close()
		readyzStatus = resp.Status
		if resp.StatusCode == http.StatusServiceUnavailable || time.Now().After(deadline) {
			break
		}
	}
	if !strings.HasPrefix(readyzStatus, "503") {
		t.Errorf("chatd-b /readyz within 0.5 s of SIGTERM: %s, want 503 during the drain delay", readyzStatus)
	}
	if code, out := health(ctx, bin, b.url("/readyz")); code != 1 {
		t.Errorf("chatd health on draining chatd-b: exit %d (%s), want 1", code, strings.TrimSpace(out))
	}
	if err := b.proc.wait(30 * time.Second); err != nil {
		t.Errorf("chatd-b after SIGTERM: %v, want a clean exit", err)
	}
	drainTook := time.Since(termAt)
	logf("chatd-b drained and exited %.1fs after SIGTERM; clients now %v", drainTook.Seconds(), spread(chatters))
	sleepCtx(ctx, 2*time.Second)
	b.start(t, tmp, logDir)
	b.waitReady(ctx, t, bin, 15*time.Second)
	logf("chatd-b restarted")
	sleepCtx(ctx, 2*time.Second)

	// Kill chatd-c, holding a few of its clients offline.
	cr := replicas["chatd-c"]
	var onVictim []*chatter
	var held []*chatter
	for _, c := range chatters {
		c.mu.Lock()
		on := c.live && c.replica == cr.name
		if on && c.idx >= numOffSend && len(held) < numHeld {
			c.hold = true
			held = append(held, c)
		}
		c.mu.Unlock()
		if on {
			onVictim = append(onVictim, c)
		}
	}
	if len(held) == 0 {
		t.Fatalf("no client on %s to hold offline: %v", cr.name, spread(chatters))
	}
	heldUsers := userIDs(held)
	if online, via, err := probePresence(ctx, lbWS, observerToken, heldUsers); err != nil {
		t.Errorf("presence before the kill: %v", err)
	} else {
		for _, u := range heldUsers {
			if !online[u] {
				t.Errorf("presence before the kill (asked %s): %s offline, but its socket is on %s", via, u, cr.name)
			}
		}
	}
	killAt := time.Now()
	if err := cr.proc.signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cr.proc.wait(5 * time.Second)
	logf("SIGKILL %s: %d sockets on it; holding %v offline", cr.name, len(onVictim), heldUsers)

	type offlineResult struct {
		after   time.Duration // -1: not offline in time
		lastErr error
	}
	presenceDone := make(chan offlineResult, 1)
	go func() {
		after, err := waitOffline(ctx, lbWS, observerToken, heldUsers, killAt)
		presenceDone <- offlineResult{after, err}
	}()

	sleepCtx(ctx, 3*time.Second)
	// This time configured as deploy/compose.yaml does it: environment only.
	cr.argv, cr.env = []string{bin}, []string{
		fmt.Sprintf("CHAT_ADDR=127.0.0.1:%d", cr.port),
		"REDIS_URL=redis://" + redisAddr + "/0",
		"CHAT_SECRET=" + secret,
		"CHAT_REPLICA=" + cr.name,
		"CHAT_ORIGINS=localhost:8080,127.0.0.1:8080",
		"CHAT_DRAIN_DELAY=1s",
		"CHAT_DRAIN_WINDOW=3s",
		"CHAT_LOG_FORMAT=json",
	}
	cr.start(t, tmp, logDir)
	cr.waitReady(ctx, t, bin, 15*time.Second)
	logf("%s restarted %.1fs after the kill", cr.name, time.Since(killAt).Seconds())

	// Cut every replica's pub/sub link: each resubscribes and sends `resync`
	// to its sockets, which catch up (PROTOCOL.md 3a).
	sleepCtx(ctx, time.Until(killAt.Add(5*time.Second)))
	cut, err := rdb.ClientKillByFilter(ctx, "TYPE", "pubsub").Result()
	if err != nil {
		t.Errorf("CLIENT KILL TYPE pubsub: %v", err)
	}
	logf("cut %d pub/sub links (CLIENT KILL TYPE pubsub)", cut)

	sleepCtx(ctx, time.Until(killAt.Add(8*time.Second)))
	close(w.stopChat)
	logf("chat stopped; clients now %v", spread(chatters))

	pres := <-presenceDone
	offlineAfter := pres.after
	if offlineAfter < 0 {
		t.Errorf("presence: %v still online %v after the SIGKILL of their replica (last probe error: %v)", heldUsers, presenceMax, pres.lastErr)
	} else {
		logf("presence: the held users read offline %.1fs after the kill", offlineAfter.Seconds())
	}
	for _, c := range held {
		c.mu.Lock()
		down := !c.heldDown.IsZero()
		c.mu.Unlock()
		if !down {
			t.Errorf("held user %s never lost its socket on %s", c.user, cr.name)
		}
		close(c.release)
	}

	group.finish(ctx, t)
	chatEnded := time.Now()

	// From here on, the chatters are still: read their state without locks.
	v := verify(ctx, t, rdb, chatters, offline)
	unreadOK := checkUnread(ctx, t, rdb, lbWS, offPlan, offlineTokens)

	var recon []time.Duration
	drops := map[string]int{}
	codes := map[string]int{}
	resyncs, dialFails := 0, 0
	var problems []string
	for _, c := range chatters {
		recon = append(recon, c.reconnects...)
		for k, n := range c.drops {
			drops[k] += n
		}
		for k, n := range c.errCodes {
			codes[k] += n
		}
		resyncs += c.resyncs
		dialFails += c.dialFails
		problems = append(problems, c.problems...)
	}
	for i, p := range problems {
		if i == 30 {
			t.Errorf("... and %d more protocol problems", len(problems)-30)
			break
		}
		t.Errorf("protocol: %s", p)
	}
	if cut > 0 && resyncs == 0 {
		t.Errorf("%d pub/sub links were cut, yet no client got a resync", cut)
	}
	slices.Sort(recon)
	p50, p99, pmax := quantile(recon, 0.50), quantile(recon, 0.99), quantile(recon, 1)
	if len(recon) == 0 {
		t.Errorf("no client reconnected: the failover did not happen")
	}

	presence := "NOT within 30s"
	if offlineAfter >= 0 {
		presence = fmt.Sprintf("%.1fs", offlineAfter.Seconds())
	}
	logf("drops by cause: %v; dial failures %d; error replies %v; resyncs %d", drops, dialFails, codes, resyncs)
	logf("delivered live %d, from history %d; de-duplicated by (conv, seq): %d (of which delivered live twice: %d)", v.live, v.history, v.dupFrames, v.dupLive)
	logf("chatd-b drain (SIGTERM to exit): %.1fs; chat phase ended %.0fs into the test", drainTook.Seconds(), chatEnded.Sub(began).Seconds())
	logf("RESULT clients=%d messages sent=%d acked=%d stored=%d delivered=%d (+%d to offline users, counted as unread; retried %d, acked after a retry %d)",
		len(chatters), v.sent, v.acked, v.stored, v.delivered, v.toOffline, v.retried, v.ackedAfterRetry)
	logf("RESULT lost=%d duplicates=%d undelivered=%d unread exact=%v (%d conversations of offline users)",
		v.lost, v.duplicates, v.undelivered, unreadOK, v.offConvs)
	logf("RESULT reconnects=%d p50=%s p99=%s max=%s; killed replica held %d sockets, presence offline after %s",
		len(recon), p50.Round(time.Millisecond), p99.Round(time.Millisecond), pmax.Round(time.Millisecond), len(onVictim), presence)
	logf("RESULT took %.1fs", time.Since(began).Seconds())
}

// verdict is what verify found.
type verdict struct {
	sent, acked, stored, delivered, retried, ackedAfterRetry int
	lost, duplicates, undelivered                            int
	live, history, dupFrames, dupLive, offConvs, toOffline   int
}

// verify compares what the clients sent, saw acknowledged and received with
// the conversation lists in Redis.
func verify(ctx context.Context, t *testing.T, rdb *redis.Client, chatters []*chatter, offline []string) verdict {
	t.Helper()
	var v verdict
	type origin struct {
		c *chatter
		o *outgoing
	}
	byID := map[string]origin{} // the id is the text's first word
	convs := map[string]bool{}
	byUser := map[string]*chatter{}
	for _, c := range chatters {
		byUser[c.user] = c
		for _, o := range c.sent {
			byID[o.id] = origin{c, o}
			convs[convKey(c.user, o.to)] = true
			v.sent++
			if o.attempts > 1 {
				v.retried++
			}
		}
		v.acked += len(c.acked)
		v.live += c.gotLive
		v.history += c.gotHistory
		v.dupFrames += c.dupFrames
		v.dupLive += c.dupLive
	}

	keys, err := seedKeys(ctx, rdb)
	if err != nil {
		t.Fatalf("scan redis: %v", err)
	}
	for k, typ := range keys {
		if typ == "list" && !convs[k] {
			t.Errorf("redis: unexpected conversation list %q", k)
		}
	}

	stored := map[string][]element{} // id -> its stored copies
	elements := map[string]map[int64]element{}
	var lost []string
	for conv := range convs {
		if keys[conv] != "list" {
			t.Errorf("redis: conversation %s is %q, want a list", conv, keys[conv])
		}
		els, bad, err := readConv(ctx, rdb, conv)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bad {
			t.Errorf("redis: %s", b)
		}
		elements[conv] = map[int64]element{}
		for _, e := range els {
			v.stored++
			elements[conv][e.seq] = e
			id, _, _ := strings.Cut(e.text, " ")
			org, ok := byID[id]
			if !ok || org.o.text != e.text || org.c.user != e.from || org.o.to != e.to {
				t.Errorf("redis: %s seq %d is no message a client sent: from %s to %s %q", conv, e.seq, e.from, e.to, e.text)
				continue
			}
			stored[id] = append(stored[id], e)
			if slices.Contains(offline, e.to) {
				v.toOffline++
			}
			if r := byUser[e.to]; r != nil {
				if r.got[conv][e.seq] == e.text {
					v.delivered++
				} else {
					v.undelivered++
					if v.undelivered <= 20 {
						t.Errorf("not delivered: %s seq %d %q never reached user %s (live or by history)", conv, e.seq, e.text, e.to)
					}
				}
			}
		}
	}
	for _, c := range chatters {
		for _, o := range c.sent {
			copies := stored[o.id]
			m, acked := c.acked[o.id]
			switch {
			case len(copies) == 0 && acked:
				v.lost++
				lost = append(lost, fmt.Sprintf("%s (acked as %s seq %d)", o.id, m.Conv, m.Seq))
			case len(copies) == 0:
				v.lost++
				lost = append(lost, o.id+" (never acked)")
			case len(copies) > 1:
				v.duplicates += len(copies) - 1
				var seqs []int64
				for _, e := range copies {
					seqs = append(seqs, e.seq)
				}
				t.Errorf("duplicate: client id %s of user %s stored %d times (%s seqs %v)", o.id, c.user, len(copies), convKey(c.user, o.to), seqs)
			}
			if acked && len(copies) > 0 {
				at := slices.IndexFunc(copies, func(e element) bool { return e.seq == m.Seq })
				if at < 0 || m.Conv != convKey(c.user, o.to) {
					t.Errorf("sent for %s said %s seq %d, redis has it at %s seq %d", o.id, m.Conv, m.Seq, convKey(c.user, o.to), copies[0].seq)
				}
				if o.attempts > 1 {
					v.ackedAfterRetry++
				}
			}
			if !acked {
				t.Errorf("never acknowledged: %s of user %s after %d attempts", o.id, c.user, o.attempts)
			}
		}
		// Nothing received that Redis does not hold.
		for conv, seqs := range c.got {
			for seq, text := range seqs {
				if e, ok := elements[conv][seq]; !ok || e.text != text || e.to != c.user {
					t.Errorf("user %s received %s seq %d %q, redis has %+v", c.user, conv, seq, text, e)
				}
			}
		}
	}
	if len(lost) > 0 {
		sort.Strings(lost)
		t.Errorf("lost %d message(s): %s", len(lost), strings.Join(lost[:min(len(lost), 30)], ", "))
	}
	for _, u := range offline {
		for conv := range convs {
			if hi, lo, _ := strings.Cut(conv, "-"); hi == u || lo == u {
				v.offConvs++
			}
		}
	}
	return v
}

// checkUnread checks the unread counts of the users who were offline the
// whole time: the hash field in Redis, then `ready` and `history` as the
// user sees them, then that `read` resets the count.
func checkUnread(ctx context.Context, t *testing.T, rdb *redis.Client, lb string, plan map[string]map[string]int, tokens map[string]string) bool {
	t.Helper()
	ok := true
	for u, senders := range plan {
		for s, want := range senders {
			conv := convKey(u, s)
			got, err := rdb.HGet(ctx, u, conv).Int()
			if err != nil || got != want {
				t.Errorf("unread: HGET %s %s = %d (%v), want %d", u, conv, got, err, want)
				ok = false
			}
		}
		conn, err := dialChat(ctx, lb, tokens[u], func(frame) {})
		if err != nil {
			t.Errorf("unread: connect as %s: %v", u, err)
			ok = false
			continue
		}
		if !mapsEqual(conn.ready.unreadMap, senders) {
			t.Errorf("unread: ready for %s says %v, want %v", u, conn.ready.unreadMap, senders)
			ok = false
		}
		for s, want := range senders {
			id := "h-" + s
			h, err := conn.request(ctx, id, map[string]any{"type": "history", "with": s, "limit": 200, "id": id}, 5*time.Second)
			switch {
			case err != nil:
				t.Errorf("unread: history of %s with %s: %v", u, s, err)
				ok = false
			case h.unreadCount != want || len(h.Messages) != want:
				t.Errorf("unread: history of %s with %s: unread %d and %d messages, want %d and %d", u, s, h.unreadCount, len(h.Messages), want, want)
				ok = false
			}
			id = "r-" + s
			if _, err := conn.request(ctx, id, map[string]any{"type": "read", "with": s, "id": id}, 5*time.Second); err != nil {
				t.Errorf("unread: read of %s with %s: %v", u, s, err)
				ok = false
			}
			if n, err := rdb.HGet(ctx, u, convKey(u, s)).Int(); err != nil && err != redis.Nil || n != 0 {
				t.Errorf("unread: after read, HGET %s %s = %d (%v), want 0", u, convKey(u, s), n, err)
				ok = false
			}
		}
		conn.close()
	}
	return ok
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// probePresence asks, on a fresh socket through the balancer, which of users
// are online. via is the replica that answered.
func probePresence(ctx context.Context, lb, token string, users []string) (online map[string]bool, via string, err error) {
	conn, err := dialChat(ctx, lb, token, func(frame) {})
	if err != nil {
		return nil, "", err
	}
	defer conn.close()
	r, err := conn.request(ctx, "p", map[string]any{"type": "presence", "users": users, "id": "p"}, 3*time.Second)
	if err != nil {
		return nil, conn.ready.Replica, err
	}
	for _, u := range users {
		if _, ok := r.Online[u]; !ok {
			return nil, conn.ready.Replica, fmt.Errorf("presence reply %s lacks %s", r.raw, u)
		}
	}
	return r.Online, conn.ready.Replica, nil
}

// waitOffline polls presence until every user reads offline and returns the
// time since since, or -1 after presenceMax with the last probe's error.
func waitOffline(ctx context.Context, lb, token string, users []string, since time.Time) (time.Duration, error) {
	var lastErr error
	for time.Since(since) < presenceMax && ctx.Err() == nil {
		online, _, err := probePresence(ctx, lb, token, users)
		if err == nil {
			var on []string
			for _, u := range users {
				if online[u] {
					on = append(on, u)
				}
			}
			if len(on) == 0 {
				return time.Since(since), nil
			}
			err = fmt.Errorf("still online: %v", on)
		}
		lastErr = err
		sleepCtx(ctx, 250*time.Millisecond)
	}
	return -1, lastErr
}

// waitAll waits until cond holds for every chatter.
func waitAll(ctx context.Context, chatters []*chatter, d time.Duration, cond func(*chatter) bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		all := true
		for _, c := range chatters {
			c.mu.Lock()
			ok := cond(c)
			c.mu.Unlock()
			if !ok {
				all = false
				break
			}
		}
		if all {
			return true
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
	return false
}

// spread counts the live sockets per replica.
func spread(chatters []*chatter) map[string]int {
	m := map[string]int{}
	for _, c := range chatters {
		c.mu.Lock()
		if c.live {
			m[c.replica]++
		} else {
			m["down"]++
		}
		c.mu.Unlock()
	}
	return m
}

func userIDs(cs []*chatter) []string {
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.user)
	}
	return ids
}

// dialReport names the chatters that are not live and their last dial error.
func dialReport(chatters []*chatter) string {
	var b strings.Builder
	n := 0
	for _, c := range chatters {
		c.mu.Lock()
		if !c.live {
			n++
			if n <= 10 {
				fmt.Fprintf(&b, "\n  %s: %d failed dials, last: %s", c.user, c.dialFails, c.lastDial)
			}
		}
		c.mu.Unlock()
	}
	return fmt.Sprintf("%d down%s", n, b.String())
}

// pendingReport names the messages not yet acknowledged.
func pendingReport(chatters []*chatter) string {
	var out []string
	for _, c := range chatters {
		c.mu.Lock()
		for _, o := range c.sent {
			if _, ok := c.acked[o.id]; !ok {
				out = append(out, fmt.Sprintf("%s (%d attempts, live=%v)", o.id, o.attempts, c.live))
			}
		}
		c.mu.Unlock()
	}
	if len(out) > 20 {
		out = append(out[:20], fmt.Sprintf("... %d more", len(out)-20))
	}
	return strings.Join(out, ", ")
}

// quantile of sorted durations, 0 for none.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)-1) + 0.5)
	return sorted[min(i, len(sorted)-1)]
}
