package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/redis/go-redis/v9"
)

// Moving a deployment from a single Redis to a Redis Cluster (PROTOCOL.md
// section 4, "Redis Cluster layout"). Migrate walks the single Redis with
// SCAN and copies each conversation on its own, in the cluster's slots
// (the short ones in batches, each step one pipeline for the batch):
//
//  1. one read-only script on the source gives the conversation's length,
//     both read positions as chatd reads them there (luaPositions: from
//     chatd's read hash, or derived from the seed's unread counts), the
//     users' inbox entries and seed counts for it, its newest element and
//     its oldest page;
//  2. the cluster's list is compared with the source's, from the oldest
//     element: a list is only ever pushed at the head (LPUSH), so a copy
//     that stopped halfway holds the source's oldest elements, and one made
//     before the seed or chatd pushed more holds all but the newest;
//  3. the missing newer elements are pushed, a page per call, each call
//     only if the cluster list still has the length the copy expects (so a
//     call that is retried after it was applied pushes nothing twice); the
//     last call writes the read positions with the last page;
//  4. one script per user (clusterUserScript, as after a chatd send or
//     read) puts the conversation in the user's inbox and sets the user's
//     unread hint.
//
// Every step writes state, not a change, so running Migrate again after it
// was stopped anywhere completes what is missing and changes nothing else.
// A cluster list that holds anything but the start of the source's is a
// conflict: it is left alone (unless MigrateConfig.Overwrite).
//
// Not copied: idempotency records (kept 24 h, so a client's retry of a send
// from before the move may store its message again) and presence (clients
// connect again). The seed's unread hashes and chatd's unread indexes are
// not copied as such: the read positions and unread hints are made from
// them.

// MigrateConfig configures Migrate. Source and Target are required.
type MigrateConfig struct {
	// Source is the single Redis to copy from, in the seed's layout and
	// chatd's. Migrate only reads it.
	Source *redis.Client
	// Target is the Redis Cluster to copy into, in the Redis Cluster layout.
	Target *redis.ClusterClient
	// SourcePrefix and TargetPrefix are the key prefixes (Config.Prefix) on
	// each side; the target's may not hold '{' or '}' (ValidatePrefix).
	SourcePrefix, TargetPrefix string
	// DryRun reads both sides and counts what would be copied; nothing is
	// written.
	DryRun bool
	// Overwrite replaces a conversation whose cluster list conflicts with
	// the source's (its list and read positions). By default it is left
	// alone and counted in MigrateStats.Conflicts.
	Overwrite bool
	// Workers is how many conversations are copied at once. Defaults to 8.
	Workers int
	// PageSize is how many elements of a list one call reads or writes: 1
	// to 1000, the default (a page's elements are one script call's
	// arguments). Memory grows with Workers and PageSize, not with the data
	// set: a worker holds two pages (the source's and the cluster's) or a
	// batch of up to 50 conversations of up to 50 elements.
	PageSize int
	// Progress, when not nil, is called with the counts so far every
	// ProgressEvery while Migrate runs, from a goroutine of Migrate's, one
	// call at a time.
	Progress func(MigrateStats)
	// ProgressEvery is how often Progress is called. Defaults to 5 s.
	ProgressEvery time.Duration
	// Notice, when not nil, is called for each key Migrate leaves alone or
	// cannot copy, one call at a time.
	Notice func(MigrateNotice)

	// afterWrite, when not nil, is called after each write of a
	// conversation: each page, and (done true) its users' side, the last
	// one. Tests stop a migration halfway with it.
	afterWrite func(conv string, done bool)
}

// MigrateStats counts what Migrate did, or would do in a dry run.
type MigrateStats struct {
	Seen         int64 // conversation lists found so far
	Done         int64 // conversations finished, whatever the outcome
	Copied       int64 // conversations copied whole
	Completed    int64 // conversations found partly copied and completed
	AlreadyThere int64 // conversations found copied already
	Conflicts    int64 // conversations whose cluster list is not the start of the source's: left alone
	Overwritten  int64 // conflicting conversations replaced (Overwrite)
	Errors       int64 // conversations that could not be copied
	Elements     int64 // list elements copied (as they are written, also of conversations not finished)

	PositionsKept    int64 // conversations whose read positions came from chatd's read hash
	PositionsDerived int64 // conversations whose read positions were derived from the seed's unread counts
	InboxCopied      int64 // inbox entries copied from chatd's inbox indexes
	InboxAdded       int64 // inbox entries added for conversations only the seed wrote, scored by their newest message
	Hints            int64 // unread hints, one per user and conversation with unread messages

	SeedHashes       int64 // the seed's unread hashes (read, turned into read positions; not copied)
	Idempotency      int64 // idempotency records, not copied
	Presence         int64 // presence keys, not copied
	NotLists         int64 // keys named as conversations that are not lists: ignored
	NotConversations int64 // other keys, neither conversations nor chatd's: ignored
}

