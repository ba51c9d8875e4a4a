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
// the recipient, in the same atomic step that decides whether the recipient
// is online. So a replica receives only what its sockets need, never
// subscribes per user, and a user who connects while a message is sent
// either is found online (and is published to) or is counted unread.
//
// A Store is safe for concurrent use.
package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
)

// Limits of the wire protocol.
const (
	MaxTextBytes     = 4096 // longest message text, in bytes
	MaxClientIDBytes = 128  // longest client-chosen message id, in bytes
	DefaultPageSize  = 50   // history page size when none is asked
	MaxPageSize      = 200  // largest history page
	DefaultInboxSize = 100  // conversations in an inbox when none is asked
	MaxInboxSize     = 500  // largest inbox
)

// Errors a caller can tell apart with errors.Is. Each means nothing was stored.
var (
	ErrInvalid  = errors.New("store: invalid request")
	ErrTooLarge = errors.New("store: text too large")
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
}

// Store is chatd's Redis data layer. It is safe for concurrent use.
type Store struct {
	rdb    redis.UniversalClient
	keys   keys
	idemMS int64
	now    func() time.Time
	log    *slog.Logger
	sends  *batcher
}

// New returns a Store over rdb. It does not touch Redis.
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
	return &Store{
		rdb:    rdb,
		keys:   keys{prefix: cfg.Prefix},
		idemMS: cfg.IdempotencyTTL.Milliseconds(),
		now:    cfg.Now,
		log:    cfg.Logger,
		sends:  newBatcher(rdb, sendScript),
	}
}

// Close stops the goroutine that pipelines sends, after the pipeline in
// flight; a send after Close fails with ErrClosed. It does not close the
// Redis client, which the caller owns. It is safe to call more than once.
func (s *Store) Close() { s.sends.close() }

// Ping reports whether Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// SendRequest is one message to store.
type SendRequest struct {
	From, To, Text string
	// ClientID makes the send idempotent per sender. When empty a random one
	// is assigned before the call, so a retried command cannot store twice.
	ClientID string
	// Origin is the sending connection's presence member; it is left out of
	// live delivery (it gets the reply instead). May be empty.
	Origin string
}

// Send stores a message: it pushes the seed-format entry onto the
// conversation list, moves the sender's read position to it, bumps the
// recipient's count in the seed's unread hash when the recipient has no
// live connection, records the idempotency key, updates both inboxes and
// publishes the message to the replicas of both users, in one atomic step. A repeated (sender, client id) returns the first message with
// dup true and writes nothing.
func (s *Store) Send(ctx context.Context, req SendRequest) (msg Message, dup bool, err error) {
	if err := validatePair(req.From, req.To); err != nil {
		return Message{}, false, err
	}
	if err := ValidateText(req.Text); err != nil {
		return Message{}, false, err
	}
	if req.ClientID == "" {
		req.ClientID = "~" + randomID()
	} else if err := ValidateClientID(req.ClientID); err != nil {
		return Message{}, false, err
	}
	conv := ConvKey(req.From, req.To)
	now := s.now()
	ts, tsText := formatTime(now)
	frameHead, tail := messageFrame(conv, req.From, req.To, req.Text, tsText)
	head := appendEnvelope(make([]byte, 0, 96+len(frameHead)), 'm', req.Origin,
		[]string{req.To, req.From}, now.UnixMicro())
	head = append(head, frameHead...)
	reply, err := s.sends.run(ctx,
		[]string{
			s.keys.conv(conv), s.keys.unread(req.To), s.keys.idem(req.From, req.ClientID),
			s.keys.inbox(req.From), s.keys.inbox(req.To),
			s.keys.presence(req.To), s.keys.presence(req.From),
			s.keys.read(conv), s.keys.unread(req.From),
			s.keys.unreadIndex(req.To), s.keys.unreadIndex(req.From),
		},
		encodeElement(req.From, req.To, req.Text, tsText), conv, now.UnixMilli(), s.idemMS,
		s.keys.replicaChannelPrefix(), head, tail, s.keys.prefix, req.From, req.To,
	)
	if err != nil {
		return Message{}, false, fmt.Errorf("send %s: %w", conv, err)
	}
	res, ok := reply.([]any)
	if !ok {
		return Message{}, false, fmt.Errorf("send %s: unexpected reply %v", conv, reply)
	}
	if len(res) == 2 {
		seq, _ := res[1].(int64)
		return Message{Conv: conv, Seq: seq, From: req.From, To: req.To, Text: req.Text, Time: ts}, false, nil
	}
	if len(res) != 4 {
		return Message{}, false, fmt.Errorf("send %s: unexpected reply %v", conv, res)
	}
	prevConv, _ := res[1].(string)
	seq, _ := res[2].(int64)
	data, _ := res[3].(string)
	msg, err = decodeElement(prevConv, seq, data)
	if err != nil {
		return Message{}, false, fmt.Errorf("send %s: earlier message %s #%d: %w", conv, prevConv, seq, err)
	}
	return msg, true, nil
}

