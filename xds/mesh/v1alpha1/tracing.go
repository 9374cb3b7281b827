package v1alpha1

// Tracing is the tracing of every HTTP request through a sidecar (inbound and
// outbound HTTP listeners): one span per request per sidecar, exported over
// OTLP/HTTP (docs/observability.md, "Tracing").
type Tracing struct {
	// Disabled turns tracing off where this Telemetry applies (to override a
	// less specific one); the other fields must then be empty.
	Disabled bool `json:"disabled,omitempty"`
	// Endpoint is the OpenTelemetry collector's OTLP/HTTP traces URL, e.g.
	// http://otel-collector.observability:4318/v1/traces; required unless
	// disabled.
	Endpoint string `json:"endpoint,omitempty"`
	// SamplingPercent is the share of new traces sampled, 0..100; nil means
	// 100. Requests whose caller already decided keep the caller's decision.
	SamplingPercent *float64 `json:"samplingPercent,omitempty"`
}
