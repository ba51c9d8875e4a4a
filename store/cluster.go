package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/redis/go-redis/v9"
)

// The Redis Cluster side of a Store (PROTOCOL.md section 4, "Redis Cluster
// layout"). A Redis Cluster runs a script on the keys of one slot only, so
// what a single Redis does in one atomic script is split by slot: a
// conversation's keys live in its slot (the list, both read positions,
// the idempotency records), a user's in the user's (inbox, unread hints,
// presence). The conversation's script is the commit point of a send or a
// read; the users' scripts that follow only index it (inbox entries,
// unread hints) and learn where the users' sockets are, and they are
// written so that running them again, late or twice is harmless. Whatever
// a failure between the steps leaves behind is missing, not wrong, and
// the next send or read of the conversation (or a repeated send) puts it
// right: every step writes the conversation's state as it is, not a change.
//
// Unread counts and read positions come from the conversation's slot,
// always: a user's unread hints only say which conversations to look at.

// cluster is the Redis Cluster side of a Store.
type cluster struct {
	rdb  *redis.ClusterClient
	keys clusterKeys
	dur  durability
}

// newCluster returns the cluster side of a Store over rdb, or nil when rdb
// is no Redis Cluster client. It panics on a prefix ValidatePrefix refuses.
func newCluster(rdb redis.UniversalClient, prefix string, dur durability) *cluster {
	c, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return nil
	}
	if err := ValidatePrefix(rdb, prefix); err != nil {
		panic(err)
	}
	return &cluster{rdb: c, keys: clusterKeys{prefix: prefix}, dur: dur}
}

// ValidatePrefix checks a key prefix for the Redis rdb: on a Redis Cluster
// it may not hold '{' or '}', which would change the hash tags that put
// the keys of one conversation, and of one user, in one slot. On a single
// Redis any prefix does.
func ValidatePrefix(rdb redis.UniversalClient, prefix string) error {
	if _, ok := rdb.(*redis.ClusterClient); ok && strings.ContainsAny(prefix, "{}") {
		return fmt.Errorf("store: prefix %q holds '{' or '}', which a Redis Cluster reads as a hash tag", prefix)
	}
	return nil
}

// call is one script call of a pipeline.
type call struct {
	keys []string
	args []any
}

// evalAll runs script once per call in one pipeline (see evalAll).
func (c *cluster) evalAll(ctx context.Context, script *redis.Script, calls []call) []*redis.Cmd {
	return evalAll(ctx, c.rdb, script, calls)
}

// side is one user's state in a conversation, as the conversation's
// script left it: the user's read position, for the user's unread hint.
type side struct {
	user string
	read int64
	skip string // a presence member of user that needs nothing published
}

// touch runs clusterUserScript for each side of the conversation conv,
// whose length is n, in one pipeline. Each user's unread hint is brought to
// the side's state; at, when above 0, puts the conversation in the user's
// inbox scored at that time (ms) under the ZADD condition cond ("GT" or
// "NX"). It returns, per side, the replicas that hold live sockets of the
// user at now (ms; 0 asks for none). With Config.Wait, the calls wait for
// replicas (see wait.go), and an error may wrap ErrNotReplicated.
func (c *cluster) touch(ctx context.Context, conv string, n, at int64, cond string, now int64, sides ...side) ([][]string, error) {
	inbox, route := "", ""
	if at > 0 {
		inbox = strconv.FormatInt(at, 10)
	}
	if now > 0 {
		route = strconv.FormatInt(now, 10)
	}
	calls := make([]call, len(sides))
	for i, sd := range sides {
		calls[i] = call{
			keys: []string{c.keys.inbox(sd.user), c.keys.unreadHints(sd.user), c.keys.presence(sd.user)},
			args: []any{conv, inbox, cond, sd.read, n, route, sd.skip},
		}
	}
	out := make([][]string, len(sides))
	var first error
	eval := c.evalAll
	if c.dur.replicas > 0 {
		eval = c.evalWait
	}
	for i, cmd := range eval(ctx, clusterUserScript, calls) {
		names, err := cmd.StringSlice()
		if err != nil && first == nil {
			first = fmt.Errorf("user %s: %w", sides[i].user, err)
		}
		out[i] = names
	}
	return out, first
}

