// Package dataplane is the sidecar's traffic path: Proxy turns each config.Snapshot
// into running listeners (HTTP via httpproxy, TCP via tcpproxy), swapping compiled
// state atomically per listener so that requests in flight finish on the config
// they started with and no request fails because config changed.
//
// Concurrency: Apply and Close are serialised by a mutex and are meant to be
// called from one config goroutine (the xDS client); Ready and Snapshot may be
// called from any goroutine. Proxy owns the accept loops, connection goroutines
// and background drains it starts; Close waits for all of them.
package dataplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/accesslog"
	"github.com/tinymesh/tinymesh/dataplane/batchwrite"
	"github.com/tinymesh/tinymesh/dataplane/cluster"
	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/httpproxy"
	"github.com/tinymesh/tinymesh/dataplane/httpproxy/httpserver"
	"github.com/tinymesh/tinymesh/dataplane/listener"
	"github.com/tinymesh/tinymesh/dataplane/rbac"
	"github.com/tinymesh/tinymesh/dataplane/route"
	"github.com/tinymesh/tinymesh/dataplane/stats"
	"github.com/tinymesh/tinymesh/dataplane/stream"
	"github.com/tinymesh/tinymesh/dataplane/tcpproxy"
	"github.com/tinymesh/tinymesh/dataplane/tracing"
)

// DefaultDrainTimeout bounds draining of TCP listeners and of HTTP listeners whose
// config has no DrainTimeout.
const DefaultDrainTimeout = 10 * time.Second

// ErrClosed is returned by Apply after Close.
var ErrClosed = errors.New("dataplane: proxy closed")

// Options configure a Proxy.
type Options struct {
	Logger *slog.Logger // nil discards logs
	// DrainTimeout overrides DefaultDrainTimeout.
	DrainTimeout time.Duration
	// Stats records every finished stream; nil records nothing (the request
	// path then does no telemetry work at all).
	Stats *stats.Recorder
	// Tracer traces the HTTP requests of listeners whose HCM has no tracing
	// config (meshproxy --tracing-endpoint); nil: tracing off there. The
	// caller closes it after Close.
	Tracer *tracing.Tracer
	// TracingDefaults gives the tracers built from HCM tracing configs their
	// resource attributes (ServiceName, Namespace, NodeID); endpoint and
	// sampling come from the config. The Proxy owns those tracers.
	TracingDefaults tracing.Options
}

// Proxy runs the listeners of the latest applied snapshot.
type Proxy struct {
	// Set in New, read-only after.
	log          *slog.Logger
	drainTimeout time.Duration
	clusters     *cluster.Set
	stats        *stats.Recorder // nil: metrics off
	tracer       *tracing.Tracer // nil: tracing off
	tracers      *tracing.Set    // tracers of HCM tracing configs; closed by Close
	accessLogs   *accesslog.Set  // access log files; closed by Close

	// Accessed atomically.
	snap  atomic.Pointer[config.Snapshot]
	ready atomic.Bool
	// clustersNow is the cluster table in force, for the tracing exporters'
	// cluster dialer (tracing.go), which must not take mu.
	clustersNow atomic.Pointer[cluster.Table]

	drains sync.WaitGroup // background drains of removed listeners
	// base parents the drains' contexts; Close cancels it to cut drains that
	// would outlast its own deadline.
	base       context.Context
	cancelBase context.CancelFunc

	mu     sync.Mutex         // serialises Apply and Close
	active map[string]*active // by listener name; guarded by mu
	ctbl   *cluster.Table     // clusters in force; guarded by mu
	closed bool               // guarded by mu
	// traced has the tracers of the HCM tracing configs in force; guarded by mu.
	traced map[config.Tracing]*tracing.Tracer
}

// active is one running listener.
type active struct {
	cfg  *config.Listener
	l    *listener.Listener
	http *httpproxy.Handler // set for HTTP listeners
	tcp  *tcpproxy.Server   // set for TCP listeners
}

// New returns a Proxy with no listeners.
func New(opts Options) *Proxy {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	d := opts.DrainTimeout
	if d <= 0 {
		d = DefaultDrainTimeout
	}
	base, cancel := context.WithCancel(context.Background())
	p := &Proxy{log: log, drainTimeout: d, clusters: cluster.New(cluster.Options{Logger: log}), active: make(map[string]*active),
		base: base, cancelBase: cancel, stats: opts.Stats, tracer: opts.Tracer, accessLogs: accesslog.NewSet()}
	td := opts.TracingDefaults
	td.DialCluster = p.dialCluster // tracing.go: OTLP/gRPC to a cluster (envoy_grpc)
	p.tracers = tracing.NewSet(td)
	return p
}

