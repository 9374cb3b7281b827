// Package stats turns finished streams (stream.Info) into Prometheus metrics:
// Istio's standard request and TCP metrics (istio_requests_total and friends,
// with Istio's label names), Envoy-style per-cluster upstream counters
// (envoy_cluster_upstream_rq_total, ...) and the xDS client's state
// (meshproxy_xds_*). It is the last stage of the request pipeline, called
// when a stream ends.
//
// Label values come only from config (cluster and virtual host names, the
// control plane's endpoint metadata), from this proxy's own identity and from
// verified peer identities, never from raw request headers, so the number of
// series is bounded by the mesh's size, not by its traffic.
//
// Concurrency: Observe, ObserveTCP and TCPOpened are called on request and
// connection goroutines, concurrently. They look up pre-resolved metric
// handles in an immutable map loaded with one atomic read; only a label
// combination seen for the first time takes a mutex and copies the map
// (copy on write), so the steady state neither locks nor allocates. Update is
// called by the config goroutine when a snapshot is applied.
package stats

import (
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/stream"
)

// unknown is Istio's value for a label the reporter cannot know.
const unknown = "unknown"

// Options describe this proxy's own workload: the destination_* labels on
// the inbound side and the source_* labels on the outbound side.
type Options struct {
	Workload  string // e.g. backend-v1
	Namespace string
	Version   string // the workload's "version" label; "" is reported as "unknown"
	// Principal is this proxy's SPIFFE ID ("spiffe://td/ns/<ns>/sa/<sa>"),
	// reported as source_principal (outbound, over TLS clusters) and
	// destination_principal (inbound, mutual TLS); "" when it has none.
	Principal string
	// Registry receives the metrics; nil makes a new one (Gatherer returns it).
	Registry *prometheus.Registry
}

// Istio's default buckets (istio/proxy stats plugin): milliseconds for
// durations, powers of ten for sizes.
var (
	durationBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}
	sizeBuckets     = prometheus.ExponentialBuckets(1, 10, 10) // 1 .. 1e9
)

// Label names, in the order of every label-value slice below.
var (
	peerLabels = []string{"reporter", "source_workload", "source_workload_namespace", "source_principal",
		"destination_workload", "destination_workload_namespace", "destination_version", "destination_service",
		"destination_principal", "connection_security_policy", "response_flags"}
	httpLabels = append(append([]string{}, peerLabels...), "response_code", "grpc_response_status")
)

// Recorder records finished streams. A nil *Recorder is not valid; callers
// that turn metrics off do not install an Observer at all.
type Recorder struct {
	// Set in New, read-only after.
	self     Options
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	reqSize  *prometheus.HistogramVec
	respSize *prometheus.HistogramVec
	tcpSent  *prometheus.CounterVec
	tcpRecv  *prometheus.CounterVec
	tcpOpen  *prometheus.CounterVec
	tcpClose *prometheus.CounterVec
	rqTotal  *prometheus.CounterVec
	rqRetry  *prometheus.CounterVec
	rqTime   *prometheus.CounterVec
	cxFail   *prometheus.CounterVec
	// XDS holds the xDS client's metrics.
	XDS *XDS

	gen atomic.Pointer[generation] // replaced by Update
	mu  sync.Mutex                 // serialises handle-map copies and Update
}

// generation is what one snapshot's config says about label values, and the
// handles resolved under it. Only handles is replaced within a generation.
type generation struct {
	endpoints map[epKey]*endpointMeta               // immutable
	clusters  map[string]*clusterMeta               // immutable
	handles   atomic.Pointer[map[labelKey]*handles] // copy on write under Recorder.mu
	tcp       atomic.Pointer[map[labelKey]*tcpHandles]
}

type epKey struct{ cluster, addr string }

type endpointMeta struct{ workload, namespace, version string }

// clusterMeta is what the outbound side knows of a cluster's destination.
type clusterMeta struct {
	service   string // destination_service
	principal string // destination_principal: the one SPIFFE ID the cluster's TLS accepts
	tls       bool   // the cluster originates TLS: this proxy presents its own ID
}

