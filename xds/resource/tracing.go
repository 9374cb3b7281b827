package resource

import (
	"math"
	"net/url"

	"github.com/tinymesh/tinymesh/dataplane/config"
	corev3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/core/v3"
	tracev3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/trace/v3"
	hcmv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/type/v3"
)

const (
	tracerOpenTelemetry     = "envoy.tracers.opentelemetry"
	typeOpenTelemetryConfig = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
)

// decodeTracing decodes an HCM's tracing: provider envoy.tracers.opentelemetry
// exporting with a grpc_service (OTLP/gRPC: envoy_grpc to a cluster, or
// google_grpc to a target URI) or an http_service (OTLP/HTTP; http_uri.uri is
// the collector's URL, its cluster is not used: the proxy dials the URI's
// host), service_name, and random_sampling. With both services set, gRPC is
// used, as Envoy does. Everything else that changes behaviour
// (client_sampling and overall_sampling below 100, custom_tags, verbose,
// samplers, resource detectors, exporter extensions, extra headers or
// metadata, credentials other than TLS with the system roots, retry
// policies) is refused with its field path rather than silently ignored.
// nil: no tracing.
func decodeTracing(p path, t *hcmv3.HttpConnectionManager_Tracing) (*config.Tracing, error) {
	if t == nil {
		return nil, nil
	}
	c := &config.Tracing{SamplingPercent: 100}
	for _, s := range []struct {
		field string
		v     *typev3.Percent
	}{{"client_sampling", t.GetClientSampling()}, {"overall_sampling", t.GetOverallSampling()}} {
		if s.v != nil && s.v.GetValue() != 100 {
			return nil, p.at(s.field).errorf("only 100 is supported")
		}
	}
	if rs := t.GetRandomSampling(); rs != nil {
		v := rs.GetValue()
		if math.IsNaN(v) || v < 0 || v > 100 {
			return nil, p.at("random_sampling.value").errorf("must be in 0..100, got %v", v)
		}
		c.SamplingPercent = v
	}
	switch {
	case len(t.GetCustomTags()) > 0:
		return nil, p.at("custom_tags").errorf("not supported")
	case t.GetVerbose():
		return nil, p.at("verbose").errorf("not supported")
	case t.GetMaxPathTagLength() != nil:
		return nil, p.at("max_path_tag_length").errorf("not supported (url.path is recorded whole)")
	}
	pp := p.at("provider")
	prov := t.GetProvider()
	if prov == nil {
		return nil, pp.errorf("must be set (meshproxy has no bootstrap tracer)")
	}
	tc := prov.GetTypedConfig()
	if tc == nil || tc.GetTypeUrl() != typeOpenTelemetryConfig {
		what := prov.GetName()
		if tc != nil {
			what = tc.GetTypeUrl()
		}
		return nil, pp.errorf("only %s (%s) is supported, got %q", tracerOpenTelemetry, typeOpenTelemetryConfig, what)
	}
	cp := pp.at("typed_config")
	var ot tracev3.OpenTelemetryConfig
	if err := Unpack(tc, &ot); err != nil {
		return nil, cp.errorf("%v", err)
	}
	switch {
	case ot.GetExporter() != nil:
		return nil, cp.at("exporter").errorf("not supported; use grpc_service or http_service")
	case len(ot.GetResourceDetectors()) > 0:
		return nil, cp.at("resource_detectors").errorf("not supported")
	case ot.GetSampler() != nil:
		return nil, cp.at("sampler").errorf("not supported; use the HCM's random_sampling")
	}
	c.ServiceName = ot.GetServiceName()
	if gs := ot.GetGrpcService(); gs != nil {
		if err := decodeTracingGRPC(cp.at("grpc_service"), gs, c); err != nil {
			return nil, err
		}
		return c, nil
	}
	hs := ot.GetHttpService()
	if hs == nil {
		return nil, cp.errorf("one of grpc_service and http_service must be set")
	}
	hp := cp.at("http_service")
	if len(hs.GetRequestHeadersToAdd()) > 0 {
		return nil, hp.at("request_headers_to_add").errorf("not supported")
	}
	up := hp.at("http_uri.uri")
	raw := hs.GetHttpUri().GetUri()
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, up.errorf("want an http:// or https:// URL, got %q", raw)
	}
	c.Endpoint = raw
	if d := hs.GetHttpUri().GetTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, hp.at("http_uri.timeout").errorf("invalid duration")
		}
		c.Timeout = d.AsDuration()
	}
	return c, nil
}

