package server_test

import (
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tinymesh/tinymesh/xds/server"
)

// extraService is appended to meshYAML to change the frontend's clusters.
const extraService = `
---
apiVersion: v1
kind: Service
metadata: {name: %s}
spec:
  selector: {app: %s}
  ports: [{name: http, port: 9090}]
`

func withService(name string) string {
	return meshYAML + strings.ReplaceAll(extraService, "%s", name)
}

// waitStatus polls s.Status until the node's status satisfies ok, and returns
// it; it fails the test with the last status seen after within.
func waitStatus(t *testing.T, s *server.Server, nodeID string, within time.Duration, what string, ok func(server.ProxyStatus) bool) server.ProxyStatus {
	t.Helper()
	deadline := time.Now().Add(within)
	var last server.ProxyStatus
	for {
		found := false
		for _, ps := range s.Status() {
			if ps.NodeID == nodeID {
				last, found = ps, true
			}
		}
		if found && ok(last) {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last status of %s (found %v): %+v", what, within, nodeID, found, last)
		}
		time.Sleep(5 * time.Millisecond) // polling an in-process state, bounded by the deadline
	}
}

func states(ps server.ProxyStatus) map[string]string {
	out := map[string]string{}
	for typ, st := range ps.Types {
		out[typ] = st.State
	}
	return out
}

// drain discards responses until the test ends, so the client never blocks.
func (c *adsClient) drain(t *testing.T) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-c.resp:
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}

// TestStatusNACKAndBack follows a proxy through a NACK: its CDS goes NACKED and
// it is out of sync, with the NACK's message and version; after a good push it
// is SYNCED again and the NACK is still reported as the last one. The metrics
// count the pushes, the NACK and the connected proxy.
func TestStatusNACKAndBack(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	s, addr := startServer(t, server.Options{Debounce: 10 * time.Millisecond, Registerer: reg})
	s.SetModel(model(t, meshYAML))
	const id = "frontend.default~1"
	// No inbound address: a client, whose readiness changes nobody's snapshot,
	// so that the changes below are the only ones.
	md := frontendNode("")
	delete(md, "INBOUND_ADDR")
	c := dialADS(t, addr, node(id, md))
	c.drain(t)
	c.subscribe(resource.ClusterType)
	c.subscribe(resource.ListenerType)
	c.subscribe(resource.RouteType)
	c.subscribe(resource.EndpointType)

	want := map[string]string{"CDS": server.StateSynced, "LDS": server.StateSynced, "RDS": server.StateSynced,
		"EDS": server.StateSynced, "SDS": server.StateNotSent}
	// The four responses go out one by one, and the node is in sync with
	// whatever it was sent so far after each ACK: wait for all four.
	ps := waitStatus(t, s, id, 5*time.Second, "in sync on every type", func(ps server.ProxyStatus) bool {
		return ps.InSync && cmp.Equal(want, states(ps))
	})
	if diff := cmp.Diff(want, states(ps)); diff != "" {
		t.Errorf("states after the first push (-want +got):\n%s", diff)
	}
	if ps.Workload != "frontend" || ps.Namespace != "default" || ps.Variant != "sotw" || ps.LastNACK != nil {
		t.Errorf("status = %+v, want workload frontend, namespace default, variant sotw, no NACK", ps)
	}
	if len(ps.Services) != 0 {
		t.Errorf("services = %q, want none for a node without an inbound address", ps.Services)
	}
	firstCDS := ps.Types["CDS"].Sent

	c.setReject(resource.ClusterType, "cluster outbound|9090||extra: unsupported")
	s.SetModel(model(t, withService("extra")))
	ps = waitStatus(t, s, id, 5*time.Second, "CDS NACKED", func(ps server.ProxyStatus) bool {
		return ps.Types["CDS"].State == server.StateNACKed
	})
	if ps.InSync {
		t.Errorf("in sync after a NACK: %+v", ps)
	}
	cds := ps.Types["CDS"]
	if cds.Sent == firstCDS || cds.Acked != firstCDS {
		t.Errorf("CDS after the NACK: sent %s, acked %s; want a new version sent and %s still acked", cds.Sent, cds.Acked, firstCDS)
	}
	if ps.LastNACK == nil || ps.LastNACK.Type != "CDS" || ps.LastNACK.Version != cds.Sent ||
		ps.LastNACK.Message != "cluster outbound|9090||extra: unsupported" {
		t.Errorf("last NACK = %+v, want CDS version %s with the client's message", ps.LastNACK, cds.Sent)
	}
	// Exactly one NACK: the server does not resend a rejected version.
	if got := metricValue(t, reg, "controlplane_xds_nacks_total", "type", "CDS"); got != 1 {
		t.Errorf("controlplane_xds_nacks_total{type=CDS} = %v, want 1", got)
	}
	if got := metricValue(t, reg, "controlplane_xds_pushes_total", "type", "CDS"); got != 2 {
		t.Errorf("controlplane_xds_pushes_total{type=CDS} = %v after the NACK, want 2", got)
	}
	// Only the connection's change is in force.
	if got := metricValue(t, reg, "controlplane_xds_push_latency_seconds"); got != 1 {
		t.Errorf("controlplane_xds_push_latency_seconds count = %v while NACKed, want 1", got)
	}

	c.setReject(resource.ClusterType, "")
	s.SetModel(model(t, withService("other")))
	ps = waitStatus(t, s, id, 5*time.Second, "in sync again", func(ps server.ProxyStatus) bool { return ps.InSync })
	if ps.Types["CDS"].State != server.StateSynced || ps.LastNACK == nil {
		t.Errorf("after the good push: %+v, want CDS SYNCED and the last NACK kept", ps)
	}

	for _, m := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"controlplane_xds_pushes_total", []string{"type", "CDS"}, 3},
		{"controlplane_xds_pushes_total", []string{"type", "SDS"}, 0},
		{"controlplane_xds_nacks_total", []string{"type", "CDS"}, 1},
		{"controlplane_xds_nacks_total", []string{"type", "LDS"}, 0},
		// The NACKed change is in force with the good one: three changes.
		{"controlplane_xds_push_latency_seconds", nil, 3},
		{"controlplane_connected_proxies", []string{"variant", "sotw"}, 1},
		{"controlplane_connected_proxies", []string{"variant", "delta"}, 0},
	} {
		if got := metricValue(t, reg, m.name, m.labels...); got != m.want {
			t.Errorf("%s%v = %v, want %v", m.name, m.labels, got, m.want)
		}
	}
	checkLatencyBuckets(t, reg)
}

