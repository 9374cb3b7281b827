package dataplane

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/health"
	"github.com/tinymesh/tinymesh/dataplane/rbac"
	"github.com/tinymesh/tinymesh/dataplane/route"
	"github.com/tinymesh/tinymesh/dataplane/stats"
)

// Read-only views of the running proxy for the admin endpoint (/listeners,
// /clusters, /explain). They take the proxy's config mutex briefly and read the
// compiled state requests use; none of them is for the request path.

// ListenerStatus describes one running listener.
type ListenerStatus struct {
	Name         string `json:"name"`
	Address      string `json:"address"`       // as configured
	BoundAddress string `json:"bound_address"` // the socket's (differs for port 0)
	Direction    string `json:"direction"`     // inbound or outbound
	// TLS is "none", "required" (mTLS or TLS only) or "optional"
	// (PERMISSIVE: TLS and plaintext).
	TLS string `json:"tls"`
	// ClientCertificate is "required", "requested" or "none" (TLS only).
	ClientCertificate string   `json:"client_certificate,omitempty"`
	ALPN              []string `json:"alpn,omitempty"`
	// Filters is the filter chain, in Envoy's names.
	Filters []string `json:"filters"`
	// RouteConfig names the HTTP listener's route configuration; Cluster the
	// TCP listener's cluster.
	RouteConfig string `json:"route_config,omitempty"`
	Cluster     string `json:"cluster,omitempty"`
	// RBAC summarises the RBAC filter: action and policy names.
	RBAC string `json:"rbac,omitempty"`
}

