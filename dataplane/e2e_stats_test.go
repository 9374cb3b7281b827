package dataplane_test

import (
	"context"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"

	"github.com/tinymesh/tinymesh/dataplane"
	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/proxytest"
	"github.com/tinymesh/tinymesh/dataplane/stats"
)

// startStatsProxy is proxytest.StartProxy with a stats.Recorder for the
// workload named by opts.
func startStatsProxy(t *testing.T, name string, opts stats.Options, snap *config.Snapshot) *stats.Recorder {
	t.Helper()
	rec := stats.New(opts)
	p := dataplane.New(dataplane.Options{Logger: proxytest.Logger(t, name), DrainTimeout: 5 * time.Second, Stats: rec})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Close(ctx)
	})
	if err := p.Apply(snap); err != nil {
		t.Fatalf("proxy %s: Apply: %v", name, err)
	}
	return rec
}

// series is one metric sample: its labels and its counter value or
// histogram count.
type series struct {
	labels map[string]string
	value  float64
	hist   *dto.Histogram
}

func gather(t *testing.T, rec *stats.Recorder, name string) []series {
	t.Helper()
	mfs, err := rec.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []series
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			s := series{labels: map[string]string{}}
			for _, lp := range m.GetLabel() {
				s.labels[lp.GetName()] = lp.GetValue()
			}
			switch {
			case m.Counter != nil:
				s.value = m.GetCounter().GetValue()
			case m.Histogram != nil:
				s.hist = m.GetHistogram()
				s.value = float64(s.hist.GetSampleCount())
			}
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].labels["response_code"] < out[j].labels["response_code"] })
	return out
}