// messageFrame renders the "message" frame around its seq: head ends just
// before the seq and tail follows it, so the script only concatenates.
func messageFrame(conv, from, to, text string, ts []byte) (head, tail []byte) {
	head = append([]byte(`{"type":"message","message":{"conv":`), appendJSONString(nil, conv)...)
	head = append(head, `,"seq":`...)
	tail = append([]byte(`,"from":`), appendJSONString(nil, from)...)
	tail = append(tail, `,"to":`...)
	tail = appendJSONString(tail, to)
	tail = append(tail, `,"text":`...)
	tail = appendJSONString(tail, text)
	tail = append(tail, `,"time":`...)
	tail = append(tail, ts...)
	tail = append(tail, "}}"...)
	return head, tail
}

// ValidateText checks a message text: 1 to 4096 bytes of valid UTF-8.
func ValidateText(text string) error {
	switch {
	case text == "":
		return fmt.Errorf("%w: text must be 1 to %d bytes", ErrInvalid, MaxTextBytes)
	case len(text) > MaxTextBytes:
		return fmt.Errorf("%w: text must be 1 to %d bytes", ErrTooLarge, MaxTextBytes)
	case !utf8.ValidString(text):
		return fmt.Errorf("%w: text is not valid UTF-8", ErrInvalid)
	}
	return nil
}

// ValidateClientID checks a client-chosen message id: 1 to 128 bytes of
// printable ASCII without spaces.
func ValidateClientID(id string) error {
	if id == "" || len(id) > MaxClientIDBytes {
		return fmt.Errorf("%w: id must be 1 to %d characters", ErrInvalid, MaxClientIDBytes)
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return fmt.Errorf("%w: id must be printable ASCII without spaces", ErrInvalid)
		}
	}
	return nil
}

