package client_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/tinymesh/tinymesh/dataplane/config"
	wirecorev3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/core/v3"
	"github.com/tinymesh/tinymesh/xds/client"
	"github.com/tinymesh/tinymesh/xds/xdstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	lName  = "outbound_http"
	cName  = "outbound|8080||backend.default.svc.cluster.local"
	wait   = 10 * time.Second // generous: what must happen
	nodeID = "frontend.default~1"
)

var modes = []client.Mode{client.Delta, client.SotW}

// harness runs a management server and a client against it.
type harness struct {
	t       *testing.T
	srv     *xdstest.Server
	c       *client.Client
	applied chan *config.Snapshot

	mu   sync.Mutex
	fail func(*config.Snapshot) error // guarded by mu
}

func start(t *testing.T, mode client.Mode, mod func(*client.Options)) *harness {
	t.Helper()
	srv, err := xdstest.New()
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, srv: srv, applied: make(chan *config.Snapshot, 100)}
	opts := client.Options{
		ServerAddr:          srv.Addr(),
		Node:                &wirecorev3.Node{Id: nodeID, Cluster: "frontend.default"},
		Mode:                mode,
		Logger:              slog.New(slog.NewTextHandler(io.Discard, nil)),
		InitialFetchTimeout: time.Minute, // tests of ordering must not see it fire
		BackoffBase:         10 * time.Millisecond,
		BackoffMax:          200 * time.Millisecond,
		Apply: func(s *config.Snapshot) error {
			h.mu.Lock()
			f := h.fail
			h.mu.Unlock()
			if f != nil {
				if err := f(s); err != nil {
					return err
				}
			}
			h.applied <- s
			return nil
		},
	}
	if testing.Verbose() {
		opts.Logger = slog.New(slog.NewTextHandler(&testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if mod != nil {
		mod(&opts)
	}
	c, err := client.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.c = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v, want nil", err)
		}
		c.Close()
		srv.Close()
	})
	return h
}

type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (h *harness) set(version string, res xdstest.Resources) {
	h.t.Helper()
	if err := h.srv.SetResources(xdstest.AllNodes, version, res); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) waitApply() *config.Snapshot {
	h.t.Helper()
	select {
	case s := <-h.applied:
		return s
	case <-time.After(wait):
		h.t.Fatal("Apply not called")
		return nil
	}
}

// noApply checks that nothing was applied. Callers first wait for the ACK of the
// last response: the client decides on Apply before it ACKs, so the check is
// not racy.
func (h *harness) noApply() {
	h.t.Helper()
	select {
	case s := <-h.applied:
		h.t.Fatalf("Apply called with version %q, want no call", s.Version)
	default:
	}
}

func (h *harness) waitACK(from int, typeURL, version string) xdstest.Request {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	r, err := h.srv.WaitACK(ctx, from, typeURL, version)
	if err != nil {
		h.t.Fatalf("waiting for ACK of %s version %s: %v; requests: %+v", typeURL, version, err, h.srv.Requests())
	}
	return r
}

func (h *harness) waitNACK(from int, typeURL string) xdstest.Request {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	r, err := h.srv.WaitNACK(ctx, from, typeURL)
	if err != nil {
		h.t.Fatalf("waiting for NACK of %s: %v; requests: %+v", typeURL, err, h.srv.Requests())
	}
	return r
}

// waitAllACK waits for the ACK of version for every type in res.
func (h *harness) waitAllACK(from int, version string, res xdstest.Resources) {
	h.t.Helper()
	for typ := range res {
		h.waitACK(from, typ, version)
	}
}

// world returns a complete valid configuration: an outbound HTTP listener with
// RDS, its route config, an EDS cluster and its assignment.
func world(endpoints ...string) xdstest.Resources {
	if len(endpoints) == 0 {
		endpoints = []string{"127.0.0.1:9001"}
	}
	return xdstest.Resources{
		xdstest.ListenerType: {xdstest.HTTPListener(lName, "127.0.0.1", 15001, lName)},
		xdstest.RouteType:    {xdstest.RouteConfig(lName, cName, "backend")},
		xdstest.ClusterType:  {xdstest.EDSCluster(cName)},
		xdstest.EndpointType: {xdstest.Assignment(cName, endpoints...)},
	}
}