// Ready reports whether a snapshot has been applied successfully.
func (p *Proxy) Ready() bool { return p.ready.Load() }

// Snapshot returns the snapshot in force, or nil before the first Apply.
func (p *Proxy) Snapshot() *config.Snapshot { return p.snap.Load() }

// Addr returns the bound address of the named listener, which differs from the
// configured one when that has port 0.
func (p *Proxy) Addr(name string) (net.Addr, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.active[name]
	if !ok {
		return nil, false
	}
	return a.l.BoundAddr(), true
}

func sameKind(a, b *config.Listener) bool { return (a.HTTP != nil) == (b.HTTP != nil) }

// Apply compiles snap and puts it in force. New listeners are bound before
// anything is published; if compiling or binding fails, Apply returns an error
// naming the listener and address and the previous config stays fully in force.
// Listeners that keep their name, kind and address keep their socket and get the
// new state atomically; removed ones (and ones that moved) drain in the
// background. snap must not be modified afterwards.
func (p *Proxy) Apply(snap *config.Snapshot) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if err := validate(snap); err != nil {
		return err
	}
	tables := make(map[string]*route.Table, len(snap.Routes))
	for name, rc := range snap.Routes {
		t, err := route.Compile(rc)
		if err != nil {
			return fmt.Errorf("snapshot %s: %w", snap.Version, err)
		}
		tables[name] = t
	}
	ctbl, err := p.clusters.Compile(snap)
	if err != nil {
		p.clusters.Prune(p.liveClustersLocked())
		return fmt.Errorf("snapshot %s: %w", snap.Version, err)
	}
	// Parse listener certificates once per snapshot, before anything binds.
	tlsCfgs := make(map[string]*listener.TLS, len(snap.Listeners))
	for _, lc := range snap.Listeners {
		c, err := listener.NewTLS(lc)
		if err != nil {
			p.clusters.Prune(p.liveClustersLocked())
			return fmt.Errorf("snapshot %s: listener %q: %w", snap.Version, lc.Name, err)
		}
		tlsCfgs[lc.Name] = c
	}
	logs := make(map[string]stream.Observer, len(snap.Listeners))
	for _, lc := range snap.Listeners {
		o, err := p.accessLoggers(lc)
		if err != nil {
			p.clusters.Prune(p.liveClustersLocked())
			return fmt.Errorf("snapshot %s: listener %q: %w", snap.Version, lc.Name, err)
		}
		logs[lc.Name] = o
	}

	// Decide which running listener, if any, each configured one keeps: the one
	// of the same name, address and kind, or else a listener that is going away
	// and has the same address and kind (a rename must not fight its
	// predecessor for the socket).
	keep := make(map[string]*active, len(snap.Listeners))
	for _, lc := range snap.Listeners {
		if old, ok := p.active[lc.Name]; ok && old.cfg.Address == lc.Address && sameKind(old.cfg, lc) {
			keep[lc.Name] = old
		}
	}
	kept := make(map[*active]bool, len(keep))
	for _, a := range keep {
		kept[a] = true
	}
	for _, lc := range snap.Listeners {
		if keep[lc.Name] != nil {
			continue
		}
		for _, old := range p.active {
			if !kept[old] && old.cfg.Address == lc.Address && sameKind(old.cfg, lc) && !named(snap, old.cfg.Name, old.cfg.Address) {
				keep[lc.Name], kept[old] = old, true
				break
			}
		}
	}

	// Bind every new socket first; nothing is published until all succeed.
	bound := make(map[string]net.Listener)
	for _, lc := range snap.Listeners {
		if keep[lc.Name] != nil {
			continue
		}
		ln, err := listener.Bind(lc.Name, lc.Address)
		if err != nil {
			for _, b := range bound {
				b.Close()
			}
			p.clusters.Prune(p.liveClustersLocked())
			return fmt.Errorf("snapshot %s: %w", snap.Version, err)
		}
		bound[lc.Name] = ln
	}

	// Publish.
	p.useTracersLocked(snap)
	if p.stats != nil {
		p.stats.Update(snap) // endpoint metadata for labels, before any stream sees snap
	}
	next := make(map[string]*active, len(snap.Listeners))
	for _, lc := range snap.Listeners {
		old := keep[lc.Name]
		if ln, isNew := bound[lc.Name]; isNew {
			next[lc.Name] = p.start(lc, ln, tlsCfgs[lc.Name], tables, ctbl, logs[lc.Name])
			continue
		}
		old.cfg = lc
		old.l.StoreTLS(tlsCfgs[lc.Name])
		if lc.HTTP != nil {
			old.http.Store(p.httpState(lc, tables, ctbl, logs[lc.Name]))
		} else {
			old.tcp.Store(p.tcpState(lc, ctbl, logs[lc.Name]))
		}
		next[lc.Name] = old
	}
	for _, a := range p.active {
		if !kept[a] {
			p.drainLocked(a)
		}
	}
	p.active = next
	p.ctbl = ctbl
	p.clustersNow.Store(ctbl)
	p.snap.Store(snap)
	p.clusters.Prune(ctbl)
	p.ready.Store(true)
	p.log.Info("config applied", "version", snap.Version, "listeners", len(snap.Listeners), "clusters", len(snap.Clusters))
	return nil
}

