package resource

import (
	"math"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tinymesh/tinymesh/dataplane/config"
	clusterv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/cluster/v3"
	corev3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/core/v3"
)

// Envoy's outlier detection defaults (cluster.v3.OutlierDetection).
const (
	defaultConsecutiveErrors  = 5
	defaultODInterval         = 10 * time.Second
	defaultBaseEjectionTime   = 30 * time.Second
	defaultMaxEjectionTime    = 300 * time.Second
	defaultMaxEjectionPercent = 10
	defaultPanicThreshold     = 50
)

// decodeCircuitBreakers takes the DEFAULT-priority thresholds, with Envoy's
// defaults for what they leave unset. HIGH-priority thresholds are accepted
// and not used: they govern only routes of priority HIGH, which meshproxy
// does not have (RouteAction.priority is not decoded), so Envoy would not use
// them either.
// Without circuit_breakers it returns nil: the data plane's defaults.
func decodeCircuitBreakers(p path, cb *clusterv3.CircuitBreakers) (*config.CircuitBreakers, error) {
	if cb == nil {
		return nil, nil
	}
	out := config.DefaultCircuitBreakers()
	if len(cb.GetPerHostThresholds()) > 0 {
		return nil, p.at("per_host_thresholds").errorf("not supported")
	}
	seen := false
	for i, t := range cb.GetThresholds() {
		tp := p.idx("thresholds", i)
		if t.GetRetryBudget() != nil {
			return nil, tp.at("retry_budget").errorf("not supported (use max_retries)")
		}
		if t.GetMaxConnectionPools() != nil {
			return nil, tp.at("max_connection_pools").errorf("not supported")
		}
		switch t.GetPriority() {
		case corev3.RoutingPriority_DEFAULT:
		case corev3.RoutingPriority_HIGH:
			continue
		default:
			return nil, tp.at("priority").errorf("unknown priority %d", t.GetPriority())
		}
		if seen {
			return nil, tp.at("priority").errorf("DEFAULT thresholds given twice")
		}
		seen = true
		set := func(dst *uint32, v *wrapperspb.UInt32Value) {
			if v != nil {
				*dst = v.GetValue()
			}
		}
		set(&out.MaxConnections, t.GetMaxConnections())
		set(&out.MaxPendingRequests, t.GetMaxPendingRequests())
		set(&out.MaxRequests, t.GetMaxRequests())
		set(&out.MaxRetries, t.GetMaxRetries())
		// track_remaining only adds remaining-capacity stats; it is accepted
		// and those gauges are not exported (docs/resilience.md).
	}
	return out, nil
}

func u32(v *wrapperspb.UInt32Value, def uint32) uint32 {
	if v == nil {
		return def
	}
	return v.GetValue()
}

func percent(p path, v *wrapperspb.UInt32Value, def uint32) (uint32, error) {
	x := u32(v, def)
	if x > 100 {
		return 0, p.errorf("%d is not a percentage (0..100)", x)
	}
	return x, nil
}

