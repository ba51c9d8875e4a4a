package hub_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/chatd/chatd/auth"
	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/hub"
	"github.com/chatd/chatd/internal/redistest"
)

func TestPresenceQueryWatchAndExpiry(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	ra, rb := cl.replica("a"), cl.replica("b")
	w := ra.dial(t, "23")
	f := w.call(map[string]any{"type": "presence", "users": []string{"43", "65"}, "watch": true, "id": "p"})
	if on, _ := f["online"].(map[string]any); on["43"] != false || on["65"] != false {
		t.Fatalf("presence = %v", f)
	}
	b := rb.dial(t, "43")
	if f := w.expect("presence"); f["id"] != nil || f["online"].(map[string]any)["43"] != true {
		t.Fatalf("push = %v", f)
	}
	b2 := rb.dial(t, "43") // a second socket is no change
	b2.ws.Close(websocket.StatusNormalClosure, "")
	w.quiet(300 * time.Millisecond)
	b.ws.Close(websocket.StatusNormalClosure, "")
	if f := w.expect("presence"); f["online"].(map[string]any)["43"] != false {
		t.Fatalf("push = %v", f)
	}

	// A replica that dies without cleaning up: its users read offline once
	// their entries expire, and watchers are told.
	rc := cl.replica("c")
	rc.dial(t, "65")
	if f := w.expect("presence"); f["online"].(map[string]any)["65"] != true {
		t.Fatalf("push = %v", f)
	}
	rc.crash()
	f = w.call(map[string]any{"type": "presence", "users": []string{"65"}, "id": "q"})
	if f["online"].(map[string]any)["65"] != true {
		t.Fatalf("65 offline before its entry expired: %v", f)
	}
	cl.clock.Advance(26 * time.Second) // past the 25 s TTL
	if f := w.expect("presence"); f["id"] != nil || f["online"].(map[string]any)["65"] != false {
		t.Fatalf("push after expiry = %v", f)
	}
	f = w.call(map[string]any{"type": "presence", "users": []string{"65"}, "id": "q2"})
	if f["online"].(map[string]any)["65"] != false {
		t.Fatalf("presence after expiry = %v", f)
	}
}

