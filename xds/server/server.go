// Package server is the control plane's xDS server: one gRPC server serving ADS in
// both variants (state-of-the-world and delta, plus the per-type services) from a
// go-control-plane SnapshotCache keyed by node ID.
//
// Proxies register themselves: the first request on a stream carries the node,
// whose metadata (docs/xds-conventions.md) becomes a mesh.Workload; its
// INBOUND_ADDR is an endpoint of every Service selecting it until EndpointGrace
// after its last stream closes (a reconnect within the grace keeps it), or at
// once when the proxy half-closed its stream, which is how it says it is leaving.
//
// Two rules keep traffic flowing while proxies come and go. A new proxy's
// endpoint is only published once it is ready: it has ACKed every resource type
// of its snapshot, and since a proxy applies a complete configuration before it
// ACKs the response that completed it, its inbound listener is then bound. And
// after the control plane (re)starts, it knows none of the endpoints it served
// before, so for a warm-up of EndpointGrace it holds back snapshots from proxies
// that reconnect with a configuration (they keep serving it) while their peers
// reconnect and re-register; proxies starting afresh are served at once.
//
// Every change (a new model from SetModel, a workload joining or expiring, a new
// trust bundle or certificate) kicks one update goroutine, which debounces, then
// translates a snapshot for every known node, checks its consistency and sets it
// in the cache. Versions are content hashes per resource type, so an unchanged
// model pushes nothing.
//
// Sidecars also get SDS Secrets (docs/identity.md): ROOTCA, the trust bundle from
// SetTrustBundle, and default, the chain SetCertificate recorded for the node. A
// node with a default secret is only ready once it has ACKed its Secrets too; a
// node without one (no identity yet, or one from the SPIFFE Workload API, which
// does not subscribe to Secrets) is ready on the other types alone.
//
// The server also keeps each connected node's xDS status (status.go: versions
// sent and ACKed per type, the last NACK; Status, served by the controlplane at
// /debug/status) and Prometheus metrics (metrics.go, registered on
// Options.Registerer): pushes, NACKs, connected proxies and push latency.
//
// Concurrency: SetModel and the gRPC callbacks may run on any goroutine; they only
// touch state under mu and kick the update loop, which alone writes snapshots.
// Close stops the gRPC server, the loop and the grace timers, and waits for them.
package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	gcplog "github.com/envoyproxy/go-control-plane/pkg/log"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/tinymesh/tinymesh/xds/mesh"
	"github.com/tinymesh/tinymesh/xds/translate"
)

// Options configure a Server.
type Options struct {
	// EndpointGrace is how long a workload stays registered after its last
	// stream closes without a half-close, and how long the warm-up after New
	// lasts; 0 means 10 s, negative means remove at once (and no warm-up).
	EndpointGrace time.Duration
	// Debounce is how long the update loop waits for more changes before it
	// recomputes; 0 means 50 ms.
	Debounce time.Duration
	// Logger may be nil.
	Logger *slog.Logger
	// TrustDomain is the mesh's SPIFFE trust domain; empty means
	// identity.DefaultTrustDomain.
	TrustDomain string
	// RootNamespace holds mesh-wide PeerAuthentications; empty means
	// mesh.DefaultRootNamespace.
	RootNamespace string
	// Registerer, if set, gets the server's Prometheus collectors
	// (metrics.go); New panics if they are already registered there.
	Registerer prometheus.Registerer
}

// Server serves xDS. Create it with New, feed it models with SetModel, start it
// with Serve and stop it with Close.
type Server struct {
	// set in New, read-only after
	opts    Options
	log     *slog.Logger
	metrics *metrics
	cache   cachev3.SnapshotCache
	grpc    *grpc.Server
	ctx     context.Context
	cancel  context.CancelFunc
	kick    chan struct{} // capacity 1: a pending update
	done    chan struct{} // closed when the update loop exits
	// warmUntil ends the warm-up after start; warmTimer kicks the loop then.
	warmUntil time.Time
	warmTimer *time.Timer

	// accessed atomically: when the first change since the last recompute
	// happened (unix nanoseconds, 0 for none), the start of push latency.
	changedAt atomic.Int64

	mu      sync.Mutex // guards the fields below
	model   *mesh.Model
	nodes   map[string]*nodeState // by node ID
	streams map[streamKey]string  // open stream -> node ID
	leaves  map[streamKey]*leave  // open stream -> its half-close flag
	closed  bool
	// Identity material for SDS (docs/identity.md): the trust bundle every
	// proxy gets as ROOTCA, and each node's latest issued chain as default.
	trustBundle []byte            // PEM
	issued      map[string][]byte // node ID -> PEM chain, leaf first

	// owned by the update loop
	versions map[string]string // node ID -> combined version last set
	noCert   map[string]bool   // node ID -> "no certificate yet" logged
}