// publication is one payload for one shard channel.
type publication struct {
	channel string
	payload []byte
}

// to returns a publication of payload to each replica of the sets, once.
func (c *cluster) to(payload []byte, replicas ...[]string) []publication {
	var out []publication
	seen := map[string]bool{}
	for _, set := range replicas {
		for _, r := range set {
			if !seen[r] {
				seen[r] = true
				out = append(out, publication{c.keys.replicaChannel(r), payload})
			}
		}
	}
	return out
}

// publish sends each publication with SPUBLISH, pipelined: go-redis sends
// each node its share at once, in order.
func (c *cluster) publish(ctx context.Context, pubs []publication) error {
	switch len(pubs) {
	case 0:
		return nil
	case 1:
		return c.rdb.SPublish(ctx, pubs[0].channel, pubs[0].payload).Err()
	}
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, pb := range pubs {
			p.SPublish(ctx, pb.channel, pb.payload)
		}
		return nil
	})
	return err
}

// clusterSend stores a message on a Redis Cluster, in three round trips:
//
//  1. the conversation's script (clusterSendScript), which checks the
//     idempotency key, stores the message, moves the read positions and
//     records the key. Once it has run, the message is stored: this is the
//     commit point, and the send succeeds;
//  2. one script per user (the recipient's and the sender's, pipelined),
//     which puts the conversation in the inbox, sets the recipient's unread
//     hint and clears the sender's, and reads where the user's sockets are;
//  3. SPUBLISH of the message to those replicas.
//
// A repeated (sender, client id) in the same conversation returns the
// first message with dup true, and runs steps 2 and 3 again, with the
// conversation as it is now: that repairs what a failure between the
// steps left behind (an inbox entry, an unread hint), and delivers the
// message again. idemMS is how long the client id is remembered.
func (s *Store) clusterSend(ctx context.Context, req chat.SendRequest, conv string, ts float64, tsText []byte, idemMS int64) (chat.Message, bool, error) {
	k := s.cl.keys
	reply, err := s.sends.run(ctx,
		[]string{k.conv(conv), k.read(conv), k.idem(conv, req.From, req.ClientID)},
		encodeElement(req.From, req.To, req.Text, tsText), idemMS, req.From, req.To)
	if err != nil {
		return chat.Message{}, false, fmt.Errorf("send %s: %w", conv, err)
	}
	res, ok := reply.([]any)
	if !ok || len(res) != 6 {
		return chat.Message{}, false, fmt.Errorf("send %s: unexpected reply %v", conv, reply)
	}
	stored, _ := res[0].(int64)
	seq, _ := res[1].(int64)
	n, _ := res[2].(int64)
	rf, _ := res[3].(int64)
	rt, _ := res[4].(int64)
	msg := chat.Message{Conv: conv, Seq: seq, From: req.From, To: req.To, Text: req.Text, Time: ts}
	if stored != 1 {
		data, _ := res[5].(string)
		if msg, err = decodeElement(conv, seq, data); err != nil {
			return chat.Message{}, false, fmt.Errorf("send %s: earlier message #%d: %w", conv, seq, err)
		}
	}
	sides := []side{{user: req.To, read: rt}, {user: req.From, read: rf, skip: req.Origin}}
	if req.To == req.From {
		sides = sides[:1]
	}
	if err := s.clusterAfterSend(ctx, msg, req.Origin, n, sides); err != nil {
		return chat.Message{}, false, fmt.Errorf("send %s: stored as #%d, but: %w", conv, seq, err)
	}
	return msg, stored != 1, nil
}

