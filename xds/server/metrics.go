package server

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus collectors (docs/observability.md,
// "Control plane"). The counters and the histogram are updated from the gRPC
// callbacks; connected_proxies is computed from the registered nodes at scrape
// time, so it can never drift from them. All are safe for concurrent use.
type metrics struct {
	pushes    *prometheus.CounterVec
	nacks     *prometheus.CounterVec
	latency   prometheus.Histogram
	connected *prometheus.Desc
}

func newMetrics() *metrics {
	m := &metrics{
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controlplane_xds_pushes_total",
			Help: "xDS responses sent to proxies, by resource type (CDS, LDS, EDS, RDS, SDS).",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controlplane_xds_nacks_total",
			Help: "xDS responses rejected by proxies (requests with error_detail), by resource type.",
		}, []string{"type"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "controlplane_xds_push_latency_seconds",
			Help: "Time from a change (model, workloads, certificates) to a proxy's ACK of the snapshot built from it; one observation per proxy per change.",
			// 1 ms to ~33 s: debounce alone is 50 ms, a slow proxy takes seconds.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		connected: prometheus.NewDesc("controlplane_connected_proxies",
			"Nodes with an open xDS stream, by the xDS variant of their latest stream (sotw, delta).",
			[]string{"variant"}, nil),
	}
	for _, t := range ShortTypes {
		// Export zeros, so that rate() works from the first push or NACK.
		m.pushes.WithLabelValues(t)
		m.nacks.WithLabelValues(t)
	}
	return m
}

// register registers the collectors on r; connected proxies are counted from s.
func (m *metrics) register(r prometheus.Registerer, s *Server) {
	r.MustRegister(m.pushes, m.nacks, m.latency, connectedCollector{m.connected, s})
}

// connectedCollector counts connected nodes by variant when scraped.
type connectedCollector struct {
	desc *prometheus.Desc
	s    *Server
}

func (c connectedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c connectedCollector) Collect(ch chan<- prometheus.Metric) {
	var sotw, delta int
	c.s.mu.Lock()
	for _, n := range c.s.nodes {
		switch {
		case n.streams == 0:
		case n.delta:
			delta++
		default:
			sotw++
		}
	}
	c.s.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(sotw), "sotw")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(delta), "delta")
}
