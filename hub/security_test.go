package hub_test

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/chatd/chatd/auth"
	"github.com/chatd/chatd/hub"
)

// testSecret is as long as auth.CheckSecret asks.
const testSecret = "hub-tests-hub-tests-hub-tests-32"

// refusal dials r with query and header and returns the HTTP status and
// body of the refusal; the dial must fail.
func refusal(t *testing.T, r *replica, query string, header http.Header) (int, string) {
	t.Helper()
	resp, body := refusalResp(t, r, query, header)
	return resp.StatusCode, body
}

// refusalResp is refusal with the whole response.
func refusalResp(t *testing.T, r *replica, query string, header http.Header) (*http.Response, string) {
	t.Helper()
	// A plain GET with the upgrade headers shows the body, which a failed
	// websocket.Dial does not.
	req, err := http.NewRequestWithContext(t.Context(), "GET", r.srv.URL+"/ws?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		t.Fatalf("%s: upgraded, want a refusal", query)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, strings.TrimSpace(string(body))
}

// A token in the query and another in the header that name different users
// are refused with 400; 401 bodies say missing, expired or invalid, without
// the JWT library's words.
func TestAuthRefusals(t *testing.T) {
	t.Parallel()
	r := newCluster(t).replica("a", withSecret(testSecret))
	mint := func(user string) string {
		tok, err := auth.Mint(testSecret, user, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	expired, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "23", "exp": time.Now().Add(-time.Hour).Unix(),
	}).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	forged, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "23", "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte("another-secret-another-secret-32"))
	if err != nil {
		t.Fatal(err)
	}
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	cases := []struct {
		name   string
		query  string
		header http.Header
		status int
		body   string
	}{
		{"two users", "token=" + mint("23"), bearer(mint("43")), 400, "?token= and the Authorization header name different users: send one token"},
		{"missing", "", nil, 401, "missing token: pass ?token= or an Authorization: Bearer header"},
		{"expired", "token=" + expired, nil, 401, "token expired: get a new one"},
		{"forged", "token=" + forged, nil, 401, "invalid token"},
		{"garbage", "token=abc", nil, 401, "invalid token"},
		{"expired header", "token=" + mint("23"), bearer(expired), 401, "token expired: get a new one"},
	}
	for _, tc := range cases {
		status, body := refusal(t, r, tc.query, tc.header)
		if status != tc.status || body != tc.body {
			t.Errorf("%s: HTTP %d %q, want %d %q", tc.name, status, body, tc.status, tc.body)
		}
	}
	// The same user in both places is fine.
	tok := mint("23")
	c := r.dialURL(t, r.wsURL("token="+tok), &websocket.DialOptions{HTTPHeader: bearer(mint("23"))})
	if f := c.next(); f["type"] != "ready" || f["user"] != "23" {
		t.Fatalf("got %v", f)
	}
}

// A socket is closed with 1008 "token expired" once its token's exp (plus
// the leeway for clock skew) has passed, and not before.
func TestSocketClosesWhenTokenExpires(t *testing.T) {
	t.Parallel()
	r := newCluster(t).replica("a", withSecret(testSecret))
	tok, err := auth.Mint(testSecret, "23", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	long, err := auth.Mint(testSecret, "43", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := r.dialURL(t, r.wsURL("token="+tok), nil)
	c.user = "23"
	c.expect("ready")
	other := r.dialURL(t, r.wsURL("token="+long), nil)
	other.user = "43"
	other.expect("ready")
	// Still open right after ready: the leeway alone is 5 s.
	if f := c.call(map[string]any{"type": "ping", "id": "p"}); f["type"] != "pong" {
		t.Fatalf("got %v", f)
	}
	start := time.Now()
	deadline := time.After(30 * time.Second)
	for open := true; open; {
		select {
		case f, ok := <-c.frames:
			if ok {
				t.Fatalf("unexpected frame %v", f)
			}
			open = false
		case <-deadline:
			t.Fatal("the socket of an expired token is still open after 30 s")
		}
	}
	err = <-c.ended
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != "token expired" {
		t.Fatalf("socket ended with %v, want close 1008 \"token expired\"", err)
	}
	t.Logf("closed %.1fs after the first ping", time.Since(start).Seconds())
	// The other user's socket, with a valid token, stays.
	if f := other.call(map[string]any{"type": "ping", "id": "q"}); f["type"] != "pong" {
		t.Fatalf("got %v", f)
	}
}

// A refusal the client caused (its socket cap, its connect rate) is 429
// with Retry-After, so that a balancer does not count it against the
// replica; a full replica is 503, where trying another replica is right.
func TestClientCausedRefusalsAre429(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	capped := cl.replica("capped", withHub(func(c *hub.Config) { c.MaxConnsPerUser = 2 }))
	capped.dial(t, "23")
	capped.dial(t, "23")
	resp, body := refusalResp(t, capped, "user=23", nil)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "5" ||
		body != "too many connections for this user" {
		t.Errorf("over the cap: HTTP %d Retry-After %q %q, want 429, 5", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	capped.dial(t, "43") // others are not affected

	limited := cl.replica("limited", withHub(func(c *hub.Config) { c.ConnectRate = 0.1; c.ConnectBurst = 2 }))
	for range 2 {
		c := limited.dial(t, "23")
		c.ws.Close(websocket.StatusNormalClosure, "")
	}
	resp, body = refusalResp(t, limited, "user=23", nil)
	if resp.StatusCode != http.StatusTooManyRequests || body != "too many connects for this user: retry later" {
		t.Errorf("over the connect rate: HTTP %d %q, want 429", resp.StatusCode, body)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 10 {
		t.Errorf("over the connect rate: Retry-After %q, want 1 to 10 seconds", resp.Header.Get("Retry-After"))
	}
	limited.dial(t, "43")

	full := cl.replica("full", withHub(func(c *hub.Config) { c.MaxConns = 2 }))
	full.dial(t, "23")
	full.dial(t, "43")
	if status, body := refusal(t, full, "user=65", nil); status != http.StatusServiceUnavailable {
		t.Errorf("a full replica: HTTP %d %q, want 503", status, body)
	}
}
