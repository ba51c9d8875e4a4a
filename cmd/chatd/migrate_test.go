package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/internal/redistest"
	"github.com/chatd/chatd/store"
)

// TestMigrateRefusals: migrate says what is wrong with its flags before it
// connects anywhere, and never prints a password.
func TestMigrateRefusals(t *testing.T) {
	t.Parallel()
	const password = "PASSWORD-never-printed"
	src := "redis://:" + password + "@127.0.0.1:1/0"
	dst := "redis://:" + password + "@127.0.0.1:2?addr=127.0.0.1:3"
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-to", dst}, nil, "-from (or REDIS_URL) is required"},
		{[]string{"-from", dst, "-to", dst}, nil, "names a Redis Cluster"},
		{[]string{"-from", src}, nil, "-to (or CHAT_MIGRATE_TO) is required"},
		{[]string{"-from", src, "-to", src}, nil, "must name a Redis Cluster"},
		{[]string{"-from", src, "-to", "redis://:" + password + "@127.0.0.1:2/3?addr=127.0.0.1:3"}, nil, "only database 0"},
		{[]string{"-from", "redis://:" + password + "@127.0.0.1:notaport/0", "-to", dst}, nil, "not a valid"},
		{[]string{"-from", src, "-to", "redis://:" + password + "@127.0.0.1:2?addr=127.0.0.1:3&nosuch=1"}, nil, "not a valid Redis Cluster URL"},
		{[]string{"-from", src, "-to", "redis://:" + password + "@127.0.0.1:2\x7f?addr=127.0.0.1:3"}, nil, "not a valid URL"},
		{[]string{"-from", "redis://:" + password + "@127.0.0.1:1\x7f/0", "-to", dst}, nil, "not a valid"},
		{[]string{"-from", src, "-to", dst, "-prefix", "app{1}:"}, nil, "-prefix"},
		{nil, map[string]string{"REDIS_URL": src, "CHAT_MIGRATE_TO": dst, "CHAT_PREFIX": "a}"}, "-prefix"},
		{[]string{"-from", src, "-to", dst, "now"}, nil, "unexpected argument"},
		{[]string{"-from", src, "-to", dst, "-progress", "0s"}, nil, "-progress"},
		{nil, map[string]string{"REDIS_URL": src, "CHAT_MIGRATE_TO": dst}, "-from redis://127.0.0.1:1/0 does not answer"},
	} {
		var out bytes.Buffer
		err := run(t.Context(), append([]string{"migrate"}, tt.args...), func(k string) string { return tt.env[k] }, &out, &out)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("migrate %q %v: %v, want an error saying %q", tt.args, tt.env, err, tt.want)
			continue
		}
		if strings.Contains(err.Error()+out.String(), password) {
			t.Errorf("migrate %q prints the password: %v\n%s", tt.args, err, out.String())
		}
	}
	var help bytes.Buffer
	env := map[string]string{"REDIS_URL": src, "CHAT_MIGRATE_TO": dst}
	if err := run(t.Context(), []string{"migrate", "-h"}, func(k string) string { return env[k] }, io.Discard, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("migrate -h: %v", err)
	}
	if h := help.String(); !strings.Contains(h, "-dry-run") || !strings.Contains(h, "Stop every chatd replica") || strings.Contains(h, password) {
		t.Errorf("migrate -h:\n%s", h)
	}
}

