package store

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
)

// seedElement is a list element as the seed's msgsend writes it.
func seedElement(from, to, text string) string {
	return fmt.Sprintf(`{"fromid": %s, "toid": %s, "msg": %q, "time": 1732567890.5}`,
		string(appendID(nil, from)), string(appendID(nil, to)), text)
}

// seedSend does what the seed's msgsend does (its presence stub says
// everyone is offline): LPUSH the element and count it for the recipient.
func (f *fixture) seedSend(t testing.TB, from, to, text string) {
	t.Helper()
	conv := chat.ConvKey(from, to)
	f.lpush(t, conv, seedElement(from, to, text))
	if err := f.r.Client.HIncrBy(f.ctx, f.k.unread(to), conv, 1).Err(); err != nil {
		t.Fatalf("HINCRBY %s %s: %v", to, conv, err)
	}
}

// state is what Unread, Inbox and History say about one user's side of a
// conversation.
type state struct{ unread, read, peerRead int64 }

// views fails unless Unread, Inbox and History agree on user's side of the
// conversation with peer, and returns it.
func (f *fixture) views(t testing.TB, user, peer string) state {
	t.Helper()
	page, err := f.s.History(f.ctx, user, peer, 0, 1)
	if err != nil {
		t.Fatalf("History(%s, %s): %v", user, peer, err)
	}
	got := state{page.Unread, page.Read, page.PeerRead}
	un, err := f.s.Unread(f.ctx, user)
	if err != nil {
		t.Fatalf("Unread(%s): %v", user, err)
	}
	if un[peer] != got.unread {
		t.Fatalf("Unread(%s)[%s] = %d, History says %d", user, peer, un[peer], got.unread)
	}
	convs, _, err := f.s.Inbox(f.ctx, user, chat.MaxInboxSize)
	if err != nil {
		t.Fatalf("Inbox(%s): %v", user, err)
	}
	for _, c := range convs {
		if c.With != peer {
			continue
		}
		if in := (state{c.Unread, c.Read, c.PeerRead}); in != got {
			t.Fatalf("Inbox(%s) says %+v about %s, History %+v", user, in, peer, got)
		}
		return got
	}
	if got.unread > 0 {
		t.Fatalf("Inbox(%s) does not list %s, which has %d unread", user, peer, got.unread)
	}
	return got
}

// wantState fails unless user's side of the conversation with peer is want,
// the same in Unread, Inbox and History.
func (f *fixture) wantState(t testing.TB, user, peer string, want state) {
	t.Helper()
	if got := f.views(t, user, peer); got != want {
		t.Fatalf("%s with %s: unread %d read %d peer read %d; want %d, %d, %d",
			user, peer, got.unread, got.read, got.peerRead, want.unread, want.read, want.peerRead)
	}
}

// TestUnreadCountsLiveDeliveries: a message delivered live is unread until
// read, wherever it is asked, and the seed's count keeps the seed's meaning.
func TestUnreadCountsLiveDeliveries(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.connect(t, "43", "r1 c1", time.Minute)
	f.send(t, "23", "43", "one")
	f.send(t, "23", "43", "two")
	f.wantSeed(t, "43", "43-23", "") // an online recipient
	f.wantState(t, "43", "23", state{unread: 2, read: 0, peerRead: 2})
	f.wantState(t, "23", "43", state{unread: 0, read: 2, peerRead: 0})

	// Offline now: the seed's count starts, chatd's goes on.
	f.disconnect(t, "43", "r1 c1")
	f.send(t, "23", "43", "three")
	f.wantSeed(t, "43", "43-23", "1")
	f.wantState(t, "43", "23", state{unread: 3, read: 0, peerRead: 3})

	st, err := f.s.MarkRead(f.ctx, "43", "23", 0, "")
	if err != nil || st != (chat.ReadState{Last: 3, Read: 3}) {
		t.Fatalf("MarkRead = %+v, %v; want last 3, read 3, unread 0", st, err)
	}
	f.wantSeed(t, "43", "43-23", "0") // after a read
	f.wantState(t, "43", "23", state{unread: 0, read: 3, peerRead: 3})
	f.wantState(t, "23", "43", state{unread: 0, read: 3, peerRead: 3})
}

