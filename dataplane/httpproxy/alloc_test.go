package httpproxy

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/tinymesh/tinymesh/dataplane/cluster"
	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/route"
	"github.com/tinymesh/tinymesh/dataplane/stats"
)

// TestStripHopAllocs: stripHop runs on every request and response, so it must not
// allocate for the headers real clients send (Connection: keep-alive, TE).
func TestStripHopAllocs(t *testing.T) {
	h := http.Header{"Connection": {"keep-alive, X-Drop"}, "Te": {"Trailers"}, "X-Drop": {"1"}, "Keep-Alive": {"300"}, "Accept": {"*/*"}}
	saved := map[string][]string{}
	for k, v := range h {
		saved[k] = v
	}
	n := testing.AllocsPerRun(200, func() {
		for k, v := range saved {
			h[k] = v
		}
		stripHop(h, false)
	})
	if n != 0 {
		t.Errorf("stripHop: %v allocs per run, want 0", n)
	}
	if d := cmp.Diff(http.Header{"Te": {"trailers"}, "Accept": {"*/*"}}, h); d != "" {
		t.Errorf("stripped header (-want +got):\n%s", d)
	}
}

// benchState is a one-route, one-cluster State for handler benchmarks.
func benchState(b *testing.B, appAddr string, proto config.Protocol) (*State, func()) {
	rc := &config.RouteConfig{Name: "rc", VirtualHosts: []*config.VirtualHost{{Name: "vh", Domains: []string{"backend", "*"},
		Routes: []*config.Route{{Name: "r", Match: config.RouteMatch{Path: "/"},
			Action: &config.RouteAction{Clusters: []config.WeightedCluster{{Name: "app", Weight: 1}}}}}}}}
	tbl, err := route.Compile(rc)
	if err != nil {
		b.Fatal(err)
	}
	set := cluster.NewSet()
	ctbl := set.Build(&config.Snapshot{Clusters: map[string]*config.Cluster{"app": {
		Name: "app", Protocol: proto, ConnectTimeout: time.Second, Endpoints: []config.Endpoint{{Address: appAddr, Weight: 1}}}}})
	return &State{HCM: &config.HTTPConnectionManager{RouteConfigName: "rc"}, Routes: tbl, Clusters: ctbl}, set.Close
}

// BenchmarkOutbound measures building the upstream request alone: the proxy's
// own share of a request's allocations (the rest is net/http's).
func BenchmarkOutbound(b *testing.B) {
	st, done := benchState(b, "127.0.0.1:1", config.ProtocolHTTP1)
	defer done()
	h := NewHandler(slog.New(slog.DiscardHandler), st)
	r := httptest.NewRequest("GET", "http://backend/api/items?id=1", nil)
	sent := http.Header{"Accept": {"*/*"}, "User-Agent": {"bench"}, "Connection": {"keep-alive"}, "X-Request-Id": {"abc"}}
	r.Header = http.Header{}
	rq := route.Request{Authority: r.Host, Method: r.Method, Path: r.URL.Path, Header: sent}
	vh, rt := st.Routes.Match(&rq)
	wc := rt.PickCluster()
	ctx := r.Context()
	b.ReportAllocs()
	for b.Loop() {
		// outbound edits the request's header map: give each round the
		// headers as received, without allocating.
		clear(r.Header)
		for k, v := range sent {
			r.Header[k] = v
		}
		h.outbound(ctx, r, st, vh, rt, wc, "127.0.0.1:1", false)
	}
}

// BenchmarkForwardParallel sends concurrent keep-alive requests through the
// proxy to an upstream on loopback (client and upstream included), with the same
// protocol on both sides: HTTP/1.1 (a pool of connections) or h2c (one
// connection, many streams: the hop between sidecars). Comparing the two shows
// what net/http's HTTP/2 costs per request against HTTP/1.1.
func BenchmarkForwardParallel(b *testing.B) {
	for _, tc := range []struct {
		name  string
		proto config.Protocol
	}{{"http1", config.ProtocolHTTP1}, {"h2c", config.ProtocolH2C}} {
		b.Run(tc.name, func(b *testing.B) { benchForwardParallel(b, tc.proto) })
	}
}

// BenchmarkForwardMetrics is BenchmarkForwardParallel/http1 with metrics off
// (no Observer: the default hot path) and on (a stats.Recorder observing
// every request), to show what metrics cost per request.
func BenchmarkForwardMetrics(b *testing.B) {
	b.Run("off", func(b *testing.B) { benchForwardParallel(b, config.ProtocolHTTP1) })
	b.Run("on", func(b *testing.B) {
		rec := stats.New(stats.Options{Workload: "bench", Namespace: "default"})
		benchForwardParallel(b, config.ProtocolHTTP1, func(st *State) { st.Observe = rec.Observe })
	})
}

func benchForwardParallel(b *testing.B, proto config.Protocol, opts ...func(*State)) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	p := new(http.Protocols)
	if proto == config.ProtocolH2C {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	app := &http.Server{Protocols: p, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go app.Serve(ln)
	defer app.Close()
	st, done := benchState(b, ln.Addr().String(), proto)
	defer done()
	for _, o := range opts {
		o(st)
	}
	log := slog.New(slog.DiscardHandler)
	srv := NewServer(NewHandler(log, st), st.HCM, log)
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go Serve(srv, pln)
	defer srv.Close()
	tr := &http.Transport{Protocols: p, MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	u := "http://" + pln.Addr().String() + "/"
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("GET", u, nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