// TestMigrateCommand moves a small data set from a single Redis to the
// Redis Cluster of REDIS_CLUSTER_URL with the command, as an operator
// would: a dry run, the run, a second run, and a run that finds a
// conflict.
func TestMigrateCommand(t *testing.T) {
	t.Parallel()
	if !redistest.Cluster() {
		t.Skip("migrates into a Redis Cluster: set REDIS_CLUSTER_URL to run it (CI does)")
	}
	src := redistest.NewSingle(t)
	dst := redistest.New(t)
	prefix := src.Prefix // one prefix on both sides, as chatd keeps it
	t.Cleanup(func() { redistest.Clean(t, dst.Client, prefix+"*") })
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	single := store.New(src.Client, store.Config{Prefix: prefix, Logger: quiet})
	defer single.Close()
	for _, text := range []string{"hello", "ça va ? 你好"} {
		if _, _, err := single.Send(ctx, chat.SendRequest{From: "23", To: "65", Text: text}); err != nil {
			t.Fatal(err)
		}
	}
	// What the seed's msgsend writes: 43 has not read it.
	if err := src.Client.LPush(ctx, prefix+"43-23", `{"fromid": 23, "toid": 43, "msg": "from the seed", "time": 1732567890.5}`).Err(); err != nil {
		t.Fatal(err)
	}
	if err := src.Client.HIncrBy(ctx, prefix+"43", "43-23", 1).Err(); err != nil {
		t.Fatal(err)
	}
	if err := src.Client.Set(ctx, prefix+"not a conversation", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}

	migrate := func(args ...string) (string, string, error) {
		t.Helper()
		var stdout, stderr lockedBuffer
		env := map[string]string{"REDIS_URL": src.URL, "CHAT_MIGRATE_TO": dst.URL, "CHAT_PREFIX": prefix}
		err := run(ctx, append([]string{"migrate"}, args...), func(k string) string { return env[k] }, &stdout, &stderr)
		return stdout.String(), stderr.String(), err
	}
	cc := dst.Client.(*redis.ClusterClient)
	keys := func() []string {
		t.Helper()
		k, err := redistest.Keys(ctx, cc, prefix+"*")
		if err != nil {
			t.Fatal(err)
		}
		return k
	}

	out, errs, err := migrate("-dry-run")
	if err != nil {
		t.Fatalf("dry run: %v\n%s%s", err, out, errs)
	}
	if !strings.Contains(out, "nothing was written") || !strings.Contains(out, "conversations: 2 (copied 2,") ||
		!strings.Contains(errs, "must be stopped") {
		t.Errorf("dry run:\n%s%s", out, errs)
	}
	if k := keys(); len(k) != 0 {
		t.Fatalf("a dry run wrote %q", k)
	}

	out, errs, err = migrate("-from", src.URL) // a flag over its variable
	if err != nil {
		t.Fatalf("migrate: %v\n%s%s", err, out, errs)
	}
	for _, want := range []string{
		"conversations: 2 (copied 2, completed 0, already there 0, conflicts 0", "elements copied: 3",
		"1 from chatd's read hashes, 1 derived from the seed's", "1 added for conversations only the seed wrote",
		"not copied: 2 idempotency records", "1 keys that are not conversations", "done: start chatd",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the summary does not say %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errs, "not a conversation: neither a conversation") || !strings.Contains(errs, "must be stopped") {
		t.Errorf("stderr:\n%s", errs)
	}
	target := store.New(cc, store.Config{Prefix: prefix, Logger: quiet})
	defer target.Close()
	if u, err := target.Unread(ctx, "43"); err != nil || u["23"] != 1 {
		t.Errorf("43's unread on the cluster: %v, %v; want 1 from 23", u, err)
	}
	if p, err := target.History(ctx, "65", "23", 0, 10); err != nil || len(p.Messages) != 2 || p.Messages[0].Text != "ça va ? 你好" {
		t.Errorf("history on the cluster: %+v, %v", p, err)
	}

	out, errs, err = migrate()
	if err != nil || !strings.Contains(out, "already there 2") || !strings.Contains(out, "elements copied: 0") {
		t.Errorf("a second run: %v\n%s%s", err, out, errs)
	}

	if err := cc.LSet(ctx, prefix+"{43-23}", 0, "changed on the cluster").Err(); err != nil {
		t.Fatal(err)
	}
	out, errs, err = migrate()
	if err == nil || !strings.Contains(err.Error(), "conflicts: 1,") || !strings.Contains(errs, "43-23: message #1 differs") ||
		!strings.Contains(out, "conflicts 1") {
		t.Errorf("a conflict: %v\n%s%s", err, out, errs)
	}
	if v := cc.LIndex(ctx, prefix+"{43-23}", 0).Val(); v != "changed on the cluster" {
		t.Errorf("the conflicting list was changed: %q", v)
	}
	if out, errs, err = migrate("-overwrite"); err != nil || !strings.Contains(out, "overwritten 1") {
		t.Errorf("-overwrite: %v\n%s%s", err, out, errs)
	}
}