// labelKey is every input a handle's label values are computed from (with the
// generation), so a cached handle is right for every stream with the same key.
type labelKey struct {
	inbound  bool
	cluster  string
	vhost    string // inbound: destination_service
	endpoint *endpointMeta
	peer     string
	mtls     bool
	flags    stream.Flags
	code     int
	grpc     int
}

// handles are one label combination's bound metrics.
type handles struct {
	requests prometheus.Counter
	duration prometheus.Observer
	reqSize  prometheus.Observer
	respSize prometheus.Observer
	cluster  *clusterHandles // nil when the stream reached no cluster
}

type clusterHandles struct {
	rqTotal, rqRetry, rqTimeout, cxFail prometheus.Counter
}

type tcpHandles struct {
	sent, recv, opened, closed prometheus.Counter
	cluster                    *clusterHandles
}

// New registers the metrics in opts.Registry (or a new registry).
func New(opts Options) *Recorder {
	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	hist := func(name, help string, b []float64) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: b}, httpLabels)
	}
	counter := func(name, help string, labels []string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	cl := []string{"cluster_name"}
	r := &Recorder{
		self:     opts,
		reg:      reg,
		requests: counter("istio_requests_total", "Requests, counted when they end.", httpLabels),
		duration: hist("istio_request_duration_milliseconds", "Request duration: first request byte to last response byte.", durationBuckets),
		reqSize:  hist("istio_request_bytes", "Request body sizes.", sizeBuckets),
		respSize: hist("istio_response_bytes", "Response body sizes.", sizeBuckets),
		tcpSent:  counter("istio_tcp_sent_bytes_total", "Bytes sent to the downstream of TCP connections.", peerLabels),
		tcpRecv:  counter("istio_tcp_received_bytes_total", "Bytes received from the downstream of TCP connections.", peerLabels),
		tcpOpen:  counter("istio_tcp_connections_opened_total", "TCP connections proxied to an upstream.", peerLabels),
		tcpClose: counter("istio_tcp_connections_closed_total", "TCP connections closed after they were opened.", peerLabels),
		rqTotal:  counter("envoy_cluster_upstream_rq_total", "Upstream request attempts (HTTP) or connect attempts (TCP).", cl),
		rqRetry:  counter("envoy_cluster_upstream_rq_retry", "Upstream retries (after connect failures).", cl),
		rqTime:   counter("envoy_cluster_upstream_rq_timeout", "Upstream requests that timed out.", cl),
		cxFail:   counter("envoy_cluster_upstream_cx_connect_fail", "Upstream connects that failed.", cl),
		XDS:      newXDS(),
	}
	reg.MustRegister(r.requests, r.duration, r.reqSize, r.respSize, r.tcpSent, r.tcpRecv, r.tcpOpen, r.tcpClose,
		r.rqTotal, r.rqRetry, r.rqTime, r.cxFail)
	r.XDS.register(reg)
	r.Update(nil)
	return r
}

// Gatherer returns the registry the metrics are in.
func (r *Recorder) Gatherer() prometheus.Gatherer { return r.reg }

// Handler serves the metrics in the Prometheus exposition format.
func (r *Recorder) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{})
}

// Update takes the label-relevant config of a snapshot being applied:
// endpoint metadata and cluster destinations. Streams observed afterwards
// resolve their labels under it.
func (r *Recorder) Update(snap *config.Snapshot) {
	g := &generation{endpoints: map[epKey]*endpointMeta{}, clusters: map[string]*clusterMeta{}}
	if snap != nil {
		for name, c := range snap.Clusters {
			g.clusters[name] = newClusterMeta(c)
			for _, e := range c.Endpoints {
				if e.Workload == "" && e.Namespace == "" && e.Version == "" {
					continue
				}
				g.endpoints[epKey{name, e.Address}] = &endpointMeta{e.Workload, e.Namespace, e.Version}
			}
		}
	}
	g.handles.Store(&map[labelKey]*handles{})
	g.tcp.Store(&map[labelKey]*tcpHandles{})
	r.mu.Lock()
	r.gen.Store(g)
	r.mu.Unlock()
}

