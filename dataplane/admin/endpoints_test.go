package admin

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tinymesh/tinymesh/dataplane"
	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/proxytest"
)

const wait = 10 * time.Second // generous: what must happen

// world is a proxy with an outbound HTTP listener that splits backend 90/10
// between two clusters, sends x-canary: true to the canary, and a TCP
// listener with an RBAC filter; both clusters are real apps.
type world struct {
	proxy          *dataplane.Proxy
	admin          string // base URL
	outbound, tcp  string
	stable, canary *proxytest.App
	release        chan struct{} // closing it lets /slow requests answer
	slowIn         chan struct{} // one value per /slow request that reached the app
	level          *slog.LevelVar
	drained        atomic.Int32
	client         *http.Client
}

func startWorld(t *testing.T) *world {
	t.Helper()
	w := &world{release: make(chan struct{}), slowIn: make(chan struct{}, 10), level: new(slog.LevelVar)}
	slow := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			w.slowIn <- struct{}{}
			select {
			case <-w.release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(rw, "ok")
	})
	w.stable = proxytest.StartApp(t, "stable", slow)
	w.canary = proxytest.StartApp(t, "canary", slow)
	t.Cleanup(func() {
		select {
		case <-w.release:
		default:
			close(w.release)
		}
	})
	w.outbound, w.tcp = proxytest.FreeAddr(t), proxytest.FreeAddr(t)
	snap := proxytest.OutboundSnapshot("v1", w.outbound,
		config.WeightedCluster{Name: "stable", Weight: 90}, config.WeightedCluster{Name: "canary", Weight: 10})
	vh := snap.Routes["outbound_http"].VirtualHosts[0]
	vh.Routes = append([]*config.Route{{Name: "canary-header",
		Match:  config.RouteMatch{Path: "/", Headers: []config.HeaderMatcher{{Name: "x-canary", Value: "true"}}},
		Action: &config.RouteAction{Clusters: []config.WeightedCluster{{Name: "canary", Weight: 1}}}}}, vh.Routes...)
	snap.Clusters["stable"] = proxytest.Cluster("stable", config.ProtocolHTTP1, w.stable.Addr)
	snap.Clusters["canary"] = proxytest.Cluster("canary", config.ProtocolHTTP1, w.canary.Addr)
	snap.Listeners[0].HTTP.RBAC = &config.RBACFilter{Rules: &config.RBAC{Action: config.RBACDeny, Policies: []config.RBACPolicy{{
		Name:        "default/no-admin[0]",
		Permissions: []config.RBACMatcher{{Kind: config.RBACURLPath, String: config.StringMatcher{Kind: config.StringPrefix, Value: "/admin"}}},
		Principals:  []config.RBACMatcher{{Kind: config.RBACAny}},
	}}}}
	snap.Listeners = append(snap.Listeners, &config.Listener{Name: "outbound_tcp", Address: w.tcp, Direction: config.Outbound,
		TCP: &config.TCPProxy{StatPrefix: "tcp", Cluster: "stable", RBAC: &config.RBAC{Action: config.RBACAllow}}})
	w.proxy = proxytest.StartProxy(t, "A", snap)

	s := New(Options{Addr: "127.0.0.1:0", Ready: w.proxy.Ready, ConfigDump: func() any { return w.proxy.Snapshot() },
		EnvoyConfigDump: func() ([]byte, error) { return []byte("{\"configs\": []}\n"), nil },
		Proxy:           w.proxy, LogLevel: w.level, Drain: func() { w.drained.Add(1) },
		Logger: proxytest.Logger(t, "admin")})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	w.admin = "http://" + s.Addr()
	w.client = proxytest.Client(t)
	return w
}

func (w *world) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	code, body := get(t, w.client, w.admin+path)
	if code != 200 {
		t.Fatalf("GET %s = %d %s", path, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v\n%s", path, err, body)
	}
}