// decodeTracingGRPC decodes the OpenTelemetry tracer's grpc_service into c:
// envoy_grpc (cluster_name, the cluster whose endpoints receive the export,
// dialed with the cluster's transport; authority) or google_grpc
// (target_uri, plaintext without channel_credentials, TLS verified with the
// system roots for an empty ssl_credentials), and timeout (per export).
// Fields that change what is sent or how it is authenticated are refused.
func decodeTracingGRPC(p path, gs *corev3.GrpcService, c *config.Tracing) error {
	c.Protocol = config.TracingGRPC
	switch {
	case len(gs.GetInitialMetadata()) > 0:
		return p.at("initial_metadata").errorf("not supported")
	case gs.GetRetryPolicy() != nil:
		return p.at("retry_policy").errorf("not supported (the exporter retries UNAVAILABLE with backoff)")
	}
	if d := gs.GetTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return p.at("timeout").errorf("invalid duration")
		}
		c.Timeout = d.AsDuration()
	}
	switch ts := gs.GetTargetSpecifier().(type) {
	case *corev3.GrpcService_EnvoyGrpc_:
		ep := p.at("envoy_grpc")
		eg := ts.EnvoyGrpc
		if eg.GetClusterName() == "" {
			return ep.at("cluster_name").errorf("must not be empty")
		}
		if eg.GetRetryPolicy() != nil {
			return ep.at("retry_policy").errorf("not supported (the exporter retries UNAVAILABLE with backoff)")
		}
		c.Cluster, c.Authority = eg.GetClusterName(), eg.GetAuthority()
	case *corev3.GrpcService_GoogleGrpc_:
		gp := p.at("google_grpc")
		gg := ts.GoogleGrpc
		if gg.GetTargetUri() == "" {
			return gp.at("target_uri").errorf("must not be empty")
		}
		switch {
		case len(gg.GetCallCredentials()) > 0:
			return gp.at("call_credentials").errorf("not supported")
		case gg.GetCredentialsFactoryName() != "":
			return gp.at("credentials_factory_name").errorf("not supported")
		case gg.GetConfig() != nil:
			return gp.at("config").errorf("not supported")
		case gg.GetChannelArgs() != nil:
			return gp.at("channel_args").errorf("not supported")
		}
		if cc := gg.GetChannelCredentials(); cc != nil {
			ssl, ok := cc.GetCredentialSpecifier().(*corev3.GrpcService_GoogleGrpc_ChannelCredentials_SslCredentials)
			if !ok {
				return gp.at("channel_credentials").errorf("only ssl_credentials is supported")
			}
			if s := ssl.SslCredentials; s.GetRootCerts() != nil || s.GetPrivateKey() != nil || s.GetCertChain() != nil {
				return gp.at("channel_credentials.ssl_credentials").errorf("only the system roots are supported (root_certs, private_key and cert_chain must be empty)")
			}
			c.TLS = true
		}
		c.Endpoint = gg.GetTargetUri()
	default:
		return p.errorf("one of envoy_grpc and google_grpc must be set")
	}
	return nil
}

// tcpTracingKey is the listener metadata key (typed_filter_metadata) that
// carries a TCP listener's tracing: tcp_proxy has no tracing field in Envoy,
// which does not trace TCP and ignores metadata it does not know, so the
// same Listener stays valid Envoy config.
const tcpTracingKey = "tinymesh.io/tracing"

// typeHCMTracing is the type of tcpTracingKey's value: the HCM's own tracing
// message, decoded exactly like an HCM's.
const typeHCMTracing = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.Tracing"

// decodeTCPTracing decodes the tracing of a TCP listener from its metadata
// (typed_filter_metadata[tinymesh.io/tracing], an HttpConnectionManager.Tracing);
// nil when it has none.
func decodeTCPTracing(p path, md *corev3.Metadata) (*config.Tracing, error) {
	a, ok := md.GetTypedFilterMetadata()[tcpTracingKey]
	if !ok {
		return nil, nil
	}
	mp := p.at("metadata.typed_filter_metadata[" + tcpTracingKey + "]")
	if a.GetTypeUrl() != typeHCMTracing {
		return nil, mp.errorf("want %s, got %q", typeHCMTracing, a.GetTypeUrl())
	}
	var t hcmv3.HttpConnectionManager_Tracing
	if err := Unpack(a, &t); err != nil {
		return nil, mp.errorf("%v", err)
	}
	return decodeTracing(mp, &t)
}
