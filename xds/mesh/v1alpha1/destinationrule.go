package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// KindDestinationRule names the DestinationRule kind.
const KindDestinationRule = "DestinationRule"

// DestinationRule sets how clients call a Service: circuit breakers
// (connectionPool), passive outlier detection and, as a tinymesh extension,
// an active health check. It is shaped like Istio's DestinationRule
// (networking.istio.io), with the fields docs/resilience.md lists.
type DestinationRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec DestinationRuleSpec `json:"spec"`
}

// DestinationRuleSpec is the body of a DestinationRule.
type DestinationRuleSpec struct {
	// Host names a Service of the rule's namespace: its name or its FQDN
	// (<name>.<namespace>.svc.cluster.local). Required.
	Host          string         `json:"host"`
	TrafficPolicy *TrafficPolicy `json:"trafficPolicy,omitempty"`
}

// TrafficPolicy applies to every port of the Service.
type TrafficPolicy struct {
	ConnectionPool   *ConnectionPool   `json:"connectionPool,omitempty"`
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`
	// HealthCheck is a tinymesh extension (Istio has none): an active
	// health check of every endpoint by every client sidecar.
	HealthCheck *HealthCheck `json:"healthCheck,omitempty"`
}

// ConnectionPool holds the circuit-breaker limits, per client sidecar.
type ConnectionPool struct {
	TCP  *TCPPool  `json:"tcp,omitempty"`
	HTTP *HTTPPool `json:"http,omitempty"`
}

// TCPPool limits connections.
type TCPPool struct {
	MaxConnections *int32           `json:"maxConnections,omitempty"`
	ConnectTimeout *metav1.Duration `json:"connectTimeout,omitempty"`
}

// HTTPPool limits requests.
type HTTPPool struct {
	HTTP1MaxPendingRequests *int32 `json:"http1MaxPendingRequests,omitempty"`
	HTTP2MaxRequests        *int32 `json:"http2MaxRequests,omitempty"`
	MaxRetries              *int32 `json:"maxRetries,omitempty"`
}

// OutlierDetection ejects endpoints that fail in a row.
type OutlierDetection struct {
	// Consecutive5xxErrors (default 5; 0 turns the detector off) counts
	// 5xx responses and connect failures; ConsecutiveGatewayErrors (default
	// off) only 502, 503, 504 and connect failures.
	Consecutive5xxErrors     *int32           `json:"consecutive5xxErrors,omitempty"`
	ConsecutiveGatewayErrors *int32           `json:"consecutiveGatewayErrors,omitempty"`
	Interval                 *metav1.Duration `json:"interval,omitempty"`         // default 10s
	BaseEjectionTime         *metav1.Duration `json:"baseEjectionTime,omitempty"` // default 30s
	MaxEjectionPercent       *int32           `json:"maxEjectionPercent,omitempty"`
}

// HealthCheck is an active health check: exactly one of HTTP, GRPC and TCP.
type HealthCheck struct {
	HTTP               *HTTPHealthCheck `json:"http,omitempty"`
	GRPC               *GRPCHealthCheck `json:"grpc,omitempty"`
	TCP                *TCPHealthCheck  `json:"tcp,omitempty"`
	Interval           *metav1.Duration `json:"interval,omitempty"` // default 10s
	Timeout            *metav1.Duration `json:"timeout,omitempty"`  // default 1s
	UnhealthyThreshold *int32           `json:"unhealthyThreshold,omitempty"`
	HealthyThreshold   *int32           `json:"healthyThreshold,omitempty"`
}

// HTTPHealthCheck sends GET Path and expects 200.
type HTTPHealthCheck struct {
	Path string `json:"path"`
}

// GRPCHealthCheck calls grpc.health.v1.Health/Check for Service.
type GRPCHealthCheck struct {
	Service string `json:"service,omitempty"`
}

// TCPHealthCheck only connects.
type TCPHealthCheck struct{}
