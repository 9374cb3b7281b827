package config

import "time"

// TracingProtocol is how spans are exported: OTLP over HTTP or over gRPC.
type TracingProtocol uint8

const (
	// TracingHTTP is OTLP/HTTP with protobuf bodies (http_service).
	TracingHTTP TracingProtocol = iota
	// TracingGRPC is OTLP/gRPC, the collector's TraceService (grpc_service).
	TracingGRPC
)

// String names the protocol as OTEL_EXPORTER_OTLP_PROTOCOL does.
func (p TracingProtocol) String() string {
	if p == TracingGRPC {
		return "grpc"
	}
	return "http/protobuf"
}

// Tracing is an HCM's tracing config (provider envoy.tracers.opentelemetry),
// or a TCP listener's (tcp_proxy has no tracing field; see TCPProxy.Tracing):
// where spans go and how many new traces are sampled. It is comparable, so
// that listeners with the same settings share one exporter.
type Tracing struct {
	// Protocol is the export protocol; the zero value is OTLP/HTTP.
	Protocol TracingProtocol
	// Endpoint is, for OTLP/HTTP, the traces URL
	// (http://host:port/v1/traces); for OTLP/gRPC without Cluster, the gRPC
	// target (google_grpc target_uri: host:port or dns:///host:port).
	Endpoint string
	// TLS (OTLP/gRPC to Endpoint only) dials the target over TLS verified
	// with the system roots (google_grpc ssl_credentials); otherwise the
	// channel is plaintext.
	TLS bool
	// Cluster (OTLP/gRPC only; envoy_grpc cluster_name) is the cluster whose
	// endpoints receive the export, dialed with the cluster's own transport
	// (TLS when it has one). Authority is the :authority of the export
	// requests (envoy_grpc authority; default the cluster name).
	Cluster   string
	Authority string
	// Timeout bounds one export request; 0 is the exporter's default.
	Timeout time.Duration
	// SamplingPercent (0..100) samples new traces (random_sampling).
	SamplingPercent float64
	// ServiceName overrides the spans' service.name (the workload name).
	ServiceName string
}