// TestSendMovesTheSendersPosition: a send reads everything before it.
func TestSendMovesTheSendersPosition(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	for range 3 {
		f.send(t, "23", "43", "hi")
	}
	f.wantState(t, "43", "23", state{unread: 3, read: 0, peerRead: 3})
	f.send(t, "43", "23", "back")
	f.wantState(t, "43", "23", state{unread: 0, read: 4, peerRead: 3})
	f.wantState(t, "23", "43", state{unread: 1, read: 3, peerRead: 4})
	f.wantSeed(t, "43", "43-23", "3") // a send is no read for the seed
}

func TestMarkReadMovesForwardOnly(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.fill(t, 5)
	for _, tt := range []struct {
		seq  int64
		want chat.ReadState
		seed string // the seed's count afterwards
	}{
		{2, chat.ReadState{Last: 5, Read: 2, Unread: 3}, "3"},
		{1, chat.ReadState{Last: 5, Read: 2, Unread: 3}, "3"}, // never back
		{2, chat.ReadState{Last: 5, Read: 2, Unread: 3}, "3"},
		{4, chat.ReadState{Last: 5, Read: 4, Unread: 1}, "1"},
		{99, chat.ReadState{Last: 5, Read: 5, Unread: 0}, "0"}, // at most the newest
		{3, chat.ReadState{Last: 5, Read: 5, Unread: 0}, "0"},
		{0, chat.ReadState{Last: 5, Read: 5, Unread: 0}, "0"},
	} {
		st, err := f.s.MarkRead(f.ctx, "43", "23", tt.seq, "")
		if err != nil || st != tt.want {
			t.Fatalf("MarkRead(seq %d) = %+v, %v; want %+v", tt.seq, st, err, tt.want)
		}
		f.wantSeed(t, "43", "43-23", tt.seed)
		f.wantState(t, "43", "23", state{unread: tt.want.Unread, read: tt.want.Read, peerRead: 5})
		f.wantState(t, "23", "43", state{unread: 0, read: 5, peerRead: tt.want.Read})
	}
	_, err := f.s.MarkRead(f.ctx, "43", "23", -1, "")
	mustErr(t, err, chat.ErrInvalid, "MarkRead(seq -1)")

	if f.cluster() {
		return // the rest is about the seed's hash, which the Redis Cluster layout does not keep
	}
	// A partial read never raises the seed's count, and skips junk in it.
	f.send(t, "23", "43", "m6")
	f.send(t, "23", "43", "m7")
	f.hset(t, "43", "43-23", "1")
	if _, err := f.s.MarkRead(f.ctx, "43", "23", 6, ""); err != nil {
		t.Fatal(err)
	}
	if got := f.unreadField(t, "43", "43-23"); got != "1" {
		t.Fatalf("the seed's count = %q, want 1 (one left unread)", got)
	}
	f.hset(t, "43", "43-23", "junk")
	if _, err := f.s.MarkRead(f.ctx, "43", "23", 0, ""); err != nil {
		t.Fatal(err)
	}
	if got := f.unreadField(t, "43", "43-23"); got != "0" {
		t.Fatalf("the seed's count = %q, want 0 after reading everything", got)
	}
}