// clusterAfterSend runs steps 2 and 3 of clusterSend for the stored
// message m, and returns the failure of either: the send is then answered
// unavailable although the message is stored, and the client's retry with
// the same id (what the protocol asks of it) finds the message and runs
// steps 2 and 3 again. So a `sent` always means the message is in the
// inboxes and was handed to pub/sub for the replicas of both users, as on
// a single Redis, where all of it is one script. Step 3 goes to the
// replicas step 2 reached even when it failed for the other user. The
// caller's cancellation does not stop them. With Config.Wait, step 2 also
// waits for replicas.
func (s *Store) clusterAfterSend(ctx context.Context, m chat.Message, origin string, n int64, sides []side) error {
	ctx = context.WithoutCancel(ctx)
	at := int64(math.Floor(m.Time * 1000))
	replicas, terr := s.cl.touch(ctx, m.Conv, n, at, "GT", s.now().UnixMilli(), sides...)
	perr := s.cl.publish(ctx, s.cl.to(messageDelivery(m, origin), replicas...))
	switch {
	case terr != nil:
		return fmt.Errorf("inbox entries and unread hints: %w", terr)
	case perr != nil:
		return fmt.Errorf("live delivery: %w", perr)
	}
	return nil
}

// messageDelivery renders the delivery payload of the stored message m
// (see appendHead), as the single-node send script does.
func messageDelivery(m chat.Message, origin string) []byte {
	ts := strconv.AppendFloat(nil, m.Time, 'f', -1, 64)
	if !bytes.ContainsRune(ts, '.') {
		ts = append(ts, ".0"...)
	}
	stored := time.UnixMicro(int64(math.Round(m.Time * 1e6)))
	head, tail := messagePayload(m.Conv, chat.SendRequest{From: m.From, To: m.To, Text: m.Text, Origin: origin}, stored, ts)
	return append(strconv.AppendInt(head, m.Seq, 10), tail...)
}

// clusterHistory reads a page with one script in the conversation's slot.
func (s *Store) clusterHistory(ctx context.Context, user, peer, conv string, before int64, limit int) (chat.Page, error) {
	res, err := clusterHistoryScript.Run(ctx, s.rdb, []string{s.cl.keys.conv(conv), s.cl.keys.read(conv)},
		before, limit, user, peer).Slice()
	if err != nil {
		return chat.Page{}, fmt.Errorf("history %s: %w", conv, err)
	}
	return s.page(conv, res)
}

