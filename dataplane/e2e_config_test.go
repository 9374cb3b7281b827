package dataplane_test

import (
	"context"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tinymesh/tinymesh/dataplane"
	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/proxytest"
)

// gatedApp answers /slow only after release is closed, announcing each arrival.
func gatedApp(t *testing.T, name string, arrived chan<- struct{}, release <-chan struct{}) *proxytest.App {
	return proxytest.StartApp(t, name, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-App", name)
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		io.WriteString(w, name)
	}))
}

// splitMesh is A (listeners outbound_http and outbound_extra, both on route
// outbound_http) splitting by weight between B1 -> v1 and B2 -> v2.
type splitMesh struct {
	a                *dataplane.Proxy
	addr, extraAddr  string
	v1Addr, v2Addr   string // inbound addresses of B1 and B2
	arrived, release chan struct{}
}

func newSplitMesh(t *testing.T) *splitMesh {
	m := &splitMesh{arrived: make(chan struct{}, 100), release: make(chan struct{})}
	v1 := gatedApp(t, "v1", m.arrived, m.release)
	v2 := gatedApp(t, "v2", m.arrived, m.release)
	_, _, m.v1Addr = proxytest.Inbound(t, "B1", v1.Addr, config.ProtocolHTTP1)
	_, _, m.v2Addr = proxytest.Inbound(t, "B2", v2.Addr, config.ProtocolH2C)
	m.addr, m.extraAddr = proxytest.FreeAddr(t), proxytest.FreeAddr(t)
	m.a = proxytest.StartProxy(t, "A", m.snapshot("a1", 90, 10, true))
	return m
}

func (m *splitMesh) snapshot(version string, w1, w2 uint32, extra bool) *config.Snapshot {
	s := proxytest.OutboundSnapshot(version, m.addr,
		config.WeightedCluster{Name: "v1", Weight: w1}, config.WeightedCluster{Name: "v2", Weight: w2})
	s.Clusters["v1"] = proxytest.Cluster("v1", config.ProtocolH2C, m.v1Addr)
	s.Clusters["v2"] = proxytest.Cluster("v2", config.ProtocolH2C, m.v2Addr)
	if extra {
		l := proxytest.HTTPListener("outbound_extra", m.extraAddr, config.Outbound)
		l.HTTP.RouteConfigName = "outbound_http"
		// Long enough for the slow requests of TestConfigSwapUnderLoad on a
		// loaded machine: this test is about draining, not its deadline.
		l.HTTP.DrainTimeout = time.Minute
		s.Listeners = append(s.Listeners, l)
	}
	return s
}

// split sends n requests from conc goroutines and returns the share served by v1.
func split(t *testing.T, c *http.Client, addr string, n, conc int) float64 {
	t.Helper()
	var v1, total, failed atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for range n / conc {
				resp, err := c.Get("http://" + addr + "/")
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					continue
				}
				total.Add(1)
				if resp.Header.Get("X-App") == "v1" {
					v1.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f != 0 {
		t.Errorf("%d of %d requests failed", f, n)
	}
	return float64(v1.Load()) / float64(total.Load())
}

func hostClient(t *testing.T) *http.Client {
	c := proxytest.Client(t)
	tr := c.Transport.(*http.Transport)
	tr.MaxIdleConnsPerHost = 16
	// Slow requests wait for the test to release them on a loaded machine.
	c.Timeout = time.Minute
	// Requests carry the service name as authority, like an app would.
	c.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		r.Host = "backend"
		return tr.RoundTrip(r)
	})
	return c
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestWeightedSplit90to10(t *testing.T) {
	m := newSplitMesh(t)
	got := split(t, hostClient(t), m.addr, 5000, 8)
	if math.Abs(got-0.9) > 0.02 {
		t.Errorf("v1 share over 5000 requests = %.4f, want 0.90 ± 0.02", got)
	}
}