// decodeOutlierDetection supports the consecutive_5xx and
// consecutive_gateway_failure detectors; the success-rate and
// failure-percentage detectors, split local-origin errors and the other
// extensions are NACKed when turned on.
func decodeOutlierDetection(p path, od *clusterv3.OutlierDetection) (*config.OutlierDetection, error) {
	if od == nil {
		return nil, nil
	}
	// Envoy enforces success-rate detection by default (enforcing_success_rate
	// 100) once success_rate_minimum_hosts (5) hosts have success_rate_request_volume
	// (100) requests each; meshproxy does not implement it, so it is NACKed when
	// configured explicitly and, when left at Envoy's default, documented as
	// not done (docs/resilience.md).
	if v := od.GetEnforcingSuccessRate(); v != nil && v.GetValue() > 0 {
		return nil, p.at("enforcing_success_rate").errorf("success-rate outlier detection is not supported (set 0)")
	}
	if v := od.GetEnforcingFailurePercentage(); v.GetValue() > 0 {
		return nil, p.at("enforcing_failure_percentage").errorf("failure-percentage outlier detection is not supported")
	}
	if v := od.GetEnforcingFailurePercentageLocalOrigin(); v.GetValue() > 0 {
		return nil, p.at("enforcing_failure_percentage_local_origin").errorf("failure-percentage outlier detection is not supported")
	}
	if od.GetSplitExternalLocalOriginErrors() {
		return nil, p.at("split_external_local_origin_errors").errorf("not supported (local-origin errors count as gateway failures)")
	}
	if d := od.GetMaxEjectionTimeJitter(); d != nil && d.AsDuration() != 0 {
		return nil, p.at("max_ejection_time_jitter").errorf("not supported")
	}
	if od.GetSuccessfulActiveHealthCheckUnejectHost().GetValue() {
		return nil, p.at("successful_active_health_check_uneject_host").errorf("not supported")
	}
	if len(od.GetMonitors()) > 0 {
		return nil, p.at("monitors").errorf("not supported")
	}
	if od.GetAlwaysEjectOneHost().GetValue() {
		return nil, p.at("always_eject_one_host").errorf("not supported")
	}
	if od.GetDetectDegradedHosts().GetValue() {
		return nil, p.at("detect_degraded_hosts").errorf("not supported")
	}
	out := &config.OutlierDetection{
		Consecutive5xx:            u32(od.GetConsecutive_5Xx(), defaultConsecutiveErrors),
		ConsecutiveGatewayFailure: u32(od.GetConsecutiveGatewayFailure(), defaultConsecutiveErrors),
	}
	var err error
	if out.EnforcingConsecutive5xx, err = percent(p.at("enforcing_consecutive_5xx"), od.GetEnforcingConsecutive_5Xx(), 100); err != nil {
		return nil, err
	}
	// Envoy's default for the gateway-failure detector is 0: detected, not enforced.
	if out.EnforcingConsecutiveGatewayFailure, err = percent(p.at("enforcing_consecutive_gateway_failure"), od.GetEnforcingConsecutiveGatewayFailure(), 0); err != nil {
		return nil, err
	}
	if out.MaxEjectionPercent, err = percent(p.at("max_ejection_percent"), od.GetMaxEjectionPercent(), defaultMaxEjectionPercent); err != nil {
		return nil, err
	}
	if out.Interval, err = duration(p.at("interval"), od.GetInterval(), defaultODInterval); err != nil {
		return nil, err
	}
	if out.Interval <= 0 {
		return nil, p.at("interval").errorf("must be positive")
	}
	if out.BaseEjectionTime, err = duration(p.at("base_ejection_time"), od.GetBaseEjectionTime(), defaultBaseEjectionTime); err != nil {
		return nil, err
	}
	if out.BaseEjectionTime <= 0 {
		return nil, p.at("base_ejection_time").errorf("must be positive")
	}
	if out.MaxEjectionTime, err = duration(p.at("max_ejection_time"), od.GetMaxEjectionTime(), defaultMaxEjectionTime); err != nil {
		return nil, err
	}
	return out, nil
}

