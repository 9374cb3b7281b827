package httpproxy

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/tinymesh/tinymesh/dataplane/cluster"
	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/httpproxy/httpserver"
	"github.com/tinymesh/tinymesh/dataplane/route"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve runs an app server on a loopback listener until cleanup and returns
// its address.
func serve(t *testing.T, srv *http.Server) string {
	return serveOn(t, srv.Serve, srv.Close)
}

// serveProxy runs a proxy server, with the smuggling guard, as serve does.
func serveProxy(t *testing.T, srv *httpserver.Server) string {
	return serveOn(t, func(ln net.Listener) error { return Serve(srv, ln) }, srv.Close)
}

func serveOn(t *testing.T, run func(net.Listener) error, stop func() error) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		run(ln)
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})
	return ln.Addr().String()
}

// proxyFor serves rc with one HTTP/1.1 or h2c cluster "app" at appAddr.
func proxyFor(t *testing.T, rc *config.RouteConfig, appAddr string, proto config.Protocol) string {
	t.Helper()
	tbl, err := route.Compile(rc)
	if err != nil {
		t.Fatal(err)
	}
	set := cluster.NewSet()
	t.Cleanup(set.Close)
	ctbl := set.Build(&config.Snapshot{Clusters: map[string]*config.Cluster{"app": {
		Name: "app", Protocol: proto, ConnectTimeout: time.Second, Endpoints: []config.Endpoint{{Address: appAddr, Weight: 1}}}}})
	hcm := &config.HTTPConnectionManager{RouteConfigName: rc.Name, UseRemoteAddress: true}
	log := slog.New(slog.DiscardHandler)
	h := NewHandler(log, &State{HCM: hcm, Routes: tbl, Clusters: ctbl})
	return serveProxy(t, NewServer(h, hcm, log))
}

func TestHeaderMutationsAndRewrites(t *testing.T) {
	var got http.Header
	var gotHost, gotURI string
	app := serve(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, gotHost, gotURI = r.Header.Clone(), r.Host, r.URL.RequestURI()
		w.Header().Set("X-Secret", "internal")
		w.Header().Set("Connection", "X-Conn-Only")
		w.Header().Set("X-Conn-Only", "hop")
	})})
	hv := func(name, value string, app bool) config.HeaderValueOption {
		return config.HeaderValueOption{Name: name, Value: value, Append: app}
	}
	rc := &config.RouteConfig{
		Name:                   "rc",
		RequestHeadersToAdd:    []config.HeaderValueOption{hv("x-level", "rc", false), hv("x-all", "rc", true)},
		RequestHeadersToRemove: []string{"x-drop-rc"},
		ResponseHeadersToAdd:   []config.HeaderValueOption{hv("x-resp", "rc", true)},
		VirtualHosts: []*config.VirtualHost{{
			Name: "vh", Domains: []string{"svc"},
			RequestHeadersToAdd:     []config.HeaderValueOption{hv("x-all", "vh", true)},
			RequestHeadersToRemove:  []string{"x-drop-vh"},
			ResponseHeadersToRemove: []string{"x-secret"},
			Routes: []*config.Route{{
				Name:                   "r",
				Match:                  config.RouteMatch{Path: "/old"},
				RequestHeadersToAdd:    []config.HeaderValueOption{hv("x-all", "route", true), hv("x-level", "route", false)},
				RequestHeadersToRemove: []string{"x-drop-route"},
				ResponseHeadersToAdd:   []config.HeaderValueOption{hv("x-resp", "route", true)},
				Action: &config.RouteAction{
					PrefixRewrite: "/new", HostRewrite: "rewritten.local",
					Clusters: []config.WeightedCluster{{Name: "app", Weight: 1,
						RequestHeadersToAdd:    []config.HeaderValueOption{hv("x-all", "wc", true)},
						RequestHeadersToRemove: []string{"x-drop-wc"}}},
				},
			}},
		}},
	}
	addr := proxyFor(t, rc, app, config.ProtocolHTTP1)
	req, _ := http.NewRequest("GET", "http://"+addr+"/old/thing?q=1", nil)
	req.Host = "svc"
	for _, k := range []string{"X-Drop-Rc", "X-Drop-Vh", "X-Drop-Route", "X-Drop-Wc", "X-Keep"} {
		req.Header.Set(k, "1")
	}
	req.Header.Set("X-Forwarded-For", "10.0.0.1")
	req.Header.Set("Proxy-Authorization", "secret")
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	if gotHost != "rewritten.local" || gotURI != "/new/thing?q=1" {
		t.Errorf("upstream saw host %q uri %q, want rewritten.local /new/thing?q=1", gotHost, gotURI)
	}
	for _, k := range []string{"X-Drop-Rc", "X-Drop-Vh", "X-Drop-Route", "X-Drop-Wc", "Proxy-Authorization"} {
		if v, ok := got[k]; ok {
			t.Errorf("upstream saw %s = %q, want it removed", k, v)
		}
	}
	wantReq := map[string][]string{
		"X-Keep":          {"1"},
		"X-All":           {"wc", "route", "vh", "rc"},
		"X-Level":         {"rc"}, // least specific level applied last wins
		"X-Forwarded-For": {"10.0.0.1, 127.0.0.1"},
	}
	for k, want := range wantReq {
		if diff := cmp.Diff(want, got[k]); diff != "" {
			t.Errorf("upstream header %s (-want +got):\n%s", k, diff)
		}
	}
	if diff := cmp.Diff([]string{"route", "rc"}, resp.Header["X-Resp"]); diff != "" {
		t.Errorf("response X-Resp (-want +got):\n%s", diff)
	}
	for _, k := range []string{"X-Secret", "X-Conn-Only"} {
		if v := resp.Header.Get(k); v != "" {
			t.Errorf("response %s = %q, want it removed", k, v)
		}
	}
}

