package stats

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// XDS holds the xDS client's metrics. Its methods are safe for concurrent use
// and may be called on a nil *XDS (metrics off).
type XDS struct {
	connected  prometheus.Gauge
	updates    *prometheus.CounterVec
	lastUpdate *prometheus.GaugeVec
}

func newXDS() *XDS {
	return &XDS{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshproxy_xds_connected",
			Help: "1 while the ADS stream to the control plane is up."}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshproxy_xds_updates_total",
			Help: "xDS responses by type URL and outcome (ack or nack)."}, []string{"type", "result"}),
		lastUpdate: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meshproxy_xds_last_update_timestamp_seconds",
			Help: "Unix time of the last accepted update per type URL."}, []string{"type"}),
	}
}

func (x *XDS) register(reg prometheus.Registerer) {
	reg.MustRegister(x.connected, x.updates, x.lastUpdate)
}

// Connected records whether the ADS stream is up.
func (x *XDS) Connected(up bool) {
	if x == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	x.connected.Set(v)
}

// Update records a response of typeURL that was ACKed (ok) or NACKed.
func (x *XDS) Update(typeURL string, ok bool) {
	if x == nil {
		return
	}
	if !ok {
		x.updates.WithLabelValues(typeURL, "nack").Inc()
		return
	}
	x.updates.WithLabelValues(typeURL, "ack").Inc()
	x.lastUpdate.WithLabelValues(typeURL).Set(float64(time.Now().UnixNano()) / 1e9)
}
