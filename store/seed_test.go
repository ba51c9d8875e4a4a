package store

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// python is Debian's interpreter, which python3-redis installs the module for.
const python = "/usr/bin/python3"

// seedDB is the Redis database the interop test uses: the seed's keys have
// no prefix, so it keeps them out of the database other tests share.
const seedDB = 9

// seedProc is testdata/seed.py running as a child process.
type seedProc struct {
	t      *testing.T
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *bytes.Buffer
}

func startSeed(t *testing.T, redisURL string) *seedProc {
	t.Helper()
	cmd := exec.Command(python, "testdata/seed.py", redisURL)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &bytes.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting seed.py: %v", err)
	}
	t.Cleanup(func() {
		in.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("seed.py: %v\n%s", err, stderr)
		}
	})
	return &seedProc{t: t, in: in, out: bufio.NewReader(out), stderr: stderr}
}

// call sends one request to seed.py and decodes its reply into reply.
func (p *seedProc) call(req map[string]any, reply any) {
	p.t.Helper()
	b, _ := json.Marshal(req)
	if _, err := p.in.Write(append(b, '\n')); err != nil {
		p.t.Fatalf("seed.py %s: %v\n%s", b, err, p.stderr)
	}
	type result struct {
		line []byte
		err  error
	}
	got := make(chan result, 1)
	go func() {
		line, err := p.out.ReadBytes('\n')
		got <- result{line, err}
	}()
	var r result
	select {
	case r = <-got:
	case <-time.After(30 * time.Second):
		p.t.Fatalf("seed.py %s: no reply after 30s\n%s", b, p.stderr)
	}
	if r.err != nil {
		p.t.Fatalf("seed.py %s: %v\n%s", b, r.err, p.stderr)
	}
	var e struct{ Error string }
	if json.Unmarshal(r.line, &e) == nil && e.Error != "" {
		p.t.Fatalf("seed.py %s: %s", b, e.Error)
	}
	dec := json.NewDecoder(bytes.NewReader(r.line))
	dec.UseNumber()
	if err := dec.Decode(reply); err != nil {
		p.t.Fatalf("seed.py %s: reply %s: %v", b, r.line, err)
	}
}

// pyID makes a user id a JSON number for seed.py, as the seed's ids are ints.
func pyID(user string) json.Number { return json.Number(user) }

func (p *seedProc) send(from, to, msg string) {
	p.t.Helper()
	var ok struct{ OK bool }
	p.call(map[string]any{"op": "send", "from": pyID(from), "to": pyID(to), "msg": msg}, &ok)
	if !ok.OK {
		p.t.Fatalf("seed.py send %s→%s: not ok", from, to)
	}
}

// seedMessage is a message as the seed's msgread returns it, with the
// Python type of each field.
type seedMessage struct {
	FromID json.Number       `json:"fromid"`
	ToID   json.Number       `json:"toid"`
	Msg    string            `json:"msg"`
	Time   json.Number       `json:"time"`
	Types  map[string]string `json:"types"`
}

func (p *seedProc) read(uid, other string) []seedMessage {
	p.t.Helper()
	var r struct{ Messages []seedMessage }
	p.call(map[string]any{"op": "read", "uid": pyID(uid), "other": pyID(other)}, &r)
	return r.Messages
}

// seedUsers returns n random numeric user ids (larger than int32, as real
// ids may be) and deletes every key naming them when the test ends.
func seedUsers(t *testing.T, rdb *redis.Client, n int) []string {
	t.Helper()
	users := make([]string, n)
	for i := range users {
		users[i] = strconv.FormatInt(1_000_000_000_000_000+rand.Int64N(8_999_999_999_999_999), 10)
	}
	t.Cleanup(func() {
		for _, u := range users {
			redistest.Clean(t, rdb, "*"+u+"*")
		}
	})
	return users
}

