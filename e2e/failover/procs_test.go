package failover

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// proc is one child process: its own process group, output in a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string

	done chan struct{} // closed when the process has been waited for
	mu   sync.Mutex
	err  error // Wait's result, valid after done
}

// startProc starts argv in dir with env, its stdout and stderr going to
// logDir/name.log (appended, so a restarted replica keeps one log). The
// process is stopped in t.Cleanup, on failure too.
func startProc(t *testing.T, name, dir, logDir string, env []string, argv ...string) *proc {
	t.Helper()
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("%s: log: %v", name, err)
	}
	fmt.Fprintf(f, "=== %s: %s\n", time.Now().Format(time.TimeOnly), strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process (not to its group).
func (p *proc) signal(sig syscall.Signal) error {
	return p.cmd.Process.Signal(sig)
}

// wait waits up to d for the process to end and returns Wait's error.
func (p *proc) wait(d time.Duration) error {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.err
	case <-time.After(d):
		return fmt.Errorf("%s still running after %v", p.name, d)
	}
}

// stop ends the process and everything in its group: SIGTERM, then SIGKILL
// after a few seconds. Safe to call more than once.
func (p *proc) stop() {
	if !p.exited() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(8 * time.Second):
		}
	}
	// The group may hold children (nginx workers) even after the leader ended.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
}

// tail returns the last n lines of the process's log.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// cleanEnv is the test's environment without chatd's own variables, so that
// only the flags the test passes configure a replica.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "CHAT_") || strings.HasPrefix(kv, "REDIS_URL=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// lookTool finds a program on PATH or in the sbin folders a non-root PATH
// may lack. A missing tool fails the test: CHATD_E2E=1 asked for this run.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	t.Fatalf("%s not found: this test needs it (Debian: apt-get install -y %s)", name, map[string]string{
		"redis-server": "redis-server", "redis-cli": "redis-tools", "nginx": "nginx-light",
	}[name])
	return ""
}

// moduleRoot is the folder of chatd's go.mod, from `go env GOMOD`.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatalf("go env GOMOD: not inside a module")
	}
	return filepath.Dir(gomod)
}

// buildArgs is the Dockerfile's build line (after CGO_ENABLED=0) for a
// version and an output path; TestDeployFiles checks that they agree.
func buildArgs(version, out string) []string {
	return []string{"go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=" + version, "-o", out, "./cmd/chatd"}
}

// buildChatd builds cmd/chatd into dir with the Dockerfile's commands.
func buildChatd(ctx context.Context, t *testing.T, root, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "chatd")
	steps := [][]string{
		{"go", "mod", "download"},
		buildArgs("e2e", bin), // with CGO_ENABLED=0, as in the Dockerfile
	}
	for _, argv := range steps {
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
	}
	return bin
}