func newClusterMeta(c *config.Cluster) *clusterMeta {
	m := &clusterMeta{service: unknown, principal: unknown, tls: c.TLS != nil}
	// outbound|<port>||<host> (docs/xds-conventions.md): Istio's
	// destination_service is the host.
	if parts := strings.Split(c.Name, "|"); len(parts) == 4 && parts[0] == "outbound" && parts[3] != "" {
		m.service = parts[3]
	}
	if c.TLS != nil && len(c.TLS.MatchSANs) == 1 && c.TLS.MatchSANs[0].Exact != "" {
		m.principal = c.TLS.MatchSANs[0].Exact
	}
	return m
}

// Observe records a finished HTTP stream.
func (r *Recorder) Observe(info *stream.Info) {
	g := r.gen.Load()
	k := g.key(info, true)
	h, ok := (*g.handles.Load())[k]
	if !ok {
		h = r.resolve(g, k)
	}
	h.requests.Inc()
	h.duration.Observe(float64(info.Duration) / 1e6)
	h.reqSize.Observe(float64(info.BytesReceived))
	h.respSize.Observe(float64(info.BytesSent))
	if c := h.cluster; c != nil && info.Attempts > 0 {
		c.rqTotal.Add(float64(info.Attempts))
		if info.Attempts > 1 {
			c.rqRetry.Add(float64(info.Attempts - 1))
		}
		if info.Flags&stream.UpstreamRequestTimeout != 0 {
			c.rqTimeout.Inc()
		}
		countConnectFails(c, info)
	}
}

// countConnectFails counts the connects of info's attempts that failed: all
// but the last, and the last too when the stream ended with UF.
func countConnectFails(c *clusterHandles, info *stream.Info) {
	n := info.Attempts - 1
	if info.Flags&stream.UpstreamConnectionFailure != 0 {
		n++
	}
	if n > 0 {
		c.cxFail.Add(float64(n))
	}
}

// TCPOpened records a TCP connection whose upstream connect succeeded.
func (r *Recorder) TCPOpened(info *stream.Info) {
	g := r.gen.Load()
	r.tcpHandles(g, info).opened.Inc()
}

// ObserveTCP records a finished TCP connection.
func (r *Recorder) ObserveTCP(info *stream.Info) {
	g := r.gen.Load()
	h := r.tcpHandles(g, info)
	if info.Flags&(stream.UpstreamConnectionFailure|stream.NoHealthyUpstream|stream.NoRoute|stream.RBACDenied) == 0 && info.Attempts > 0 {
		h.closed.Inc()
		h.sent.Add(float64(info.BytesSent))
		h.recv.Add(float64(info.BytesReceived))
	}
	if c := h.cluster; c != nil && info.Attempts > 0 {
		c.rqTotal.Add(float64(info.Attempts))
		if info.Attempts > 1 {
			c.rqRetry.Add(float64(info.Attempts - 1))
		}
		countConnectFails(c, info)
	}
}

