package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/redis/go-redis/v9"
)

// Presence entries: each live connection is a member "<replica> <conn>" of
// its user's sorted set, scored by its expiry. The first field routes
// messages to the replica's channel, so replica names have no spaces.

// Connect adds or refreshes the live connection member of user until
// expiry, and announces the user online on the presence channel when no
// live connection was there before. It reports whether that happened.
func (s *Store) Connect(ctx context.Context, user, member string, expiry time.Time) (bool, error) {
	if s.cl != nil {
		return s.clusterConnect(ctx, user, member, expiry)
	}
	now := s.now()
	ttl := expiry.Sub(now) + time.Minute
	n, err := connectScript.Run(ctx, s.rdb, []string{s.keys.presence(user), s.keys.presenceIndex()},
		member, expiry.UnixMilli(), now.UnixMilli(), user, s.keys.presenceChannel(), ttl.Milliseconds()).Int64()
	if err != nil {
		return false, fmt.Errorf("presence connect %s: %w", user, err)
	}
	return n == 1, nil
}

// Refresh pushes the expiry of many connections (member → user) forward,
// pipelined in batches, and announces users who had lapsed as online
// again; it reports whether any had.
func (s *Store) Refresh(ctx context.Context, conns map[string]string, expiry time.Time) (bool, error) {
	type entry struct{ user, member string }
	entries := make([]entry, 0, len(conns))
	for m, u := range conns {
		entries = append(entries, entry{u, m})
	}
	if len(entries) == 0 {
		return false, nil
	}
	if s.cl != nil {
		return s.clusterRefresh(ctx, conns, expiry)
	}
	// Load the script once so the pipelined EVALSHAs cannot miss it.
	if err := connectScript.Load(ctx, s.rdb).Err(); err != nil {
		return false, fmt.Errorf("presence refresh: %w", err)
	}
	lapsed := false
	now := s.now()
	ttl := (expiry.Sub(now) + time.Minute).Milliseconds()
	for len(entries) > 0 {
		batch := entries[:min(len(entries), 500)]
		entries = entries[len(batch):]
		cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, e := range batch {
				connectScript.EvalSha(ctx, p, []string{s.keys.presence(e.user), s.keys.presenceIndex()},
					e.member, expiry.UnixMilli(), now.UnixMilli(), e.user, s.keys.presenceChannel(), ttl)
			}
			return nil
		})
		if err != nil {
			return lapsed, fmt.Errorf("presence refresh: %w", err)
		}
		for _, c := range cmds {
			if n, _ := c.(*redis.Cmd).Int64(); n == 1 {
				lapsed = true
			}
		}
	}
	return lapsed, nil
}

// Disconnect removes the connection member of user, announcing the user
// offline when it was the last live one. It reports whether that happened.
func (s *Store) Disconnect(ctx context.Context, user, member string) (bool, error) {
	if s.cl != nil {
		return s.clusterDisconnect(ctx, user, member)
	}
	n, err := disconnectScript.Run(ctx, s.rdb, []string{s.keys.presence(user), s.keys.presenceIndex()},
		member, s.now().UnixMilli(), user, s.keys.presenceChannel()).Int64()
	if err != nil {
		return false, fmt.Errorf("presence disconnect %s: %w", user, err)
	}
	return n == 1, nil
}

// Online reports, for each user, whether it has a live connection on any
// replica.
func (s *Store) Online(ctx context.Context, users []string) (map[string]bool, error) {
	out := make(map[string]bool, len(users))
	if len(users) == 0 {
		return out, nil
	}
	if s.cl != nil {
		return s.clusterOnline(ctx, users)
	}
	keys := make([]string, len(users))
	for i, u := range users {
		keys[i] = s.keys.presence(u)
	}
	counts, err := onlineScript.Run(ctx, s.rdb, keys, s.now().UnixMilli()).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("presence online: %w", err)
	}
	for i, u := range users {
		out[u] = i < len(counts) && counts[i] > 0
	}
	return out, nil
}

// Reap removes up to batch expired connections (those of replicas that
// stopped without cleaning up) and announces users who went offline by it.
// It returns how many entries it removed; any replica may call it.
func (s *Store) Reap(ctx context.Context, batch int) (int, error) {
	if s.cl != nil {
		return s.clusterReap(ctx, batch)
	}
	n, err := reapScript.Run(ctx, s.rdb, []string{s.keys.presenceIndex()},
		s.now().UnixMilli(), batch, s.keys.presencePrefix(), s.keys.presenceChannel()).Int()
	if err != nil {
		return 0, fmt.Errorf("presence reap: %w", err)
	}
	return n, nil
}

// ValidateReplica checks a replica name: 1 to 64 characters of
// A-Z a-z 0-9 _ . @ -, so it can stand in a key and a presence member.
func ValidateReplica(name string) error {
	if name == "" || len(name) > 64 {
		return chat.Invalid("replica name must be 1 to 64 characters")
	}
	// A replica name is a user id that may also hold '-'.
	if chat.ValidateUser(strings.ReplaceAll(name, "-", "_")) != nil {
		return chat.Invalid("replica name %q: only A-Z a-z 0-9 _ . @ - are allowed", name)
	}
	return nil
}
