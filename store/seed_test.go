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

	"github.com/chatd/chatd/chat"
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
	if redistest.Cluster() {
		t.Skip("seed interop is about the seed's layout, on a single Redis: the Redis Cluster layout is not the seed's, and the seed's Python cannot talk to a cluster")
	}
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
			if got := chat.ConvKey(p[0], p[1]); got != r.Key {
				t.Errorf("chat.ConvKey(%s, %s) = %q, the seed's keyname = %q", p[0], p[1], got, r.Key)
			}
		}
	})

	t.Run("chatd to seed", func(t *testing.T) {
		us := seedUsers(t, rdb, 2)
		a, b := us[0], us[1]
		conv := chat.ConvKey(a, b)
		var sent []chat.Message
		for _, text := range []string{"你好，世界", "🎉👍", "quotes \"q\" 'single' back\\slash\nnew line\ttab </script>"} {
			m, _, err := s.Send(ctx, chat.SendRequest{From: a, To: b, Text: text})
			if err != nil {
				t.Fatal(err)
			}
			sent = append(sent, m)
		}
		m, _, err := s.Send(ctx, chat.SendRequest{From: b, To: a, Text: "reply"})
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, m)
		// b's answer read everything before it; the seed's count is the
		// seed's: three messages while b was offline.
		if un, err := s.Unread(ctx, b); err != nil || len(un) != 0 {
			t.Fatalf("chatd's Unread(b) = %v, %v; want none", un, err)
		}
		if un, err := s.Unread(ctx, a); err != nil || !maps.Equal(un, map[string]int64{b: 1}) {
			t.Fatalf("chatd's Unread(a) = %v, %v; want %s: 1", un, err, b)
		}
		if v, err := rdb.HGet(ctx, b, conv).Result(); err != nil || v != "3" {
			t.Fatalf("HGET b %s = %q, %v; want the seed's 3", conv, v, err)
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
		if v, err := rdb.HGet(ctx, b, conv).Result(); err != nil || v != "0" {
			t.Fatalf("HGET b %s after the seed's msgread = %q, %v; want 0", conv, v, err)
		}
		page, err := s.History(ctx, b, a, 0, 0)
		if err != nil || page.Unread != 0 || page.Read != 4 || page.PeerRead != 3 || !slices.Equal(page.Messages, reversed(sent)) {
			t.Fatalf("chatd's History after the seed's read = %+v, %v", page, err)
		}

		// chatd's read resets the seed's count, as msgread does.
		if _, _, err := s.Send(ctx, chat.SendRequest{From: a, To: b, Text: "one more"}); err != nil {
			t.Fatal(err)
		}
		if v, err := rdb.HGet(ctx, b, conv).Result(); err != nil || v != "1" {
			t.Fatalf("HGET b %s = %q, %v; want 1", conv, v, err)
		}
		if st, err := s.MarkRead(ctx, b, a, 0, ""); err != nil || st != (chat.ReadState{Last: 5, Read: 5}) {
			t.Fatalf("MarkRead = %+v, %v", st, err)
		}
		if v, err := rdb.HGet(ctx, b, conv).Result(); err != nil || v != "0" {
			t.Fatalf("HGET b %s after chatd's read = %q, %v; want 0", conv, v, err)
		}
		if got := seed.read(b, a); len(got) != 5 || got[0].Msg != "one more" {
			t.Fatalf("the seed's msgread after chatd's read = %+v", got)
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

		// A conversation only the seed wrote (PROTOCOL.md section 4): unread
		// is the seed's count; a read position is the length minus the
		// user's count.
		if un, err := s.Unread(ctx, d); err != nil || len(un) != 1 || un[c] != 3 {
			t.Fatalf("chatd's Unread(d) = %v, %v; want %s: 3 (the seed's count)", un, err, c)
		}
		if un, err := s.Unread(ctx, c); err != nil || len(un) != 0 {
			t.Fatalf("chatd's Unread(c) = %v, %v; want none", un, err)
		}
		convs, more, err := s.Inbox(ctx, d, 0)
		if err != nil || more || len(convs) != 1 {
			t.Fatalf("chatd's Inbox(d) = %+v, %v, %v; want the seed's conversation", convs, more, err)
		}
		if cv := convs[0]; cv.With != c || cv.Unread != 3 || cv.Read != 0 || cv.PeerRead != 3 ||
			cv.Last == nil || cv.Last.Seq != 3 || cv.Last.Text != texts[2] {
			t.Fatalf("chatd's Inbox(d) = %+v (last %+v); want with c, unread 3, read 0, peer read 3, last seq 3 %q",
				cv, cv.Last, texts[2])
		}
		if convs, _, err := s.Inbox(ctx, c, 0); err != nil || len(convs) != 0 {
			t.Fatalf("chatd's Inbox(c) = %+v, %v; want none: the seed writes no inbox index and c has no count", convs, err)
		}
		if page, err := s.History(ctx, c, d, 0, 0); err != nil || page.Unread != 0 || page.Read != 3 || page.PeerRead != 0 {
			t.Fatalf("chatd's History(c) = %+v, %v; want unread 0, read 3, peer read 0", page, err)
		}

		page, err := s.History(ctx, d, c, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if page.Unread != 3 || page.Read != 0 || page.PeerRead != 3 || page.More || len(page.Messages) != 3 {
			t.Fatalf("chatd's History = %+v", page)
		}
		for i, m := range page.Messages {
			seq := int64(3 - i)
			if m.Seq != seq || m.Text != texts[seq-1] || m.From != c || m.To != d || m.Conv != chat.ConvKey(c, d) {
				t.Errorf("message %d = %+v, want seq %d %q from %s to %s", i, m, seq, texts[seq-1], c, d)
			}
			if m.Time < start || m.Time > end {
				t.Errorf("message %d time %v, want the seed's time.time() in [%v, %v]", i, m.Time, start, end)
			}
		}
		if un, err := s.Unread(ctx, d); err != nil || un[c] != 3 {
			t.Fatalf("chatd's Unread(d) after History = %v, %v; want %s: 3 (history reads nothing)", un, err, c)
		}

		// The seed's msgread resets d's count: c sees its messages read.
		if got := seed.read(d, c); len(got) != 3 {
			t.Fatalf("the seed's msgread = %d messages, want 3", len(got))
		}
		if page, err := s.History(ctx, c, d, 0, 0); err != nil || page.PeerRead != 3 {
			t.Fatalf("chatd's History(c) after the seed's msgread = %+v, %v; want peer read 3", page, err)
		}
		if un, err := s.Unread(ctx, d); err != nil || len(un) != 0 {
			t.Fatalf("chatd's Unread(d) after the seed's msgread = %v, %v; want none", un, err)
		}

		// The first chatd message starts the positions from the seed's.
		seed.send(c, d, "seed 4")
		if _, _, err := s.Send(ctx, chat.SendRequest{From: c, To: d, Text: "chatd 5"}); err != nil {
			t.Fatal(err)
		}
		if page, err := s.History(ctx, d, c, 0, 0); err != nil || page.Unread != 2 || page.Read != 3 || page.PeerRead != 5 {
			t.Fatalf("chatd's History(d) after chatd's first send = %+v, %v; want unread 2, read 3, peer read 5", page, err)
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
			m, _, err := s.Send(ctx, chat.SendRequest{From: g, To: e, Text: text})
			if err != nil {
				t.Fatal(err)
			}
			if m.Seq != int64(i) {
				t.Fatalf("chatd's send #%d got seq %d", i, m.Seq)
			}
			want = append(want, text)
		}
		// Each side counted its own writes in the other's hash.
		if v, err := rdb.HGet(ctx, g, chat.ConvKey(e, g)).Result(); err != nil || v != strconv.Itoa(n/2) {
			t.Fatalf("HGET g = %q, %v; want %d from the seed", v, err, n/2)
		}
		if v, err := rdb.HGet(ctx, e, chat.ConvKey(e, g)).Result(); err != nil || v != strconv.Itoa(n/2) {
			t.Fatalf("HGET e = %q, %v; want %d from chatd", v, err, n/2)
		}
		// Every message read what came before it, the seed's too: g wrote
		// the newest, e has that one unread.
		if un, err := s.Unread(ctx, g); err != nil || len(un) != 0 {
			t.Fatalf("Unread(g) = %v, %v; want none", un, err)
		}
		if un, err := s.Unread(ctx, e); err != nil || !maps.Equal(un, map[string]int64{g: 1}) {
			t.Fatalf("Unread(e) = %v, %v; want %s: 1", un, err, g)
		}
		page, err := s.History(ctx, e, g, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if page.Unread != 1 || page.Read != n-1 || page.PeerRead != n {
			t.Fatalf("History(e) = unread %d read %d peer read %d; want 1, %d, %d", page.Unread, page.Read, page.PeerRead, n-1, n)
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

func reversed(msgs []chat.Message) []chat.Message {
	out := slices.Clone(msgs)
	slices.Reverse(out)
	return out
}