// MigrateNotice is a key Migrate left alone or could not copy.
type MigrateNotice struct {
	Kind NoticeKind
	Key  string // the key, without the source prefix
	Text string // what happened, for the operator
}

// NoticeKind says why Migrate reports a key.
type NoticeKind int

// Kinds of MigrateNotice.
const (
	NoticeNotConversation NoticeKind = iota // neither a conversation nor chatd's: ignored
	NoticeNotList                           // a conversation's name on a key that is no list: ignored
	NoticeConflict                          // the cluster holds another list under the name: left alone
	NoticeOverwritten                       // a conflicting cluster list was replaced (Overwrite)
	NoticeError                             // the conversation could not be copied
)

// maxMigrateErrors is how many conversations may fail before Migrate
// stops: beyond that the cause is no single conversation's.
const maxMigrateErrors = 100

// errRaced says that a cluster list was not as the copy had found it.
var errRaced = errors.New("store: the cluster list changed while it was copied")

// errTooManyErrors stops a migration.
var errTooManyErrors = fmt.Errorf("store: %d conversations could not be copied; stopping", maxMigrateErrors)

// migrateSourceScript reads one conversation on the single Redis, as chatd
// would serve it: its length, both users' read positions (luaPositions),
// whether they came from chatd's read hash, the users' seed counts and
// inbox scores for it, its newest element and its oldest page. It writes
// nothing.
//
// KEYS: 1 conversation list, 2 its read hash, 3 and 4 the users' seed
// hashes, 5 and 6 the users' inbox indexes.
// ARGV: 1 conversation name, 2 and 3 the users, 4 page size.
//
// Returns {-1} when the key is no list, {0} when it is gone, otherwise
// {length, a's position, b's position, 1 when the positions came from a
// read hash (else 0), a's seed count, b's seed count, a's inbox score,
// b's inbox score, newest element, oldest page (newest first)}, absent
// counts and scores nil.
var migrateSourceScript = redis.NewScript(luaPositions + `
local n = redis.pcall('LLEN', KEYS[1])
if type(n) ~= 'number' then return {-1} end
if n == 0 then return {0} end
local ra, rb = positions(KEYS[2], KEYS[1], n, ARGV[2], ARGV[3], KEYS[3], KEYS[4], ARGV[1])
local kept = 0
if tonumber(redis.call('HGET', KEYS[2], 'len')) then kept = 1 end
local function get(cmd, key)
  local v = redis.pcall(cmd, key, ARGV[1])
  if type(v) ~= 'string' then return false end
  return v
end
return {n, ra, rb, kept, get('HGET', KEYS[3]), get('HGET', KEYS[4]), get('ZSCORE', KEYS[5]), get('ZSCORE', KEYS[6]),
  redis.call('LINDEX', KEYS[1], 0), redis.call('LRANGE', KEYS[1], -tonumber(ARGV[4]), -1)}
`)

// migratePushScript pushes a page of a conversation onto its cluster list,
// only if the list has the length the copy expects, and with the last page
// writes both read positions. A position already further on the cluster
// stays: positions never go back.
//
// KEYS: 1 conversation list, 2 its read hash.
// ARGV: 1 the length the list must have, 2 "1" for the last write,
// 3 and 4 the users, 5 and 6 their read positions, 7… the elements,
// oldest first.
//
// Returns {1, length} when it wrote, {0, length} when the list did not
// have the expected length (nothing is written).
var migratePushScript = redis.NewScript(`
local m = redis.call('LLEN', KEYS[1])
if m ~= tonumber(ARGV[1]) then return {0, m} end
if #ARGV >= 7 then m = redis.call('LPUSH', KEYS[1], unpack(ARGV, 7)) end
if ARGV[2] == '1' then
  local a, b = ARGV[3], ARGV[4]
  local cur = redis.call('HMGET', KEYS[2], 'r:' .. a, 'r:' .. b)
  local ra = math.min(math.max(tonumber(cur[1]) or 0, tonumber(ARGV[5])), m)
  local rb = math.min(math.max(tonumber(cur[2]) or 0, tonumber(ARGV[6])), m)
  if a == b then ra = math.max(ra, rb) rb = ra end
  redis.call('HSET', KEYS[2], 'len', m, 'r:' .. a, ra, 'r:' .. b, rb)
end
return {1, m}
`)