func wantWorld(endpoints ...string) *config.Snapshot {
	if len(endpoints) == 0 {
		endpoints = []string{"127.0.0.1:9001"}
	}
	var eps []config.Endpoint
	for _, e := range endpoints {
		eps = append(eps, config.Endpoint{Address: e, Weight: 1})
	}
	return &config.Snapshot{
		Listeners: []*config.Listener{{
			Name: lName, Address: "127.0.0.1:15001", Direction: config.Outbound,
			HTTP: &config.HTTPConnectionManager{
				StatPrefix: lName, RouteConfigName: lName, GenerateRequestID: true,
				MaxRequestHeadersBytes: 60 * 1024, StreamIdleTimeout: 5 * time.Minute, DrainTimeout: 5 * time.Second,
			},
		}},
		Routes: map[string]*config.RouteConfig{lName: {
			Name: lName,
			VirtualHosts: []*config.VirtualHost{{Name: lName, Domains: []string{"backend"}, Routes: []*config.Route{{
				Match:  config.RouteMatch{PathKind: config.PathPrefix, Path: "/", CaseSensitive: true},
				Action: &config.RouteAction{Clusters: []config.WeightedCluster{{Name: cName, Weight: 1}}},
			}}}},
		}},
		Clusters: map[string]*config.Cluster{cName: {
			Name: cName, ConnectTimeout: time.Second, Protocol: config.ProtocolH2C, Endpoints: eps,
		}},
	}
}

var ignoreVersion = cmpopts.IgnoreFields(config.Snapshot{}, "Version")

func forModes(t *testing.T, f func(t *testing.T, mode client.Mode)) {
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) { f(t, m) })
	}
}

func TestFullFlow(t *testing.T) {
	forModes(t, func(t *testing.T, mode client.Mode) {
		h := start(t, mode, nil)
		res := world()
		h.set("1", res)
		got := h.waitApply()
		if diff := cmp.Diff(wantWorld(), got, ignoreVersion); diff != "" {
			t.Errorf("applied snapshot (-want +got):\n%s", diff)
		}
		if want := "lds=1 rds=1 cds=1 eds=1"; got.Version != want {
			t.Errorf("snapshot version = %q, want %q", got.Version, want)
		}
		h.waitAllACK(0, "1", res)
		h.noApply()

		// Every response is ACKed on its stream with its nonce (and, in SotW,
		// its version).
		reqs := h.srv.Requests()
		for _, resp := range h.srv.Responses() {
			found := false
			for _, r := range reqs {
				if r.StreamID == resp.StreamID && r.ResponseNonce == resp.Nonce && r.TypeURL == resp.TypeURL &&
					r.IsACK() && (r.Delta || r.VersionInfo == resp.Version) {
					found = true
				}
			}
			if !found {
				t.Errorf("response %+v not ACKed; requests: %+v", resp, reqs)
			}
		}
		// The first request carries the node.
		if len(reqs) == 0 || reqs[0].NodeID != nodeID {
			t.Errorf("first request node = %+v, want id %q", reqs, nodeID)
		}
	})
}

func TestWaitsForDependencies(t *testing.T) {
	forModes(t, func(t *testing.T, mode client.Mode) {
		h := start(t, mode, nil)
		all := world()
		// LDS and CDS first: the listener names a route config and the cluster
		// needs an assignment, so nothing may be applied.
		h.set("1", xdstest.Resources{
			xdstest.ListenerType: all[xdstest.ListenerType],
			xdstest.ClusterType:  all[xdstest.ClusterType],
		})
		h.waitACK(0, xdstest.ListenerType, "1")
		h.waitACK(0, xdstest.ClusterType, "1")
		h.noApply()

		// The client asks for exactly what they name.
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		for typ, name := range map[string]string{xdstest.RouteType: lName, xdstest.EndpointType: cName} {
			_, err := h.srv.WaitRequest(ctx, 0, func(r xdstest.Request, _ *xdstest.Response) bool {
				names := r.ResourceNames
				if r.Delta {
					names = r.Subscribe
				}
				return r.TypeURL == typ && len(names) == 1 && names[0] == name
			})
			if err != nil {
				t.Fatalf("no subscription to %s %q: %v", typ, name, err)
			}
		}

		// Route config next, still no assignment.
		m := h.srv.Mark()
		h.set("2", xdstest.Resources{
			xdstest.ListenerType: all[xdstest.ListenerType],
			xdstest.ClusterType:  all[xdstest.ClusterType],
			xdstest.RouteType:    all[xdstest.RouteType],
		})
		h.waitACK(m, xdstest.RouteType, "2")
		h.noApply()

		h.set("3", all)
		got := h.waitApply()
		if diff := cmp.Diff(wantWorld(), got, ignoreVersion); diff != "" {
			t.Errorf("applied snapshot (-want +got):\n%s", diff)
		}
		h.waitACK(m, xdstest.EndpointType, "3")
		h.noApply()
	})
}

