package resource

import (
	"math"
	"net/url"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/tinymesh/tinymesh/dataplane/config"
)

const (
	tracerOpenTelemetry     = "envoy.tracers.opentelemetry"
	typeOpenTelemetryConfig = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
)

// decodeTracing decodes an HCM's tracing: provider envoy.tracers.opentelemetry
// with an http_service (OTLP/HTTP; http_uri.uri is the collector's URL, its
// cluster is not used: the proxy dials the URI's host), service_name, and
// random_sampling. Everything else that changes behaviour (grpc_service,
// client_sampling and overall_sampling below 100, custom_tags, verbose,
// samplers, resource detectors, exporter extensions, extra headers) is
// refused with its field path rather than silently ignored. nil: no tracing.
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
	if err := tc.UnmarshalTo(&ot); err != nil {
		return nil, cp.errorf("%v", err)
	}
	switch {
	case ot.GetGrpcService() != nil:
		return nil, cp.at("grpc_service").errorf("not supported: meshproxy exports OTLP over HTTP; use http_service")
	case ot.GetExporter() != nil:
		return nil, cp.at("exporter").errorf("not supported; use http_service")
	case len(ot.GetResourceDetectors()) > 0:
		return nil, cp.at("resource_detectors").errorf("not supported")
	case ot.GetSampler() != nil:
		return nil, cp.at("sampler").errorf("not supported; use the HCM's random_sampling")
	}
	hs := ot.GetHttpService()
	if hs == nil {
		return nil, cp.at("http_service").errorf("must be set")
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
	c.ServiceName = ot.GetServiceName()
	return c, nil
}