func TestGRPCTimeoutIsADeadline(t *testing.T) {
	released := make(chan struct{})
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	app := serve(t, &http.Server{Protocols: p, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // the proxy must cancel the upstream call
		close(released)
	})})
	rc := &config.RouteConfig{Name: "rc", VirtualHosts: []*config.VirtualHost{{Name: "vh", Domains: []string{"*"},
		Routes: []*config.Route{{Name: "r", Match: config.RouteMatch{Path: "/"},
			Action: &config.RouteAction{Clusters: []config.WeightedCluster{{Name: "app", Weight: 1}}}}}}}}
	addr := proxyFor(t, rc, app, config.ProtocolH2C)

	tr := &http.Transport{Protocols: p}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("POST", "http://"+addr+"/pkg.Svc/Method", strings.NewReader("\x00\x00\x00\x00\x00"))
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	req.Header.Set("Grpc-Timeout", "50m")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	got := [3]string{resp.Status, resp.Header.Get("Grpc-Status"), resp.Header.Get(ErrorHeader)}
	if diff := cmp.Diff([3]string{"200 OK", "4", "upstream_timeout"}, got); diff != "" {
		t.Errorf("status, grpc-status, reason (-want +got):\n%s", diff)
	}
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Error("upstream call was not cancelled")
	}
}

