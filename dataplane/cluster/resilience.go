package cluster

import (
	"context"
	"errors"
	"hash/fnv"
	"net"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/health"
	"github.com/tinymesh/tinymesh/dataplane/lb"
)

// ErrOverflow is wrapped by dials refused because the cluster has
// max_connections upstream connections open (Envoy's upstream_cx_overflow).
// Such a failure is not a connect failure: it is neither retried nor counted
// against the endpoint.
var ErrOverflow = errors.New("upstream circuit breaker overflow")

// resilience is an Upstream's circuit breakers, outlier detector and active
// health checks, and the picker over the endpoints they leave available.
// It lives as long as the Upstream, across snapshots.
type resilience struct {
	// Accessed atomically.
	limits        atomic.Pointer[config.CircuitBreakers]
	rqActive      atomic.Int64 // requests in flight (max_requests)
	cxOpen        atomic.Int64 // open connections (max_connections)
	retriesActive atomic.Int64 // retries in flight (max_retries)
	cxOverflow    atomic.Uint64
	rqOverflow    atomic.Uint64
	retryOverflow atomic.Uint64
	hcStats       health.CheckStats

	rr   atomic.Uint64        // round-robin position shared by successive pickers
	view atomic.Pointer[view] // nil: neither outlier detection nor health checks

	outlier *health.Outlier // set in newUpstream, read-only after

	viewMu sync.Mutex // serialises view rebuilds (outlier and checker goroutines)
	hosts  atomic.Pointer[hostList]

	// lifeMu guards the goroutines below and the health config in force;
	// it is held by the config goroutine (Prune, Close) and briefly by the
	// admin and stats readers, never by the request path or the goroutines.
	lifeMu sync.Mutex
	hc     *config.HealthCheck
	od     *config.OutlierDetection
	cancel context.CancelFunc
	wg     sync.WaitGroup
	prober *health.Prober
}

// hostList is the cluster's endpoints in config order with their health.
type hostList struct {
	addrs []string
	hosts []*health.Host
	hash  uint64
	panic float64 // healthy_panic_threshold, percent
}

// view is the picker requests use while some endpoints are unavailable.
type view struct {
	hash   uint64 // of the endpoint list it was built for
	picker *lb.RoundRobin
	panic  bool // too few available: every endpoint is picked (Envoy's panic mode)
	// available counts the endpoints not ejected and not failing health checks.
	available int
}

