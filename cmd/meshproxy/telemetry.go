package main

import (
	"net/http"

	"github.com/tinymesh/tinymesh/dataplane"
	"github.com/tinymesh/tinymesh/dataplane/stats"
	"github.com/tinymesh/tinymesh/xds/client"
)

// newStats returns the metrics recorder for this workload, or nil with
// --metrics=false: then no Observer is installed and the request path does no
// metrics work at all.
func newStats(o options) *stats.Recorder {
	if !o.metrics {
		return nil
	}
	labels, _ := parseLabels(o.labels) // checked by buildNode
	sa := o.serviceAccount
	if sa == "" {
		sa = o.workload
	}
	// Reported only for streams that used TLS, which present this ID
	// (docs/identity.md: spiffe://<td>/ns/<ns>/sa/<sa>).
	principal := "spiffe://" + o.trustDomain + "/ns/" + o.namespace + "/sa/" + sa
	return stats.New(stats.Options{
		Workload:  o.workload,
		Namespace: o.namespace,
		Version:   labels["version"],
		Principal: principal,
	})
}

// metricsHandler is the admin's /stats/prometheus handler; nil when off.
func metricsHandler(rec *stats.Recorder) http.Handler {
	if rec == nil {
		return nil
	}
	return rec.Handler()
}

// xdsObserver feeds the xDS client's stream and responses to the
// meshproxy_xds_* metrics; nil when metrics are off (a typed nil would still
// be called).
func xdsObserver(rec *stats.Recorder) client.Observer {
	if rec == nil {
		return nil
	}
	return rec.XDS
}

// clusterGauges reads the proxy's per-cluster upstream state (see
// dataplane.ClusterGauges) at each scrape.
func clusterGauges(proxy *dataplane.Proxy) func() []stats.ClusterGauges {
	return func() []stats.ClusterGauges { return dataplane.ClusterGauges(proxy.Clusters()) }
}