// Batches: a worker takes up to batchConvs conversations at a time and
// copies those of up to batchElems elements (and one page) with one
// pipeline per step; longer ones are copied one by one, a page per call.
const (
	batchConvs = 50
	batchElems = 50
)

// Migrate copies chatd's data from a single Redis into a Redis Cluster
// (see the comment above MigrateConfig), and returns the counts. Writers
// must be stopped while it runs: a message stored on the single Redis
// after its conversation was copied is copied only by another run, and one
// stored on the cluster meanwhile makes its conversation a conflict.
//
// It returns an error when it could not finish: the source could not be
// scanned, ctx ended, or too many conversations failed; the counts then
// say how far it got, and running it again goes on from there. Conflicts
// and single failed conversations are counted and reported through
// cfg.Notice, not returned.
func Migrate(ctx context.Context, cfg MigrateConfig) (MigrateStats, error) {
	if cfg.Source == nil || cfg.Target == nil {
		return MigrateStats{}, errors.New("store: migrate needs a source and a target")
	}
	if err := ValidatePrefix(cfg.Target, cfg.TargetPrefix); err != nil {
		return MigrateStats{}, err
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.PageSize <= 0 || cfg.PageSize > 1000 {
		cfg.PageSize = 1000
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = 5 * time.Second
	}
	m := &migration{
		cfg: cfg,
		src: keys{prefix: cfg.SourcePrefix},
		dst: clusterKeys{prefix: cfg.TargetPrefix},
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	m.stop, m.cancel = ctx.Done(), cancel

	batches := make(chan []string, cfg.Workers)
	var workers sync.WaitGroup
	for range cfg.Workers {
		workers.Go(func() {
			for b := range batches {
				m.batch(ctx, b)
			}
		})
	}
	progressDone := make(chan struct{})
	var progress sync.WaitGroup
	if cfg.Progress != nil {
		progress.Go(func() {
			t := time.NewTicker(cfg.ProgressEvery)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					cfg.Progress(m.snapshot())
				case <-progressDone:
					return
				}
			}
		})
	}

	scanErr := m.scan(ctx, batches)
	close(batches)
	workers.Wait()
	close(progressDone)
	progress.Wait()

	st := m.snapshot()
	if err := context.Cause(ctx); err != nil {
		return st, err
	}
	return st, scanErr
}

// migration is one run of Migrate.
type migration struct {
	cfg    MigrateConfig
	src    keys
	dst    clusterKeys
	stop   <-chan struct{} // closed when the migration is stopping
	cancel context.CancelCauseFunc

	mu    sync.Mutex // guards stats
	stats MigrateStats

	noticeMu sync.Mutex // one Notice call at a time
}

func (m *migration) count(f func(*MigrateStats)) {
	m.mu.Lock()
	f(&m.stats)
	m.mu.Unlock()
}

func (m *migration) snapshot() MigrateStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats
}

func (m *migration) notice(kind NoticeKind, key, format string, args ...any) {
	if m.cfg.Notice == nil {
		return
	}
	m.noticeMu.Lock()
	defer m.noticeMu.Unlock()
	m.cfg.Notice(MigrateNotice{Kind: kind, Key: key, Text: fmt.Sprintf(format, args...)})
}

