package tracing

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/stream"
)

// DefaultSamplingPercent is Envoy's default for the HCM's tracing
// random_sampling: every new trace is sampled.
const DefaultSamplingPercent = 100

// Options configure a Tracer.
type Options struct {
	// Protocol is the export protocol: OTLP/HTTP (the zero value) or
	// OTLP/gRPC.
	Protocol config.TracingProtocol
	// Endpoint is, for OTLP/HTTP, the collector: host:port (plaintext, path
	// /v1/traces) or a URL, http://host:port/path or https://...; for
	// OTLP/gRPC, the collector's gRPC target (host:port, dns:///host:port),
	// plaintext unless TLS. Required unless Cluster is set.
	Endpoint string
	// TLS (OTLP/gRPC to Endpoint) verifies the collector with the system
	// roots; otherwise the channel is plaintext.
	TLS bool
	// Cluster (OTLP/gRPC only) sends the export to an endpoint of this
	// cluster, as Envoy's envoy_grpc does, through DialCluster; Authority
	// is the :authority of the export requests (default: the cluster name).
	Cluster   string
	Authority string
	// DialCluster connects to an endpoint of the named cluster with the
	// cluster's transport (the proxy picks it as for traffic and adds the
	// cluster's TLS). Required with Cluster; called on the exporter's
	// goroutine, whenever its channel (re)connects.
	DialCluster func(ctx context.Context, cluster string) (net.Conn, error)
	// SamplingPercent (0 to 100) is the share of new traces sampled: requests
	// that arrive without a sampling decision, and TCP connections. Requests
	// whose caller decided keep the caller's decision (parent-based sampling).
	SamplingPercent float64
	// ServiceName is the service.name resource attribute: the workload
	// name. Namespace is service.namespace; NodeID service.instance.id.
	ServiceName string
	Namespace   string
	NodeID      string
	// BatchTimeout is the longest a finished span waits before it is
	// exported (the batch processor's schedule delay); 0 is the SDK's 5 s.
	BatchTimeout time.Duration
	// Timeout bounds one export request; 0 is the exporter's 10 s.
	Timeout time.Duration
}

// Tracer starts the spans of requests and TCP connections and exports them
// in batches over OTLP/HTTP or OTLP/gRPC. It is safe for concurrent use. A
// nil *Tracer is tracing off.
type Tracer struct {
	// Set in New, read-only after.
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	closeExp func() error // releases what the exporter does not own (a gRPC channel)
}

// New returns a Tracer exporting to o.Endpoint or o.Cluster. It does not
// connect: the exporter dials when the first batch is sent. Close flushes
// and stops it.
func New(o Options) (*Tracer, error) {
	if !(o.SamplingPercent >= 0 && o.SamplingPercent <= 100) {
		return nil, fmt.Errorf("tracing: sampling percent %v: want 0 to 100", o.SamplingPercent)
	}
	exp, closeExp, err := newExporter(o) // export.go
	if err != nil {
		return nil, err
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", o.ServiceName)}
	if o.Namespace != "" {
		attrs = append(attrs, attribute.String("service.namespace", o.Namespace))
	}
	if o.NodeID != "" {
		attrs = append(attrs, attribute.String("service.instance.id", o.NodeID))
	}
	var bopts []sdktrace.BatchSpanProcessorOption
	if o.BatchTimeout > 0 {
		bopts = append(bopts, sdktrace.WithBatchTimeout(o.BatchTimeout))
	}
	ratio := sdktrace.TraceIDRatioBased(o.SamplingPercent / 100)
	tp := sdktrace.NewTracerProvider(
		// Schemaless and without the SDK's default detectors: only what we
		// set, no host or process probing at start.
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
		sdktrace.WithSampler(sampler{parent: sdktrace.ParentBased(ratio), root: ratio}),
		sdktrace.WithBatcher(exp, bopts...),
	)
	return &Tracer{provider: tp, tracer: tp.Tracer("github.com/tinymesh/tinymesh/dataplane/tracing"), closeExp: closeExp}, nil
}

// Flush exports every finished span now; tests use it instead of waiting
// for the batch timeout.
func (t *Tracer) Flush(ctx context.Context) error { return t.provider.ForceFlush(ctx) }

// Close exports the spans still queued, until ctx is done, and stops the
// exporter. Spans ended afterwards are dropped.
func (t *Tracer) Close(ctx context.Context) error {
	err := t.provider.Shutdown(ctx)
	if cerr := t.closeExp(); err == nil {
		err = cerr
	}
	return err
}

// deferredKey marks a request context whose remote parent left sampling to
// this proxy (B3 without a sampling state).
type deferredKey struct{}

// sampler is parent-based with a ratio for roots, except that a remote
// parent whose caller deferred the decision is sampled by the ratio too:
// W3C's flags cannot say "deferred", so the SDK would read it as not sampled.
type sampler struct{ parent, root sdktrace.Sampler }

func (s sampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if p.ParentContext.Value(deferredKey{}) != nil {
		return s.root.ShouldSample(p)
	}
	return s.parent.ShouldSample(p)
}

func (s sampler) Description() string { return "MeshSampler{" + s.parent.Description() + "}" }

// Span is the span of one request through one listener. Its methods are
// called on the request's goroutine. The methods of a nil *Span do nothing, so
// that callers need no check when tracing is off.
type Span struct {
	span    trace.Span
	inbound bool
	tcp     bool // a TCP connection's span (tcp.go)
	tid     [16]byte
	sid     [8]byte
	sampled bool
}

// Start begins the span of a request with headers h on an inbound (kind
// SERVER) or outbound (kind CLIENT) listener, as a child of the trace context
// h carries (Extract) or as the root of a new trace. h is not modified. A nil
// Tracer returns a nil Span.
func (t *Tracer) Start(ctx context.Context, h http.Header, method string, inbound bool) *Span {
	if t == nil {
		return nil
	}
	if p, ok := Extract(h); ok {
		cfg := trace.SpanContextConfig{TraceID: p.TraceID, SpanID: p.SpanID, Remote: true}
		if p.Sampling == Sampled {
			cfg.TraceFlags = trace.FlagsSampled
		}
		if p.TraceState != "" {
			// An invalid tracestate is dropped from the span, not from the
			// request: the outbound headers carry it on unchanged.
			cfg.TraceState, _ = trace.ParseTraceState(p.TraceState)
		}
		ctx = trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(cfg))
		if p.Sampling == Deferred {
			ctx = context.WithValue(ctx, deferredKey{}, true)
		}
	}
	kind := trace.SpanKindClient
	if inbound {
		kind = trace.SpanKindServer
	}
	_, sp := t.tracer.Start(ctx, method, trace.WithSpanKind(kind))
	sc := sp.SpanContext()
	return &Span{span: sp, inbound: inbound, tid: sc.TraceID(), sid: sc.SpanID(), sampled: sc.IsSampled()}
}

