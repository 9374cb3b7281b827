package resource_test

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/xds/resource"
)

// otelTracing is an HCM tracing config with the OpenTelemetry provider
// exporting to uri, changed by f.
func otelTracing(t *testing.T, uri string, f func(tr *hcmv3.HttpConnectionManager_Tracing, ot *tracev3.OpenTelemetryConfig)) *hcmv3.HttpConnectionManager_Tracing {
	ot := &tracev3.OpenTelemetryConfig{HttpService: &corev3.HttpService{HttpUri: &corev3.HttpUri{
		Uri: uri, HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "otel-collector"}, Timeout: durationpb.New(2 * time.Second)}}}
	tr := &hcmv3.HttpConnectionManager_Tracing{RandomSampling: &typev3.Percent{Value: 12.5}}
	if f != nil {
		f(tr, ot)
	}
	tr.Provider = &tracev3.Tracing_Http{Name: "envoy.tracers.opentelemetry",
		ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: anyOf(t, ot)}}
	return tr
}

func TestDecodeTracing(t *testing.T) {
	const uri = "http://otel-collector.observability:4318/v1/traces"
	for _, tc := range []struct {
		name string
		in   *hcmv3.HttpConnectionManager_Tracing
		want *config.Tracing
	}{
		{name: "none"},
		{name: "opentelemetry over http", in: otelTracing(t, uri, nil),
			want: &config.Tracing{Endpoint: uri, Timeout: 2 * time.Second, SamplingPercent: 12.5}},
		{name: "defaults to 100 percent, service name", in: otelTracing(t, "https://collector:4318/v1/traces", func(tr *hcmv3.HttpConnectionManager_Tracing, ot *tracev3.OpenTelemetryConfig) {
			tr.RandomSampling = nil
			tr.OverallSampling = &typev3.Percent{Value: 100}
			ot.ServiceName = "web"
		}), want: &config.Tracing{Endpoint: "https://collector:4318/v1/traces", Timeout: 2 * time.Second, SamplingPercent: 100, ServiceName: "web"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := resource.DecodeListener(withHCM(func(h *hcmv3.HttpConnectionManager) { h.Tracing = tc.in }))
			if err != nil {
				t.Fatalf("DecodeListener: %v", err)
			}
			if d := cmp.Diff(tc.want, l.Config.HTTP.Tracing); d != "" {
				t.Errorf("tracing (-want +got):\n%s", d)
			}
		})
	}
}

func TestDecodeTracingErrors(t *testing.T) {
	const uri = "http://collector:4318/v1/traces"
	const pre = `Listener "outbound_http": filter_chains[0].filters[0].typed_config.tracing.`
	const prov = pre + "provider.typed_config."
	for _, tc := range []struct {
		name string
		in   *hcmv3.HttpConnectionManager_Tracing
		want string
	}{
		{name: "grpc service", in: otelTracing(t, uri, func(_ *hcmv3.HttpConnectionManager_Tracing, ot *tracev3.OpenTelemetryConfig) {
			ot.HttpService = nil
			ot.GrpcService = &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "otel"}}}
		}), want: prov + "grpc_service: not supported: meshproxy exports OTLP over HTTP; use http_service"},
		{name: "no service", in: otelTracing(t, uri, func(_ *hcmv3.HttpConnectionManager_Tracing, ot *tracev3.OpenTelemetryConfig) { ot.HttpService = nil }),
			want: prov + "http_service: must be set"},
		{name: "bad uri", in: otelTracing(t, "collector:4318", nil),
			want: prov + `http_service.http_uri.uri: want an http:// or https:// URL, got "collector:4318"`},
		{name: "headers", in: otelTracing(t, uri, func(_ *hcmv3.HttpConnectionManager_Tracing, ot *tracev3.OpenTelemetryConfig) {
			ot.HttpService.RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-token", Value: "s"}}}
		}), want: prov + "http_service.request_headers_to_add: not supported"},
		{name: "sampler", in: otelTracing(t, uri, func(_ *hcmv3.HttpConnectionManager_Tracing, ot *tracev3.OpenTelemetryConfig) {
			ot.Sampler = &corev3.TypedExtensionConfig{Name: "always_on"}
		}), want: prov + "sampler: not supported; use the HCM's random_sampling"},
		{name: "sampling over 100", in: otelTracing(t, uri, func(tr *hcmv3.HttpConnectionManager_Tracing, _ *tracev3.OpenTelemetryConfig) {
			tr.RandomSampling = &typev3.Percent{Value: 250}
		}), want: pre + "random_sampling.value: must be in 0..100, got 250"},
		{name: "client sampling", in: otelTracing(t, uri, func(tr *hcmv3.HttpConnectionManager_Tracing, _ *tracev3.OpenTelemetryConfig) {
			tr.ClientSampling = &typev3.Percent{Value: 10}
		}), want: pre + "client_sampling: only 100 is supported"},
		{name: "custom tags", in: otelTracing(t, uri, func(tr *hcmv3.HttpConnectionManager_Tracing, _ *tracev3.OpenTelemetryConfig) {
			tr.CustomTags = []*tracingv3.CustomTag{{Tag: "x"}}
		}), want: pre + "custom_tags: not supported"},
		{name: "max path tag length", in: otelTracing(t, uri, func(tr *hcmv3.HttpConnectionManager_Tracing, _ *tracev3.OpenTelemetryConfig) {
			tr.MaxPathTagLength = wrapperspb.UInt32(64)
		}), want: pre + "max_path_tag_length: not supported (url.path is recorded whole)"},
		{name: "no provider", in: &hcmv3.HttpConnectionManager_Tracing{}, want: pre + "provider: must be set (meshproxy has no bootstrap tracer)"},
		{name: "other provider", in: &hcmv3.HttpConnectionManager_Tracing{Provider: &tracev3.Tracing_Http{Name: "envoy.tracers.zipkin",
			ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: anyOf(t, &tracev3.ZipkinConfig{CollectorCluster: "zipkin"})}}},
			want: pre + `provider: only envoy.tracers.opentelemetry (type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig) is supported, got "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkDecodeError(t, "DecodeListener", resource.DecodeListener, withHCM(func(h *hcmv3.HttpConnectionManager) { h.Tracing = tc.in }), tc.want)
		})
	}
}
