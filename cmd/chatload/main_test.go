package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatd/chatd/auth"
	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/hub"
	"github.com/chatd/chatd/internal/fdlimit"
	"github.com/chatd/chatd/internal/redistest"
	"github.com/chatd/chatd/presence"
	"github.com/chatd/chatd/store"
)

// server runs an in-process chatd replica for the load tool to drive.
func server(t *testing.T) string {
	t.Helper()
	r := redistest.New(t)
	st := store.New(r.Client, store.Config{Prefix: r.Prefix})
	tr, err := presence.New(presence.Config{Backend: st, Replica: "load"})
	if err != nil {
		t.Fatal(err)
	}
	h := hub.New(hub.Config{Store: st, Presence: tr, Auth: auth.New("", chat.ValidateUser), Replica: "load"})
	sub := st.Subscribe("load", h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = sub.Run(ctx) }()
	<-sub.Ready()
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = h.Shutdown(sctx, 0)
		srv.Close()
		cancel()
		<-done
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
}

func TestLoadReportsWhatItMeasured(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		flag, framing string
	}{
		{"-batch=true", "batch framing on 10 of 10 sockets"},
		{"-batch=false", "batch framing on 0 of 10 sockets"},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			t.Parallel()
			testLoadReport(t, tc.flag, tc.framing)
		})
	}
}