// liveClustersLocked returns the cluster table in force (nil before the first
// Apply, which prunes everything).
func (p *Proxy) liveClustersLocked() *cluster.Table { return p.ctbl }

// named reports whether snap has a listener called name at addr.
func named(snap *config.Snapshot, name, addr string) bool {
	for _, l := range snap.Listeners {
		if l.Name == name && l.Address == addr {
			return true
		}
	}
	return false
}

func validate(snap *config.Snapshot) error {
	if snap == nil {
		return errors.New("dataplane: nil snapshot")
	}
	names := make(map[string]bool, len(snap.Listeners))
	for _, l := range snap.Listeners {
		if names[l.Name] {
			return fmt.Errorf("snapshot %s: listener %q: duplicate name", snap.Version, l.Name)
		}
		names[l.Name] = true
		if (l.HTTP == nil) == (l.TCP == nil) {
			return fmt.Errorf("snapshot %s: listener %q: exactly one of HTTP and TCP must be set", snap.Version, l.Name)
		}
	}
	return nil
}

// accessLoggers compiles lc's access_log entries into one Observer (nil: none).
func (p *Proxy) accessLoggers(lc *config.Listener) (stream.Observer, error) {
	var cfgs []config.AccessLog
	if lc.HTTP != nil {
		cfgs = lc.HTTP.AccessLogs
	} else if lc.TCP != nil {
		cfgs = lc.TCP.AccessLogs
	}
	var obs []stream.Observer
	for _, c := range cfgs {
		l, err := p.accessLogs.New(c)
		if err != nil {
			return nil, err
		}
		obs = append(obs, l.Observe)
	}
	return stream.Observers(obs...), nil
}

func (p *Proxy) httpState(lc *config.Listener, tables map[string]*route.Table, ctbl *cluster.Table, logs stream.Observer) *httpproxy.State {
	t := tables[lc.HTTP.RouteConfigName]
	var rc *config.RouteConfig
	if t != nil {
		rc = t.Config
	}
	var obs []stream.Observer
	if p.stats != nil {
		obs = append(obs, p.stats.Observe)
	}
	obs = append(obs, logs)
	return &httpproxy.State{HCM: lc.HTTP, Direction: lc.Direction, Routes: t, Clusters: ctbl, RBAC: rbac.NewHTTP(lc.HTTP.RBAC, rc),
		Listener: lc.Name, Observe: stream.Observers(obs...), Tracer: p.tracerLocked(lc.HTTP)}
}

func (p *Proxy) tcpState(lc *config.Listener, ctbl *cluster.Table, logs stream.Observer) *tcpproxy.State {
	c, _ := ctbl.Get(lc.TCP.Cluster)
	st := &tcpproxy.State{Cluster: c, IdleTimeout: lc.TCP.IdleTimeout, RBAC: rbac.Compile(lc.TCP.RBAC),
		Listener: lc.Name, Inbound: lc.Direction == config.Inbound, Tracer: p.tcpTracerLocked(lc.TCP)}
	var obs []stream.Observer
	if p.stats != nil {
		obs = append(obs, p.stats.ObserveTCP)
		st.Opened = p.stats.TCPOpened
	}
	obs = append(obs, logs)
	st.Observe = stream.Observers(obs...)
	return st
}