// nodeState is a registered node. Guarded by Server.mu.
type nodeState struct {
	w       mesh.Workload
	streams int
	grace   *time.Timer // pending removal, while streams == 0
	gen     uint64      // bumped on every (re)connect, so a stale timer does nothing
	// ready: the proxy serves its configuration, so its endpoint is published.
	ready bool
	// warm: it reconnected with a configuration during the warm-up.
	warm bool
	// need holds the types of its latest snapshot that have resources (set by
	// the update loop before SetSnapshot); acked the types it has ACKed.
	need  []string
	acked map[string]bool
	// Status (status.go): the variant of its latest stream, what was sent and
	// ACKed per type, its last NACK, and the changes whose snapshot it has not
	// ACKed yet (for push latency).
	delta    bool
	types    map[string]*typeState
	lastNACK *NACK
	pending  []pendingChange
}

// streamKey tells SotW and delta streams apart: their IDs come from separate
// counters.
type streamKey struct {
	delta bool
	id    int64
}

// New returns a server and starts its update loop; Close stops it.
func New(opts Options) *Server {
	if opts.EndpointGrace == 0 {
		opts.EndpointGrace = 10 * time.Second
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 50 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts:     opts,
		log:      opts.Logger,
		metrics:  newMetrics(),
		ctx:      ctx,
		cancel:   cancel,
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		nodes:    map[string]*nodeState{},
		streams:  map[streamKey]string{},
		leaves:   map[streamKey]*leave{},
		versions: map[string]string{},
		noCert:   map[string]bool{},
		issued:   map[string][]byte{},
	}
	if opts.EndpointGrace > 0 {
		s.warmUntil = time.Now().Add(opts.EndpointGrace)
		s.warmTimer = time.AfterFunc(opts.EndpointGrace, s.trigger)
	}
	// ads=false although every stream is ADS: in ADS mode the cache answers a
	// request only if it names every resource of that type in the snapshot, and
	// gRPC's xDS client (and a proxy that watches a subset) names only the
	// listeners, routes and clusters it uses, so it would never get an answer.
	// Snapshots are internally consistent, so ordering is not needed for safety.
	s.cache = cachev3.NewSnapshotCache(false, cachev3.IDHash{}, cacheLogger(opts.Logger))
	cb := serverv3.CallbackFuncs{
		StreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			s.opened(streamKey{false, id}, leaveOf(ctx))
			return nil
		},
		DeltaStreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			s.opened(streamKey{true, id}, leaveOf(ctx))
			return nil
		},
		StreamRequestFunc: func(id int64, req *discoveryv3.DiscoveryRequest) error {
			rejected, err := s.request(streamKey{false, id}, req.GetNode(), req.GetVersionInfo() != "", reply{
				typeURL: req.GetTypeUrl(), nonce: req.GetResponseNonce(), detail: req.GetErrorDetail(), version: req.GetVersionInfo()})
			if rejected != "" {
				// A SotW NACK carries the last version the proxy accepted, and the
				// cache answers any version but the snapshot's at once: the same
				// rejected response again, NACKed again, thousands of times a
				// second. Let the cache take the rejected version as the one the
				// proxy has, so it waits for the next snapshot. Delta streams
				// track resource versions and do not resend.
				req.VersionInfo = rejected
			}
			return err
		},
		StreamClosedFunc: func(id int64, _ *corev3.Node) { s.unregister(streamKey{false, id}) },
		StreamDeltaRequestFunc: func(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
			_, err := s.request(streamKey{true, id}, req.GetNode(), len(req.GetInitialResourceVersions()) > 0, reply{
				typeURL: req.GetTypeUrl(), nonce: req.GetResponseNonce(), detail: req.GetErrorDetail()})
			return err
		},
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) { s.unregister(streamKey{true, id}) },
		// Both response callbacks run just before the response is sent, so the
		// version is recorded before its ACK can arrive.
		StreamResponseFunc: func(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
			s.log.Debug("xDS response", "stream", id, "type", resp.GetTypeUrl(), "version", resp.GetVersionInfo(),
				"resources", len(resp.GetResources()))
			s.responded(streamKey{false, id}, resp.GetTypeUrl(), resp.GetVersionInfo(), resp.GetNonce())
		},
		StreamDeltaResponseFunc: func(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
			s.log.Debug("xDS delta response", "stream", id, "type", resp.GetTypeUrl(), "version", resp.GetSystemVersionInfo(),
				"resources", len(resp.GetResources()), "removed", len(resp.GetRemovedResources()))
			s.responded(streamKey{true, id}, resp.GetTypeUrl(), resp.GetSystemVersionInfo(), resp.GetNonce())
		},
	}
	xds := serverv3.NewServer(ctx, s.cache, cb)
	s.grpc = grpc.NewServer(
		// Proxies hold one ADS stream for their lifetime: ping idle connections so
		// dead peers are noticed, and let clients ping us as often as every 10 s.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxConcurrentStreams(1000),
	)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(s.grpc, adsServer{xds})
	listenerservice.RegisterListenerDiscoveryServiceServer(s.grpc, xds)
	routeservice.RegisterRouteDiscoveryServiceServer(s.grpc, xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(s.grpc, xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(s.grpc, xds)
	secretservice.RegisterSecretDiscoveryServiceServer(s.grpc, xds)
	if opts.Registerer != nil {
		s.metrics.register(opts.Registerer, s)
	}
	go s.loop()
	return s
}

// Serve serves gRPC on lis until Close; it returns nil after Close.
func (s *Server) Serve(lis net.Listener) error {
	if err := s.grpc.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve xDS: %w", err)
	}
	return nil
}