// TestStatsAcrossMTLSSidecars sends known traffic from A to B over mTLS and
// checks Istio's request metrics on both sides: exact counts, labels
// (principals, workloads from endpoint metadata, security policy, flags) and
// histogram buckets.
func TestStatsAcrossMTLSSidecars(t *testing.T) {
	pki := proxytest.NewPKI(t, "mesh root")
	certA, certB := pki.IssueSVID(t, idFrontend), pki.IssueSVID(t, idBackend)
	app := proxytest.StartApp(t, "app", nil)
	inAddr, outAddr := proxytest.FreeAddr(t), proxytest.FreeAddr(t)

	snapB := mtlsInbound("b1", inAddr, app.Addr, certB, pki.CAPEM, false)
	snapB.Routes["inbound"].VirtualHosts[0].Name = "backend.default.svc.cluster.local:8080"
	recB := startStatsProxy(t, "B", stats.Options{Workload: "backend-v1", Namespace: "default", Version: "v1", Principal: idBackend}, snapB)
	snapA := mtlsOutbound("a1", outAddr, inAddr, certA, pki.CAPEM, idBackend)
	ep := &snapA.Clusters[proxytest.OutboundCluster].Endpoints[0]
	ep.Workload, ep.Namespace, ep.Version = "backend-v1", "default", "v1"
	recA := startStatsProxy(t, "A", stats.Options{Workload: "frontend", Namespace: "default", Principal: idFrontend}, snapA)

	c := proxytest.Client(t)
	send := func(host, body string) int {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+outAddr+"/", strings.NewReader(body))
		req.Host = host
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for range 3 {
		if code := send("backend", "hello"); code != 200 {
			t.Fatalf("POST backend: %d, want 200", code)
		}
	}
	if code := send("nowhere", ""); code != 404 {
		t.Fatalf("POST nowhere: %d, want 404", code)
	}

	gotA := gather(t, recA, "istio_requests_total")
	wantA := []series{
		{labels: map[string]string{"reporter": "source", "source_workload": "frontend", "source_workload_namespace": "default",
			"source_principal": idFrontend, "destination_workload": "backend-v1", "destination_workload_namespace": "default",
			"destination_version": "v1", "destination_service": "backend.default.svc.cluster.local", "destination_principal": idBackend,
			"connection_security_policy": "unknown", "response_flags": "-", "response_code": "200", "grpc_response_status": ""}, value: 3},
		{labels: map[string]string{"reporter": "source", "source_workload": "frontend", "source_workload_namespace": "default",
			"source_principal": "unknown", "destination_workload": "unknown", "destination_workload_namespace": "unknown",
			"destination_version": "unknown", "destination_service": "unknown", "destination_principal": "unknown",
			"connection_security_policy": "unknown", "response_flags": "NR", "response_code": "404", "grpc_response_status": ""}, value: 1},
	}
	cmpSeries := cmp.Comparer(func(a, b series) bool { return cmp.Equal(a.labels, b.labels) && a.value == b.value })
	if d := cmp.Diff(wantA, gotA, cmpSeries); d != "" {
		t.Errorf("A's istio_requests_total (-want +got):\n%s", d)
	}
	gotB := gather(t, recB, "istio_requests_total")
	wantB := []series{
		{labels: map[string]string{"reporter": "destination", "source_workload": "frontend", "source_workload_namespace": "default",
			"source_principal": idFrontend, "destination_workload": "backend-v1", "destination_workload_namespace": "default",
			"destination_version": "v1", "destination_service": "backend.default.svc.cluster.local", "destination_principal": idBackend,
			"connection_security_policy": "mutual_tls", "response_flags": "-", "response_code": "200", "grpc_response_status": ""}, value: 3},
	}
	if d := cmp.Diff(wantB, gotB, cmpSeries); d != "" {
		t.Errorf("B's istio_requests_total (-want +got):\n%s", d)
	}

	// Sizes: every request body is 5 bytes ("hello"), every response "app".
	for _, rec := range []*stats.Recorder{recA, recB} {
		for _, m := range []struct {
			name string
			size float64
		}{{"istio_request_bytes", 5}, {"istio_response_bytes", 3}} {
			for _, s := range gather(t, rec, m.name) {
				if s.labels["response_code"] != "200" {
					continue
				}
				if s.hist.GetSampleCount() != 3 || s.hist.GetSampleSum() != 3*m.size {
					t.Errorf("%s %s: count %d sum %v, want 3 and %v", s.labels["reporter"], m.name, s.hist.GetSampleCount(), s.hist.GetSampleSum(), 3*m.size)
				}
				for _, b := range s.hist.GetBucket() {
					if want := uint64(0); b.GetUpperBound() >= m.size {
						want = 3
						if b.GetCumulativeCount() != want {
							t.Errorf("%s %s bucket le=%v: %d, want %d", s.labels["reporter"], m.name, b.GetUpperBound(), b.GetCumulativeCount(), want)
						}
					} else if b.GetCumulativeCount() != 0 {
						t.Errorf("%s %s bucket le=%v: %d, want 0", s.labels["reporter"], m.name, b.GetUpperBound(), b.GetCumulativeCount())
					}
				}
			}
		}
		// Durations on loopback: all 3 within the 10 s bucket, and the
		// 3600000 ms (last) bucket holds all.
		for _, s := range gather(t, rec, "istio_request_duration_milliseconds") {
			if s.labels["response_code"] != "200" {
				continue
			}
			bs := s.hist.GetBucket()
			if len(bs) != 19 || bs[len(bs)-1].GetUpperBound() != 3600000 {
				t.Errorf("duration buckets: %d, last %v; want Istio's 19 up to 3600000", len(bs), bs[len(bs)-1].GetUpperBound())
			}
			for _, b := range bs {
				if b.GetUpperBound() >= 10000 && b.GetCumulativeCount() != 3 {
					t.Errorf("duration bucket le=%v: %d, want 3", b.GetUpperBound(), b.GetCumulativeCount())
				}
			}
		}
	}
	if got := gather(t, recA, "envoy_cluster_upstream_rq_total"); len(got) != 1 || got[0].value != 3 || got[0].labels["cluster_name"] != proxytest.OutboundCluster {
		t.Errorf("A's envoy_cluster_upstream_rq_total: %+v, want 3 for %s", got, proxytest.OutboundCluster)
	}
}

// TestStatsUpstreamFailureFlags: a cluster whose only endpoint refuses
// connections gives 503 with UF and, retries exhausted, URX.
func TestStatsUpstreamFailureFlags(t *testing.T) {
	outAddr := proxytest.FreeAddr(t)
	snap := proxytest.OutboundSnapshot("a1", outAddr, config.WeightedCluster{Name: proxytest.OutboundCluster, Weight: 1})
	snap.Clusters[proxytest.OutboundCluster] = proxytest.Cluster(proxytest.OutboundCluster, config.ProtocolH2C, proxytest.FreeAddr(t))
	rec := startStatsProxy(t, "A", stats.Options{Workload: "frontend", Namespace: "default"}, snap)
	req, _ := http.NewRequest("GET", "http://"+outAddr+"/", nil)
	req.Host = "backend"
	resp, err := proxytest.Client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got := gather(t, rec, "istio_requests_total")
	if len(got) != 1 || got[0].value != 1 || got[0].labels["response_code"] != "503" || got[0].labels["response_flags"] != "UF,URX" {
		t.Errorf("istio_requests_total: %+v, want one 503 with UF,URX", got)
	}
	for name, want := range map[string]float64{"envoy_cluster_upstream_rq_total": 3, "envoy_cluster_upstream_rq_retry": 2, "envoy_cluster_upstream_cx_connect_fail": 3} {
		if got := gather(t, rec, name); len(got) != 1 || got[0].value != want {
			t.Errorf("%s: %+v, want %v", name, got, want)
		}
	}
}
