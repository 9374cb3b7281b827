// Package cluster compiles a snapshot's clusters into what the request path needs
// (an endpoint picker and an upstream transport per cluster) and owns upstream
// transports across snapshots. Clusters with UpstreamTLS get transports that
// originate TLS (SNI, ALPN h2 or http/1.1, CA and SAN verification); their
// tls.Config is built once when the upstream is created, never per request,
// and takes the client certificate and trusted CA at each handshake from the
// upstream's current material, so a certificate rotation changes what new
// connections present and trust without closing pooled ones.
//
// Concurrency: a Table is immutable after Set.Build returns it and may be read from
// any goroutine. Set's methods are safe for concurrent use; Build and Prune are
// called by the proxy's single config goroutine, Acquire/Release by request
// goroutines (one atomic add each).
package cluster

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/cluster/h2"
	"github.com/tinymesh/tinymesh/dataplane/cluster/http1"
	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/health"
	"github.com/tinymesh/tinymesh/dataplane/lb"
)

// defaultConnectTimeout applies when a cluster has none (Envoy's default is 5s).
const defaultConnectTimeout = 5 * time.Second

// Cluster is the compiled form of one config.Cluster.
type Cluster struct {
	Name           string
	Protocol       config.Protocol
	ConnectTimeout time.Duration
	Picker         *lb.RoundRobin
	// Upstream is shared by every snapshot that has a cluster of this name and
	// protocol, so pooled connections survive config changes.
	Upstream *Upstream

	// material is the certificate material this snapshot has for the
	// cluster's TLS (nil without TLS); Prune puts it in force on Upstream.
	material *material
	// cfg is the cluster's config; Prune puts its circuit breakers and
	// health settings in force on Upstream. epHash identifies its endpoint
	// list, to tell whether the upstream's health-aware picker is for it.
	cfg    *config.Cluster
	epHash uint64
}

// Table maps cluster names to compiled clusters for one snapshot.
type Table struct {
	clusters map[string]*Cluster
}

// Get returns the named cluster; it does not allocate.
func (t *Table) Get(name string) (*Cluster, bool) {
	if t == nil {
		return nil, false
	}
	c, ok := t.clusters[name]
	return c, ok
}

// Upstream is a pooled HTTP client transport for one cluster identity (name and
// protocol). Request goroutines bracket each use with Acquire/Release so the Set
// can close it once the cluster is gone and its last user is done.
type Upstream struct {
	key key
	// transport pools the connections by the cluster's protocol: h2's
	// (h2c, or h2 over TLS) or http1's. Set at creation, read-only after.
	transport interface {
		http.RoundTripper
		CloseIdleConnections()
	}
	// Dialer makes plain TCP connections. Dedicated connections should use
	// DialContext (TCP proxying) or DialHTTP1 (upgrades), which add TLS when
	// the cluster has it.
	Dialer *net.Dialer

	// Set at creation, read-only after.
	tls      *tls.Config // nil: plain TCP
	tlsHTTP1 *tls.Config // tls offering only ALPN "http/1.1", for DialHTTP1
	tlsErr   error       // the cluster's TLS config did not compile; every dial fails
	log      *slog.Logger

	mat      atomic.Pointer[material] // certificate material in force; nil without TLS
	inflight atomic.Int64             // accessed atomically
	eps      endpoints                // per-endpoint counters (endpoint.go)
	removed  atomic.Bool              // set by Prune, cleared if the cluster comes back
	res      resilience               // circuit breakers, outlier detection, health checks (resilience.go)
}

// Acquire marks one in-flight use of the transport.
func (u *Upstream) Acquire() { u.inflight.Add(1) }

// Release ends a use begun with Acquire; the last user of a removed cluster
// closes its idle connections.
func (u *Upstream) Release() {
	if u.inflight.Add(-1) == 0 && u.removed.Load() {
		u.CloseIdleConnections()
	}
}

// RoundTrip sends req on the cluster's transport: HTTP/1.1 or HTTP/2 by
// the cluster's protocol.
func (u *Upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	return u.transport.RoundTrip(req)
}

// CloseIdleConnections closes the upstream's kept-alive connections.
func (u *Upstream) CloseIdleConnections() { u.transport.CloseIdleConnections() }

type key struct {
	name     string
	protocol config.Protocol
	timeout  time.Duration
	tls      [32]byte // tlsFingerprint; zero for plain TCP
	// badMaterial is the materialFingerprint of certificate material that
	// did not parse, so such a cluster gets its own failing upstream and the
	// one in force is left alone; zero otherwise.
	badMaterial [32]byte
}

// Set owns upstream transports keyed by stable identity across snapshots.
type Set struct {
	log *slog.Logger // set in New, read-only after

	mu        sync.Mutex
	upstreams map[key]*Upstream // guarded by mu
}

// Options configure a Set.
type Options struct {
	Logger *slog.Logger // nil discards logs (upstream TLS handshake failures)
}

// NewSet returns an empty Set that discards its logs.
func NewSet() *Set { return New(Options{}) }

// New returns an empty Set.
func New(opts Options) *Set {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Set{log: log, upstreams: make(map[key]*Upstream)}
}

// Build is Compile for callers that cannot fail: a cluster whose TLS config
// does not compile gets an upstream that fails every dial with that error.
func (s *Set) Build(snap *config.Snapshot) *Table {
	t, _ := s.Compile(snap)
	return t
}

