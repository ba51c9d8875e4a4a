package hub

import (
	"fmt"
	"testing"
	"time"
)

func TestConnectLimitsPerUser(t *testing.T) {
	t.Parallel()
	l := newConnectLimits(10, 3)
	now := time.Unix(1000, 0)
	for i := range 3 {
		if d := l.allow("23", now); d != 0 {
			t.Fatalf("connect %d within the burst refused for %v", i+1, d)
		}
	}
	d := l.allow("23", now)
	if d <= 0 || d > 100*time.Millisecond {
		t.Fatalf("connect over the burst: wait %v, want (0, 100ms]", d)
	}
	if d2 := l.allow("23", now); d2 != d {
		t.Fatalf("a refused connect took a token: wait %v, then %v", d, d2)
	}
	if d := l.allow("43", now); d != 0 {
		t.Fatalf("another user refused for %v", d)
	}
	if d := l.allow("23", now.Add(100*time.Millisecond)); d != 0 {
		t.Fatalf("connect after the wait refused for %v", d)
	}
}

// The limiters of users who stopped connecting are dropped: the map does
// not grow with the number of users ever seen.
func TestConnectLimitsStayBounded(t *testing.T) {
	t.Parallel()
	l := newConnectLimits(10, 20) // full again 2 s after a connect
	now := time.Unix(1000, 0)
	peak := 0
	for i := range 100_000 {
		// 500 new users a second, each connecting once.
		now = now.Add(2 * time.Millisecond)
		if d := l.allow(fmt.Sprint("u", i), now); d != 0 {
			t.Fatalf("user %d refused", i)
		}
		peak = max(peak, l.size())
	}
	// About 1000 users connected in the last 2 s; the map may hold twice
	// that between sweeps, and never fewer than minSweep before the first.
	if peak > 2*minSweep+2 {
		t.Fatalf("%d limiters held at the peak for 100000 users seen, want at most %d", peak, 2*minSweep+2)
	}
	// A user whose limiter is not full is never dropped: it stays limited.
	for range 20 {
		l.allow("busy", now)
	}
	for i := range 5000 {
		now = now.Add(time.Microsecond)
		l.allow(fmt.Sprint("v", i), now)
	}
	if d := l.allow("busy", now); d <= 0 {
		t.Fatal("a sweep forgot a user that was still limited")
	}
}
