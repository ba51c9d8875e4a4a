package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Presence on a Redis Cluster. A user's live connections are a sorted set
// in the user's slot, as on a single Redis; the index the reaper walks,
// "<user> <member>" → expiry, lives in a slot of its own, so an entry and
// its index entry are written by two calls. The index entry is written
// first and removed last: a failure between the two leaves an index entry
// without an entry, which the reaper removes harmlessly, never an entry
// that the reaper cannot find. Online and offline changes are published
// by chatd (SPUBLISH) after the user's script says one happened.

// clusterConnect adds or refreshes one connection: its index entry, then
// its entry, then, when the user came online by it, the announcement.
func (s *Store) clusterConnect(ctx context.Context, user, member string, expiry time.Time) (bool, error) {
	k := s.cl.keys
	now := s.now()
	if err := s.rdb.ZAdd(ctx, k.presenceIndex(), redis.Z{Score: float64(expiry.UnixMilli()), Member: user + " " + member}).Err(); err != nil {
		return false, fmt.Errorf("presence connect %s: %w", user, err)
	}
	ttl := expiry.Sub(now) + time.Minute
	n, err := clusterConnectScript.Run(ctx, s.rdb, []string{k.presence(user)},
		member, expiry.UnixMilli(), now.UnixMilli(), ttl.Milliseconds()).Int64()
	if err != nil {
		return false, fmt.Errorf("presence connect %s: %w", user, err)
	}
	if n != 1 {
		return false, nil
	}
	if err := s.announce(ctx, true, user); err != nil {
		return true, fmt.Errorf("presence connect %s: %w", user, err)
	}
	return true, nil
}

// announce publishes that users came online (or went offline) on the
// presence channel, pipelined.
func (s *Store) announce(ctx context.Context, online bool, users ...string) error {
	head := "p 0 "
	if online {
		head = "p 1 "
	}
	pubs := make([]publication, len(users))
	for i, u := range users {
		pubs[i] = publication{s.cl.keys.presenceChannel(), []byte(head + u)}
	}
	return s.cl.publish(ctx, pubs)
}

// clusterRefresh does what clusterConnect does for many connections, in
// batches of 500: the batch's index entries in one command, then their
// entries in one pipeline, then the announcements.
func (s *Store) clusterRefresh(ctx context.Context, conns map[string]string, expiry time.Time) (bool, error) {
	k := s.cl.keys
	type entry struct{ user, member string }
	entries := make([]entry, 0, len(conns))
	for m, u := range conns {
		entries = append(entries, entry{u, m})
	}
	now := s.now()
	ttl := (expiry.Sub(now) + time.Minute).Milliseconds()
	lapsed := false
	for len(entries) > 0 {
		batch := entries[:min(len(entries), 500)]
		entries = entries[len(batch):]
		index := make([]redis.Z, len(batch))
		calls := make([]call, len(batch))
		for i, e := range batch {
			index[i] = redis.Z{Score: float64(expiry.UnixMilli()), Member: e.user + " " + e.member}
			calls[i] = call{keys: []string{k.presence(e.user)}, args: []any{e.member, expiry.UnixMilli(), now.UnixMilli(), ttl}}
		}
		if err := s.rdb.ZAdd(ctx, k.presenceIndex(), index...).Err(); err != nil {
			return lapsed, fmt.Errorf("presence refresh: %w", err)
		}
		var came []string
		var first error
		for i, cmd := range s.cl.evalAll(ctx, clusterConnectScript, calls) {
			n, err := cmd.Int64()
			if err != nil && first == nil {
				first = fmt.Errorf("presence refresh %s: %w", batch[i].user, err)
			}
			if n == 1 {
				lapsed = true
				came = append(came, batch[i].user)
			}
		}
		if err := s.announce(ctx, true, came...); err != nil && first == nil {
			first = fmt.Errorf("presence refresh: %w", err)
		}
		if first != nil {
			return lapsed, first
		}
	}
	return lapsed, nil
}

