package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// benchText is a message of a typical length.
const benchText = "see you at the station at 6, the train leaves at 6:20 🚆"

// BenchmarkSend measures stored messages per second with 1, 8 and 64
// goroutines sending at once, each in its own conversation with an offline
// recipient (so every send also bumps an unread count). b.N is the total
// number of messages across all senders.
func BenchmarkSend(b *testing.B) {
	for _, senders := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("senders=%d", senders), func(b *testing.B) {
			benchSend(b, newFixture(b, Config{Now: time.Now}), senders)
		})
	}
}

// BenchmarkSendWait is BenchmarkSend with Config.Wait 1: each send is
// answered once a replica has it. It needs a Redis whose masters have a
// replica (the test cluster's do).
func BenchmarkSendWait(b *testing.B) {
	for _, senders := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("senders=%d", senders), func(b *testing.B) {
			f := newFixture(b, Config{Now: time.Now, Wait: 1})
			if short, err := f.s.CheckReplicas(f.ctx); err != nil || len(short) > 0 {
				b.Skipf("needs a replica behind every master: %v %v", short, err)
			}
			benchSend(b, f, senders)
		})
	}
}

// BenchmarkSendOnline is the load generator's pattern: pairs of online
// users (one socket each, on two replicas) sending both ways in turn, so
// no send bumps an unread count and each one routes to two replicas.
func BenchmarkSendOnline(b *testing.B) {
	for _, pairs := range []int{1, 2, 4, 8, 16, 64} {
		b.Run(fmt.Sprintf("pairs=%d", pairs), func(b *testing.B) {
			f := newFixture(b, Config{Now: time.Now})
			expiry := time.Now().Add(time.Hour)
			for g := range pairs {
				for i, user := range pairUsers(g) {
					if _, err := f.s.Connect(f.ctx, user, fmt.Sprintf("r%d c%d", i, g), expiry); err != nil {
						b.Fatal(err)
					}
				}
			}
			benchSendWith(b, f, pairs, func(g int, i int64) (string, string) {
				u := pairUsers(g)
				return u[i%2], u[1-i%2]
			})
		})
	}
}

func pairUsers(g int) [2]string {
	return [2]string{strconv.Itoa(100000 + g), strconv.Itoa(200000 + g)}
}

// benchSend has senders goroutines share b.N sends through f's Store,
// each from its own sender to its own recipient.
func benchSend(b *testing.B, f *fixture, senders int) {
	benchSendWith(b, f, senders, func(g int, _ int64) (string, string) {
		u := pairUsers(g)
		return u[0], u[1]
	})
}

// benchSendWith has senders goroutines share b.N sends through f's Store;
// users names the sender and recipient of goroutine g's send number i.
func benchSendWith(b *testing.B, f *fixture, senders int, users func(g int, i int64) (string, string)) {
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	cpu0 := redisCPU(b, f)
	b.ResetTimer()
	start := time.Now()
	for g := range senders {
		wg.Go(func() {
			var mine int64
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				from, to := users(g, mine)
				mine++
				req := chat.SendRequest{From: from, To: to, Text: benchText, ClientID: "b" + strconv.FormatInt(i, 10)}
				if _, _, err := f.s.Send(ctx, req); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	if used := redisCPU(b, f) - cpu0; used > 0 {
		b.ReportMetric(float64(used.Microseconds())/float64(b.N), "redis-µs/msg")
	}
}

// BenchmarkHistoryPage measures one 50-message page of a 10,000-message
// conversation, at the newest end and from the middle.
func BenchmarkHistoryPage(b *testing.B) {
	const length = 10000
	f := newFixture(b, Config{Now: time.Now})
	ctx := context.Background()
	conv := chat.ConvKey("23", "43")
	ts := time.Now().Add(-time.Hour)
	for done := 0; done < length; {
		pipe := f.r.Client.Pipeline()
		for range 1000 {
			_, tsText := formatTime(ts.Add(time.Duration(done) * time.Second))
			pipe.LPush(ctx, f.k.conv(conv), encodeElement("23", "43", benchText, tsText))
			done++
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name   string
		before int64
	}{{"newest", 0}, {"middle", length / 2}} {
		b.Run(bc.name, func(b *testing.B) {
			page, err := f.s.History(ctx, "43", "23", bc.before, chat.DefaultPageSize)
			if err != nil {
				b.Fatal(err)
			}
			if len(page.Messages) != chat.DefaultPageSize || !page.More {
				b.Fatalf("page of %d messages, more %v", len(page.Messages), page.More)
			}
			b.ReportAllocs()
			start := time.Now()
			for b.Loop() {
				if _, err := f.s.History(ctx, "43", "23", bc.before, chat.DefaultPageSize); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pages/s")
		})
	}
}

// BenchmarkReady measures the unread map that "ready" carries (Unread) for
// a user with 1,000 conversations, each with 3 messages from its peer: with
// every conversation unread, and with 10 left unread after reading the rest.
func BenchmarkReady(b *testing.B) {
	const convs, each = 1000, 3
	for _, unread := range []int{convs, 10} {
		b.Run(fmt.Sprintf("conversations=%d/unread=%d", convs, unread), func(b *testing.B) {
			f := newFixture(b, Config{Now: time.Now})
			ctx := context.Background()
			const user = "1"
			var wg sync.WaitGroup
			errs := make(chan error, convs)
			for w := range 16 {
				wg.Go(func() {
					for i := w; i < convs; i += 16 {
						peer := strconv.Itoa(100000 + i)
						for range each {
							if _, _, err := f.s.Send(ctx, chat.SendRequest{From: peer, To: user, Text: benchText}); err != nil {
								errs <- err
								return
							}
						}
						if i >= unread {
							if _, err := f.s.MarkRead(ctx, user, peer, 0, ""); err != nil {
								errs <- err
								return
							}
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			got, err := f.s.Unread(ctx, user)
			if err != nil || len(got) != unread {
				b.Fatalf("Unread = %d conversations, %v; want %d", len(got), err, unread)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.s.Unread(ctx, user); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// redisCPU is the CPU time every Redis node has used so far (INFO cpu, all
// nodes of a cluster together); 0 on miniredis, which shares the test's.
func redisCPU(b *testing.B, f *fixture) time.Duration {
	if f.r.Mini != nil {
		return 0
	}
	var mu sync.Mutex
	var total float64
	err := redistest.ForEachNode(context.Background(), f.r.Client, func(ctx context.Context, node *redis.Client) error {
		info, err := node.Info(ctx, "cpu").Result()
		if err != nil {
			return err
		}
		for _, line := range strings.Split(info, "\r\n") {
			k, v, _ := strings.Cut(line, ":")
			if k == "used_cpu_sys" || k == "used_cpu_user" {
				sec, _ := strconv.ParseFloat(v, 64)
				mu.Lock()
				total += sec
				mu.Unlock()
			}
		}
		return nil
	})
	if err != nil {
		b.Fatalf("redis cpu: %v", err)
	}
	return time.Duration(total * float64(time.Second))
}