func TestInitialFetchTimeout(t *testing.T) {
	forModes(t, func(t *testing.T, mode client.Mode) {
		h := start(t, mode, func(o *client.Options) { o.InitialFetchTimeout = 100 * time.Millisecond })
		all := world()
		h.set("1", xdstest.Resources{
			xdstest.ListenerType: all[xdstest.ListenerType],
			xdstest.ClusterType:  all[xdstest.ClusterType],
		})
		got := h.waitApply()
		want := wantWorld()
		want.Routes[lName] = &config.RouteConfig{Name: lName} // empty table
		want.Clusters[cName].Endpoints = nil
		if diff := cmp.Diff(want, got, ignoreVersion); diff != "" {
			t.Errorf("applied snapshot (-want +got):\n%s", diff)
		}
		if h.c.Synced() {
			t.Error("Synced() = true after a config forced by the fetch timeout, want false")
		}
		// The rest arrives later and is applied.
		h.set("2", all)
		got = h.waitApply()
		if diff := cmp.Diff(wantWorld(), got, ignoreVersion); diff != "" {
			t.Errorf("applied snapshot (-want +got):\n%s", diff)
		}
		// Synced is set once Apply has returned, just after the harness saw it.
		deadline := time.Now().Add(5 * time.Second)
		for !h.c.Synced() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if !h.c.Synced() {
			t.Error("Synced() = false after the complete config was applied, want true")
		}
	})
}

func TestUnknownClusterDoesNotBlock(t *testing.T) {
	forModes(t, func(t *testing.T, mode client.Mode) {
		h := start(t, mode, nil)
		res := world()
		res[xdstest.RouteType] = []cachetypes.Resource{xdstest.RouteConfig(lName, "nowhere", "backend")}
		h.set("1", res)
		got := h.waitApply()
		if c := got.Clusters["nowhere"]; c == nil || len(c.Endpoints) != 0 {
			t.Errorf("cluster nowhere = %+v, want a cluster without endpoints", c)
		}
		if c := got.Clusters[cName]; c == nil || len(c.Endpoints) != 1 {
			t.Errorf("cluster %s = %+v, want one endpoint", cName, c)
		}
	})
}

func TestNACK(t *testing.T) {
	badRegex := func(r xdstest.Resources) {
		rc := proto.Clone(r[xdstest.RouteType][0]).(*routev3.RouteConfiguration)
		rc.VirtualHosts[0].Routes[0].Match.PathSpecifier = &routev3.RouteMatch_SafeRegex{
			SafeRegex: &matcherv3.RegexMatcher{Regex: "/(api"}}
		r[xdstest.RouteType] = []cachetypes.Resource{rc}
	}
	unknownFilter := func(r xdstest.Resources) {
		r[xdstest.ListenerType] = []cachetypes.Resource{xdstest.ListenerWith(lName, "127.0.0.1", 15001,
			"envoy.filters.network.redis_proxy", &corev3.Node{})} // any message will do
	}
	altsListener := func(r xdstest.Resources) {
		l := proto.Clone(r[xdstest.ListenerType][0]).(*listenerv3.Listener)
		l.FilterChains[0].TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.alts"}
		r[xdstest.ListenerType] = []cachetypes.Resource{l}
	}
	leastRequest := func(r xdstest.Resources) {
		c := proto.Clone(r[xdstest.ClusterType][0]).(*clusterv3.Cluster)
		c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		r[xdstest.ClusterType] = []cachetypes.Resource{c}
	}
	tests := []struct {
		name    string
		mutate  func(xdstest.Resources)
		typeURL string
		want    string
	}{
		{"invalid regex", badRegex, xdstest.RouteType,
			`RouteConfiguration "outbound_http": virtual_hosts[0].routes[0].match.safe_regex.regex: invalid RE2: error parsing regexp: missing closing ): ` + "`/(api`"},
		{"unknown network filter", unknownFilter, xdstest.ListenerType,
			`Listener "outbound_http": filter_chains[0].filters[0].typed_config: unsupported filter type.googleapis.com/envoy.config.core.v3.Node`},
		{"unsupported transport socket", altsListener, xdstest.ListenerType,
			`Listener "outbound_http": filter_chains[0].transport_socket.name: unsupported transport socket "envoy.transport_sockets.alts"`},
		{"LEAST_REQUEST", leastRequest, xdstest.ClusterType,
			`Cluster "outbound|8080||backend.default.svc.cluster.local": lb_policy: unsupported LEAST_REQUEST (only ROUND_ROBIN)`},
	}
	forModes(t, func(t *testing.T, mode client.Mode) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				h := start(t, mode, nil)
				h.set("1", world())
				h.waitApply()
				h.waitAllACK(0, "1", world())

				bad := world()
				tt.mutate(bad)
				m := h.srv.Mark()
				h.set("2", bad)
				nack := h.waitNACK(m, tt.typeURL)
				if got := nack.ErrorDetail.GetMessage(); got != tt.want {
					t.Errorf("NACK error_detail = %q, want %q", got, tt.want)
				}
				if got, want := nack.ErrorDetail.GetCode(), int32(3); got != want {
					t.Errorf("NACK code = %d, want %d (INVALID_ARGUMENT)", got, want)
				}
				if !nack.Delta && nack.VersionInfo != "1" {
					t.Errorf("NACK version_info = %q, want the previous version %q", nack.VersionInfo, "1")
				}
				h.noApply()

				// A later valid update is ACKed and applied.
				m = h.srv.Mark()
				h.set("3", world("127.0.0.1:9002"))
				got := h.waitApply()
				if diff := cmp.Diff(wantWorld("127.0.0.1:9002"), got, ignoreVersion); diff != "" {
					t.Errorf("applied snapshot (-want +got):\n%s", diff)
				}
				h.waitACK(m, tt.typeURL, "3")
			})
		}
	})
}

