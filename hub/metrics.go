package hub

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are chatd's Prometheus metrics. A nil *Metrics records nothing.
// Labels never carry user ids. Methods are safe for concurrent use.
type Metrics struct {
	Connections    prometheus.Gauge
	OnlineUsers    prometheus.Gauge
	Stored         prometheus.Counter
	Delivered      prometheus.Counter
	DeliveryLag    prometheus.Histogram
	Frames         *prometheus.CounterVec
	Errors         *prometheus.CounterVec
	SlowCloses     prometheus.Counter
	Dropped        prometheus.Counter
	RateLimited    prometheus.Counter
	PubSubRestarts prometheus.Counter
	CanaryRTT      prometheus.Histogram
	RedisLatency   *prometheus.HistogramVec
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chatd_connections", Help: "Live WebSocket connections on this replica.",
		}),
		OnlineUsers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chatd_online_users", Help: "Distinct users with a socket on this replica.",
		}),
		Stored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatd_messages_stored_total", Help: "Messages stored by sends on this replica (idempotent repeats excluded).",
		}),
		Delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatd_messages_delivered_total", Help: "Messages written live to sockets of this replica.",
		}),
		DeliveryLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "chatd_delivery_latency_seconds",
			Help:    "Time from a message being stored to its write to a recipient socket.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .02, .03, .05, .1, .25, .5, 1, 2.5},
		}),
		Frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatd_frames_total", Help: "Client frames answered, by type (history requests are type=\"history\").",
		}, []string{"type"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatd_errors_total", Help: "Errors answered to clients, by protocol code.",
		}, []string{"code"}),
		SlowCloses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatd_slow_consumer_closes_total", Help: "Sockets closed because their outbound queue was full.",
		}),
		Dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatd_ephemeral_dropped_total",
			Help: "Typing, presence and receipt frames not queued: the socket's queue was over half full, or typing came faster than once a second from one sender.",
		}),
		RateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatd_rate_limited_frames_total", Help: "Client frames refused by the rate limit.",
		}),
		PubSubRestarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatd_pubsub_reconnects_total", Help: "Times the Redis pub/sub link was restored after a break.",
		}),
		CanaryRTT: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "chatd_pubsub_canary_rtt_seconds",
			Help:    "Round trip of the canary this replica publishes to itself.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		RedisLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "chatd_redis_command_duration_seconds",
			Help:    "Redis command round trips, by command (scripts as evalsha).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"command"}),
	}
	reg.MustRegister(m.Connections, m.OnlineUsers, m.Stored, m.Delivered, m.DeliveryLag, m.Frames,
		m.Errors, m.SlowCloses, m.Dropped, m.RateLimited, m.PubSubRestarts, m.CanaryRTT, m.RedisLatency)
	return m
}

func (m *Metrics) connOpened(newUser bool) {
	if m == nil {
		return
	}
	m.Connections.Inc()
	if newUser {
		m.OnlineUsers.Inc()
	}
}

func (m *Metrics) connClosed(lastOfUser bool) {
	if m == nil {
		return
	}
	m.Connections.Dec()
	if lastOfUser {
		m.OnlineUsers.Dec()
	}
}

func (m *Metrics) stored() {
	if m != nil {
		m.Stored.Inc()
	}
}

func (m *Metrics) delivered(lag time.Duration) {
	if m != nil {
		m.Delivered.Inc()
		m.DeliveryLag.Observe(lag.Seconds())
	}
}

func (m *Metrics) frame(typ string) {
	if m == nil {
		return
	}
	switch typ {
	case "send", "history", "read", "inbox", "presence", "typing", "ping":
	default:
		typ = "unknown" // bounded label values
	}
	m.Frames.WithLabelValues(typ).Inc()
}

func (m *Metrics) error(code string) {
	if m != nil {
		m.Errors.WithLabelValues(code).Inc()
	}
}

func (m *Metrics) slowConsumer() {
	if m != nil {
		m.SlowCloses.Inc()
	}
}

func (m *Metrics) ephemeralDropped() {
	if m != nil {
		m.Dropped.Inc()
	}
}

func (m *Metrics) rateLimited() {
	if m != nil {
		m.RateLimited.Inc()
	}
}
