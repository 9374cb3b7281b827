package cluster

import (
	"net"
	"sync"
	"sync/atomic"

	"github.com/tinymesh/tinymesh/dataplane/health"
)

// EndpointStats are the live counters of one endpoint of one upstream, for the
// admin /clusters page. They belong to the Upstream, so they survive config
// changes that keep the cluster. All fields are accessed atomically.
type EndpointStats struct {
	// ActiveRequests counts HTTP requests being forwarded to the endpoint
	// (Envoy's rq_active), from the upstream attempt until the response ended.
	ActiveRequests atomic.Int64
	// TotalRequests counts the requests (attempts) sent to it (rq_total).
	TotalRequests atomic.Uint64
	// ActiveConnections counts open upstream connections to it, pooled,
	// upgraded or TCP-proxied (cx_active).
	ActiveConnections atomic.Int64
	// ConnectFailures counts failed connects, TLS handshakes included
	// (cx_connect_fail).
	ConnectFailures atomic.Uint64
	// Health is the endpoint's outlier and active health-check state.
	Health health.Host
}

// BeginRequest counts one request to the endpoint; call EndRequest when it is
// done. Both are one atomic add each and tolerate a nil receiver.
func (e *EndpointStats) BeginRequest() {
	if e != nil {
		e.ActiveRequests.Add(1)
		e.TotalRequests.Add(1)
	}
}

// EndRequest ends a request begun with BeginRequest.
func (e *EndpointStats) EndRequest() {
	if e != nil {
		e.ActiveRequests.Add(-1)
	}
}

// endpoints holds an Upstream's EndpointStats by address, copy on write: the
// map is replaced, never modified, so Endpoint reads it without a lock.
type endpoints struct {
	m  atomic.Pointer[map[string]*EndpointStats]
	mu sync.Mutex // serialises writers
}

// Endpoint returns the counters of the endpoint at addr, creating them on the
// first use of an address the config did not list (Compile creates the listed
// ones, so the request path only reads). It does not allocate for a known
// address.
func (u *Upstream) Endpoint(addr string) *EndpointStats {
	if m := u.eps.m.Load(); m != nil {
		if e, ok := (*m)[addr]; ok {
			return e
		}
	}
	return u.eps.add([]string{addr})[addr]
}

// EndpointStats returns the counters of addr if the upstream has any, without
// creating them.
func (u *Upstream) EndpointStats(addr string) (*EndpointStats, bool) {
	if m := u.eps.m.Load(); m != nil {
		e, ok := (*m)[addr]
		return e, ok
	}
	return nil, false
}

// add makes sure addrs have counters and returns the map in force.
func (e *endpoints) add(addrs []string) map[string]*EndpointStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	var cur map[string]*EndpointStats
	if p := e.m.Load(); p != nil {
		cur = *p
	}
	missing := false
	for _, a := range addrs {
		if _, ok := cur[a]; !ok {
			missing = true
			break
		}
	}
	if !missing {
		return cur
	}
	next := make(map[string]*EndpointStats, len(cur)+len(addrs))
	for a, s := range cur {
		next[a] = s
	}
	for _, a := range addrs {
		if _, ok := next[a]; !ok {
			next[a] = new(EndpointStats)
		}
	}
	e.m.Store(&next)
	return next
}

// retain forgets the counters of addresses not in keep that have nothing in
// flight, so endpoints that left the cluster do not accumulate.
func (e *endpoints) retain(keep map[string]bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.m.Load()
	if p == nil {
		return
	}
	next := make(map[string]*EndpointStats, len(keep))
	for a, s := range *p {
		if keep[a] || s.ActiveRequests.Load() != 0 || s.ActiveConnections.Load() != 0 {
			next[a] = s
		}
	}
	if len(next) != len(*p) {
		e.m.Store(&next)
	}
}

// countedConn is an upstream connection counted in its endpoint's
// ActiveConnections until the first Close.
type countedConn struct {
	net.Conn
	ep     *EndpointStats
	open   *atomic.Int64 // the cluster's open connections (max_connections); nil for probes
	closed atomic.Bool
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.ep.ActiveConnections.Add(-1)
		if c.open != nil {
			c.open.Add(-1)
		}
	}
	return c.Conn.Close()
}

// CloseWrite half-closes the connection when the underlying one can (TCP and
// TLS connections can), so TCP proxying keeps propagating half-close.
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// NetConn returns the wrapped connection, as tls.Conn.NetConn does.
func (c *countedConn) NetConn() net.Conn { return c.Conn }

// counted wraps c; open, when not nil, already counts c and is decremented
// at Close.
func counted(c net.Conn, ep *EndpointStats, open *atomic.Int64) net.Conn {
	ep.ActiveConnections.Add(1)
	return &countedConn{Conn: c, ep: ep, open: open}
}