func testLoadReport(t *testing.T, flag, framing string) {
	url := server(t)
	var out bytes.Buffer
	// The server runs in this process: -pid reports the test's CPU.
	// The server and its miniredis run in this process: -pid and -redis-pid
	// report the test's CPU.
	pid := strconv.Itoa(os.Getpid())
	err := run(t.Context(), []string{"-url", url, "-users", "10", "-rate", "100",
		"-duration", "1s", "-warmup", "200ms", "-pid", pid, "-redis-pid", pid, flag}, &out, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	m := regexp.MustCompile(`sent (\d+) .*acked (\d+) .*delivered (\d+) .*errors (\d+)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no counts in:\n%s", out.String())
	}
	n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
	sent, acked, delivered, errs := n(1), n(2), n(3), n(4)
	// 10 users at 100 msg/s for 1 s: about 100 sends, every one acked and
	// delivered (a few may straddle the window's edges).
	if sent < 50 || errs != 0 || acked < sent*8/10 || delivered < sent*8/10 {
		t.Fatalf("sent %d acked %d delivered %d errors %d:\n%s", sent, acked, delivered, errs, out.String())
	}
	for _, line := range []string{"ack      p50", "delivery p50", framing, "lost 0 (", "duplicates 0, unanswered 0"} {
		if !strings.Contains(out.String(), line) {
			t.Fatalf("report lacks %q:\n%s", line, out.String())
		}
	}
	for _, re := range []string{
		`server CPU \(pid \d+\) \d+\.\d\d cores, \d+ µs per delivered message`,
		`Redis CPU \(pid \d+\) \d+\.\d\d cores, \d+ µs per delivered message`,
		`chatload CPU \d+\.\d\d cores, \d+ µs per delivered message`,
		`machine CPU \d+\.\d\d cores busy, of which \d+\.\d\d other work`,
	} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Fatalf("report lacks %s:\n%s", re, out.String())
		}
	}
}

// TestReceivedCountsLostAndDuplicates: a peer's messages carry its count;
// one delivered twice is a duplicate, whatever the order, and an
// acknowledged message is owed until it is delivered, before or after its
// acknowledgement.
func TestReceivedCountsLostAndDuplicates(t *testing.T) {
	t.Parallel()
	st, own, from := &stats{}, &flow{}, &flow{}
	now := time.Now().UnixNano()
	text := func(n int) string { return fmt.Sprintf(`"text":"%d %d xxxx"`, now, n) }
	for _, n := range []int{2, 1, 2, 4, 1} { // from the peer
		received(fmt.Appendf(nil, `{"type":"message","message":{%s}}`, text(n)), now, st, own, from)
	}
	if st.recv.Load() != 5 || st.dups.Load() != 2 || st.owed.Load() != 0 {
		t.Fatalf("deliveries: recv %d dups %d owed %d; want 5, 2 (2 and 1 again), 0", st.recv.Load(), st.dups.Load(), st.owed.Load())
	}
	// The peer's acks, read on its own socket: 1 and 4 were delivered
	// already, 3 and 5 are owed until they come.
	for _, n := range []int{1, 3, 4, 5} {
		received(fmt.Appendf(nil, `{"type":"sent","id":"%d","message":{%s}}`, now, text(n)), now, st, from, own)
	}
	received([]byte(`{"type":"error","code":"rate_limited"}`), now, st, from, own)
	if st.acked.Load() != 4 || st.answered.Load() != 5 || st.owed.Load() != 2 {
		t.Fatalf("acks: acked %d answered %d owed %d; want 4, 5, 2", st.acked.Load(), st.answered.Load(), st.owed.Load())
	}
	received(fmt.Appendf(nil, `{"type":"message","message":{%s}}`, text(5)), now, st, own, from)
	if st.owed.Load() != 1 || st.dups.Load() != 2 {
		t.Fatalf("after 5 came: owed %d dups %d; want 1 (3 is lost), 2", st.owed.Load(), st.dups.Load())
	}
}

func TestLoadRejectsBadFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-users", "3"}, {"-users", "0"}, {"-rate", "-1"}, {"-pid", "-1"},
		{"-redis-pid", "-1"}, {"-grace", "-1s"},
		{"-from", "127.0.0.1,nowhere"}} {
		if err := run(t.Context(), args, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// TestLoadStopsShortOfOpenFiles: more sockets than any process may open
// files here is said at once, before any socket is opened, not as a dial
// error midway.
func TestLoadStopsShortOfOpenFiles(t *testing.T) {
	t.Parallel()
	ceiling, ok := fdlimit.Ceiling()
	if !ok {
		t.Skip("the system does not say how many files a process may open at most")
	}
	users := ceiling + ceiling%2 // pairs
	var dials atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { dials.Add(1) }))
	defer srv.Close()
	err := run(t.Context(), []string{"-url", "ws" + strings.TrimPrefix(srv.URL, "http"), "-users", strconv.FormatUint(users, 10)},
		&bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "open files") {
		t.Fatalf("-users %d: %v; want an error about open files", users, err)
	}
	if n := dials.Load(); n != 0 {
		t.Fatalf("%d sockets opened before the error", n)
	}
}

// TestLoadConnectsFromEachAddress: with -from, sockets connect from the
// addresses given, in turn.
func TestLoadConnectsFromEachAddress(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("127.0.0.2 is a loopback address by default on Linux only")
	}
	var mu sync.Mutex
	from := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		mu.Lock()
		from[host]++
		mu.Unlock()
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		_ = ws.Write(r.Context(), websocket.MessageText, []byte(`{"type":"ready"}`))
		_, _, _ = ws.Read(r.Context()) // until chatload closes
	}))
	defer srv.Close()
	var out bytes.Buffer
	err := run(t.Context(), []string{"-url", "ws" + strings.TrimPrefix(srv.URL, "http"), "-users", "4", "-rate", "0",
		"-duration", "10ms", "-from", "127.0.0.1,127.0.0.2"}, &out, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	mu.Lock()
	defer mu.Unlock()
	if want := map[string]int{"127.0.0.1": 2, "127.0.0.2": 2}; !maps.Equal(from, want) {
		t.Fatalf("sockets came from %v, want %v", from, want)
	}
}

func TestIdleReportsMemoryPerSocket(t *testing.T) {
	t.Parallel()
	url := server(t)
	var calls atomic.Int32
	// The second answer is 16, 8 and 32 KiB above the first: with 4
	// sockets, 4, 2 and 8 KiB per socket.
	metrics := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		k := float64(calls.Add(1)-1) * 1024
		fmt.Fprintf(w, "# HELP x\ngo_memstats_heap_inuse_bytes %g\ngo_memstats_stack_inuse_bytes %g\nprocess_resident_memory_bytes %g\nother 1\n",
			1e6+16*k, 2e6+8*k, 3e6+32*k)
	}))
	defer metrics.Close()
	var out bytes.Buffer
	err := run(t.Context(), []string{"-url", url, "-users", "4", "-rate", "0", "-duration", "100ms",
		"-metrics", metrics.URL}, &out, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"go_memstats_heap_inuse_bytes: 4.0 KiB per idle socket",
		"go_memstats_stack_inuse_bytes: 2.0 KiB per idle socket",
		"process_resident_memory_bytes: 8.0 KiB per idle socket",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestHelpDescribesAndHidesTheSecret(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef-do-not-print"
	t.Setenv("CHAT_SECRET", secret)
	var out, errb bytes.Buffer
	err := run(t.Context(), []string{"-h"}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "help") {
		t.Fatalf("run -h = %v, want flag.ErrHelp", err)
	}
	help := errb.String()
	for _, want := range []string{"chatload puts a chat load", "Examples:", "-rate", "(default 3000)"} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q:\n%s", want, help)
		}
	}
	if strings.Contains(help+out.String(), secret) {
		t.Errorf("help prints CHAT_SECRET:\n%s", help)
	}
}