func validatePair(a, b string) error {
	if err := ValidateUser(a); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := ValidateUser(b); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// Page is one page of a conversation's history.
type Page struct {
	Messages []Message // newest first
	Unread   int64     // the reader's unread messages: the peer's after Read
	Read     int64     // the seq up to which the reader has read
	PeerRead int64     // the seq up to which the peer has read
	More     bool      // older messages exist
}

// History returns up to limit messages of the conversation of user with
// peer that are older than seq before (0: from the newest), newest first,
// with both users' read positions, atomically. It marks nothing read. It
// costs O(limit), not O(length of the conversation), for pages near the
// newest end. Malformed list elements are skipped with a warning; they
// still hold their seq.
func (s *Store) History(ctx context.Context, user, peer string, before int64, limit int) (Page, error) {
	if err := validatePair(user, peer); err != nil {
		return Page{}, err
	}
	if limit == 0 {
		limit = DefaultPageSize
	}
	if limit < 1 || limit > MaxPageSize {
		return Page{}, fmt.Errorf("%w: limit must be 1 to %d", ErrInvalid, MaxPageSize)
	}
	if before < 0 {
		return Page{}, fmt.Errorf("%w: before must be a positive seq", ErrInvalid)
	}
	conv := ConvKey(user, peer)
	res, err := historyScript.Run(ctx, s.rdb,
		[]string{s.keys.conv(conv), s.keys.read(conv), s.keys.unread(user), s.keys.unread(peer)},
		before, limit, conv, user, peer).Slice()
	if err != nil {
		return Page{}, fmt.Errorf("history %s: %w", conv, err)
	}
	if len(res) != 6 {
		return Page{}, fmt.Errorf("history %s: unexpected reply %v", conv, res)
	}
	top, _ := res[1].(int64)
	items, _ := res[5].([]any)
	page := Page{Messages: make([]Message, 0, len(items))}
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

// ReadState is a user's read position in one conversation after MarkRead.
type ReadState struct {
	Last   int64 // the conversation's last seq (0: it is empty)
	Read   int64 // the seq up to which the user has read
	Unread int64 // the peer's messages after Read
}

// MarkRead moves user's read position in the conversation with peer
// forward to seq (0 or past the newest: to the newest); it never moves it
// back. It sets the seed's unread count to what is left unread, sends a
// receipt ({"type":"receipt","by":user,"with":peer,"seq":read}) to the
// sockets of both users and the new count
// ({"type":"unread","with":peer,"read":read,"unread":n}) to the user's
// sockets, all but origin. An empty conversation is left alone: nothing is
// written or sent.
func (s *Store) MarkRead(ctx context.Context, user, peer string, seq int64, origin string) (ReadState, error) {
	if err := validatePair(user, peer); err != nil {
		return ReadState{}, err
	}
	if seq < 0 {
		return ReadState{}, fmt.Errorf("%w: seq must be positive", ErrInvalid)
	}
	conv := ConvKey(user, peer)
	receipt := appendEnvelope(nil, 'r', origin, []string{peer, user}, 0)
	receipt = append(receipt, `{"type":"receipt","by":`...)
	receipt = appendJSONString(receipt, user)
	receipt = append(receipt, `,"with":`...)
	receipt = appendJSONString(receipt, peer)
	receipt = append(receipt, `,"seq":`...)
	badge := appendEnvelope(nil, 'u', origin, []string{user}, 0)
	badge = append(badge, `{"type":"unread","with":`...)
	badge = appendJSONString(badge, peer)
	badge = append(badge, `,"read":`...)
	now := s.now().UnixMilli()
	res, err := readScript.Run(ctx, s.rdb,
		[]string{
			s.keys.read(conv), s.keys.conv(conv), s.keys.unread(user), s.keys.unread(peer),
			s.keys.unreadIndex(user), s.keys.unreadIndex(peer), s.keys.presence(peer), s.keys.presence(user),
			s.keys.inbox(user), s.keys.inbox(peer),
		},
		conv, now, s.keys.replicaChannelPrefix(), receipt, "}", user, peer, seq,
		badge, `,"unread":`, "}").Int64Slice()
	if err != nil {
		return ReadState{}, fmt.Errorf("read %s: %w", conv, err)
	}
	if len(res) != 3 {
		return ReadState{}, fmt.Errorf("read %s: unexpected reply %v", conv, res)
	}
	return ReadState{Last: res[0], Read: res[1], Unread: res[2]}, nil
}

// Unread returns user's unread counts by peer, only those above 0: per
// conversation, the peer's messages after user's read position. It is one
// script, whose cost grows with the conversations that have unread messages
// and with the seed's hash of user (one field per conversation ever counted
// there), not with all of user's conversations. Malformed counts in the
// seed's hash count 0.
func (s *Store) Unread(ctx context.Context, user string) (map[string]int64, error) {
	if err := ValidateUser(user); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
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
		if peer, ok := Peer(conv, user); ok && n > 0 {
			out[peer] = n
		}
	}
	return out, nil
}

// Conversation is one entry of an inbox.
type Conversation struct {
	With     string   `json:"with"`
	Unread   int64    `json:"unread"`    // the peer's messages after Read
	Read     int64    `json:"read"`      // the seq up to which the user has read
	PeerRead int64    `json:"peer_read"` // the seq up to which the peer has read
	Last     *Message `json:"last"`
}

// Inbox returns up to limit of user's conversations, most recent first,
// with the unread count, both read positions and the last message of each
// (limit 0: 100), and whether there are more.
func (s *Store) Inbox(ctx context.Context, user string, limit int) ([]Conversation, bool, error) {
	if err := ValidateUser(user); err != nil {
		return nil, false, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if limit == 0 {
		limit = DefaultInboxSize
	}
	if limit < 1 || limit > MaxInboxSize {
		return nil, false, fmt.Errorf("%w: limit must be 1 to %d", ErrInvalid, MaxInboxSize)
	}
	res, err := inboxScript.Run(ctx, s.rdb, []string{s.keys.inbox(user), s.keys.unread(user)},
		limit+1, s.keys.prefix, user, s.keys.readPrefix()).Slice()
	if err != nil {
		return nil, false, fmt.Errorf("inbox %s: %w", user, err)
	}
	out := make([]Conversation, 0, len(res)/6)
	for i := 0; i+5 < len(res); i += 6 {
		conv, _ := res[i].(string)
		n, _ := res[i+1].(int64)
		data, _ := res[i+2].(string)
		peer, ok := Peer(conv, user)
		if !ok {
			continue
		}
		c := Conversation{With: peer}
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
	slices.SortStableFunc(out, func(a, b Conversation) int {
		return -cmpTime(a.Last, b.Last)
	})
	more := len(out) > limit
	if more {
		out = out[:limit]
	}
	return out, more, nil
}

func cmpTime(a, b *Message) int {
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

// Typing sends an ephemeral typing frame from user to the sockets of peer.
// Nothing is stored.
func (s *Store) Typing(ctx context.Context, user, peer string) error {
	if err := validatePair(user, peer); err != nil {
		return err
	}
	env := appendEnvelope(nil, 't', "", []string{peer}, 0)
	env = append(env, `{"type":"typing","from":`...)
	env = appendJSONString(env, user)
	env = append(env, '}')
	if err := routeScript.Run(ctx, s.rdb, []string{s.keys.presence(peer)},
		s.now().UnixMilli(), s.keys.replicaChannelPrefix(), env).Err(); err != nil {
		return fmt.Errorf("typing %s: %w", peer, err)
	}
	return nil
}
