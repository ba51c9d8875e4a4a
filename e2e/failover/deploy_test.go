package failover

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDeployFiles checks, without Docker, that the Dockerfile, the compose
// file and the nginx config say what TestFailover runs: the same build line,
// the health check through `chatd health`, and an nginx config that the test
// can turn into its own. It runs in every `go test ./...`.
func TestDeployFiles(t *testing.T) {
	root := moduleRoot(t)
	read := func(name string) string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}

	dockerfile := read("Dockerfile")
	var build []string
	for _, a := range buildArgs("$VERSION", "/out/chatd") {
		if strings.Contains(a, " ") {
			a = `"` + a + `"`
		}
		build = append(build, a)
	}
	for _, want := range []string{
		"RUN go mod download\n",
		"RUN CGO_ENABLED=0 " + strings.Join(build, " ") + "\n",
		"ENV CHAT_ADDR=:8080\n",
		"EXPOSE 8080\n",
		`CMD ["/chatd", "health"]` + "\n",
		`ENTRYPOINT ["/chatd"]` + "\n",
	} {
		if !strings.Contains(dockerfile, want) {
			t.Errorf("Dockerfile lacks %q", strings.TrimSpace(want))
		}
	}

	compose := read("deploy/compose.yaml")
	for _, want := range []string{
		"CHAT_SECRET: ${CHAT_SECRET:?",
		"REDIS_URL: redis://redis:6379/0",
		"CHAT_REPLICA: chatd-a\n", "CHAT_REPLICA: chatd-b\n", "CHAT_REPLICA: chatd-c\n",
		"./nginx.conf:/etc/nginx/nginx.conf:ro",
		`CHAT_METRICS_ADDR: ":9090"`,
		`"8080:8080"`,
	} {
		if !strings.Contains(compose, want) {
			t.Errorf("deploy/compose.yaml lacks %q", strings.TrimSpace(want))
		}
	}

	nginx := read("deploy/nginx.conf")
	for _, want := range []string{
		"proxy_http_version 1.1;",
		"map $http_upgrade $connection_upgrade",
		"proxy_set_header Upgrade $http_upgrade;",
		"proxy_set_header Connection $connection_upgrade;",
		"proxy_read_timeout ",
		"proxy_send_timeout ",
		"proxy_next_upstream error timeout",
		"max_fails=",
		"fail_timeout=",
		"location = /metrics {\n            deny all;\n        }",
	} {
		if !strings.Contains(nginx, want) {
			t.Errorf("deploy/nginx.conf lacks %q", want)
		}
	}
	// nginx counts as a failure every status proxy_next_upstream lists: a
	// status the client caused (4xx, 429 above all) would let one client
	// take the replicas out of the balancer.
	for _, m := range regexp.MustCompile(`(?m)^\s*proxy_next_upstream\s+([^;]*);`).FindAllStringSubmatch(nginx, -1) {
		for _, cond := range strings.Fields(m[1]) {
			if strings.HasPrefix(cond, "http_4") {
				t.Errorf("deploy/nginx.conf: proxy_next_upstream lists %s, a status the client causes", cond)
			}
		}
	}
	dir := t.TempDir()
	conf, err := nginxConfig([]byte(nginx), dir, 18080, map[string]int{"chatd-a": 18081, "chatd-b": 18082, "chatd-c": 18083})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"listen 127.0.0.1:18080;", "server 127.0.0.1:18083 ", "pid " + dir, "access_log off;"} {
		if !strings.Contains(conf, want) {
			t.Errorf("generated nginx config lacks %q:\n%s", want, conf)
		}
	}
	if reUpstream.MatchString(conf) {
		t.Errorf("generated nginx config still names the compose hosts:\n%s", conf)
	}
}