// send makes one request through the outbound listener.
func (w *world) send(t *testing.T, path string, hdr map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+w.outbound+path, nil)
	req.Host = "backend:8080"
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		t.Fatalf("GET %s through the proxy: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (w *world) sendHost(t *testing.T, host string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+w.outbound+"/", nil)
	req.Host = host
	resp, err := w.client.Do(req)
	if err != nil {
		t.Fatalf("GET / Host %s through the proxy: %v", host, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestListeners(t *testing.T) {
	w := startWorld(t)
	var got struct{ Listeners []dataplane.ListenerStatus }
	w.getJSON(t, "/listeners", &got)
	want := []dataplane.ListenerStatus{
		{Name: "outbound_http", Address: w.outbound, BoundAddress: w.outbound, Direction: "outbound", TLS: "none",
			Filters:     []string{"envoy.filters.network.http_connection_manager", "envoy.filters.http.rbac", "envoy.filters.http.router"},
			RouteConfig: "outbound_http", RBAC: "DENY policies [default/no-admin[0]]"},
		{Name: "outbound_tcp", Address: w.tcp, BoundAddress: w.tcp, Direction: "outbound", TLS: "none",
			Filters: []string{"envoy.filters.network.rbac", "envoy.filters.network.tcp_proxy"}, Cluster: "stable", RBAC: "ALLOW policies []"},
	}
	if diff := cmp.Diff(want, got.Listeners); diff != "" {
		t.Errorf("/listeners (-want +got):\n%s", diff)
	}
}

func endpointOf(t *testing.T, w *world, cluster string) dataplane.EndpointStatus {
	t.Helper()
	var got struct{ Clusters []dataplane.ClusterStatus }
	w.getJSON(t, "/clusters", &got)
	for _, c := range got.Clusters {
		if c.Name == cluster {
			if len(c.Endpoints) != 1 {
				t.Fatalf("cluster %s has endpoints %+v, want 1", cluster, c.Endpoints)
			}
			return c.Endpoints[0]
		}
	}
	t.Fatalf("/clusters has no cluster %s: %+v", cluster, got.Clusters)
	return dataplane.EndpointStatus{}
}

func TestClustersCountsActiveRequests(t *testing.T) {
	w := startWorld(t)
	// Known traffic: 5 requests pinned to the canary by header.
	for range 5 {
		if code, body := w.send(t, "/", map[string]string{"x-canary": "true"}); code != 200 || body != "ok" {
			t.Fatalf("request = %d %q, want 200 ok", code, body)
		}
	}
	got := endpointOf(t, w, "canary")
	want := dataplane.EndpointStatus{Address: w.canary.Addr, Weight: 1, Health: "unknown", HealthFlags: "unknown", Outlier: "not enabled",
		TotalRequests: 5, ActiveConnections: 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("canary endpoint after 5 requests on one keep-alive connection (-want +got):\n%s", diff)
	}

	// Two requests held by the app are active; they end when it answers.
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			req, _ := http.NewRequest("GET", "http://"+w.outbound+"/slow", nil)
			req.Host, req.Header = "backend", http.Header{"X-Canary": {"true"}}
			resp, err := w.client.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			errs <- err
		}()
	}
	for range 2 {
		select {
		case <-w.slowIn:
		case <-time.After(wait):
			t.Fatal("slow requests did not reach the app")
		}
	}
	got = endpointOf(t, w, "canary")
	if got.ActiveRequests != 2 || got.TotalRequests != 7 || got.ActiveConnections != 2 {
		t.Errorf("while 2 requests are held: rq_active=%d rq_total=%d cx_active=%d, want 2, 7, 2", got.ActiveRequests, got.TotalRequests, got.ActiveConnections)
	}
	code, text := get(t, w.client, w.admin+"/clusters?format=text")
	for _, line := range []string{"canary::" + w.canary.Addr + "::rq_active::2\n", "canary::" + w.canary.Addr + "::health_flags::unknown\n", "stable::" + w.stable.Addr + "::rq_total::0\n"} {
		if code != 200 || !strings.Contains(text, line) {
			t.Errorf("/clusters?format=text = %d, want a line %q in:\n%s", code, line, text)
		}
	}
	close(w.release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got = endpointOf(t, w, "canary"); got.ActiveRequests != 0 || got.TotalRequests != 7 {
		t.Errorf("after the held requests: rq_active=%d rq_total=%d, want 0, 7", got.ActiveRequests, got.TotalRequests)
	}
}

func explain(t *testing.T, w *world, q url.Values) dataplane.Explanation {
	t.Helper()
	var e dataplane.Explanation
	w.getJSON(t, "/explain?"+q.Encode(), &e)
	return e
}

func TestExplain(t *testing.T) {
	w := startWorld(t)

	// The weighted route, with the header route rejected first.
	e := explain(t, w, url.Values{"authority": {"backend:8080"}, "path": {"/api"}, "header": {"x-canary:false"}})
	if e.Listener != "outbound_http" || e.VirtualHost != "outbound_http" || e.Domain != "backend:8080" || e.Route == nil || e.Route.Index != 1 || e.Route.Name != "default" || e.Result != "forward" {
		t.Errorf("explain backend:8080 /api = %+v, want outbound_http, domain backend:8080, route 1 (default), forward", e)
	}
	if len(e.Rejected) != 1 || e.Rejected[0].Name != "canary-header" || e.Rejected[0].Reason != `header x-canary: want exact "true", got "false"` {
		t.Errorf("rejected routes = %+v, want canary-header for its header", e.Rejected)
	}
	wantClusters := []dataplane.ExplainedCluster{
		{Name: "stable", Weight: 90, Share: 0.9, Known: true, Endpoints: []string{w.stable.Addr}, Next: w.stable.Addr},
		{Name: "canary", Weight: 10, Share: 0.1, Known: true, Endpoints: []string{w.canary.Addr}, Next: w.canary.Addr},
	}
	if diff := cmp.Diff(wantClusters, e.Clusters); diff != "" {
		t.Errorf("clusters (-want +got):\n%s", diff)
	}
	if e.RBAC == nil || !e.RBAC.Allowed || e.RBAC.Action != "DENY" || e.RBAC.Policy != "" {
		t.Errorf("rbac = %+v, want allowed by the DENY filter (no policy matched)", e.RBAC)
	}

	// The header route, and the explainer agrees with real traffic.
	e = explain(t, w, url.Values{"authority": {"backend"}, "path": {"/x"}, "header": {"X-Canary: true"}, "method": {"GET"}})
	if e.Route == nil || e.Route.Name != "canary-header" || len(e.Clusters) != 1 || e.Clusters[0].Name != "canary" {
		t.Errorf("explain with x-canary: true = %+v, want route canary-header to canary", e)
	}
	before := w.canary.Requests.Load()
	w.send(t, "/x", map[string]string{"x-canary": "true"})
	if w.canary.Requests.Load() != before+1 {
		t.Errorf("the request the explainer sends to canary did not reach canary")
	}

	// RBAC denial.
	e = explain(t, w, url.Values{"authority": {"backend"}, "path": {"/admin/x"}, "peer": {"spiffe://cluster.local/ns/default/sa/frontend"}})
	if e.Result != "rbac_denied" || e.RBAC == nil || e.RBAC.Allowed || e.RBAC.Policy != "default/no-admin[0]" || e.RBAC.Principal != "spiffe://cluster.local/ns/default/sa/frontend" {
		t.Errorf("explain /admin/x = %+v (rbac %+v), want rbac_denied by default/no-admin[0]", e, e.RBAC)
	}
	if code, _ := w.send(t, "/admin/x", nil); code != 403 {
		t.Errorf("request to /admin/x = %d, want 403 as explained", code)
	}

	// No virtual host: the closest domains and why.
	e = explain(t, w, url.Values{"authority": {"backnd:8080"}})
	if e.Result != "no_route" || e.VirtualHost != "" || e.Route != nil {
		t.Errorf("explain backnd:8080 = %+v, want no_route", e)
	}
	found := false
	for _, c := range e.CloseDomains {
		if c.Name == "backend:8080" && c.Reason == `host "backnd" differs from "backend"` {
			found = true
		}
	}
	if !found {
		t.Errorf("closest domains = %+v, want backend:8080 with the host difference", e.CloseDomains)
	}
	if code, _ := w.sendHost(t, "backnd:8080"); code != 404 {
		t.Errorf("request to backnd:8080 = %d, want 404 as explained", code)
	}

	// Bad input names the parameter.
	for _, tc := range []struct{ q, want string }{
		{"", "authority: required"},
		{"authority=backend&header=novalue", `header "novalue": want name:value`},
		{"authority=backend&listener=outbound_tcp", `listener "outbound_tcp": no such HTTP listener (HTTP listeners: outbound_http)`},
	} {
		code, body := get(t, w.client, w.admin+"/explain?"+tc.q)
		if code/100 != 4 || !strings.Contains(body, tc.want) {
			t.Errorf("/explain?%s = %d %q, want 4xx with %q", tc.q, code, body, tc.want)
		}
	}
}

func post(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Post(url, "", nil)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestLoggingAndDrain(t *testing.T) {
	w := startWorld(t)
	if code, body := get(t, w.client, w.admin+"/logging"); code != 200 || body != "level: info\n" {
		t.Errorf("GET /logging = %d %q, want level: info", code, body)
	}
	if code, body := post(t, w.client, w.admin+"/logging?level=debug"); code != 200 || body != "level: debug\n" || w.level.Level() != slog.LevelDebug {
		t.Errorf("POST /logging?level=debug = %d %q, level now %v; want debug", code, body, w.level.Level())
	}
	if code, body := post(t, w.client, w.admin+"/logging?level=loud"); code != 400 || !strings.Contains(body, `level "loud": want debug, info, warn or error`) || w.level.Level() != slog.LevelDebug {
		t.Errorf("POST /logging?level=loud = %d %q, want 400 naming the level and no change", code, body)
	}
	if code, _ := get(t, w.client, w.admin+"/drain"); code != http.StatusMethodNotAllowed || w.drained.Load() != 0 {
		t.Errorf("GET /drain = %d (drains %d), want 405 and no drain", code, w.drained.Load())
	}
	if code, body := post(t, w.client, w.admin+"/drain"); code != 202 || body != "draining\n" || w.drained.Load() != 1 {
		t.Errorf("POST /drain = %d %q (drains %d), want 202 draining and one drain", code, body, w.drained.Load())
	}
}

func TestConfigDumpFormats(t *testing.T) {
	w := startWorld(t)
	if code, body := get(t, w.client, w.admin+"/config_dump"); code != 200 || body != "{\"configs\": []}\n" {
		t.Errorf("/config_dump = %d %q, want the Envoy dump", code, body)
	}
	var snap config.Snapshot
	w.getJSON(t, "/config_dump?format=decoded", &snap)
	if snap.Version != "v1" || len(snap.Listeners) != 2 {
		t.Errorf("/config_dump?format=decoded = version %q with %d listeners, want v1 with 2", snap.Version, len(snap.Listeners))
	}
	if code, body := get(t, w.client, w.admin+"/config_dump?format=yaml"); code != 400 || !strings.Contains(body, `format "yaml"`) {
		t.Errorf("/config_dump?format=yaml = %d %q, want 400", code, body)
	}
}