func (r *Recorder) tcpHandles(g *generation, info *stream.Info) *tcpHandles {
	k := g.key(info, false)
	if h, ok := (*g.tcp.Load())[k]; ok {
		return h
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	m := *g.tcp.Load()
	if h, ok := m[k]; ok {
		return h
	}
	lv := r.labelValues(g, k)[:len(peerLabels)]
	h := &tcpHandles{
		sent:    r.tcpSent.WithLabelValues(lv...),
		recv:    r.tcpRecv.WithLabelValues(lv...),
		opened:  r.tcpOpen.WithLabelValues(lv...),
		closed:  r.tcpClose.WithLabelValues(lv...),
		cluster: r.clusterHandles(k.cluster),
	}
	publishWith(&g.tcp, m, k, h)
	return h
}

// key extracts the label inputs of info. Fields a label does not depend on
// are left zero so that they do not split the cache.
func (g *generation) key(info *stream.Info, http bool) labelKey {
	k := labelKey{inbound: info.Inbound, cluster: info.Cluster, flags: info.Flags}
	if http {
		k.code, k.grpc = info.ResponseCode, info.GRPCStatus
	}
	if info.Inbound {
		k.vhost = info.VirtualHost
		k.peer, k.mtls = info.PeerID, info.MTLS
	} else if info.UpstreamHost != "" && len(g.endpoints) > 0 {
		k.endpoint = g.endpoints[epKey{info.Cluster, info.UpstreamHost}]
	}
	return k
}

// resolve binds the handles of a label combination seen for the first time.
func (r *Recorder) resolve(g *generation, k labelKey) *handles {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := *g.handles.Load()
	if h, ok := m[k]; ok {
		return h
	}
	lv := r.labelValues(g, k)
	h := &handles{
		requests: r.requests.WithLabelValues(lv...),
		duration: r.duration.WithLabelValues(lv...),
		reqSize:  r.reqSize.WithLabelValues(lv...),
		respSize: r.respSize.WithLabelValues(lv...),
		cluster:  r.clusterHandles(k.cluster),
	}
	publishWith(&g.handles, m, k, h)
	return h
}

// publishWith stores a copy of m, the map p holds, with k set to v: readers
// keep loading the old map without locks. The caller holds Recorder.mu.
func publishWith[V any](p *atomic.Pointer[map[labelKey]V], m map[labelKey]V, k labelKey, v V) {
	next := make(map[labelKey]V, len(m)+1)
	maps.Copy(next, m)
	next[k] = v
	p.Store(&next)
}

func (r *Recorder) clusterHandles(name string) *clusterHandles {
	if name == "" {
		return nil
	}
	return &clusterHandles{
		rqTotal:   r.rqTotal.WithLabelValues(name),
		rqRetry:   r.rqRetry.WithLabelValues(name),
		rqTimeout: r.rqTime.WithLabelValues(name),
		cxFail:    r.cxFail.WithLabelValues(name),
	}
}

// labelValues computes httpLabels' values for k (the first len(peerLabels)
// are peerLabels').
func (r *Recorder) labelValues(g *generation, k labelKey) []string {
	self := r.self
	selfVersion := orUnknown(self.Version)
	var reporter, srcWL, srcNS, srcP, dstWL, dstNS, dstV, dstSvc, dstP, policy string
	if k.inbound {
		reporter = "destination"
		srcWL, srcNS, srcP = unknown, unknown, unknown
		if ns, sa, ok := spiffeNamespaceSA(k.peer); ok {
			// Without workload metadata from the peer, its service
			// account is the best name for the calling workload.
			srcWL, srcNS, srcP = sa, ns, k.peer
		}
		dstWL, dstNS, dstV = orUnknown(self.Workload), orUnknown(self.Namespace), selfVersion
		dstSvc = inboundService(k.vhost)
		dstP, policy = unknown, "none"
		if k.mtls {
			dstP, policy = orUnknown(self.Principal), "mutual_tls"
		}
	} else {
		reporter = "source"
		srcWL, srcNS, srcP = orUnknown(self.Workload), orUnknown(self.Namespace), unknown
		dstWL, dstNS, dstV, dstSvc, dstP = unknown, unknown, unknown, unknown, unknown
		if cm := g.clusters[k.cluster]; cm != nil {
			dstSvc, dstP = cm.service, cm.principal
			if cm.tls {
				srcP = orUnknown(self.Principal)
			}
		}
		if e := k.endpoint; e != nil {
			dstWL, dstNS, dstV = orUnknown(e.workload), orUnknown(e.namespace), orUnknown(e.version)
		}
		policy = unknown // Istio reports it on the destination side only
	}
	grpc := ""
	if k.grpc >= 0 {
		grpc = strconv.Itoa(k.grpc)
	}
	return []string{reporter, srcWL, srcNS, srcP, dstWL, dstNS, dstV, dstSvc, dstP, policy,
		k.flags.String(), strconv.Itoa(k.code), grpc}
}

// inboundService is destination_service on the inbound side: the virtual
// host's Service name without its port (docs/xds-conventions.md names them
// "<svc>.<ns>.svc.cluster.local:<port>"); unknown for the catch-alls.
func inboundService(vhost string) string {
	host, _, _ := strings.Cut(vhost, ":")
	if !strings.Contains(host, ".svc.") {
		return unknown
	}
	return host
}

// spiffeNamespaceSA splits spiffe://<td>/ns/<ns>/sa/<sa>.
func spiffeNamespaceSA(id string) (ns, sa string, ok bool) {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return "", "", false
	}
	_, path, _ := strings.Cut(rest, "/")
	parts := strings.Split(path, "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" || parts[1] == "" || parts[3] == "" {
		return "", "", false
	}
	return parts[1], parts[3], true
}

func orUnknown(s string) string {
	if s == "" {
		return unknown
	}
	return s
}