func addrsHash(addrs []string) uint64 {
	h := fnv.New64a()
	for _, a := range addrs {
		h.Write([]byte(a))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

// picker returns the picker for c's requests: the upstream's health-aware one
// when it was built for c's endpoint list, else c's plain round robin (no
// health features, or a snapshot whose endpoints are about to change). One
// atomic load; no locks, no allocation.
func (c *Cluster) picker() *lb.RoundRobin {
	if u := c.Upstream; u != nil {
		if v := u.res.view.Load(); v != nil && v.hash == c.epHash {
			return v.picker
		}
	}
	return c.Picker
}

// Pick returns the next endpoint for a request or connection, skipping
// endpoints that are ejected or fail their health check unless too few are
// left (panic mode); false when there is none.
func (c *Cluster) Pick() (string, bool) { return c.picker().Pick() }

// PickExcept is Pick avoiding the endpoints in skip where it can (retries).
func (c *Cluster) PickExcept(skip []string) (string, bool) { return c.picker().PickExcept(skip) }

// Peek returns the endpoint the next Pick would return (admin explainer).
func (c *Cluster) Peek() (string, bool) { return c.picker().Peek() }

// BeginRequest admits one request under max_requests; false means the
// circuit breaker is open: answer 503 with flag UO and do not send it.
// Call EndRequest when an admitted request is done.
func (u *Upstream) BeginRequest() bool {
	lim := u.limits()
	if u.res.rqActive.Add(1) > int64(lim.MaxRequests) {
		u.res.rqActive.Add(-1)
		u.res.rqOverflow.Add(1)
		return false
	}
	return true
}

// EndRequest ends a request admitted by BeginRequest.
func (u *Upstream) EndRequest() { u.res.rqActive.Add(-1) }

// BeginRetry admits one retry under max_retries; false means it must not be
// attempted (Envoy's upstream_rq_retry_overflow). Call EndRetry after an
// admitted retry's attempt.
func (u *Upstream) BeginRetry() bool {
	lim := u.limits()
	if u.res.retriesActive.Add(1) > int64(lim.MaxRetries) {
		u.res.retriesActive.Add(-1)
		u.res.retryOverflow.Add(1)
		return false
	}
	return true
}

// EndRetry ends a retry admitted by BeginRetry.
func (u *Upstream) EndRetry() { u.res.retriesActive.Add(-1) }

func (u *Upstream) limits() *config.CircuitBreakers {
	if l := u.res.limits.Load(); l != nil {
		return l
	}
	return defaultLimits
}

var defaultLimits = config.DefaultCircuitBreakers()

// reserveConn takes one of max_connections for a dial, or counts an overflow.
func (u *Upstream) reserveConn(network, addr string) error {
	if u.res.cxOpen.Add(1) > int64(u.limits().MaxConnections) {
		u.res.cxOpen.Add(-1)
		u.res.cxOverflow.Add(1)
		return &net.OpError{Op: "dial", Net: network, Err: ErrOverflow}
	}
	return nil
}

// ObserveResponse feeds an upstream response status from ep to outlier
// detection. It costs two atomic loads for a host that is fine.
func (u *Upstream) ObserveResponse(ep *EndpointStats, status int) {
	if ep != nil && u.res.outlier.Enabled() {
		u.res.outlier.Response(&ep.Health, status)
	}
}

// ObserveFailure feeds a locally originated failure of a request sent to ep
// (timeout or reset before a response) to outlier detection; connect
// failures are fed by the dialer itself.
func (u *Upstream) ObserveFailure(ep *EndpointStats) {
	if ep != nil && u.res.outlier.Enabled() {
		u.res.outlier.GatewayFailure(&ep.Health)
	}
}

// ObserveConnect feeds a successful TCP-proxy connect to ep to outlier
// detection (Envoy counts it as a success for TCP).
func (u *Upstream) ObserveConnect(ep *EndpointStats) {
	if ep != nil && u.res.outlier.Enabled() {
		u.res.outlier.Success(&ep.Health)
	}
}

// rebuild publishes a picker over the available endpoints; callers hold no
// lock of the upstream except, for the outlier detector, its own.
func (u *Upstream) rebuild() {
	u.res.viewMu.Lock()
	defer u.res.viewMu.Unlock()
	hl := u.res.hosts.Load()
	if hl == nil {
		u.res.view.Store(nil)
		return
	}
	avail := make([]string, 0, len(hl.addrs))
	for i, h := range hl.hosts {
		if h.Available() {
			avail = append(avail, hl.addrs[i])
		}
	}
	v := &view{hash: hl.hash, available: len(avail)}
	// Envoy's panic mode: below healthy_panic_threshold percent of
	// available endpoints, load goes to all of them, on the grounds that an
	// overloaded healthy remainder fails worse than a few bad endpoints.
	// A threshold of 0 turns it off (no available endpoint: 503 UH).
	if float64(len(avail))*100 < hl.panic*float64(len(hl.addrs)) {
		v.panic = true
		avail = hl.addrs
	}
	v.picker = lb.NewRoundRobinShared(avail, &u.res.rr)
	u.res.view.Store(v)
}

// configure puts c's circuit breakers, outlier detection and health check in
// force over its endpoints (the published table's cluster). Called by Prune
// on the config goroutine.
func (u *Upstream) configure(c *Cluster) {
	cfg := c.cfg
	lim := cfg.CircuitBreakers
	if lim == nil {
		lim = defaultLimits
	}
	if cur := u.res.limits.Load(); cur == nil || *cur != *lim {
		u.res.limits.Store(lim)
	}
	r := &u.res
	r.lifeMu.Lock()
	defer r.lifeMu.Unlock()
	if cfg.OutlierDetection == nil && cfg.HealthCheck == nil {
		u.stopHealthLocked()
		if r.od != nil {
			r.outlier.Configure(nil, nil)
		}
		r.od, r.hc = nil, nil
		r.hosts.Store(nil)
		u.rebuild()
		return
	}
	addrs := c.Picker.Addrs()
	hosts := make([]*health.Host, len(addrs))
	for i, a := range addrs {
		hosts[i] = &u.Endpoint(a).Health
	}
	old := r.hosts.Load()
	hl := &hostList{addrs: addrs, hosts: hosts, hash: c.epHash, panic: cfg.HealthyPanicThreshold}
	sameHosts := old != nil && slices.Equal(old.addrs, addrs)
	restart := !sameHosts || !reflect.DeepEqual(r.hc, cfg.HealthCheck) || !reflect.DeepEqual(r.od, cfg.OutlierDetection)
	if restart {
		u.stopHealthLocked()
	}
	// Hosts new to health checking start unhealthy; with checks turned
	// off, they are all released.
	for i, h := range hosts {
		switch {
		case cfg.HealthCheck != nil && (r.hc == nil || old == nil || !slices.Contains(old.addrs, addrs[i])):
			health.Start(h)
		case cfg.HealthCheck == nil && r.hc != nil:
			health.Stop(h)
		}
	}
	r.od, r.hc = cfg.OutlierDetection, cfg.HealthCheck
	r.hosts.Store(hl)
	r.outlier.Configure(cfg.OutlierDetection, hosts)
	u.rebuild()
	if restart {
		u.startHealthLocked(hl)
	}
}

// startHealthLocked starts the outlier sweep loop and one checker goroutine
// per endpoint, as configured. Caller holds lifeMu.
func (u *Upstream) startHealthLocked(hl *hostList) {
	r := &u.res
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	if od := r.od; od != nil {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			t := time.NewTicker(od.Interval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					r.outlier.Sweep()
				}
			}
		}()
	}
	if hc := r.hc; hc != nil {
		r.prober = health.NewProber(hc, u.key.name, u.key.protocol == config.ProtocolH2C, u.dialProbe)
		chk := health.NewChecker(hc, r.prober.Probe, u.rebuild, &r.hcStats)
		for i, h := range hl.hosts {
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				chk.Run(ctx, h, hl.addrs[i])
			}()
		}
	}
}

