package translate

import (
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"

	"github.com/tinymesh/tinymesh/xds/mesh"
	"github.com/tinymesh/tinymesh/xds/mesh/v1alpha1"
)

// Defaults of the DestinationRule fields (docs/resilience.md): Istio's for
// outlier detection, ours for the health-check extension.
const (
	defaultOutlierInterval    = 10 * time.Second
	defaultBaseEjectionTime   = 30 * time.Second
	defaultConsecutive5xx     = 5
	defaultMaxEjectionPercent = 10
	defaultHCInterval         = 10 * time.Second
	defaultHCTimeout          = time.Second
	defaultUnhealthyThreshold = 3
	defaultHealthyThreshold   = 2
)

// trafficPolicy puts the DestinationRule of svc, if any, on c (a sidecar's
// outbound cluster to one port of svc): circuit_breakers, outlier_detection,
// connect_timeout and health_checks, all standard Envoy Cluster fields. h2
// says whether the cluster speaks HTTP/2 (gRPC health checks need it; on
// other clusters a gRPC check is left out).
func (t *translator) trafficPolicy(c *clusterv3.Cluster, svc *corev1.Service, port int32, h2 bool) {
	tp := t.m.DestinationRule(svc)
	if tp == nil {
		return
	}
	if cp := tp.ConnectionPool; cp != nil {
		th := &clusterv3.CircuitBreakers_Thresholds{Priority: corev3.RoutingPriority_DEFAULT}
		set := false
		u32 := func(dst **wrapperspb.UInt32Value, v *int32) {
			if v != nil {
				*dst, set = wrapperspb.UInt32(uint32(*v)), true
			}
		}
		if tcp := cp.TCP; tcp != nil {
			u32(&th.MaxConnections, tcp.MaxConnections)
			if tcp.ConnectTimeout != nil {
				c.ConnectTimeout = durationpb.New(tcp.ConnectTimeout.Duration)
			}
		}
		if h := cp.HTTP; h != nil {
			u32(&th.MaxPendingRequests, h.HTTP1MaxPendingRequests)
			u32(&th.MaxRequests, h.HTTP2MaxRequests)
			u32(&th.MaxRetries, h.MaxRetries)
		}
		if set {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{th}}
		}
	}
	if od := tp.OutlierDetection; od != nil {
		n5xx := uint32(defaultConsecutive5xx)
		if od.Consecutive5xxErrors != nil {
			n5xx = uint32(*od.Consecutive5xxErrors)
		}
		var gw uint32
		if od.ConsecutiveGatewayErrors != nil {
			gw = uint32(*od.ConsecutiveGatewayErrors)
		}
		pct := uint32(defaultMaxEjectionPercent)
		if od.MaxEjectionPercent != nil {
			pct = uint32(*od.MaxEjectionPercent)
		}
		// As Istio: a detector set to 0 is off (threshold and enforcement
		// 0), and success-rate detection, on by default in Envoy, is off.
		enforce := func(n uint32) *wrapperspb.UInt32Value {
			if n == 0 {
				return wrapperspb.UInt32(0)
			}
			return wrapperspb.UInt32(100)
		}
		c.OutlierDetection = &clusterv3.OutlierDetection{
			Consecutive_5Xx:                    wrapperspb.UInt32(n5xx),
			EnforcingConsecutive_5Xx:           enforce(n5xx),
			ConsecutiveGatewayFailure:          wrapperspb.UInt32(gw),
			EnforcingConsecutiveGatewayFailure: enforce(gw),
			EnforcingSuccessRate:               wrapperspb.UInt32(0),
			Interval:                           durationpb.New(mesh.DurationOr(od.Interval, defaultOutlierInterval)),
			BaseEjectionTime:                   durationpb.New(mesh.DurationOr(od.BaseEjectionTime, defaultBaseEjectionTime)),
			MaxEjectionPercent:                 wrapperspb.UInt32(pct),
		}
	}
	if hc := tp.HealthCheck; hc != nil {
		if h := healthCheck(hc, svc, port, h2); h != nil {
			c.HealthChecks = []*corev3.HealthCheck{h}
		}
	}
}

func healthCheck(hc *v1alpha1.HealthCheck, svc *corev1.Service, port int32, h2 bool) *corev3.HealthCheck {
	thr := func(v *int32, def uint32) *wrapperspb.UInt32Value {
		if v == nil {
			return wrapperspb.UInt32(def)
		}
		return wrapperspb.UInt32(uint32(*v))
	}
	out := &corev3.HealthCheck{
		Timeout:            durationpb.New(mesh.DurationOr(hc.Timeout, defaultHCTimeout)),
		Interval:           durationpb.New(mesh.DurationOr(hc.Interval, defaultHCInterval)),
		UnhealthyThreshold: thr(hc.UnhealthyThreshold, defaultUnhealthyThreshold),
		HealthyThreshold:   thr(hc.HealthyThreshold, defaultHealthyThreshold),
	}
	// The peer sidecar routes the probe by its authority: the Service port's.
	authority := mesh.FQDN(svc.Name, svc.Namespace) + ":" + strconv.Itoa(int(port))
	switch {
	case hc.HTTP != nil:
		out.HealthChecker = &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{
			Path: hc.HTTP.Path, Host: authority}}
	case hc.GRPC != nil:
		if !h2 {
			return nil
		}
		out.HealthChecker = &corev3.HealthCheck_GrpcHealthCheck_{GrpcHealthCheck: &corev3.HealthCheck_GrpcHealthCheck{
			ServiceName: hc.GRPC.Service, Authority: authority}}
	default:
		out.HealthChecker = &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{}}
	}
	return out
}
