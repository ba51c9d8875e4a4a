// Package store keeps chatd's data in Redis, in the layout of the seed
// ("使用Redis存储聊天数据的一种方案"): one list per conversation, newest first,
// and one hash of unread counts per user. It adds read positions, an inbox
// index, idempotency records, presence entries and pub/sub routing, all
// under keys that contain ':' so they never collide with the seed's.
//
// Unread is position based: each user has a read position per conversation
// (the seq up to which the user has read), which a read moves forward and
// a send moves to the sent message; unread is the peer's messages after
// it, the same on every device. The seed's unread hash keeps the seed's
// meaning (bumped when the recipient is offline, reset when read) for the
// seed's own readers, and gives the positions of conversations chatd has
// no positions for (see luaPositions in scripts.go).
//
// Every operation a client request causes is one Lua script, so it is atomic
// and costs one Redis round trip. A message's seq is its position counted
// from the oldest element of its list, which stays right when the seed's own
// msgsend pushes into the same list (the list is never trimmed).
//
// Routing: every replica subscribes to one channel of its own. A live
// connection is a presence entry "<replica> <conn>"; the script that stores a
// message publishes it to the replicas that hold a socket of the sender or
// the recipient (but the sending socket, which has its answer), in the
// same atomic step that decides whether the recipient
// is online. So a replica receives only what its sockets need, never
// subscribes per user, and a user who connects while a message is sent
// either is found online (and is published to) or is counted unread.
//
// With Config.Wait, a send or a read returns only once that many Redis
// replicas have acknowledged it (WAIT, on the connection that wrote it),
// and is published only then, by a call of its own (wait.go).
//
// On a Redis Cluster (a *redis.ClusterClient) the Store keeps another
// layout, whose keys carry hash tags, and a send or a read is a few calls,
// one per slot, instead of one script (cluster.go, PROTOCOL.md section 4,
// "Redis Cluster layout").
//
// A Store is safe for concurrent use.
package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/redis/go-redis/v9"
)

// Config configures a Store. The zero value is usable.
type Config struct {
	// Prefix goes in front of every key and channel, for a Redis shared with
	// other applications. Empty by default, which is the seed's own layout.
	Prefix string
	// IdempotencyTTL is how long a (sender, client id) pair is remembered.
	// Defaults to 24 hours.
	IdempotencyTTL time.Duration
	// Now is the clock, for presence expiry and message times. Defaults to
	// time.Now. Replicas sharing a Redis should have clocks within a few
	// seconds of each other.
	Now func() time.Time
	// Logger receives warnings about malformed data. Defaults to slog.Default().
	Logger *slog.Logger
	// Wait is how many Redis replicas must acknowledge a write (Redis
	// WAIT) before Send and MarkRead return it: a message or a read they
	// return then survives the loss of the master (see wait.go). With
	// fewer within WaitTimeout they return an error wrapping
	// ErrNotReplicated, and nothing is published about the write. 0, the
	// default, waits for none, and costs nothing. Check it with
	// ValidateWait.
	Wait int
	// WaitTimeout is how long a write waits for Wait replicas. Defaults to
	// DefaultWaitTimeout (500 ms).
	WaitTimeout time.Duration
	// BatchDelay is how long, under load, a send may wait for other sends
	// to share its pipeline to Redis; while sends arrive too slowly to
	// bring several others in that time, none waits. It trades about
	// that much latency for much less CPU per message, in Redis and here.
	// 0 means DefaultBatchDelay; negative, never wait.
	BatchDelay time.Duration
}

// DefaultBatchDelay is Config.BatchDelay's default.
const DefaultBatchDelay = 500 * time.Microsecond

// Store is chatd's Redis data layer. It is safe for concurrent use.
type Store struct {
	rdb    redis.UniversalClient
	keys   keys
	idemMS int64
	now    func() time.Time
	log    *slog.Logger
	sends  *batcher
	cl     *cluster // nil on a single Redis
	dur    durability
}