// startRedis starts a private redis-server without persistence on a free
// port and returns its address once `redis-cli ping` (the compose file's
// health check) answers.
func startRedis(ctx context.Context, t *testing.T, dir, logDir string) (string, *redis.Client) {
	t.Helper()
	bin := lookTool(t, "redis-server")
	cli := lookTool(t, "redis-cli")
	port := freePort(t)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	startProc(t, "redis", dir, logDir, cleanEnv(), bin,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--daemonize", "no")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		out, err := exec.CommandContext(pctx, cli, "-h", "127.0.0.1", "-p", strconv.Itoa(port), "ping").CombinedOutput()
		cancel()
		if err == nil && strings.TrimSpace(string(out)) == "PONG" {
			rdb := redis.NewClient(&redis.Options{Addr: addr})
			t.Cleanup(func() { rdb.Close() })
			return addr, rdb
		}
		if err == nil {
			err = fmt.Errorf("redis-cli ping: %q", out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis on %s: %v\n%s", addr, err, tail(filepath.Join(logDir, "redis.log"), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// replica is one chatd process and how to start it again: argv, plus env
// for configuration through the environment as the compose file does it.
type replica struct {
	name string
	port int
	argv []string
	env  []string
	proc *proc
}

func (r *replica) url(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", r.port, path)
}

// start (re)starts the replica's process.
// e2eStart skips the test unless CHATD_E2E is set (what says what it
// needs), and returns its context, which ends after timeout, a logger that
// stamps each line with the time since the start, and the start.
func e2eStart(t *testing.T, what string, timeout time.Duration) (context.Context, func(string, ...any), time.Time) {
	t.Helper()
	if os.Getenv("CHATD_E2E") == "" {
		t.Skip("set CHATD_E2E=1 to run " + what + " (needs redis-server and nginx)")
	}
	began := time.Now()
	logf := func(format string, args ...any) {
		t.Helper()
		t.Logf("[%5.1fs] "+format, append([]any{time.Since(began).Seconds()}, args...)...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx, logf, began
}

// startReplicas starts a chatd replica of bin per name on redisURL, each on
// a port of its own, with secret and the extra flags, and waits until all
// are ready. It returns them and their ports, by name.
func startReplicas(ctx context.Context, t *testing.T, bin, dir, logDir, redisURL, secret string, names []string,
	extra ...string) (map[string]*replica, map[string]int) {
	t.Helper()
	replicas, ports := map[string]*replica{}, map[string]int{}
	for _, name := range names {
		port := freePort(t)
		argv := append([]string{bin,
			"-addr", fmt.Sprintf("127.0.0.1:%d", port),
			"-redis", redisURL,
			"-secret", secret,
			"-replica", name,
		}, extra...)
		r := &replica{name: name, port: port, argv: argv}
		r.start(t, dir, logDir)
		replicas[name], ports[name] = r, port
	}
	for _, name := range names {
		replicas[name].waitReady(ctx, t, bin, 15*time.Second)
	}
	return replicas, ports
}

func (r *replica) start(t *testing.T, dir, logDir string) {
	t.Helper()
	r.proc = startProc(t, r.name, dir, logDir, cleanEnv(r.env...), r.argv...)
}

// health runs `chatd health -url <replica>/readyz`, the image's HEALTHCHECK,
// and returns its exit code.
func health(ctx context.Context, bin, url string) (int, string) {
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(hctx, bin, "health", "-url", url).CombinedOutput()
	if err == nil {
		return 0, string(out)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	}
	return -1, err.Error()
}

// waitReady polls the replica with `chatd health` until it exits 0.
func (r *replica) waitReady(ctx context.Context, t *testing.T, bin string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		code, out := health(ctx, bin, r.url("/readyz"))
		if code == 0 {
			return
		}
		if r.proc.exited() {
			t.Fatalf("%s exited while starting: %v\n%s", r.name, r.proc.wait(0), tail(r.proc.log, 30))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %v (chatd health: exit %d %s)\n%s", r.name, d, code, out, tail(r.proc.log, 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mintCLI runs `chatd token`, as deploy/README.md shows, and returns the token.
// With secret empty the binary reads CHAT_SECRET from env.
func mintCLI(ctx context.Context, t *testing.T, bin, user, secret string, env []string) string {
	t.Helper()
	args := []string{"token", "-user", user, "-ttl", "1h"}
	if secret != "" {
		args = append(args, "-secret", secret)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chatd %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	tok := strings.TrimSpace(string(out))
	if strings.Count(tok, ".") != 2 || strings.ContainsAny(tok, " \n") {
		t.Fatalf("chatd token printed %q, want one JWT", out)
	}
	return tok
}

// Lines of deploy/nginx.conf that name the deployment; nginxConfig replaces
// them and fails if one is missing, so the file and the test cannot drift.
var (
	reUser     = regexp.MustCompile(`(?m)^user\s+[^;]+;\n`)
	rePid      = regexp.MustCompile(`(?m)^pid\s+[^;]+;`)
	reAccess   = regexp.MustCompile(`(?m)^(\s*)access_log\s+[^;]+;`)
	reListen   = regexp.MustCompile(`(?m)^(\s*)listen\s+8080;`)
	reUpstream = regexp.MustCompile(`(?m)^(\s*)server\s+(chatd-[a-z]+):8080(\s[^;]*)?;`)
	reHTTP     = regexp.MustCompile(`(?m)^http\s*\{\n`)
)

// nginxConfig turns deploy/nginx.conf into a config for a foreground nginx
// whose files all live in dir, listening on 127.0.0.1:listen, with the named
// upstream servers at the given loopback ports.
func nginxConfig(src []byte, dir string, listen int, ports map[string]int) (string, error) {
	conf := string(src)
	replace := func(re *regexp.Regexp, want int, what string, f func(m []string) string) error {
		n := len(re.FindAllString(conf, -1))
		if n != want {
			return fmt.Errorf("deploy/nginx.conf: want %d %s line(s), found %d", want, what, n)
		}
		conf = re.ReplaceAllStringFunc(conf, func(s string) string { return f(re.FindStringSubmatch(s)) })
		return nil
	}
	userLine := ""
	if os.Geteuid() == 0 {
		// Workers would otherwise run as nobody and could not use dir.
		if u, err := user.Current(); err == nil {
			userLine = "user " + u.Username + ";\n"
		}
	}
	seen := map[string]bool{}
	var err error
	for _, step := range []error{
		replace(reUser, 1, "user", func([]string) string { return userLine }),
		replace(rePid, 1, "pid", func([]string) string { return "pid " + filepath.Join(dir, "nginx.pid") + ";" }),
		replace(reAccess, 1, "access_log", func(m []string) string { return m[1] + "access_log off;" }),
		replace(reListen, 1, "listen 8080", func(m []string) string { return fmt.Sprintf("%slisten 127.0.0.1:%d;", m[1], listen) }),
		replace(reUpstream, len(ports), "upstream server", func(m []string) string {
			port, ok := ports[m[2]]
			if !ok {
				err = fmt.Errorf("deploy/nginx.conf: upstream %s has no replica in the test", m[2])
			}
			seen[m[2]] = true
			return fmt.Sprintf("%sserver 127.0.0.1:%d%s;", m[1], port, m[3])
		}),
		replace(reHTTP, 1, "http {", func(m []string) string {
			var b strings.Builder
			b.WriteString(m[0])
			for _, p := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
				fmt.Fprintf(&b, "    %s_temp_path %s;\n", p, filepath.Join(dir, "tmp-"+p))
			}
			return b.String()
		}),
	} {
		if step != nil {
			return "", step
		}
	}
	if err != nil {
		return "", err
	}
	if len(seen) != len(ports) {
		return "", fmt.Errorf("deploy/nginx.conf: upstreams %v, test replicas %v", seen, ports)
	}
	return conf, nil
}

// startNginx writes the balancer's config from deploy/nginx.conf, checks it
// with `nginx -t`, starts nginx in the foreground and waits until a request
// through it reaches a replica.
func startNginx(ctx context.Context, t *testing.T, root, dir, logDir string, ports map[string]int) (*proc, int) {
	t.Helper()
	bin := lookTool(t, "nginx")
	src, err := os.ReadFile(filepath.Join(root, "deploy", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	listen := freePort(t)
	conf, err := nginxConfig(src, dir, listen, ports)
	if err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	argv := []string{bin, "-p", dir + "/", "-e", "stderr", "-c", confPath, "-g", "daemon off;"}
	if out, err := exec.CommandContext(ctx, argv[0], append(argv[1:], "-t")...).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s\n--- config:\n%s", err, out, conf)
	}
	p := startProc(t, "nginx", dir, logDir, cleanEnv(), argv...)
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", listen)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, listen
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("nginx on %d: %v\n%s", listen, err, tail(p.log, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metricsLines fetches /metrics through the balancer and counts the samples.
func metricsLines(ctx context.Context, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	n := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); line != "" && !strings.HasPrefix(line, "#") {
			n++
		}
	}
	return n, sc.Err()
}

// workspace checks that the tools the multi-replica tests run are there
// (with CHATD_E2E=1 a missing one is a failure), and returns the module
// root, a temporary folder and the logs folder in it. When the test fails,
// it prints the last lines of each named process's log, after every
// process has been stopped (it is registered before any is started).
func workspace(t *testing.T, procs ...string) (root, tmp, logDir string) {
	t.Helper()
	lookTool(t, "redis-server")
	lookTool(t, "redis-cli")
	lookTool(t, "nginx")
	root = moduleRoot(t)
	tmp = t.TempDir()
	logDir = filepath.Join(tmp, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, name := range procs {
			t.Logf("--- last lines of %s's log:\n%s", name, tail(filepath.Join(logDir, name+".log"), 40))
		}
	})
	return root, tmp, logDir
}

// randomSecret returns a token secret of 32 random bytes, in hex.
func randomSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
