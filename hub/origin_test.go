package hub_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/chatd/chatd/hub"
)

func TestParseOrigins(t *testing.T) {
	t.Parallel()
	good := []string{
		"chat.example.com", "chat.example.com:8443", "*.example.com", "*.example.com:8080",
		"localhost:8080", "127.0.0.1:8080", "127.0.0.1", "[::1]:8080", "[::1]", "Chat.Example.COM",
		"my_host.internal", " spaced.example.com ", "",
	}
	for _, p := range good {
		if _, err := hub.ParseOrigins([]string{p}); err != nil {
			t.Errorf("ParseOrigins(%q) = %v, want it accepted", p, err)
		}
	}
	bad := map[string]string{
		"*trusted.org":             "whole labels",
		"a.*.trusted.org":          "whole labels",
		"trusted.*":                "whole labels",
		"*":                        "",
		"*.org":                    "two labels",
		"*.*.trusted.org":          "whole labels",
		"https://chat.example.com": "not a URL",
		"chat.example.com/path":    "nothing else",
		"chat.example.com:0":       "port",
		"chat.example.com:99999":   "port",
		"chat.example.com:http":    "port",
		"chat.example.com:":        "host:port",
		"::1":                      "brackets",
		"[::1":                     "]",
		"[chat.example.com]:80":    "IPv6",
		"chat..example.com":        "label",
		"chat example.com":         "label",
		"*.127.0.0.1":              "",
		"user@chat.example.com":    "nothing else",
	}
	for p, want := range bad {
		_, err := hub.ParseOrigins([]string{"ok.example.com", p})
		if err == nil || !errors.Is(err, hub.ErrBadOrigin) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), p) {
			t.Errorf("ParseOrigins(%q) = %v, want ErrBadOrigin naming it and mentioning %q", p, err, want)
		}
	}
}

func TestOriginsAllowed(t *testing.T) {
	t.Parallel()
	o, err := hub.ParseOrigins([]string{"*.trusted.org", "chat.example.com", "localhost:8080", "[::1]:9000", "10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		origin, host string
		want         bool
	}{
		{"", "chatd.internal", true}, // not a browser
		{"https://chatd.internal", "chatd.internal", true},
		{"https://CHATD.internal", "chatd.internal", true},
		{"http://chatd.internal:8080", "chatd.internal:8080", true},
		{"http://chatd.internal:8081", "chatd.internal:8080", false},
		{"https://a.trusted.org", "chatd.internal", true},
		{"https://a.b.trusted.org", "chatd.internal", true},
		{"https://A.Trusted.ORG", "chatd.internal", true},
		{"https://trusted.org", "chatd.internal", false},
		{"https://eviltrusted.org", "chatd.internal", false},
		{"https://a.eviltrusted.org", "chatd.internal", false},
		{"https://trusted.org.evil.com", "chatd.internal", false},
		{"https://a.trusted.org:8443", "chatd.internal", false}, // the pattern has no port
		{"https://chat.example.com", "chatd.internal", true},
		{"https://chat.example.com:8443", "chatd.internal", false},
		{"https://x.chat.example.com", "chatd.internal", false},
		{"http://localhost:8080", "chatd.internal", true},
		{"http://localhost:8081", "chatd.internal", false},
		{"http://localhost", "chatd.internal", false},
		{"http://[::1]:9000", "chatd.internal", true},
		{"http://[::1]:9001", "chatd.internal", false},
		{"http://10.0.0.1", "chatd.internal", true},
		{"http://10.0.0.1:80", "chatd.internal", false},
		{"null", "chatd.internal", false},
		{"file://", "chatd.internal", false},
		{"chat.example.com", "chatd.internal", false}, // not a URL
		{"https://user@chat.example.com", "chatd.internal", false},
		{"https://evil.com", "chatd.internal", false},
	}
	for _, tc := range cases {
		if got := o.Allowed(tc.origin, tc.host); got != tc.want {
			t.Errorf("Allowed(%q, host %q) = %v, want %v", tc.origin, tc.host, got, tc.want)
		}
	}
	var none hub.Origins
	if !none.Allowed("http://localhost:8080", "localhost:8080") || none.Allowed("http://localhost:8080", "localhost:8081") {
		t.Error("the zero Origins must allow exactly the same host")
	}
}

func TestOriginsMatchHost(t *testing.T) {
	t.Parallel()
	o, err := hub.ParseOrigins([]string{"*.trusted.org", "chat.example.com:8443", "[::1]:9000"})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		"chat.example.com":      true,
		"chat.example.com:8080": true, // MatchHost compares host names only
		"CHAT.example.com.":     true,
		"a.trusted.org:80":      true,
		"trusted.org":           false,
		"eviltrusted.org":       false,
		"[::1]:1234":            true,
		"evil.com":              false,
		"":                      false,
	} {
		if got := o.MatchHost(host); got != want {
			t.Errorf("MatchHost(%q) = %v, want %v", host, got, want)
		}
	}
}

// A socket from a page whose origin only ends like a trusted domain is
// refused with HTTP 403 before the upgrade; a real subdomain is let in.
func TestOriginWildcardMatchesWholeLabels(t *testing.T) {
	t.Parallel()
	r := newCluster(t).replica("a", withHub(func(c *hub.Config) { c.Origins = []string{"*trusted.org", "*.trusted.org"} }))
	r2 := newCluster(t).replica("b", withHub(func(c *hub.Config) { c.Origins = []string{"*.trusted.org"} }))
	for _, tc := range []struct {
		rep    *replica
		origin string
		status int
	}{
		{r2, "https://a.trusted.org", http.StatusSwitchingProtocols},
		{r2, "https://eviltrusted.org", http.StatusForbidden},
		{r2, "https://trusted.org.evil.com", http.StatusForbidden},
		// A list with an invalid pattern allows only the same host.
		{r, "https://a.trusted.org", http.StatusForbidden},
		{r, "https://eviltrusted.org", http.StatusForbidden},
	} {
		ws, resp, err := websocket.Dial(t.Context(), tc.rep.wsURL("user=23"), &websocket.DialOptions{
			HTTPHeader: http.Header{"Origin": {tc.origin}},
		})
		if tc.status == http.StatusSwitchingProtocols {
			if err != nil {
				t.Errorf("%s on %s: %v, want it let in", tc.origin, tc.rep.name, err)
				continue
			}
			ws.CloseNow()
			continue
		}
		if err == nil {
			ws.CloseNow()
		}
		if resp == nil || resp.StatusCode != tc.status {
			t.Errorf("%s on %s: %v %v, want HTTP %d", tc.origin, tc.rep.name, err, resp, tc.status)
		}
	}
}
