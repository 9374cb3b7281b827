package client

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/tinymesh/tinymesh/dataplane/config"
	clusterv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/cluster/v3"
	corev3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/core/v3"
	endpointv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/endpoint/v3"
	listenerv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/listener/v3"
	routev3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/route/v3"
	tlsv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/extensions/transport_sockets/tls/v3"
	"github.com/tinymesh/tinymesh/xds/resource"
)

// Mode selects the ADS variant.
type Mode uint8

const (
	// Delta is the incremental DeltaAggregatedResources stream (the default).
	Delta Mode = iota
	// SotW is the state-of-the-world StreamAggregatedResources stream.
	SotW
)

func (m Mode) String() string {
	if m == SotW {
		return "sotw"
	}
	return "delta"
}

// Options configure a Client. ServerAddr, Node and Apply are required.
type Options struct {
	// ServerAddr is the control plane's ADS address, host:port.
	ServerAddr string
	// Node identifies this proxy (see docs/xds-conventions.md). Not modified.
	Node *corev3.Node
	Mode Mode
	// Apply installs a snapshot in the data plane. It is called from Run's
	// goroutine and may block; the snapshot must not be modified. An error
	// (e.g. an address that cannot be bound) NACKs the response that led to it
	// and the client keeps its previous resources.
	Apply func(*config.Snapshot) error
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// InitialFetchTimeout is how long an incomplete configuration (a route
	// configuration or assignment named but not received) may wait before it is
	// applied anyway with the missing pieces empty. Default 5s.
	InitialFetchTimeout time.Duration
	// BackoffBase and BackoffMax bound the reconnect delay, both of the ADS stream
	// and of the gRPC channel under it; defaults 100ms and 4s. The maximum stays
	// well below the control plane's warm-up after a restart (its endpoint grace,
	// 10s by default), so every proxy is back before peers' endpoints are recomputed.
	BackoffBase, BackoffMax time.Duration
	// DialOptions are added to the gRPC dial options (insecure credentials by
	// default).
	DialOptions []grpc.DialOption
	// Keys holds the private keys this proxy generated for its certificates
	// (identity client): a Secret whose tls_certificate has the
	// private_key_provider "tinymesh.io/proxy-generated-key" is paired with the
	// key Keys has for its leaf, and NACKed when it has none. Nil means no key.
	Keys resource.KeyFinder
	// LocalSecrets, when set, supplies secrets from inside the proxy (the
	// SPIFFE Workload API): the names it provides are taken from it and not
	// subscribed to over SDS, and a signal on its Changed channel re-assembles
	// and re-applies the config.
	LocalSecrets LocalSecrets
	// OnConnect, when set, is called on Run's goroutine each time an ADS
	// stream has been opened (first connection and every reconnect), before
	// the first request on it. The identity client renews then, since a
	// restarted control plane has no certificate to serve until it does. It
	// must not block.
	OnConnect func()
	// Observer, when set, is told about the ADS stream and every response
	// (meshproxy's meshproxy_xds_* metrics).
	Observer Observer
}

// Observer watches the client's xDS traffic. The client calls it on Run's
// goroutine; it must not block.
type Observer interface {
	// Connected is called with true when an ADS stream has been opened and
	// with false when it ended.
	Connected(up bool)
	// Update is called once per response handled: ok when it was ACKed,
	// false when it was NACKed.
	Update(typeURL string, ok bool)
}

// LocalSecrets supplies SDS secrets from within the proxy. The client calls
// its methods on Run's goroutine; they must be safe for concurrent use with
// whatever updates the secrets, and must not block. Returned secrets are
// owned by the provider and must not be modified by anyone once returned.
type LocalSecrets interface {
	// Names lists the secrets provided (e.g. "default" and "ROOTCA").
	Names() []string
	// Secret returns the current value of a provided secret; false when it
	// is not available (yet).
	Secret(name string) (*config.TLSSecret, bool)
	// Changed is signalled (a capacity-1 channel, sent without blocking)
	// after any provided secret changed.
	Changed() <-chan struct{}
}

