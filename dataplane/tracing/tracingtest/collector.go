// Package tracingtest is an in-test OpenTelemetry collector: a real OTLP/HTTP
// (NewCollector) or OTLP/gRPC (NewGRPCCollector, a grpc-go server
// implementing collector/trace/v1 TraceService) trace receiver on 127.0.0.1
// that decodes the exported protobuf batches (go.opentelemetry.io/proto/otlp
// collector types) and lets tests wait for spans.
//
// Concurrency: the collector's handlers run on net/http's or grpc-go's
// goroutines; Spans and WaitSpans may be called from any goroutine. The
// server is closed at test cleanup.
package tracingtest

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Span is one received span, flattened for assertions.
type Span struct {
	TraceID, SpanID, ParentSpanID string // lower-case hex; ParentSpanID "" for a root
	Name                          string
	Kind                          tracepb.Span_SpanKind
	Attrs                         map[string]string // values formatted with fmt %v
	Resource                      map[string]string
	Error                         bool // status code ERROR
	StatusMessage                 string
}

// Collector receives OTLP/HTTP or OTLP/gRPC trace exports.
type Collector struct {
	srv  *httptest.Server // OTLP/HTTP; nil for a gRPC collector
	addr string           // host:port of either server

	mu      sync.Mutex
	spans   []Span        // guarded by mu
	changed chan struct{} // closed and replaced on every export; guarded by mu
}

// NewCollector starts a collector; it is closed at cleanup.
func NewCollector(t testing.TB) *Collector {
	c := &Collector{changed: make(chan struct{})}
	c.srv = httptest.NewServer(http.HandlerFunc(c.export))
	c.addr = strings.TrimPrefix(c.srv.URL, "http://")
	t.Cleanup(c.srv.Close)
	return c
}

// NewGRPCCollector starts an OTLP/gRPC collector (plaintext HTTP/2) on
// 127.0.0.1; it is stopped at cleanup.
func NewGRPCCollector(t testing.TB) *Collector {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &Collector{changed: make(chan struct{}), addr: ln.Addr().String()}
	srv := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(srv, traceService{c: c})
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return c
}

// traceService is the collector's OTLP/gRPC TraceService.
type traceService struct {
	collectorpb.UnimplementedTraceServiceServer
	c *Collector
}

func (s traceService) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	s.c.record(req)
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

// Endpoint is the collector's host:port, for tracing.Options.Endpoint.
func (c *Collector) Endpoint() string { return c.addr }

func (c *Collector) export(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		http.Error(w, "want POST /v1/traces", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req collectorpb.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		http.Error(w, "decode: "+err.Error(), http.StatusBadRequest)
		return
	}
	c.record(&req)
	out, _ := proto.Marshal(&collectorpb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

// record flattens the spans of one export and wakes WaitSpans.
func (c *Collector) record(req *collectorpb.ExportTraceServiceRequest) {
	var got []Span
	for _, rs := range req.GetResourceSpans() {
		res := attrs(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				got = append(got, Span{
					TraceID:       hex.EncodeToString(s.GetTraceId()),
					SpanID:        hex.EncodeToString(s.GetSpanId()),
					ParentSpanID:  hex.EncodeToString(s.GetParentSpanId()),
					Name:          s.GetName(),
					Kind:          s.GetKind(),
					Attrs:         attrs(s.GetAttributes()),
					Resource:      res,
					Error:         s.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR,
					StatusMessage: s.GetStatus().GetMessage(),
				})
			}
		}
	}
	c.mu.Lock()
	c.spans = append(c.spans, got...)
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		v := kv.GetValue()
		switch x := v.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.GetKey()] = x.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = fmt.Sprint(x.IntValue)
		case *commonpb.AnyValue_BoolValue:
			m[kv.GetKey()] = fmt.Sprint(x.BoolValue)
		case *commonpb.AnyValue_DoubleValue:
			m[kv.GetKey()] = fmt.Sprint(x.DoubleValue)
		default:
			m[kv.GetKey()] = v.String()
		}
	}
	return m
}

// Spans returns the spans received so far.
func (c *Collector) Spans() []Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Span(nil), c.spans...)
}

// WaitSpans waits up to 10 s until at least n spans have arrived and returns
// all received; it fails the test with what did arrive otherwise.
func (c *Collector) WaitSpans(t testing.TB, n int) []Span {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		c.mu.Lock()
		spans, ch := append([]Span(nil), c.spans...), c.changed
		c.mu.Unlock()
		if len(spans) >= n {
			return spans
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("collector: got %d spans, want %d: %+v", len(spans), n, spans)
		}
	}
}
