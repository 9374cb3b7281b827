package config

import "time"

// Tracing is an HCM's tracing config (provider envoy.tracers.opentelemetry):
// where spans go and how many new traces are sampled. It is comparable, so
// that listeners with the same settings share one exporter.
type Tracing struct {
	// Endpoint is the OTLP/HTTP traces URL (http://host:port/v1/traces).
	Endpoint string
	// Timeout bounds one export request; 0 is the exporter's default.
	Timeout time.Duration
	// SamplingPercent (0..100) samples new traces (random_sampling).
	SamplingPercent float64
	// ServiceName overrides the spans' service.name (the workload name).
	ServiceName string
}
