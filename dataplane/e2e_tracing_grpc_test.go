package dataplane_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/tinymesh/tinymesh/dataplane"
	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/proxytest"
	"github.com/tinymesh/tinymesh/dataplane/tracing"
	"github.com/tinymesh/tinymesh/dataplane/tracing/tracingtest"
)

// collectorCluster is the cluster of the in-test OTLP/gRPC collector, as
// the control plane sends it (xds/translate: plaintext HTTP/2).
const collectorCluster = "opentelemetry|collector:4317"

// grpcTracing is the tracing config an envoy_grpc grpc_service decodes to.
var grpcTracing = &config.Tracing{Protocol: config.TracingGRPC, Cluster: collectorCluster, Authority: "collector:4317", SamplingPercent: 100}

// startProxyWith starts a proxy with opts (logger and drain timeout filled
// in) serving snap; it is closed at cleanup, before tracers opts.Tracer.
func startProxyWith(t *testing.T, name string, opts dataplane.Options, snap *config.Snapshot) {
	t.Helper()
	opts.Logger, opts.DrainTimeout = proxytest.Logger(t, name), 5*time.Second
	opts.TracingDefaults.BatchTimeout = 20 * time.Millisecond
	p := dataplane.New(opts)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Close(ctx)
	})
	if err := p.Apply(snap); err != nil {
		t.Fatalf("proxy %s: Apply: %v", name, err)
	}
}

