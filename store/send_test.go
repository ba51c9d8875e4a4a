package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/internal/redistest"
)

func TestSendSeqAndElement(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	texts := []string{"hi", "你好，世界", "🎉👍", "say \"hi\" \\ <b>&</b>\nbye"}
	for i, text := range texts {
		f.clock.Advance(1500 * time.Microsecond)
		m := f.send(t, "23", "43", text)
		want := chat.Message{Conv: "43-23", Seq: int64(i + 1), From: "23", To: "43", Text: text,
			Time: float64(f.clock.Now().UnixMicro()) / 1e6}
		if m != want {
			t.Fatalf("Send #%d = %+v, want %+v", i+1, m, want)
		}
	}
	// The other direction continues the same conversation.
	if m := f.send(t, "43", "23", "back"); m.Seq != 5 || m.Conv != "43-23" {
		t.Fatalf("reply = %+v, want seq 5 in 43-23", m)
	}

	// The list holds the seed's format, newest first.
	list := f.rawList(t, "43-23")
	if len(list) != 5 {
		t.Fatalf("list length %d, want 5", len(list))
	}
	for i, text := range texts {
		raw := list[len(list)-1-i]
		var e map[string]any
		dec := json.NewDecoder(strings.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("element %q: %v", raw, err)
		}
		if len(e) != 4 {
			t.Errorf("element %s: want exactly fromid, toid, msg, time", raw)
		}
		if e["fromid"] != json.Number("23") || e["toid"] != json.Number("43") {
			t.Errorf("element %s: ids must be the JSON numbers 23 and 43", raw)
		}
		if e["msg"] != text {
			t.Errorf("element %s: msg = %q, want %q", raw, e["msg"], text)
		}
		ts, ok := e["time"].(json.Number)
		if !ok {
			t.Fatalf("element %s: time is %T, want a JSON number", raw, e["time"])
		}
		if v, err := ts.Float64(); err != nil || v < 1e9 {
			t.Errorf("element %s: time %s is not seconds since the epoch", raw, ts)
		}
	}
}

func TestSendStringIDs(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	m := f.send(t, "alice", "bob@x.org", "hi")
	if m.Conv != "bob@x.org-alice" || m.Seq != 1 {
		t.Fatalf("Send = %+v, want seq 1 in bob@x.org-alice", m)
	}
	list := f.rawList(t, "bob@x.org-alice")
	if len(list) != 1 || !strings.HasPrefix(list[0], `{"fromid":"alice","toid":"bob@x.org","msg":"hi","time":`) {
		t.Fatalf("list = %q, want one element with string ids", list)
	}
	f.wantSeed(t, "bob@x.org", "bob@x.org-alice", "1")
}