// clusterMarkRead moves user's read position with the conversation's
// script (the read's commit point), then brings both users' inbox entries
// and unread hints up to date and learns where their sockets are, in one
// pipeline, then sends the receipt to both users' replicas and the new
// count to the reader's. With Config.Wait, the first two wait for
// replicas (wait.go) and the frames go out after them.
func (s *Store) clusterMarkRead(ctx context.Context, user, peer string, seq int64, origin, conv string) (chat.ReadState, error) {
	keys, args := []string{s.cl.keys.read(conv), s.cl.keys.conv(conv)}, []any{user, peer, seq}
	var cmd *redis.Cmd
	if s.dur.replicas > 0 {
		cmd = s.cl.evalWait(context.WithoutCancel(ctx), clusterReadScript, []call{{keys, args}})[0]
	} else {
		cmd = clusterReadScript.Run(ctx, s.rdb, keys, args...)
	}
	res, _ := cmd.Val().([]any)
	if len(res) != 4 {
		if err := cmd.Err(); err != nil {
			return chat.ReadState{}, fmt.Errorf("read %s: %w", conv, err)
		}
		return chat.ReadState{}, fmt.Errorf("read %s: unexpected reply %v", conv, cmd.Val())
	}
	n, _ := res[0].(int64)
	r, _ := res[1].(int64)
	rp, _ := res[2].(int64)
	last, _ := res[3].(string)
	st := chat.ReadState{Last: n, Read: r, Unread: n - r}
	if n == 0 {
		return st, nil // nothing written: nothing to wait for
	}
	if err := cmd.Err(); err != nil {
		return chat.ReadState{}, fmt.Errorf("read %s: %w", conv, err)
	}

	ctx = context.WithoutCancel(ctx)
	now := s.now().UnixMilli()
	// The inbox entries exist after any send; a conversation that has none
	// (moved in from elsewhere, or a send that failed after its commit)
	// gets them, scored by its newest message, so that it stays listed.
	at := now
	if t, ok := elementTime(last); ok {
		at = int64(math.Floor(t * 1000))
	}
	sides := []side{{user: user, read: r}, {user: peer, read: rp}}
	if user == peer {
		sides = sides[:1]
	}
	replicas, touchErr := s.cl.touch(ctx, conv, n, at, "NX", now, sides...)
	if touchErr != nil && s.dur.replicas == 0 {
		s.log.Warn("read stored, but inbox entries and unread hints may lag", "conv", conv, "user", user, "err", touchErr)
	}
	receipt := appendHead(nil, chat.KindReceipt, origin, []string{peer, user}, 0)
	receipt = appendFields(receipt, user, peer, strconv.FormatInt(r, 10))
	badge := appendHead(nil, chat.KindUnread, origin, []string{user}, 0)
	badge = appendFields(badge, peer, strconv.FormatInt(r, 10), strconv.FormatInt(st.Unread, 10))
	pubs := s.cl.to(receipt, replicas...)
	if len(replicas) > 0 {
		pubs = append(pubs, s.cl.to(badge, replicas[0])...)
	}
	if err := s.cl.publish(ctx, pubs); err != nil {
		s.log.Warn("read stored, but its receipt was not delivered", "conv", conv, "user", user, "err", err)
	}
	if s.dur.replicas > 0 && touchErr != nil {
		// As for a send (clusterAfterSend): the client's retry repairs it.
		return chat.ReadState{}, fmt.Errorf("read %s: stored, but inbox entries and unread hints: %w", conv, touchErr)
	}
	return st, nil
}

// elementTime reads the "time" of a list element, if it has one.
func elementTime(data string) (float64, bool) {
	var e struct {
		Time json.RawMessage `json:"time"`
	}
	if json.Unmarshal([]byte(data), &e) != nil || e.Time == nil {
		return 0, false
	}
	t, err := decodeTime(e.Time)
	return t, err == nil
}

// clusterUnread reads user's unread hints, then the length and user's read
// position of each hinted conversation from its slot (pipelined), and
// returns the counts above 0. Hints of conversations with nothing unread
// are removed, unless a newer hint replaced them meanwhile, and so are
// fields that name no conversation of user (written by something else);
// if that fails, the next Unread tries again.
func (s *Store) clusterUnread(ctx context.Context, user string) (map[string]int64, error) {
	k := s.cl.keys
	hints, err := s.rdb.HKeys(ctx, k.unreadHints(user)).Result()
	if err != nil {
		return nil, fmt.Errorf("unread %s: %w", user, err)
	}
	convs := make([]string, 0, len(hints))
	peers := make([]string, 0, len(hints))
	calls := make([]call, 0, len(hints))
	var junk []string
	for _, conv := range hints {
		peer, ok := chat.Peer(conv, user)
		if !ok || chat.ConvKey(user, peer) != conv {
			junk = append(junk, conv) // not a conversation of user: none of chatd's
			continue
		}
		convs = append(convs, conv)
		peers = append(peers, peer)
		calls = append(calls, call{keys: []string{k.conv(conv), k.read(conv)}, args: []any{user, peer, ""}})
	}
	out := make(map[string]int64, len(calls))
	var drop []call
	for i, cmd := range s.cl.evalAll(ctx, clusterConvScript, calls) {
		st, err := readConvState(cmd)
		if err != nil {
			return nil, fmt.Errorf("unread %s: %s: %w", user, convs[i], err)
		}
		if st.n > st.read {
			out[peers[i]] = st.n - st.read
			continue
		}
		drop = append(drop, call{
			keys: []string{k.inbox(user), k.unreadHints(user), k.presence(user)},
			args: []any{convs[i], "", "", st.read, st.n, ""},
		})
	}
	for _, cmd := range s.cl.evalAll(ctx, clusterUserScript, drop) {
		if err := cmd.Err(); err != nil {
			s.log.Debug("could not drop a spent unread hint", "user", user, "err", err)
		}
	}
	if len(junk) > 0 {
		if err := s.rdb.HDel(ctx, k.unreadHints(user), junk...).Err(); err != nil {
			s.log.Debug("could not drop unread hints of no conversation", "user", user, "err", err)
		}
	}
	return out, nil
}

