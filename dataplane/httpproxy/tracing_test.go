package httpproxy

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/route"
	"github.com/tinymesh/tinymesh/dataplane/tracing"
)

// nopWriter is a ResponseWriter that allocates nothing, so that allocation
// counts are the handler's own.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(int)             {}

// WriteString keeps io.WriteString from converting the body to a []byte.
func (w *nopWriter) WriteString(s string) (int, error) { return len(s), nil }

// TestTracingOffAllocs: with tracing off (no Tracer, no Observer) a request
// that carries trace context costs no allocation in the handler: the whole
// request path up to a direct response allocates nothing, so neither does
// the tracing hook, and the request's headers are left alone.
func TestTracingOffAllocs(t *testing.T) {
	rc := &config.RouteConfig{Name: "rc", VirtualHosts: []*config.VirtualHost{{Name: "vh", Domains: []string{"*"},
		Routes: []*config.Route{{Name: "r", Match: config.RouteMatch{Path: "/"},
			DirectResponse: &config.DirectResponse{Status: 200, Body: "ok"}}}}}}
	tbl, err := route.Compile(rc)
	if err != nil {
		t.Fatal(err)
	}
	st := &State{HCM: &config.HTTPConnectionManager{RouteConfigName: "rc"}, Direction: config.Inbound, Routes: tbl}
	h := NewHandler(slog.New(slog.DiscardHandler), st)
	r := httptest.NewRequest("GET", "http://backend/items", nil)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	r.Header = http.Header{"Traceparent": {tp}, "B3": {"4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"}}
	w := &nopWriter{h: http.Header{}}
	n := testing.AllocsPerRun(200, func() { h.ServeHTTP(w, r) })
	if n != 0 {
		t.Errorf("ServeHTTP with tracing off: %v allocs per request, want 0", n)
	}
	if got := r.Header.Get("Traceparent"); got != tp || len(r.Header) != 2 {
		t.Errorf("inbound headers changed: %v", r.Header)
	}
}

// BenchmarkServeTracing is the handler's cost per request, direct response,
// with tracing off and on (every request sampled, spans exported to a sink
// that discards them): the price of tracing on the request path.
func BenchmarkServeTracing(b *testing.B) {
	rc := &config.RouteConfig{Name: "rc", VirtualHosts: []*config.VirtualHost{{Name: "vh", Domains: []string{"*"},
		Routes: []*config.Route{{Name: "r", Match: config.RouteMatch{Path: "/"},
			DirectResponse: &config.DirectResponse{Status: 200, Body: "ok"}}}}}}
	tbl, err := route.Compile(rc)
	if err != nil {
		b.Fatal(err)
	}
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer sink.Close()
	tr, err := tracing.New(tracing.Options{Endpoint: sink.Listener.Addr().String(), SamplingPercent: 100, ServiceName: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close(context.Background())
	for _, tc := range []struct {
		name   string
		tracer *tracing.Tracer
	}{{"off", nil}, {"on", tr}} {
		b.Run(tc.name, func(b *testing.B) {
			st := &State{HCM: &config.HTTPConnectionManager{RouteConfigName: "rc"}, Direction: config.Inbound, Routes: tbl, Tracer: tc.tracer}
			h := NewHandler(slog.New(slog.DiscardHandler), st)
			r := httptest.NewRequest("GET", "http://backend/items", nil)
			r.Header = http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
			w := &nopWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(w, r)
			}
		})
	}
}