func TestSendUnread(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.seedLayout(t)

	// Offline recipient: the seed's HGET <to> <conv> is bumped, the sender's is not.
	f.send(t, "23", "43", "one")
	f.send(t, "23", "43", "two")
	if got := f.unreadField(t, "43", "43-23"); got != "2" {
		t.Fatalf("HGET 43 43-23 = %q, want 2", got)
	}
	if v, ok := f.hget(t, f.k.unread("23"), "43-23"); ok {
		t.Fatalf("sender's unread was touched: %q", v)
	}

	// Online recipient: not bumped.
	if _, err := f.s.Connect(f.ctx, "43", "r1 c1", f.clock.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	f.send(t, "23", "43", "three")
	if got := f.unreadField(t, "43", "43-23"); got != "2" {
		t.Fatalf("online recipient: HGET 43 43-23 = %q, want still 2", got)
	}

	// Its entry expired (the replica died): offline again, without sleeping.
	f.clock.Advance(61 * time.Second)
	f.send(t, "23", "43", "four")
	if got := f.unreadField(t, "43", "43-23"); got != "3" {
		t.Fatalf("expired presence: HGET 43 43-23 = %q, want 3", got)
	}

	// The sender being online changes nothing for the recipient.
	if _, err := f.s.Connect(f.ctx, "23", "r1 c2", f.clock.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	f.send(t, "23", "43", "five")
	if got := f.unreadField(t, "43", "43-23"); got != "4" {
		t.Fatalf("online sender: HGET 43 43-23 = %q, want 4", got)
	}
	if n := f.llen(t, "43-23"); n != 5 {
		t.Fatalf("list length %d, want 5", n)
	}
}

func TestSendIdempotent(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	req := chat.SendRequest{From: "23", To: "43", Text: "hi", ClientID: "c1"}
	first, dup, err := f.s.Send(f.ctx, req)
	if err != nil || dup {
		t.Fatalf("first Send = %+v, %v, %v", first, dup, err)
	}
	f.send(t, "43", "23", "reply") // moves the list on: the earlier one is no longer the head

	retries := []chat.SendRequest{req, {From: "23", To: "43", Text: "other text", ClientID: "c1"}}
	other := chat.SendRequest{From: "23", To: "65", Text: "other recipient", ClientID: "c1"}
	if !f.cluster() {
		retries = append(retries, other)
	}
	for _, retry := range retries {
		f.clock.Advance(time.Second)
		m, dup, err := f.s.Send(f.ctx, retry)
		if err != nil {
			t.Fatalf("retry %+v: %v", retry, err)
		}
		if !dup || m != first {
			t.Fatalf("retry %+v = %+v, dup %v; want the first %+v, dup true", retry, m, dup, first)
		}
	}
	if n := f.llen(t, "43-23"); n != 2 {
		t.Fatalf("list length %d, want 2", n)
	}
	if f.cluster() {
		// On a Redis Cluster a client id is kept in its conversation's
		// slot: the same id to another recipient is another message.
		m, dup, err := f.s.Send(f.ctx, other)
		if err != nil || dup || m.Conv != "65-23" || m.Seq != 1 || m.Text != other.Text {
			t.Fatalf("same id, other recipient = %+v, %v, %v; want a new message #1 in 65-23", m, dup, err)
		}
	} else {
		if n := f.llen(t, "65-23"); n != 0 {
			t.Fatalf("retry to another recipient stored %d messages", n)
		}
		if _, ok := f.hget(t, f.k.unread("65"), "65-23"); ok {
			t.Fatal("retry to another recipient bumped its unread count")
		}
	}
	f.wantSeed(t, "43", "43-23", "1")

	// Another sender may use the same id.
	m, dup, err := f.s.Send(f.ctx, chat.SendRequest{From: "43", To: "23", Text: "mine", ClientID: "c1"})
	if err != nil || dup || m.Seq != 3 || m.Text != "mine" {
		t.Fatalf("other sender, same id = %+v, %v, %v; want a new message #3", m, dup, err)
	}
	// And the same sender another id.
	m, dup, err = f.s.Send(f.ctx, chat.SendRequest{From: "23", To: "43", Text: "hi", ClientID: "c2"})
	if err != nil || dup || m.Seq != 4 {
		t.Fatalf("same sender, new id = %+v, %v, %v; want a new message #4", m, dup, err)
	}
}

// idemFixture returns a fixture whose idempotency keys can be made to
// expire: 24 h and FastForward on miniredis, a short TTL on a real Redis.
func idemFixture(t *testing.T) (*fixture, time.Duration) {
	t.Helper()
	if !redistest.Real() {
		return newFixture(t, Config{}), 25 * time.Hour
	}
	return newFixture(t, Config{IdempotencyTTL: 1500 * time.Millisecond}), 0
}

func TestSendIdempotencyExpires(t *testing.T) {
	t.Parallel()
	f, wait := idemFixture(t)
	req := chat.SendRequest{From: "23", To: "43", Text: "hi", ClientID: "c1"}
	first, _, err := f.s.Send(f.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	key := f.idemKey("43-23", "23", "c1")
	ttl, err := f.r.Client.PTTL(f.ctx, key).Result()
	if err != nil || ttl <= 0 {
		t.Fatalf("PTTL %s = %v, %v; want a TTL", key, ttl, err)
	}
	if f.r.Mini != nil && (ttl > 24*time.Hour || ttl < 24*time.Hour-time.Minute) {
		t.Fatalf("idempotency TTL %v, want 24h by default", ttl)
	}
	if _, dup, _ := f.s.Send(f.ctx, req); !dup {
		t.Fatal("retry within the window was not a duplicate")
	}
	f.expire(t, key, wait)
	m, dup, err := f.s.Send(f.ctx, req)
	if err != nil || dup || m.Seq != first.Seq+1 {
		t.Fatalf("after expiry = %+v, %v, %v; want a new message #%d", m, dup, err, first.Seq+1)
	}
}

func TestSendWithoutClientIDStoresEach(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	for i := 1; i <= 3; i++ {
		m, dup, err := f.s.Send(f.ctx, chat.SendRequest{From: "23", To: "43", Text: "same"})
		if err != nil || dup || m.Seq != int64(i) {
			t.Fatalf("Send #%d = %+v, %v, %v", i, m, dup, err)
		}
	}
	if n := f.llen(t, "43-23"); n != 3 {
		t.Fatalf("list length %d, want 3", n)
	}
	// Each send still has a record, against a retry of the command, but
	// one kept for a minute, not for the day a client's id is kept.
	records := 0
	for _, k := range f.keysUnder(t) {
		if !strings.Contains(k, "idem") {
			continue
		}
		records++
		ttl, err := f.r.Client.PTTL(f.ctx, f.r.Prefix+k).Result()
		if err != nil || ttl <= 0 || ttl > generatedIDTTL {
			t.Errorf("PTTL %s = %v, %v; want at most %v", k, ttl, err, generatedIDTTL)
		}
	}
	if records != 3 {
		t.Fatalf("%d idempotency records, want 3", records)
	}
}

func TestSendInvalidWritesNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	tests := []struct {
		name string
		req  chat.SendRequest
		want error
	}{
		{"empty from", chat.SendRequest{From: "", To: "43", Text: "x"}, chat.ErrInvalid},
		{"empty to", chat.SendRequest{From: "23", To: "", Text: "x"}, chat.ErrInvalid},
		{"from with colon", chat.SendRequest{From: "chat:inbox", To: "43", Text: "x"}, chat.ErrInvalid},
		{"to with dash", chat.SendRequest{From: "23", To: "4-3", Text: "x"}, chat.ErrInvalid},
		{"to with space", chat.SendRequest{From: "23", To: "4 3", Text: "x"}, chat.ErrInvalid},
		{"from 65 chars", chat.SendRequest{From: strings.Repeat("1", 65), To: "43", Text: "x"}, chat.ErrInvalid},
		{"empty text", chat.SendRequest{From: "23", To: "43", Text: ""}, chat.ErrInvalid},
		{"invalid utf-8", chat.SendRequest{From: "23", To: "43", Text: "a\xffb"}, chat.ErrInvalid},
		{"text 4097 bytes", chat.SendRequest{From: "23", To: "43", Text: strings.Repeat("a", 4097)}, chat.ErrTooLarge},
		{"client id with space", chat.SendRequest{From: "23", To: "43", Text: "x", ClientID: "c 1"}, chat.ErrInvalid},
		{"client id 129 bytes", chat.SendRequest{From: "23", To: "43", Text: "x", ClientID: strings.Repeat("c", 129)}, chat.ErrInvalid},
	}
	for _, tt := range tests {
		m, dup, err := f.s.Send(f.ctx, tt.req)
		mustErr(t, err, tt.want, tt.name)
		if m != (chat.Message{}) || dup {
			t.Errorf("%s: Send = %+v, dup %v; want zero", tt.name, m, dup)
		}
	}
	if ks := f.keysUnder(t); len(ks) != 0 {
		t.Fatalf("invalid sends wrote keys %q", ks)
	}
	// Control: a valid one does write, so the scan above can see keys.
	f.send(t, "23", "43", "x")
	if ks := f.keysUnder(t); !slices.Contains(ks, strings.TrimPrefix(f.convKey("43-23"), f.r.Prefix)) {
		t.Fatalf("keys after a valid send = %q, want 43-23 among them", ks)
	}
}

// TestSendOnABrokenIdempotencyKeyWritesNothing: the script stores the
// element before it records the client id; when the record cannot be
// written (its key holds a hash), the element goes back and the send
// fails as a whole.
func TestSendOnABrokenIdempotencyKeyWritesNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	if f.cluster() {
		t.Skip("about the single Redis's send script")
	}
	f.send(t, "23", "43", "first")
	if err := f.r.Client.HSet(f.ctx, f.k.idem("23", "c1"), "x", "y").Err(); err != nil {
		t.Fatal(err)
	}
	before := f.dump(t)
	if _, _, err := f.s.Send(f.ctx, chat.SendRequest{From: "23", To: "43", Text: "second", ClientID: "c1"}); err == nil {
		t.Fatal("a send whose idempotency key holds a hash succeeded")
	}
	if after := f.dump(t); !maps.Equal(after, before) {
		t.Fatalf("the failed send changed Redis:\n before %v\n after  %v", before, after)
	}
}

func TestSendConcurrent(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	const workers, each = 50, 20
	sent := make(chan chat.Message, workers*each)
	errs := make(chan error, workers*each)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				m, dup, err := f.s.Send(f.ctx, chat.SendRequest{From: "23", To: "43",
					Text: fmt.Sprintf("w%d-%d", w, i), ClientID: fmt.Sprintf("w%d-%d", w, i)})
				if err != nil || dup {
					errs <- fmt.Errorf("w%d-%d: dup %v, %v", w, i, dup, err)
					continue
				}
				sent <- m
			}
		})
	}
	wg.Wait()
	close(sent)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	textOf := map[int64]string{}
	var got []int64
	for m := range sent {
		got = append(got, m.Seq)
		textOf[m.Seq] = m.Text
	}
	slices.Sort(got)
	want := make([]int64, workers*each)
	for i := range want {
		want[i] = int64(i + 1)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("seqs are not exactly 1..%d once each (got %d seqs)", workers*each, len(got))
	}
	if n := f.llen(t, "43-23"); n != workers*each {
		t.Fatalf("list length %d, want %d", n, workers*each)
	}
	f.wantSeed(t, "43", "43-23", strconv.Itoa(workers*each))
	// Each text sits at the seq its Send returned: the reply and the list agree.
	var before int64
	read := 0
	for {
		page, err := f.s.History(f.ctx, "43", "23", before, chat.MaxPageSize)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range page.Messages {
			if m.Text != textOf[m.Seq] {
				t.Fatalf("seq %d holds %q, Send returned it for %q", m.Seq, m.Text, textOf[m.Seq])
			}
			read++
			before = m.Seq
		}
		if !page.More {
			break
		}
	}
	if read != workers*each {
		t.Fatalf("History read %d messages, want %d", read, workers*each)
	}
}