// scan walks the source's keys under the prefix with SCAN, a thousand at
// a time, and hands the conversations to the workers in batches. SCAN may
// return a key twice; copying a conversation twice is harmless.
func (m *migration) scan(ctx context.Context, batches chan<- []string) error {
	match := globEscape(m.src.prefix) + "*"
	var cursor uint64
	var convs []string
	send := func() bool {
		if len(convs) == 0 {
			return true
		}
		select {
		case batches <- convs:
			convs = nil
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		names, next, err := m.cfg.Source.Scan(ctx, cursor, match, 1000).Result()
		if err != nil {
			if ctx.Err() != nil {
				return nil // the cause is returned
			}
			return fmt.Errorf("scan: %w", err)
		}
		for _, key := range names {
			name := strings.TrimPrefix(key, m.src.prefix)
			switch keyKind(name) {
			case kindConv:
				m.count(func(s *MigrateStats) { s.Seen++ })
				if convs = append(convs, name); len(convs) == batchConvs && !send() {
					return nil
				}
			case kindSeedHash:
				m.count(func(s *MigrateStats) { s.SeedHashes++ })
			case kindIdem:
				m.count(func(s *MigrateStats) { s.Idempotency++ })
			case kindPresence:
				m.count(func(s *MigrateStats) { s.Presence++ })
			case kindOther:
				m.count(func(s *MigrateStats) { s.NotConversations++ })
				m.notice(NoticeNotConversation, name, "neither a conversation (<id>-<id>, the larger id first) nor chatd's: ignored")
			}
		}
		if next == 0 {
			send()
			return nil
		}
		cursor = next
	}
}

// Kinds of source keys.
const (
	kindConv     = iota // a conversation list's name
	kindSeedHash        // a user id: the seed's unread hash
	kindChatd           // chatd's read hashes, inbox and unread indexes (read with the conversations), its fence
	kindIdem            // idempotency records
	kindPresence        // presence sets and their index
	kindOther
)

// keyKind says what the key name (without prefix) is in the seed's layout
// and chatd's.
func keyKind(name string) int {
	if rest, ok := strings.CutPrefix(name, "chat:"); ok {
		switch {
		case strings.HasPrefix(rest, "read:"), strings.HasPrefix(rest, "inbox:"), strings.HasPrefix(rest, "unread:"),
			rest == "fence": // a write's marker for WAIT, gone at once
			return kindChatd
		case strings.HasPrefix(rest, "idem:"):
			return kindIdem
		case strings.HasPrefix(rest, "presence:"), rest == "presence-index":
			return kindPresence
		}
		return kindOther
	}
	if hi, lo, ok := strings.Cut(name, "-"); ok {
		if chat.ValidateUser(hi) == nil && chat.ValidateUser(lo) == nil && chat.ConvKey(hi, lo) == name {
			return kindConv
		}
		return kindOther
	}
	if chat.ValidateUser(name) == nil {
		return kindSeedHash
	}
	return kindOther
}

// globEscape quotes the characters SCAN's MATCH reads as a pattern.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Outcomes of one conversation.
type outcome int

const (
	outCopied outcome = iota
	outCompleted
	outAlreadyThere
	outConflict
	outOverwritten
	outNotList
	outGone
)

// convResult is what copying one conversation did (or would do).
type convResult struct {
	outcome     outcome
	n           int64  // the source list's length
	elements    int64  // elements copied
	kept        bool   // positions from chatd's read hash
	inboxCopied int64  // inbox entries copied
	inboxAdded  int64  // inbox entries added for the seed's conversations
	hints       int64  // unread hints
	conflict    string // why the lists conflict
}

// sourceConv is what migrateSourceScript says of a conversation.
type sourceConv struct {
	conv, hi, lo   string
	n, ra, rb      int64
	kept           bool
	seed, inbox    [2]string // the users' seed counts and inbox scores
	hasSeed, inIdx [2]bool
	newest         string
	oldest         []string // the oldest page, oldest first
}

// readSource runs migrateSourceScript for each conversation, in one
// pipeline, asking for oldest pages of page elements.
func (m *migration) readSource(ctx context.Context, convs []string, page int64) ([]sourceConv, []error) {
	calls := make([]call, len(convs))
	for i, conv := range convs {
		hi, lo, _ := strings.Cut(conv, "-")
		k := m.src
		calls[i] = call{
			keys: []string{k.conv(conv), k.read(conv), k.unread(hi), k.unread(lo), k.inbox(hi), k.inbox(lo)},
			args: []any{conv, hi, lo, page},
		}
	}
	out := make([]sourceConv, len(convs))
	errs := make([]error, len(convs))
	for i, cmd := range evalAll(ctx, m.cfg.Source, migrateSourceScript, calls) {
		res, err := cmd.Slice()
		if err == nil {
			out[i], err = sourceState(res)
		}
		if err != nil {
			errs[i] = fmt.Errorf("reading the single Redis: %w", err)
		}
		out[i].conv = convs[i]
		out[i].hi, out[i].lo, _ = strings.Cut(convs[i], "-")
	}
	return out, errs
}

func sourceState(res []any) (sourceConv, error) {
	var c sourceConv
	if len(res) == 1 {
		c.n, _ = res[0].(int64)
		return c, nil
	}
	if len(res) != 10 {
		return c, fmt.Errorf("unexpected reply %v", res)
	}
	c.n, _ = res[0].(int64)
	c.ra, _ = res[1].(int64)
	c.rb, _ = res[2].(int64)
	kept, _ := res[3].(int64)
	c.kept = kept == 1
	for i := range 2 {
		c.seed[i], c.hasSeed[i] = res[4+i].(string)
		c.inbox[i], c.inIdx[i] = res[6+i].(string)
	}
	c.newest, _ = res[8].(string)
	page, _ := res[9].([]any)
	c.oldest = make([]string, len(page))
	for i, e := range page {
		c.oldest[len(page)-1-i], _ = e.(string)
	}
	return c, nil
}

// targetConv is the cluster's side of a conversation: its list's length
// and oldest page (oldest first), and its read hash (HMGET len, r:a, r:b).
type targetConv struct {
	have   int64
	oldest []string
	read   []any
}

// readTarget reads the cluster's side of each conversation in one
// pipeline, with oldest pages of page elements.
func (m *migration) readTarget(ctx context.Context, convs []sourceConv, page int64) ([]targetConv, error) {
	llen := make([]*redis.IntCmd, len(convs))
	oldest := make([]*redis.StringSliceCmd, len(convs))
	read := make([]*redis.SliceCmd, len(convs))
	if _, err := m.cfg.Target.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, c := range convs {
			llen[i] = p.LLen(ctx, m.dst.conv(c.conv))
			oldest[i] = p.LRange(ctx, m.dst.conv(c.conv), -page, -1)
			read[i] = p.HMGet(ctx, m.dst.read(c.conv), "len", "r:"+c.hi, "r:"+c.lo)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("reading the cluster: %w", err)
	}
	out := make([]targetConv, len(convs))
	for i := range convs {
		out[i] = targetConv{have: llen[i].Val(), oldest: oldest[i].Val(), read: read[i].Val()}
		slices.Reverse(out[i].oldest)
	}
	return out, nil
}

// lacking compares the cluster's elements got with the source's els, both
// oldest first from seq first, and returns the source's elements the
// cluster lacks, or why they conflict.
func lacking(first int64, els, got []string) ([]string, string) {
	for i, e := range got {
		if i >= len(els) || e != els[i] {
			return nil, fmt.Sprintf("message #%d differs between the cluster and the single Redis", first+int64(i))
		}
	}
	return els[len(got):], ""
}

// conflictTooLong says why a cluster list longer than the source's
// conflicts.
func conflictTooLong(have, n int64) string {
	return fmt.Sprintf("the cluster list has %d elements, the single Redis's %d", have, n)
}

// pushCall is the migratePushScript call that pushes els (oldest first)
// onto the cluster list of c, which must hold have elements; last says it
// completes the list, and the read positions go with it.
func (m *migration) pushCall(c sourceConv, have int64, last bool, els []string) call {
	final := "0"
	if last {
		final = "1"
	}
	args := make([]any, 0, 6+len(els))
	args = append(args, have, final, c.hi, c.lo, c.ra, c.rb)
	for _, e := range els {
		args = append(args, e)
	}
	return call{keys: []string{m.dst.conv(c.conv), m.dst.read(c.conv)}, args: args}
}

// pushed reads a migratePushScript reply: errRaced when the list did not
// have the expected length.
func pushed(cmd *redis.Cmd) error {
	res, err := cmd.Int64Slice()
	if err != nil {
		return fmt.Errorf("writing the cluster: %w", err)
	}
	if len(res) != 2 || res[0] != 1 {
		return errRaced
	}
	return nil
}

// sides returns the clusterUserScript calls that put the users' side of
// the conversation c in place, as a chatd send or read leaves it: the
// inbox entry and the unread hint of each user. It counts them in r.
func (m *migration) sides(c sourceConv, r *convResult) []call {
	users := []string{c.hi, c.lo}
	reads := []int64{c.ra, c.rb}
	if c.hi == c.lo {
		users, reads = users[:1], reads[:1]
	}
	calls := make([]call, 0, 2)
	for i, u := range users {
		// The inbox entry: chatd's, or, for a conversation the single
		// Redis lists for the seed's count alone, one scored by its newest
		// message, as a chatd read gives it. A later entry (chatd's on the
		// cluster) stays.
		score, cond := "", "GT"
		switch {
		case c.inIdx[i]:
			score = c.inbox[i]
			r.inboxCopied++
		case c.hasSeed[i] && c.seed[i] != "0":
			if t, ok := elementTime(c.newest); ok {
				score = strconv.FormatInt(int64(math.Floor(t*1000)), 10)
			} else {
				score, cond = strconv.FormatInt(time.Now().UnixMilli(), 10), "NX"
			}
			r.inboxAdded++
		}
		if reads[i] < c.n {
			r.hints++
		}
		calls = append(calls, call{
			keys: []string{m.dst.inbox(u), m.dst.unreadHints(u), m.dst.presence(u)},
			args: []any{c.conv, score, cond, reads[i], c.n, ""},
		})
	}
	return calls
}

// batch copies a batch of conversations: those of up to batchElems
// elements together, a pipeline per step (the sources, the cluster's
// sides, the pushes, the users' sides); the others, and any that needs
// more than that (a retry, an overwrite), one by one.
func (m *migration) batch(ctx context.Context, convs []string) {
	short := int64(min(batchElems, m.cfg.PageSize))
	srcs, errs := m.readSource(ctx, convs, short)
	var small []sourceConv
	for i, c := range srcs {
		switch {
		case errs[i] != nil:
			m.finish(c.conv, convResult{}, errs[i])
		case c.n < 0:
			m.finish(c.conv, convResult{outcome: outNotList}, nil)
		case c.n == 0:
			m.finish(c.conv, convResult{outcome: outGone}, nil)
		case c.n > short:
			m.one(ctx, c.conv)
		default:
			small = append(small, c)
		}
	}
	if len(small) == 0 {
		return
	}
	dsts, err := m.readTarget(ctx, small, short)
	if err != nil {
		for _, c := range small {
			m.finish(c.conv, convResult{}, err)
		}
		return
	}

	// What each lacks: all of it fits in the pages at hand.
	type job struct {
		src  sourceConv
		r    convResult
		push *call
	}
	var jobs []job
	for i, c := range small {
		d := dsts[i]
		r := convResult{n: c.n, kept: c.kept}
		var missing []string
		if d.have > c.n {
			r.outcome, r.conflict = outConflict, conflictTooLong(d.have, c.n)
		} else {
			missing, r.conflict = lacking(1, c.oldest, d.oldest)
			if r.conflict != "" {
				r.outcome = outConflict
			}
		}
		switch {
		case r.outcome == outConflict && m.cfg.Overwrite:
			m.one(ctx, c.conv)
			continue
		case r.outcome == outConflict:
			m.finish(c.conv, r, nil)
			continue
		case d.have == 0:
			r.outcome = outCopied
		case len(missing) > 0:
			r.outcome = outCompleted
		default:
			r.outcome = outAlreadyThere
		}
		r.elements = int64(len(missing))
		j := job{src: c, r: r}
		if len(missing) > 0 || !positionsThere(d.read, c.n, c.hi == c.lo, c.ra, c.rb) {
			p := m.pushCall(c, d.have, true, missing)
			j.push = &p
		}
		jobs = append(jobs, j)
	}
	if m.cfg.DryRun {
		for _, j := range jobs {
			m.sides(j.src, &j.r)
			m.finish(j.src.conv, j.r, nil)
		}
		return
	}

	var pushes []call
	var pushing []int
	for i, j := range jobs {
		if j.push != nil {
			pushes = append(pushes, *j.push)
			pushing = append(pushing, i)
		}
	}
	failed := make([]bool, len(jobs))
	for k, cmd := range evalAll(ctx, m.cfg.Target, migratePushScript, pushes) {
		i := pushing[k]
		switch err := pushed(cmd); {
		case errors.Is(err, errRaced):
			failed[i] = true
			m.one(ctx, jobs[i].src.conv) // look again
		case err != nil:
			failed[i] = true
			m.finish(jobs[i].src.conv, jobs[i].r, err)
		default:
			m.count(func(s *MigrateStats) { s.Elements += jobs[i].r.elements })
			if m.cfg.afterWrite != nil {
				m.cfg.afterWrite(jobs[i].src.conv, false)
			}
		}
	}

	var users []call
	var owner []int
	for i := range jobs {
		if !failed[i] {
			for _, cl := range m.sides(jobs[i].src, &jobs[i].r) {
				users = append(users, cl)
				owner = append(owner, i)
			}
		}
	}
	for k, cmd := range evalAll(ctx, m.cfg.Target, clusterUserScript, users) {
		if err := cmd.Err(); err != nil && !failed[owner[k]] {
			failed[owner[k]] = true
			m.finish(jobs[owner[k]].src.conv, jobs[owner[k]].r, fmt.Errorf("user side: %w", err))
		}
	}
	for i, j := range jobs {
		if !failed[i] {
			if m.cfg.afterWrite != nil {
				m.cfg.afterWrite(j.src.conv, true)
			}
			m.finish(j.src.conv, j.r, nil)
		}
	}
}

// one copies one conversation by itself, a page per call. A copy that
// finds the cluster list changed under it starts again, twice at most; a
// conflict is replaced when the config says so.
func (m *migration) one(ctx context.Context, conv string) {
	var (
		r          convResult
		err        error
		overwrote  bool
		overridden string // the conflict overwritten
	)
	for attempt := 1; attempt <= 3; attempt++ {
		r, err = m.copy(ctx, conv)
		if err == nil && r.outcome == outConflict && m.cfg.Overwrite {
			overridden = r.conflict
			if m.cfg.DryRun {
				r.outcome, r.elements = outOverwritten, r.n
				break
			}
			if err = m.cfg.Target.Del(ctx, m.dst.conv(conv), m.dst.read(conv)).Err(); err == nil {
				overwrote = true
				err = errRaced // copy it again, from nothing
			}
		}
		if !errors.Is(err, errRaced) {
			break
		}
	}
	if overwrote && err == nil && r.outcome == outCopied {
		r.outcome = outOverwritten
	}
	if r.outcome == outOverwritten {
		r.conflict = overridden
	}
	m.finish(conv, r, err)
}

// finish counts what copying conv did, and reports what the operator
// should know. A conversation stopped by the end of ctx is not counted.
func (m *migration) finish(conv string, r convResult, err error) {
	if m.cancelled() {
		return
	}
	if err != nil {
		n := int64(0)
		m.count(func(s *MigrateStats) { s.Done++; s.Errors++; n = s.Errors })
		m.notice(NoticeError, conv, "not copied: %v", err)
		if n >= maxMigrateErrors {
			m.cancel(errTooManyErrors)
		}
		return
	}
	switch r.outcome {
	case outNotList:
		m.count(func(s *MigrateStats) { s.Done++; s.NotLists++ })
		m.notice(NoticeNotList, conv, "named as a conversation but not a list: ignored")
		return
	case outGone:
		m.count(func(s *MigrateStats) { s.Done++ })
		return
	case outConflict:
		m.count(func(s *MigrateStats) { s.Done++; s.Conflicts++ })
		m.notice(NoticeConflict, conv, "%s: left alone (-overwrite replaces it)", r.conflict)
		return
	case outOverwritten:
		m.notice(NoticeOverwritten, conv, "%s: replaced", r.conflict)
	}
	m.count(func(s *MigrateStats) {
		s.Done++
		switch r.outcome {
		case outCopied:
			s.Copied++
		case outCompleted:
			s.Completed++
		case outAlreadyThere:
			s.AlreadyThere++
		case outOverwritten:
			s.Overwritten++
		}
		if m.cfg.DryRun {
			s.Elements += r.elements // a run counts them as it writes them
		}
		if r.kept {
			s.PositionsKept++
		} else {
			s.PositionsDerived++
		}
		s.InboxCopied += r.inboxCopied
		s.InboxAdded += r.inboxAdded
		s.Hints += r.hints
	})
}

// cancelled reports whether the migration is stopping.
func (m *migration) cancelled() bool {
	select {
	case <-m.stop:
		return true
	default:
		return false
	}
}

// copy copies one conversation as far as the cluster lacks it, a page
// per call from the oldest: the list, then (with its last page) both read
// positions, then the users' inbox entries and unread hints. In a dry run
// it only compares.
func (m *migration) copy(ctx context.Context, conv string) (convResult, error) {
	var r convResult
	page := int64(m.cfg.PageSize)
	srcs, errs := m.readSource(ctx, []string{conv}, page)
	src := srcs[0]
	switch {
	case errs[0] != nil:
		return r, errs[0]
	case src.n < 0:
		r.outcome = outNotList
		return r, nil
	case src.n == 0:
		r.outcome = outGone
		return r, nil
	}
	n := src.n
	r.n, r.kept = n, src.kept
	dsts, err := m.readTarget(ctx, srcs, page)
	if err != nil {
		return r, err
	}
	dst := dsts[0]
	if dst.have > n {
		r.outcome, r.conflict = outConflict, conflictTooLong(dst.have, n)
		return r, nil
	}

	// Compare what the cluster has, then push what it lacks: every page
	// compared comes before any push.
	for first := int64(1); first <= n; first += page {
		last := min(first+page-1, n)
		els := src.oldest
		if first > 1 {
			if els, err = seqs(ctx, m.cfg.Source, m.src.conv(conv), first, last); err != nil {
				return r, fmt.Errorf("reading the single Redis: %w", err)
			}
		}
		if first <= dst.have {
			got := dst.oldest
			if first > 1 {
				if got, err = seqs(ctx, m.cfg.Target, m.dst.conv(conv), first, min(last, dst.have)); err != nil {
					return r, fmt.Errorf("reading the cluster: %w", err)
				}
			}
			if els, r.conflict = lacking(first, els, got); r.conflict != "" {
				r.outcome = outConflict
				return r, nil
			}
		}
		if len(els) == 0 {
			continue
		}
		if !m.cfg.DryRun {
			if err := m.push(ctx, src, last-int64(len(els)), last == n, els); err != nil {
				return r, err
			}
		}
		r.elements += int64(len(els))
	}
	switch {
	case dst.have == 0:
		r.outcome = outCopied
	case dst.have < n:
		r.outcome = outCompleted
	default:
		r.outcome = outAlreadyThere
		// The list was complete, and its read positions came with its last
		// page; the source's may have moved on since (a read there after
		// an earlier run).
		if !m.cfg.DryRun && !positionsThere(dst.read, n, src.hi == src.lo, src.ra, src.rb) {
			if err := m.push(ctx, src, n, true, nil); err != nil {
				return r, err
			}
		}
	}

	users := m.sides(src, &r)
	if m.cfg.DryRun {
		return r, nil
	}
	for _, cmd := range evalAll(ctx, m.cfg.Target, clusterUserScript, users) {
		if err := cmd.Err(); err != nil {
			return r, fmt.Errorf("user side: %w", err)
		}
	}
	if m.cfg.afterWrite != nil {
		m.cfg.afterWrite(conv, true)
	}
	return r, nil
}

// push runs one migratePushScript call (see pushCall).
func (m *migration) push(ctx context.Context, c sourceConv, have int64, last bool, els []string) error {
	cl := m.pushCall(c, have, last, els)
	if err := pushed(migratePushScript.Run(ctx, m.cfg.Target, cl.keys, cl.args...)); err != nil {
		return err
	}
	m.count(func(s *MigrateStats) { s.Elements += int64(len(els)) })
	if m.cfg.afterWrite != nil {
		m.cfg.afterWrite(c.conv, false)
	}
	return nil
}

// positionsThere reports whether the cluster's read hash (HMGET len, r:a,
// r:b) already says what the last push would write.
func positionsThere(cur []any, n int64, self bool, ra, rb int64) bool {
	num := func(v any) (int64, bool) {
		s, ok := v.(string)
		if !ok {
			return 0, false
		}
		x, err := strconv.ParseInt(s, 10, 64)
		return x, err == nil
	}
	if len(cur) != 3 {
		return false
	}
	l, ok1 := num(cur[0])
	a, ok2 := num(cur[1])
	b, ok3 := num(cur[2])
	if !ok1 || !ok2 || !ok3 || l != n {
		return false
	}
	wa, wb := min(max(a, ra), n), min(max(b, rb), n)
	if self {
		wa = max(wa, wb)
		wb = wa
	}
	return a == wa && b == wb
}

// seqs returns the elements of the list key with seqs first to last
// (counted from the oldest, 1), oldest first. It counts from the list's
// end, where an element pushed at the head moves nothing.
func seqs(ctx context.Context, c redis.Cmdable, key string, first, last int64) ([]string, error) {
	els, err := c.LRange(ctx, key, -last, -first).Result()
	if err != nil {
		return nil, err
	}
	if int64(len(els)) != last-first+1 {
		return nil, fmt.Errorf("%s: %d elements for messages #%d to #%d: the list shrank", key, len(els), first, last)
	}
	slices.Reverse(els)
	return els, nil
}
