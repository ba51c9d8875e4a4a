package store

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/chatd/chatd/chat"
)

// fill sends n messages 23→43 with texts "m1".."mn" and returns the conversation.
func (f *fixture) fill(t testing.TB, n int) string {
	t.Helper()
	for i := 1; i <= n; i++ {
		if m := f.send(t, "23", "43", fmt.Sprintf("m%d", i)); m.Seq != int64(i) {
			t.Fatalf("fill: message %d got seq %d", i, m.Seq)
		}
	}
	return "43-23"
}

// checkTexts fails unless each message's text is "m<seq>".
func checkTexts(t testing.TB, msgs []chat.Message) {
	t.Helper()
	for _, m := range msgs {
		if want := fmt.Sprintf("m%d", m.Seq); m.Text != want || m.From != "23" || m.To != "43" || m.Conv != "43-23" {
			t.Fatalf("message %+v, want text %q from 23 to 43 in 43-23", m, want)
		}
	}
}

func TestHistoryPaging(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.fill(t, 120)
	tests := []struct {
		name   string
		before int64
		limit  int
		want   []int64
		more   bool
	}{
		{"newest, default limit 50", 0, 0, seqRange(120, 71), true},
		{"second page", 71, 0, seqRange(70, 21), true},
		{"last page, short", 21, 0, seqRange(20, 1), false},
		{"exactly limit left", 51, 50, seqRange(50, 1), false},
		{"one more than limit left", 52, 50, seqRange(51, 2), true},
		{"limit 1", 0, 1, []int64{120}, true},
		{"limit 1 at the oldest", 2, 1, []int64{1}, false},
		{"before 1: nothing older", 1, 50, nil, false},
		{"before the newest", 120, 10, seqRange(119, 110), true},
		{"before just past the newest", 121, 10, seqRange(120, 111), true},
		{"before far beyond the length", 100000, 10, seqRange(120, 111), true},
		{"max limit covers everything", 0, 200, seqRange(120, 1), false},
		{"limit exactly the length", 0, 120, seqRange(120, 1), false},
		{"limit one less than the length", 0, 119, seqRange(120, 2), true},
	}
	for _, tt := range tests {
		page, err := f.s.History(f.ctx, "23", "43", tt.before, tt.limit)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		got := make([]int64, len(page.Messages))
		for i, m := range page.Messages {
			got[i] = m.Seq
		}
		if !slices.Equal(got, tt.want) || page.More != tt.more {
			t.Errorf("%s: History(before %d, limit %d) = seqs %v more %v; want %v more %v",
				tt.name, tt.before, tt.limit, got, page.More, tt.want, tt.more)
		}
		checkTexts(t, page.Messages)
	}
	// Either participant reads the same conversation.
	a, err := f.s.History(f.ctx, "43", "23", 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	wantSeqs(t, a.Messages, 120, 119, 118)
}

func TestHistoryEmptyAndInvalid(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	page, err := f.s.History(f.ctx, "23", "43", 0, 0)
	if err != nil || len(page.Messages) != 0 || page.More || page.Unread != 0 {
		t.Fatalf("empty conversation = %+v, %v", page, err)
	}
	for _, tt := range []struct {
		name       string
		user, peer string
		before     int64
		limit      int
	}{
		{"limit 201", "23", "43", 0, 201},
		{"limit -1", "23", "43", 0, -1},
		{"before -1", "23", "43", -1, 50},
		{"invalid user", "2:3", "43", 0, 50},
		{"invalid peer", "23", "", 0, 50},
	} {
		_, err := f.s.History(f.ctx, tt.user, tt.peer, tt.before, tt.limit)
		mustErr(t, err, chat.ErrInvalid, tt.name)
	}
	if _, err := f.s.History(f.ctx, "23", "43", 0, chat.MaxPageSize); err != nil {
		t.Fatalf("limit %d: %v", chat.MaxPageSize, err)
	}
	if ks := f.keysUnder(t); len(ks) != 0 {
		t.Fatalf("History wrote keys %q", ks)
	}
}

// TestHistoryMarksNothingRead: History reports both read positions and the
// reader's unread count and changes neither them nor the seed's counts.
func TestHistoryMarksNothingRead(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.fill(t, 3)
	before := f.dump(t)

	// The sender has read its own messages; the recipient has not.
	page, err := f.s.History(f.ctx, "23", "43", 0, 0)
	if err != nil || page.Unread != 0 || page.Read != 3 || page.PeerRead != 0 {
		t.Fatalf("sender's History = unread %d read %d peer read %d, %v; want 0, 3, 0",
			page.Unread, page.Read, page.PeerRead, err)
	}
	// The recipient's count, on any page, again and again.
	for range 2 {
		page, err = f.s.History(f.ctx, "43", "23", 2, 1)
		if err != nil || page.Unread != 3 || page.Read != 0 || page.PeerRead != 3 {
			t.Fatalf("recipient's History = unread %d read %d peer read %d, %v; want 3, 0, 3",
				page.Unread, page.Read, page.PeerRead, err)
		}
		wantSeqs(t, page.Messages, 1)
	}
	if after := f.dump(t); !maps.Equal(after, before) {
		t.Fatalf("History wrote to Redis:\nbefore %v\nafter  %v", before, after)
	}
	f.wantSeed(t, "43", "43-23", "3")
}

func TestHistorySkipsMalformed(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.send(t, "23", "43", "m1")
	f.send(t, "23", "43", "m2")
	f.lpush(t, "43-23", `not json`) // seq 3
	f.send(t, "23", "43", "m4")
	f.lpush(t, "43-23", `{"fromid":1}`) // seq 5
	if m := f.send(t, "23", "43", "m6"); m.Seq != 6 {
		t.Fatalf("send after junk got seq %d, want 6", m.Seq)
	}

	page, err := f.s.History(f.ctx, "43", "23", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	wantSeqs(t, page.Messages, 6, 4, 2, 1)
	checkTexts(t, page.Messages)
	if page.More {
		t.Fatal("more = true on the whole conversation")
	}
	if !strings.Contains(f.log.String(), "skipping malformed message") {
		t.Fatalf("no warning logged; log:\n%s", f.log)
	}

	// Junk still holds its seq, so limits and cursors count it.
	page, err = f.s.History(f.ctx, "43", "23", 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	wantSeqs(t, page.Messages, 6, 4)
	if !page.More {
		t.Fatal("more = false with seqs 3..1 left")
	}
	page, err = f.s.History(f.ctx, "43", "23", 4, 2)
	if err != nil {
		t.Fatal(err)
	}
	wantSeqs(t, page.Messages, 2)
	if !page.More {
		t.Fatal("more = false with seq 1 left")
	}
	page, err = f.s.History(f.ctx, "43", "23", 6, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 0 || !page.More {
		t.Fatalf("page of only junk = %+v, want empty with more", page)
	}
}

// TestHistoryNonFiniteTimeIsSkipped: an element whose time is the string
// "NaN" is junk like any other, and the page stays encodable as JSON.
func TestHistoryNonFiniteTimeIsSkipped(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.send(t, "23", "43", "m1")
	f.lpush(t, "43-23", `{"fromid":23,"toid":43,"msg":"junk","time":"NaN"}`)
	f.send(t, "23", "43", "m3")
	page, err := f.s.History(f.ctx, "43", "23", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := json.Marshal(page.Messages); err != nil {
		t.Errorf("the page cannot be sent to a client: %v", err)
	}
	wantSeqs(t, page.Messages, 3, 1)
}

func TestHistorySeedElements(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	// As the seed's Python writes them: json.dumps defaults (", " and ": ",
	// non-ASCII as \u escapes, astral runes as surrogate pairs), ids as
	// numbers, time.time() as a float; and one with raw UTF-8.
	f.lpush(t, "43-23",
		`{"fromid": 23, "toid": 43, "msg": "\u4f60\u597d\uff0c\u4e16\u754c", "time": 1732567890.1234567}`,
		`{"fromid": 43, "toid": 23, "msg": "\ud83c\udf89\ud83d\udc4d", "time": 1732567891.5}`,
		`{"fromid": 23, "toid": 43, "msg": "raw 你好 🎉", "time": 1732567892.0}`,
		`{"fromid": 23, "toid": 43, "msg": "q\"b\\n\n", "time": 1732567893.25}`,
	)
	if !f.cluster() {
		f.hset(t, "43", "43-23", "3")
	}
	// The seed counts 3 for 43, but 43 wrote seq 2: it has read seq 1.
	// (Without the seed's hash, on a Redis Cluster, 43 starts from 0, and
	// its message at seq 2 read seq 1 all the same.)
	page, err := f.s.History(f.ctx, "43", "23", 0, 0)
	if err != nil || page.Unread != 2 || page.Read != 2 || page.PeerRead != 4 {
		t.Fatalf("History of the seed's conversation = unread %d read %d peer read %d, %v; want 2, 2, 4",
			page.Unread, page.Read, page.PeerRead, err)
	}
	m := f.send(t, "43", "23", "chatd") // continues the seed's numbering
	if m.Seq != 5 {
		t.Fatalf("chatd's send after 4 seed messages got seq %d, want 5", m.Seq)
	}
	page, err = f.s.History(f.ctx, "43", "23", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []chat.Message{
		m,
		{Conv: "43-23", Seq: 4, From: "23", To: "43", Text: "q\"b\\n\n", Time: 1732567893.25},
		{Conv: "43-23", Seq: 3, From: "23", To: "43", Text: "raw 你好 🎉", Time: 1732567892},
		{Conv: "43-23", Seq: 2, From: "43", To: "23", Text: "🎉👍", Time: 1732567891.5},
		{Conv: "43-23", Seq: 1, From: "23", To: "43", Text: "你好，世界", Time: 1732567890.1234567},
	}
	if !slices.Equal(page.Messages, want) {
		t.Fatalf("History =\n%+v\nwant\n%+v", page.Messages, want)
	}
	// 43's send read everything before it; 23 is where the seed's count put it.
	if page.Unread != 0 || page.Read != 5 || page.PeerRead != 4 {
		t.Fatalf("after 43's send: unread %d read %d peer read %d; want 0, 5, 4", page.Unread, page.Read, page.PeerRead)
	}
	f.wantSeed(t, "43", "43-23", "3") // a send is no read
}

func TestHistoryStringIDs(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.lpush(t, "bob-alice", `{"fromid": "alice", "toid": "bob", "msg": "from the seed", "time": 1.5}`)
	m := f.send(t, "bob", "alice", "from chatd")
	page, err := f.s.History(f.ctx, "alice", "bob", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []chat.Message{m, {Conv: "bob-alice", Seq: 1, From: "alice", To: "bob", Text: "from the seed", Time: 1.5}}
	if !slices.Equal(page.Messages, want) {
		t.Fatalf("History = %+v, want %+v", page.Messages, want)
	}
	if page.Unread != 1 || page.Read != 1 || page.PeerRead != 2 {
		t.Fatalf("alice's unread %d read %d peer read %d, want 1, 1, 2", page.Unread, page.Read, page.PeerRead)
	}
}

// TestHistoryPagingWhileSending pages back from a fixed point while writers
// keep sending: seqs count from the oldest, so new messages shift nothing.
func TestHistoryPagingWhileSending(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	const initial, writers, each = 300, 4, 50
	f.fill(t, initial)

	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	start := make(chan struct{})
	for w := range writers {
		wg.Go(func() {
			<-start
			for i := range each {
				if _, _, err := f.s.Send(f.ctx, chat.SendRequest{From: "43", To: "23", Text: fmt.Sprintf("new %d-%d", w, i)}); err != nil {
					errs <- err
				}
			}
		})
	}
	seen := map[int64]int{}
	var order []int64
	page, err := f.s.History(f.ctx, "23", "43", initial+1, 37)
	close(start)
	for ; err == nil; page, err = f.s.History(f.ctx, "23", "43", order[len(order)-1], 37) {
		checkTexts(t, page.Messages)
		for _, m := range page.Messages {
			seen[m.Seq]++
			order = append(order, m.Seq)
		}
		if !page.More {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if !slices.Equal(order, seqRange(initial, 1)) {
		t.Fatalf("paging back from %d while sending read %d messages, not exactly %d..1 in order", initial+1, len(order), initial)
	}

	// Catching up from the newest down to what was seen completes 1..N.
	total := int64(initial + writers*each)
	var newer []int64
	before := int64(0)
	for {
		page, err := f.s.History(f.ctx, "23", "43", before, 50)
		if err != nil {
			t.Fatal(err)
		}
		done := false
		for _, m := range page.Messages {
			if m.Seq <= initial {
				done = true
				break
			}
			if !strings.HasPrefix(m.Text, "new ") {
				t.Fatalf("seq %d = %q, want a message sent during paging", m.Seq, m.Text)
			}
			newer = append(newer, m.Seq)
			before = m.Seq
		}
		if done || !page.More {
			break
		}
	}
	if !slices.Equal(newer, seqRange(total, initial+1)) {
		t.Fatalf("catching up read %d messages, not exactly %d..%d", len(newer), total, initial+1)
	}
	for s, n := range seen {
		if n != 1 {
			t.Fatalf("seq %d read %d times", s, n)
		}
	}
}
