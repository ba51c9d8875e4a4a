package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// pyJSONString quotes s as Python's json.dumps does by default (every
// character beyond ASCII as a \u escape), so that elements written here are
// byte for byte what the seed's msgsend writes.
func pyJSONString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r >= 0x7f:
			for _, u := range utf16.Encode([]rune{r}) {
				fmt.Fprintf(&b, `\u%04x`, u)
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// migrationSource is a single Redis holding a data set in the seed's
// layout and chatd's, and the single-node Store over it.
type migrationSource struct {
	r     *redistest.Redis
	s     *Store
	k     keys
	clock *clock
	ctx   context.Context
}

// seedSend stores a message as the seed's msgsend does: an LPUSH of its
// JSON (numeric ids), then, when bump is set (the seed thought the
// recipient offline), one more in the recipient's unread hash.
func (m *migrationSource) seedSend(t testing.TB, from, to, text string, bump bool) {
	t.Helper()
	conv := chat.ConvKey(from, to)
	now := m.clock.Now()
	m.clock.Advance(time.Second)
	el := fmt.Sprintf(`{"fromid": %s, "toid": %s, "msg": %s, "time": %s}`, from, to, pyJSONString(text),
		strconv.FormatFloat(float64(now.UnixMicro())/1e6, 'f', -1, 64))
	if err := m.r.Client.LPush(m.ctx, m.k.conv(conv), el).Err(); err != nil {
		t.Fatal(err)
	}
	if bump {
		if err := m.r.Client.HIncrBy(m.ctx, m.k.unread(to), conv, 1).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// send stores a message through chatd's single-node Store.
func (m *migrationSource) send(t testing.TB, from, to, text string) {
	t.Helper()
	m.clock.Advance(time.Second)
	if _, _, err := m.s.Send(m.ctx, chat.SendRequest{From: from, To: to, Text: text}); err != nil {
		t.Fatal(err)
	}
}

func (m *migrationSource) read(t testing.TB, user, peer string, seq int64) {
	t.Helper()
	if _, err := m.s.MarkRead(m.ctx, user, peer, seq, ""); err != nil {
		t.Fatal(err)
	}
}

// Users of the migration data set.
const (
	mu23, mu43, mu65, mu7 = "23", "43", "65", "7"
	muAlice, muBob        = "alice", "bob.x@y"
)

var migrationUsers = []string{mu23, mu43, mu65, mu7, muAlice, muBob}

// newMigrationSource writes the data set: conversations only the seed
// wrote (one of them read with the seed's msgread, one of 2500 messages),
// conversations only chatd wrote, with reads, one the seed wrote into
// after chatd (with and without bumping the recipient's count), a
// conversation of a user with itself, non-ASCII text, idempotency records,
// presence, and keys that are not conversations. It returns the source and
// the number of conversations in it.
func newMigrationSource(t *testing.T) (*migrationSource, int64) {
	t.Helper()
	r := redistest.NewSingle(t)
	c := newClock()
	m := &migrationSource{r: r, k: keys{prefix: r.Prefix}, clock: c, ctx: context.Background(),
		s: New(r.Client, Config{Prefix: r.Prefix, Now: c.Now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})}
	t.Cleanup(m.s.Close)

	// Only the seed: 43-23, with counts for both users.
	m.seedSend(t, mu23, mu43, "你好，世界", true)
	m.seedSend(t, mu43, mu23, "hi 🎉 \"quoted\"\nnew line", true)
	m.seedSend(t, mu23, mu43, "third", true)
	m.seedSend(t, mu23, mu43, "fourth", true)
	// Only the seed, then read with its msgread (the count set to 0).
	m.seedSend(t, mu7, mu43, "read by the seed", true)
	m.seedSend(t, mu7, mu43, "this one too", true)
	if err := r.Client.HSet(m.ctx, m.k.unread(mu43), chat.ConvKey(mu7, mu43), 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Only the seed, long: more than two pages of 1000.
	pipe := r.Client.Pipeline()
	for i := range 2500 {
		from, to := mu7, mu65
		if i%3 == 0 {
			from, to = mu65, mu7
		}
		now := c.Now()
		c.Advance(time.Millisecond)
		pipe.LPush(m.ctx, m.k.conv(chat.ConvKey(from, to)), fmt.Sprintf(`{"fromid": %s, "toid": %s, "msg": %s, "time": %s}`,
			from, to, pyJSONString(fmt.Sprintf("message %d · №%d", i, i)), strconv.FormatFloat(float64(now.UnixMicro())/1e6, 'f', -1, 64)))
		if i >= 2400 {
			pipe.HIncrBy(m.ctx, m.k.unread(to), chat.ConvKey(from, to), 1)
		}
	}
	if _, err := pipe.Exec(m.ctx); err != nil {
		t.Fatal(err)
	}

	// Only chatd: 65-23, read partly.
	m.send(t, mu23, mu65, "salut, ça va ?")
	m.send(t, mu23, mu65, "второе")
	m.send(t, mu65, mu23, "ok")
	m.send(t, mu23, mu65, "👍🏽")
	m.read(t, mu65, mu23, 3)
	m.send(t, mu23, mu65, "and one more")
	// Only chatd, between ids that are not numbers: bob.x@y-alice, read.
	m.send(t, muAlice, muBob, "naïve café ✓")
	m.send(t, muBob, muAlice, "<b>not html</b> & more")
	m.send(t, muAlice, muBob, "third")
	m.read(t, muBob, muAlice, 0)
	// A number and a name: alice-23, with a send id (an idempotency record).
	m.clock.Advance(time.Second)
	if _, _, err := m.s.Send(m.ctx, chat.SendRequest{From: mu23, To: muAlice, Text: "with an id", ClientID: "c1"}); err != nil {
		t.Fatal(err)
	}
	m.send(t, muAlice, mu23, "back")
	m.send(t, mu23, muAlice, "again")
	// A user with itself.
	m.send(t, mu43, mu43, "note to self")
	m.send(t, mu43, mu43, "another")
	m.send(t, mu43, mu43, "and a third")

	// The seed, then chatd, then the seed again: 65-43.
	m.seedSend(t, mu43, mu65, "from the seed", true)
	m.seedSend(t, mu43, mu65, "from the seed, 2", true)
	m.send(t, mu65, mu43, "from chatd") // writes the read hash from the seed's counts
	m.seedSend(t, mu43, mu65, "the seed after chatd", true)
	m.seedSend(t, mu65, mu43, "the seed's answer", true)
	// chatd, read, then the seed without a count (it thought 7 online):
	// unread in 7's inbox, not in 7's ready (PROTOCOL.md section 4).
	m.send(t, mu23, mu7, "hello 7")
	m.send(t, mu23, mu7, "hello again")
	m.read(t, mu7, mu23, 0)
	m.seedSend(t, mu23, mu7, "the seed, 7 online", false)

	// Presence, and keys that are no conversation.
	if _, err := m.s.Connect(m.ctx, mu23, "r1 c1", c.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	p := r.Prefix
	for _, err := range []error{
		r.Client.LPush(m.ctx, p+"23-43", `{"fromid": 23, "toid": 43, "msg": "wrong order", "time": 1.0}`).Err(),
		r.Client.HSet(m.ctx, p+"99-98", "not", "a list").Err(),
		r.Client.Set(m.ctx, p+"hello world", "x", 0).Err(),
		r.Client.Set(m.ctx, p+"a-b-c", "x", 0).Err(),
		r.Client.Set(m.ctx, p+"chat:other", "x", 0).Err(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return m, 9
}

// userView is everything chatd shows one user.
type userView struct {
	Unread  map[string]int64
	Inbox   []chat.Conversation
	History map[string][]chat.Page // by peer, every page
}

// viewOf reads what s shows each user: unread counts, the inbox and the
// whole history with each other user (and with itself), paged.
func viewOf(t *testing.T, s *Store, users []string) map[string]userView {
	t.Helper()
	ctx := context.Background()
	out := map[string]userView{}
	for _, u := range users {
		var v userView
		var err error
		if v.Unread, err = s.Unread(ctx, u); err != nil {
			t.Fatalf("Unread %s: %v", u, err)
		}
		if v.Inbox, _, err = s.Inbox(ctx, u, 0); err != nil {
			t.Fatalf("Inbox %s: %v", u, err)
		}
		v.History = map[string][]chat.Page{}
		for _, peer := range users {
			var before int64
			for {
				p, err := s.History(ctx, u, peer, before, chat.MaxPageSize)
				if err != nil {
					t.Fatalf("History %s %s: %v", u, peer, err)
				}
				v.History[peer] = append(v.History[peer], p)
				if !p.More || len(p.Messages) == 0 {
					break
				}
				before = p.Messages[len(p.Messages)-1].Seq
			}
		}
		out[u] = v
	}
	return out
}

// sameViews fails unless every user sees the same in both views. except
// lists unread counts want has beyond before, by user.
func sameViews(t *testing.T, before, after map[string]userView, except map[string]map[string]int64) {
	t.Helper()
	for u, b := range before {
		a := after[u]
		want := maps.Clone(b.Unread)
		maps.Copy(want, except[u])
		if !maps.Equal(a.Unread, want) {
			t.Errorf("user %s: unread %v, want %v", u, a.Unread, want)
		}
		if !reflect.DeepEqual(a.Inbox, b.Inbox) {
			t.Errorf("user %s: inbox\n%s\nwant\n%s", u, inboxString(a.Inbox), inboxString(b.Inbox))
		}
		for peer, pages := range b.History {
			if !reflect.DeepEqual(a.History[peer], pages) {
				t.Errorf("user %s: history with %s differs:\n%+v\nwant\n%+v", u, peer, a.History[peer], pages)
			}
		}
	}
}

func inboxString(convs []chat.Conversation) string {
	var b strings.Builder
	for _, c := range convs {
		fmt.Fprintf(&b, "  %s unread %d read %d peer_read %d", c.With, c.Unread, c.Read, c.PeerRead)
		if c.Last != nil {
			fmt.Fprintf(&b, " last %+v", *c.Last)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// clusterDump returns every key under prefix on the cluster, without the
// prefix, with its type and value.
func clusterDump(t *testing.T, c redis.UniversalClient, prefix string) map[string]string {
	t.Helper()
	ctx := context.Background()
	names, err := redistest.Keys(ctx, c, prefix+"*")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, key := range names {
		typ, err := c.Type(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		var v any
		switch typ {
		case "string":
			v, err = c.Get(ctx, key).Result()
		case "list":
			v, err = c.LRange(ctx, key, 0, -1).Result()
		case "hash":
			v, err = c.HGetAll(ctx, key).Result()
		case "zset":
			v, err = c.ZRangeWithScores(ctx, key, 0, -1).Result()
		}
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimPrefix(key, prefix)] = fmt.Sprintf("%s %v", typ, v)
	}
	return out
}

// notices collects what Migrate reports.
type notices struct {
	mu  sync.Mutex
	all []MigrateNotice
}

func (n *notices) add(x MigrateNotice) {
	n.mu.Lock()
	n.all = append(n.all, x)
	n.mu.Unlock()
}

func (n *notices) keys(kind NoticeKind) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, x := range n.all {
		if x.Kind == kind {
			out = append(out, x.Key)
		}
	}
	slices.Sort(out)
	return out
}

// migrateTarget returns a Redis Cluster for a migration's target, or
// skips the test.
func migrateTarget(t *testing.T) (*redistest.Redis, *redis.ClusterClient) {
	t.Helper()
	if !redistest.Cluster() {
		t.Skip("migrates into a Redis Cluster: set REDIS_CLUSTER_URL to run it (CI does)")
	}
	r := redistest.New(t)
	return r, r.Client.(*redis.ClusterClient)
}

func runMigrate(t *testing.T, ctx context.Context, cfg MigrateConfig) (MigrateStats, *notices) {
	t.Helper()
	n := &notices{}
	cfg.Notice = n.add
	st, err := Migrate(ctx, cfg)
	if err != nil {
		t.Fatalf("Migrate: %v (%+v)", err, st)
	}
	return st, n
}

// TestMigrate copies a single Redis's data set into a Redis Cluster and
// checks that every user sees there what the single Redis showed, that a
// second run changes nothing, that a run stopped halfway completes when run
// again, and that a conversation the cluster holds otherwise is left alone.
func TestMigrate(t *testing.T) {
	t.Parallel()
	dst, cc := migrateTarget(t)
	src, convs := newMigrationSource(t)
	ctx := context.Background()
	before := viewOf(t, src.s, migrationUsers)
	// The seed's message in 23-7 that did not count for 7: 7's ready did
	// not show it on the single Redis (its inbox did); it does on the
	// cluster, where every conversation with unread messages has a hint.
	except := map[string]map[string]int64{mu7: {mu23: 1}}
	for _, c := range before[mu7].Inbox {
		if c.With == mu23 && c.Unread != 1 {
			t.Fatalf("7's inbox shows %d unread with 23 on the single Redis, want 1", c.Unread)
		}
	}
	if _, ok := before[mu7].Unread[mu23]; ok {
		t.Fatalf("7's unread on the single Redis %v: the seed's uncounted message shows", before[mu7].Unread)
	}
	total := int64(0)
	for _, u := range migrationUsers {
		for _, peer := range migrationUsers {
			if chat.ConvKey(u, peer) == u+"-"+peer {
				n, _ := src.r.Client.LLen(ctx, src.k.conv(u+"-"+peer)).Result()
				total += n
			}
		}
	}
	cfg := MigrateConfig{Source: src.r.Client.(*redis.Client), Target: cc, SourcePrefix: src.r.Prefix, TargetPrefix: dst.Prefix}

	t.Run("dry run", func(t *testing.T) {
		dry := cfg
		dry.DryRun = true
		st, _ := runMigrate(t, ctx, dry)
		if st.Copied != convs || st.Elements != total || st.Conflicts != 0 || st.Errors != 0 {
			t.Errorf("dry run: %+v, want %d conversations and %d elements to copy", st, convs, total)
		}
		if d := clusterDump(t, cc, dst.Prefix); len(d) != 0 {
			t.Fatalf("a dry run wrote %v", slices.Sorted(maps.Keys(d)))
		}
	})

	st, n := runMigrate(t, ctx, cfg)
	want := MigrateStats{
		Seen: convs, Done: convs + 1, Copied: convs, Elements: total,
		PositionsKept: 6, PositionsDerived: 3, InboxCopied: 11, InboxAdded: 4, Hints: st.Hints,
		SeedHashes: 6, Idempotency: 17, Presence: 2, NotLists: 1, NotConversations: 4,
	}
	want.Seen++ // 99-98 is named as a conversation
	if st != want {
		t.Errorf("stats\n%+v\nwant\n%+v", st, want)
	}
	if got := n.keys(NoticeNotConversation); !slices.Equal(got, []string{"23-43", "a-b-c", "chat:other", "hello world"}) {
		t.Errorf("keys reported as no conversation: %q", got)
	}
	if got := n.keys(NoticeNotList); !slices.Equal(got, []string{"99-98"}) {
		t.Errorf("keys reported as no list: %q", got)
	}
	target := New(cc, Config{Prefix: dst.Prefix, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(target.Close)
	sameViews(t, before, viewOf(t, target, migrationUsers), except)
	first := clusterDump(t, cc, dst.Prefix)
	for k := range first {
		if strings.Contains(k, ":idem:") || strings.Contains(k, "presence") {
			t.Errorf("copied %s: idempotency records and presence are not copied", k)
		}
	}

	t.Run("again", func(t *testing.T) {
		st, _ := runMigrate(t, ctx, cfg)
		if st.AlreadyThere != convs || st.Copied != 0 || st.Elements != 0 {
			t.Errorf("a second run: %+v, want all %d conversations already there", st, convs)
		}
		if d := clusterDump(t, cc, dst.Prefix); !maps.Equal(d, first) {
			t.Errorf("a second run changed the cluster:\n%v\nwas\n%v", d, first)
		}
	})

	for _, tt := range []struct {
		name string
		page int
		cut  func(conv string, n int64, done int) bool // stop after this write
	}{
		// A conversation of many pages, copied by itself, after its first.
		{"stopped in a list", 2, func(_ string, n int64, done int) bool { return done >= 2 && n > 2 }},
		// Short ones, copied in a batch, after their lists and read
		// positions, before their users' inbox entries and unread hints.
		{"stopped in a batch", 1000, func(_ string, n int64, _ int) bool { return n <= batchElems }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dst2, _ := migrateTarget(t)
			stopped := cfg
			stopped.TargetPrefix, stopped.Workers, stopped.PageSize = dst2.Prefix, 1, tt.page
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			done, cut := 0, ""
			stopped.afterWrite = func(conv string, whole bool) {
				switch {
				case whole:
					done++
				case cut == "" && tt.cut(conv, src.r.Client.LLen(ctx, src.k.conv(conv)).Val(), done):
					cut = conv
					cancel()
				}
			}
			if _, err := Migrate(ctx, stopped); !errors.Is(err, context.Canceled) {
				t.Fatalf("a migration stopped halfway: %v, want context.Canceled", err)
			}
			after := clusterDump(t, cc, dst2.Prefix)
			if tt.page == 2 {
				if n := cc.LLen(context.Background(), clusterKeys{dst2.Prefix}.conv(cut)).Val(); n != 2 {
					t.Fatalf("the conversation %s was stopped after its first page, and has %d elements on the cluster", cut, n)
				}
			} else if _, ok := after[clusterKeys{}.inbox(mu43)]; ok {
				t.Fatalf("stopped before the users' sides, the cluster has %s", clusterKeys{}.inbox(mu43))
			}
			stopped.afterWrite = nil
			st, _ := runMigrate(t, context.Background(), stopped)
			if st.Copied+st.Completed+st.AlreadyThere != convs || (tt.page == 2 && st.Completed != 1) ||
				(tt.page != 2 && st.AlreadyThere < 1) {
				t.Errorf("the run after: %+v", st)
			}
			if d := clusterDump(t, cc, dst2.Prefix); !maps.Equal(d, first) {
				t.Errorf("a migration stopped and run again gives\n%v\nwant\n%v", d, first)
			}
		})
	}

	t.Run("the source moved on", func(t *testing.T) {
		src.seedSend(t, mu23, mu43, "after the move", true)
		src.read(t, mu65, mu23, 0) // a short conversation, copied in a batch
		src.read(t, mu7, mu65, 0)  // a long one, copied by itself
		now := viewOf(t, src.s, migrationUsers)
		st, _ := runMigrate(t, ctx, cfg)
		if st.Completed != 1 || st.Elements != 1 || st.AlreadyThere != convs-1 {
			t.Errorf("a run after the seed stored one message: %+v, want 43-23 completed with 1", st)
		}
		sameViews(t, now, viewOf(t, target, migrationUsers), except)
		before = now
		first = clusterDump(t, cc, dst.Prefix)
	})

	t.Run("conflicts", func(t *testing.T) {
		ck := clusterKeys{dst.Prefix}
		seedOnly, chatdOnly := chat.ConvKey(mu23, mu43), chat.ConvKey(mu23, mu65)
		if err := cc.LSet(ctx, ck.conv(seedOnly), -1, `{"fromid": 23, "toid": 43, "msg": "not the first", "time": 1.0}`).Err(); err != nil {
			t.Fatal(err)
		}
		if _, _, err := target.Send(ctx, chat.SendRequest{From: mu65, To: mu23, Text: "on the cluster already"}); err != nil {
			t.Fatal(err)
		}
		d := clusterDump(t, cc, dst.Prefix)
		st, n := runMigrate(t, ctx, cfg)
		if st.Conflicts != 2 || st.AlreadyThere != convs-2 {
			t.Errorf("two conflicting conversations: %+v", st)
		}
		if got := n.keys(NoticeConflict); !slices.Equal(got, []string{seedOnly, chatdOnly}) {
			t.Errorf("conflicts reported: %q, want %s and %s", got, seedOnly, chatdOnly)
		}
		if now := clusterDump(t, cc, dst.Prefix); !maps.Equal(now, d) {
			t.Errorf("conflicting conversations were touched:\n%v\nwas\n%v", now, d)
		}

		over := cfg
		over.Overwrite = true
		st, n = runMigrate(t, ctx, over)
		if st.Overwritten != 2 || st.Conflicts != 0 {
			t.Errorf("-overwrite: %+v, want 2 overwritten", st)
		}
		if got := n.keys(NoticeOverwritten); !slices.Equal(got, []string{seedOnly, chatdOnly}) {
			t.Errorf("overwritten: %q", got)
		}
		for _, x := range n.all {
			if x.Kind == NoticeOverwritten && !strings.Contains(x.Text, "message #1 differs") && !strings.Contains(x.Text, "the cluster list has") {
				t.Errorf("the notice of an overwritten conversation does not say why: %+v", x)
			}
		}
		sameViews(t, before, viewOf(t, target, migrationUsers), except)
	})
}

// TestMigrateKeyKinds: which source keys are conversations, chatd's, the
// seed's unread hashes, or neither.
func TestMigrateKeyKinds(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		want int
	}{
		{"43-23", kindConv}, {"10-9", kindConv}, {"bob-alice", kindConv}, {"alice-23", kindConv}, {"5-5", kindConv},
		{"23-43", kindOther}, {"9-10", kindOther}, {"alice-bob", kindOther}, {"a-b-c", kindOther}, {"-23", kindOther},
		{"43-", kindOther}, {"4 3-23", kindOther}, {"", kindOther}, {"hello world", kindOther},
		{"23", kindSeedHash}, {"alice", kindSeedHash},
		{"chat:read:43-23", kindChatd}, {"chat:fence", kindChatd}, {"chat:inbox:23", kindChatd}, {"chat:unread:23", kindChatd},
		{"chat:idem:23:c1", kindIdem}, {"chat:presence:23", kindPresence}, {"chat:presence-index", kindPresence},
		{"chat:other", kindOther},
	} {
		if got := keyKind(tt.name); got != tt.want {
			t.Errorf("keyKind(%q) = %d, want %d", tt.name, got, tt.want)
		}
	}
	if got := globEscape(`a*b?c[d]e\f:`); got != `a\*b\?c\[d\]e\\f:` {
		t.Errorf("globEscape = %q", got)
	}
}

// TestMigratePushOnlyOnTheExpectedLength: a page is pushed only onto a
// list of the length the copy found, so that a call applied twice (a
// retry after a timeout, two runs at once) pushes nothing twice.
func TestMigratePushOnlyOnTheExpectedLength(t *testing.T) {
	t.Parallel()
	dst, cc := migrateTarget(t)
	ctx := context.Background()
	m := &migration{dst: clusterKeys{prefix: dst.Prefix}}
	c := sourceConv{conv: "43-23", hi: "43", lo: "23", n: 3, ra: 1, rb: 3}
	push := func(have int64, last bool, els ...string) error {
		t.Helper()
		cl := m.pushCall(c, have, last, els)
		return pushed(migratePushScript.Run(ctx, cc, cl.keys, cl.args...))
	}
	if err := push(0, false, "a", "b"); err != nil {
		t.Fatal(err)
	}
	if err := push(0, false, "a", "b"); !errors.Is(err, errRaced) {
		t.Fatalf("the same page again: %v, want errRaced", err)
	}
	if err := push(2, true, "c"); err != nil {
		t.Fatal(err)
	}
	if err := push(2, true, "c"); !errors.Is(err, errRaced) {
		t.Fatalf("the last page again: %v, want errRaced", err)
	}
	if l := cc.LRange(ctx, m.dst.conv("43-23"), 0, -1).Val(); !slices.Equal(l, []string{"c", "b", "a"}) {
		t.Errorf("list %q, want [c b a]", l)
	}
	if h := cc.HGetAll(ctx, m.dst.read("43-23")).Val(); !maps.Equal(h, map[string]string{"len": "3", "r:43": "1", "r:23": "3"}) {
		t.Errorf("read hash %v", h)
	}
	// Positions never go back.
	c.ra, c.rb = 0, 2
	if err := push(3, true); err != nil {
		t.Fatal(err)
	}
	if h := cc.HGetAll(ctx, m.dst.read("43-23")).Val(); h["r:43"] != "1" || h["r:23"] != "3" {
		t.Errorf("read hash after older positions %v", h)
	}
}
