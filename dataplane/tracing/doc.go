// Package tracing is the tracing stage of the data plane: it reads the trace
// context a request arrives with (W3C traceparent and tracestate; B3 single
// and multi-header accepted), starts one span per request per listener (kind
// SERVER on inbound listeners, CLIENT on outbound ones) as that context's
// child or as the root of a new trace, writes this proxy's span as the parent
// into the outbound request's traceparent, and ends the span with what the
// finished stream (stream.Info) says: status code, gRPC status, cluster,
// upstream endpoint, peer SPIFFE ID and response flags. TCP connections get
// one root span each (StartTCP, tcp.go: TCP carries no trace context). Spans
// are exported in batches with OpenTelemetry's SDK over OTLP/HTTP or OTLP/gRPC
// (export.go; gRPC to a target or, like Envoy's envoy_grpc, to a cluster of
// the proxy through Options.DialCluster).
//
// Sampling is parent-based: a caller's decision (W3C flag, B3 sampled or
// debug) is kept; new traces, and B3 callers that deferred, are sampled at
// Options.SamplingPercent. Unsampled requests still get a span id and a
// traceparent (flag 00), so the trace id reaches access logs and the app.
//
// Tracing off is a nil *Tracer: its Start returns a nil *Span and every Span
// method is a no-op, so the request path pays one nil check and nothing
// else. The OpenTelemetry SDK is only constructed by New.
//
// Concurrency: a Tracer is safe for concurrent use; its batch processor owns
// one goroutine, which Close stops after flushing. A Span belongs to one
// request's goroutine.
package tracing
