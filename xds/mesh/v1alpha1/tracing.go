package v1alpha1

// Tracing is the tracing of every HTTP request and TCP connection through a
// sidecar (inbound and outbound listeners): one span per request or
// connection per sidecar, exported over OTLP/HTTP or OTLP/gRPC
// (docs/observability.md, "Tracing").
type Tracing struct {
	// Disabled turns tracing off where this Telemetry applies (to override a
	// less specific one); the other fields must then be empty.
	Disabled bool `json:"disabled,omitempty"`
	// Endpoint is the OpenTelemetry collector: for protocol http its
	// OTLP/HTTP traces URL, e.g.
	// http://otel-collector.observability:4318/v1/traces; for protocol grpc
	// its host:port, e.g. otel-collector.observability:4317. Required unless
	// disabled.
	Endpoint string `json:"endpoint,omitempty"`
	// Protocol is the OTLP transport: http (the default) or grpc.
	Protocol string `json:"protocol,omitempty"`
	// SamplingPercent is the share of new traces sampled, 0..100; nil means
	// 100. Requests whose caller already decided keep the caller's decision.
	SamplingPercent *float64 `json:"samplingPercent,omitempty"`
}
