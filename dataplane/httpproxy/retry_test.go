package httpproxy

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/tinymesh/tinymesh/dataplane/cluster"
	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/route"
)

// proxyForAddrs serves a catch-all route to one cluster "app" over addrs.
func proxyForAddrs(t *testing.T, proto config.Protocol, addrs ...string) string {
	t.Helper()
	rc := &config.RouteConfig{Name: "rc", VirtualHosts: []*config.VirtualHost{{Name: "vh", Domains: []string{"*"},
		Routes: []*config.Route{{Name: "r", Match: config.RouteMatch{Path: "/"},
			Action: &config.RouteAction{Clusters: []config.WeightedCluster{{Name: "app", Weight: 1}}}}}}}}
	tbl, err := route.Compile(rc)
	if err != nil {
		t.Fatal(err)
	}
	set := cluster.NewSet()
	t.Cleanup(set.Close)
	c := &config.Cluster{Name: "app", Protocol: proto, ConnectTimeout: time.Second}
	for _, a := range addrs {
		c.Endpoints = append(c.Endpoints, config.Endpoint{Address: a, Weight: 1})
	}
	ctbl := set.Build(&config.Snapshot{Clusters: map[string]*config.Cluster{"app": c}})
	hcm := &config.HTTPConnectionManager{RouteConfigName: rc.Name}
	log := slog.New(slog.DiscardHandler)
	return serveProxy(t, NewServer(NewHandler(log, &State{HCM: hcm, Routes: tbl, Clusters: ctbl}), hcm, log))
}

// closedAddr returns a loopback address nothing listens on: connects are refused.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	return ln.Addr().String()
}

// TestFailureAfterSendIsNotRetried: once the request reached an upstream, a
// failure there is the answer; trying another endpoint could run it twice.
func TestFailureAfterSendIsNotRetried(t *testing.T) {
	for _, tc := range []struct {
		name       string
		handler    func(w http.ResponseWriter, r *http.Request)
		wantStatus string // "" when the response starts and is then cut
	}{
		{"reset before response", func(w http.ResponseWriter, r *http.Request) {
			io.ReadAll(r.Body)
			if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
				c.Close()
			}
		}, "502 Bad Gateway"},
		{"reset mid response", func(w http.ResponseWriter, r *http.Request) {
			io.ReadAll(r.Body)
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(200)
			io.WriteString(w, "partial")
			http.NewResponseController(w).Flush()
			if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
				c.Close()
			}
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hits atomic.Int64
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				tc.handler(w, r)
			})
			a := serve(t, &http.Server{Handler: h})
			b := serve(t, &http.Server{Handler: h})
			addr := proxyForAddrs(t, config.ProtocolHTTP1, a, b)
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			for i := range 4 {
				// GET has no body, so only the error tells that the request
				// was sent; a POST's body was read as well.
				req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
				if i%2 == 1 {
					req, _ = http.NewRequest("POST", "http://"+addr+"/", strings.NewReader("payload"))
				}
				resp, err := tr.RoundTrip(req)
				var status string
				if err == nil {
					_, rerr := io.ReadAll(resp.Body)
					resp.Body.Close()
					if rerr == nil {
						status = resp.Status
					}
				}
				if status != tc.wantStatus {
					t.Errorf("request %d: got status %q (err %v), want %q", i, status, err, tc.wantStatus)
				}
				if n := hits.Load(); n != int64(i+1) {
					t.Fatalf("after request %d upstreams saw %d requests, want %d (no retry)", i, n, i+1)
				}
			}
		})
	}
}

