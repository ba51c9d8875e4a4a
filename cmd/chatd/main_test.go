package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/chatd/chatd/auth"
	"github.com/chatd/chatd/internal/fdlimit"
	"github.com/chatd/chatd/internal/logbuf"
	"github.com/chatd/chatd/internal/redistest"
)

// server is a chatd started through run, as main starts it.
type server struct {
	addr string
	stop context.CancelFunc
	done chan error
	logs *lockedBuffer
}

// lockedBuffer collects what a server or a command writes.
type lockedBuffer = logbuf.Buffer

// start runs chatd with args on a free loopback port and waits until it
// is ready.
func start(t *testing.T, env map[string]string, args ...string) *server {
	t.Helper()
	pr, pw := io.Pipe()
	logs := &lockedBuffer{}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			logs.Write([]byte(line + "\n"))
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "chatd starting" {
				addrc <- rec["addr"].(string)
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{stop: cancel, done: make(chan error, 1), logs: logs}
	args = append([]string{"-addr", "127.0.0.1:0", "-log-format", "json", "-drain-delay", "0", "-drain-window", "100ms"}, args...)
	go func() {
		s.done <- run(ctx, args, func(k string) string { return env[k] }, io.Discard, pw)
		pw.Close()
	}()
	select {
	case s.addr = <-addrc:
	case err := <-s.done:
		t.Fatalf("chatd exited: %v\n%s", err, logs)
	case <-time.After(10 * time.Second):
		t.Fatalf("chatd did not start\n%s", logs)
	}
	t.Cleanup(func() { s.shutdown(t) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + s.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("never ready\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *server) shutdown(t *testing.T) error {
	s.stop()
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(20 * time.Second):
		t.Fatalf("chatd did not stop\n%s", s.logs)
	}
	return nil
}

func dial(t *testing.T, url string) (*websocket.Conn, map[string]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	return ws, read(t, ws)
}

func read(t *testing.T, ws *websocket.Conn) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, data, err := ws.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func write(t *testing.T, ws *websocket.Conn, frame string) {
	t.Helper()
	if err := ws.Write(context.Background(), websocket.MessageText, []byte(frame)); err != nil {
		t.Fatal(err)
	}
}

func redisEnv(t *testing.T) (map[string]string, []string) {
	r := redistest.New(t)
	return map[string]string{}, []string{"-redis", r.URL, "-prefix", r.Prefix}
}

func TestServeChatAndDrain(t *testing.T) {
	t.Parallel()
	env, args := redisEnv(t)
	s := start(t, env, append(args, "-replica", "chatd-t1")...)
	for _, path := range []string{"/healthz", "/readyz", "/", "/metrics"} {
		resp, err := http.Get("http://" + s.addr + path)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %v %v", path, err, resp)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if path == "/metrics" && !strings.Contains(string(body), "chatd_build_info") {
			t.Fatalf("metrics lack chatd_build_info")
		}
	}
	a, ready := dial(t, "ws://"+s.addr+"/ws?user=23")
	if ready["type"] != "ready" || ready["replica"] != "chatd-t1" {
		t.Fatalf("ready = %v", ready)
	}
	b, _ := dial(t, "ws://"+s.addr+"/ws?user=43")
	write(t, a, `{"type":"send","to":"43","text":"hi","id":"1"}`)
	if f := read(t, a); f["type"] != "sent" {
		t.Fatalf("got %v", f)
	}
	if f := read(t, b); f["type"] != "message" {
		t.Fatalf("got %v", f)
	}
	if err := s.shutdown(t); err != nil {
		t.Fatalf("run returned %v after drain", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, err := a.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusServiceRestart {
		t.Fatalf("socket ended with %v, want 1012", err)
	}
	if !strings.Contains(s.logs.String(), `"msg":"chatd starting"`) || !strings.Contains(s.logs.String(), `"redis":"redis://`) {
		t.Fatalf("start line missing:\n%s", s.logs)
	}
}

func TestEmbeddedRedisByDefault(t *testing.T) {
	t.Parallel()
	s := start(t, map[string]string{})
	if !strings.Contains(s.logs.String(), "embedded") {
		t.Fatalf("start line does not say embedded:\n%s", s.logs)
	}
	a, _ := dial(t, "ws://"+s.addr+"/ws?user=1")
	write(t, a, `{"type":"send","to":"2","text":"stored","id":"x"}`)
	if f := read(t, a); f["type"] != "sent" {
		t.Fatalf("got %v", f)
	}
	b, ready := dial(t, "ws://"+s.addr+"/ws?user=2")
	if u := ready["unread"].(map[string]any); u["1"] != 1.0 {
		t.Fatalf("ready = %v", ready)
	}
	_ = b
}

func TestTokenMode(t *testing.T) {
	t.Parallel()
	env, args := redisEnv(t)
	const secret = "a-secret-of-32-bytes-for-tests.."
	env["CHAT_SECRET"] = secret
	s := start(t, env, args...)
	var out bytes.Buffer
	if err := run(t.Context(), []string{"token", "-user", "23", "-ttl", "1h"}, func(k string) string { return env[k] }, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(out.String())
	if sub, _, err := auth.New(secret, func(string) error { return nil }).Verify(tok); err != nil || sub != "23" {
		t.Fatalf("token %q: %v %v", tok, sub, err)
	}
	_, ready := dial(t, "ws://"+s.addr+"/ws?token="+tok)
	if ready["user"] != "23" {
		t.Fatalf("ready = %v", ready)
	}
	resp, err := http.Get("http://" + s.addr + "/ws?user=23")
	if err != nil || resp.StatusCode != 401 {
		t.Fatalf("dev login with a secret: %v %v", err, resp)
	}
	resp.Body.Close()
}

func TestHealthCommand(t *testing.T) {
	t.Parallel()
	env, args := redisEnv(t)
	s := start(t, env, args...)
	var out bytes.Buffer
	if err := run(t.Context(), []string{"health", "-url", "http://" + s.addr + "/readyz"}, os.Getenv, &out, io.Discard); err != nil {
		t.Fatalf("health: %v", err)
	}
	if err := run(t.Context(), []string{"health", "-url", "http://" + s.addr + "/nope"}, os.Getenv, &out, io.Discard); err == nil {
		t.Fatal("health of a 404 succeeded")
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-addr", "0.0.0.0:0"}, nil, "not loopback"},
		{[]string{"-addr", ":0"}, nil, "not loopback"},
		{[]string{"-rate", "0"}, nil, "must be positive"},
		{[]string{"-connect-rate", "0"}, nil, "must be positive"},
		{nil, map[string]string{"CHAT_CONNECT_BURST": "-1"}, "must be positive"},
		{[]string{"extra"}, nil, "unexpected argument"},
		{[]string{"-replica", "has space"}, nil, "replica"},
		{[]string{"-log-format", "xml"}, nil, "log-format"},
		{[]string{"-origins", "chat.example.com,*trusted.org"}, nil, `-origins: hub: bad origin pattern "*trusted.org"`},
		{nil, map[string]string{"CHAT_ORIGINS": "https://chat.example.com"}, "not a URL"},
		{[]string{"token", "-user", "23"}, nil, "no secret"},
		{[]string{"token", "-user", "a:b", "-secret", strings.Repeat("x", 32)}, nil, "invalid user id"},
		{[]string{"-secret", "short"}, nil, "HS256 wants at least 32"},
		{nil, map[string]string{"CHAT_SECRET": strings.Repeat("x", 31)}, "the secret is 31 bytes"},
		{[]string{"token", "-user", "23", "-secret", "short"}, nil, "HS256 wants at least 32"},
		{[]string{"token", "-user", "23"}, map[string]string{"CHAT_SECRET": "short"}, "HS256 wants at least 32"},
	}
	for _, tc := range cases {
		err := run(t.Context(), tc.args, func(k string) string { return tc.env[k] }, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want it to mention %q", tc.args, err, tc.want)
		}
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"-version"}, func(string) string { return "" }, &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "chatd ") {
		t.Fatalf("-version: %q %v", out.String(), err)
	}
	var help bytes.Buffer
	run(t.Context(), []string{"-h"}, func(string) string { return "" }, io.Discard, &help)
	for _, flag := range []string{"-addr", "-redis", "-secret", "-prefix", "-replica", "-origins", "-drain-delay", "CHAT_ADDR", "REDIS_URL"} {
		if !strings.Contains(help.String(), flag) {
			t.Errorf("-h does not explain %s", flag)
		}
	}
}

// After Redis loses everything (a restart without persistence), a replica
// notices the broken pub/sub link, writes its presence entries again and
// tells its sockets to resync; messages stored after that arrive live.
func TestRedisRestartResyncsAndDeliversLive(t *testing.T) {
	t.Parallel()
	r := redistest.New(t)
	replica := "restart-" + strings.TrimSuffix(r.Prefix[len("chatdtest:"):], ":")
	s := start(t, map[string]string{}, "-redis", r.URL, "-prefix", r.Prefix, "-replica", replica)
	a, _ := dial(t, "ws://"+s.addr+"/ws?user=23")

	if r.Mini != nil {
		r.Mini.Close()
		r.Mini.FlushAll()
		if err := r.Mini.Restart(); err != nil {
			t.Fatal(err)
		}
	} else {
		redistest.Clean(t, r.Client, r.Prefix+"*")
		killPubSub(t, r, "chatd-"+replica)
	}
	if f := read(t, a); f["type"] != "resync" {
		t.Fatalf("got %v, want resync", f)
	}
	// The sender is on another replica, so only 23's own presence entry
	// can route the message to 23's replica.
	s2 := start(t, map[string]string{}, "-redis", r.URL, "-prefix", r.Prefix, "-replica", replica+"-2")
	b, _ := dial(t, "ws://"+s2.addr+"/ws?user=43")
	write(t, b, `{"type":"send","to":"23","text":"after the restart","id":"r1"}`)
	if f := read(t, b); f["type"] != "sent" {
		t.Fatalf("got %v", f)
	}
	if f := read(t, a); f["type"] != "message" {
		t.Fatalf("23 got %v, want the message live", f)
	}
}

// killPubSub kills the real Redis pub/sub connections of the replica whose
// connections are named name (chatd names them "chatd-<replica>"): one on
// a single Redis, one per shard channel, on its node, on a Redis Cluster.
func killPubSub(t *testing.T, r *redistest.Redis, name string) {
	t.Helper()
	killed := 0
	err := redistest.ForEachNode(t.Context(), r.Client, func(ctx context.Context, node *redis.Client) error {
		list, err := node.ClientList(ctx).Result()
		if err != nil {
			return err
		}
		for _, line := range strings.Split(list, "\n") {
			if !strings.Contains(line, " name="+name+" ") || strings.Contains(line, " sub=0 ") && !strings.Contains(line, " ssub=1 ") {
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
		t.Fatalf("no pub/sub connection named %s", name)
	}
}

func TestReadyzFollowsRedis(t *testing.T) {
	t.Parallel()
	r := redistest.New(t)
	if r.Mini == nil {
		// Stopping the shared real Redis would disturb every other test:
		// run against a private miniredis in that mode too.
		r = &redistest.Redis{}
		r.Mini = miniredis.RunT(t)
		r.URL = "redis://" + r.Mini.Addr() + "/0"
	}
	s := start(t, map[string]string{}, "-redis", r.URL)
	status := func() int {
		resp, err := http.Get("http://" + s.addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	r.Mini.Close()
	deadline := time.Now().Add(10 * time.Second)
	for status() != http.StatusServiceUnavailable {
		if time.Now().After(deadline) {
			t.Fatal("/readyz still 200 with Redis gone")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := r.Mini.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(15 * time.Second)
	for status() != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("/readyz not 200 again after Redis came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// hostStatus asks s for path with the given Host (and, for /ws, a WebSocket
// upgrade from a page on that host) and returns the HTTP status.
func hostStatus(t *testing.T, s *server, host, path string) int {
	t.Helper()
	port := s.addr[strings.LastIndexByte(s.addr, ':')+1:]
	if strings.HasSuffix(host, ":PORT") {
		host = strings.TrimSuffix(host, "PORT") + port
	}
	if path == "/ws" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ws, resp, err := websocket.Dial(ctx, "ws://"+s.addr+"/ws?user=23", &websocket.DialOptions{
			Host: host, HTTPHeader: http.Header{"Origin": {"http://" + host}},
		})
		if err == nil {
			ws.CloseNow()
			return http.StatusSwitchingProtocols
		}
		if resp == nil {
			t.Fatalf("dial with Host %s: %v", host, err)
		}
		return resp.StatusCode
	}
	req, err := http.NewRequest("GET", "http://"+s.addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s with Host %s: %v", path, host, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// In dev mode a page on another site that has its name resolve to
// 127.0.0.1 (DNS rebinding) sends its own name as Host and Origin: it is
// refused on every route, while loopback names and -origins hosts are
// served. -dev-public, or a secret, turns the check off.
func TestDevModeServesOnlyLoopbackAndOriginHosts(t *testing.T) {
	t.Parallel()
	env, args := redisEnv(t)
	dev := start(t, env, append(args, "-origins", "chat.example.com,*.trusted.org:8443")...)
	for _, path := range []string{"/", "/healthz", "/readyz", "/metrics", "/ws"} {
		for _, host := range []string{"evil.com:PORT", "evil.com", "localhost.evil.com:PORT", "127.0.0.1.nip.io:PORT", "trusted.org"} {
			if got := hostStatus(t, dev, host, path); got != http.StatusMisdirectedRequest {
				t.Errorf("dev mode, Host %q, %s: HTTP %d, want 421", host, path, got)
			}
		}
		want := http.StatusOK
		if path == "/ws" {
			want = http.StatusSwitchingProtocols
		}
		for _, host := range []string{"localhost:PORT", "LOCALHOST:PORT", "localhost", "127.0.0.1:PORT", "[::1]:PORT", "chat.example.com", "a.trusted.org:PORT"} {
			if got := hostStatus(t, dev, host, path); got != want {
				t.Errorf("dev mode, Host %q, %s: HTTP %d, want %d", host, path, got, want)
			}
		}
	}

	public := start(t, env, append(args, "-dev-public")...)
	if got := hostStatus(t, public, "evil.com:PORT", "/ws"); got != http.StatusSwitchingProtocols {
		t.Errorf("-dev-public, Host evil.com: HTTP %d, want 101", got)
	}
	env = map[string]string{"CHAT_SECRET": strings.Repeat("k", 32)}
	token := start(t, env, args...)
	if got := hostStatus(t, token, "evil.com:PORT", "/healthz"); got != http.StatusOK {
		t.Errorf("token mode, Host evil.com: HTTP %d, want 200", got)
	}
}

// No help text, log line or error holds the secret or the Redis password,
// wherever they come from.
func TestSecretsNeverPrinted(t *testing.T) {
	t.Parallel()
	const secret = "SECRET-never-printed-SECRET-32by"
	const password = "PASSWORD-never-printed"
	env := map[string]string{"CHAT_SECRET": secret, "REDIS_URL": "redis://:" + password + "@127.0.0.1:1/0"}
	getenv := func(k string) string { return env[k] }
	check := func(what, out string) {
		t.Helper()
		if strings.Contains(out, secret) || strings.Contains(out, password) {
			t.Errorf("%s prints a secret:\n%s", what, out)
		}
	}
	for _, args := range [][]string{{"-h"}, {"token", "-h"}} {
		var stdout, stderr bytes.Buffer
		if err := run(t.Context(), args, getenv, &stdout, &stderr); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%v: %v, want flag.ErrHelp", args, err)
		}
		if !strings.Contains(stderr.String(), "-secret") {
			t.Errorf("%v prints no help:\n%s", args, stderr.String())
		}
		check(strings.Join(args, " "), stdout.String()+stderr.String())
	}
	short := map[string]string{"CHAT_SECRET": secret[:20]}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second) // if it did serve
	defer cancel()
	err := run(ctx, []string{"-addr", "127.0.0.1:0"}, func(k string) string { return short[k] }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Fatalf("a 20-byte secret: %v, want a refusal that asks for 32 bytes", err)
	}
	if strings.Contains(err.Error(), secret[:20]) {
		t.Errorf("the refusal of a short secret prints it: %v", err)
	}
	bad := map[string]string{"CHAT_SECRET": secret, "REDIS_URL": "redis://:" + password + "@127.0.0.1:notaport/0"}
	var logs bytes.Buffer
	err = run(t.Context(), []string{"-log-format", "json", "-addr", "127.0.0.1:0"}, func(k string) string { return bad[k] }, io.Discard, &logs)
	if err == nil || !strings.Contains(err.Error(), "-redis") {
		t.Fatalf("a bad REDIS_URL: %v", err)
	}
	check("a bad REDIS_URL's error", err.Error()+logs.String())

	// A server with the secret on its command line: neither its log nor
	// its debug listener shows it.
	r := redistest.New(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	debugAddr := l.Addr().String()
	l.Close()
	s := start(t, nil, "-redis", r.URL, "-prefix", r.Prefix, "-log-level", "debug", "-secret", secret, "-debug-addr", debugAddr)
	resp, err := http.Get("http://" + s.addr + "/ws?token=bad")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for path, deadline := "/debug/pprof/cmdline", time.Now().Add(10*time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + debugAddr + path)
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("debug listener: %v", err)
			}
			continue // it starts with the server
		}
		resp.Body.Close()
		// It would show the process's command line, -secret and all.
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s, want 404", path, resp.Status)
		}
		break
	}
	s.shutdown(t)
	check("the server's log", s.logs.String())
}

// -max-conns-per-user and -connect-rate/-connect-burst (or their
// environment variables) reach the hub, and their refusals are 429.
func TestConnectLimitFlags(t *testing.T) {
	t.Parallel()
	env, args := redisEnv(t)
	env["CHAT_CONNECT_BURST"] = "2"
	s := start(t, env, append(args, "-connect-rate", "0.01", "-max-conns-per-user", "1")...)
	status := func(user string) (int, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ws, resp, err := websocket.Dial(ctx, "ws://"+s.addr+"/ws?user="+user, nil)
		if err == nil {
			t.Cleanup(func() { ws.CloseNow() })
			return http.StatusSwitchingProtocols, ""
		}
		if resp == nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	if got, _ := status("23"); got != http.StatusSwitchingProtocols {
		t.Fatalf("first socket: HTTP %d", got)
	}
	if got, retry := status("23"); got != http.StatusTooManyRequests || retry == "" {
		t.Errorf("second socket over -max-conns-per-user 1: HTTP %d, Retry-After %q; want 429 with Retry-After", got, retry)
	}
	// The second connect took the second token of the burst: at 0.01/s the
	// next one comes in 100 s.
	if got, retry := status("23"); got != http.StatusTooManyRequests || retry != "100" {
		t.Errorf("third connect over CHAT_CONNECT_BURST=2: HTTP %d, Retry-After %q; want 429 with Retry-After 100", got, retry)
	}
	if got, _ := status("43"); got != http.StatusSwitchingProtocols {
		t.Errorf("another user: HTTP %d", got)
	}
}

// startField returns a field of the server's "chatd starting" log line.
func startField(t *testing.T, s *server, field string) string {
	t.Helper()
	for _, line := range strings.Split(s.logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "chatd starting" {
			v, _ := rec[field].(string)
			return v
		}
	}
	t.Fatalf("no start line:\n%s", s.logs)
	return ""
}

// With -metrics-addr (or CHAT_METRICS_ADDR), /metrics is served there and
// not on the public listener, which a balancer exposes.
func TestMetricsOnTheirOwnListener(t *testing.T) {
	t.Parallel()
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, viaEnv := range []bool{false, true} {
		env, args := redisEnv(t)
		if viaEnv {
			env["CHAT_METRICS_ADDR"] = "127.0.0.1:0"
		} else {
			args = append(args, "-metrics-addr", "127.0.0.1:0")
		}
		s := start(t, env, args...)
		maddr := startField(t, s, "metrics")
		if maddr == "" || maddr == s.addr || strings.HasPrefix(maddr, "/") {
			t.Fatalf("start line names metrics at %q", maddr)
		}
		if status, body := get("http://" + maddr + "/metrics"); status != 200 || !strings.Contains(body, "chatd_build_info") {
			t.Errorf("GET /metrics on %s: %d", maddr, status)
		}
		if status, body := get("http://" + s.addr + "/metrics"); status == 200 || strings.Contains(body, "chatd_build_info") {
			t.Errorf("GET /metrics on the public address: %d, want it not served", status)
		}
		if status, _ := get("http://" + s.addr + "/healthz"); status != 200 {
			t.Errorf("GET /healthz: %d", status)
		}
	}
}

// An idle keep-alive connection is closed after -idle-timeout: thousands of
// them are no longer held for as long as the clients like.
func TestIdleKeepAliveIsClosed(t *testing.T) {
	t.Parallel()
	env, args := redisEnv(t)
	s := start(t, env, append(args, "-idle-timeout", "200ms")...)
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: "+s.addr+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("GET /healthz: %s, close %v; want 200 and a kept-alive connection", resp.Status, resp.Close)
	}
	// Generous: the server closes after 200 ms; a connection kept 15 s is
	// not being closed at all.
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("idle keep-alive connection: read %d bytes, %v; want the server to close it (EOF)", n, err)
	}
}

// A request whose headers pass maxHeaderBytes is refused (431), not read.
func TestLargeHeadersRefused(t *testing.T) {
	t.Parallel()
	env, args := redisEnv(t)
	s := start(t, env, args...)
	req, err := http.NewRequest("GET", "http://"+s.addr+"/healthz", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		size int
		want int
	}{{30 << 10, http.StatusOK}, {33 << 10, http.StatusRequestHeaderFieldsTooLarge}, {100 << 10, http.StatusRequestHeaderFieldsTooLarge}} {
		req.Header.Set("X-Big", strings.Repeat("x", tc.size))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%d KiB of headers: %s, want %d", tc.size>>10, resp.Status, tc.want)
		}
	}
}

// Every flag can be set from the environment too (as deploy/compose.yaml
// does), and -h names the variable.
func TestEveryFlagHasAnEnvVar(t *testing.T) {
	t.Parallel()
	var help bytes.Buffer
	run(t.Context(), []string{"-h"}, func(string) string { return "" }, io.Discard, &help)
	_, flags, _ := strings.Cut(help.String(), "Flags:\n")
	entries := strings.Split(flags, "\n  -")
	if len(entries) < 20 {
		t.Fatalf("-h lists %d flags:\n%s", len(entries), help.String())
	}
	for _, e := range entries {
		name, _, _ := strings.Cut(strings.TrimPrefix(e, "  -"), " ")
		name, _, _ = strings.Cut(name, "\n")
		if name == "version" {
			continue
		}
		if !strings.Contains(e, "(env CHAT_") && !strings.Contains(e, "(env REDIS_URL") {
			t.Errorf("-%s names no environment variable: %q", name, e)
		}
	}
	env := map[string]string{
		"CHAT_RATE": "5", "CHAT_BURST": "6", "CHAT_MAX_CONNS_PER_USER": "7", "CHAT_QUEUE": "8",
		"CHAT_PRESENCE_TTL": "9s", "CHAT_CONNECT_RATE": "2.5", "CHAT_CONNECT_BURST": "3",
		"CHAT_IDLE_TIMEOUT": "11s", "CHAT_METRICS_ADDR": "127.0.0.1:9", "CHAT_SECRET": strings.Repeat("s", 32),
		"REDIS_URL": "redis://127.0.0.1:1/0", "CHAT_REDIS_BATCH_DELAY": "1ms",
	}
	c, err := parseConfig(nil, func(k string) string { return env[k] }, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.rate != 5 || c.burst != 6 || c.maxPerUser != 7 || c.queue != 8 || c.presenceTTL != 9*time.Second ||
		c.connRate != 2.5 || c.connBurst != 3 || c.idleTimeout != 11*time.Second || c.metricsAddr != "127.0.0.1:9" ||
		c.secret != env["CHAT_SECRET"] || c.redisURL != env["REDIS_URL"] || c.batchDelay != time.Millisecond {
		t.Errorf("config from the environment: %+v", c)
	}
	// A flag wins over its variable.
	c, err = parseConfig([]string{"-secret", strings.Repeat("f", 32), "-redis", "", "-max-conns-per-user", "3"},
		func(k string) string { return env[k] }, io.Discard, io.Discard)
	if err != nil || c.secret != strings.Repeat("f", 32) || c.redisURL != "" || c.maxPerUser != 3 {
		t.Errorf("flags over the environment: %+v, %v", c, err)
	}
}

// An environment value that does not parse stops the server with a
// message naming it, instead of quietly becoming the default.
func TestBadEnvironmentValuesAreErrors(t *testing.T) {
	t.Parallel()
	env := map[string]string{"CHAT_QUEUE_BYTES": "1MiB", "CHAT_DRAIN_DELAY": "5", "CHAT_DEV_PUBLIC": "true", "CHAT_RATE": "fast"}
	err := run(t.Context(), []string{"-addr", "127.0.0.1:0"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
	if err == nil {
		t.Fatal("started with unparsable environment values")
	}
	for name := range env {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
}

// TestFileLimitWarning: a -max-conns past what any process may open here
// is warned about at start, and the server runs; one within the limit is
// not warned about.
func TestFileLimitWarning(t *testing.T) {
	t.Parallel()
	ceiling, ok := fdlimit.Ceiling()
	if !ok {
		t.Skip("the system does not say how many files a process may open at most")
	}
	env, args := redisEnv(t)
	over := start(t, env, append(args, "-max-conns", strconv.FormatUint(ceiling, 10), "-replica", "over")...)
	within := start(t, env, append(args, "-max-conns", "100", "-replica", "within")...)
	const warning = "the open-file limit is below what -max-conns needs"
	if logs := over.logs.String(); !strings.Contains(logs, warning) ||
		!strings.Contains(logs, fmt.Sprintf(`"need":%d`, ceiling+fileHeadroom)) {
		t.Errorf("-max-conns %d: no warning with the need in the log:\n%s", ceiling, logs)
	}
	if logs := within.logs.String(); strings.Contains(logs, warning) {
		t.Errorf("-max-conns 100 warned:\n%s", logs)
	}
}
