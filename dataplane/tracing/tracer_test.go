package tracing_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"go.uber.org/goleak"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/stream"
	"github.com/tinymesh/tinymesh/dataplane/tracing"
	"github.com/tinymesh/tinymesh/dataplane/tracing/tracingtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	tidHex = "4bf92f3577b34da6a3ce929d0e0e4736"
	sidHex = "00f067aa0ba902b7"
)

func newTracer(t *testing.T, col *tracingtest.Collector, percent float64) *tracing.Tracer {
	t.Helper()
	tr, err := tracing.New(tracing.Options{Endpoint: col.Endpoint(), SamplingPercent: percent,
		ServiceName: "backend-v1", Namespace: "shop", NodeID: "sidecar~backend-v1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tr.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return tr
}

func flush(t *testing.T, tr *tracing.Tracer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tr.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

// TestSpanExported: a request without context starts a sampled root span
// whose attributes and error status come from the finished stream, exported
// over OTLP/HTTP with the workload as service.name.
func TestSpanExported(t *testing.T) {
	col := tracingtest.NewCollector(t)
	tr := newTracer(t, col, 100)
	in := http.Header{"Accept": {"*/*"}}
	sp := tr.Start(context.Background(), in, "GET", false)
	out := in.Clone()
	sp.Inject(out)
	if _, ok := in["Traceparent"]; ok {
		t.Errorf("Start or Inject changed the inbound headers: %v", in)
	}
	p, ok := tracing.Extract(out)
	if !ok || p.Sampling != tracing.Sampled {
		t.Fatalf("outbound traceparent %q: parsed %+v, %v; want a sampled context", out.Get("Traceparent"), p, ok)
	}
	info := stream.Get()
	defer stream.Put(info)
	info.Method, info.Path, info.Authority, info.Protocol = "GET", "/items", "backend:8080", "HTTP/1.1"
	info.Cluster, info.UpstreamHost, info.RouteName = "outbound|8080||backend", "127.0.0.1:9", "default"
	info.ResponseCode, info.Flags = 503, stream.UpstreamConnectionFailure
	info.PeerID, info.RequestID = "spiffe://cluster.local/ns/shop/sa/web", "req-1"
	sp.End(info)
	flush(t, tr)

	spans := col.WaitSpans(t, 1)
	got := spans[0]
	if got.TraceID != sp.TraceID() || got.ParentSpanID != "" || got.Kind != tracepb.Span_SPAN_KIND_CLIENT || got.Name != "GET" {
		t.Errorf("span %+v: want a root CLIENT span GET in trace %s", got, sp.TraceID())
	}
	if want := out.Get("Traceparent")[36:52]; got.SpanID != want {
		t.Errorf("span id %s, want the one forwarded in traceparent, %s", got.SpanID, want)
	}
	wantAttrs := map[string]string{
		"http.request.method": "GET", "url.path": "/items", "server.address": "backend:8080",
		"network.protocol.name": "http", "route_name": "default",
		"upstream_cluster": "outbound|8080||backend", "upstream_address": "127.0.0.1:9",
		"peer.spiffe_id": "spiffe://cluster.local/ns/shop/sa/web", "request_id": "req-1",
		"http.response.status_code": "503", "response_flags": "UF",
	}
	if d := cmp.Diff(wantAttrs, got.Attrs); d != "" {
		t.Errorf("attributes (-want +got):\n%s", d)
	}
	if !got.Error || got.StatusMessage != "UF" {
		t.Errorf("status error=%v %q, want error UF", got.Error, got.StatusMessage)
	}
	wantRes := map[string]string{"service.name": "backend-v1", "service.namespace": "shop", "service.instance.id": "sidecar~backend-v1"}
	if d := cmp.Diff(wantRes, got.Resource); d != "" {
		t.Errorf("resource (-want +got):\n%s", d)
	}
}

// TestParentAndSampling: the caller's context is the parent and its decision
// wins over the rate; new traces and deferred B3 callers get the rate.
func TestParentAndSampling(t *testing.T) {
	col := tracingtest.NewCollector(t)
	tr := newTracer(t, col, 0) // sample no new trace
	for _, tc := range []struct {
		name        string
		in          http.Header
		wantExport  bool
		wantParent  string // "" : a new trace
		wantSampled bool
	}{
		{name: "new trace, rate 0", in: http.Header{}},
		{name: "w3c sampled parent", in: http.Header{"Traceparent": {"00-" + tidHex + "-" + sidHex + "-01"}}, wantExport: true, wantParent: sidHex, wantSampled: true},
		{name: "w3c unsampled parent", in: http.Header{"Traceparent": {"00-" + tidHex + "-" + sidHex + "-00"}}, wantParent: sidHex},
		{name: "b3 deferred, rate 0", in: http.Header{"B3": {tidHex + "-" + sidHex}}, wantParent: sidHex},
		{name: "b3 debug", in: http.Header{"X-B3-Traceid": {tidHex}, "X-B3-Spanid": {sidHex}, "X-B3-Flags": {"1"}}, wantExport: true, wantParent: sidHex, wantSampled: true},
		{name: "malformed traceparent starts over", in: http.Header{"Traceparent": {"00-zz"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(col.Spans())
			sp := tr.Start(context.Background(), tc.in, "POST", true)
			out := http.Header{}
			sp.Inject(out)
			p, ok := tracing.Extract(out)
			if !ok {
				t.Fatalf("outbound traceparent %q does not parse", out.Get("Traceparent"))
			}
			if got := p.Sampling == tracing.Sampled; got != tc.wantSampled {
				t.Errorf("forwarded sampled = %v, want %v (%q)", got, tc.wantSampled, out.Get("Traceparent"))
			}
			if tc.wantParent != "" && sp.TraceID() != tidHex {
				t.Errorf("trace id %s, want the caller's %s", sp.TraceID(), tidHex)
			}
			if tc.wantParent == "" && sp.TraceID() == tidHex {
				t.Errorf("trace id %s: want a new trace", sp.TraceID())
			}
			sp.End(nil)
			flush(t, tr)
			spans := col.Spans()[before:]
			if !tc.wantExport {
				if len(spans) != 0 {
					t.Errorf("exported %+v, want nothing (not sampled)", spans)
				}
				return
			}
			if len(spans) != 1 {
				t.Fatalf("exported %d spans, want 1: %+v", len(spans), spans)
			}
			if s := spans[0]; s.ParentSpanID != tc.wantParent || s.TraceID != tidHex || s.Kind != tracepb.Span_SPAN_KIND_SERVER {
				t.Errorf("span %+v: want a SERVER child of %s in trace %s", s, tc.wantParent, tidHex)
			}
		})
	}
}

func TestOptionsRejected(t *testing.T) {
	for _, o := range []tracing.Options{{}, {Endpoint: "127.0.0.1:4318", SamplingPercent: 101}, {Endpoint: "127.0.0.1:4318", SamplingPercent: -1}} {
		if tr, err := tracing.New(o); err == nil {
			tr.Close(context.Background())
			t.Errorf("New(%+v) succeeded, want an error", o)
		}
	}
}

// TestOffAllocs: tracing off is a nil Tracer; the request path's calls cost
// nothing.
func TestOffAllocs(t *testing.T) {
	var tr *tracing.Tracer
	h := http.Header{"Traceparent": {"00-" + tidHex + "-" + sidHex + "-01"}}
	info := &stream.Info{}
	n := testing.AllocsPerRun(100, func() {
		sp := tr.Start(context.Background(), h, "GET", true)
		sp.Inject(h)
		info.TraceID = sp.TraceID()
		sp.End(info)
	})
	if n != 0 {
		t.Errorf("tracing off: %v allocs per request, want 0", n)
	}
	if info.TraceID != "" || h.Get("Traceparent") != "00-"+tidHex+"-"+sidHex+"-01" {
		t.Errorf("tracing off changed something: trace id %q, headers %v", info.TraceID, h)
	}
}

func BenchmarkStartEnd(b *testing.B) {
	col := tracingtest.NewCollector(b)
	tr, err := tracing.New(tracing.Options{Endpoint: col.Endpoint(), SamplingPercent: 100})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close(context.Background())
	in := http.Header{"Traceparent": {"00-" + tidHex + "-" + sidHex + "-01"}}
	info := &stream.Info{Method: "GET", Path: "/", ResponseCode: 200, GRPCStatus: -1}
	b.ReportAllocs()
	for b.Loop() {
		sp := tr.Start(context.Background(), in, "GET", true)
		out := http.Header{}
		sp.Inject(out)
		sp.End(info)
	}
}

// TestGRPCExport: OTLP/gRPC to a target and to a cluster (through the
// cluster dialer, with the configured :authority) reaches a real gRPC
// TraceService with the same span a request made.
func TestGRPCExport(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts func(col *tracingtest.Collector, dialed *atomic.Int32) tracing.Options
	}{
		{name: "target", opts: func(col *tracingtest.Collector, _ *atomic.Int32) tracing.Options {
			return tracing.Options{Protocol: config.TracingGRPC, Endpoint: col.Endpoint()}
		}},
		{name: "dns target", opts: func(col *tracingtest.Collector, _ *atomic.Int32) tracing.Options {
			return tracing.Options{Protocol: config.TracingGRPC, Endpoint: "dns:///" + col.Endpoint()}
		}},
		{name: "cluster", opts: func(col *tracingtest.Collector, dialed *atomic.Int32) tracing.Options {
			return tracing.Options{Protocol: config.TracingGRPC, Cluster: "opentelemetry|collector:4317", Authority: "collector:4317",
				DialCluster: func(ctx context.Context, cluster string) (net.Conn, error) {
					if cluster != "opentelemetry|collector:4317" {
						return nil, fmt.Errorf("dialed cluster %q", cluster)
					}
					dialed.Add(1)
					var d net.Dialer
					return d.DialContext(ctx, "tcp", col.Endpoint())
				}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			col := tracingtest.NewGRPCCollector(t)
			var dialed atomic.Int32
			o := tc.opts(col, &dialed)
			o.SamplingPercent, o.ServiceName = 100, "web"
			tr, err := tracing.New(o)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := tr.Close(context.Background()); err != nil {
					t.Errorf("Close: %v", err)
				}
			}()
			sp := tr.Start(context.Background(), http.Header{"Traceparent": {"00-" + tidHex + "-" + sidHex + "-01"}}, "GET", true)
			sp.End(&stream.Info{Method: "GET", Path: "/", ResponseCode: 200, GRPCStatus: -1})
			flush(t, tr)
			got := col.WaitSpans(t, 1)[0]
			if got.TraceID != tidHex || got.ParentSpanID != sidHex || got.Kind != tracepb.Span_SPAN_KIND_SERVER || got.Resource["service.name"] != "web" {
				t.Errorf("span %+v: want a SERVER span of web, child of %s in trace %s", got, sidHex, tidHex)
			}
			if o.Cluster != "" && dialed.Load() == 0 {
				t.Errorf("exported without dialing the cluster")
			}
		})
	}
}

// TestTCPSpan: a TCP connection's span is a root span with the connection's
// attributes and, on a connect failure, an error status with the flags.
func TestTCPSpan(t *testing.T) {
	col := tracingtest.NewGRPCCollector(t)
	tr, err := tracing.New(tracing.Options{Protocol: config.TracingGRPC, Endpoint: col.Endpoint(), SamplingPercent: 100, ServiceName: "db"})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close(context.Background())

	ok := tr.StartTCP("inbound|5432||", true)
	ok.SetUpstreamPeer("") // records nothing
	ok.End(&stream.Info{DownstreamRemote: "127.0.0.9:40000", Cluster: "inbound|5432||", UpstreamHost: "127.0.0.1:5432",
		BytesReceived: 10, BytesSent: 20, PeerID: "spiffe://cluster.local/ns/default/sa/web", Attempts: 1, GRPCStatus: -1})
	failed := tr.StartTCP("outbound|5432||db.default.svc.cluster.local", false)
	failed.End(&stream.Info{DownstreamRemote: "[::1]:40001", Cluster: "outbound|5432||db.default.svc.cluster.local",
		UpstreamHost: "127.0.0.2:15006", Attempts: 3, Flags: stream.UpstreamConnectionFailure | stream.UpstreamRetryLimitExceeded, GRPCStatus: -1})
	flush(t, tr)
	spans := col.WaitSpans(t, 2)
	byName := map[string]tracingtest.Span{}
	for _, s := range spans {
		byName[s.Name] = s
	}
	in := byName["inbound|5432||"]
	if in.Kind != tracepb.Span_SPAN_KIND_SERVER || in.ParentSpanID != "" || in.TraceID != ok.TraceID() || in.Error {
		t.Errorf("inbound span %+v: want an OK root SERVER span in trace %s", in, ok.TraceID())
	}
	wantIn := map[string]string{"network.transport": "tcp", "network.peer.address": "127.0.0.9", "network.peer.port": "40000",
		"upstream_cluster": "inbound|5432||", "upstream_address": "127.0.0.1:5432", "bytes_received": "10", "bytes_sent": "20",
		"peer.spiffe_id": "spiffe://cluster.local/ns/default/sa/web", "response_flags": "-"}
	if d := cmp.Diff(wantIn, in.Attrs); d != "" {
		t.Errorf("inbound attributes (-want +got):\n%s", d)
	}
	out := byName["outbound|5432||db.default.svc.cluster.local"]
	if out.Kind != tracepb.Span_SPAN_KIND_CLIENT || out.ParentSpanID != "" || !out.Error || out.StatusMessage != "UF,URX" {
		t.Errorf("outbound span %+v: want a root CLIENT span with error UF,URX", out)
	}
	wantOut := map[string]string{"network.transport": "tcp", "network.peer.address": "::1", "network.peer.port": "40001",
		"upstream_cluster": "outbound|5432||db.default.svc.cluster.local", "upstream_address": "127.0.0.2:15006",
		"bytes_received": "0", "bytes_sent": "0", "response_flags": "UF,URX", "upstream_connect_attempts": "3"}
	if d := cmp.Diff(wantOut, out.Attrs); d != "" {
		t.Errorf("outbound attributes (-want +got):\n%s", d)
	}
}

// TestTCPOffAllocs: with tracing off a TCP connection's tracing calls cost
// nothing.
func TestTCPOffAllocs(t *testing.T) {
	var tr *tracing.Tracer
	info := &stream.Info{}
	n := testing.AllocsPerRun(100, func() {
		sp := tr.StartTCP("c", true)
		sp.SetUpstreamPeer("spiffe://x/y")
		info.TraceID = sp.TraceID()
		sp.End(info)
	})
	if n != 0 {
		t.Errorf("tracing off: %v allocs per connection, want 0", n)
	}
}
