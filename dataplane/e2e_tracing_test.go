package dataplane_test

import (
	"context"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/tinymesh/tinymesh/dataplane"
	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/proxytest"
	"github.com/tinymesh/tinymesh/dataplane/tracing"
	"github.com/tinymesh/tinymesh/dataplane/tracing/tracingtest"
)

// startTracedProxy is proxytest.StartProxy with a Tracer exporting to col as
// workload service; the tracer is closed after the proxy.
func startTracedProxy(t *testing.T, name, service string, col *tracingtest.Collector, snap *config.Snapshot) *tracing.Tracer {
	t.Helper()
	tr, err := tracing.New(tracing.Options{Endpoint: col.Endpoint(), SamplingPercent: 100, ServiceName: service, Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	p := dataplane.New(dataplane.Options{Logger: proxytest.Logger(t, name), DrainTimeout: 5 * time.Second, Tracer: tr})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Close(ctx)
		if err := tr.Close(ctx); err != nil {
			t.Errorf("tracer %s: Close: %v", name, err)
		}
	})
	if err := p.Apply(snap); err != nil {
		t.Fatalf("proxy %s: Apply: %v", name, err)
	}
	return tr
}

// TestTracingTwoHops: a request through two traced sidecars (A outbound,
// then B inbound) yields one trace: A's CLIENT span is the child of the
// caller's context (or the root), B's SERVER span is A's child, and the app
// receives a traceparent whose parent is B's span. Spans go to an in-test
// OTLP/HTTP collector.
func TestTracingTwoHops(t *testing.T) {
	col := tracingtest.NewCollector(t)
	var mu sync.Mutex
	var appGot http.Header
	app := proxytest.StartApp(t, "app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		appGot = r.Header.Clone()
		mu.Unlock()
		io.WriteString(w, "ok")
	}))

	addrB := proxytest.FreeAddr(t)
	snapB := &config.Snapshot{
		Version:   "b1",
		Listeners: []*config.Listener{proxytest.HTTPListener("inbound", addrB, config.Inbound)},
		Routes:    map[string]*config.RouteConfig{"inbound": proxytest.Forward("inbound", []string{"*"}, 0, config.WeightedCluster{Name: proxytest.InboundCluster, Weight: 1})},
		Clusters:  map[string]*config.Cluster{proxytest.InboundCluster: proxytest.Cluster(proxytest.InboundCluster, config.ProtocolHTTP1, app.Addr)},
	}
	trB := startTracedProxy(t, "B", "backend-v1", col, snapB)
	addrA := proxytest.FreeAddr(t)
	snapA := proxytest.OutboundSnapshot("a1", addrA, config.WeightedCluster{Name: proxytest.OutboundCluster, Weight: 1})
	snapA.Clusters[proxytest.OutboundCluster] = proxytest.Cluster(proxytest.OutboundCluster, config.ProtocolH2C, addrB)
	trA := startTracedProxy(t, "A", "web", col, snapA)
	client := proxytest.Client(t)

	const callerTrace, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	for _, tc := range []struct {
		name       string
		hdr        http.Header
		wantTrace  string // "" : a new trace
		wantParent string // A's span's parent
	}{
		{name: "w3c from the caller", hdr: http.Header{"Traceparent": {"00-" + callerTrace + "-" + callerSpan + "-01"}, "Tracestate": {"vendor=x"}},
			wantTrace: callerTrace, wantParent: callerSpan},
		{name: "b3 from the caller", hdr: http.Header{"X-B3-Traceid": {callerTrace}, "X-B3-Spanid": {callerSpan}, "X-B3-Sampled": {"1"}},
			wantTrace: callerTrace, wantParent: callerSpan},
		{name: "no context: A starts the trace", hdr: http.Header{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(col.Spans())
			req, err := http.NewRequest("GET", "http://"+addrA+"/items?id=1", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = "backend:8080"
			req.Header = tc.hdr.Clone()
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200", resp.StatusCode)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for _, tr := range []*tracing.Tracer{trA, trB} {
				if err := tr.Flush(ctx); err != nil {
					t.Fatalf("Flush: %v", err)
				}
			}
			spans := col.WaitSpans(t, before+2)[before:]
			if len(spans) != 2 {
				t.Fatalf("got %d spans, want 2: %+v", len(spans), spans)
			}
			a, b := twoHopSpans(t, spans)
			if tc.wantTrace != "" && a.TraceID != tc.wantTrace {
				t.Errorf("A's trace id %s, want the caller's %s", a.TraceID, tc.wantTrace)
			}
			if b.TraceID != a.TraceID {
				t.Errorf("B's trace id %s, want A's %s", b.TraceID, a.TraceID)
			}
			if a.ParentSpanID != tc.wantParent {
				t.Errorf("A's parent %q, want %q", a.ParentSpanID, tc.wantParent)
			}
			if b.ParentSpanID != a.SpanID {
				t.Errorf("B's parent %q, want A's span %q", b.ParentSpanID, a.SpanID)
			}
			mu.Lock()
			got := appGot
			mu.Unlock()
			if want := "00-" + a.TraceID + "-" + b.SpanID + "-01"; got.Get("Traceparent") != want {
				t.Errorf("app got traceparent %q, want %q (B's span as parent)", got.Get("Traceparent"), want)
			}
			if ts := tc.hdr.Get("Tracestate"); got.Get("Tracestate") != ts {
				t.Errorf("app got tracestate %q, want %q forwarded unchanged", got.Get("Tracestate"), ts)
			}
			if _, ok := tc.hdr["X-B3-Traceid"]; ok && got.Get("X-B3-Spanid") != b.SpanID {
				t.Errorf("app got X-B3-SpanId %q, want B's span %q", got.Get("X-B3-Spanid"), b.SpanID)
			}
			for _, s := range []tracingtest.Span{a, b} {
				for k, want := range map[string]string{"http.request.method": "GET", "url.path": "/items?id=1", "server.address": "backend:8080", "http.response.status_code": "200", "response_flags": "-"} {
					if s.Attrs[k] != want {
						t.Errorf("%s span attribute %s = %q, want %q (all: %v)", s.Resource["service.name"], k, s.Attrs[k], want, s.Attrs)
					}
				}
				if s.Error {
					t.Errorf("%s span has error status %q", s.Resource["service.name"], s.StatusMessage)
				}
			}
			if a.Attrs["upstream_cluster"] != proxytest.OutboundCluster || b.Attrs["upstream_cluster"] != proxytest.InboundCluster {
				t.Errorf("upstream_cluster A %q, B %q; want %q, %q", a.Attrs["upstream_cluster"], b.Attrs["upstream_cluster"], proxytest.OutboundCluster, proxytest.InboundCluster)
			}
		})
	}
}

