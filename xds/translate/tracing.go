package translate

import (
	"net/url"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// openTelemetryTracer is Envoy's name for the OpenTelemetry tracer extension.
const openTelemetryTracer = "envoy.tracers.opentelemetry"

// tracingExportTimeout bounds one OTLP export request (http_uri.timeout,
// which Envoy requires).
const tracingExportTimeout = 5 * time.Second

// tracing returns the HCM tracing of the node's HTTP listeners from the
// Telemetry that applies to it, or nil: the OpenTelemetry tracer exporting
// over OTLP/HTTP to the Telemetry's endpoint, with random_sampling its
// samplingPercent. http_uri.cluster, which Envoy requires, names the
// endpoint's host:port; meshproxy dials the URI itself and does not use it.
func (t *translator) tracing() *hcmv3.HttpConnectionManager_Tracing {
	tr := t.m.Tracing(t.node.Namespace, t.node.Labels, t.rootNamespace)
	if tr == nil {
		return nil
	}
	cluster := tr.Endpoint
	if u, err := url.Parse(tr.Endpoint); err == nil { // checked by validation
		cluster = u.Host
	}
	ot := &tracev3.OpenTelemetryConfig{HttpService: &corev3.HttpService{HttpUri: &corev3.HttpUri{
		Uri:              tr.Endpoint,
		HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: cluster},
		Timeout:          durationpb.New(tracingExportTimeout),
	}}}
	sampling := 100.0
	if p := tr.SamplingPercent; p != nil {
		sampling = *p
	}
	return &hcmv3.HttpConnectionManager_Tracing{
		RandomSampling: &typev3.Percent{Value: sampling},
		Provider: &tracev3.Tracing_Http{Name: openTelemetryTracer,
			ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(ot)}},
	}
}
