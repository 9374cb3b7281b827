package config

import "time"

// CircuitBreakers are a cluster's DEFAULT-priority thresholds
// (circuit_breakers.thresholds). xds/resource fills the fields a threshold
// leaves unset with Envoy's defaults (DefaultCircuitBreakers); a zero is a
// limit of zero, as in Envoy.
type CircuitBreakers struct {
	// MaxConnections bounds the cluster's open upstream connections (pooled,
	// upgraded and TCP-proxied; health-check probes are not counted).
	MaxConnections uint32
	// MaxPendingRequests is accepted for Envoy compatibility: meshproxy has
	// no queue of requests waiting for a connection (a request either gets a
	// connection or overflows max_connections at once), so there is nothing
	// for it to bound (docs/resilience.md).
	MaxPendingRequests uint32
	// MaxRequests bounds the cluster's requests in flight (every protocol).
	MaxRequests uint32
	// MaxRetries bounds the cluster's retries in flight.
	MaxRetries uint32
}

// Circuit-breaker defaults: Envoy's (cluster.v3.CircuitBreakers.Thresholds)
// except max_retries, which is 3 in Envoy. meshproxy retries every connect
// failure on another endpoint by itself (docs/xds-conventions.md), and a
// cluster-wide budget of 3 concurrent retries would fail requests under load
// whenever one endpoint is down; Istio sets max_retries to 2^32-1 by default
// for the same reason. A threshold that sets max_retries is honoured.
const (
	DefaultMaxConnections     = 1024
	DefaultMaxPendingRequests = 1024
	DefaultMaxRequests        = 1024
	DefaultMaxRetries         = 1024
)

// DefaultCircuitBreakers returns the default thresholds.
func DefaultCircuitBreakers() *CircuitBreakers {
	return &CircuitBreakers{
		MaxConnections:     DefaultMaxConnections,
		MaxPendingRequests: DefaultMaxPendingRequests,
		MaxRequests:        DefaultMaxRequests,
		MaxRetries:         DefaultMaxRetries,
	}
}

// OutlierDetection is passive health checking (cluster.v3.OutlierDetection):
// consecutive server errors and gateway failures eject an endpoint for a time
// that grows with the number of its ejections. xds/resource fills in Envoy's
// defaults, so every field is meaningful as it stands.
type OutlierDetection struct {
	// Consecutive5xx and ConsecutiveGatewayFailure are the ejection
	// thresholds; 0 turns that detector off.
	Consecutive5xx            uint32
	ConsecutiveGatewayFailure uint32
	// EnforcingConsecutive5xx and EnforcingConsecutiveGatewayFailure are
	// the chance in percent (0..100) that a detected outlier is ejected.
	EnforcingConsecutive5xx            uint32
	EnforcingConsecutiveGatewayFailure uint32
	// Interval is the un-ejection sweep period; BaseEjectionTime times the
	// host's ejection multiplier, capped at MaxEjectionTime, is how long an
	// ejection lasts.
	Interval         time.Duration
	BaseEjectionTime time.Duration
	MaxEjectionTime  time.Duration
	// MaxEjectionPercent bounds the share of the cluster's endpoints that
	// may be ejected at once (0..100); one endpoint may always be ejected.
	MaxEjectionPercent uint32
}

// HealthCheckKind says how an active health check probes.
type HealthCheckKind uint8

const (
	// HealthCheckTCP connects and closes (tcp_health_check with empty
	// send and receive).
	HealthCheckTCP HealthCheckKind = iota
	// HealthCheckHTTP sends GET Path and expects ExpectedStatuses.
	HealthCheckHTTP
	// HealthCheckGRPC calls grpc.health.v1.Health/Check for GRPCService
	// and expects SERVING.
	HealthCheckGRPC
)

func (k HealthCheckKind) String() string {
	switch k {
	case HealthCheckHTTP:
		return "http"
	case HealthCheckGRPC:
		return "grpc"
	}
	return "tcp"
}

// HealthCheck is one active health check (core.v3.HealthCheck). Endpoints of a
// cluster with a health check start unhealthy and take traffic after their
// first passing probe (as Envoy, which marks new hosts failed_active_hc and
// pending_active_hc until then).
type HealthCheck struct {
	Kind           HealthCheckKind
	Timeout        time.Duration // > 0
	Interval       time.Duration // > 0
	IntervalJitter time.Duration // a random 0..IntervalJitter is added to each wait
	// UnhealthyThreshold failures in a row mark a healthy endpoint
	// unhealthy; HealthyThreshold successes mark an unhealthy one healthy
	// (a single success for a new endpoint). Both >= 1.
	UnhealthyThreshold uint32
	HealthyThreshold   uint32

	// HTTP: Path (required) and Host (empty: the cluster name, as Envoy);
	// ExpectedStatuses are half-open [Start, End) ranges, default 200 only.
	Path             string
	Host             string
	ExpectedStatuses []StatusRange
	// GRPC: the service name asked about ("" is the server as a whole) and
	// the :authority (empty: the cluster name).
	GRPCService   string
	GRPCAuthority string
}

// StatusRange is the half-open range [Start, End) of HTTP status codes.
type StatusRange struct{ Start, End int }
