package failover

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestOneUserOverItsCap has one user open sockets through the balancer far
// beyond its per-replica cap while other users connect: the user's extra
// connects are refused with 429 and Retry-After, and no other user ever
// sees a 5xx. A refusal that counted against a replica (a 503 from the
// replica, or a status nginx lists in proxy_next_upstream) would take
// every replica out of the balancer in turn, and everyone would get 502.
func TestOneUserOverItsCap(t *testing.T) {
	ctx, _, _ := e2eStart(t, "the multi-replica tests", 3*time.Minute)
	names := []string{"chatd-a", "chatd-b", "chatd-c"}
	root, tmp, logDir := workspace(t, append([]string{"redis", "nginx"}, names...)...)

	bin := buildChatd(ctx, t, root, tmp)
	redisAddr, _ := startRedis(ctx, t, filepath.Join(tmp, "redis"), logDir)
	secret := randomSecret(t)
	const perUser = 2
	_, ports := startReplicas(ctx, t, bin, tmp, logDir, "redis://"+redisAddr+"/0", secret, names,
		"-max-conns-per-user", strconv.Itoa(perUser), "-drain-delay", "0s", "-drain-window", "1s")
	_, lbPort := startNginx(ctx, t, root, filepath.Join(tmp, "nginx"), logDir, ports)
	lb := fmt.Sprintf("ws://127.0.0.1:%d", lbPort)
	// The replicas serve /metrics on -addr here: the balancer refuses it.
	if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", lbPort)); err != nil {
		t.Errorf("GET /metrics through the balancer: %v", err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET /metrics through the balancer: %s, want 403", resp.Status)
		}
	}

	// dial opens a socket through the balancer and returns the HTTP status
	// (101 when upgraded, 0 when no response came), Retry-After, and the
	// socket, which the caller closes.
	dial := func(user string) (int, string, *websocket.Conn) {
		tok, err := mintToken(secret, user, time.Hour)
		if err != nil {
			t.Error(err)
			return 0, "", nil
		}
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		defer dcancel()
		c, resp, err := websocket.Dial(dctx, lb+"/ws?token="+url.QueryEscape(tok), nil)
		if err != nil {
			if resp == nil {
				t.Logf("%s: dial: %v", user, err)
				return 0, "", nil
			}
			return resp.StatusCode, resp.Header.Get("Retry-After"), nil
		}
		if _, _, err := c.Read(dctx); err != nil {
			c.CloseNow()
			t.Logf("%s: no ready frame: %v", user, err)
			return 0, "", nil
		}
		return 101, "", c
	}

	const abuseFor = 6 * time.Second
	var mu sync.Mutex
	abuser := map[int]int{} // status -> count
	others := map[int]int{}
	noRetryAfter := 0
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var held []*websocket.Conn
		defer func() {
			for _, c := range held {
				c.CloseNow()
			}
		}()
		for end := time.Now().Add(abuseFor); time.Now().Before(end); {
			status, retry, c := dial("e2e.greedy")
			mu.Lock()
			abuser[status]++
			if status == 429 && retry == "" {
				noRetryAfter++
			}
			mu.Unlock()
			if c != nil {
				held = append(held, c)
			}
			sleepCtx(ctx, 20*time.Millisecond)
		}
	}()
	sleepCtx(ctx, time.Second) // the abuser is over its cap on every replica by now
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := strconv.Itoa(7000 + i)
			for end := time.Now().Add(abuseFor - 2*time.Second); time.Now().Before(end); {
				status, _, c := dial(user)
				if c != nil {
					c.Close(websocket.StatusNormalClosure, "")
				}
				mu.Lock()
				others[status]++
				mu.Unlock()
				sleepCtx(ctx, 150*time.Millisecond)
			}
		}()
	}
	wg.Wait()

	t.Logf("the user over its cap got %s; the others got %s", statusCounts(abuser), statusCounts(others))
	for status, n := range others {
		if status != 101 {
			t.Errorf("other users: %d connects answered %d, want every one upgraded (101)", n, status)
		}
	}
	if others[101] == 0 {
		t.Error("no other user connected")
	}
	for status, n := range abuser {
		if status != 101 && status != 429 {
			t.Errorf("the user over its cap: %d connects answered %d, want 101 or 429", n, status)
		}
	}
	if abuser[101] > perUser*len(names) {
		t.Errorf("the user over its cap holds %d sockets, more than %d per replica", abuser[101], perUser)
	}
	if abuser[429] < 50 {
		t.Errorf("the user over its cap was refused %d times: not far over its cap", abuser[429])
	}
	if noRetryAfter > 0 {
		t.Errorf("%d refusals with 429 had no Retry-After", noRetryAfter)
	}
}

// statusCounts renders status -> count in order.
func statusCounts(m map[int]int) string {
	var keys []int
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	s := ""
	for _, k := range keys {
		s += fmt.Sprintf(" %d×%d", m[k], k)
	}
	return "[" + s + " ]"
}
