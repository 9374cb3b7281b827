package stats

import "github.com/prometheus/client_golang/prometheus"

// ClusterGauges is one cluster's upstream state at scrape time: in-flight
// counts summed over its endpoints, and the circuit-breaker, outlier
// detection and health-check counters its upstream keeps.
type ClusterGauges struct {
	Name              string
	ActiveRequests    int64 // Envoy's upstream_rq_active
	ActiveConnections int64 // Envoy's upstream_cx_active

	// Circuit breakers (always in force, with Envoy's defaults at least).
	CxOverflow    uint64 // upstream_cx_overflow
	RqOverflow    uint64 // upstream_rq_pending_overflow (max_requests)
	RetryOverflow uint64 // upstream_rq_retry_overflow
	CxOpen        bool   // circuit_breakers.default.cx_open
	RqOpen        bool   // circuit_breakers.default.rq_open
	RetryOpen     bool   // circuit_breakers.default.rq_retry_open

	// Membership: endpoints, and those that may take traffic.
	MembershipTotal   int
	MembershipHealthy int

	// Outlier detection, exported only when OutlierDetection is set.
	OutlierDetection  bool
	EjectionsEnforced uint64 // outlier_detection.ejections_enforced_total
	EjectionsActive   int    // outlier_detection.ejections_active

	// Active health checks, exported only when HealthCheck is set.
	HealthCheck                         bool
	HCAttempts, HCSuccesses, HCFailures uint64
}

// clusterCollector reads the per-endpoint counters the cluster stage keeps
// anyway (dataplane/cluster.EndpointStats and the upstream's resilience
// counters) when Prometheus scrapes, so these metrics cost the request path
// nothing beyond those atomic adds.
type clusterCollector struct {
	read                                  func() []ClusterGauges
	rqActive, cxActive                    *prometheus.Desc
	cxOverflow, rqOverflow, retryOverflow *prometheus.Desc
	cxOpen, rqOpen, retryOpen             *prometheus.Desc
	memTotal, memHealthy                  *prometheus.Desc
	ejTotal, ejActive                     *prometheus.Desc
	hcAttempt, hcSuccess, hcFailure       *prometheus.Desc
}

func newClusterCollector(read func() []ClusterGauges) *clusterCollector {
	cl := []string{"cluster_name"}
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, cl, nil) }
	return &clusterCollector{
		read:          read,
		rqActive:      d("envoy_cluster_upstream_rq_active", "Upstream requests in flight."),
		cxActive:      d("envoy_cluster_upstream_cx_active", "Open upstream connections."),
		cxOverflow:    d("envoy_cluster_upstream_cx_overflow", "Upstream connections refused by the max_connections circuit breaker."),
		rqOverflow:    d("envoy_cluster_upstream_rq_pending_overflow", "Requests refused by the max_requests circuit breaker (503, flag UO)."),
		retryOverflow: d("envoy_cluster_upstream_rq_retry_overflow", "Retries not attempted because of the max_retries circuit breaker."),
		cxOpen:        d("envoy_cluster_circuit_breakers_default_cx_open", "1 while max_connections is reached."),
		rqOpen:        d("envoy_cluster_circuit_breakers_default_rq_open", "1 while max_requests is reached."),
		retryOpen:     d("envoy_cluster_circuit_breakers_default_rq_retry_open", "1 while max_retries is reached."),
		memTotal:      d("envoy_cluster_membership_total", "Endpoints of the cluster."),
		memHealthy:    d("envoy_cluster_membership_healthy", "Endpoints neither ejected nor failing active health checks."),
		ejTotal:       d("envoy_cluster_outlier_detection_ejections_total", "Endpoints ejected by outlier detection."),
		ejActive:      d("envoy_cluster_outlier_detection_ejections_active", "Endpoints ejected now."),
		hcAttempt:     d("envoy_cluster_health_check_attempt", "Active health-check probes."),
		hcSuccess:     d("envoy_cluster_health_check_success", "Active health-check probes that passed."),
		hcFailure:     d("envoy_cluster_health_check_failure", "Active health-check probes that failed."),
	}
}

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.rqActive, c.cxActive, c.cxOverflow, c.rqOverflow, c.retryOverflow,
		c.cxOpen, c.rqOpen, c.retryOpen, c.memTotal, c.memHealthy, c.ejTotal, c.ejActive, c.hcAttempt, c.hcSuccess, c.hcFailure} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, name string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, name)
	}
	counter := func(d *prometheus.Desc, v uint64, name string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), name)
	}
	for _, g := range c.read() {
		gauge(c.rqActive, float64(g.ActiveRequests), g.Name)
		gauge(c.cxActive, float64(g.ActiveConnections), g.Name)
		counter(c.cxOverflow, g.CxOverflow, g.Name)
		counter(c.rqOverflow, g.RqOverflow, g.Name)
		counter(c.retryOverflow, g.RetryOverflow, g.Name)
		gauge(c.cxOpen, b2f(g.CxOpen), g.Name)
		gauge(c.rqOpen, b2f(g.RqOpen), g.Name)
		gauge(c.retryOpen, b2f(g.RetryOpen), g.Name)
		gauge(c.memTotal, float64(g.MembershipTotal), g.Name)
		gauge(c.memHealthy, float64(g.MembershipHealthy), g.Name)
		if g.OutlierDetection {
			counter(c.ejTotal, g.EjectionsEnforced, g.Name)
			gauge(c.ejActive, float64(g.EjectionsActive), g.Name)
		}
		if g.HealthCheck {
			counter(c.hcAttempt, g.HCAttempts, g.Name)
			counter(c.hcSuccess, g.HCSuccesses, g.Name)
			counter(c.hcFailure, g.HCFailures, g.Name)
		}
	}
}

// ReadClusters registers gauges read from read at every scrape; read is
// called on the scraping goroutine and must be safe for concurrent use. Call
// it once, before serving metrics.
func (r *Recorder) ReadClusters(read func() []ClusterGauges) {
	r.reg.MustRegister(newClusterCollector(read))
}
