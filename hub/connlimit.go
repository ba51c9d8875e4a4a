package hub

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// userCapRetry is the Retry-After of a connect refused because the user
// has MaxConnsPerUser sockets on this replica already.
const userCapRetry = 5 * time.Second

// minSweep is the fewest limiters connectLimits keeps before it looks for
// ones to drop.
const minSweep = 1024

// connectLimits limits how often each user may open a socket on this
// replica. A user's limiter is dropped once it has filled up again, since a
// new one would be the same: the map holds the users who connected in the
// last few seconds (about burst/rate), never every user ever seen. It is
// safe for concurrent use.
type connectLimits struct {
	rate  rate.Limit
	burst int

	mu      sync.Mutex
	users   map[string]*rate.Limiter
	sweepAt int // sweep when the map has grown to this size
}

func newConnectLimits(r rate.Limit, burst int) *connectLimits {
	return &connectLimits{rate: r, burst: burst, users: map[string]*rate.Limiter{}, sweepAt: minSweep}
}

// allow takes one connect of user at now, or returns how long until one
// would be allowed (then nothing is taken).
func (l *connectLimits) allow(user string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.users[user]
	if lim == nil {
		if len(l.users) >= l.sweepAt {
			l.sweep(now)
		}
		lim = rate.NewLimiter(l.rate, l.burst)
		l.users[user] = lim
	}
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}

// sweep drops the limiters that are full again; the next sweep comes when
// the map has doubled, so that the work is constant per connect on average.
func (l *connectLimits) sweep(now time.Time) {
	for u, lim := range l.users {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.users, u)
		}
	}
	l.sweepAt = max(2*len(l.users), minSweep)
}

// size returns how many users have a limiter.
func (l *connectLimits) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.users)
}

// refuse answers a request that is not upgraded. With retry > 0 it adds
// Retry-After, in whole seconds rounded up.
func refuse(w http.ResponseWriter, status int, retry time.Duration, msg string) {
	if retry > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(retry.Seconds()))))
	}
	http.Error(w, msg, status)
}