// stopHealthLocked stops the health goroutines and waits for them (a probe
// in progress ends at once: its context is cancelled). Caller holds lifeMu;
// the goroutines never take it.
func (u *Upstream) stopHealthLocked() {
	r := &u.res
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.wg.Wait()
	r.cancel = nil
	if r.prober != nil {
		r.prober.Close()
		r.prober = nil
	}
}

// stopHealth stops the health goroutines of a retired upstream.
func (u *Upstream) stopHealth() {
	u.res.lifeMu.Lock()
	defer u.res.lifeMu.Unlock()
	u.stopHealthLocked()
}

// dialProbe dials for a health check: the cluster's TLS, but neither the
// connection counters nor circuit breakers nor outlier detection see it.
func (u *Upstream) dialProbe(ctx context.Context, network, addr string) (net.Conn, error) {
	return u.dialWith(ctx, network, addr, u.tls, u.key.protocol.ALPN(), true)
}

// ResilienceStats is an upstream's circuit-breaker and health state at one
// moment, for stats and the admin page.
type ResilienceStats struct {
	Limits                                config.CircuitBreakers
	RequestsActive, ConnectionsOpen       int64
	RetriesActive                         int64
	CxOverflow, RqOverflow, RetryOverflow uint64
	OutlierDetection, HealthCheck         bool
	EjectionsEnforced                     uint64
	EjectionsActive                       int
	HCAttempts, HCSuccesses, HCFailures   uint64
	Panic                                 bool // too few available endpoints: picking from all
	MembershipHealthy, MembershipTotal    int
}

// Resilience returns the upstream's circuit-breaker and health counters.
func (u *Upstream) Resilience() ResilienceStats {
	r := &u.res
	s := ResilienceStats{
		Limits:            *u.limits(),
		RequestsActive:    r.rqActive.Load(),
		ConnectionsOpen:   r.cxOpen.Load(),
		RetriesActive:     r.retriesActive.Load(),
		CxOverflow:        r.cxOverflow.Load(),
		RqOverflow:        r.rqOverflow.Load(),
		RetryOverflow:     r.retryOverflow.Load(),
		EjectionsEnforced: r.outlier.EjectionsEnforced.Load(),
		// Outcomes before attempts (Record counts the attempt first), so a
		// scrape never shows more outcomes than attempts.
		HCSuccesses: r.hcStats.Successes.Load(),
		HCFailures:  r.hcStats.Failures.Load(),
	}
	s.HCAttempts = r.hcStats.Attempts.Load()
	r.lifeMu.Lock()
	s.OutlierDetection, s.HealthCheck = r.od != nil, r.hc != nil
	r.lifeMu.Unlock()
	if hl := r.hosts.Load(); hl != nil {
		s.MembershipTotal = len(hl.hosts)
		for _, h := range hl.hosts {
			if h.Available() {
				s.MembershipHealthy++
			}
			if h.Ejected() {
				s.EjectionsActive++
			}
		}
	}
	if v := r.view.Load(); v != nil {
		s.Panic = v.panic
	}
	return s
}

// HasHealth reports whether the endpoint health shown for this upstream
// comes from active checks or outlier detection (else it is "unknown").
func (u *Upstream) HasHealth() (outlier, checks bool) {
	u.res.lifeMu.Lock()
	defer u.res.lifeMu.Unlock()
	return u.res.od != nil, u.res.hc != nil
}
