package resource_test

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/xds/resource"
	"github.com/tinymesh/tinymesh/xds/xdstest"
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

// grpcTracing is an HCM tracing config with the OpenTelemetry provider
// exporting over gRPC with gs.
func grpcTracing(t *testing.T, gs *corev3.GrpcService) *hcmv3.HttpConnectionManager_Tracing {
	return otelTracing(t, "", func(_ *hcmv3.HttpConnectionManager_Tracing, ot *tracev3.OpenTelemetryConfig) {
		ot.HttpService, ot.GrpcService = nil, gs
	})
}

func envoyGRPC(cluster string) *corev3.GrpcService {
	return &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster}}}
}

func googleGRPC(target string, creds *corev3.GrpcService_GoogleGrpc_ChannelCredentials) *corev3.GrpcService {
	return &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_GoogleGrpc_{GoogleGrpc: &corev3.GrpcService_GoogleGrpc{
		TargetUri: target, StatPrefix: "otel", ChannelCredentials: creds}}}
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
		{name: "opentelemetry over grpc to a cluster", in: grpcTracing(t, func() *corev3.GrpcService {
			g := envoyGRPC("opentelemetry|otel-collector.observability:4317")
			g.GetEnvoyGrpc().Authority = "otel-collector.observability:4317"
			g.Timeout = durationpb.New(3 * time.Second)
			return g
		}()), want: &config.Tracing{Protocol: config.TracingGRPC, Cluster: "opentelemetry|otel-collector.observability:4317",
			Authority: "otel-collector.observability:4317", Timeout: 3 * time.Second, SamplingPercent: 12.5}},
		{name: "opentelemetry over grpc to a target, plaintext", in: grpcTracing(t, googleGRPC("dns:///collector:4317", nil)),
			want: &config.Tracing{Protocol: config.TracingGRPC, Endpoint: "dns:///collector:4317", SamplingPercent: 12.5}},
		{name: "opentelemetry over grpc to a target, TLS", in: grpcTracing(t, googleGRPC("collector:4317", &corev3.GrpcService_GoogleGrpc_ChannelCredentials{
			CredentialSpecifier: &corev3.GrpcService_GoogleGrpc_ChannelCredentials_SslCredentials{SslCredentials: &corev3.GrpcService_GoogleGrpc_SslCredentials{}}})),
			want: &config.Tracing{Protocol: config.TracingGRPC, Endpoint: "collector:4317", TLS: true, SamplingPercent: 12.5}},
		{name: "grpc wins over http, as in Envoy", in: otelTracing(t, uri, func(_ *hcmv3.HttpConnectionManager_Tracing, ot *tracev3.OpenTelemetryConfig) {
			ot.GrpcService = envoyGRPC("otel")
		}), want: &config.Tracing{Protocol: config.TracingGRPC, Cluster: "otel", SamplingPercent: 12.5}},
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
		{name: "no service", in: otelTracing(t, uri, func(_ *hcmv3.HttpConnectionManager_Tracing, ot *tracev3.OpenTelemetryConfig) { ot.HttpService = nil }),
			want: prov[:len(prov)-1] + ": one of grpc_service and http_service must be set"},
		{name: "grpc no target", in: grpcTracing(t, &corev3.GrpcService{}),
			want: prov + "grpc_service: one of envoy_grpc and google_grpc must be set"},
		{name: "grpc empty cluster", in: grpcTracing(t, envoyGRPC("")),
			want: prov + "grpc_service.envoy_grpc.cluster_name: must not be empty"},
		{name: "grpc cluster retry policy", in: grpcTracing(t, func() *corev3.GrpcService {
			g := envoyGRPC("otel")
			g.GetEnvoyGrpc().RetryPolicy = &corev3.RetryPolicy{}
			return g
		}()), want: prov + "grpc_service.envoy_grpc.retry_policy: not supported (the exporter retries UNAVAILABLE with backoff)"},
		{name: "grpc initial metadata", in: grpcTracing(t, func() *corev3.GrpcService {
			g := envoyGRPC("otel")
			g.InitialMetadata = []*corev3.HeaderValue{{Key: "x-token", Value: "s"}}
			return g
		}()), want: prov + "grpc_service.initial_metadata: not supported"},
		{name: "grpc retry policy", in: grpcTracing(t, func() *corev3.GrpcService {
			g := envoyGRPC("otel")
			g.RetryPolicy = &corev3.RetryPolicy{}
			return g
		}()), want: prov + "grpc_service.retry_policy: not supported (the exporter retries UNAVAILABLE with backoff)"},
		{name: "grpc bad timeout", in: grpcTracing(t, func() *corev3.GrpcService {
			g := envoyGRPC("otel")
			g.Timeout = &durationpb.Duration{Seconds: -1}
			return g
		}()), want: prov + "grpc_service.timeout: invalid duration"},
		{name: "google grpc no target", in: grpcTracing(t, googleGRPC("", nil)),
			want: prov + "grpc_service.google_grpc.target_uri: must not be empty"},
		{name: "google grpc call credentials", in: grpcTracing(t, func() *corev3.GrpcService {
			g := googleGRPC("collector:4317", nil)
			g.GetGoogleGrpc().CallCredentials = []*corev3.GrpcService_GoogleGrpc_CallCredentials{{}}
			return g
		}()), want: prov + "grpc_service.google_grpc.call_credentials: not supported"},
		{name: "google grpc local credentials", in: grpcTracing(t, googleGRPC("collector:4317", &corev3.GrpcService_GoogleGrpc_ChannelCredentials{
			CredentialSpecifier: &corev3.GrpcService_GoogleGrpc_ChannelCredentials_LocalCredentials{LocalCredentials: &corev3.GrpcService_GoogleGrpc_GoogleLocalCredentials{}}})),
			want: prov + "grpc_service.google_grpc.channel_credentials: only ssl_credentials is supported"},
		{name: "google grpc own roots", in: grpcTracing(t, googleGRPC("collector:4317", &corev3.GrpcService_GoogleGrpc_ChannelCredentials{
			CredentialSpecifier: &corev3.GrpcService_GoogleGrpc_ChannelCredentials_SslCredentials{SslCredentials: &corev3.GrpcService_GoogleGrpc_SslCredentials{
				RootCerts: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/etc/ca.pem"}}}}})),
			want: prov + "grpc_service.google_grpc.channel_credentials.ssl_credentials: only the system roots are supported (root_certs, private_key and cert_chain must be empty)"},
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

// tcpTraced is a TCP listener whose metadata carries tracing tr under key.
func tcpTraced(t *testing.T, key string, tr proto.Message) *listenerv3.Listener {
	l := xdstest.TCPListener("outbound_tcp|5432||db.default.svc.cluster.local", "127.0.0.1", 15432, "c")
	l.Metadata = &corev3.Metadata{TypedFilterMetadata: map[string]*anypb.Any{key: anyOf(t, tr)}}
	return l
}

// TestDecodeTCPTracing: a TCP listener's tracing comes from its metadata
// (typed_filter_metadata["tinymesh.io/tracing"]), decoded like an HCM's.
func TestDecodeTCPTracing(t *testing.T) {
	l, err := resource.DecodeListener(tcpTraced(t, "tinymesh.io/tracing", grpcTracing(t, envoyGRPC("otel"))))
	if err != nil {
		t.Fatalf("DecodeListener: %v", err)
	}
	want := &config.Tracing{Protocol: config.TracingGRPC, Cluster: "otel", SamplingPercent: 12.5}
	if d := cmp.Diff(want, l.Config.TCP.Tracing); d != "" {
		t.Errorf("TCP tracing (-want +got):\n%s", d)
	}
	l, err = resource.DecodeListener(tcpTraced(t, "other.io/thing", grpcTracing(t, envoyGRPC("otel"))))
	if err != nil {
		t.Fatalf("DecodeListener: %v", err)
	}
	if l.Config.TCP.Tracing != nil {
		t.Errorf("TCP tracing from another metadata key: %+v, want nil", l.Config.TCP.Tracing)
	}

	const pre = `Listener "outbound_tcp|5432||db.default.svc.cluster.local": metadata.typed_filter_metadata[tinymesh.io/tracing]`
	checkDecodeError(t, "DecodeListener", resource.DecodeListener, tcpTraced(t, "tinymesh.io/tracing", &tracev3.OpenTelemetryConfig{}),
		pre+`: want type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.Tracing, got "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"`)
	checkDecodeError(t, "DecodeListener", resource.DecodeListener, tcpTraced(t, "tinymesh.io/tracing", grpcTracing(t, envoyGRPC(""))),
		pre+".provider.typed_config.grpc_service.envoy_grpc.cluster_name: must not be empty")
}