// ADS type URLs, in the order the client subscribes: CDS before LDS, as Envoy
// does, so clusters tend to be known when routes arrive.
var typeOrder = []string{
	resource.TypeCluster,
	resource.TypeClusterLoadAssignment,
	resource.TypeListener,
	resource.TypeRouteConfiguration,
	resource.TypeSecret,
}

func wildcard(typeURL string) bool {
	return typeURL == resource.TypeListener || typeURL == resource.TypeCluster
}

// typeState is what the client holds for one resource type across streams.
type typeState struct {
	decoded  map[string]any         // by resource name: *resource.Listener, *config.RouteConfig, ...
	raw      map[string]digest      // hashes of the serialized resources, to spot responses that change nothing
	recv     map[string]rawResource // the resources as received, for the admin config dump (dump.go)
	versions map[string]string      // delta: per-resource versions for initial_resource_versions
	version  string                 // last accepted version_info (SotW) / system_version_info (delta)
	nonce    string                 // last nonce received on the current stream
	names    []string               // sorted subscription (RDS, EDS); nil for wildcard types
	sent     bool                   // a request for this type went out on the current stream
	received bool                   // a response of this type was accepted (on any stream)
}

// Client is an ADS client. See the package comment for its concurrency contract.
type Client struct {
	// set in New, read-only after
	opts Options
	log  *slog.Logger
	conn *grpc.ClientConn

	// owned by Run's goroutine
	types      map[string]*typeState
	applied    bool // a snapshot has been applied
	dirty      bool // resources changed since the last Apply
	fetchTimer *time.Timer
	fetchC     <-chan time.Time // nil unless an incomplete config waits
	localC     <-chan struct{}  // LocalSecrets.Changed(); nil without LocalSecrets

	// accessed atomically
	synced atomic.Bool               // a complete config was applied (not one forced by the fetch timeout)
	dump   atomic.Pointer[dumpState] // the accepted resources; written by Run's goroutine (dump.go)
}

// Synced reports whether a complete configuration has been applied: every route
// configuration and assignment the config names had arrived. It stays true once
// set. A proxy is ready only when synced, not when it serves a config forced out
// by the initial fetch timeout. Safe for concurrent use.
func (c *Client) Synced() bool { return c.synced.Load() }

// New checks opts and prepares the gRPC channel; it does not connect yet.
func New(opts Options) (*Client, error) {
	if opts.ServerAddr == "" {
		return nil, errors.New("xds client: ServerAddr is required")
	}
	if opts.Node == nil || opts.Node.GetId() == "" {
		return nil, errors.New("xds client: Node with an id is required")
	}
	if opts.Apply == nil {
		return nil, errors.New("xds client: Apply is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.InitialFetchTimeout <= 0 {
		opts.InitialFetchTimeout = 5 * time.Second
	}
	if opts.BackoffBase <= 0 {
		opts.BackoffBase = 100 * time.Millisecond
	}
	if opts.BackoffMax < opts.BackoffBase {
		opts.BackoffMax = max(4*time.Second, opts.BackoffBase)
	}
	dial := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// grpc's own channel backoff (1s growing to 120s by default) would
		// otherwise add to ours and keep a proxy away long after the control
		// plane is back.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: opts.BackoffBase, Multiplier: 1.6, Jitter: 0.2, MaxDelay: opts.BackoffMax},
			MinConnectTimeout: 5 * time.Second,
		}),
	}, opts.DialOptions...)
	conn, err := grpc.NewClient(opts.ServerAddr, dial...)
	if err != nil {
		return nil, fmt.Errorf("xds client: dial %s: %w", opts.ServerAddr, err)
	}
	c := &Client{
		opts:  opts,
		log:   opts.Logger.With("xds_server", opts.ServerAddr, "xds_mode", opts.Mode.String()),
		conn:  conn,
		types: make(map[string]*typeState),
	}
	for _, t := range typeOrder {
		c.types[t] = &typeState{decoded: map[string]any{}, raw: map[string]digest{}, recv: map[string]rawResource{}, versions: map[string]string{}}
	}
	if opts.LocalSecrets != nil {
		c.localC = opts.LocalSecrets.Changed()
	}
	return c, nil
}

