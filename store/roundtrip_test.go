package store

import (
	"slices"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
)

// TestOneRoundTrip counts the commands each operation sends: one EVALSHA
// once the script is loaded, and (on miniredis, which is this test's own)
// after SCRIPT FLUSH one NOSCRIPT EVALSHA and the EVAL that loads it again,
// then one EVALSHA again.
//
// Not parallel: SCRIPT FLUSH empties the script cache of the whole server,
// which would add commands to the counts of tests running beside it.
func TestOneRoundTrip(t *testing.T) {
	f := newFixture(t, Config{})
	if f.cluster() {
		t.Skip("one round trip per operation is the single-Redis layout's; the Redis Cluster layout takes one per slot (TestClusterRoundTrips)")
	}
	s, cmds := f.countingStore(t)
	ctx := f.ctx
	if _, err := s.Connect(ctx, "65", "r1 c1", f.clock.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	ops := []struct {
		name  string
		run   func() error
		check func(t *testing.T) // the operation did its work
	}{
		{"Send", func() error {
			_, _, err := s.Send(ctx, chat.SendRequest{From: "23", To: "43", Text: "hi"})
			return err
		}, func(t *testing.T) {
			if n := f.llen(t, "43-23"); n == 0 {
				t.Fatal("Send stored nothing")
			}
		}},
		{"Send duplicate", func() error {
			_, _, err := s.Send(ctx, chat.SendRequest{From: "23", To: "43", Text: "hi", ClientID: "same"})
			return err
		}, nil},
		{"History", func() error {
			page, err := s.History(ctx, "43", "23", 0, 0)
			if err == nil && (page.Unread == 0 || len(page.Messages) == 0) {
				t.Errorf("History = %+v, want messages and 43's unread count", page)
			}
			return err
		}, nil},
		{"MarkRead", func() error {
			f.hset(t, "43", "43-23", "5") // through the uncounted client
			_, err := s.MarkRead(ctx, "43", "23", 0, "")
			return err
		}, func(t *testing.T) {
			if got := f.unreadField(t, "43", "43-23"); got != "0" {
				t.Fatalf("MarkRead left the seed's count at %q", got)
			}
			if un, err := f.s.Unread(ctx, "43"); err != nil || len(un) != 0 {
				t.Fatalf("Unread(43) after MarkRead = %v, %v; want none", un, err)
			}
		}},
		{"Unread", func() error {
			_, err := s.Unread(ctx, "43")
			return err
		}, nil},
		{"Inbox", func() error {
			_, _, err := s.Inbox(ctx, "43", 0)
			return err
		}, nil},
		{"Typing", func() error { return s.Typing(ctx, "23", "65") }, nil},
		{"Connect", func() error {
			_, err := s.Connect(ctx, "43", "r1 c2", f.clock.Now().Add(time.Minute))
			return err
		}, nil},
		{"Online", func() error {
			on, err := s.Online(ctx, []string{"43", "65", "99"})
			if err == nil && !(on["43"] && on["65"] && !on["99"]) {
				t.Errorf("Online = %v", on)
			}
			return err
		}, nil},
		{"Disconnect", func() error {
			_, err := s.Disconnect(ctx, "43", "r1 c2")
			return err
		}, nil},
		{"Reap", func() error {
			_, err := s.Reap(ctx, 100)
			return err
		}, nil},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			if err := op.run(); err != nil { // loads the script if needed
				t.Fatal(err)
			}
			cmds.take()
			if err := op.run(); err != nil {
				t.Fatal(err)
			}
			if got := cmds.take(); !slices.Equal(got, []string{"evalsha"}) {
				t.Fatalf("%s sent %q, want one evalsha", op.name, got)
			}
			if op.check != nil {
				op.check(t)
			}

			if f.r.Mini == nil {
				// SCRIPT FLUSH empties the script cache of a whole Redis,
				// which a test must not do to a real one that others may use;
				// the reload path is the same go-redis code in both modes.
				return
			}
			if err := f.r.Client.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			if err := op.run(); err != nil {
				t.Fatalf("%s after SCRIPT FLUSH: %v", op.name, err)
			}
			switch got := cmds.take(); {
			case slices.Equal(got, []string{"evalsha", "eval"}):
			default:
				t.Fatalf("%s after SCRIPT FLUSH sent %q, want evalsha (NOSCRIPT) then eval", op.name, got)
			}
			if op.check != nil {
				op.check(t)
			}
			if err := op.run(); err != nil {
				t.Fatal(err)
			}
			if got := cmds.take(); !slices.Equal(got, []string{"evalsha"}) {
				t.Fatalf("%s after reload sent %q, want one evalsha", op.name, got)
			}
		})
	}
	// Refresh loads its script, then pipelines one EVALSHA per connection.
	t.Run("Refresh", func(t *testing.T) {
		conns := map[string]string{"r1 a": "23", "r1 b": "43", "r1 c": "65"}
		want := []string{"script", "evalsha", "evalsha", "evalsha"}
		for _, flush := range []bool{false, true} {
			if flush && f.r.Mini == nil {
				break // no SCRIPT FLUSH on a real Redis: see above
			}
			if flush {
				if err := f.r.Client.ScriptFlush(ctx).Err(); err != nil {
					t.Fatal(err)
				}
			}
			cmds.take()
			if _, err := s.Refresh(ctx, conns, f.clock.Now().Add(time.Minute)); err != nil {
				t.Fatalf("Refresh (after SCRIPT FLUSH: %v): %v", flush, err)
			}
			if got := cmds.take(); !slices.Equal(got, want) {
				t.Fatalf("Refresh (after SCRIPT FLUSH: %v) sent %q, want %q", flush, got, want)
			}
		}
		on, err := s.Online(ctx, []string{"23", "43", "65"})
		if err != nil || !on["23"] || !on["43"] || !on["65"] {
			t.Fatalf("Online after Refresh = %v, %v", on, err)
		}
	})
	// Send ran 4 times (2 without the SCRIPT FLUSH steps); the duplicate
	// stored once.
	want := int64(5)
	if f.r.Mini == nil {
		want = 3
	}
	if n := f.llen(t, "43-23"); n != want {
		t.Fatalf("list length %d, want %d", n, want)
	}
}