func TestApplyFailureNACKs(t *testing.T) {
	forModes(t, func(t *testing.T, mode client.Mode) {
		h := start(t, mode, nil)
		h.mu.Lock()
		h.fail = func(s *config.Snapshot) error {
			for _, l := range s.Listeners {
				if l.Name == "taken" {
					return errors.New("listen tcp 127.0.0.1:1: bind: permission denied")
				}
			}
			return nil
		}
		h.mu.Unlock()
		h.set("1", world())
		h.waitApply()

		bad := world()
		bad[xdstest.ListenerType] = append(bad[xdstest.ListenerType],
			xdstest.TCPListener("taken", "127.0.0.1", 1, cName))
		m := h.srv.Mark()
		h.set("2", bad)
		nack := h.waitNACK(m, xdstest.ListenerType)
		want := "Listener: apply: listen tcp 127.0.0.1:1: bind: permission denied"
		if got := nack.ErrorDetail.GetMessage(); got != want {
			t.Errorf("NACK error_detail = %q, want %q", got, want)
		}
		h.noApply()

		h.set("3", world("127.0.0.1:9003"))
		got := h.waitApply()
		if diff := cmp.Diff(wantWorld("127.0.0.1:9003"), got, ignoreVersion); diff != "" {
			t.Errorf("applied snapshot (-want +got):\n%s", diff)
		}
	})
}

func TestReconnect(t *testing.T) {
	forModes(t, func(t *testing.T, mode client.Mode) {
		h := start(t, mode, nil)
		v1 := world()
		v1[xdstest.ListenerType] = append(v1[xdstest.ListenerType], xdstest.TCPListener("tcp", "127.0.0.1", 15002, cName))
		h.set("1", v1)
		first := h.waitApply()
		if len(first.Listeners) != 2 {
			t.Fatalf("applied listeners %+v, want 2", first.Listeners)
		}
		h.waitAllACK(0, "1", v1)

		h.srv.Stop()
		m := h.srv.Mark()
		// While the server is away, a listener goes and the endpoints change.
		h.set("2", world("127.0.0.1:9004"))
		if err := h.srv.Restart(); err != nil {
			t.Fatal(err)
		}
		// Delta sends only what changed, in one response per type: the client
		// may apply once per response. Wait for the snapshot with both changes.
		want := wantWorld("127.0.0.1:9004")
		for got := h.waitApply(); !cmp.Equal(want, got, ignoreVersion); got = h.waitApply() {
			t.Logf("intermediate snapshot %s: %d listeners, endpoints %v", got.Version, len(got.Listeners), got.Clusters[cName].Endpoints)
		}
		h.waitACK(m, xdstest.ListenerType, "2")
		h.waitACK(m, xdstest.EndpointType, "2")
		h.noApply()
		// The new stream starts with the node again.
		reqs := h.srv.Requests()[m:]
		if len(reqs) == 0 || reqs[0].NodeID != nodeID {
			t.Errorf("first request after restart: %+v, want node %q", reqs, nodeID)
		}
		if mode == client.Delta && len(reqs[0].InitialVersions) == 0 {
			t.Errorf("first delta request after restart has no initial_resource_versions: %+v", reqs[0])
		}
	})
}
