package dataplane_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tinymesh/tinymesh/dataplane"
	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/httpproxy"
	"github.com/tinymesh/tinymesh/dataplane/proxytest"
	"github.com/tinymesh/tinymesh/dataplane/stats"
)

// These tests run a proxy in front of real backends on loopback and check
// circuit breakers, outlier detection and active health checks end to end:
// which backend gets traffic, what the client sees, /clusters and the
// envoy_cluster_* metrics.

// resilienceProxy starts a proxy with metrics whose outbound HTTP listener
// sends the backend service to cluster c, and returns the proxy, its
// recorder and the listener address.
func resilienceProxy(t *testing.T, c *config.Cluster) (*dataplane.Proxy, *stats.Recorder, string) {
	t.Helper()
	addr := proxytest.FreeAddr(t)
	snap := proxytest.OutboundSnapshot("res-1", addr, config.WeightedCluster{Name: c.Name, Weight: 1})
	snap.Clusters[c.Name] = c
	p, rec := statsProxy(t)
	if err := p.Apply(snap); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return p, rec, addr
}

// statsProxy starts a proxy with metrics, cluster gauges included, and no
// config yet.
func statsProxy(t *testing.T) (*dataplane.Proxy, *stats.Recorder) {
	t.Helper()
	rec := stats.New(stats.Options{Workload: "frontend", Namespace: "default"})
	p := dataplane.New(dataplane.Options{Logger: proxytest.Logger(t, "P"), DrainTimeout: 5 * time.Second, Stats: rec})
	rec.ReadClusters(func() []stats.ClusterGauges { return dataplane.ClusterGauges(p.Clusters()) })
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Close(ctx)
	})
	return p, rec
}

// clusterMetric returns the value of the counter or gauge name for cluster,
// and whether the series exists.
func clusterMetric(t *testing.T, rec *stats.Recorder, name, cluster string) (float64, bool) {
	t.Helper()
	mfs, err := rec.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "cluster_name" && lp.GetValue() == cluster {
					if m.Counter != nil {
						return m.GetCounter().GetValue(), true
					}
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

func wantMetric(t *testing.T, rec *stats.Recorder, name, cluster string, want float64) {
	t.Helper()
	got, ok := clusterMetric(t, rec, name, cluster)
	if !ok || got != want {
		t.Errorf("%s{cluster_name=%q} = %v (exported: %v), want %v", name, cluster, got, ok, want)
	}
}

// endpointStatus returns the /clusters entry of addr in cluster.
func endpointStatus(t *testing.T, p *dataplane.Proxy, cluster, addr string) dataplane.EndpointStatus {
	t.Helper()
	for _, c := range p.Clusters() {
		if c.Name != cluster {
			continue
		}
		for _, e := range c.Endpoints {
			if e.Address == addr {
				return e
			}
		}
	}
	t.Fatalf("no endpoint %s in cluster %s", addr, cluster)
	return dataplane.EndpointStatus{}
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %v waiting for %s", d, what)
		case <-tick.C:
		}
	}
}

// getBackend sends GET / for the backend service and returns the status, the
// proxy's error header and the X-App header the backends below set.
func getBackend(t *testing.T, client *http.Client, addr string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	req.Host = "backend"
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get(httpproxy.ErrorHeader), resp.Header.Get("X-App")
}

// app answers traffic with status() and X-App: name, and /healthz with
// healthz(); it counts traffic (not health checks) in served.
type app struct {
	name    string
	served  atomic.Int64
	status  atomic.Int64
	healthz atomic.Int64
	*proxytest.App
}

func startApp(t *testing.T, name string, status, healthz int) *app {
	a := &app{name: name}
	a.status.Store(int64(status))
	a.healthz.Store(int64(healthz))
	a.App = proxytest.StartApp(t, name, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			w.WriteHeader(int(a.healthz.Load()))
			return
		}
		a.served.Add(1)
		w.Header().Set("X-App", a.name)
		w.WriteHeader(int(a.status.Load()))
	}))
	return a
}