// TestSeedInterop runs the seed's Python (testdata/seed.py) against the
// same Redis as chatd, both ways: the seed reads what chatd stores, and
// chatd serves what the seed writes, in one conversation list.
func TestSeedInterop(t *testing.T) {
	t.Parallel()
	if !redistest.Real() {
		t.Skip("seed interop runs the seed's Python against a real Redis: set REDIS_URL to run it")
	}
	if out, err := exec.Command(python, "-c", "import redis").CombinedOutput(); err != nil {
		t.Fatalf("REDIS_URL is set but %s cannot import the redis module (install python3-redis): %v\n%s", python, err, out)
	}
	u, err := url.Parse(os.Getenv("REDIS_URL"))
	if err != nil {
		t.Fatalf("REDIS_URL: %v", err)
	}
	u.Path = fmt.Sprintf("/%d", seedDB)
	opt, err := redis.ParseURL(u.String())
	if err != nil {
		t.Fatalf("REDIS_URL: %v", err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	// The seed's layout: no prefix.
	s := New(rdb, Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	seed := startSeed(t, u.String())

	t.Run("keyname", func(t *testing.T) {
		for _, p := range [][2]string{
			{"9", "10"}, {"10", "9"}, {"23", "43"}, {"43", "23"}, {"5", "5"}, {"0", "7"},
			{"99999999999999999999", "100000000000000000000"}, {"123456789012345678901234567890", "99"},
		} {
			var r struct{ Key string }
			seed.call(map[string]any{"op": "keyname", "a": pyID(p[0]), "b": pyID(p[1])}, &r)
			if got := ConvKey(p[0], p[1]); got != r.Key {
				t.Errorf("ConvKey(%s, %s) = %q, the seed's keyname = %q", p[0], p[1], got, r.Key)
			}
		}
	})

	t.Run("chatd to seed", func(t *testing.T) {
		us := seedUsers(t, rdb, 2)
		a, b := us[0], us[1]
		conv := ConvKey(a, b)
		var sent []Message
		for _, text := range []string{"你好，世界", "🎉👍", "quotes \"q\" 'single' back\\slash\nnew line\ttab </script>"} {
			m, _, err := s.Send(ctx, SendRequest{From: a, To: b, Text: text})
			if err != nil {
				t.Fatal(err)
			}
			sent = append(sent, m)
		}
		m, _, err := s.Send(ctx, SendRequest{From: b, To: a, Text: "reply"})
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, m)
		if un, err := s.Unread(ctx, b); err != nil || un[a] != 3 {
			t.Fatalf("chatd's Unread(b) = %v, %v; want %s: 3", un, err, a)
		}

		got := seed.read(b, a)
		if len(got) != len(sent) {
			t.Fatalf("the seed's msgread returned %d messages, want %d", len(got), len(sent))
		}
		for i, sm := range got {
			want := sent[len(sent)-1-i] // newest first
			if sm.Msg != want.Text || sm.FromID.String() != want.From || sm.ToID.String() != want.To {
				t.Errorf("seed message %d = %s→%s %q, want %s→%s %q", i, sm.FromID, sm.ToID, sm.Msg, want.From, want.To, want.Text)
			}
			wantTypes := map[string]string{"fromid": "int", "toid": "int", "msg": "str", "time": "float"}
			if !maps.Equal(sm.Types, wantTypes) {
				t.Errorf("seed message %d has Python types %v, want %v", i, sm.Types, wantTypes)
			}
			if ts, err := sm.Time.Float64(); err != nil || ts != want.Time {
				t.Errorf("seed message %d time %s, want %v", i, sm.Time, want.Time)
			}
		}
		// msgread's HSET 0 is what chatd sees.
		if un, err := s.Unread(ctx, b); err != nil || len(un) != 0 {
			t.Fatalf("chatd's Unread(b) after the seed's msgread = %v, %v; want none", un, err)
		}
		if v, err := rdb.HGet(ctx, b, conv).Result(); err != nil || v != "0" {
			t.Fatalf("HGET b %s = %q, %v; want 0", conv, v, err)
		}
		page, err := s.History(ctx, b, a, 0, 0)
		if err != nil || page.Unread != 0 || !slices.Equal(page.Messages, reversed(sent)) {
			t.Fatalf("chatd's History after the seed's read = %+v, %v", page, err)
		}
	})

	t.Run("seed to chatd", func(t *testing.T) {
		us := seedUsers(t, rdb, 2)
		c, d := us[0], us[1]
		texts := []string{"你好，世界", "🎉👍", "q\"b\\n\nline </b>"}
		start := float64(time.Now().UnixMicro())/1e6 - 1
		for _, text := range texts {
			seed.send(c, d, text)
		}
		end := float64(time.Now().UnixMicro())/1e6 + 1

		if un, err := s.Unread(ctx, d); err != nil || len(un) != 1 || un[c] != 3 {
			t.Fatalf("chatd's Unread(d) = %v, %v; want %s: 3 (the seed's count)", un, err, c)
		}
		convs, more, err := s.Inbox(ctx, d, 0)
		if err != nil || more || len(convs) != 1 {
			t.Fatalf("chatd's Inbox(d) = %+v, %v, %v; want the seed's conversation", convs, more, err)
		}
		if cv := convs[0]; cv.With != c || cv.Unread != 3 || cv.Last == nil || cv.Last.Seq != 3 || cv.Last.Text != texts[2] {
			t.Fatalf("chatd's Inbox(d) = %+v (last %+v); want with c, unread 3, last seq 3 %q", cv, cv.Last, texts[2])
		}

		page, err := s.History(ctx, d, c, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if page.Unread != 3 || page.More || len(page.Messages) != 3 {
			t.Fatalf("chatd's History = %+v", page)
		}
		for i, m := range page.Messages {
			seq := int64(3 - i)
			if m.Seq != seq || m.Text != texts[seq-1] || m.From != c || m.To != d || m.Conv != ConvKey(c, d) {
				t.Errorf("message %d = %+v, want seq %d %q from %s to %s", i, m, seq, texts[seq-1], c, d)
			}
			if m.Time < start || m.Time > end {
				t.Errorf("message %d time %v, want the seed's time.time() in [%v, %v]", i, m.Time, start, end)
			}
		}
		if un, err := s.Unread(ctx, d); err != nil || len(un) != 0 {
			t.Fatalf("chatd's Unread(d) after History = %v, %v; want none", un, err)
		}
	})

	t.Run("interleaved", func(t *testing.T) {
		us := seedUsers(t, rdb, 2)
		e, g := us[0], us[1]
		const n = 12
		var want []string // texts, oldest first
		for i := 1; i <= n; i++ {
			if i%2 == 1 {
				text := fmt.Sprintf("seed %d", i)
				seed.send(e, g, text)
				want = append(want, text)
				continue
			}
			text := fmt.Sprintf("chatd %d", i)
			m, _, err := s.Send(ctx, SendRequest{From: g, To: e, Text: text})
			if err != nil {
				t.Fatal(err)
			}
			if m.Seq != int64(i) {
				t.Fatalf("chatd's send #%d got seq %d", i, m.Seq)
			}
			want = append(want, text)
		}
		// Each side counted its own writes in the other's hash.
		if un, err := s.Unread(ctx, g); err != nil || un[e] != n/2 {
			t.Fatalf("Unread(g) = %v, %v; want %s: %d from the seed", un, err, e, n/2)
		}
		if un, err := s.Unread(ctx, e); err != nil || un[g] != n/2 {
			t.Fatalf("Unread(e) = %v, %v; want %s: %d from chatd", un, err, g, n/2)
		}
		page, err := s.History(ctx, e, g, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		wantSeqs(t, page.Messages, seqRange(n, 1)...)
		for _, m := range page.Messages {
			if m.Text != want[m.Seq-1] {
				t.Fatalf("seq %d = %q, want %q", m.Seq, m.Text, want[m.Seq-1])
			}
		}
		got := seed.read(g, e)
		if len(got) != n {
			t.Fatalf("the seed read %d messages, want %d", len(got), n)
		}
		for i, sm := range got {
			if sm.Msg != want[n-1-i] || sm.Types["fromid"] != "int" || sm.Types["time"] != "float" {
				t.Fatalf("the seed's message %d = %+v, want %q with int ids and float time", i, sm, want[n-1-i])
			}
		}
	})
}

func reversed(msgs []Message) []Message {
	out := slices.Clone(msgs)
	slices.Reverse(out)
	return out
}