// Close ends all streams, stops the gRPC server, the update loop and the grace
// timers, and waits for the loop.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	if s.warmTimer != nil {
		s.warmTimer.Stop()
	}
	for _, n := range s.nodes {
		if n.grace != nil {
			n.grace.Stop()
		}
	}
	s.mu.Unlock()
	// Cancelling the xDS server's context ends every ADS stream, which lets
	// GracefulStop return; Stop is the backstop for stuck connections.
	s.cancel()
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		s.grpc.Stop()
		<-stopped
	}
	<-s.done
	return nil
}

// RegisterService adds a gRPC service (the CA's CertificateService) to the xDS
// port. Call it before Serve.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.grpc.RegisterService(desc, impl)
}

// SetTrustBundle replaces the PEM trust bundle served to every sidecar as the
// ROOTCA secret; the new one is pushed within Debounce.
func (s *Server) SetTrustBundle(pem []byte) {
	s.mu.Lock()
	s.trustBundle = slices.Clone(pem)
	s.mu.Unlock()
	s.trigger()
}

// SetCertificate records the PEM chain (leaf first) last issued to nodeID; it
// is pushed to that node as its default secret within Debounce. The node need not
// have connected yet (proxies get their certificate first); the chain is dropped
// when the node is removed.
func (s *Server) SetCertificate(nodeID string, chainPEM []byte) {
	s.mu.Lock()
	s.issued[nodeID] = slices.Clone(chainPEM)
	s.mu.Unlock()
	s.trigger()
}

// SetModel replaces the mesh model; m must not be modified afterwards.
func (s *Server) SetModel(m *mesh.Model) {
	s.mu.Lock()
	s.model = m
	s.mu.Unlock()
	s.trigger()
}

// Workloads returns the registered workloads (connected or within their grace),
// sorted by node ID.
func (s *Server) Workloads() []mesh.Workload {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.workloadsLocked()
}

func (s *Server) workloadsLocked() []mesh.Workload {
	ws := make([]mesh.Workload, 0, len(s.nodes))
	for _, n := range s.nodes {
		ws = append(ws, n.w)
	}
	slices.SortFunc(ws, func(a, b mesh.Workload) int { return strings.Compare(a.NodeID, b.NodeID) })
	return ws
}

func (s *Server) trigger() {
	s.changedAt.CompareAndSwap(0, time.Now().UnixNano())
	select {
	case s.kick <- struct{}{}:
	default: // an update is already pending; it will see the latest state
	}
}

// request handles every request: the first on a stream registers its node
// (later ones need not repeat it); ACKs move a new proxy towards ready, and
// ACKs and NACKs update its status. hasConfig says the proxy already holds a
// configuration (a reconnect). It returns the version a NACK rejected, if the
// NACK answers the latest response of its type.
func (s *Server) request(key streamKey, node *corev3.Node, hasConfig bool, r reply) (rejected string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.streams[key]
	if !ok {
		if id, err = s.registerLocked(key, node, hasConfig); err != nil {
			return "", err
		}
	}
	n := s.nodes[id]
	if n == nil {
		return "", nil
	}
	rejected = s.replyLocked(n, key, r)
	if r.nonce != "" && r.detail == nil && !n.ready {
		n.acked[r.typeURL] = true
		s.checkReadyLocked(n)
	}
	return rejected, nil
}

