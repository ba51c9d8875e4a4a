package store

import (
	"encoding/json"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
)

func TestMarkRead(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	st, err := f.s.MarkRead(f.ctx, "43", "23", 0, "")
	if err != nil || st != (chat.ReadState{}) {
		t.Fatalf("MarkRead of an empty conversation = %+v, %v; want zero", st, err)
	}
	if ks := f.keysUnder(t); len(ks) != 0 {
		t.Fatalf("MarkRead of an empty conversation wrote keys %q", ks)
	}
	f.fill(t, 3)
	f.send(t, "65", "43", "other")
	st, err = f.s.MarkRead(f.ctx, "43", "23", 0, "r1 c1")
	if err != nil || st != (chat.ReadState{Last: 3, Read: 3, Unread: 0}) {
		t.Fatalf("MarkRead = %+v, %v; want last 3, read 3, unread 0", st, err)
	}
	f.wantSeed(t, "43", "43-23", "0")
	f.wantSeed(t, "43", "65-43", "1") // another conversation
	f.wantSeed(t, "23", "43-23", "")  // MarkRead by 43 leaves 23's count alone
	if n := f.llen(t, "43-23"); n != 3 {
		t.Fatalf("MarkRead changed the list: length %d", n)
	}
	for _, bad := range [][2]string{{"", "23"}, {"43", "2-3"}} {
		_, err := f.s.MarkRead(f.ctx, bad[0], bad[1], 0, "")
		mustErr(t, err, chat.ErrInvalid, "MarkRead "+bad[0]+" "+bad[1])
	}
}

func TestUnread(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.seedLayout(t)
	f.send(t, "23", "43", "a")
	f.send(t, "23", "43", "b")
	f.send(t, "alice", "43", "c")
	f.send(t, "65", "43", "d")
	if _, err := f.s.MarkRead(f.ctx, "43", "65", 0, ""); err != nil {
		t.Fatal(err)
	}
	// Junk the seed or an operator may have left in the hash.
	f.hset(t, "43", "junk", "5")
	f.hset(t, "43", "99-98", "7")     // not a conversation of 43
	f.hset(t, "43", "77-43", "abc")   // not a number
	f.hset(t, "43", "78-43", "-3")    // negative
	f.hset(t, "43", "79-43", "2.5")   // not an integer
	f.hset(t, "43", "43-a:b", "4")    // invalid peer
	f.hset(t, "43", "80-43", "4")     // no messages
	f.hset(t, "1000", "1000-43", "0") // the other user's count is not 43's
	for _, conv := range []string{"99-98", "77-43", "78-43", "79-43"} {
		f.lpush(t, conv, `{"fromid": 1, "toid": 43, "msg": "x", "time": 1.5}`)
	}
	// Conversations the seed wrote: the seed's count, at most the length.
	for i := range 12 {
		f.lpush(t, "1000-43", fmt.Sprintf(`{"fromid": 1000, "toid": 43, "msg": "s%d", "time": 1.5}`, i))
	}
	f.hset(t, "43", "1000-43", "12")
	f.lpush(t, "1001-43", `{"fromid": 1001, "toid": 43, "msg": "a", "time": 1.5}`, `{"fromid": 1001, "toid": 43, "msg": "b", "time": 1.5}`)
	f.hset(t, "43", "1001-43", "5")
	// A note to self the seed counted: its sender has read it.
	f.lpush(t, "43-43", `{"fromid": 43, "toid": 43, "msg": "note", "time": 1.5}`)
	f.hset(t, "43", "43-43", "1")

	got, err := f.s.Unread(f.ctx, "43")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"23": 2, "alice": 1, "1000": 12, "1001": 2}
	if !maps.Equal(got, want) {
		t.Fatalf("Unread(43) = %v, want %v", got, want)
	}
	got, err = f.s.Unread(f.ctx, "nobody")
	if err != nil || len(got) != 0 {
		t.Fatalf("Unread(nobody) = %v, %v; want empty", got, err)
	}
}