// Close releases the gRPC channel. Call it after Run has returned.
func (c *Client) Close() error {
	return c.conn.Close()
}

// Run keeps an ADS stream open until ctx is done, reconnecting with backoff.
// It returns nil when ctx is done.
func (c *Client) Run(ctx context.Context) error {
	defer c.stopFetchTimer()
	for attempt := 0; ; {
		progressed, err := c.runStream(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if progressed {
			attempt = 0
		}
		d := backoff(attempt, c.opts.BackoffBase, c.opts.BackoffMax)
		attempt++
		c.log.Warn("xDS stream ended; reconnecting", "err", err, "backoff", d)
		t := time.NewTimer(d)
	wait:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-c.fetchC:
				c.fetchTimeout()
			case <-c.localC:
				c.localSecretsChanged()
			case <-t.C:
				break wait
			}
		}
	}
}

// stream abstracts the two ADS variants for runStream.
type stream interface {
	// send sends a request for ts (an ACK, NACK or subscription change);
	// errDetail is non-nil for a NACK.
	send(typeURL string, ts *typeState, first bool, nack error, sub, unsub []string) error
	recv() (*update, error)
	// closeSend half-closes the stream: the proxy is leaving on purpose.
	closeSend() error
}

// update is one response, whichever the variant.
type update struct {
	typeURL   string
	version   string
	nonce     string
	resources []named
	removed   []string // delta only
	full      bool     // SotW: the response is the whole set of its type
}

type named struct {
	name    string // delta: Resource.name; SotW: empty (taken from the proto)
	version string // delta only
	any     *anypb.Any
}

type recvResult struct {
	u   *update
	err error
}