func TestConfigSwapUnderLoad(t *testing.T) {
	m := newSplitMesh(t)
	c := hostClient(t)

	// In-flight slow requests on both listeners.
	const slow = 10
	type result struct {
		status int
		err    error
	}
	results := make(chan result, 2*slow)
	for _, addr := range []string{m.addr, m.extraAddr} {
		for range slow {
			go func() {
				resp, err := c.Get("http://" + addr + "/slow")
				if err != nil {
					results <- result{err: err}
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				results <- result{status: resp.StatusCode}
			}()
		}
	}
	deadline := time.After(10 * time.Second)
	for i := range 2 * slow {
		select {
		case <-m.arrived:
		case <-deadline:
			t.Fatalf("only %d of %d slow requests reached the apps", i, 2*slow)
		}
	}

	// Steady fast traffic across the swap.
	stop := make(chan struct{})
	var bg sync.WaitGroup
	var bgOK, bgFailed atomic.Int64
	for range 4 {
		bg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get("http://" + m.addr + "/")
				if err != nil {
					bgFailed.Add(1)
					t.Errorf("background request: %v", err)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					bgFailed.Add(1)
					t.Errorf("background request: status %d (%s)", resp.StatusCode, resp.Header.Get("X-Meshproxy-Error"))
					continue
				}
				bgOK.Add(1)
			}
		})
	}

	if err := m.a.Apply(m.snapshot("a2", 50, 50, false)); err != nil {
		t.Fatalf("Apply(a2): %v", err)
	}
	if _, ok := m.a.Addr("outbound_extra"); ok {
		t.Errorf("listener outbound_extra still active after it was removed")
	}
	if got := m.a.Snapshot().Version; got != "a2" {
		t.Errorf("Snapshot().Version = %q, want a2", got)
	}
	// A small sample (the machine is shared and -race is slow) shared with the
	// background traffic: the new weights show, not their precision, which
	// TestWeightedSplit90to10 covers.
	if got := split(t, c, m.addr, 200, 4); math.Abs(got-0.5) > 0.1 {
		t.Errorf("v1 share after the swap = %.4f, want 0.50 ± 0.10", got)
	}
	// The removed listener refuses new connections while draining.
	if conn, err := net.DialTimeout("tcp", m.extraAddr, time.Second); err == nil {
		conn.Close()
		t.Errorf("dial removed listener %s: connected, want refused", m.extraAddr)
	}

	close(m.release)
	for i := range 2 * slow {
		select {
		case r := <-results:
			if r.err != nil || r.status != 200 {
				t.Errorf("in-flight request %d: status %d, err %v; want 200", i, r.status, r.err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("in-flight request %d never finished", i)
		}
	}
	close(stop)
	bg.Wait()
	if bgOK.Load() == 0 || bgFailed.Load() != 0 {
		t.Errorf("background traffic: %d ok, %d failed; want some ok and none failed", bgOK.Load(), bgFailed.Load())
	}
}

func TestApplyWithTakenAddressKeepsOldConfig(t *testing.T) {
	app := proxytest.StartApp(t, "app", nil)
	m := proxytest.TwoHop(t, app.Addr, config.ProtocolHTTP1)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()

	next := proxytest.OutboundSnapshot("a2", m.OutboundAddr, config.WeightedCluster{Name: "nope", Weight: 1})
	next.Clusters["nope"] = proxytest.Cluster("nope", config.ProtocolH2C)
	next.Listeners = append(next.Listeners, proxytest.HTTPListener("taken", taken.Addr().String(), config.Outbound))
	err = m.A.Apply(next)
	if err == nil {
		t.Fatal("Apply with a taken address: err = nil, want an error")
	}
	if msg := err.Error(); !strings.Contains(msg, `"taken"`) || !strings.Contains(msg, taken.Addr().String()) {
		t.Errorf("error %q does not name the listener and address %s", msg, taken.Addr())
	}
	if got := m.A.Snapshot().Version; got != "a1" {
		t.Errorf("Snapshot().Version = %q, want a1 (unchanged)", got)
	}
	if !m.A.Ready() {
		t.Error("Ready() = false after a failed Apply, want true")
	}
	resp, body := do(t, proxytest.Client(t), newReq(t, "GET", m.OutboundAddr, "backend", "/", nil))
	if resp.StatusCode != 200 || body != "app" {
		t.Errorf("after failed Apply: got %d %q, want 200 app (old config)", resp.StatusCode, body)
	}
}

func TestReadyAndClose(t *testing.T) {
	p := dataplane.New(dataplane.Options{})
	if p.Ready() || p.Snapshot() != nil {
		t.Errorf("new proxy: Ready() = %v, Snapshot() = %v; want false, nil", p.Ready(), p.Snapshot())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := p.Apply(&config.Snapshot{}); err == nil {
		t.Error("Apply after Close: err = nil, want ErrClosed")
	}
}

func TestTCPListenerRemovedDrainsOpenConnections(t *testing.T) {
	app := proxytest.StartTCPEcho(t)
	aAddr, snapA := tcpMesh(t, app.Addr)
	a := proxytest.StartProxy(t, "A", snapA)
	conn, err := net.DialTimeout("tcp", aAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "before ")
	// Only a connection the proxy has accepted survives the listener closing
	// (the kernel resets its backlog); the app accepting proves both hops did.
	select {
	case <-app.Accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("the app never accepted the proxied connection")
	}
	if err := a.Apply(&config.Snapshot{Version: "a2"}); err != nil {
		t.Fatalf("Apply(empty): %v", err)
	}
	io.WriteString(conn, "after")
	conn.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != "echo:before after" {
		t.Errorf("got %q (err %v), want %q", got, err, "echo:before after")
	}
}

func TestListenerRenameAndMove(t *testing.T) {
	app := proxytest.StartApp(t, "app", nil)
	m := proxytest.TwoHop(t, app.Addr, config.ProtocolHTTP1)
	c := proxytest.Client(t)
	get := func(addr string) (int, error) {
		resp, err := c.Do(newReq(t, "GET", addr, "backend", "/", nil))
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	// Renamed at the same address: the socket is kept, no bind conflict.
	renamed := proxytest.OutboundSnapshot("a2", m.OutboundAddr, config.WeightedCluster{Name: proxytest.OutboundCluster, Weight: 1})
	renamed.Clusters = m.SnapA.Clusters
	renamed.Listeners[0].Name = "outbound_http_renamed"
	renamed.Listeners[0].HTTP.RouteConfigName = "outbound_http"
	if err := m.A.Apply(renamed); err != nil {
		t.Fatalf("Apply(renamed): %v", err)
	}
	if _, ok := m.A.Addr("outbound_http_renamed"); !ok {
		t.Error("renamed listener not active")
	}
	c.Transport.(*http.Transport).CloseIdleConnections()
	if code, err := get(m.OutboundAddr); err != nil || code != 200 {
		t.Errorf("after rename: %d, %v; want 200", code, err)
	}
	// Moved to a new address: the new one serves, the old one is released.
	moved := proxytest.OutboundSnapshot("a3", proxytest.FreeAddr(t), config.WeightedCluster{Name: proxytest.OutboundCluster, Weight: 1})
	moved.Clusters = m.SnapA.Clusters
	if err := m.A.Apply(moved); err != nil {
		t.Fatalf("Apply(moved): %v", err)
	}
	c.Transport.(*http.Transport).CloseIdleConnections()
	if code, err := get(moved.Listeners[0].Address); err != nil || code != 200 {
		t.Errorf("new address: %d, %v; want 200", code, err)
	}
	if conn, err := net.DialTimeout("tcp", m.OutboundAddr, time.Second); err == nil {
		conn.Close()
		t.Errorf("old address %s still accepts connections", m.OutboundAddr)
	}
}

func TestCloseCutsDrainsAtItsDeadline(t *testing.T) {
	app := proxytest.StartTCPEcho(t)
	aAddr, snapA := tcpMesh(t, app.Addr)
	a := dataplane.New(dataplane.Options{DrainTimeout: time.Minute})
	if err := a.Apply(snapA); err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", aAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	select {
	case <-app.Accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("the app never accepted the proxied connection")
	}
	// The listener goes away with a connection open: a one-minute drain.
	if err := a.Apply(&config.Snapshot{Version: "a2"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := a.Close(ctx); err == nil {
		t.Error("Close with a connection still open: err = nil, want the deadline error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v, want about its 100ms deadline", d)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		t.Errorf("downstream after Close: read %v, want EOF (closed by the proxy)", err)
	}
}