// TestSendIdempotentRace: sends with the same (sender, id) racing (as on two
// replicas after a client retried) store one message, and every reply
// carries it.
func TestSendIdempotentRace(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	const racers = 20
	type result struct {
		m   chat.Message
		dup bool
		err error
	}
	results := make(chan result, racers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			<-start
			m, dup, err := f.s.Send(f.ctx, chat.SendRequest{From: "23", To: "43", Text: fmt.Sprintf("try %d", i), ClientID: "retry-1"})
			results <- result{m, dup, err}
		})
	}
	close(start)
	wg.Wait()
	close(results)
	var first *chat.Message
	fresh := 0
	for r := range results {
		if r.err != nil {
			t.Fatal(r.err)
		}
		if !r.dup {
			fresh++
		}
		if first == nil {
			first = &r.m
		} else if r.m != *first {
			t.Fatalf("replies differ: %+v and %+v", r.m, *first)
		}
	}
	if fresh != 1 {
		t.Fatalf("%d replies say stored, want exactly 1", fresh)
	}
	if n := f.llen(t, "43-23"); n != 1 {
		t.Fatalf("list length %d, want 1", n)
	}
	f.wantSeed(t, "43", "43-23", "1")
}

// TestSendToSelf: a note to self is one conversation "<id>-<id>", counted in
// the seed's hash while its user is offline, and routed with the user named
// twice.
func TestSendToSelf(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	m := f.send(t, "23", "23", "note")
	if m.Conv != "23-23" || m.Seq != 1 {
		t.Fatalf("Send to self = %+v, want seq 1 in 23-23", m)
	}
	f.wantSeed(t, "23", "23-23", "1")
	sub, rec := f.subscribe(t, "r1")
	f.connect(t, "23", "r1 c1", time.Minute)
	f.send(t, "23", "23", "again")
	d := rec.waitDeliveries(t, 1)[0]
	if !slices.Equal(d.Users, []string{"23", "23"}) {
		t.Fatalf("delivery users %q, want [23 23]", d.Users)
	}
	barrier(t, sub)
	if ds, _ := rec.snapshot(); len(ds) != 1 {
		t.Fatalf("%d deliveries, want 1", len(ds))
	}
	// The seed counts a note to self as unread; a send reads everything
	// before it, so a note to self is never unread in chatd.
	page, err := f.s.History(f.ctx, "23", "23", 0, 0)
	if err != nil || page.Unread != 0 || page.Read != 2 || page.PeerRead != 2 {
		t.Fatalf("History = %+v, %v; want unread 0, read 2, peer read 2", page, err)
	}
	wantSeqs(t, page.Messages, 2, 1)
	if un, err := f.s.Unread(f.ctx, "23"); err != nil || len(un) != 0 {
		t.Fatalf("Unread(23) = %v, %v; want none", un, err)
	}
}

// TestCloseEndsThePipeline: after Close no pipeline runs, and a send
// fails instead of waiting.
func TestCloseEndsThePipeline(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	if _, _, err := f.s.Send(t.Context(), chat.SendRequest{From: "23", To: "43", Text: "before"}); err != nil {
		t.Fatal(err)
	}
	f.s.Close()
	f.s.Close() // twice is fine
	if _, _, err := f.s.Send(t.Context(), chat.SendRequest{From: "23", To: "43", Text: "after"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("send after Close: %v, want ErrClosed", err)
	}
	closed := New(f.r.Client, Config{Prefix: f.r.Prefix})
	closed.Close() // never sent: nothing to wait for
	if _, _, err := closed.Send(t.Context(), chat.SendRequest{From: "23", To: "43", Text: "x"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("send on a Store closed before its first send: %v, want ErrClosed", err)
	}
}