func (s *Server) registerLocked(key streamKey, node *corev3.Node, hasConfig bool) (string, error) {
	if node == nil {
		return "", status.Error(codes.InvalidArgument, "first xDS request on a stream must carry the node")
	}
	w, err := translate.WorkloadFromNode(node)
	if err != nil {
		s.log.Warn("rejecting xDS stream", "node", node.GetId(), "err", err)
		return "", status.Error(codes.InvalidArgument, err.Error())
	}
	n := s.nodes[w.NodeID]
	if n == nil {
		n = &nodeState{acked: map[string]bool{}}
		s.nodes[w.NodeID] = n
		s.log.Info("workload registered", "node", w.NodeID, "workload", w.Name, "namespace", w.Namespace,
			"inbound", w.InboundAddr, "proxyless", w.Proxyless(), "reconnect", hasConfig)
	}
	if n.grace != nil {
		n.grace.Stop()
		n.grace = nil
	}
	if n.streams == 0 {
		// A new stream starts a new exchange: nothing is sent on it yet.
		n.types = map[string]*typeState{}
		n.pending = nil
	}
	n.delta = key.delta
	if hasConfig {
		// It serves the configuration it has: publish it now, and during the
		// warm-up leave that configuration alone until its peers are back.
		n.ready = true
		n.warm = n.warm || time.Now().Before(s.warmUntil)
	}
	n.w = w
	n.streams++
	n.gen++
	s.streams[key] = w.NodeID
	s.trigger()
	return w.NodeID, nil
}

// checkReadyLocked marks n ready once it has ACKed every type its snapshot has.
func (s *Server) checkReadyLocked(n *nodeState) {
	if n.ready || len(n.need) == 0 {
		return
	}
	for _, t := range n.need {
		if !n.acked[t] {
			return
		}
	}
	n.ready = true
	if n.w.InboundAddr != "" {
		s.log.Info("workload ready", "node", n.w.NodeID, "inbound", n.w.InboundAddr)
		s.trigger() // publish its endpoint
	}
}

// opened records a new stream's half-close flag (nil for the per-type services).
func (s *Server) opened(key streamKey, l *leave) {
	if l == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leaves[key] = l
}

// unregister forgets a closed stream; a node's last stream closing starts its
// grace timer, or removes it at once when the proxy half-closed (it is leaving).
func (s *Server) unregister(key streamKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.leaves[key]
	delete(s.leaves, key)
	id, ok := s.streams[key]
	if !ok {
		return
	}
	delete(s.streams, key)
	n := s.nodes[id]
	n.streams--
	if n.streams > 0 || s.closed {
		return
	}
	gen := n.gen
	if s.opts.EndpointGrace < 0 || (l != nil && l.eof.Load()) {
		s.expireLocked(id, gen)
		return
	}
	n.grace = time.AfterFunc(s.opts.EndpointGrace, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.expireLocked(id, gen)
	})
}

func (s *Server) expireLocked(id string, gen uint64) {
	n := s.nodes[id]
	if n == nil || n.streams > 0 || n.gen != gen || s.closed {
		return // reconnected (or shutting down) since the timer was set
	}
	delete(s.nodes, id)
	delete(s.issued, id)
	s.log.Info("workload removed", "node", id)
	s.trigger()
}

// loop is the single writer of snapshots: it waits for a kick, lets a burst of
// changes settle for Debounce, then recomputes from the latest state.
func (s *Server) loop() {
	defer close(s.done)
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.kick:
		}
		t.Reset(s.opts.Debounce)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		select {
		case <-s.kick: // absorbed: this recompute reads the latest state
		default:
		}
		s.recompute()
	}
}