func TestParseGRPCTimeout(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"100m", 100 * time.Millisecond, true},
		{"1S", time.Second, true},
		{"2M", 2 * time.Minute, true},
		{"1H", time.Hour, true},
		{"5u", 5 * time.Microsecond, true},
		{"7n", 7, true},
		{"", 0, false},
		{"m", 0, false},
		{"12x", 0, false},
		{"123456789S", 0, false}, // more than 8 digits
		{"-1S", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseGRPCTimeout(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseGRPCTimeout(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestStripHop(t *testing.T) {
	h := http.Header{
		"Connection":        {"keep-alive, X-Custom", "Upgrade"},
		"X-Custom":          {"1"},
		"Keep-Alive":        {"timeout=5"},
		"Proxy-Connection":  {"x"},
		"Proxy-Foo":         {"x"},
		"Te":                {"trailers, deflate"},
		"Transfer-Encoding": {"chunked"},
		"Upgrade":           {"websocket"},
		"X-Keep":            {"1"},
	}
	stripHop(h, false)
	want := http.Header{"Te": {"trailers"}, "X-Keep": {"1"}}
	if diff := cmp.Diff(want, h); diff != "" {
		t.Errorf("stripHop (-want +got):\n%s", diff)
	}
	up := http.Header{"Connection": {"Upgrade, X-Custom"}, "X-Custom": {"1"}, "Upgrade": {"websocket"}}
	stripHop(up, true)
	want = http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}
	if diff := cmp.Diff(want, up); diff != "" {
		t.Errorf("stripHop(upgrade) (-want +got):\n%s", diff)
	}
}

func TestSniffFraming(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string // delivered as separate reads
		badAt  int64
	}{
		{"clean keep-alive", []string{"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"}, -1},
		{"cl and te", []string{"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"}, 0},
		{"split across reads", []string{"POST / HTTP/1.1\r\nContent-Le", "ngth: 3\r\nTransfer-Enc", "oding: chunked\r\n\r\n"}, 0},
		{"second request", []string{"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab\r\n", "GET / HTTP/1.1\r\ncontent-length: 0\r\ntransfer-encoding: chunked\r\n\r\n"}, 1},
		{"header names in a body do not count", []string{"POST / HTTP/1.1\r\nContent-Length: 45\r\n\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n"}, -1},
		{"header names in chunks do not count", []string{"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1b;ext=1\r\nContent-Length: 1\r\nX: y\r\n\r\n\r\n0\r\nX-Trailer: 1\r\n\r\n", "GET / HTTP/1.1\r\n\r\n"}, -1},
		{"framing stays aligned after chunks", []string{"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1b;ext=1\r\nContent-Length: 1\r\nX: y\r\n\r\n\r\n0\r\n\r\n", "GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"}, 2},
		{"framing stays aligned after a sized body", []string{"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel", "lo", "GET / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"}, 1},
		{"h2 preface turns the guard off", []string{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSniffConn(nil, 0)
			for _, c := range tt.chunks {
				s.scan([]byte(c))
			}
			if got := s.badAt.Load(); got != tt.badAt {
				t.Errorf("badAt = %d, want %d", got, tt.badAt)
			}
		})
	}
}

func TestErrorResponses(t *testing.T) {
	for r := RouteNotFound; r <= HeadersTooLarge; r++ {
		if reasons[r].name == "" || reasons[r].status == 0 || reasons[r].grpc == 0 {
			t.Errorf("reason %d has no complete mapping: %+v", r, reasons[r])
		}
	}
}

func TestSniffHeaderLimit(t *testing.T) {
	s := newSniffConn(nil, 64)
	s.scan([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	if got := s.badAt.Load(); got != -1 {
		t.Fatalf("small header block: badAt = %d, want -1", got)
	}
	s.scan([]byte("GET / HTTP/1.1\r\nX-Big: " + strings.Repeat("a", 64) + "\r\n\r\n"))
	if got, why := s.badAt.Load(), s.badWhy; got != 1 || why != HeadersTooLarge {
		t.Errorf("big header block: badAt = %d (%v), want 1 (%v)", got, why, HeadersTooLarge)
	}
}

func FuzzSniff(f *testing.F) {
	f.Add([]byte("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), 7)
	f.Add([]byte("GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"), 3)
	f.Add([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 1)
	f.Fuzz(func(t *testing.T, b []byte, split int) {
		s := newSniffConn(nil, 0)
		if split > 0 && split < len(b) {
			s.scan(b[:split])
			s.scan(b[split:])
			return
		}
		s.scan(b)
	})
}

func TestUpstreamResetMidBodyIsNotAHappyEnding(t *testing.T) {
	app := serve(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(200)
		io.WriteString(w, "partial")
		http.NewResponseController(w).Flush()
		// Cut the connection mid-body (chunked, so only the missing last
		// chunk tells the proxy the body is incomplete).
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close()
		}
	})})
	rc := &config.RouteConfig{Name: "rc", VirtualHosts: []*config.VirtualHost{{Name: "vh", Domains: []string{"*"},
		Routes: []*config.Route{{Name: "r", Match: config.RouteMatch{Path: "/"},
			Action: &config.RouteAction{Clusters: []config.WeightedCluster{{Name: "app", Weight: 1}}}}}}}}
	addr := proxyFor(t, rc, app, config.ProtocolHTTP1)
	for _, h2 := range []bool{false, true} {
		p := new(http.Protocols)
		p.SetHTTP1(!h2)
		p.SetUnencryptedHTTP2(h2)
		tr := &http.Transport{Protocols: p}
		resp, err := tr.RoundTrip(mustReq(t, "http://"+addr+"/"))
		if err != nil {
			t.Fatalf("h2=%v: %v", h2, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		tr.CloseIdleConnections()
		if err == nil {
			t.Errorf("h2=%v: body %q read cleanly, want an error for the truncated response", h2, b)
		}
	}
}

func mustReq(t *testing.T, url string) *http.Request {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// BenchmarkForwardHTTP1 measures one keep-alive HTTP/1.1 request through the
// proxy to an HTTP/1.1 upstream on loopback (client and upstream included).
func BenchmarkForwardHTTP1(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go app.Serve(ln)
	defer app.Close()
	rc := &config.RouteConfig{Name: "rc", VirtualHosts: []*config.VirtualHost{{Name: "vh", Domains: []string{"*"},
		Routes: []*config.Route{{Name: "r", Match: config.RouteMatch{Path: "/"},
			Action: &config.RouteAction{Clusters: []config.WeightedCluster{{Name: "app", Weight: 1}}}}}}}}
	tbl, _ := route.Compile(rc)
	set := cluster.NewSet()
	defer set.Close()
	ctbl := set.Build(&config.Snapshot{Clusters: map[string]*config.Cluster{"app": {
		Name: "app", ConnectTimeout: time.Second, Endpoints: []config.Endpoint{{Address: ln.Addr().String(), Weight: 1}}}}})
	hcm := &config.HTTPConnectionManager{RouteConfigName: "rc"}
	log := slog.New(slog.DiscardHandler)
	srv := NewServer(NewHandler(log, &State{HCM: hcm, Routes: tbl, Clusters: ctbl}), hcm, log)
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go Serve(srv, pln)
	defer srv.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	url := "http://" + pln.Addr().String() + "/"
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest("GET", url, nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