func TestOutlierEjectionMovesTrafficAndReturns(t *testing.T) {
	good := startApp(t, "good", 200, 200)
	bad := startApp(t, "bad", 503, 200)
	c := proxytest.Cluster(proxytest.OutboundCluster, config.ProtocolHTTP1, good.Addr, bad.Addr)
	c.OutlierDetection = &config.OutlierDetection{
		Consecutive5xx: 3, EnforcingConsecutive5xx: 100,
		ConsecutiveGatewayFailure: 5, EnforcingConsecutiveGatewayFailure: 0,
		Interval: 20 * time.Millisecond, BaseEjectionTime: 400 * time.Millisecond, MaxEjectionTime: 300 * time.Second,
		MaxEjectionPercent: 10, // of 2 endpoints: 0.2, yet one may always be ejected
	}
	c.HealthyPanicThreshold = 50
	p, rec, addr := resilienceProxy(t, c)
	client := proxytest.Client(t)

	// Round robin alternates: the bad endpoint answers 503 three times in a
	// row, is ejected, and the rest go to the good one.
	var got503, got200 int
	for range 26 {
		switch code, _, _ := getBackend(t, client, addr); code {
		case 503:
			got503++
		case 200:
			got200++
		default:
			t.Fatalf("status %d", code)
		}
	}
	if got503 != 3 || got200 != 23 {
		t.Errorf("got %d 503s and %d 200s, want 3 and 23 (ejected after consecutive_5xx=3)", got503, got200)
	}
	if n := bad.served.Load(); n != 3 {
		t.Errorf("bad endpoint served %d requests, want 3", n)
	}
	e := endpointStatus(t, p, c.Name, bad.Addr)
	if e.Health != "ejected" || e.HealthFlags != "/failed_outlier_check" || e.Outlier != "ejected" || e.Ejections != 1 || e.EjectionTimeLeftMs <= 0 {
		t.Errorf("bad endpoint in /clusters: %+v, want ejected once with time left", e)
	}
	if e := endpointStatus(t, p, c.Name, good.Addr); e.Health != "healthy" || e.Outlier != "ok" {
		t.Errorf("good endpoint in /clusters: %+v, want healthy", e)
	}
	wantMetric(t, rec, "envoy_cluster_outlier_detection_ejections_total", c.Name, 1)
	wantMetric(t, rec, "envoy_cluster_outlier_detection_ejections_active", c.Name, 1)
	wantMetric(t, rec, "envoy_cluster_membership_healthy", c.Name, 1)
	wantMetric(t, rec, "envoy_cluster_membership_total", c.Name, 2)

	// After base_ejection_time (times 1) a sweep returns it, and it takes
	// traffic again.
	waitFor(t, 5*time.Second, "the bad endpoint to return", func() bool {
		return endpointStatus(t, p, c.Name, bad.Addr).Health == "healthy"
	})
	wantMetric(t, rec, "envoy_cluster_outlier_detection_ejections_active", c.Name, 0)
	before := bad.served.Load()
	for range 4 {
		getBackend(t, client, addr)
	}
	if n := bad.served.Load() - before; n != 2 {
		t.Errorf("returned endpoint served %d of 4 requests, want 2", n)
	}
}