// convState is what clusterConvScript says of a conversation.
type convState struct {
	n, read, peerRead int64
	last              string
}

// readConvState reads a clusterConvScript reply.
func readConvState(cmd *redis.Cmd) (convState, error) {
	res, err := cmd.Slice()
	if err != nil {
		return convState{}, err
	}
	if len(res) != 4 {
		return convState{}, fmt.Errorf("unexpected reply %v", res)
	}
	var c convState
	c.n, _ = res[0].(int64)
	c.read, _ = res[1].(int64)
	c.peerRead, _ = res[2].(int64)
	c.last, _ = res[3].(string)
	return c, nil
}

// clusterInbox reads the newest limit+1 entries of user's inbox, then each
// conversation's length, newest element and both read positions from its
// slot (pipelined).
func (s *Store) clusterInbox(ctx context.Context, user string, limit int) ([]chat.Conversation, bool, error) {
	k := s.cl.keys
	names, err := s.rdb.ZRevRange(ctx, k.inbox(user), 0, int64(limit)).Result()
	if err != nil {
		return nil, false, fmt.Errorf("inbox %s: %w", user, err)
	}
	calls := make([]call, 0, len(names))
	convs := make([]string, 0, len(names))
	for _, name := range names {
		peer, ok := chat.Peer(name, user)
		if !ok || chat.ConvKey(user, peer) != name {
			continue
		}
		convs = append(convs, name)
		calls = append(calls, call{keys: []string{k.conv(name), k.read(name)}, args: []any{user, peer, "1"}})
	}
	res := make([]any, 0, 6*len(calls))
	for i, cmd := range s.cl.evalAll(ctx, clusterConvScript, calls) {
		st, err := readConvState(cmd)
		if err != nil {
			return nil, false, fmt.Errorf("inbox %s: %s: %w", user, convs[i], err)
		}
		if st.n == 0 {
			continue
		}
		res = append(res, convs[i], st.n, st.last, st.n-st.read, st.read, st.peerRead)
	}
	return s.inbox(res, user, limit)
}

// clusterTyping reads where peer's sockets are and sends them env.
func (s *Store) clusterTyping(ctx context.Context, peer string, env []byte) error {
	members, err := s.rdb.ZRangeByScore(ctx, s.cl.keys.presence(peer), &redis.ZRangeBy{
		Min: strconv.FormatInt(s.now().UnixMilli(), 10), Max: "+inf",
	}).Result()
	if err != nil {
		return fmt.Errorf("typing %s: %w", peer, err)
	}
	if err := s.cl.publish(ctx, s.cl.to(env, replicasOf(members))); err != nil {
		return fmt.Errorf("typing %s: %w", peer, err)
	}
	return nil
}

// replicasOf returns the replicas named by presence members "<replica>
// <conn>", each once, in order.
func replicasOf(members []string) []string {
	var out []string
	for _, m := range members {
		r, _, ok := strings.Cut(m, " ")
		if ok && r != "" && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}