// TestRetryH2CClusterPOST: a POST over HTTP/2 to an h2c cluster whose first
// endpoint is down arrives once and whole.
func TestRetryH2CClusterPOST(t *testing.T) {
	var hits atomic.Int64
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	app := serve(t, &http.Server{Protocols: p, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})})
	addr := proxyForAddrs(t, config.ProtocolH2C, closedAddr(t), app)
	tr := &http.Transport{Protocols: p}
	defer tr.CloseIdleConnections()
	for i := range 6 {
		want := fmt.Sprintf("body-%d-%s", i, strings.Repeat("y", 70000))
		req, _ := http.NewRequest("POST", "http://"+addr+"/", strings.NewReader(want))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || string(got) != want {
			t.Errorf("request %d: got %d, %d bytes (err %v), want 200 and the %d bytes sent", i, resp.StatusCode, len(got), err, len(want))
		}
	}
	if n := hits.Load(); n != 6 {
		t.Errorf("app saw %d requests, want 6", n)
	}
}

type closeCounter struct {
	io.Reader
	closes int
}

func (c *closeCounter) Close() error { c.closes++; return nil }

func TestAttemptBody(t *testing.T) {
	// Closed before any read (a failed dial): absorbed, and this attempt can
	// no longer read, so its bytes go to the next attempt intact.
	src := &closeCounter{Reader: strings.NewReader("abc")}
	b := &attemptBody{rc: src}
	b.Close()
	if _, err := b.Read(make([]byte, 1)); !errors.Is(err, http.ErrBodyReadAfterClose) {
		t.Errorf("Read after early Close: err %v, want ErrBodyReadAfterClose", err)
	}
	if b2 := (&attemptBody{rc: src}); b2.touched() || src.closes != 0 {
		t.Errorf("after early Close: touched %v, underlying closes %d; want false, 0", b2.touched(), src.closes)
	}
	next := &attemptBody{rc: src}
	got, _ := io.ReadAll(next)
	if string(got) != "abc" || !next.touched() {
		t.Errorf("next attempt read %q, touched %v; want %q, true", got, next.touched(), "abc")
	}
	// Closed after a read: passed on, so a reader blocked on the downstream
	// is released.
	next.Close()
	if src.closes != 1 {
		t.Errorf("Close after Read: underlying closes %d, want 1", src.closes)
	}
}

func TestNeverSent(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, true},
		{fmt.Errorf("wrapped: %w", &net.OpError{Op: "dial", Err: errors.New("i/o timeout")}), true},
		{&net.OpError{Op: "read", Err: errors.New("connection reset by peer")}, false},
		{http2.StreamError{StreamID: 3, Code: http2.ErrCodeRefusedStream}, true},
		{fmt.Errorf("wrapped: %w", http2.StreamError{StreamID: 3, Code: http2.ErrCodeCancel}), false},
		{io.ErrUnexpectedEOF, false},
		{errors.New("net/http: HTTP/1.x transport connection broken: EOF"), false},
	} {
		if got := neverSent(tc.err); got != tc.want {
			t.Errorf("neverSent(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestRetryBookkeepingAllocs: the per-request record of tried endpoints lives on
// the stack and picking an untried endpoint does not allocate.
func TestRetryBookkeepingAllocs(t *testing.T) {
	set := cluster.NewSet()
	defer set.Close()
	ctbl := set.Build(&config.Snapshot{Clusters: map[string]*config.Cluster{"app": {Name: "app", Protocol: config.ProtocolHTTP1,
		Endpoints: []config.Endpoint{{Address: "127.0.0.1:1", Weight: 1}, {Address: "127.0.0.1:2", Weight: 1}, {Address: "127.0.0.1:3", Weight: 1}}}}})
	c, _ := ctbl.Get("app")
	var seen [maxAttempts]string
	n := testing.AllocsPerRun(100, func() {
		var tr tried
		a, _ := c.Picker.Pick()
		tr.add(a)
		for tr.n < maxAttempts {
			a, _ = c.Picker.PickExcept(tr.list())
			tr.add(a)
		}
		seen = tr.addrs
	})
	if n != 0 {
		t.Errorf("%v allocs per request, want 0", n)
	}
	if seen[0] == seen[1] || seen[1] == seen[2] || seen[0] == seen[2] {
		t.Errorf("tried %q, want three different endpoints", seen)
	}
}
