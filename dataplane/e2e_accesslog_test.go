package dataplane_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tinymesh/tinymesh/dataplane"
	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/proxytest"
)

// TestAccessLogLines sends a success, an upstream connect failure and an
// RBAC denial through an mTLS inbound sidecar with a JSON access log and
// checks each line field by field.
func TestAccessLogLines(t *testing.T) {
	p := newRBACPKI(t)
	app := proxytest.StartApp(t, "app", nil)
	addr := proxytest.FreeAddr(t)
	path := filepath.Join(t.TempDir(), "access.log")

	snap := rbacInbound(p, addr, app.Addr, config.ProtocolHTTP1)
	fields := []string{"method", "authority", "path", "protocol", "code", "grpc", "flags", "rx", "tx", "upstream", "cluster", "route", "peer", "request_id", "remote", "line"}
	ops := []string{"%REQ(:METHOD)%", "%REQ(:AUTHORITY)%", "%REQ(:PATH)%", "%PROTOCOL%", "%RESPONSE_CODE%", "%GRPC_STATUS%", "%RESPONSE_FLAGS%",
		"%BYTES_RECEIVED%", "%BYTES_SENT%", "%UPSTREAM_HOST%", "%UPSTREAM_CLUSTER%", "%ROUTE_NAME%", "%DOWNSTREAM_PEER_URI_SAN%", "%REQ(X-REQUEST-ID)%", "%DOWNSTREAM_REMOTE_ADDRESS%",
		"%REQ(:METHOD)% %RESPONSE_CODE% \"q\""}
	al := config.AccessLog{Path: path, SamplePerMillion: 1_000_000}
	for i := range fields {
		al.JSON = append(al.JSON, config.AccessLogField{Key: fields[i], Format: ops[i]})
	}
	snap.Listeners[0].HTTP.AccessLogs = []config.AccessLog{al}
	// "dead:8080" goes to a cluster whose endpoint refuses connections; the
	// open virtual host lets any authenticated caller in.
	dead := proxytest.FreeAddr(t)
	snap.Clusters["dead"] = proxytest.Cluster("dead", config.ProtocolHTTP1, dead)
	snap.Routes["inbound"].VirtualHosts[0].Domains = append(snap.Routes["inbound"].VirtualHosts[0].Domains, "dead:8080")
	open := snap.Routes["inbound"].VirtualHosts[0]
	deadVH := *open
	deadVH.Name, deadVH.Domains = "dead", []string{"dead:8080"}
	deadVH.Routes = []*config.Route{{Name: "to-dead", Match: config.RouteMatch{Path: "/"},
		Action: &config.RouteAction{Clusters: []config.WeightedCluster{{Name: "dead", Weight: 1}}}}}
	open.Domains = open.Domains[:1]
	snap.Routes["inbound"].VirtualHosts = append([]*config.VirtualHost{&deadVH}, snap.Routes["inbound"].VirtualHosts...)

	px := dataplane.New(dataplane.Options{Logger: proxytest.Logger(t, "B"), DrainTimeout: 5 * time.Second})
	closed := false
	closeProxy := func() {
		if closed {
			return
		}
		closed = true
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		px.Close(ctx)
	}
	t.Cleanup(closeProxy)
	if err := px.Apply(snap); err != nil {
		t.Fatal(err)
	}

	send := func(cert tls.Certificate, host, rid string, want int) {
		t.Helper()
		c := proxytest.TLSClient(t, p.Pool, backendFQDN, []string{"h2"}, &cert)
		req, _ := http.NewRequest("POST", "https://"+addr+"/api/items?id=1", strings.NewReader("hello"))
		req.Host = host
		req.Header.Set("X-Request-Id", rid)
		resp, _ := do(t, c, req)
		if resp.StatusCode != want {
			t.Fatalf("%s as %s: %d, want %d", host, rid, resp.StatusCode, want)
		}
	}
	send(p.frontend, "backend:8080", "ok-1", 200)
	send(p.intruder, "dead:8080", "uf-1", 503)
	send(p.intruder, "backend:8080", "denied-1", 403)
	closeProxy() // flushes the log

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("access log has %d lines, want 3:\n%s", len(lines), b)
	}
	var got []map[string]any
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if r, _ := m["remote"].(string); !strings.HasPrefix(r, "127.0.0.1:") {
			t.Errorf("remote %q, want 127.0.0.1:port", r)
		}
		delete(m, "remote")
		got = append(got, m)
	}
	want := []map[string]any{
		{"method": "POST", "authority": "backend:8080", "path": "/api/items?id=1", "protocol": "HTTP/2", "code": 200.0, "grpc": nil,
			"flags": "-", "rx": 5.0, "tx": 3.0, "upstream": app.Addr, "cluster": proxytest.InboundCluster, "route": "default",
			"peer": frontendID, "request_id": "ok-1", "line": `POST 200 "q"`},
		{"method": "POST", "authority": "dead:8080", "path": "/api/items?id=1", "protocol": "HTTP/2", "code": 503.0, "grpc": nil,
			"flags": "UF,URX", "rx": 0.0, "tx": float64(len("upstream_connect_failure\n")), "upstream": dead, "cluster": "dead", "route": "to-dead",
			"peer": intruderID, "request_id": "uf-1", "line": `POST 503 "q"`},
		{"method": "POST", "authority": "backend:8080", "path": "/api/items?id=1", "protocol": "HTTP/2", "code": 403.0, "grpc": nil,
			"flags": "RBAC", "rx": 0.0, "tx": float64(len("rbac_denied\n")), "upstream": nil, "cluster": nil, "route": "default",
			"peer": intruderID, "request_id": "denied-1", "line": `POST 403 "q"`},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("access log lines (-want +got):\n%s", d)
	}
}