// decodeHealthChecks supports one HTTP, gRPC or TCP (connect-only) check.
func decodeHealthChecks(p path, hcs []*corev3.HealthCheck, proto config.Protocol) (*config.HealthCheck, error) {
	if len(hcs) == 0 {
		return nil, nil
	}
	if len(hcs) > 1 {
		return nil, p.idx("health_checks", 1).errorf("only one health check per cluster is supported")
	}
	hc := hcs[0]
	p = p.idx("health_checks", 0)
	out := &config.HealthCheck{}
	var err error
	for _, d := range []struct {
		name string
		dst  *time.Duration
		get  func() (time.Duration, bool)
	}{
		{"timeout", &out.Timeout, func() (time.Duration, bool) { return hc.GetTimeout().AsDuration(), hc.GetTimeout() != nil }},
		{"interval", &out.Interval, func() (time.Duration, bool) { return hc.GetInterval().AsDuration(), hc.GetInterval() != nil }},
	} {
		v, ok := d.get()
		if !ok {
			return nil, p.at(d.name).errorf("must be set")
		}
		if v <= 0 {
			return nil, p.at(d.name).errorf("must be positive")
		}
		*d.dst = v
	}
	if out.IntervalJitter, err = duration(p.at("interval_jitter"), hc.GetIntervalJitter(), 0); err != nil {
		return nil, err
	}
	for _, t := range []struct {
		name string
		dst  *uint32
		v    *wrapperspb.UInt32Value
	}{{"unhealthy_threshold", &out.UnhealthyThreshold, hc.GetUnhealthyThreshold()}, {"healthy_threshold", &out.HealthyThreshold, hc.GetHealthyThreshold()}} {
		if t.v == nil {
			return nil, p.at(t.name).errorf("must be set")
		}
		if t.v.GetValue() == 0 {
			return nil, p.at(t.name).errorf("must be at least 1")
		}
		*t.dst = t.v.GetValue()
	}
	// Accepted and not used: the proxy probes at interval whether or not the
	// cluster has had traffic (no_traffic_interval), and the first probe is
	// not delayed (initial_jitter).
	unsupported := []struct {
		name string
		set  bool
	}{
		{"interval_jitter_percent", hc.GetIntervalJitterPercent() != 0},
		{"alt_port", hc.GetAltPort() != nil},
		{"reuse_connection", hc.GetReuseConnection() != nil && !hc.GetReuseConnection().GetValue()},
		{"unhealthy_interval", hc.GetUnhealthyInterval() != nil},
		{"unhealthy_edge_interval", hc.GetUnhealthyEdgeInterval() != nil},
		{"healthy_edge_interval", hc.GetHealthyEdgeInterval() != nil},
		{"event_log_path", hc.GetEventLogPath() != ""},
		{"event_logger", len(hc.GetEventLogger()) > 0},
		{"tls_options", hc.GetTlsOptions() != nil},
		{"transport_socket_match_criteria", hc.GetTransportSocketMatchCriteria() != nil},
	}
	for _, u := range unsupported {
		if u.set {
			return nil, p.at(u.name).errorf("not supported")
		}
	}
	switch k := hc.GetHealthChecker().(type) {
	case *corev3.HealthCheck_HttpHealthCheck_:
		h := k.HttpHealthCheck
		hp := p.at("http_health_check")
		out.Kind = config.HealthCheckHTTP
		if h.GetPath() == "" || h.GetPath()[0] != '/' {
			return nil, hp.at("path").errorf("must be an absolute path")
		}
		out.Path, out.Host = h.GetPath(), h.GetHost()
		if h.GetSend() != nil || h.GetReceive() != nil || len(h.GetRequestHeadersToAdd()) > 0 || len(h.GetRequestHeadersToRemove()) > 0 ||
			len(h.GetRetriableStatuses()) > 0 || h.GetServiceNameMatcher() != nil {
			return nil, hp.errorf("only host, path and expected_statuses are supported")
		}
		if m := h.GetMethod(); m != corev3.RequestMethod_METHOD_UNSPECIFIED && m != corev3.RequestMethod_GET {
			return nil, hp.at("method").errorf("unsupported %s (only GET)", m)
		}
		if c := h.GetCodecClientType(); c == 2 { // HTTP3
			return nil, hp.at("codec_client_type").errorf("HTTP3 is not supported")
		}
		for i, r := range h.GetExpectedStatuses() {
			if r.GetStart() < 100 || r.GetEnd() > 600 || r.GetStart() >= r.GetEnd() {
				return nil, hp.idx("expected_statuses", i).errorf("want 100 <= start < end <= 600, got [%d, %d)", r.GetStart(), r.GetEnd())
			}
			out.ExpectedStatuses = append(out.ExpectedStatuses, config.StatusRange{Start: int(r.GetStart()), End: int(r.GetEnd())})
		}
	case *corev3.HealthCheck_GrpcHealthCheck_:
		g := k.GrpcHealthCheck
		gp := p.at("grpc_health_check")
		if proto != config.ProtocolH2C {
			return nil, gp.errorf("requires an HTTP/2 cluster (http2_protocol_options)")
		}
		if len(g.GetInitialMetadata()) > 0 {
			return nil, gp.at("initial_metadata").errorf("not supported")
		}
		out.Kind, out.GRPCService, out.GRPCAuthority = config.HealthCheckGRPC, g.GetServiceName(), g.GetAuthority()
	case *corev3.HealthCheck_TcpHealthCheck_:
		t := k.TcpHealthCheck
		if t.GetSend() != nil || len(t.GetReceive()) > 0 || t.GetProxyProtocolConfig() != nil {
			return nil, p.at("tcp_health_check").errorf("only a connect check (empty send and receive) is supported")
		}
		out.Kind = config.HealthCheckTCP
	case nil:
		return nil, p.at("health_checker").errorf("must be set")
	default:
		return nil, p.errorf("unsupported health checker %T (http, grpc and tcp are)", k)
	}
	return out, nil
}

// decodePanicThreshold reads common_lb_config.healthy_panic_threshold
// (percent, default 50; 0 disables panic mode).
func decodePanicThreshold(p path, c *clusterv3.Cluster_CommonLbConfig) (float64, error) {
	v := c.GetHealthyPanicThreshold()
	if v == nil {
		return defaultPanicThreshold, nil
	}
	x := v.GetValue()
	if math.IsNaN(x) || x < 0 || x > 100 {
		return 0, p.at("healthy_panic_threshold").errorf("%v is not a percentage (0..100)", x)
	}
	return x, nil
}