func TestHealthCheckKeepsTrafficFromFailingEndpoint(t *testing.T) {
	good := startApp(t, "good", 200, 200)
	bad := startApp(t, "bad", 200, 500) // would serve traffic fine, but fails its check
	c := proxytest.Cluster(proxytest.OutboundCluster, config.ProtocolHTTP1, good.Addr, bad.Addr)
	c.HealthCheck = &config.HealthCheck{Kind: config.HealthCheckHTTP, Path: "/healthz",
		Timeout: time.Second, Interval: 20 * time.Millisecond, UnhealthyThreshold: 1, HealthyThreshold: 2}
	c.HealthyPanicThreshold = 50
	p, rec, addr := resilienceProxy(t, c)
	client := proxytest.Client(t)

	waitFor(t, 5*time.Second, "the first probes", func() bool {
		return endpointStatus(t, p, c.Name, good.Addr).HealthFlags == "healthy" &&
			endpointStatus(t, p, c.Name, bad.Addr).HealthFlags == "/failed_active_hc"
	})
	for range 20 {
		if code, _, name := getBackend(t, client, addr); code != 200 || name != "good" {
			t.Fatalf("got %d from %q, want 200 from good", code, name)
		}
	}
	if n := bad.served.Load(); n != 0 {
		t.Errorf("endpoint failing its health check served %d requests, want 0", n)
	}
	if e := endpointStatus(t, p, c.Name, bad.Addr); e.Health != "unhealthy" || e.Outlier != "not enabled" {
		t.Errorf("bad endpoint in /clusters: %+v, want unhealthy", e)
	}
	wantMetric(t, rec, "envoy_cluster_membership_healthy", c.Name, 1)
	wantMetric(t, rec, "envoy_cluster_membership_total", c.Name, 2)
	// Probes go on while we scrape: outcomes first, then attempts (each
	// probe counts its attempt before its outcome), so the sum cannot pass
	// the attempts read after it.
	success, _ := clusterMetric(t, rec, "envoy_cluster_health_check_success", c.Name)
	failure, _ := clusterMetric(t, rec, "envoy_cluster_health_check_failure", c.Name)
	attempts, _ := clusterMetric(t, rec, "envoy_cluster_health_check_attempt", c.Name)
	if attempts < 2 || success < 1 || failure < 1 || success+failure > attempts {
		t.Errorf("health-check stats attempt=%v success=%v failure=%v, want >=2, >=1, >=1 and success+failure <= attempt", attempts, success, failure)
	}
	if _, ok := clusterMetric(t, rec, "envoy_cluster_outlier_detection_ejections_total", c.Name); ok {
		t.Error("outlier metrics exported for a cluster without outlier detection")
	}

	// Once its check passes healthy_threshold times it takes traffic again.
	bad.healthz.Store(200)
	waitFor(t, 5*time.Second, "the bad endpoint to pass its checks", func() bool {
		return endpointStatus(t, p, c.Name, bad.Addr).Health == "healthy"
	})
	for range 4 {
		getBackend(t, client, addr)
	}
	if n := bad.served.Load(); n != 2 {
		t.Errorf("recovered endpoint served %d of 4 requests, want 2", n)
	}
}

func TestHealthCheckAllUnhealthyPanics(t *testing.T) {
	a := startApp(t, "a", 200, 503)
	b := startApp(t, "b", 200, 503)
	c := proxytest.Cluster(proxytest.OutboundCluster, config.ProtocolH2C, a.Addr, b.Addr)
	c.HealthCheck = &config.HealthCheck{Kind: config.HealthCheckHTTP, Path: "/healthz",
		Timeout: time.Second, Interval: 20 * time.Millisecond, UnhealthyThreshold: 1, HealthyThreshold: 1}
	c.HealthyPanicThreshold = 50
	p, _, addr := resilienceProxy(t, c)
	client := proxytest.Client(t)
	probed := func(p *dataplane.Proxy) func() bool {
		return func() bool {
			return endpointStatus(t, p, c.Name, a.Addr).HealthFlags == "/failed_active_hc" &&
				endpointStatus(t, p, c.Name, b.Addr).HealthFlags == "/failed_active_hc"
		}
	}
	waitFor(t, 5*time.Second, "both endpoints to fail their checks", probed(p))
	if !p.Clusters()[0].Panic {
		t.Error("/clusters: panic = false with no healthy endpoint, want true")
	}
	for range 4 {
		if code, _, _ := getBackend(t, client, addr); code != 200 {
			t.Fatalf("panic mode: got %d, want 200 (all endpoints used when none is healthy)", code)
		}
	}
	if a.served.Load() != 2 || b.served.Load() != 2 {
		t.Errorf("served a=%d b=%d, want 2 each in panic mode", a.served.Load(), b.served.Load())
	}

	// With panic mode off (threshold 0) nothing is available: 503 UH.
	c2 := *c
	c2.HealthyPanicThreshold = 0
	p2, _, addr2 := resilienceProxy(t, &c2)
	waitFor(t, 5*time.Second, "both endpoints to fail their checks", probed(p2))
	if code, reason, _ := getBackend(t, client, addr2); code != 503 || reason != "no_healthy_upstream" {
		t.Errorf("panic mode off: got %d %q, want 503 no_healthy_upstream", code, reason)
	}
}

