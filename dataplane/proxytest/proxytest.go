// Package proxytest starts data-plane proxies from hand-written snapshots together
// with real backends (HTTP/1.1 and h2c servers, a gRPC TestService, a WebSocket echo
// and a TCP echo with half-close) on 127.0.0.1, for tests of the traffic path.
//
// Concurrency: every helper registers its cleanup with t.Cleanup, which stops what
// it started and waits for its goroutines, so callers can use goleak.
package proxytest

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/tinymesh/tinymesh/dataplane"
	"github.com/tinymesh/tinymesh/dataplane/config"
)

// FreeAddr returns a 127.0.0.1 address whose port was free a moment ago. Proxies
// need concrete addresses in their snapshots before they bind.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("FreeAddr: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// StartProxy returns a Proxy with snap applied; it is closed at cleanup.
func StartProxy(t testing.TB, name string, snap *config.Snapshot) *dataplane.Proxy {
	t.Helper()
	p := dataplane.New(dataplane.Options{Logger: Logger(t, name), DrainTimeout: 5 * time.Second})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Close(ctx)
	})
	if err := p.Apply(snap); err != nil {
		t.Fatalf("proxy %s: Apply: %v", name, err)
	}
	return p
}

// Cluster returns a round-robin cluster over addrs.
func Cluster(name string, proto config.Protocol, addrs ...string) *config.Cluster {
	c := &config.Cluster{Name: name, Protocol: proto, ConnectTimeout: time.Second}
	for _, a := range addrs {
		c.Endpoints = append(c.Endpoints, config.Endpoint{Address: a, Weight: 1})
	}
	return c
}

// HTTPListener returns an HTTP listener using the route config of the same name.
func HTTPListener(name, addr string, dir config.Direction) *config.Listener {
	return &config.Listener{Name: name, Address: addr, Direction: dir, HTTP: &config.HTTPConnectionManager{
		StatPrefix:             name,
		RouteConfigName:        name,
		UpgradeTypes:           []string{"websocket"},
		GenerateRequestID:      dir == config.Inbound,
		UseRemoteAddress:       dir == config.Inbound,
		MaxRequestHeadersBytes: 8 << 10,
		DrainTimeout:           5 * time.Second,
	}}
}

// Forward is a route config with one virtual host for domains whose single route
// sends everything to clusters by weight.
func Forward(name string, domains []string, timeout time.Duration, clusters ...config.WeightedCluster) *config.RouteConfig {
	return &config.RouteConfig{Name: name, VirtualHosts: []*config.VirtualHost{{
		Name: name, Domains: domains,
		Routes: []*config.Route{{Name: "default", Match: config.RouteMatch{Path: "/"},
			Action: &config.RouteAction{Clusters: clusters, Timeout: timeout}}},
	}}}
}

// ServiceDomains are the outbound virtual-host domains of service "backend" on port
// 8080 in namespace "default", as docs/xds-conventions.md has them.
var ServiceDomains = []string{
	"backend", "backend:8080", "backend.default", "backend.default:8080",
	"backend.default.svc", "backend.default.svc:8080",
	"backend.default.svc.cluster.local", "backend.default.svc.cluster.local:8080",
}

// Outbound/inbound cluster names of service "backend" port 8080.
const (
	OutboundCluster = "outbound|8080||backend.default.svc.cluster.local"
	InboundCluster  = "inbound|8080||"
)

// Mesh is two proxies as the mesh runs them: the client app sends to A's
// outbound listener, A forwards h2c to B's inbound listener, B to the app.
type Mesh struct {
	A, B         *dataplane.Proxy
	OutboundAddr string // A's outbound HTTP listener
	InboundAddr  string // B's inbound listener
	SnapA, SnapB *config.Snapshot
}

// TwoHop starts a Mesh in front of an app at appAddr speaking appProto.
func TwoHop(t testing.TB, appAddr string, appProto config.Protocol) *Mesh {
	t.Helper()
	m := &Mesh{OutboundAddr: FreeAddr(t)}
	m.B, m.SnapB, m.InboundAddr = Inbound(t, "B", appAddr, appProto)
	m.SnapA = OutboundSnapshot("a1", m.OutboundAddr, config.WeightedCluster{Name: OutboundCluster, Weight: 1})
	m.SnapA.Clusters[OutboundCluster] = Cluster(OutboundCluster, config.ProtocolH2C, m.InboundAddr)
	m.A = StartProxy(t, "A", m.SnapA)
	return m
}

// Inbound starts a sidecar whose inbound HTTP listener forwards everything to the
// app at appAddr, and returns it, its snapshot and the listener's address.
func Inbound(t testing.TB, name, appAddr string, appProto config.Protocol) (*dataplane.Proxy, *config.Snapshot, string) {
	t.Helper()
	addr := FreeAddr(t)
	snap := &config.Snapshot{
		Version:   name + "-1",
		Listeners: []*config.Listener{HTTPListener("inbound", addr, config.Inbound)},
		Routes:    map[string]*config.RouteConfig{"inbound": Forward("inbound", []string{"*"}, 0, config.WeightedCluster{Name: InboundCluster, Weight: 1})},
		Clusters:  map[string]*config.Cluster{InboundCluster: Cluster(InboundCluster, appProto, appAddr)},
	}
	return StartProxy(t, name, snap), snap, addr
}

// OutboundSnapshot is an outbound HTTP listener at addr routing the backend
// service's domains to clusters; the caller adds the clusters.
func OutboundSnapshot(version, addr string, clusters ...config.WeightedCluster) *config.Snapshot {
	return &config.Snapshot{
		Version:   version,
		Listeners: []*config.Listener{HTTPListener("outbound_http", addr, config.Outbound)},
		Routes:    map[string]*config.RouteConfig{"outbound_http": Forward("outbound_http", ServiceDomains, 0, clusters...)},
		Clusters:  map[string]*config.Cluster{},
	}
}

// Client returns an HTTP/1.1 client whose idle connections are closed at cleanup.
func Client(t testing.TB) *http.Client {
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// H2CClient returns a prior-knowledge HTTP/2 client.
func H2CClient(t testing.TB) *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: p, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}