// Compile compiles snap's clusters, reusing the upstream transport of any
// cluster whose name, protocol, connect timeout and TLS settings are unchanged.
// Certificate material (client certificate, trusted CA) may change without
// a new upstream: the new material is parsed here and put in force by Prune
// with the table that is published, so pooled connections survive a
// certificate rotation while new handshakes use the new material.
// It returns an error naming the first cluster (by name) whose TLS settings do
// not compile, with a table that is complete anyway (see Build). It does not
// retire anything: call Prune with the table that ends up published.
func (s *Set) Compile(snap *config.Snapshot) (*Table, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := &Table{clusters: make(map[string]*Cluster, len(snap.Clusters))}
	parsed := make(map[[32]byte]*material) // clusters share the same secrets
	var firstErr error
	var firstName string
	for name, c := range snap.Clusters {
		timeout := c.ConnectTimeout
		if timeout <= 0 {
			timeout = defaultConnectTimeout
		}
		k := key{name: name, protocol: c.Protocol, timeout: timeout, tls: tlsFingerprint(c.TLS)}
		var m *material
		if c.TLS != nil {
			var err error
			if m, err = s.materialLocked(k, c.TLS, parsed); err != nil {
				k.badMaterial = materialFingerprint(c.TLS)
				m = nil
				if _, ok := s.upstreams[k]; !ok {
					u := s.newUpstream(k, c.TLS, nil)
					u.tlsErr = err
					s.upstreams[k] = u
				}
			}
		}
		u, ok := s.upstreams[k]
		if !ok {
			u = s.newUpstream(k, c.TLS, m)
			s.upstreams[k] = u
		}
		if u.tlsErr != nil && (firstErr == nil || name < firstName) {
			firstErr, firstName = u.tlsErr, name
		}
		addrs := make([]string, len(c.Endpoints))
		for i, e := range c.Endpoints {
			addrs[i] = e.Address
		}
		u.eps.add(addrs)
		t.clusters[name] = &Cluster{
			Name:           name,
			Protocol:       c.Protocol,
			ConnectTimeout: timeout,
			Picker:         lb.NewRoundRobin(addrs),
			Upstream:       u,
			material:       m,
			cfg:            c,
			epHash:         addrsHash(addrs),
		}
	}
	if firstErr != nil {
		return t, fmt.Errorf("cluster %q: tls: %w", firstName, firstErr)
	}
	return t, nil
}

// Prune retires every upstream not used by live: it is forgotten by the Set and
// its connections are closed once its in-flight requests are done. It puts
// live's certificate material in force on the upstreams it keeps.
func (s *Set) Prune(live *Table) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if live != nil {
		for _, c := range live.clusters {
			if c.material != nil && c.Upstream.mat.Load() != c.material {
				c.Upstream.mat.Store(c.material)
			}
		}
	}
	for k, u := range s.upstreams {
		if c, ok := live.Get(k.name); ok && c.Upstream == u {
			keep := make(map[string]bool, c.Picker.Len())
			for _, a := range c.Picker.Addrs() {
				keep[a] = true
			}
			u.eps.retain(keep)
			u.configure(c)
			continue
		}
		delete(s.upstreams, k)
		u.stopHealth()
		u.removed.Store(true)
		if u.inflight.Load() == 0 {
			u.CloseIdleConnections()
		}
	}
}

// Close closes the idle connections of every upstream; call it after all
// listeners have stopped.
func (s *Set) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, u := range s.upstreams {
		u.stopHealth()
		u.removed.Store(true)
		u.CloseIdleConnections()
		delete(s.upstreams, k)
	}
}

// materialLocked returns the parsed certificate material of ut: the
// upstream's own when unchanged, one parsed earlier in this Compile, or a new
// parse.
func (s *Set) materialLocked(k key, ut *config.UpstreamTLS, parsed map[[32]byte]*material) (*material, error) {
	fp := materialFingerprint(ut)
	if u, ok := s.upstreams[k]; ok {
		if m := u.mat.Load(); m != nil && m.fp == fp {
			return m, nil
		}
	}
	if m, ok := parsed[fp]; ok {
		return m, nil
	}
	m, err := parseMaterial(ut)
	if err != nil {
		return nil, err
	}
	parsed[fp] = m
	return m, nil
}

func (s *Set) newUpstream(k key, ut *config.UpstreamTLS, m *material) *Upstream {
	d := &net.Dialer{Timeout: k.timeout, KeepAlive: 30 * time.Second}
	u := &Upstream{key: k, Dialer: d, log: s.log}
	u.res.outlier = health.NewOutlier(health.OutlierOptions{Changed: u.rebuild})
	u.mat.Store(m)
	if ut != nil {
		u.tls, u.tlsErr = clientTLS(ut, k.protocol, u.mat.Load)
		if u.tls != nil {
			u.tlsHTTP1 = u.tls.Clone()
			u.tlsHTTP1.NextProtos = []string{"http/1.1"}
		}
	}
	// Connections idle this long are closed, as with net/http's
	// IdleConnTimeout.
	const idleTimeout = 60 * time.Second
	if k.protocol != config.ProtocolH2C {
		u.transport = &http1.Transport{
			Dial:           u.DialContext,
			MaxIdlePerHost: 64,
			IdleTimeout:    idleTimeout,
			// Responses go back byte for byte: a bigger buffer only costs memory.
			ReadBufferSize:  16 << 10,
			WriteBufferSize: 4 << 10, // a request head; bodies pass through
		}
		return u
	}
	// Prior-knowledge HTTP/2, which over TLS (done by DialContext: the
	// transport sees a plain connection) is exactly h2 negotiated by ALPN:
	// one connection multiplexes all streams to an endpoint.
	u.transport = &h2.Transport{Dial: u.DialContext, IdleTimeout: idleTimeout}
	return u
}