func TestCircuitBreakerMaxRequests(t *testing.T) {
	release := make(chan struct{})
	var inflight atomic.Int64
	slow := proxytest.StartApp(t, "slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inflight.Add(1)
		<-release
		w.WriteHeader(200)
	}))
	c := proxytest.Cluster(proxytest.OutboundCluster, config.ProtocolH2C, slow.Addr)
	lim := config.DefaultCircuitBreakers()
	lim.MaxRequests = 2
	c.CircuitBreakers = lim
	_, rec, addr := resilienceProxy(t, c)
	client := proxytest.Client(t)

	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _, _ = getBackend(t, client, addr)
		}()
	}
	released := false
	defer func() {
		if !released {
			close(release)
		}
		wg.Wait()
	}()
	waitFor(t, 5*time.Second, "two requests at the backend", func() bool { return inflight.Load() == 2 })
	wantMetric(t, rec, "envoy_cluster_circuit_breakers_default_rq_open", c.Name, 1)
	for range 3 {
		if code, reason, _ := getBackend(t, client, addr); code != 503 || reason != "upstream_overflow" {
			t.Errorf("request over max_requests: got %d %q, want 503 upstream_overflow", code, reason)
		}
	}
	close(release)
	released = true
	wg.Wait()
	for i, code := range codes {
		if code != 200 {
			t.Errorf("admitted request %d: got %d, want 200", i, code)
		}
	}
	wantMetric(t, rec, "envoy_cluster_upstream_rq_pending_overflow", c.Name, 3)
	wantMetric(t, rec, "envoy_cluster_upstream_cx_overflow", c.Name, 0)
	wantMetric(t, rec, "envoy_cluster_circuit_breakers_default_rq_open", c.Name, 0)
	var uo float64
	for _, s := range gather(t, rec, "istio_requests_total") {
		if s.labels["response_flags"] == "UO" {
			uo += s.value
		}
	}
	if uo != 3 {
		t.Errorf("istio_requests_total{response_flags=UO} = %v, want 3", uo)
	}
	if code, _, _ := getBackend(t, client, addr); code != 200 {
		t.Errorf("after the burst: got %d, want 200", code)
	}
}

func TestCircuitBreakerMaxConnectionsTCP(t *testing.T) {
	echo := proxytest.StartTCPEcho(t)
	c := proxytest.Cluster("outbound|9000||echo.default.svc.cluster.local", config.ProtocolTCP, echo.Addr)
	lim := config.DefaultCircuitBreakers()
	lim.MaxConnections = 1
	c.CircuitBreakers = lim
	addr := proxytest.FreeAddr(t)
	p, rec := statsProxy(t)
	if err := p.Apply(&config.Snapshot{Version: "tcp-1",
		Listeners: []*config.Listener{{Name: "outbound_tcp|9000||echo.default.svc.cluster.local", Address: addr, TCP: &config.TCPProxy{Cluster: c.Name}}},
		Clusters:  map[string]*config.Cluster{c.Name: c}}); err != nil {
		t.Fatal(err)
	}
	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	select {
	case <-echo.Accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("first connection never reached the backend")
	}
	second, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	second.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := second.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("second connection over max_connections: read %d bytes, err %v; want it closed (EOF)", n, err)
	}
	wantMetric(t, rec, "envoy_cluster_upstream_cx_overflow", c.Name, 1)
	wantMetric(t, rec, "envoy_cluster_circuit_breakers_default_cx_open", c.Name, 1)
	// The first connection still works.
	first.Write([]byte("hi"))
	first.(*net.TCPConn).CloseWrite()
	b, _ := io.ReadAll(first)
	if string(b) != "echo:hi" {
		t.Errorf("first connection got %q, want echo:hi", b)
	}
}