func TestInbox(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	step := func() { f.clock.Advance(time.Second) }

	step()
	f.send(t, "23", "43", "to 43")
	step()
	f.send(t, "alice", "23", "from alice 1")
	step()
	f.send(t, "alice", "23", "from alice 2")
	step()
	last65 := f.send(t, "65", "23", "from 65")
	step()
	last43 := f.send(t, "43", "23", "from 43")
	step()
	lastAlice := f.send(t, "23", "alice", "to alice")
	f.send(t, "99", "98", "not 23's")

	convs, more, err := f.s.Inbox(f.ctx, "23", 0)
	if err != nil {
		t.Fatal(err)
	}
	// 23's last send read everything before it in that conversation.
	want := []chat.Conversation{
		{With: "alice", Unread: 0, Read: 3, PeerRead: 2, Last: &lastAlice},
		{With: "43", Unread: 1, Read: 1, PeerRead: 2, Last: &last43},
		{With: "65", Unread: 1, Read: 0, PeerRead: 1, Last: &last65},
	}
	checkInbox(t, convs, want)
	if more {
		t.Fatal("more = true with every conversation listed")
	}
	if lastAlice.Seq != 3 || last43.Seq != 2 {
		t.Fatalf("last seqs %d, %d; want the list lengths 3, 2", lastAlice.Seq, last43.Seq)
	}

	// Limits.
	convs, more, err = f.s.Inbox(f.ctx, "23", 2)
	if err != nil {
		t.Fatal(err)
	}
	checkInbox(t, convs, want[:2])
	if !more {
		t.Fatal("limit 2 of 3: more = false")
	}
	convs, more, err = f.s.Inbox(f.ctx, "23", 3)
	if err != nil {
		t.Fatal(err)
	}
	checkInbox(t, convs, want)
	if more {
		t.Fatal("limit 3 of 3: more = true")
	}

	// Reading changes the counts, not the order; history reads nothing.
	if _, err := f.s.History(f.ctx, "23", "65", 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.MarkRead(f.ctx, "23", "43", 0, ""); err != nil {
		t.Fatal(err)
	}
	convs, _, err = f.s.Inbox(f.ctx, "23", 0)
	if err != nil {
		t.Fatal(err)
	}
	want[1].Unread, want[1].Read = 0, 2
	checkInbox(t, convs, want)

	// The other side sees the conversation too, with its own positions.
	convs, _, err = f.s.Inbox(f.ctx, "alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	checkInbox(t, convs, []chat.Conversation{{With: "23", Unread: 1, Read: 2, PeerRead: 3, Last: &lastAlice}})
	convs, _, err = f.s.Inbox(f.ctx, "43", 0)
	if err != nil {
		t.Fatal(err)
	}
	checkInbox(t, convs, []chat.Conversation{{With: "23", Unread: 0, Read: 2, PeerRead: 2, Last: &last43}})

	convs, more, err = f.s.Inbox(f.ctx, "nobody", 0)
	if err != nil || len(convs) != 0 || more {
		t.Fatalf("Inbox(nobody) = %+v, %v, %v", convs, more, err)
	}
	for _, tt := range []struct {
		user  string
		limit int
	}{{"23", 501}, {"23", -1}, {"2:3", 10}} {
		_, _, err := f.s.Inbox(f.ctx, tt.user, tt.limit)
		mustErr(t, err, chat.ErrInvalid, "Inbox "+tt.user)
	}
	if _, _, err := f.s.Inbox(f.ctx, "23", chat.MaxInboxSize); err != nil {
		t.Fatalf("limit %d: %v", chat.MaxInboxSize, err)
	}
}

func TestInboxSeedConversations(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.seedLayout(t)
	f.clock.Advance(-time.Hour)
	old := f.send(t, "43", "23", "chatd, an hour ago")
	f.clock.Advance(time.Hour)
	// Written by the seed's msgsend: LPUSH and HSET, no inbox index.
	now := float64(f.clock.Now().UnixMicro()) / 1e6
	f.lpush(t, "77-23",
		`{"fromid": 77, "toid": 23, "msg": "seed one", "time": 1732567890.5}`,
		`{"fromid": 77, "toid": 23, "msg": "seed \u4e8c", "time": `+jsonFloat(now)+`}`)
	f.hset(t, "23", "77-23", "2")
	// A seed conversation already read (count 0) has no index entry either;
	// it is not listed, and must not break the listing.
	f.lpush(t, "88-23", `{"fromid": 88, "toid": 23, "msg": "read", "time": 1.5}`)
	f.hset(t, "23", "88-23", "0")
	// Counts that are not above 0 (the seed writes none of these) list
	// nothing either.
	for i, junk := range []string{"-2", "abc", "1.5", ""} {
		conv := fmt.Sprintf("%d-23", 90+i)
		f.lpush(t, conv, fmt.Sprintf(`{"fromid": %d, "toid": 23, "msg": "junk count", "time": 1.5}`, 90+i))
		f.hset(t, "23", conv, junk)
	}

	convs, more, err := f.s.Inbox(f.ctx, "23", 0)
	if err != nil {
		t.Fatal(err)
	}
	seedLast := chat.Message{Conv: "77-23", Seq: 2, From: "77", To: "23", Text: "seed 二", Time: now}
	// The seed's conversation: the seed's counts give the positions (77 has
	// no count: it has read everything).
	checkInbox(t, convs, []chat.Conversation{
		{With: "77", Unread: 2, Read: 0, PeerRead: 2, Last: &seedLast},
		{With: "43", Unread: 1, Read: 0, PeerRead: 1, Last: &old},
	})
	if more {
		t.Fatal("more = true")
	}
	convs, more, err = f.s.Inbox(f.ctx, "23", 1)
	if err != nil {
		t.Fatal(err)
	}
	checkInbox(t, convs, []chat.Conversation{{With: "77", Unread: 2, Read: 0, PeerRead: 2, Last: &seedLast}})
	if !more {
		t.Fatal("limit 1 of 2: more = false")
	}
}

// TestInboxIgnoresJunkUnreadFields: Unread ignores hash fields that name no
// conversation of the user; Inbox must too, whatever key such a field names
// (here another user's unread hash and a chatd sorted set).
func TestInboxIgnoresJunkUnreadFields(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.seedLayout(t)
	last := f.send(t, "43", "23", "hi")
	f.send(t, "99", "65", "makes the hash 65 exist")
	f.hset(t, "23", "junk", "3")          // names no key
	f.hset(t, "23", "99-98", "3")         // names no key
	f.hset(t, "23", "65", "3")            // names the hash of user 65
	f.hset(t, "23", "chat:inbox:23", "3") // names a sorted set
	convs, _, err := f.s.Inbox(f.ctx, "23", 0)
	if err != nil {
		t.Fatalf("Inbox with junk fields in the unread hash: %v", err)
	}
	checkInbox(t, convs, []chat.Conversation{{With: "43", Unread: 1, PeerRead: 1, Last: &last}})
}

func TestInboxMalformedLast(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.send(t, "43", "23", "hi")
	f.lpush(t, "43-23", "junk")
	convs, _, err := f.s.Inbox(f.ctx, "23", 0)
	if err != nil {
		t.Fatal(err)
	}
	// A malformed element holds a seq, and it is not 23's own: it counts.
	checkInbox(t, convs, []chat.Conversation{{With: "43", Unread: 2, Read: 0, PeerRead: 1, Last: nil}})
	if _, err := json.Marshal(convs); err != nil {
		t.Fatalf("inbox cannot be encoded: %v", err)
	}
}

func jsonFloat(f float64) string {
	b, _ := json.Marshal(f)
	return string(b)
}

func checkInbox(t testing.TB, got, want []chat.Conversation) {
	t.Helper()
	show := func(cs []chat.Conversation) string {
		b, _ := json.Marshal(cs)
		return string(b)
	}
	if len(got) != len(want) {
		t.Fatalf("inbox =\n%s\nwant\n%s", show(got), show(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		same := g.With == w.With && g.Unread == w.Unread && g.Read == w.Read && g.PeerRead == w.PeerRead &&
			(g.Last == nil) == (w.Last == nil)
		if same && g.Last != nil {
			same = *g.Last == *w.Last
		}
		if !same {
			t.Fatalf("inbox =\n%s\nwant\n%s", show(got), show(want))
		}
	}
}