// Inject writes this span's context into the outbound request headers hdr
// (traceparent, and B3 when the request used B3), making it the parent of
// the next hop's span.
func (s *Span) Inject(hdr http.Header) {
	if s == nil {
		return
	}
	inject(hdr, s.tid, s.sid, s.sampled)
}

// TraceID returns the trace id as 32 lower-case hex digits, or "" for a nil
// Span.
func (s *Span) TraceID() string {
	if s == nil {
		return ""
	}
	var b [32]byte
	hex.Encode(b[:], s.tid[:])
	return string(b[:])
}

// End records what info says about the finished request and ends the span.
// info may be nil (nothing recorded beyond the method). The span's status is
// an error for 5xx responses, gRPC server errors, and any response flag (the
// proxy, not the upstream, ended the request).
func (s *Span) End(info *stream.Info) {
	if s == nil {
		return
	}
	if info != nil && s.span.IsRecording() {
		if s.tcp {
			s.recordTCP(info) // tcp.go
		} else {
			s.record(info)
		}
	}
	s.span.End()
}

func (s *Span) record(info *stream.Info) {
	attrs := make([]attribute.KeyValue, 0, 12)
	str := func(k, v string) {
		if v != "" {
			attrs = append(attrs, attribute.String(k, v))
		}
	}
	str("http.request.method", info.Method)
	str("url.path", info.Path)
	str("server.address", info.Authority)
	str("network.protocol.name", protocolName(info.Protocol))
	str("route_name", info.RouteName)
	str("upstream_cluster", info.Cluster)
	str("upstream_address", info.UpstreamHost)
	str("peer.spiffe_id", info.PeerID)
	str("request_id", info.RequestID)
	if info.ResponseCode > 0 {
		attrs = append(attrs, attribute.Int("http.response.status_code", info.ResponseCode))
	}
	if info.GRPCStatus >= 0 {
		attrs = append(attrs, attribute.Int("rpc.grpc.status_code", info.GRPCStatus))
	}
	attrs = append(attrs, attribute.String("response_flags", info.Flags.String()))
	s.span.SetAttributes(attrs...)
	switch {
	case info.Flags != 0:
		s.span.SetStatus(codes.Error, info.Flags.String())
	case info.ResponseCode >= 500:
		s.span.SetStatus(codes.Error, http.StatusText(info.ResponseCode))
	case info.GRPCStatus > 0 && grpcError(info.GRPCStatus, s.inbound):
		s.span.SetStatus(codes.Error, "grpc-status "+fmt.Sprint(info.GRPCStatus))
	}
}

func protocolName(p string) string {
	if strings.HasPrefix(p, "HTTP") {
		return "http"
	}
	return ""
}

// grpcError follows OpenTelemetry's gRPC conventions: a client span fails on
// any non-OK status; a server span only on the codes that mean the server
// failed (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
// DATA_LOSS), not on the caller's mistakes.
func grpcError(code int, server bool) bool {
	if !server {
		return true
	}
	switch code {
	case 2, 4, 12, 13, 14, 15:
		return true
	}
	return false
}