// checkLatencyBuckets checks that every push latency observed is under 5 s (a
// loopback server with 10 ms debounce) and the buckets are cumulative.
func checkLatencyBuckets(t *testing.T, reg prometheus.Gatherer) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "controlplane_xds_push_latency_seconds" {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		var prev uint64
		for _, b := range h.GetBucket() {
			if b.GetCumulativeCount() < prev {
				t.Errorf("bucket le=%v has %d, less than the one before (%d)", b.GetUpperBound(), b.GetCumulativeCount(), prev)
			}
			prev = b.GetCumulativeCount()
			if b.GetUpperBound() >= 5 && b.GetCumulativeCount() != h.GetSampleCount() {
				t.Errorf("bucket le=%v has %d of %d observations, want all", b.GetUpperBound(), b.GetCumulativeCount(), h.GetSampleCount())
			}
		}
		if h.GetSampleSum() <= 0 {
			t.Errorf("latency sum = %v, want > 0", h.GetSampleSum())
		}
		return
	}
	t.Error("no controlplane_xds_push_latency_seconds")
}

// metricValue gathers reg and returns the value of the counter, gauge or
// histogram (its count) name with the label pairs given (all of them must
// match); it fails the test if there is no such series.
func metricValue(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

func hasLabels(m *dto.Metric, pairs []string) bool {
	for i := 0; i+1 < len(pairs); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == pairs[i] && l.GetValue() == pairs[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// TestStatusServices: a node with an inbound address lists the Services that
// select it, and is in sync with the one type it asked for.
func TestStatusServices(t *testing.T) {
	s, addr := startServer(t, server.Options{Debounce: 10 * time.Millisecond})
	s.SetModel(model(t, meshYAML))
	const id = "backend-v1.default~1"
	c := dialADS(t, addr, node(id, backendNode("127.0.0.1:16007")))
	c.drain(t)
	c.subscribeVersion(resource.ClusterType, "") // registers, asks for nothing sent yet
	ps := waitStatus(t, s, id, 5*time.Second, "registered", func(server.ProxyStatus) bool { return true })
	if diff := cmp.Diff([]string{"backend.default"}, ps.Services); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
	ps = waitStatus(t, s, id, 5*time.Second, "CDS synced", func(ps server.ProxyStatus) bool {
		return ps.Types["CDS"].State == server.StateSynced
	})
	if !ps.InSync || ps.Types["LDS"].State != server.StateNotSent {
		t.Errorf("status = %+v, want in sync with CDS alone sent", ps)
	}
}
