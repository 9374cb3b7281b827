package tracing

import (
	"context"
	"net"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tinymesh/tinymesh/dataplane/stream"
)

// TCP connections: a TCP stream carries no headers, so there is no trace
// context to read or write. Each sidecar therefore starts a root span per
// proxied connection (sampled at the configured rate), and the spans of one
// connection on its two sidecars are separate traces; the attributes
// (addresses, cluster, peer identity) are what ties them together. Envoy does
// not trace tcp_proxy at all; we do because a connection that failed to
// connect, was denied, or moved an unexpected number of bytes is worth
// seeing beside the requests of the same workloads.

// StartTCP begins the span of one TCP connection accepted by an inbound
// (kind SERVER) or outbound (kind CLIENT) listener, named name (the cluster
// it is proxied to). It is always the root of a new trace. A nil Tracer
// returns a nil Span; End(info) finishes it.
func (t *Tracer) StartTCP(name string, inbound bool) *Span {
	if t == nil {
		return nil
	}
	kind := trace.SpanKindClient
	if inbound {
		kind = trace.SpanKindServer
	}
	_, sp := t.tracer.Start(context.Background(), name, trace.WithSpanKind(kind), trace.WithNewRoot())
	sc := sp.SpanContext()
	return &Span{span: sp, inbound: inbound, tcp: true, tid: sc.TraceID(), sid: sc.SpanID(), sampled: sc.IsSampled()}
}

// SetUpstreamPeer records the verified SPIFFE ID of the upstream (the
// server's certificate on an outbound mTLS connection); "" records nothing.
func (s *Span) SetUpstreamPeer(id string) {
	if s == nil || id == "" || !s.span.IsRecording() {
		return
	}
	s.span.SetAttributes(attribute.String("upstream.spiffe_id", id))
}

// recordTCP sets a TCP connection's attributes from its finished stream:
// the downstream peer, the cluster and endpoint, the bytes each way, the
// caller's SPIFFE ID (inbound mTLS) and the response flags; any flag (no
// healthy upstream, connect failure, RBAC denial, ...) makes the status an
// error with the flags as message.
func (s *Span) recordTCP(info *stream.Info) {
	attrs := make([]attribute.KeyValue, 0, 11)
	str := func(k, v string) {
		if v != "" {
			attrs = append(attrs, attribute.String(k, v))
		}
	}
	attrs = append(attrs, attribute.String("network.transport", "tcp"))
	if host, port, err := net.SplitHostPort(info.DownstreamRemote); err == nil {
		attrs = append(attrs, attribute.String("network.peer.address", host))
		if n, err := strconv.Atoi(port); err == nil {
			attrs = append(attrs, attribute.Int("network.peer.port", n))
		}
	}
	str("upstream_cluster", info.Cluster)
	str("upstream_address", info.UpstreamHost)
	str("peer.spiffe_id", info.PeerID)
	attrs = append(attrs,
		attribute.Int64("bytes_received", info.BytesReceived),
		attribute.Int64("bytes_sent", info.BytesSent),
		attribute.String("response_flags", info.Flags.String()))
	if info.Attempts > 1 {
		attrs = append(attrs, attribute.Int("upstream_connect_attempts", info.Attempts))
	}
	s.span.SetAttributes(attrs...)
	if info.Flags != 0 {
		s.span.SetStatus(codes.Error, info.Flags.String())
	}
}