// TestMarkReadDeliveries: the receipt goes to both users' replicas, the new
// count to the reader's only, both without the reader's own socket.
func TestMarkReadDeliveries(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	sub1, rec1 := f.subscribe(t, "r1")
	sub2, rec2 := f.subscribe(t, "r2")
	sub3, rec3 := f.subscribe(t, "r3")
	f.connect(t, "43", "r1 a", time.Minute)
	f.connect(t, "43", "r2 b", time.Minute)
	f.connect(t, "23", "r3 c", time.Minute)
	f.send(t, "23", "43", "one")
	f.send(t, "23", "43", "two")
	f.send(t, "23", "43", "three")
	for _, rec := range []*recorder{rec1, rec2, rec3} {
		rec.waitDeliveries(t, 3)
	}
	if _, err := f.s.MarkRead(f.ctx, "43", "23", 2, "r1 a"); err != nil {
		t.Fatal(err)
	}
	receipt := chat.Delivery{Kind: chat.KindReceipt, Origin: "r1 a", Users: []string{"23", "43"}, By: "43", With: "23", Read: 2}
	badge := chat.Delivery{Kind: chat.KindUnread, Origin: "r1 a", Users: []string{"43"}, With: "23", Read: 2, Unread: 1}
	for _, tt := range []struct {
		name   string
		sub    *Subscriber
		rec    *recorder
		frames []chat.Delivery
	}{
		{"r1", sub1, rec1, []chat.Delivery{receipt, badge}},
		{"r2", sub2, rec2, []chat.Delivery{receipt, badge}},
		{"r3", sub3, rec3, []chat.Delivery{receipt}},
	} {
		tt.rec.waitDeliveries(t, 3+len(tt.frames))
		barrier(t, tt.sub)
		ds, _ := tt.rec.snapshot()
		if len(ds) != 3+len(tt.frames) {
			t.Fatalf("%s got %d deliveries, want %d", tt.name, len(ds), 3+len(tt.frames))
		}
		for i, want := range tt.frames {
			d := ds[3+i]
			if !reflect.DeepEqual(d, want) {
				t.Fatalf("%s delivery %d = %+v, want %+v", tt.name, i, d, want)
			}
		}
	}
}