// Listeners describes the running listeners, sorted by name.
func (p *Proxy) Listeners() []ListenerStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]ListenerStatus, 0, len(p.active))
	for _, a := range p.active {
		lc := a.cfg
		s := ListenerStatus{Name: lc.Name, Address: lc.Address, BoundAddress: a.l.BoundAddr().String(), Direction: lc.Direction.String(), TLS: "none"}
		if t := lc.TLS; t != nil {
			s.TLS = "required"
			if lc.TLSOptional {
				s.TLS = "optional"
			}
			s.ClientCertificate = "none"
			switch {
			case t.RequireClientCertificate:
				s.ClientCertificate = "required"
			case len(t.TrustedCA) > 0:
				s.ClientCertificate = "requested"
			}
			s.ALPN = t.ALPN
		}
		if lc.TLSOptional {
			s.Filters = append(s.Filters, "envoy.filters.listener.tls_inspector")
		}
		if h := lc.HTTP; h != nil {
			s.RouteConfig = h.RouteConfigName
			s.Filters = append(s.Filters, "envoy.filters.network.http_connection_manager")
			if h.RBAC != nil {
				s.Filters = append(s.Filters, "envoy.filters.http.rbac")
				s.RBAC = describeRBAC(h.RBAC.Rules)
			}
			s.Filters = append(s.Filters, "envoy.filters.http.router")
		} else if t := lc.TCP; t != nil {
			s.Cluster = t.Cluster
			if t.RBAC != nil {
				s.Filters = append(s.Filters, "envoy.filters.network.rbac")
				s.RBAC = describeRBAC(t.RBAC)
			}
			s.Filters = append(s.Filters, "envoy.filters.network.tcp_proxy")
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func describeRBAC(r *config.RBAC) string {
	if r == nil {
		return "no rules (allows all)"
	}
	names := make([]string, len(r.Policies))
	for i, pol := range r.Policies {
		names[i] = pol.Name
	}
	return fmt.Sprintf("%s policies [%s]", r.Action, strings.Join(names, ", "))
}

// ClusterStatus describes one cluster in force and its endpoints.
type ClusterStatus struct {
	Name      string           `json:"name"`
	Protocol  string           `json:"protocol"`
	TLS       bool             `json:"tls"`
	Endpoints []EndpointStatus `json:"endpoints"`
	// Circuit breakers (DEFAULT priority): thresholds, what is in use and
	// how often each overflowed.
	CircuitBreakers CircuitBreakerStatus `json:"circuit_breakers"`
	// OutlierDetection and HealthCheck say whether the features are on;
	// EjectionsEnforced counts ejections, HealthChecks the probe results.
	OutlierDetection  bool              `json:"outlier_detection"`
	EjectionsEnforced uint64            `json:"outlier_detection_ejections_total"`
	HealthCheck       bool              `json:"health_check"`
	HealthChecks      HealthCheckStatus `json:"health_check_stats"`
	// Panic: fewer endpoints are available than healthy_panic_threshold
	// asks, so requests go to all of them (Envoy's panic mode).
	Panic bool `json:"panic"`
}

// CircuitBreakerStatus is a cluster's circuit-breaker thresholds and state.
type CircuitBreakerStatus struct {
	MaxConnections     uint32 `json:"max_connections"`
	MaxPendingRequests uint32 `json:"max_pending_requests"`
	MaxRequests        uint32 `json:"max_requests"`
	MaxRetries         uint32 `json:"max_retries"`
	ConnectionsOpen    int64  `json:"cx_open"`
	RequestsActive     int64  `json:"rq_active"`
	RetriesActive      int64  `json:"rq_retry_active"`
	CxOverflow         uint64 `json:"upstream_cx_overflow"`
	RqOverflow         uint64 `json:"upstream_rq_pending_overflow"`
	RetryOverflow      uint64 `json:"upstream_rq_retry_overflow"`
}

// HealthCheckStatus counts a cluster's active health-check probes.
type HealthCheckStatus struct {
	Attempts  uint64 `json:"attempt"`
	Successes uint64 `json:"success"`
	Failures  uint64 `json:"failure"`
}

// EndpointStatus is one endpoint with its live counters.
type EndpointStatus struct {
	Address string `json:"address"`
	Weight  uint32 `json:"weight"`
	// Health is "unknown" when the cluster has neither active health checks
	// nor outlier detection (as the endpoints the control plane sent carry
	// no more than "healthy or unknown"); otherwise "healthy", "unhealthy"
	// (failing or not yet passing its active health check) or "ejected"
	// (outlier detection).
	Health string `json:"health"`
	// HealthFlags are Envoy's: "healthy", or flags like
	// "/failed_active_hc/pending_active_hc" and "/failed_outlier_check";
	// "unknown" as Health.
	HealthFlags string `json:"health_flags"`
	// Outlier is "not enabled", "ok" or "ejected"; Ejections counts the
	// endpoint's ejections and EjectionTimeLeftMs what is left of the
	// current one.
	Outlier            string `json:"outlier_detection"`
	Ejections          uint32 `json:"ejections,omitempty"`
	EjectionTimeLeftMs int64  `json:"ejection_time_left_ms,omitempty"`
	ActiveRequests     int64  `json:"rq_active"`
	TotalRequests      uint64 `json:"rq_total"`
	ActiveConnections  int64  `json:"cx_active"`
	ConnectFailures    uint64 `json:"cx_connect_fail"`
}

// Clusters describes the clusters in force, sorted by name, their endpoints
// in config order.
func (p *Proxy) Clusters() []ClusterStatus {
	p.mu.Lock()
	snap, ctbl := p.snap.Load(), p.ctbl
	p.mu.Unlock()
	if snap == nil {
		return []ClusterStatus{}
	}
	now := time.Now()
	out := make([]ClusterStatus, 0, len(snap.Clusters))
	for name, cc := range snap.Clusters {
		cs := ClusterStatus{Name: name, Protocol: cc.Protocol.String(), TLS: cc.TLS != nil, Endpoints: []EndpointStatus{}}
		c, ok := ctbl.Get(name)
		if ok {
			r := c.Upstream.Resilience()
			cs.CircuitBreakers = CircuitBreakerStatus{
				MaxConnections: r.Limits.MaxConnections, MaxPendingRequests: r.Limits.MaxPendingRequests,
				MaxRequests: r.Limits.MaxRequests, MaxRetries: r.Limits.MaxRetries,
				ConnectionsOpen: r.ConnectionsOpen, RequestsActive: r.RequestsActive, RetriesActive: r.RetriesActive,
				CxOverflow: r.CxOverflow, RqOverflow: r.RqOverflow, RetryOverflow: r.RetryOverflow,
			}
			cs.OutlierDetection, cs.EjectionsEnforced = r.OutlierDetection, r.EjectionsEnforced
			cs.HealthCheck = r.HealthCheck
			cs.HealthChecks = HealthCheckStatus{Attempts: r.HCAttempts, Successes: r.HCSuccesses, Failures: r.HCFailures}
			cs.Panic = r.Panic
		}
		for _, e := range cc.Endpoints {
			es := EndpointStatus{Address: e.Address, Weight: e.Weight, Health: "unknown", HealthFlags: "unknown", Outlier: "not enabled"}
			if ok {
				if st, ok := c.Upstream.EndpointStats(e.Address); ok {
					es.ActiveRequests, es.TotalRequests = st.ActiveRequests.Load(), st.TotalRequests.Load()
					es.ActiveConnections, es.ConnectFailures = st.ActiveConnections.Load(), st.ConnectFailures.Load()
					if cs.OutlierDetection || cs.HealthCheck {
						describeHealth(&es, &st.Health, cs.OutlierDetection, now)
					}
				}
			}
			cs.Endpoints = append(cs.Endpoints, es)
		}
		out = append(out, cs)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ClusterGauges sums cs per cluster for the envoy_cluster_* metrics
// (dataplane/stats): in-flight counts over the endpoints, membership, and the
// circuit-breaker, outlier and health-check counters.
func ClusterGauges(cs []ClusterStatus) []stats.ClusterGauges {
	out := make([]stats.ClusterGauges, 0, len(cs))
	for _, c := range cs {
		cb := c.CircuitBreakers
		g := stats.ClusterGauges{Name: c.Name,
			CxOverflow: cb.CxOverflow, RqOverflow: cb.RqOverflow, RetryOverflow: cb.RetryOverflow,
			CxOpen:           cb.MaxConnections > 0 && cb.ConnectionsOpen >= int64(cb.MaxConnections),
			RqOpen:           cb.MaxRequests > 0 && cb.RequestsActive >= int64(cb.MaxRequests),
			RetryOpen:        cb.MaxRetries > 0 && cb.RetriesActive >= int64(cb.MaxRetries),
			OutlierDetection: c.OutlierDetection, EjectionsEnforced: c.EjectionsEnforced,
			HealthCheck: c.HealthCheck, HCAttempts: c.HealthChecks.Attempts, HCSuccesses: c.HealthChecks.Successes, HCFailures: c.HealthChecks.Failures,
			MembershipTotal: len(c.Endpoints),
		}
		for _, e := range c.Endpoints {
			g.ActiveRequests += e.ActiveRequests
			g.ActiveConnections += e.ActiveConnections
			switch e.Health {
			case "ejected":
				g.EjectionsActive++
			case "healthy", "unknown":
				g.MembershipHealthy++
			}
		}
		out = append(out, g)
	}
	return out
}

// describeHealth fills in what active health checks and outlier detection
// know of an endpoint.
func describeHealth(es *EndpointStatus, h *health.Host, outlier bool, now time.Time) {
	es.HealthFlags = h.Flags()
	switch {
	case h.Ejected():
		es.Health = "ejected"
	case h.FailedActiveHC():
		es.Health = "unhealthy"
	default:
		es.Health = "healthy"
	}
	es.Ejections = h.Ejections()
	if outlier {
		es.Outlier = "ok"
		if h.Ejected() {
			es.Outlier = "ejected"
			es.EjectionTimeLeftMs = h.EjectedFor(now).Milliseconds()
		}
	}
}

// ExplainRequest is a request to explain: what the route explainer is asked.
type ExplainRequest struct {
	// Listener names the HTTP listener; empty means "outbound_http".
	Listener  string
	Method    string // default GET
	Authority string
	Path      string // default "/"; a query is ignored, as in routing
	Header    http.Header
	// Peer is the caller's SPIFFE ID for the RBAC decision ("" =
	// plaintext); Source its address (ip:port), for source IP rules.
	Peer   string
	Source string
}

// Explanation is the route explainer's answer. Fields are empty when the
// step before failed.
type Explanation struct {
	Listener    string `json:"listener"`
	RouteConfig string `json:"route_config"`
	// VirtualHost and how its domain matched.
	VirtualHost  string `json:"virtual_host,omitempty"`
	Domain       string `json:"domain,omitempty"`
	DomainReason string `json:"domain_reason,omitempty"`
	// Route, when one matched.
	Route *ExplainedRoute `json:"route,omitempty"`
	// Rejected: the routes of the virtual host tried before the match (all
	// of them when none matched) and why each did not match.
	Rejected []route.Rejection `json:"rejected_routes,omitempty"`
	// CloseDomains, when no virtual host answers: the nearest domains.
	CloseDomains []route.Rejection `json:"closest_domains,omitempty"`
	// Clusters are the weighted clusters of the route's action; the choice
	// between them is per request, in proportion to the weights.
	Clusters       []ExplainedCluster `json:"clusters,omitempty"`
	DirectResponse *int               `json:"direct_response_status,omitempty"`
	RBAC           *ExplainedRBAC     `json:"rbac,omitempty"`
	// Result summarises the outcome: "forward", "direct_response",
	// "no_route" (404), "rbac_denied" (403), "no_healthy_upstream" (503).
	Result string `json:"result"`
}

// ExplainedRoute is the route that matched.
type ExplainedRoute struct {
	Index int    `json:"index"`
	Name  string `json:"name"`
	Match string `json:"match"`
}

// ExplainedCluster is one weighted cluster of the route.
type ExplainedCluster struct {
	Name   string `json:"name"`
	Weight uint32 `json:"weight"`
	// Share is the weight as a fraction of the total, 0..1.
	Share float64 `json:"share"`
	// Known is false when the cluster is not in the config (requests to it
	// get 503).
	Known     bool     `json:"known"`
	Endpoints []string `json:"endpoints"`
	// Next is the endpoint round robin picks next (concurrent requests may
	// take it first); empty without endpoints.
	Next string `json:"next_endpoint,omitempty"`
}

// ExplainedRBAC is the RBAC decision for the explained request.
type ExplainedRBAC struct {
	Action   string `json:"action"`             // ALLOW or DENY
	Policies string `json:"policies,omitempty"` // the policies checked
	Allowed  bool   `json:"allowed"`
	// Policy is the policy that decided ("" when none matched).
	Policy    string `json:"matched_policy,omitempty"`
	Principal string `json:"principal"` // the peer it was decided for
}

// ErrNoListener is returned by Explain for an unknown or non-HTTP listener.
var ErrNoListener = errors.New("no such HTTP listener")

// Explain says which virtual host, route, clusters and endpoints the named
// HTTP listener would pick for req, and why, using the compiled route table,
// cluster table and RBAC filter that serve its requests.
func (p *Proxy) Explain(req ExplainRequest) (*Explanation, error) {
	name := req.Listener
	if name == "" {
		name = "outbound_http"
	}
	p.mu.Lock()
	a, ok := p.active[name]
	p.mu.Unlock()
	if !ok || a.http == nil {
		var names []string
		for _, l := range p.Listeners() {
			if l.RouteConfig != "" {
				names = append(names, l.Name)
			}
		}
		return nil, fmt.Errorf("listener %q: %w (HTTP listeners: %s)", name, ErrNoListener, strings.Join(names, ", "))
	}
	st := a.http.Load()
	out := &Explanation{Listener: name, RouteConfig: st.HCM.RouteConfigName}
	if req.Method == "" {
		req.Method = http.MethodGet
	}
	path, _, _ := strings.Cut(req.Path, "?")
	if path == "" {
		path = "/"
	}
	if req.Header == nil {
		req.Header = http.Header{}
	}
	if st.Routes == nil {
		out.Result = "no_route"
		return out, nil
	}
	rq := route.Request{Authority: req.Authority, Method: req.Method, Path: path, Header: req.Header}
	e := st.Routes.Explain(&rq)
	out.Rejected, out.CloseDomains = e.Rejected, e.CloseDomains
	var vc *config.VirtualHost
	var rc *config.Route
	if e.VirtualHost != nil {
		vc = e.VirtualHost.Config
		out.VirtualHost, out.Domain, out.DomainReason = vc.Name, e.Domain, e.DomainReason
	}
	if e.Route != nil {
		rc = e.Route.Config
		out.Route = &ExplainedRoute{Index: e.RouteIndex, Name: rc.Name, Match: route.DescribeMatch(rc.Match)}
	}
	// RBAC runs before the router, so a request without a route is checked too.
	if eng := st.RBAC.Engine(vc, rc); eng != nil {
		rr := rbac.Request{Principal: req.Peer, Method: req.Method, Authority: req.Authority, Path: path, RequestURI: req.Path, Scheme: "http", Header: req.Header}
		if req.Peer != "" {
			rr.Scheme = "https"
		}
		rr.Remote, _ = netip.ParseAddrPort(req.Source)
		if bound, err := netip.ParseAddrPort(a.l.BoundAddr().String()); err == nil {
			rr.Local = bound
		}
		allowed, policy := eng.Allowed(&rr)
		out.RBAC = &ExplainedRBAC{Action: eng.Action().String(), Policies: eng.Checked(), Allowed: allowed, Policy: policy, Principal: cmpOr(req.Peer, "(plaintext)")}
		if !allowed {
			out.Result = "rbac_denied"
		}
	}
	switch {
	case e.Route == nil:
		if out.Result == "" {
			out.Result = "no_route"
		}
		return out, nil
	case rc.DirectResponse != nil:
		status := rc.DirectResponse.Status
		out.DirectResponse = &status
	}
	if rc.Action != nil {
		var total uint64
		for _, wc := range rc.Action.Clusters {
			total += uint64(wc.Weight)
		}
		for _, wc := range rc.Action.Clusters {
			ec := ExplainedCluster{Name: wc.Name, Weight: wc.Weight, Endpoints: []string{}}
			if total > 0 {
				ec.Share = float64(wc.Weight) / float64(total)
			} else if len(rc.Action.Clusters) == 1 {
				ec.Share = 1 // a plain route may leave the weight unset
			}
			if c, ok := st.Clusters.Get(wc.Name); ok {
				ec.Known = true
				ec.Endpoints = slices.Clone(c.Picker.Addrs())
				ec.Next, _ = c.Peek()
			}
			out.Clusters = append(out.Clusters, ec)
		}
	}
	if out.Result == "" {
		switch {
		case out.DirectResponse != nil:
			out.Result = "direct_response"
		case len(out.Clusters) == 1 && len(out.Clusters[0].Endpoints) == 0:
			out.Result = "no_healthy_upstream"
		default:
			out.Result = "forward"
		}
	}
	return out, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
