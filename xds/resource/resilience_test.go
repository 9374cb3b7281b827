package resource_test

import (
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/xds/resource"
	"github.com/tinymesh/tinymesh/xds/xdstest"
)

func u32(v uint32) *wrapperspb.UInt32Value { return wrapperspb.UInt32(v) }

func httpCheck() *corev3.HealthCheck {
	return &corev3.HealthCheck{
		Timeout: durationpb.New(time.Second), Interval: durationpb.New(5 * time.Second),
		IntervalJitter:     durationpb.New(time.Second),
		UnhealthyThreshold: u32(3), HealthyThreshold: u32(2),
		HealthChecker: &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{
			Path: "/healthz", Host: "backend", ExpectedStatuses: []*typev3.Int64Range{{Start: 200, End: 300}}}},
	}
}

func TestDecodeClusterResilience(t *testing.T) {
	tests := []struct {
		name string
		in   func(c *clusterv3.Cluster)
		want func(c *config.Cluster)
	}{
		{"circuit breakers: DEFAULT set, rest Envoy's defaults, HIGH ignored", func(c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{
				{Priority: corev3.RoutingPriority_HIGH, MaxRequests: u32(1)},
				{MaxRequests: u32(7), MaxRetries: u32(0), TrackRemaining: true},
			}}
		}, func(c *config.Cluster) {
			c.CircuitBreakers = &config.CircuitBreakers{MaxConnections: 1024, MaxPendingRequests: 1024, MaxRequests: 7, MaxRetries: 0}
		}},
		{"circuit breakers without thresholds", func(c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{}
		}, func(c *config.Cluster) { c.CircuitBreakers = config.DefaultCircuitBreakers() }},
		{"outlier detection: Envoy's defaults", func(c *clusterv3.Cluster) {
			c.OutlierDetection = &clusterv3.OutlierDetection{}
		}, func(c *config.Cluster) {
			c.OutlierDetection = &config.OutlierDetection{Consecutive5xx: 5, ConsecutiveGatewayFailure: 5,
				EnforcingConsecutive5xx: 100, EnforcingConsecutiveGatewayFailure: 0,
				Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionTime: 300 * time.Second, MaxEjectionPercent: 10}
			c.HealthyPanicThreshold = 50
		}},
		{"outlier detection as Istio sends it", func(c *clusterv3.Cluster) {
			c.OutlierDetection = &clusterv3.OutlierDetection{
				Consecutive_5Xx: u32(0), EnforcingConsecutive_5Xx: u32(0),
				ConsecutiveGatewayFailure: u32(2), EnforcingConsecutiveGatewayFailure: u32(100),
				EnforcingSuccessRate: u32(0), Interval: durationpb.New(time.Second), BaseEjectionTime: durationpb.New(15 * time.Second),
				MaxEjectionPercent: u32(100)}
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}}
		}, func(c *config.Cluster) {
			c.OutlierDetection = &config.OutlierDetection{ConsecutiveGatewayFailure: 2, EnforcingConsecutiveGatewayFailure: 100,
				Interval: time.Second, BaseEjectionTime: 15 * time.Second, MaxEjectionTime: 300 * time.Second, MaxEjectionPercent: 100}
		}},
		{"http health check", func(c *clusterv3.Cluster) {
			c.HealthChecks = []*corev3.HealthCheck{httpCheck()}
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 30}}
		}, func(c *config.Cluster) {
			c.HealthCheck = &config.HealthCheck{Kind: config.HealthCheckHTTP, Timeout: time.Second, Interval: 5 * time.Second,
				IntervalJitter: time.Second, UnhealthyThreshold: 3, HealthyThreshold: 2,
				Path: "/healthz", Host: "backend", ExpectedStatuses: []config.StatusRange{{Start: 200, End: 300}}}
			c.HealthyPanicThreshold = 30
		}},
		{"grpc health check", func(c *clusterv3.Cluster) {
			hc := httpCheck()
			hc.HealthChecker = &corev3.HealthCheck_GrpcHealthCheck_{GrpcHealthCheck: &corev3.HealthCheck_GrpcHealthCheck{ServiceName: "svc"}}
			c.HealthChecks = []*corev3.HealthCheck{hc}
		}, func(c *config.Cluster) {
			c.HealthCheck = &config.HealthCheck{Kind: config.HealthCheckGRPC, Timeout: time.Second, Interval: 5 * time.Second,
				IntervalJitter: time.Second, UnhealthyThreshold: 3, HealthyThreshold: 2, GRPCService: "svc"}
			c.HealthyPanicThreshold = 50
		}},
		{"tcp health check", func(c *clusterv3.Cluster) {
			hc := httpCheck()
			hc.HealthChecker = &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{}}
			c.HealthChecks = []*corev3.HealthCheck{hc}
		}, func(c *config.Cluster) {
			c.HealthCheck = &config.HealthCheck{Kind: config.HealthCheckTCP, Timeout: time.Second, Interval: 5 * time.Second,
				IntervalJitter: time.Second, UnhealthyThreshold: 3, HealthyThreshold: 2}
			c.HealthyPanicThreshold = 50
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resource.DecodeCluster(withCluster(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			want, err := resource.DecodeCluster(xdstest.EDSCluster("c"))
			if err != nil {
				t.Fatal(err)
			}
			tt.want(want.Config)
			if diff := cmp.Diff(want.Config, got.Config); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeClusterResilienceErrors(t *testing.T) {
	const q = `Cluster "c": `
	hc := func(f func(h *corev3.HealthCheck)) func(c *clusterv3.Cluster) {
		return func(c *clusterv3.Cluster) {
			h := httpCheck()
			f(h)
			c.HealthChecks = []*corev3.HealthCheck{h}
		}
	}
	tests := []struct {
		name string
		in   func(c *clusterv3.Cluster)
		want string
	}{
		{"retry budget", func(c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{}}}}
		}, q + "circuit_breakers.thresholds[0].retry_budget: not supported (use max_retries)"},
		{"two DEFAULT thresholds", func(c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{}, {}}}
		}, q + "circuit_breakers.thresholds[1].priority: DEFAULT thresholds given twice"},
		{"per-host thresholds", func(c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{PerHostThresholds: []*clusterv3.CircuitBreakers_Thresholds{{}}}
		}, q + "circuit_breakers.per_host_thresholds: not supported"},
		{"success rate", func(c *clusterv3.Cluster) {
			c.OutlierDetection = &clusterv3.OutlierDetection{EnforcingSuccessRate: u32(100)}
		}, q + "outlier_detection.enforcing_success_rate: success-rate outlier detection is not supported (set 0)"},
		{"failure percentage", func(c *clusterv3.Cluster) {
			c.OutlierDetection = &clusterv3.OutlierDetection{EnforcingFailurePercentage: u32(10)}
		}, q + "outlier_detection.enforcing_failure_percentage: failure-percentage outlier detection is not supported"},
		{"split local origin", func(c *clusterv3.Cluster) {
			c.OutlierDetection = &clusterv3.OutlierDetection{SplitExternalLocalOriginErrors: true}
		}, q + "outlier_detection.split_external_local_origin_errors: not supported (local-origin errors count as gateway failures)"},
		{"percent over 100", func(c *clusterv3.Cluster) {
			c.OutlierDetection = &clusterv3.OutlierDetection{MaxEjectionPercent: u32(101)}
		}, q + "outlier_detection.max_ejection_percent: 101 is not a percentage (0..100)"},
		{"zero interval", func(c *clusterv3.Cluster) {
			c.OutlierDetection = &clusterv3.OutlierDetection{Interval: durationpb.New(0)}
		}, q + "outlier_detection.interval: must be positive"},
		{"panic threshold", func(c *clusterv3.Cluster) {
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 120}}
		}, q + "common_lb_config.healthy_panic_threshold: 120 is not a percentage (0..100)"},
		{"two health checks", func(c *clusterv3.Cluster) { c.HealthChecks = []*corev3.HealthCheck{httpCheck(), httpCheck()} },
			q + "health_checks[1]: only one health check per cluster is supported"},
		{"no interval", hc(func(h *corev3.HealthCheck) { h.Interval = nil }), q + "health_checks[0].interval: must be set"},
		{"zero healthy threshold", hc(func(h *corev3.HealthCheck) { h.HealthyThreshold = u32(0) }),
			q + "health_checks[0].healthy_threshold: must be at least 1"},
		{"no checker", hc(func(h *corev3.HealthCheck) { h.HealthChecker = nil }), q + "health_checks[0].health_checker: must be set"},
		{"relative path", hc(func(h *corev3.HealthCheck) { h.GetHttpHealthCheck().Path = "healthz" }),
			q + "health_checks[0].http_health_check.path: must be an absolute path"},
		{"POST", hc(func(h *corev3.HealthCheck) { h.GetHttpHealthCheck().Method = corev3.RequestMethod_POST }),
			q + "health_checks[0].http_health_check.method: unsupported POST (only GET)"},
		{"bad status range", hc(func(h *corev3.HealthCheck) {
			h.GetHttpHealthCheck().ExpectedStatuses = []*typev3.Int64Range{{Start: 300, End: 200}}
		}), q + "health_checks[0].http_health_check.expected_statuses[0]: want 100 <= start < end <= 600, got [300, 200)"},
		{"tcp payload", hc(func(h *corev3.HealthCheck) {
			h.HealthChecker = &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{
				Send: &corev3.HealthCheck_Payload{Payload: &corev3.HealthCheck_Payload_Text{Text: "00"}}}}
		}), q + "health_checks[0].tcp_health_check: only a connect check (empty send and receive) is supported"},
		{"grpc on HTTP/1.1", func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = nil
			h := httpCheck()
			h.HealthChecker = &corev3.HealthCheck_GrpcHealthCheck_{GrpcHealthCheck: &corev3.HealthCheck_GrpcHealthCheck{}}
			c.HealthChecks = []*corev3.HealthCheck{h}
		}, q + "health_checks[0].grpc_health_check: requires an HTTP/2 cluster (http2_protocol_options)"},
		{"alt port", hc(func(h *corev3.HealthCheck) { h.AltPort = u32(9) }), q + "health_checks[0].alt_port: not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkDecodeError(t, "DecodeCluster", resource.DecodeCluster, withCluster(tt.in), tt.want)
		})
	}
}