// New returns a Store over rdb. It does not touch Redis. When rdb is a
// *redis.ClusterClient, the Store keeps the Redis Cluster layout; New
// panics then if cfg.Prefix holds '{' or '}' (check it first with
// ValidatePrefix).
func New(rdb redis.UniversalClient, cfg Config) *Store {
	if cfg.IdempotencyTTL <= 0 {
		cfg.IdempotencyTTL = 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.WaitTimeout <= 0 {
		cfg.WaitTimeout = DefaultWaitTimeout
	}
	dur := durability{replicas: max(cfg.Wait, 0), timeout: cfg.WaitTimeout}
	send := sendScript
	cl := newCluster(rdb, cfg.Prefix, dur)
	if cl != nil {
		send = clusterSendScript
	}
	s := &Store{
		rdb:    rdb,
		keys:   keys{prefix: cfg.Prefix},
		idemMS: cfg.IdempotencyTTL.Milliseconds(),
		now:    cfg.Now,
		log:    cfg.Logger,
		cl:     cl,
		dur:    dur,
	}
	var wait func(context.Context, *redis.Script, []call) []*redis.Cmd
	if dur.replicas > 0 {
		wait = s.evalWait
	}
	switch {
	case cfg.BatchDelay == 0:
		cfg.BatchDelay = DefaultBatchDelay
	case cfg.BatchDelay < 0:
		cfg.BatchDelay = 0
	}
	s.sends = newBatcher(rdb, send, cfg.BatchDelay, wait)
	return s
}

// Close stops the pipelining of sends after the pipeline in flight: sends
// still queued, and any after Close, fail with ErrClosed. It does not close the
// Redis client, which the caller owns. It is safe to call more than once.
func (s *Store) Close() { s.sends.close() }

// Ping reports whether Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// Send stores a message: it pushes the seed-format entry onto the
// conversation list, moves the sender's read position to it, bumps the
// recipient's count in the seed's unread hash when the recipient has no
// live connection, records the idempotency key, updates both inboxes and
// publishes the message to the replicas of both users' sockets (but
// req.Origin, the sending socket), in one atomic step. A repeated (sender,
// client id) returns the first message with dup true and leaves nothing
// written (the script pushes its element and pops it back).
//
// With Config.Wait, the message is published only once replicas have
// acknowledged it, by a call of its own, and a repeated send publishes it
// again (the first may have failed to wait, and published nothing).
//
// On a Redis Cluster (see clusterSend) there is no seed hash, a client id
// is remembered per conversation, and the message is stored, then indexed
// and published by separate calls; a repeated send does those again, so it
// publishes the message again.
func (s *Store) Send(ctx context.Context, req chat.SendRequest) (msg chat.Message, dup bool, err error) {
	if err := validatePair(req.From, req.To); err != nil {
		return chat.Message{}, false, err
	}
	if err := chat.ValidateText(req.Text); err != nil {
		return chat.Message{}, false, err
	}
	idemMS := s.idemMS
	if req.ClientID == "" {
		// Only a retry of the same command can repeat a generated id: its
		// record need not outlive go-redis's retries by much.
		req.ClientID = "~" + randomID()
		idemMS = min(idemMS, generatedIDTTL.Milliseconds())
	} else if err := chat.ValidateClientID(req.ClientID); err != nil {
		return chat.Message{}, false, err
	}
	conv := chat.ConvKey(req.From, req.To)
	now := s.now()
	ts, tsText := formatTime(now)
	if s.cl != nil {
		return s.clusterSend(ctx, req, conv, ts, tsText, idemMS)
	}
	head, tail := messagePayload(conv, req, now, tsText)
	later := ""
	if s.dur.replicas > 0 {
		later = "1" // publish once replicas have it: deliver, below
	}
	reply, err := s.sends.run(ctx,
		[]string{
			s.keys.conv(conv), s.keys.unread(req.To), s.keys.idem(req.From, req.ClientID),
			s.keys.inbox(req.From), s.keys.inbox(req.To),
			s.keys.presence(req.To), s.keys.presence(req.From),
			s.keys.read(conv), s.keys.unread(req.From),
			s.keys.unreadIndex(req.To),
		},
		encodeElement(req.From, req.To, req.Text, tsText), conv, now.UnixMilli(), idemMS,
		s.keys.replicaChannelPrefix(), head, tail, s.keys.prefix, req.From, req.To, later, req.Origin,
	)
	if err != nil {
		return chat.Message{}, false, fmt.Errorf("send %s: %w", conv, err)
	}
	res, ok := reply.([]any)
	if !ok {
		return chat.Message{}, false, fmt.Errorf("send %s: unexpected reply %v", conv, reply)
	}
	if len(res) == 2 {
		seq, _ := res[1].(int64)
		msg = chat.Message{Conv: conv, Seq: seq, From: req.From, To: req.To, Text: req.Text, Time: ts}
		if later != "" {
			s.deliver(ctx, append(strconv.AppendInt(head, seq, 10), tail...), req.Origin, msg.To, msg.From)
		}
		return msg, false, nil
	}
	if len(res) != 4 {
		return chat.Message{}, false, fmt.Errorf("send %s: unexpected reply %v", conv, res)
	}
	prevConv, _ := res[1].(string)
	seq, _ := res[2].(int64)
	data, _ := res[3].(string)
	msg, err = decodeElement(prevConv, seq, data)
	if err != nil {
		return chat.Message{}, false, fmt.Errorf("send %s: earlier message %s #%d: %w", conv, prevConv, seq, err)
	}
	if later != "" {
		s.deliver(ctx, messageDelivery(msg, req.Origin), req.Origin, msg.To, msg.From)
	}
	return msg, true, nil
}

// deliver publishes a message's payload, after its send has waited for
// replicas, to the replicas that hold live sockets of its users. A failure
// is logged: the message is stored, and the sockets catch up by seq.
func (s *Store) deliver(ctx context.Context, payload []byte, origin string, users ...string) {
	if err := s.route(context.WithoutCancel(ctx), route{users: users, payload: payload, skip: origin}); err != nil {
		s.log.Warn("message stored, but live delivery failed", "users", users, "err", err)
	}
}

// route is one payload for the replicas of some users' sockets, but skip
// (a presence member; empty: none).
type route struct {
	users   []string
	payload []byte
	skip    string
}

// route publishes each payload with routeScript, pipelined.
func (s *Store) route(ctx context.Context, routes ...route) error {
	now := s.now().UnixMilli()
	calls := make([]call, len(routes))
	for i, r := range routes {
		keys := make([]string, len(r.users))
		for j, u := range r.users {
			keys[j] = s.keys.presence(u)
		}
		calls[i] = call{keys: keys, args: []any{now, s.keys.replicaChannelPrefix(), r.payload, r.skip}}
	}
	for _, cmd := range evalAll(ctx, s.rdb, routeScript, calls) {
		if err := cmd.Err(); err != nil {
			return err
		}
	}
	return nil
}

func validatePair(a, b string) error {
	if err := chat.ValidateUser(a); err != nil {
		return err
	}
	return chat.ValidateUser(b)
}

// generatedIDTTL is how long the record of a send without a client id, whose
// id the store generated, is kept: well past go-redis's retries of the
// command (three, each up to a read timeout), even with a long timeout.
const generatedIDTTL = 10 * time.Minute

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// History returns up to limit messages of the conversation of user with
// peer that are older than seq before (0: from the newest), newest first,
// with both users' read positions, atomically. It marks nothing read. It
// costs O(limit), not O(length of the conversation), for pages near the
// newest end. Malformed list elements are skipped with a warning; they
// still hold their seq.
func (s *Store) History(ctx context.Context, user, peer string, before int64, limit int) (chat.Page, error) {
	if err := validatePair(user, peer); err != nil {
		return chat.Page{}, err
	}
	if limit == 0 {
		limit = chat.DefaultPageSize
	}
	if limit < 1 || limit > chat.MaxPageSize {
		return chat.Page{}, chat.Invalid("limit must be 1 to %d", chat.MaxPageSize)
	}
	if before < 0 {
		return chat.Page{}, chat.Invalid("before must be a positive seq")
	}
	conv := chat.ConvKey(user, peer)
	if s.cl != nil {
		return s.clusterHistory(ctx, user, peer, conv, before, limit)
	}
	res, err := historyScript.Run(ctx, s.rdb,
		[]string{s.keys.conv(conv), s.keys.read(conv), s.keys.unread(user), s.keys.unread(peer)},
		before, limit, conv, user, peer).Slice()
	if err != nil {
		return chat.Page{}, fmt.Errorf("history %s: %w", conv, err)
	}
	return s.page(conv, res)
}

// page reads the reply of a history script: {length, top, unread, read,
// peer read, elements}.
func (s *Store) page(conv string, res []any) (chat.Page, error) {
	if len(res) != 6 {
		return chat.Page{}, fmt.Errorf("history %s: unexpected reply %v", conv, res)
	}
	top, _ := res[1].(int64)
	items, _ := res[5].([]any)
	page := chat.Page{Messages: make([]chat.Message, 0, len(items))}
	page.Unread, _ = res[2].(int64)
	page.Read, _ = res[3].(int64)
	page.PeerRead, _ = res[4].(int64)
	for i, it := range items {
		seq := top - int64(i)
		data, _ := it.(string)
		m, err := decodeElement(conv, seq, data)
		if err != nil {
			s.log.Warn("skipping malformed message", "conv", conv, "seq", seq, "err", err)
			continue
		}
		page.Messages = append(page.Messages, m)
	}
	page.More = top-int64(len(items)) > 0
	return page, nil
}

// MarkRead moves user's read position in the conversation with peer
// forward to seq (0 or past the newest: to the newest); it never moves it
// back. It sets the seed's unread count to what is left unread, and
// delivers a receipt (chat.KindReceipt) to the sockets of both users and
// the new count (chat.KindUnread) to the user's sockets, all but origin. An empty conversation is left alone: nothing is
// written or sent. On a Redis Cluster (see clusterMarkRead) there is no
// seed count; the position is written first, the rest follows.
func (s *Store) MarkRead(ctx context.Context, user, peer string, seq int64, origin string) (chat.ReadState, error) {
	if err := validatePair(user, peer); err != nil {
		return chat.ReadState{}, err
	}
	if seq < 0 {
		return chat.ReadState{}, chat.Invalid("seq must be positive")
	}
	conv := chat.ConvKey(user, peer)
	if s.cl != nil {
		return s.clusterMarkRead(ctx, user, peer, seq, origin, conv)
	}
	receipt := appendHead(nil, chat.KindReceipt, origin, []string{peer, user}, 0)
	receipt = appendFields(receipt, user, peer)
	receipt = append(receipt, '\t')
	badge := appendHead(nil, chat.KindUnread, origin, []string{user}, 0)
	badge = appendFields(badge, peer)
	badge = append(badge, '\t')
	now := s.now().UnixMilli()
	keys := []string{
		s.keys.read(conv), s.keys.conv(conv), s.keys.unread(user), s.keys.unread(peer),
		s.keys.unreadIndex(user), s.keys.unreadIndex(peer), s.keys.presence(peer), s.keys.presence(user),
		s.keys.inbox(user), s.keys.inbox(peer),
	}
	args := []any{conv, now, s.keys.replicaChannelPrefix(), receipt, "", user, peer, seq, badge, "\t", ""}
	if s.dur.replicas == 0 {
		res, err := readScript.Run(ctx, s.rdb, keys, append(args, "")...).Int64Slice()
		if err != nil {
			return chat.ReadState{}, fmt.Errorf("read %s: %w", conv, err)
		}
		if len(res) != 3 {
			return chat.ReadState{}, fmt.Errorf("read %s: unexpected reply %v", conv, res)
		}
		return chat.ReadState{Last: res[0], Read: res[1], Unread: res[2]}, nil
	}
	// Waiting for replicas: the frames go out once they have the read.
	cmd := s.evalWait(context.WithoutCancel(ctx), readScript, []call{{keys, append(args, "1")}})[0]
	res, _ := cmd.Val().([]any)
	if len(res) != 3 {
		if err := cmd.Err(); err != nil {
			return chat.ReadState{}, fmt.Errorf("read %s: %w", conv, err)
		}
		return chat.ReadState{}, fmt.Errorf("read %s: unexpected reply %v", conv, cmd.Val())
	}
	var st chat.ReadState
	st.Last, _ = res[0].(int64)
	st.Read, _ = res[1].(int64)
	st.Unread, _ = res[2].(int64)
	if st.Last == 0 {
		return st, nil // nothing written: nothing to wait for, nothing to tell
	}
	if err := cmd.Err(); err != nil {
		return chat.ReadState{}, fmt.Errorf("read %s: %w", conv, err)
	}
	r, unread := strconv.FormatInt(st.Read, 10), strconv.FormatInt(st.Unread, 10)
	if err := s.route(context.WithoutCancel(ctx),
		route{users: []string{peer, user}, payload: append(receipt, r...)},
		route{users: []string{user}, payload: append(append(append(badge, r...), '\t'), unread...)},
	); err != nil {
		s.log.Warn("read stored, but its receipt was not delivered", "conv", conv, "user", user, "err", err)
	}
	return st, nil
}

// Unread returns user's unread counts by peer, only those above 0: per
// conversation, the peer's messages after user's read position. It is one
// script, whose cost grows with the conversations that have unread messages
// and with the seed's hash of user (one field per conversation ever counted
// there), not with all of user's conversations. Malformed counts in the
// seed's hash count 0. On a Redis Cluster (see clusterUnread) it is two
// round trips: the user's unread hints, then the hinted conversations.
func (s *Store) Unread(ctx context.Context, user string) (map[string]int64, error) {
	if err := chat.ValidateUser(user); err != nil {
		return nil, err
	}
	if s.cl != nil {
		return s.clusterUnread(ctx, user)
	}
	res, err := unreadScript.Run(ctx, s.rdb, []string{s.keys.unread(user), s.keys.unreadIndex(user)},
		user, s.keys.prefix, s.keys.readPrefix()).Slice()
	if err != nil {
		return nil, fmt.Errorf("unread %s: %w", user, err)
	}
	out := make(map[string]int64, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		conv, _ := res[i].(string)
		n, _ := res[i+1].(int64)
		if peer, ok := chat.Peer(conv, user); ok && n > 0 {
			out[peer] = n
		}
	}
	return out, nil
}

// Inbox returns up to limit of user's conversations, most recent first,
// with the unread count, both read positions and the last message of each
// (limit 0: 100), and whether there are more.
func (s *Store) Inbox(ctx context.Context, user string, limit int) ([]chat.Conversation, bool, error) {
	if err := chat.ValidateUser(user); err != nil {
		return nil, false, err
	}
	if limit == 0 {
		limit = chat.DefaultInboxSize
	}
	if limit < 1 || limit > chat.MaxInboxSize {
		return nil, false, chat.Invalid("limit must be 1 to %d", chat.MaxInboxSize)
	}
	if s.cl != nil {
		return s.clusterInbox(ctx, user, limit)
	}
	res, err := inboxScript.Run(ctx, s.rdb, []string{s.keys.inbox(user), s.keys.unread(user)},
		limit+1, s.keys.prefix, user, s.keys.readPrefix()).Slice()
	if err != nil {
		return nil, false, fmt.Errorf("inbox %s: %w", user, err)
	}
	return s.inbox(res, user, limit)
}

// inbox reads the reply of an inbox script, flat sextuples {conv, length,
// newest element, unread, read, peer read}, and keeps the limit most
// recent conversations.
func (s *Store) inbox(res []any, user string, limit int) ([]chat.Conversation, bool, error) {
	out := make([]chat.Conversation, 0, len(res)/6)
	for i := 0; i+5 < len(res); i += 6 {
		conv, _ := res[i].(string)
		n, _ := res[i+1].(int64)
		data, _ := res[i+2].(string)
		peer, ok := chat.Peer(conv, user)
		if !ok {
			continue
		}
		c := chat.Conversation{With: peer}
		c.Unread, _ = res[i+3].(int64)
		c.Read, _ = res[i+4].(int64)
		c.PeerRead, _ = res[i+5].(int64)
		if m, err := decodeElement(conv, n, data); err != nil {
			s.log.Warn("skipping malformed message", "conv", conv, "seq", n, "err", err)
		} else {
			c.Last = &m
		}
		out = append(out, c)
	}
	slices.SortStableFunc(out, func(a, b chat.Conversation) int {
		return -cmpTime(a.Last, b.Last)
	})
	more := len(out) > limit
	if more {
		out = out[:limit]
	}
	return out, more, nil
}

func cmpTime(a, b *chat.Message) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	case a.Time < b.Time:
		return -1
	case a.Time > b.Time:
		return 1
	}
	return 0
}

// Typing delivers an ephemeral typing notice (chat.KindTyping) from user to
// the sockets of peer.
// Nothing is stored.
func (s *Store) Typing(ctx context.Context, user, peer string) error {
	if err := validatePair(user, peer); err != nil {
		return err
	}
	env := appendFields(appendHead(nil, chat.KindTyping, "", []string{peer}, 0), user)
	if s.cl != nil {
		return s.clusterTyping(ctx, peer, env)
	}
	if err := routeScript.Run(ctx, s.rdb, []string{s.keys.presence(peer)},
		s.now().UnixMilli(), s.keys.replicaChannelPrefix(), env).Err(); err != nil {
		return fmt.Errorf("typing %s: %w", peer, err)
	}
	return nil
}