// TestTracingGRPCTwoHops: both sidecars export over OTLP/gRPC through a
// cluster (the HCM's grpc_service envoy_grpc) to a real gRPC TraceService;
// the request's two spans share the caller's trace, B's the child of A's.
func TestTracingGRPCTwoHops(t *testing.T) {
	col := tracingtest.NewGRPCCollector(t)
	app := proxytest.StartApp(t, "app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))

	addrB := proxytest.FreeAddr(t)
	inB := proxytest.HTTPListener("inbound", addrB, config.Inbound)
	inB.HTTP.Tracing = grpcTracing
	startProxyWith(t, "B", dataplane.Options{TracingDefaults: tracing.Options{ServiceName: "backend-v1"}}, &config.Snapshot{
		Version:   "b1",
		Listeners: []*config.Listener{inB},
		Routes:    map[string]*config.RouteConfig{"inbound": proxytest.Forward("inbound", []string{"*"}, 0, config.WeightedCluster{Name: proxytest.InboundCluster, Weight: 1})},
		Clusters: map[string]*config.Cluster{
			proxytest.InboundCluster: proxytest.Cluster(proxytest.InboundCluster, config.ProtocolHTTP1, app.Addr),
			collectorCluster:         proxytest.Cluster(collectorCluster, config.ProtocolH2C, col.Endpoint()),
		},
	})
	addrA := proxytest.FreeAddr(t)
	snapA := proxytest.OutboundSnapshot("a1", addrA, config.WeightedCluster{Name: proxytest.OutboundCluster, Weight: 1})
	snapA.Listeners[0].HTTP.Tracing = grpcTracing
	snapA.Clusters[proxytest.OutboundCluster] = proxytest.Cluster(proxytest.OutboundCluster, config.ProtocolH2C, addrB)
	snapA.Clusters[collectorCluster] = proxytest.Cluster(collectorCluster, config.ProtocolH2C, col.Endpoint())
	startProxyWith(t, "A", dataplane.Options{TracingDefaults: tracing.Options{ServiceName: "web"}}, snapA)

	const callerTrace, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req, _ := http.NewRequest("GET", "http://"+addrA+"/items", nil)
	req.Host = "backend:8080"
	req.Header.Set("Traceparent", "00-"+callerTrace+"-"+callerSpan+"-01")
	resp, err := proxytest.Client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	spans := col.WaitSpans(t, 2)
	if len(spans) != 2 {
		t.Fatalf("got %d spans, want 2: %+v", len(spans), spans)
	}
	a, b := twoHopSpans(t, spans)
	if a.TraceID != callerTrace || b.TraceID != callerTrace || a.ParentSpanID != callerSpan || b.ParentSpanID != a.SpanID {
		t.Errorf("A %s/%s parent %s, B %s/%s parent %s: want both in trace %s, A the child of %s, B of A",
			a.TraceID, a.SpanID, a.ParentSpanID, b.TraceID, b.SpanID, b.ParentSpanID, callerTrace, callerSpan)
	}
}

// TestTracingTCPTwoHops: a TCP connection through two sidecars over mTLS
// gives one root span on each (TCP carries no trace context): A's CLIENT
// span from its default tracer (--tracing-endpoint, OTLP/gRPC to a target),
// B's SERVER span from its listener's tracing config (OTLP/gRPC through a
// cluster), each with the peer, upstream, bytes and SPIFFE IDs; a connection
// whose upstream cannot be reached has an error span with UF,URX.
func TestTracingTCPTwoHops(t *testing.T) {
	col := tracingtest.NewGRPCCollector(t)
	pki := proxytest.NewPKI(t, "mesh root")
	certA, certB := pki.IssueSVID(t, idFrontend), pki.IssueSVID(t, idBackend)
	echo := proxytest.StartTCPEcho(t)

	addrB := proxytest.FreeAddr(t)
	startProxyWith(t, "B", dataplane.Options{TracingDefaults: tracing.Options{ServiceName: "db"}}, &config.Snapshot{
		Version: "b1",
		Listeners: []*config.Listener{{Name: "inbound", Address: addrB, Direction: config.Inbound,
			TCP: &config.TCPProxy{Cluster: "inbound|9000||", Tracing: grpcTracing},
			TLS: &config.DownstreamTLS{Certificates: []config.CertificateKeyPair{certB}, MinVersion: config.TLS13, MaxVersion: config.TLS13,
				TrustedCA: pki.CAPEM, RequireClientCertificate: true}}},
		Clusters: map[string]*config.Cluster{
			"inbound|9000||": proxytest.Cluster("inbound|9000||", config.ProtocolTCP, echo.Addr),
			collectorCluster: proxytest.Cluster(collectorCluster, config.ProtocolH2C, col.Endpoint()),
		},
	})

	trA, err := tracing.New(tracing.Options{Protocol: config.TracingGRPC, Endpoint: col.Endpoint(), SamplingPercent: 100,
		ServiceName: "web", BatchTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { trA.Close(context.Background()) }) // after A's Close (cleanups run last-in first-out)
	const outCluster, deadCluster = "outbound|9000||db.default.svc.cluster.local", "outbound|9001||gone.default.svc.cluster.local"
	addrA, addrDead := proxytest.FreeAddr(t), proxytest.FreeAddr(t)
	up := proxytest.Cluster(outCluster, config.ProtocolTCP, addrB)
	up.TLS = &config.UpstreamTLS{MinVersion: config.TLS13, MaxVersion: config.TLS13, TrustedCA: pki.CAPEM, ClientCertificate: &certA,
		MatchSANs: []config.SANMatcher{{Type: config.SANURI, Exact: idBackend}}}
	startProxyWith(t, "A", dataplane.Options{Tracer: trA}, &config.Snapshot{
		Version: "a1",
		Listeners: []*config.Listener{
			{Name: "outbound_tcp|9000||db", Address: addrA, Direction: config.Outbound, TCP: &config.TCPProxy{Cluster: outCluster}},
			{Name: "outbound_tcp|9001||gone", Address: addrDead, Direction: config.Outbound, TCP: &config.TCPProxy{Cluster: deadCluster}},
		},
		Clusters: map[string]*config.Cluster{
			outCluster:  up,
			deadCluster: proxytest.Cluster(deadCluster, config.ProtocolTCP, proxytest.FreeAddr(t)), // nothing listens
		},
	})

	c, err := net.Dial("tcp", addrA)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("hello"))
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	c.Close()
	if string(got) != "echo:hello" || err != nil {
		t.Fatalf("through two sidecars: %q, %v; want echo:hello", got, err)
	}
	client := c.LocalAddr().(*net.TCPAddr)
	spans := col.WaitSpans(t, 2)
	dead, err := net.Dial("tcp", addrDead)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(dead) // A closes it after its connect attempts fail
	dead.Close()
	spans = col.WaitSpans(t, 3)
	if len(spans) != 3 {
		t.Fatalf("got %d spans, want 3: %+v", len(spans), spans)
	}
	byName := map[string]tracingtest.Span{}
	for _, s := range spans {
		byName[s.Name] = s
	}
	a, b, f := byName[outCluster], byName["inbound|9000||"], byName[deadCluster]
	if a.Kind != tracepb.Span_SPAN_KIND_CLIENT || a.Resource["service.name"] != "web" || a.ParentSpanID != "" || a.Error {
		t.Errorf("A's span %+v: want an OK root CLIENT span of web named %s", a, outCluster)
	}
	if b.Kind != tracepb.Span_SPAN_KIND_SERVER || b.Resource["service.name"] != "db" || b.ParentSpanID != "" || b.Error {
		t.Errorf("B's span %+v: want an OK root SERVER span of db named inbound|9000||", b)
	}
	if a.TraceID == b.TraceID {
		t.Errorf("A and B share trace %s: TCP has no propagation, want two traces", a.TraceID)
	}
	for k, want := range map[string]string{"network.transport": "tcp", "network.peer.address": "127.0.0.1", "network.peer.port": itoa(client.Port),
		"upstream_cluster": outCluster, "upstream_address": addrB, "upstream.spiffe_id": idBackend,
		"bytes_received": "5", "bytes_sent": "10", "response_flags": "-"} {
		if a.Attrs[k] != want {
			t.Errorf("A's span %s = %q, want %q (all: %v)", k, a.Attrs[k], want, a.Attrs)
		}
	}
	for k, want := range map[string]string{"network.transport": "tcp", "network.peer.address": "127.0.0.1",
		"upstream_cluster": "inbound|9000||", "upstream_address": echo.Addr, "peer.spiffe_id": idFrontend,
		"bytes_received": "5", "bytes_sent": "10", "response_flags": "-"} {
		if b.Attrs[k] != want {
			t.Errorf("B's span %s = %q, want %q (all: %v)", k, b.Attrs[k], want, b.Attrs)
		}
	}
	if f.Kind != tracepb.Span_SPAN_KIND_CLIENT || !f.Error || f.StatusMessage != "UF,URX" || f.Attrs["response_flags"] != "UF,URX" || f.Attrs["upstream_connect_attempts"] != "3" {
		t.Errorf("failed connection's span %+v: want an error CLIENT span with UF,URX after 3 attempts", f)
	}
}

func itoa(n int) string { return (&net.TCPAddr{Port: n}).String()[1:] }