func (s *Server) recompute() {
	type target struct {
		w    mesh.Workload
		hold bool
	}
	s.mu.Lock()
	model := s.model
	bundle := s.trustBundle // replaced, never modified, by SetTrustBundle
	issued := make(map[string][]byte, len(s.issued))
	for id, chain := range s.issued {
		issued[id] = chain
	}
	warming := time.Now().Before(s.warmUntil)
	var targets []target
	var endpoints []mesh.Workload // only ready workloads receive traffic
	registered := s.workloadsLocked()
	for _, w := range registered {
		n := s.nodes[w.NodeID]
		targets = append(targets, target{w: w, hold: warming && n.warm})
		if n.ready {
			endpoints = append(endpoints, w)
		}
	}
	s.mu.Unlock()

	changed := time.Now()
	if at := s.changedAt.Swap(0); at != 0 {
		changed = time.Unix(0, at)
	}
	live := make(map[string]bool, len(targets))
	for i := range targets {
		node := &targets[i].w
		live[node.NodeID] = true
		if targets[i].hold {
			continue // the warm-up timer kicks us again when it ends
		}
		res, err := translate.Translate(model, endpoints, node, translate.Options{
			TrustDomain:   s.opts.TrustDomain,
			RootNamespace: s.opts.RootNamespace,
			TrustBundle:   bundle,
			Certificate:   issued[node.NodeID],
			Registered:    registered,
		})
		if err == nil {
			err = translate.Consistent(res)
		}
		if err != nil {
			// Keep the node's last good snapshot.
			s.log.Error("cannot build snapshot", "node", node.NodeID, "err", err)
			continue
		}
		s.logMissingSecrets(node.NodeID, res)
		snap, version := Snapshot(res)
		if s.versions[node.NodeID] == version {
			continue
		}
		s.setNeed(node.NodeID, res)
		s.setPending(node.NodeID, changed, snap) // before its ACK can arrive
		if err := s.cache.SetSnapshot(s.ctx, node.NodeID, snap); err != nil {
			s.log.Error("cannot set snapshot", "node", node.NodeID, "err", err)
			continue
		}
		s.versions[node.NodeID] = version
		s.log.Debug("snapshot set", "node", node.NodeID, "version", version)
	}
	for id := range s.versions {
		if !live[id] {
			s.cache.ClearSnapshot(id)
			delete(s.versions, id)
		}
	}
	for id := range s.noCert {
		if !live[id] {
			delete(s.noCert, id)
		}
	}
}

// logMissingSecrets says once per node, at INFO, that its TLS listeners and
// clusters wait for a certificate it does not have yet (called by the update
// loop).
func (s *Server) logMissingSecrets(id string, res *translate.Resources) {
	missing := translate.MissingSecrets(res)
	if len(missing) == 0 {
		delete(s.noCert, id)
		return
	}
	if !s.noCert[id] {
		s.noCert[id] = true
		s.log.Info("node has no certificate yet", "node", id, "missing_secrets", missing)
	}
}

// setNeed records which types a node must ACK to be ready; it is set before the
// snapshot goes out so that no ACK can arrive first. Secrets count only when the
// node has its own certificate from us: a proxy with a Workload API identity
// never subscribes to them.
func (s *Server) setNeed(id string, res *translate.Resources) {
	hasCert := slices.ContainsFunc(res.Secrets, func(sec *tlsv3.Secret) bool { return sec.Name == translate.SecretCertificate })
	var need []string
	for typ, items := range res.ByType() {
		if len(items) > 0 && (typ != typeSecret || hasCert) {
			need = append(need, typ)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.nodes[id]; n != nil && !n.ready {
		n.need = need
		s.checkReadyLocked(n)
	}
}

// Snapshot builds a cache snapshot whose version per type is a hash of that
// type's resources (deterministically marshalled, in name order), and returns a
// combined version of all five.
func Snapshot(res *translate.Resources) (*cachev3.Snapshot, string) {
	snap := &cachev3.Snapshot{}
	all := sha256.New()
	byType := res.ByType()
	for _, typ := range []string{typeListener, typeRoute, typeCluster, typeEndpoint, typeSecret} {
		items := byType[typ]
		h := sha256.New()
		for _, r := range items {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
			if err != nil {
				panic(fmt.Sprintf("server: marshal %T: %v", r, err)) // generated types always marshal
			}
			fmt.Fprintf(h, "%d:", len(b))
			h.Write(b)
		}
		v := hex.EncodeToString(h.Sum(nil))[:16]
		all.Write([]byte(v))
		snap.Resources[cachev3.GetResponseType(typ)] = cachev3.NewResources(v, items)
	}
	return snap, hex.EncodeToString(all.Sum(nil))[:16]
}

func cacheLogger(l *slog.Logger) gcplog.Logger {
	return gcplog.LoggerFuncs{
		DebugFunc: func(f string, a ...any) { l.Debug(fmt.Sprintf(f, a...)) },
		InfoFunc:  func(f string, a ...any) { l.Debug(fmt.Sprintf(f, a...), "component", "go-control-plane") },
		WarnFunc:  func(f string, a ...any) { l.Warn(fmt.Sprintf(f, a...), "component", "go-control-plane") },
		ErrorFunc: func(f string, a ...any) { l.Error(fmt.Sprintf(f, a...), "component", "go-control-plane") },
	}
}