func (c *Client) runStream(ctx context.Context) (progressed bool, err error) {
	// The stream outlives ctx by a moment so that leave can say goodbye on it.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var st stream
	if c.opts.Mode == SotW {
		st, err = newSotWStream(sctx, c.conn, c.opts.Node)
	} else {
		st, err = newDeltaStream(sctx, c.conn, c.opts.Node)
	}
	if err != nil {
		return false, err
	}
	if c.opts.OnConnect != nil {
		c.opts.OnConnect()
	}
	if o := c.opts.Observer; o != nil {
		o.Connected(true)
		defer o.Connected(false)
	}
	recvC := make(chan recvResult)
	done := make(chan struct{})
	defer func() { cancel(); <-done }()
	go func() {
		defer close(done)
		for {
			u, err := st.recv()
			select {
			case recvC <- recvResult{u, err}:
			case <-sctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()

	first := true
	for _, t := range typeOrder {
		ts := c.types[t]
		ts.nonce, ts.sent = "", false
		if !wildcard(t) && len(ts.names) == 0 {
			continue
		}
		if err := st.send(t, ts, first, nil, ts.names, nil); err != nil {
			return false, err
		}
		first, ts.sent = false, true
	}
	c.log.Info("xDS stream started")
	for {
		select {
		case <-ctx.Done():
			c.leave(st, recvC)
			return progressed, ctx.Err()
		case <-c.fetchC:
			c.fetchTimeout()
		case <-c.localC:
			c.localSecretsChanged()
		case r := <-recvC:
			if r.err != nil {
				return progressed, r.err
			}
			progressed = true
			if err := c.handle(st, r.u); err != nil {
				return progressed, err
			}
		}
	}
}

// wildcardsAnswered reports whether listeners and clusters have each had a
// response, counting the one being handled (of type current).
func (c *Client) wildcardsAnswered(current string) bool {
	for _, t := range []string{resource.TypeListener, resource.TypeCluster} {
		if t != current && !c.types[t].received {
			return false
		}
	}
	return true
}

// leaveTimeout bounds how long leave waits for the control plane to end the
// stream after the proxy half-closed it.
const leaveTimeout = time.Second

// leave half-closes the stream, which tells the control plane that this proxy is
// going away on purpose (a broken connection looks different), so it can take the
// workload's endpoint out of every peer's config at once instead of after its
// grace period. It waits until the server ends the stream or leaveTimeout passes.
func (c *Client) leave(st stream, recvC <-chan recvResult) {
	if err := st.closeSend(); err != nil {
		return
	}
	t := time.NewTimer(leaveTimeout)
	defer t.Stop()
	for {
		select {
		case r := <-recvC:
			if r.err != nil {
				return
			}
		case <-t.C:
			c.log.Warn("control plane did not end the xDS stream after leave", "waited", leaveTimeout)
			return
		}
	}
}

// handle processes one response: decode, stage, maybe apply, then ACK or NACK
// and adjust subscriptions. Only send errors are returned.
func (c *Client) handle(st stream, u *update) error {
	ts, ok := c.types[u.typeURL]
	if !ok {
		c.log.Warn("ignoring response of unknown type", "type", u.typeURL)
		return nil
	}
	ts.nonce = u.nonce

	decoded := make(map[string]any, len(u.resources))
	raw := make(map[string]digest, len(u.resources))
	recv := make(map[string]rawResource, len(u.resources))
	versions := make(map[string]string, len(u.resources))
	var errs []string
	var names []string
	for _, r := range u.resources {
		name, v, err := decode(u.typeURL, r.any, c.opts.Keys)
		if r.name != "" && err == nil && name != r.name {
			err = fmt.Errorf("%s %q: resource is named %q in its envelope", kind(u.typeURL), name, r.name)
		}
		if err != nil {
			errs = append(errs, err.Error())
			names = append(names, cmpOr(name, r.name))
			continue
		}
		if !wildcard(u.typeURL) && u.full && !slices.Contains(ts.names, name) {
			continue // SotW may send what we no longer ask for
		}
		decoded[name], raw[name], versions[name] = v, sha256.Sum256(r.any.GetValue()), r.version
		recv[name] = rawResource{any: r.any, version: cmpOr(r.version, u.version)}
		names = append(names, name)
	}
	if len(errs) > 0 {
		nack := errors.New(strings.Join(errs, "; "))
		c.log.Warn("NACK xDS response", "type", kind(u.typeURL), "version", u.version, "resources", names, "err", nack)
		c.observe(u.typeURL, false)
		return st.send(u.typeURL, ts, false, nack, nil, nil)
	}

	// Stage the type's new content; ts is only committed once Apply succeeded or
	// the config is still incomplete. SotW responses replace the whole set for
	// listeners and clusters; RDS and EDS responses (and all delta ones) only
	// carry what changed (xDS protocol, "Grouping resources into responses").
	newDecoded, newRaw, newVersions, newRecv := stageMaps(ts, !u.full || !wildcard(u.typeURL))
	now := time.Now()
	for n := range decoded {
		newDecoded[n], newRaw[n], newVersions[n] = decoded[n], raw[n], versions[n]
		rr := recv[n]
		rr.updated = now
		if old, ok := ts.raw[n]; ok && old == raw[n] {
			rr.updated = ts.recv[n].updated // unchanged content keeps its time
		}
		newRecv[n] = rr
	}
	for _, n := range u.removed {
		if u.typeURL == resource.TypeSecret {
			// Keep the last good secret: a control plane that restarted
			// has no certificate for this proxy until it renews, and its
			// listeners must not lose theirs meanwhile.
			c.log.Info("control plane removed a Secret; keeping the last one received", "secret", n)
			continue
		}
		delete(newDecoded, n)
		delete(newRaw, n)
		delete(newVersions, n)
		delete(newRecv, n)
	}
	changed := !sameRaw(ts.raw, newRaw)

	prev := ts.decoded
	ts.decoded = newDecoded
	set := c.set()
	version := c.versionString(u.typeURL, u.version)
	snap, miss := resource.Assemble(set, version, false)
	if !c.wildcardsAnswered(u.typeURL) {
		// Until both wildcard subscriptions have had their first answer, an empty
		// set of listeners or clusters means "not yet", not "none".
		snap = nil
	} else if snap == nil && len(miss.Routes) == 0 && len(miss.Assignments) == 0 && len(miss.Secrets) == 0 {
		// Only clusters are missing, and clusters are a wildcard subscription we
		// have an answer for: they are absent, not late, so waiting cannot help.
		// Like Envoy, serve and let requests to them fail.
		c.log.Warn("xDS config names unknown clusters", "clusters", miss.Clusters)
		snap, _ = resource.Assemble(set, version, true)
	}
	switch {
	case snap == nil:
		c.log.Debug("xDS config incomplete; waiting", "routes", miss.Routes, "assignments", miss.Assignments, "clusters", miss.Clusters, "secrets", miss.Secrets)
		c.armFetchTimer()
	case changed || c.dirty || !c.applied:
		if err := c.opts.Apply(snap); err != nil {
			ts.decoded = prev // roll back what this response staged
			c.log.Warn("NACK xDS response: apply failed", "type", kind(u.typeURL), "version", u.version, "resources", names, "err", err)
			c.observe(u.typeURL, false)
			return st.send(u.typeURL, ts, false, fmt.Errorf("%s: apply: %w", kind(u.typeURL), err), nil, nil)
		}
		c.applied, c.dirty = true, false
		c.synced.Store(true)
		c.stopFetchTimer()
		c.log.Info("applied xDS config", "version", version, "listeners", len(snap.Listeners), "clusters", len(snap.Clusters))
	}
	if snap == nil && changed {
		c.dirty = true
	}
	ts.raw, ts.versions, ts.version, ts.received = newRaw, newVersions, u.version, true
	ts.recv = newRecv
	c.publishDump()
	c.observe(u.typeURL, true)
	if err := st.send(u.typeURL, ts, false, nil, nil, nil); err != nil {
		return err
	}
	return c.resubscribe(st, set)
}

// observe tells the Observer, if any, that a response was ACKed (ok) or NACKed.
func (c *Client) observe(typeURL string, ok bool) {
	if o := c.opts.Observer; o != nil {
		o.Update(typeURL, ok)
	}
}

// stageMaps copies ts's maps when keep is set (incremental update), else starts
// empty (the response replaces the type's set).
func stageMaps(ts *typeState, keep bool) (map[string]any, map[string]digest, map[string]string, map[string]rawResource) {
	d, r, v, rr := map[string]any{}, map[string]digest{}, map[string]string{}, map[string]rawResource{}
	if keep {
		for k, x := range ts.recv {
			rr[k] = x
		}
		for k, x := range ts.decoded {
			d[k] = x
		}
		for k, x := range ts.raw {
			r[k] = x
		}
		for k, x := range ts.versions {
			v[k] = x
		}
	}
	return d, r, v, rr
}

// digest identifies a serialized resource, to compare responses cheaply. (The
// serialized resources themselves are kept too, in typeState.recv, for the admin
// config dump: an operator must see the protos as the control plane sent them.)
type digest [sha256.Size]byte

func sameRaw(a, b map[string]digest) bool {
	if len(a) != len(b) {
		return false
	}
	for k, x := range a {
		y, ok := b[k]
		if !ok || x != y {
			return false
		}
	}
	return true
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// resubscribe updates the RDS and EDS subscriptions to what the current
// listeners and clusters name, dropping resources no longer named.
func (c *Client) resubscribe(st stream, set *resource.Set) error {
	for _, t := range []string{resource.TypeRouteConfiguration, resource.TypeClusterLoadAssignment, resource.TypeSecret} {
		var want []string
		switch t {
		case resource.TypeRouteConfiguration:
			want = set.RouteNames()
		case resource.TypeClusterLoadAssignment:
			want = set.AssignmentNames()
		case resource.TypeSecret:
			want = c.sdsNames(set)
		}
		ts := c.types[t]
		if slices.Equal(want, ts.names) && (ts.sent || len(want) == 0) {
			continue
		}
		var sub, unsub []string
		for _, n := range want {
			if !slices.Contains(ts.names, n) {
				sub = append(sub, n)
			}
		}
		for _, n := range ts.names {
			if !slices.Contains(want, n) {
				unsub = append(unsub, n)
				delete(ts.decoded, n)
				delete(ts.raw, n)
				delete(ts.recv, n)
				delete(ts.versions, n)
			}
		}
		if len(unsub) > 0 {
			c.publishDump()
		}
		ts.names = want
		if !ts.sent {
			// First request of this type on this stream: a full subscription.
			sub = want
		}
		if err := st.send(t, ts, false, nil, sub, unsub); err != nil {
			return err
		}
		ts.sent = true
	}
	return nil
}

// set returns the decoded resources of all types for resource.Assemble.
func (c *Client) set() *resource.Set {
	s := &resource.Set{
		Listeners:   map[string]*resource.Listener{},
		Routes:      map[string]*config.RouteConfig{},
		Clusters:    map[string]*resource.Cluster{},
		Assignments: map[string]*resource.Assignment{},
	}
	for n, v := range c.types[resource.TypeListener].decoded {
		s.Listeners[n] = v.(*resource.Listener)
	}
	for n, v := range c.types[resource.TypeRouteConfiguration].decoded {
		s.Routes[n] = v.(*config.RouteConfig)
	}
	for n, v := range c.types[resource.TypeCluster].decoded {
		s.Clusters[n] = v.(*resource.Cluster)
	}
	for n, v := range c.types[resource.TypeClusterLoadAssignment].decoded {
		s.Assignments[n] = v.(*resource.Assignment)
	}
	s.Secrets = make(map[string]*config.TLSSecret)
	for n, v := range c.types[resource.TypeSecret].decoded {
		s.Secrets[n] = v.(*config.TLSSecret)
	}
	if ls := c.opts.LocalSecrets; ls != nil {
		for _, n := range ls.Names() {
			delete(s.Secrets, n) // never an SDS value for a name provided locally
			if sec, ok := ls.Secret(n); ok {
				s.Secrets[n] = sec
			}
		}
	}
	return s
}

// sdsNames returns the secrets to subscribe to over SDS: those the
// listeners and clusters name, less those LocalSecrets provides.
func (c *Client) sdsNames(set *resource.Set) []string {
	names := set.SecretNames()
	ls := c.opts.LocalSecrets
	if ls == nil {
		return names
	}
	local := ls.Names()
	return slices.DeleteFunc(names, func(n string) bool { return slices.Contains(local, n) })
}

// localSecretsChanged re-assembles the config with the new local secrets
// and applies it (the SPIFFE Workload API rotated the SVID or the bundle).
func (c *Client) localSecretsChanged() {
	if !c.wildcardsAnswered("") {
		return // the first complete config will include them
	}
	set := c.set()
	snap, miss := resource.Assemble(set, c.versionString("", ""), false)
	if snap == nil {
		c.dirty = true
		c.log.Debug("local secrets changed; xDS config incomplete, waiting", "routes", miss.Routes, "assignments", miss.Assignments, "secrets", miss.Secrets)
		c.armFetchTimer()
		return
	}
	if err := c.opts.Apply(snap); err != nil {
		c.log.Warn("applying xDS config with new local secrets failed; keeping the previous one", "err", err)
		return
	}
	c.applied, c.dirty = true, false
	c.synced.Store(true)
	c.stopFetchTimer()
	c.log.Info("applied xDS config with new local secrets", "version", snap.Version)
}

// versionString names the versions a snapshot was built from, for logs and the
// config dump; override replaces the version of typeURL (being staged).
func (c *Client) versionString(typeURL, override string) string {
	var b strings.Builder
	for i, t := range []string{resource.TypeListener, resource.TypeRouteConfiguration, resource.TypeCluster, resource.TypeClusterLoadAssignment, resource.TypeSecret} {
		v := c.types[t].version
		if t == typeURL {
			v = override
		}
		if t == resource.TypeSecret && v == "" {
			continue // no SDS: keep the four-part version
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%s", [...]string{"lds", "rds", "cds", "eds", "sds"}[i], v)
	}
	return b.String()
}

func (c *Client) armFetchTimer() {
	if c.fetchC != nil {
		return
	}
	c.fetchTimer = time.NewTimer(c.opts.InitialFetchTimeout)
	c.fetchC = c.fetchTimer.C
}

func (c *Client) stopFetchTimer() {
	if c.fetchTimer != nil {
		c.fetchTimer.Stop()
	}
	c.fetchTimer, c.fetchC = nil, nil
}

// fetchTimeout applies an incomplete configuration, as Envoy does when its
// initial_fetch_timeout expires: missing route configurations are empty and
// missing assignments have no endpoints.
func (c *Client) fetchTimeout() {
	c.fetchTimer, c.fetchC = nil, nil
	set := c.set()
	snap, miss := resource.Assemble(set, c.versionString("", ""), true)
	if miss.Empty() {
		return // completed meanwhile and applied by handle
	}
	c.log.Warn("initial fetch timeout: applying incomplete xDS config",
		"timeout", c.opts.InitialFetchTimeout, "missing_routes", miss.Routes,
		"missing_assignments", miss.Assignments, "missing_clusters", miss.Clusters, "missing_secrets", miss.Secrets)
	for _, n := range miss.Secrets {
		// TLS listeners and clusters that need it stay out of service
		// (resource.Assemble) until it arrives.
		c.log.Warn(fmt.Sprintf("waiting for Secret %s (has this proxy an identity? start it with --join-token)", n),
			"secret", n, "listeners_left_out", c.listenersNeeding(n))
	}
	if err := c.opts.Apply(snap); err != nil {
		c.log.Error("applying incomplete xDS config failed", "err", err)
		return
	}
	c.applied, c.dirty = true, false
}

func kind(typeURL string) string {
	switch typeURL {
	case resource.TypeListener:
		return resource.KindListener
	case resource.TypeRouteConfiguration:
		return resource.KindRouteConfiguration
	case resource.TypeCluster:
		return resource.KindCluster
	case resource.TypeClusterLoadAssignment:
		return resource.KindClusterLoadAssignment
	case resource.TypeSecret:
		return resource.KindSecret
	}
	return typeURL
}

// decode unmarshals and validates one resource, returning its name. keys
// resolves the private keys of Secrets.
func decode(typeURL string, a *anypb.Any, keys resource.KeyFinder) (string, any, error) {
	if a.GetTypeUrl() != typeURL {
		return "", nil, &resource.Error{Type: kind(typeURL), Reason: fmt.Sprintf("resource of type %s in a %s response", a.GetTypeUrl(), typeURL)}
	}
	var m proto.Message
	switch typeURL {
	case resource.TypeListener:
		m = &listenerv3.Listener{}
	case resource.TypeRouteConfiguration:
		m = &routev3.RouteConfiguration{}
	case resource.TypeCluster:
		m = &clusterv3.Cluster{}
	case resource.TypeClusterLoadAssignment:
		m = &endpointv3.ClusterLoadAssignment{}
	case resource.TypeSecret:
		m = &tlsv3.Secret{}
	}
	if err := proto.Unmarshal(a.GetValue(), m); err != nil {
		return "", nil, &resource.Error{Type: kind(typeURL), Reason: "cannot unmarshal: " + err.Error()}
	}
	switch m := m.(type) {
	case *listenerv3.Listener:
		v, err := resource.DecodeListener(m)
		return m.GetName(), v, err
	case *routev3.RouteConfiguration:
		v, err := resource.DecodeRouteConfig(m)
		return m.GetName(), v, err
	case *clusterv3.Cluster:
		v, err := resource.DecodeCluster(m)
		return m.GetName(), v, err
	case *endpointv3.ClusterLoadAssignment:
		v, err := resource.DecodeClusterLoadAssignment(m)
		return m.GetClusterName(), v, err
	case *tlsv3.Secret:
		v, err := resource.DecodeSecret(m, keys)
		return m.GetName(), v, err
	}
	return "", nil, fmt.Errorf("unreachable type %s", typeURL)
}

// listenersNeeding names the TLS listeners that use secret name.
func (c *Client) listenersNeeding(name string) []string {
	var out []string
	for n, v := range c.types[resource.TypeListener].decoded {
		if t := v.(*resource.Listener).Config.TLS; t != nil && (t.CertificateSecret == name || t.ValidationSecret == name) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}