func TestBadFramesKeepTheSocket(t *testing.T) {
	t.Parallel()
	r := newCluster(t).replica("a")
	c := r.dial(t, "23")
	long := strings.Repeat("x", 4097)
	cases := []struct {
		frame string
		code  string
		id    string
	}{
		{`not json`, "bad_request", ""},
		{`{"type":"send","to":"43","text":"x","id":"c1"`, "bad_request", ""},
		{`[1,2]`, "bad_request", ""},
		{`{"id":"c2"}`, "bad_request", "c2"},
		{`{"type":"fly","id":"c3"}`, "bad_request", "c3"},
		{`{"type":"send","text":"x","id":"c4"}`, "bad_request", "c4"},
		{`{"type":"send","to":"4:3","text":"x","id":"c5"}`, "bad_request", "c5"},
		{`{"type":"send","to":"43","id":"c6"}`, "bad_request", "c6"},
		{`{"type":"send","to":"43","text":"","id":"c7"}`, "bad_request", "c7"},
		{`{"type":"send","to":"43","text":"` + long + `","id":"c8"}`, "too_large", "c8"},
		{`{"type":"send","to":"43","text":42,"id":"c9"}`, "bad_request", "c9"},
		{`{"type":"send","to":"43","text":"x","id":"has space"}`, "bad_request", "has space"},
		{`{"type":"history","with":"43","limit":201,"id":"h1"}`, "bad_request", "h1"},
		{`{"type":"history","with":"43","limit":0,"id":"h2"}`, "bad_request", "h2"},
		{`{"type":"history","with":"43","before":0,"id":"h3"}`, "bad_request", "h3"},
		{`{"type":"history","id":"h4"}`, "bad_request", "h4"},
		{`{"type":"history","with":"` + strings.Repeat("9", 65) + `","id":"h5"}`, "bad_request", "h5"},
		{`{"type":"read","with":"a b","id":"r1"}`, "bad_request", "r1"},
		{`{"type":"presence","users":[],"id":"p1"}`, "bad_request", "p1"},
		{`{"type":"presence","users":["ok","no!"],"id":"p2"}`, "bad_request", "p2"},
		{`{"type":"inbox","limit":100000,"id":"i1"}`, "bad_request", "i1"},
		{`{"type":"typing","id":"t1"}`, "bad_request", "t1"},
		{"{\"type\":\"send\",\"to\":\"43\",\"text\":\"bad \xff\xfe\",\"id\":\"u1\"}", "bad_request", ""},
		{`{"type":"send","to":"43","text":"x\ud800y","id":"s1"}`, "bad_request", "s1"},
		{`{"type":"send","to":"43","text":"x\udc00","id":"s2"}`, "bad_request", "s2"},
		{`{"type":"send","to":"43","text":"\ud83d\u0041","id":"s3"}`, "bad_request", "s3"},
		{`{"type":"send","to":"43","text":"a","text":"b","id":"d1"}`, "bad_request", "d1"},
		{`{"type":"send","to":"43","TEXT":"x","id":"d2"}`, "bad_request", "d2"},
		{`{"type":"send","to":"43","text":"x","Text":"y","id":"d3","type":"send"}`, "bad_request", "d3"},
		{`{"type":"ping","id":"d4"} {"type":"ping"}`, "bad_request", ""},
	}
	for _, tc := range cases {
		c.send([]byte(tc.frame))
		f := c.expect("error")
		if f["code"] != tc.code || f["message"] == "" {
			t.Errorf("%s: error = %v, want code %s", tc.frame, f, tc.code)
		}
		if got, _ := f["id"].(string); got != tc.id {
			t.Errorf("%s: error id = %q, want %q", tc.frame, got, tc.id)
		}
	}
	if err := c.ws.Write(t.Context(), websocket.MessageBinary, []byte(`{"type":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	if f := c.expect("error"); f["code"] != "bad_request" {
		t.Fatalf("binary frame: %v", f)
	}
	// Still usable, and nothing was stored.
	if f := c.call(map[string]any{"type": "ping", "id": "alive"}); f["type"] != "pong" {
		t.Fatalf("got %v", f)
	}
	h := c.call(map[string]any{"type": "history", "with": "43", "id": "h"})
	if msgs, _ := h["messages"].([]any); len(msgs) != 0 {
		t.Fatalf("bad frames stored messages: %v", h)
	}
}

func TestEscapedSurrogatePairIsStoredExactly(t *testing.T) {
	t.Parallel()
	r := newCluster(t).replica("a")
	c := r.dial(t, "23")
	f := c.call(map[string]any{"type": "ping", "id": "warm"})
	if f["type"] != "pong" {
		t.Fatal(f)
	}
	c.send([]byte(`{"type":"send","to":"43","text":"smile \ud83d\ude00 \\ud800","id":"ok"}`))
	f = c.expect("sent")
	if got := msgOf(f)["text"]; got != "smile 😀 \\ud800" {
		t.Fatalf("stored %q", got)
	}
}

func TestBadFramesAreRateLimitedToo(t *testing.T) {
	t.Parallel()
	r := newCluster(t).replica("a", withHub(func(c *hub.Config) { c.Rate = rate.Limit(0.1); c.Burst = 2 }))
	c := r.dial(t, "23")
	for i := range 3 {
		c.send([]byte(`{"type":`))
		f := c.expect("error")
		want := "bad_request"
		if i == 2 {
			want = "rate_limited"
		}
		if f["code"] != want {
			t.Fatalf("frame %d: %v, want %s", i, f, want)
		}
	}
}

// gatePresence answers Online from Redis at once but hands the answer
// back only when released: a query whose answer is overtaken by a push.
type gatePresence struct {
	hub.Presence
	read    chan struct{}
	release chan struct{}
}

func (g gatePresence) Online(ctx context.Context, users []string) (map[string]bool, error) {
	m, err := g.Presence.Online(ctx, users)
	g.read <- struct{}{}
	<-g.release
	return m, err
}

func TestPresenceAnswerDoesNotUndoANewerPush(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	gate := gatePresence{read: make(chan struct{}, 1), release: make(chan struct{})}
	ra := cl.replica("a", withHub(func(c *hub.Config) { gate.Presence = c.Presence; c.Presence = gate }))
	rb := cl.replica("b")
	w := ra.dial(t, "23")
	w.send(map[string]any{"type": "presence", "users": []string{"43"}, "watch": true, "id": "q"})
	<-gate.read // Redis said: 43 offline
	rb.dial(t, "43")
	if f := w.expect("presence"); f["id"] != nil || f["online"].(map[string]any)["43"] != true {
		t.Fatalf("push = %v", f)
	}
	close(gate.release)
	f := w.expect("presence")
	if f["id"] != "q" || f["online"].(map[string]any)["43"] != true {
		t.Fatalf("answer after the push = %v; want 43 online, as pushed", f)
	}
}

func TestOversizedFrameCloses1009(t *testing.T) {
	t.Parallel()
	r := newCluster(t).replica("a")
	// The server closes with the frame's rest unread, so the kernel may
	// answer with a reset that overtakes the close frame (status -1):
	// only that is tried again.
	for try := 1; ; try++ {
		c := r.dial(t, "23")
		// A reset may also end the write itself: what counts is the close.
		_ = c.ws.Write(t.Context(), websocket.MessageText,
			[]byte(`{"type":"send","to":"43","text":"`+strings.Repeat("x", 40<<10)+`"}`))
		code := c.closed()
		if code == websocket.StatusMessageTooBig {
			return
		}
		if code != -1 || try == 5 {
			t.Fatalf("close status %v, want 1009", code)
		}
	}
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	r := newCluster(t).replica("a", withHub(func(c *hub.Config) { c.Rate = rate.Limit(0.5); c.Burst = 2 }))
	c := r.dial(t, "23")
	c.call(map[string]any{"type": "ping", "id": "1"})
	c.call(map[string]any{"type": "ping", "id": "2"})
	f := c.call(map[string]any{"type": "send", "to": "43", "text": "x", "id": "3"})
	if f["type"] != "error" || f["code"] != "rate_limited" {
		t.Fatalf("got %v", f)
	}
	if ra, ok := f["retry_after"].(float64); !ok || ra <= 0 || ra > 2 {
		t.Fatalf("retry_after = %v", f["retry_after"])
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	const secret = "s3cret-for-tests-s3cret-for-tests"
	r := newCluster(t).replica("a", withSecret(secret))
	sign := func(method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	exp := time.Now().Add(time.Hour).Unix()
	good, err := auth.Mint(secret, "23", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		query  string
		header http.Header
		status int
	}{
		{"valid token", "token=" + good, nil, 101},
		{"bearer header", "", http.Header{"Authorization": {"Bearer " + good}}, 101},
		{"missing", "", nil, 401},
		{"dev user ignored with a secret", "user=23", nil, 401},
		{"expired", "token=" + sign(jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": "23", "exp": time.Now().Add(-time.Hour).Unix()}), nil, 401},
		{"no exp", "token=" + sign(jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": "23"}), nil, 401},
		{"no sub", "token=" + sign(jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"exp": exp}), nil, 401},
		{"bad sub", "token=" + sign(jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": "a:b", "exp": exp}), nil, 401},
		{"wrong key", "token=" + sign(jwt.SigningMethodHS256, []byte("other"), jwt.MapClaims{"sub": "23", "exp": exp}), nil, 401},
		{"HS512", "token=" + sign(jwt.SigningMethodHS512, []byte(secret), jwt.MapClaims{"sub": "23", "exp": exp}), nil, 401},
		{"alg none", "token=" + sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "23", "exp": exp}), nil, 401},
		{"garbage", "token=abc.def.ghi", nil, 401},
		{"foreign origin", "token=" + good, http.Header{"Origin": {"https://evil.example"}}, 403},
		{"own origin", "token=" + good, http.Header{"Origin": {r.srv.URL}}, 101},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ws, resp, err := websocket.Dial(ctx, r.wsURL(tc.query), &websocket.DialOptions{HTTPHeader: tc.header})
			if tc.status == 101 {
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				defer ws.CloseNow()
				_, data, err := ws.Read(ctx)
				if err != nil || !strings.Contains(string(data), `"user":"23"`) {
					t.Fatalf("ready = %s, %v", data, err)
				}
				return
			}
			if err == nil {
				ws.CloseNow()
				t.Fatal("dial succeeded")
			}
			if resp == nil || resp.StatusCode != tc.status {
				t.Fatalf("dial: %v, response %v, want HTTP %d", err, resp, tc.status)
			}
		})
	}
}

func TestDevModeRejectsBadUser(t *testing.T) {
	t.Parallel()
	r := newCluster(t).replica("a")
	for _, q := range []string{"", "user=", "user=a%3Ab", "user=" + strings.Repeat("x", 65)} {
		_, resp, err := websocket.Dial(t.Context(), r.wsURL(q), nil)
		if err == nil || resp == nil || resp.StatusCode != 401 {
			t.Errorf("%q: %v %v, want 401", q, err, resp)
		}
	}
}

func TestSlowConsumerIsClosed(t *testing.T) {
	t.Parallel()
	r := newCluster(t).replica("a", withHub(func(c *hub.Config) {
		c.QueueSize = 4
		c.Rate = 1e6
		c.Burst = 1e6
		c.WriteTimeout = 500 * time.Millisecond
	}))
	// The slow client never reads, and its receive buffer is tiny, so the
	// server's writes stall soon, its queue overflows, and the server
	// closes it rather than wait.
	dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	httpc := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	slow, _, err := websocket.Dial(t.Context(), r.wsURL("user=43"), &websocket.DialOptions{HTTPClient: httpc})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.CloseNow()
	fast := r.dial(t, "23")
	text := strings.Repeat("y", 4000)
	stop := time.Now().Add(30 * time.Second)
	for r.hub.Len() == 2 && time.Now().Before(stop) {
		for range 3 {
			fast.send(map[string]any{"type": "send", "to": "43", "text": text})
		}
		for range 3 {
			fast.next()
		}
	}
	if r.hub.Len() != 1 {
		t.Fatalf("slow consumer still connected after 30s")
	}
	if f := fast.call(map[string]any{"type": "ping", "id": "ok"}); f["type"] != "pong" {
		t.Fatalf("fast client hurt: %v", f)
	}
}

// gateStore holds every Send until released, to catch one in flight.
type gateStore struct {
	hub.Store
	entered chan struct{}
	release chan struct{}
}

func (g gateStore) Send(ctx context.Context, req chat.SendRequest) (chat.Message, bool, error) {
	g.entered <- struct{}{}
	<-g.release
	return g.Store.Send(ctx, req)
}

func TestDrainClosesWith1012AfterInFlightSend(t *testing.T) {
	t.Parallel()
	gate := gateStore{entered: make(chan struct{}, 1), release: make(chan struct{})}
	r := newCluster(t).replica("a", withHub(func(c *hub.Config) { gate.Store = c.Store; c.Store = gate }))
	c := r.dial(t, "23")
	other := r.dial(t, "43")
	c.send(map[string]any{"type": "send", "to": "43", "text": "last words", "id": "l"})
	<-gate.entered
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = r.hub.Shutdown(ctx, 200*time.Millisecond) }()
	time.Sleep(300 * time.Millisecond) // every close has been asked for
	close(gate.release)
	f := c.next()
	if f["type"] != "sent" {
		t.Fatalf("got %v before the close", f)
	}
	if code := c.closed(); code != websocket.StatusServiceRestart {
		t.Fatalf("close status %v, want 1012", code)
	}
	if code := other.closed(); code != websocket.StatusServiceRestart {
		t.Fatalf("close status %v, want 1012", code)
	}
	wg.Wait()
	_, resp, err := websocket.Dial(t.Context(), r.wsURL("user=23"), nil)
	if err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("dial while draining: %v %v, want 503", err, resp)
	}
}

func TestResyncAfterPubSubBreak(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	r := cl.replica("a")
	c := r.dial(t, "23")
	killPubSub(t, cl.redis, r)
	c.expect("resync")
	// Live delivery works again after the resubscription.
	other := r.dial(t, "43")
	other.call(map[string]any{"type": "send", "to": "23", "text": "after", "id": "a"})
	// On a Redis Cluster each shard channel's link came back on its own:
	// a second resync may come.
	f := c.next()
	for f["type"] == "resync" {
		f = c.next()
	}
	if m := msgOf(f); f["type"] != "message" || m["text"] != "after" {
		t.Fatalf("got %v, want the message", f)
	}
}

// killPubSub cuts the replica's pub/sub connection.
func killPubSub(t *testing.T, r *redistest.Redis, rep *replica) {
	t.Helper()
	if r.Mini != nil {
		r.Mini.Close() // drops every connection of this test's own server
		if err := r.Mini.Restart(); err != nil {
			t.Fatal(err)
		}
		return
	}
	// On a Redis Cluster the replica has one connection per shard channel
	// (ssub=1), on the node of each channel's slot.
	killed := 0
	err := redistest.ForEachNode(t.Context(), r.Client, func(ctx context.Context, node *redis.Client) error {
		list, err := node.ClientList(ctx).Result()
		if err != nil {
			return err
		}
		for _, line := range strings.Split(list, "\n") {
			if !strings.Contains(line, " name="+rep.client+" ") || !strings.Contains(line, "cmd=subscribe") &&
				!strings.Contains(line, " sub=2 ") && !strings.Contains(line, " ssub=1 ") {
				continue
			}
			for _, f := range strings.Fields(line) {
				if id, ok := strings.CutPrefix(f, "id="); ok {
					if err := node.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
						return err
					}
					killed++
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if killed == 0 {
		t.Fatalf("no pub/sub connection named %s", rep.client)
	}
}

// TestResyncRegistersPresenceFirst: when the pub/sub link comes back (or a
// heartbeat finds the replica's entries lapsed), the replica writes its
// presence entries again before it tells its sockets to resync, so a
// message sent after the resync is routed to them live. This is the path
// production runs (Hub.Run), here with entries lost as in a Redis restart.
func TestResyncRegistersPresenceFirst(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	ra, rb := cl.replica("a"), cl.replica("b")
	c := ra.dial(t, "23")
	sender := rb.dial(t, "43")
	for _, key := range cl.presenceKeys("23") {
		if err := cl.redis.Client.Del(t.Context(), key).Err(); err != nil {
			t.Fatal(err)
		}
	}
	ra.hub.Resync()
	c.expect("resync")
	sender.call(map[string]any{"type": "send", "to": "23", "text": "after the resync", "id": "s"})
	if m := msgOf(c.expect("message")); m["text"] != "after the resync" {
		t.Fatalf("got %v", m)
	}
}