func (p *Proxy) start(lc *config.Listener, ln net.Listener, tlsCfg *listener.TLS, tables map[string]*route.Table, ctbl *cluster.Table, logs stream.Observer) *active {
	log := p.log.With("listener", lc.Name)
	a := &active{cfg: lc}
	if lc.HTTP != nil {
		a.http = httpproxy.NewHandler(log, p.httpState(lc, tables, ctbl, logs))
		// HTTP/2 (from a peer sidecar or a gRPC app) flushes per frame
		// batch; coalesce those writes (TLS records included) per scheduling
		// round, once the connection turns out to speak HTTP/2 (the server
		// enables it). TCP listeners copy in large chunks and keep splice.
		ln = batchwrite.Listener(ln)
		a.l = listener.StartTLS(lc.Name, lc.Address, ln, tlsCfg, &httpServer{srv: httpproxy.NewServer(a.http, lc.HTTP, log), h: a.http}, p.log)
	} else {
		a.tcp = tcpproxy.New(log, p.tcpState(lc, ctbl, logs))
		a.l = listener.StartTLS(lc.Name, lc.Address, ln, tlsCfg, a.tcp, p.log)
	}
	log.Info("listener started", "addr", ln.Addr().String(), "direction", lc.Direction.String(), "tls", tlsMode(tlsCfg))
	return a
}

// tlsMode names a listener's TLS settings for logs.
func tlsMode(t *listener.TLS) string {
	switch {
	case t == nil:
		return "none"
	case t.Optional:
		return "optional"
	}
	return "required"
}

// drainLocked drains a removed listener in the background.
func (p *Proxy) drainLocked(a *active) {
	timeout := p.drainTimeout
	if a.cfg.HTTP != nil && a.cfg.HTTP.DrainTimeout > 0 {
		timeout = a.cfg.HTTP.DrainTimeout
	}
	ctx, cancel := context.WithTimeout(p.base, timeout)
	p.drains.Add(1)
	go func() {
		defer p.drains.Done()
		defer cancel()
		if err := a.l.Drain(ctx); err != nil {
			p.log.Warn("listener drain", "listener", a.cfg.Name, "err", err)
			return
		}
		p.log.Info("listener drained", "listener", a.cfg.Name, "addr", a.cfg.Address)
	}()
}

// Close stops every listener, letting open requests finish until ctx is done
// (listeners already draining are cut then too), waits for all goroutines and
// closes upstream connections. It returns ctx.Err() if it had to cut.
func (p *Proxy) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	dctx := ctx
	if _, ok := ctx.Deadline(); !ok {
		// Open WebSockets or TCP streams may never end by themselves.
		var cancel context.CancelFunc
		dctx, cancel = context.WithTimeout(ctx, p.drainTimeout)
		defer cancel()
	}
	stop := context.AfterFunc(dctx, p.cancelBase)
	for _, a := range p.active {
		p.drains.Add(1)
		go func() {
			defer p.drains.Done()
			a.l.Drain(dctx)
		}()
	}
	p.active = nil
	p.mu.Unlock()
	p.drains.Wait()
	stop()
	p.cancelBase()
	p.clusters.Close()
	p.accessLogs.Close() // after every stream has ended: flushes the files
	// Flushes queued spans; each export is bounded by the exporter's timeout.
	p.tracers.Close(context.Background())
	return ctx.Err()
}

// httpServer adapts an httpserver.Server and its Handler to listener.Server,
// adding upgraded (hijacked) connections, which the server stops tracking, to
// draining.
type httpServer struct {
	srv *httpserver.Server
	h   *httpproxy.Handler
}

func (s *httpServer) Serve(ln net.Listener) error { return httpproxy.Serve(s.srv, ln) }

func (s *httpServer) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	s.h.CloseUpgraded(ctx)
	return err
}

func (s *httpServer) Close() error {
	err := s.srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.h.CloseUpgraded(ctx)
	return err
}

// useTracersLocked puts the tracers of snap's HCM tracing configs in force
// (creating new ones, closing unused ones). A tracer that cannot be built is
// logged and its listeners run untraced: the config decoder has checked the
// endpoint, so this is not a reason to refuse the whole snapshot.
func (p *Proxy) useTracersLocked(snap *config.Snapshot) {
	var cfgs []config.Tracing
	for _, lc := range snap.Listeners {
		if lc.HTTP != nil && lc.HTTP.Tracing != nil {
			cfgs = append(cfgs, *lc.HTTP.Tracing)
		}
		if lc.TCP != nil && lc.TCP.Tracing != nil {
			cfgs = append(cfgs, *lc.TCP.Tracing)
		}
	}
	traced, errs := p.tracers.Use(cfgs)
	for _, err := range errs {
		p.log.Error("tracing config not applied", "version", snap.Version, "err", err)
	}
	p.traced = traced
}

// tracerLocked is the tracer of an HCM: its own tracing config's, else the
// proxy's default (nil: off).
func (p *Proxy) tracerLocked(hcm *config.HTTPConnectionManager) *tracing.Tracer {
	if hcm.Tracing != nil {
		return p.traced[*hcm.Tracing] // nil if it could not be built
	}
	return p.tracer
}
