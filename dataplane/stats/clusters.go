package stats

import "github.com/prometheus/client_golang/prometheus"

// ClusterGauges is one cluster's in-flight upstream state at scrape time,
// summed over its endpoints.
type ClusterGauges struct {
	Name              string
	ActiveRequests    int64 // Envoy's upstream_rq_active
	ActiveConnections int64 // Envoy's upstream_cx_active
}

// clusterCollector reads the per-endpoint counters the cluster stage keeps
// anyway (dataplane/cluster.EndpointStats) when Prometheus scrapes, so gauges
// cost the request path nothing beyond those atomic adds.
type clusterCollector struct {
	read     func() []ClusterGauges
	rqActive *prometheus.Desc
	cxActive *prometheus.Desc
}

func newClusterCollector(read func() []ClusterGauges) *clusterCollector {
	cl := []string{"cluster_name"}
	return &clusterCollector{
		read:     read,
		rqActive: prometheus.NewDesc("envoy_cluster_upstream_rq_active", "Upstream requests in flight.", cl, nil),
		cxActive: prometheus.NewDesc("envoy_cluster_upstream_cx_active", "Open upstream connections.", cl, nil),
	}
}

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.rqActive
	ch <- c.cxActive
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	for _, g := range c.read() {
		ch <- prometheus.MustNewConstMetric(c.rqActive, prometheus.GaugeValue, float64(g.ActiveRequests), g.Name)
		ch <- prometheus.MustNewConstMetric(c.cxActive, prometheus.GaugeValue, float64(g.ActiveConnections), g.Name)
	}
}

// ReadClusters registers gauges read from read at every scrape; read is
// called on the scraping goroutine and must be safe for concurrent use. Call
// it once, before serving metrics.
func (r *Recorder) ReadClusters(read func() []ClusterGauges) {
	r.reg.MustRegister(newClusterCollector(read))
}
