package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	neturl "net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatd/chatd/store"
)

// maxListed is how many keys of one kind of notice migrate prints before
// it only counts them.
const maxListed = 20

// runMigrate copies a deployment's data from a single Redis into a Redis
// Cluster: chatd migrate -from URL -to URL [-prefix P] [-dry-run]
// [-overwrite]. Progress and what it leaves alone go to stderr, the summary
// to stdout. It fails when a conversation conflicts or could not be copied.
func runMigrate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("chatd migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	// The URLs (which may hold passwords) are read from the environment
	// after parsing, so that -h never prints them as a default.
	from := fs.String("from", "", "the single Redis to copy from, `URL` redis://[:password@]host:port/db (env REDIS_URL, chatd's -redis before the move)")
	to := fs.String("to", "", "the Redis Cluster to copy into, `URL` redis://[:password@]host:port?addr=host:port&addr=host:port as chatd's -redis takes it (env CHAT_MIGRATE_TO)")
	prefix := fs.String("prefix", getenv("CHAT_PREFIX"), "chatd's key `prefix`, the same on both sides (env CHAT_PREFIX)")
	dryRun := fs.Bool("dry-run", false, "compare both sides and report what would be copied; write nothing")
	overwrite := fs.Bool("overwrite", false, "replace a conversation the cluster holds otherwise (a conflict) instead of leaving it alone")
	every := fs.Duration("progress", 5*time.Second, "how often to report progress on stderr")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: chatd migrate -from URL -to URL [-prefix P] [-dry-run] [-overwrite]

Copies chatd's data from a single Redis (the seed's layout and chatd's) into a
Redis Cluster, in chatd's Redis Cluster layout: every conversation, both read
positions (the seed's unread counts become positions), inbox entries and unread
hints. Idempotency records and presence are not copied.

Stop every chatd replica (and the seed's writers) first, or keep them
read-only, until chatd runs on the cluster. Running it again copies only what
is missing; a conversation the cluster holds otherwise is reported as a
conflict and left alone.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("migrate: unexpected argument %q (see chatd migrate -h)", fs.Arg(0))
	}
	if !flagSet(fs, "from") {
		*from = getenv("REDIS_URL")
	}
	if !flagSet(fs, "to") {
		*to = getenv("CHAT_MIGRATE_TO")
	}
	if *every <= 0 {
		return errors.New("migrate: -progress must be positive")
	}
	src, srcName, err := openMigrateSource(*from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, dstName, err := openMigrateTarget(*to)
	if err != nil {
		return err
	}
	defer dst.Close()
	if err := store.ValidatePrefix(dst, *prefix); err != nil {
		return fmt.Errorf("migrate: -prefix (or CHAT_PREFIX): %w", err)
	}
	if err := checkMigrateEnds(ctx, src, srcName, dst, dstName); err != nil {
		return err
	}

	fmt.Fprintf(stderr, "chatd migrate: from %s to %s, prefix %q\n", srcName, dstName, *prefix)
	fmt.Fprintln(stderr, "chatd migrate: every chatd replica (and the seed's writers) must be stopped until chatd runs on the cluster: "+
		"a message stored on the single Redis after its conversation was copied is left behind (run migrate again to copy it), "+
		"and one stored on the cluster makes its conversation a conflict")
	if *dryRun {
		fmt.Fprintln(stderr, "chatd migrate: dry run: nothing is written")
	}

	start := time.Now()
	listed := map[store.NoticeKind]int{}
	st, err := store.Migrate(ctx, store.MigrateConfig{
		Source: src, Target: dst, SourcePrefix: *prefix, TargetPrefix: *prefix,
		DryRun: *dryRun, Overwrite: *overwrite, ProgressEvery: *every,
		Progress: func(st store.MigrateStats) {
			fmt.Fprintf(stderr, "chatd migrate: %d of %d conversations found so far, %d elements %s (%.0f/s), %d conflicts, %d errors\n",
				st.Done, st.Seen, st.Elements, copied(*dryRun), float64(st.Elements)/time.Since(start).Seconds(), st.Conflicts, st.Errors)
		},
		Notice: func(n store.MigrateNotice) {
			// Every conflict and error; of the keys left alone, the first.
			listed[n.Kind]++
			switch {
			case n.Kind != store.NoticeNotConversation && n.Kind != store.NoticeNotList, listed[n.Kind] <= maxListed:
				fmt.Fprintf(stderr, "chatd migrate: %s: %s\n", n.Key, n.Text)
			case listed[n.Kind] == maxListed+1:
				fmt.Fprintf(stderr, "chatd migrate: more keys like %s are only counted\n", n.Key)
			}
		},
	})
	summary(stdout, st, *dryRun, time.Since(start))
	switch {
	case err != nil:
		return fmt.Errorf("migrate: stopped before the end (%w): run it again to go on", err)
	case st.Conflicts > 0 || st.Errors > 0:
		return fmt.Errorf("migrate: conflicts: %d, errors: %d (see above): run it again once they are resolved, or with -overwrite to replace the conflicting conversations",
			st.Conflicts, st.Errors)
	}
	if !*dryRun {
		fmt.Fprintln(stdout, "done: start chatd with -redis (REDIS_URL) naming the cluster")
	}
	return nil
}

func copied(dryRun bool) string {
	if dryRun {
		return "to copy"
	}
	return "copied"
}

// summary prints what a migration did.
func summary(w io.Writer, st store.MigrateStats, dryRun bool, took time.Duration) {
	if dryRun {
		fmt.Fprintf(w, "dry run in %s: nothing was written; a run would do this\n", took.Round(time.Millisecond))
	} else {
		fmt.Fprintf(w, "migrated in %s\n", took.Round(time.Millisecond))
	}
	fmt.Fprintf(w, "conversations: %d (copied %d, completed %d, already there %d, conflicts %d, overwritten %d, errors %d)\n",
		st.Copied+st.Completed+st.AlreadyThere+st.Conflicts+st.Overwritten+st.Errors, st.Copied, st.Completed, st.AlreadyThere, st.Conflicts, st.Overwritten, st.Errors)
	fmt.Fprintf(w, "elements %s: %d\n", copied(dryRun), st.Elements)
	fmt.Fprintf(w, "read positions: %d from chatd's read hashes, %d derived from the seed's unread counts (%d unread hashes)\n",
		st.PositionsKept, st.PositionsDerived, st.SeedHashes)
	fmt.Fprintf(w, "inbox entries: %d copied, %d added for conversations only the seed wrote; unread hints: %d\n",
		st.InboxCopied, st.InboxAdded, st.Hints)
	fmt.Fprintf(w, "not copied: %d idempotency records (kept 24 h: a send retried across the move may be stored again), "+
		"%d presence keys (clients register again when they connect)\n", st.Idempotency, st.Presence)
	fmt.Fprintf(w, "ignored: %d keys that are not conversations, %d conversation names that are not lists\n",
		st.NotConversations, st.NotLists)
}

// openMigrateSource returns a client of the single Redis url names, and a
// name for it without credentials.
func openMigrateSource(url string) (*redis.Client, string, error) {
	if url == "" {
		return nil, "", errors.New("migrate: -from (or REDIS_URL) is required: the single Redis to copy from")
	}
	if u, err := neturl.Parse(url); err == nil && u.Query().Has("addr") {
		return nil, "", errors.New("migrate: -from (or REDIS_URL) names a Redis Cluster (it has addr parameters): migrate copies from a single Redis")
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, "", fmt.Errorf("migrate: -from (or REDIS_URL): not a valid redis:// URL: %w", noURL(err))
	}
	opt.ClientName = "chatd-migrate"
	scheme, _, _ := strings.Cut(url, "://")
	return redis.NewClient(opt), fmt.Sprintf("%s://%s/%d", scheme, opt.Addr, opt.DB), nil
}

// openMigrateTarget returns a client of the Redis Cluster url names (in
// the form chatd's -redis takes), and a name for it without credentials.
func openMigrateTarget(url string) (*redis.ClusterClient, string, error) {
	if url == "" {
		return nil, "", errors.New("migrate: -to (or CHAT_MIGRATE_TO) is required: the Redis Cluster to copy into")
	}
	u, err := neturl.Parse(url)
	if err != nil {
		return nil, "", fmt.Errorf("migrate: -to (or CHAT_MIGRATE_TO): not a valid URL: %w", noURL(err))
	}
	if !u.Query().Has("addr") {
		return nil, "", errors.New("migrate: -to (or CHAT_MIGRATE_TO) must name a Redis Cluster as chatd's -redis does, " +
			"with one addr parameter or more: redis://host1:port?addr=host2:port")
	}
	if p := strings.TrimPrefix(u.Path, "/"); p != "" && p != "0" {
		return nil, "", errors.New("migrate: -to (or CHAT_MIGRATE_TO): a Redis Cluster has only database 0")
	}
	opt, err := redis.ParseClusterURL(url)
	if err != nil {
		return nil, "", fmt.Errorf("migrate: -to (or CHAT_MIGRATE_TO): not a valid Redis Cluster URL: %w", noURL(err))
	}
	opt.ClientName = "chatd-migrate"
	return redis.NewClusterClient(opt), u.Scheme + "://" + strings.Join(opt.Addrs, ",") + " (cluster)", nil
}

// noURL drops the URL a *url.Error quotes: it may hold a password.
func noURL(err error) error {
	var ue *neturl.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// checkMigrateEnds makes sure both ends answer, the source as a single
// Redis and the target as a Redis Cluster.
func checkMigrateEnds(ctx context.Context, src *redis.Client, srcName string, dst *redis.ClusterClient, dstName string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := src.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("migrate: -from %s does not answer: %w", srcName, err)
	}
	// A node of a cluster answers for its own slots only.
	if info, err := src.Info(ctx, "cluster").Result(); err == nil && strings.Contains(info, "cluster_enabled:1") {
		return fmt.Errorf("migrate: -from %s is a node of a Redis Cluster: migrate copies from a single Redis", srcName)
	}
	if err := dst.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error {
		return n.Ping(ctx).Err()
	}); err != nil {
		return fmt.Errorf("migrate: -to %s does not answer as a Redis Cluster: %w", dstName, err)
	}
	return nil
}