// clusterDisconnect removes one connection: its entry, then its index
// entry, then, when the user went offline by it, the announcement.
func (s *Store) clusterDisconnect(ctx context.Context, user, member string) (bool, error) {
	k := s.cl.keys
	n, err := clusterDisconnectScript.Run(ctx, s.rdb, []string{k.presence(user)}, member, s.now().UnixMilli()).Int64()
	if err != nil {
		return false, fmt.Errorf("presence disconnect %s: %w", user, err)
	}
	if err := s.rdb.ZRem(ctx, k.presenceIndex(), user+" "+member).Err(); err != nil {
		return n == 1, fmt.Errorf("presence disconnect %s: %w", user, err)
	}
	if n != 1 {
		return false, nil
	}
	if err := s.announce(ctx, false, user); err != nil {
		return true, fmt.Errorf("presence disconnect %s: %w", user, err)
	}
	return true, nil
}

// clusterOnline counts each user's live connections, pipelined.
func (s *Store) clusterOnline(ctx context.Context, users []string) (map[string]bool, error) {
	from := strconv.FormatInt(s.now().UnixMilli(), 10)
	cmds := make([]*redis.IntCmd, len(users))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, u := range users {
			cmds[i] = p.ZCount(ctx, s.cl.keys.presence(u), from, "+inf")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("presence online: %w", err)
	}
	out := make(map[string]bool, len(users))
	for i, u := range users {
		out[u] = cmds[i].Val() > 0
	}
	return out, nil
}

// clusterReap walks the index: it reads up to batch expired index
// entries, removes the entries that are still expired from their users'
// sets (one script per user, pipelined), then the index entries that are
// still expired, then announces the users who went offline by it. It
// returns how many index entries it removed.
func (s *Store) clusterReap(ctx context.Context, batch int) (int, error) {
	k := s.cl.keys
	now := s.now().UnixMilli()
	items, err := s.rdb.ZRangeByScore(ctx, k.presenceIndex(), &redis.ZRangeBy{
		Min: "-inf", Max: "(" + strconv.FormatInt(now, 10), Count: int64(batch),
	}).Result()
	if err != nil {
		return 0, fmt.Errorf("presence reap: %w", err)
	}
	if len(items) == 0 {
		return 0, nil
	}
	byUser := map[string][]any{}
	var users []string
	for _, it := range items {
		user, member, ok := strings.Cut(it, " ")
		if !ok || user == "" {
			continue
		}
		if _, seen := byUser[user]; !seen {
			users = append(users, user)
			byUser[user] = []any{now}
		}
		byUser[user] = append(byUser[user], member)
	}
	calls := make([]call, len(users))
	for i, u := range users {
		calls[i] = call{keys: []string{k.presence(u)}, args: byUser[u]}
	}
	var gone []string
	var first error
	failed := map[string]bool{}
	for i, cmd := range s.cl.evalAll(ctx, clusterReapScript, calls) {
		n, err := cmd.Int64()
		if err != nil {
			// Keep the user's index entries: the next round tries again.
			failed[users[i]] = true
			if first == nil {
				first = fmt.Errorf("presence reap %s: %w", users[i], err)
			}
			continue
		}
		if n == 1 {
			gone = append(gone, users[i])
		}
	}
	args := make([]any, 0, 1+len(items))
	args = append(args, now)
	for _, it := range items {
		if user, _, _ := strings.Cut(it, " "); !failed[user] {
			args = append(args, it)
		}
	}
	removed, err := clusterTrimScript.Run(ctx, s.rdb, []string{k.presenceIndex()}, args...).Int()
	if err != nil && first == nil {
		first = fmt.Errorf("presence reap: %w", err)
	}
	if err := s.announce(ctx, false, gone...); err != nil && first == nil {
		first = fmt.Errorf("presence reap: %w", err)
	}
	return removed, first
}