// TestReadPositionsExactUnderConcurrency: sends and reads of both users
// racing end with each user's position at the later of its newest read and
// its newest send, and the count is the peer's messages after it.
func TestReadPositionsExactUnderConcurrency(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	users := [2]string{"23", "43"}
	const senders, each, reads = 3, 30, 40
	var mu sync.Mutex
	newest := map[string]int64{} // the highest position a user's own operations reported
	note := func(user string, pos int64) {
		mu.Lock()
		newest[user] = max(newest[user], pos)
		mu.Unlock()
	}
	errs := make(chan error, 2*senders*each+2*reads)
	var wg sync.WaitGroup
	for ui, user := range users {
		peer := users[1-ui]
		for g := range senders {
			wg.Go(func() {
				for i := range each {
					m, _, err := f.s.Send(f.ctx, chat.SendRequest{From: user, To: peer, Text: fmt.Sprintf("%s %d-%d", user, g, i)})
					if err != nil {
						errs <- err
						return
					}
					note(user, m.Seq)
				}
			})
		}
		wg.Go(func() {
			for i := range reads {
				seq := int64(0)
				if i%2 == 1 {
					seq = rand.Int64N(2*senders*each) + 1
				}
				st, err := f.s.MarkRead(f.ctx, user, peer, seq, "")
				if err != nil {
					errs <- err
					return
				}
				if st.Unread != st.Last-st.Read || st.Read > st.Last || (seq == 0 || seq >= st.Last) && st.Read != st.Last {
					errs <- fmt.Errorf("MarkRead(%s, seq %d) = %+v", user, seq, st)
				}
				if st.Last > 0 && st.Read < min(seq, st.Last) {
					errs <- fmt.Errorf("MarkRead(%s, seq %d) = %+v: moved less than asked", user, seq, st)
				}
				note(user, st.Read)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	const total = 2 * senders * each
	page, err := f.s.History(f.ctx, "23", "43", 0, chat.MaxPageSize)
	if err != nil || len(page.Messages) != total {
		t.Fatalf("History = %d messages, %v; want %d", len(page.Messages), err, total)
	}
	for ui, user := range users {
		peer := users[1-ui]
		r := newest[user]
		got := f.views(t, user, peer)
		if got.read != r || got.unread != total-r {
			t.Fatalf("%s: read %d unread %d; want read %d (its newest send or read) and unread %d", user, got.read, got.unread, r, total-r)
		}
		if other := f.views(t, peer, user); other.peerRead != r {
			t.Fatalf("%s sees %s's position %d, want %d", peer, user, other.peerRead, r)
		}
		for _, m := range page.Messages {
			if m.Seq > r && m.From != peer {
				t.Fatalf("%s: message %d after its position %d is its own: it should have moved the position", user, m.Seq, r)
			}
		}
	}
}

// TestSeedWritesAfterChatd: elements the seed's msgsend pushes into a
// conversation with read positions count for the recipient and move the
// sender's position, before and after a chatd script accounts for them.
func TestSeedWritesAfterChatd(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.seedLayout(t)
	f.send(t, "23", "43", "chatd 1")
	f.send(t, "23", "43", "chatd 2")
	f.seedSend(t, "23", "43", "seed 3")
	f.wantState(t, "43", "23", state{unread: 3, read: 0, peerRead: 3})
	f.seedSend(t, "43", "23", "seed 4") // 43 answers through the seed
	f.wantState(t, "43", "23", state{unread: 0, read: 4, peerRead: 3})
	f.wantState(t, "23", "43", state{unread: 1, read: 3, peerRead: 4})
	f.seedSend(t, "23", "43", "seed 5")
	f.lpush(t, "43-23", "junk 6")
	f.wantState(t, "43", "23", state{unread: 2, read: 4, peerRead: 5})

	// A chatd script writes the positions it read; the views stay the same.
	f.send(t, "65", "43", "elsewhere")
	before := f.views(t, "23", "43")
	if _, err := f.s.MarkRead(f.ctx, "43", "23", 5, ""); err != nil {
		t.Fatal(err)
	}
	f.wantState(t, "43", "23", state{unread: 1, read: 5, peerRead: 5})
	if got := f.views(t, "23", "43"); got != (state{unread: 1, read: before.read, peerRead: 5}) {
		t.Fatalf("23's side = %+v, want as before %+v with 43 at 5", got, before)
	}
	h, err := f.r.Client.HGetAll(f.ctx, f.k.read("43-23")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"len": "6", "r:23": "5", "r:43": "5"}; !maps.Equal(h, want) {
		t.Fatalf("read hash = %v, want %v", h, want)
	}

	// String ids, as the seed writes them for ids that are not numbers.
	f.send(t, "bob", "alice", "chatd")
	f.seedSend(t, "alice", "bob", "seed")
	f.wantState(t, "bob", "alice", state{unread: 1, read: 1, peerRead: 2})
}

// TestSeedWritesLookedAtAreBounded: of the elements pushed past what chatd
// accounted for, only the newest 1000 are looked at for a sender.
func TestSeedWritesLookedAtAreBounded(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.seedLayout(t)
	f.send(t, "23", "43", "chatd")
	pipe := f.r.Client.Pipeline()
	pipe.LPush(f.ctx, f.k.conv("43-23"), seedElement("43", "23", "seed, 2"))
	for i := range 1000 {
		pipe.LPush(f.ctx, f.k.conv("43-23"), seedElement("23", "43", fmt.Sprint("seed ", i+3)))
	}
	if _, err := pipe.Exec(f.ctx); err != nil {
		t.Fatal(err)
	}
	// 43's answer at seq 2 is 1001st from the newest: not seen.
	f.wantState(t, "43", "23", state{unread: 1002 - 0, read: 0, peerRead: 1002})
	f.lpush(t, "43-23", seedElement("23", "43", "one more"))
	f.wantState(t, "43", "23", state{unread: 1003, read: 0, peerRead: 1003})
}

// TestSeedOnlyConversation: a conversation only the seed wrote shows the
// seed's counts: a read position is the length minus the user's count, or
// the user's newest message after that; the first chatd write starts from
// there.
func TestSeedOnlyConversation(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.seedLayout(t)
	// The seed's msgsend, three times: LPUSH and a count for the recipient.
	for i := range 3 {
		f.lpush(t, "77-23", seedElement("77", "23", fmt.Sprint("seed ", i+1)))
	}
	f.hset(t, "23", "77-23", "3")
	f.wantState(t, "23", "77", state{unread: 3, read: 0, peerRead: 3})
	f.wantState(t, "77", "23", state{unread: 0, read: 3, peerRead: 0})
	if convs, _, err := f.s.Inbox(f.ctx, "77", 0); err != nil || len(convs) != 0 {
		t.Fatalf("Inbox(77) = %+v, %v; want none: the seed writes no inbox index", convs, err)
	}
	if ks := f.keysUnder(t); !slices.Equal(ks, []string{"23", "77-23"}) {
		t.Fatalf("reading the seed's conversation wrote keys: %q", ks)
	}

	// The seed's msgread: the count goes to 0, and 77 sees it read.
	f.hset(t, "23", "77-23", "0")
	f.wantState(t, "77", "23", state{unread: 0, read: 3, peerRead: 3})
	f.wantState(t, "23", "77", state{unread: 0, read: 3, peerRead: 3})

	// Two more from the seed, then chatd: the positions go on from the seed's.
	f.lpush(t, "77-23", seedElement("77", "23", "seed 4"), seedElement("77", "23", "seed 5"))
	f.hset(t, "23", "77-23", "2")
	f.wantState(t, "23", "77", state{unread: 2, read: 3, peerRead: 5})
	f.send(t, "77", "23", "chatd 6")
	f.wantState(t, "23", "77", state{unread: 3, read: 3, peerRead: 6})
	if got := f.unreadField(t, "23", "77-23"); got != "3" {
		t.Fatalf("the seed's count = %q, want 3", got)
	}
	h, err := f.r.Client.HGetAll(f.ctx, f.k.read("77-23")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"len": "6", "r:23": "3", "r:77": "6"}; !maps.Equal(h, want) {
		t.Fatalf("read hash = %v, want %v", h, want)
	}

	// An answer through the seed reads what came before it, though the
	// seed's count of its sender stays.
	for i := range 3 {
		f.seedSend(t, "88", "23", fmt.Sprint("seed ", i+1))
	}
	f.seedSend(t, "23", "88", "answer")
	f.wantState(t, "23", "88", state{unread: 0, read: 4, peerRead: 3})
	f.wantState(t, "88", "23", state{unread: 1, read: 3, peerRead: 4})
	if got := f.unreadField(t, "23", "88-23"); got != "3" {
		t.Fatalf("the seed's count = %q, want 3", got)
	}
}

// TestUnreadIndex: the index that Unread reads names exactly the
// conversations with unread messages.
func TestUnreadIndex(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	members := func(user string) []string {
		t.Helper()
		m, err := f.r.Client.HKeys(f.ctx, f.unreadIndexKey(user)).Result()
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(m)
		return m
	}
	for i := range 5 {
		f.send(t, fmt.Sprint(100+i), "23", "hi")
	}
	f.send(t, "23", "23", "note to self")
	if got, want := members("23"), []string{"100-23", "101-23", "102-23", "103-23", "104-23"}; !slices.Equal(got, want) {
		t.Fatalf("index of 23 = %q, want %q", got, want)
	}
	if _, err := f.s.MarkRead(f.ctx, "23", "100", 0, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.MarkRead(f.ctx, "23", "101", 0, ""); err != nil {
		t.Fatal(err)
	}
	f.send(t, "23", "102", "answer")
	f.send(t, "101", "23", "again")
	if _, err := f.s.MarkRead(f.ctx, "23", "103", 1, ""); err != nil { // 1 of 1: all
		t.Fatal(err)
	}
	// On one Redis, 23's answer to 102 leaves its entry, now counting 0,
	// for Unread to remove: a send writes no index while both users chat.
	// (A cluster's send removes the sender's hint in the sender's slot.)
	want := []string{"101-23", "102-23", "104-23"}
	if f.cluster() {
		want = []string{"101-23", "104-23"}
	}
	if got := members("23"); !slices.Equal(got, want) {
		t.Fatalf("index of 23 = %q, want %q", got, want)
	}
	un, err := f.s.Unread(f.ctx, "23")
	if err != nil || !maps.Equal(un, map[string]int64{"101": 1, "104": 1}) {
		t.Fatalf("Unread(23) = %v, %v", un, err)
	}
	if got, want := members("23"), []string{"101-23", "104-23"}; !slices.Equal(got, want) {
		t.Fatalf("index of 23 after Unread = %q, want %q", got, want)
	}
	// Removed: the next message from 102 indexes it again.
	f.send(t, "102", "23", "and you?")
	if got, want := members("23"), []string{"101-23", "102-23", "104-23"}; !slices.Equal(got, want) {
		t.Fatalf("index of 23 after 102 wrote again = %q, want %q", got, want)
	}
	if un, err := f.s.Unread(f.ctx, "23"); err != nil || !maps.Equal(un, map[string]int64{"101": 1, "102": 1, "104": 1}) {
		t.Fatalf("Unread(23) after 102 wrote again = %v, %v", un, err)
	}
	// While both chat, sends write no index, and the counts stay exact.
	for i := range 5 {
		from, to := "23", "102"
		if i%2 == 1 {
			from, to = to, from
		}
		f.send(t, from, to, fmt.Sprint("turn ", i))
	}
	if un, err := f.s.Unread(f.ctx, "23"); err != nil || !maps.Equal(un, map[string]int64{"101": 1, "104": 1}) {
		t.Fatalf("Unread(23) after a chat with 102 = %v, %v", un, err)
	}
	if un, err := f.s.Unread(f.ctx, "102"); err != nil || !maps.Equal(un, map[string]int64{"23": 1}) {
		t.Fatalf("Unread(102) after a chat with 23 = %v, %v", un, err)
	}
	if got := members("102"); !slices.Equal(got, []string{"102-23"}) {
		t.Fatalf("index of 102 after 23 answered = %q, want [102-23]", got)
	}
	if _, err := f.s.MarkRead(f.ctx, "102", "23", 0, ""); err != nil {
		t.Fatal(err)
	}
	if got := members("102"); len(got) != 0 {
		t.Fatalf("index of 102 after its read = %q, want none", got)
	}
	if _, err := f.s.MarkRead(f.ctx, "23", "102", 0, ""); err != nil {
		t.Fatal(err)
	}
	if got, want := members("23"), []string{"101-23", "104-23"}; !slices.Equal(got, want) {
		t.Fatalf("index of 23 after reading 102 = %q, want %q", got, want)
	}
}

// TestReadKeepsASeedOnlyConversationInTheInbox: a conversation that only
// the seed's msgsend wrote has no inbox entries; reading it through chatd
// gives it some, so it stays in both users' inboxes, in its place.
func TestReadKeepsASeedOnlyConversationInTheInbox(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.seedLayout(t)
	f.lpush(t, "502-501", `{"fromid":501,"toid":502,"msg":"from the seed","time":1732567890.5}`)
	f.hset(t, "502", "502-501", "1")
	convs, _, err := f.s.Inbox(f.ctx, "502", 10)
	if err != nil || len(convs) != 1 || convs[0].Unread != 1 {
		t.Fatalf("inbox before the read = %+v, %v", convs, err)
	}
	if _, err := f.s.MarkRead(f.ctx, "502", "501", 0, ""); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"502", "501"} {
		convs, _, err := f.s.Inbox(f.ctx, u, 10)
		if err != nil || len(convs) != 1 || convs[0].Unread != 0 || convs[0].Last == nil || convs[0].Last.Text != "from the seed" {
			t.Fatalf("inbox of %s after the read = %+v, %v", u, convs, err)
		}
	}
	score, err := f.r.Client.ZScore(f.ctx, f.k.inbox("502"), "502-501").Result()
	if err != nil || score != 1732567890500 {
		t.Fatalf("inbox score = %v, %v; want the element's time in ms", score, err)
	}
	if v, _ := f.hget(t, f.k.unread("502"), "502-501"); v != "0" {
		t.Fatalf("seed count after the read = %q, want 0", v)
	}
}