// TestTracingFromConfig: an HCM's tracing config (as xds/resource decodes
// envoy.tracers.opentelemetry) turns tracing on for its listener with its
// endpoint and sampling; a push that changes the sampling swaps the tracer,
// and one without tracing turns it off.
func TestTracingFromConfig(t *testing.T) {
	col := tracingtest.NewCollector(t)
	var mu sync.Mutex
	var appGot http.Header
	app := proxytest.StartApp(t, "app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		appGot = r.Header.Clone()
		mu.Unlock()
	}))
	addr := proxytest.FreeAddr(t)
	snap := func(version string, tr *config.Tracing) *config.Snapshot {
		l := proxytest.HTTPListener("inbound", addr, config.Inbound)
		l.HTTP.Tracing = tr
		return &config.Snapshot{
			Version:   version,
			Listeners: []*config.Listener{l},
			Routes:    map[string]*config.RouteConfig{"inbound": proxytest.Forward("inbound", []string{"*"}, 0, config.WeightedCluster{Name: proxytest.InboundCluster, Weight: 1})},
			Clusters:  map[string]*config.Cluster{proxytest.InboundCluster: proxytest.Cluster(proxytest.InboundCluster, config.ProtocolHTTP1, app.Addr)},
		}
	}
	p := dataplane.New(dataplane.Options{Logger: proxytest.Logger(t, "B"), DrainTimeout: 5 * time.Second,
		TracingDefaults: tracing.Options{ServiceName: "backend-v1", Namespace: "default", BatchTimeout: 20 * time.Millisecond}})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Close(ctx)
	})
	endpoint := "http://" + col.Endpoint() + "/v1/traces"
	if err := p.Apply(snap("1", &config.Tracing{Endpoint: endpoint, SamplingPercent: 100})); err != nil {
		t.Fatal(err)
	}
	client := proxytest.Client(t)
	send := func(traceparent string) http.Header {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		if traceparent != "" {
			req.Header.Set("Traceparent", traceparent)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
		mu.Lock()
		defer mu.Unlock()
		return appGot
	}

	got := send("")
	spans := col.WaitSpans(t, 1)
	if s := spans[0]; s.Kind != tracepb.Span_SPAN_KIND_SERVER || s.Resource["service.name"] != "backend-v1" || s.ParentSpanID != "" {
		t.Errorf("span %+v: want a root SERVER span of backend-v1", s)
	}
	if want := "00-" + spans[0].TraceID + "-" + spans[0].SpanID + "-01"; got.Get("Traceparent") != want {
		t.Errorf("app got traceparent %q, want %q", got.Get("Traceparent"), want)
	}

	// Sampling 0: a new trace is propagated unsampled and not exported; a
	// caller's sampled trace still is. Spans are exported in order, so the
	// next span to arrive must be the sampled one.
	if err := p.Apply(snap("2", &config.Tracing{Endpoint: endpoint, SamplingPercent: 0})); err != nil {
		t.Fatal(err)
	}
	got = send("")
	if tp := got.Get("Traceparent"); len(tp) != 55 || tp[53:] != "00" {
		t.Errorf("app got traceparent %q, want an unsampled one (flags 00)", tp)
	}
	const caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	send(caller)
	spans = col.WaitSpans(t, 2)
	if len(spans) != 2 || spans[1].ParentSpanID != "00f067aa0ba902b7" {
		t.Errorf("spans after sampling 0: %+v; want only the caller-sampled one", spans[1:])
	}

	// No tracing config: nothing is added.
	if err := p.Apply(snap("3", nil)); err != nil {
		t.Fatal(err)
	}
	if got = send(""); got.Get("Traceparent") != "" {
		t.Errorf("tracing off: app got traceparent %q, want none", got.Get("Traceparent"))
	}
	if got = send(caller); got.Get("Traceparent") != caller {
		t.Errorf("tracing off: app got traceparent %q, want the caller's %q untouched", got.Get("Traceparent"), caller)
	}
}

// twoHopSpans returns the CLIENT span of sidecar A (workload web) and the
// SERVER span of sidecar B (backend-v1) among spans, failing the test unless
// both are there.
func twoHopSpans(t *testing.T, spans []tracingtest.Span) (a, b tracingtest.Span) {
	t.Helper()
	for _, s := range spans {
		switch s.Resource["service.name"] {
		case "web":
			a = s
		case "backend-v1":
			b = s
		}
	}
	if a.Kind != tracepb.Span_SPAN_KIND_CLIENT || b.Kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Fatalf("spans %+v: want a CLIENT span from web and a SERVER span from backend-v1", spans)
	}
	return a, b
}
