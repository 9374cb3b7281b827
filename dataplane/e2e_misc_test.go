package dataplane_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/proxytest"
	"golang.org/x/net/websocket"
)

func TestWebSocketThroughTwoProxies(t *testing.T) {
	app := proxytest.StartWebSocketApp(t)
	// The app speaks HTTP/1.1; A's cluster to B is h2c, so the upgrade must take
	// a dedicated HTTP/1.1 connection from A to B.
	m := proxytest.TwoHop(t, app, config.ProtocolHTTP1)
	ws, err := dialWebSocket(m.OutboundAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for _, msg := range []string{"hello", strings.Repeat("x", 70000), "bye"} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatalf("send: %v", err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatalf("receive: %v", err)
		}
		if got != msg {
			t.Errorf("echo of %d bytes = %d bytes %.20q, want the same message", len(msg), len(got), got)
		}
	}
}

func TestUpgradeNotListedIsRefused(t *testing.T) {
	app := proxytest.StartApp(t, "app", nil)
	m := proxytest.TwoHop(t, app.Addr, config.ProtocolHTTP1)
	req := newReq(t, "GET", m.OutboundAddr, "backend", "/", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "custom-proto")
	resp, _ := do(t, proxytest.Client(t), req)
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Meshproxy-Error") != "upgrade_refused" {
		t.Errorf("got %d %q, want 403 upgrade_refused", resp.StatusCode, resp.Header.Get("X-Meshproxy-Error"))
	}
	if n := app.Requests.Load(); n != 0 {
		t.Errorf("app saw %d requests, want 0", n)
	}
}

// tcpMesh is client -> A (TCP listener) -> B (TCP listener) -> app.
func tcpMesh(t *testing.T, appAddr string) (aAddr string, snapA *config.Snapshot) {
	t.Helper()
	bAddr, aAddr := proxytest.FreeAddr(t), proxytest.FreeAddr(t)
	const in, out = "inbound|9000||", "outbound|9000||echo.default.svc.cluster.local"
	proxytest.StartProxy(t, "B", &config.Snapshot{
		Version:   "b1",
		Listeners: []*config.Listener{{Name: "inbound", Address: bAddr, Direction: config.Inbound, TCP: &config.TCPProxy{Cluster: in}}},
		Clusters:  map[string]*config.Cluster{in: proxytest.Cluster(in, config.ProtocolTCP, appAddr)},
	})
	snapA = &config.Snapshot{
		Version:   "a1",
		Listeners: []*config.Listener{{Name: "outbound_tcp|9000||echo.default.svc.cluster.local", Address: aAddr, TCP: &config.TCPProxy{Cluster: out, IdleTimeout: 10 * time.Second}}},
		Clusters:  map[string]*config.Cluster{out: proxytest.Cluster(out, config.ProtocolTCP, bAddr)},
	}
	return aAddr, snapA
}

func TestTCPHalfCloseThroughTwoProxies(t *testing.T) {
	app := proxytest.StartTCPEcho(t)
	aAddr, snapA := tcpMesh(t, app.Addr)
	proxytest.StartProxy(t, "A", snapA)
	for i := range 3 {
		conn, err := net.DialTimeout("tcp", aAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		msg := fmt.Sprintf("hello %d", i)
		if _, err := io.WriteString(conn, msg); err != nil {
			t.Fatal(err)
		}
		// The echo server answers only after EOF, so the reply proves the
		// half-close crossed both proxies while the other direction stayed open.
		if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(conn)
		conn.Close()
		if err != nil || string(got) != "echo:"+msg {
			t.Errorf("conn %d: got %q (err %v), want %q", i, got, err, "echo:"+msg)
		}
	}
}

// rawExchange writes req on a fresh connection and returns the status line and
// whether the proxy closed the connection afterwards.
func rawExchange(t *testing.T, addr, req string) (status string, closed bool) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading status line: %v", err)
	}
	_, err = io.ReadAll(br) // returns at EOF; a deadline error means still open
	return strings.TrimSpace(line), err == nil
}

func TestBadRequestsAreRejectedAndNotForwarded(t *testing.T) {
	app := proxytest.StartApp(t, "app", nil)
	m := proxytest.TwoHop(t, app.Addr, config.ProtocolHTTP1)
	big := strings.Repeat("a", 20<<10) // beyond MaxRequestHeadersBytes (8 KiB) plus slack
	tests := []struct {
		name string
		req  string
		want string
	}{
		{"malformed request line", "GARBAGE\r\n\r\n", "HTTP/1.1 400 Bad Request"},
		{"bad version", "GET / HTTP/9.x\r\nHost: backend\r\n\r\n", "HTTP/1.1 400 Bad Request"},
		{"content-length and transfer-encoding", "POST / HTTP/1.1\r\nHost: backend\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "HTTP/1.1 400 Bad Request"},
		{"transfer-encoding then content-length", "POST / HTTP/1.1\r\nHost: backend\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n0\r\n\r\n", "HTTP/1.1 400 Bad Request"},
		{"conflicting content-lengths", "POST / HTTP/1.1\r\nHost: backend\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", "HTTP/1.1 400 Bad Request"},
		{"oversized headers", "GET / HTTP/1.1\r\nHost: backend\r\nX-Big: " + big + "\r\n\r\n", "HTTP/1.1 431 Request Header Fields Too Large"},
		// Over the limit but within net/http's own 4 KiB of slack.
		{"headers just over the limit", "GET / HTTP/1.1\r\nHost: backend\r\nX-Big: " + strings.Repeat("a", 9<<10) + "\r\n\r\n", "HTTP/1.1 431 Request Header Fields Too Large"},
		{"short request line", "GET /\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, closed := rawExchange(t, m.OutboundAddr, tt.req)
			if status != tt.want || !closed {
				t.Errorf("got %q, closed=%v; want %q, closed=true", status, closed, tt.want)
			}
		})
	}
	if n := app.Requests.Load(); n != 0 {
		t.Errorf("app saw %d requests, want 0", n)
	}
	// A sound request on a connection after a chunked one still works: the
	// smuggling guard follows framing across keep-alive requests.
	conn, err := net.DialTimeout("tcp", m.OutboundAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, "POST /a HTTP/1.1\r\nHost: backend\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"+
		"POST /b HTTP/1.1\r\nHost: backend\r\nContent-Length: 7\r\n\r\nabc\r\n\r\n"+
		"GET /c HTTP/1.1\r\nHost: backend\r\n\r\n")
	br := bufio.NewReader(conn)
	for _, path := range []string{"/a", "/b", "/c"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response for %s: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Got-Path") != path {
			t.Errorf("pipelined %s: got %d for %q, want 200 for %s", path, resp.StatusCode, resp.Header.Get("X-Got-Path"), path)
		}
	}
}

func TestErrorMapping(t *testing.T) {
	app := proxytest.StartApp(t, "app", nil)
	dead := proxytest.FreeAddr(t)
	addr := proxytest.FreeAddr(t)
	wc := func(n string) config.WeightedCluster { return config.WeightedCluster{Name: n, Weight: 1} }
	snap := &config.Snapshot{
		Version:   "v1",
		Listeners: []*config.Listener{proxytest.HTTPListener("outbound_http", addr, config.Outbound)},
		Routes: map[string]*config.RouteConfig{"outbound_http": {Name: "outbound_http", VirtualHosts: []*config.VirtualHost{
			proxytest.Forward("refused", []string{"refused"}, 0, wc("refused")).VirtualHosts[0],
			proxytest.Forward("empty", []string{"empty"}, 0, wc("empty")).VirtualHosts[0],
			proxytest.Forward("unknown", []string{"unknown-cluster"}, 0, wc("nope")).VirtualHosts[0],
			proxytest.Forward("slow", []string{"slow"}, 100*time.Millisecond, wc("app")).VirtualHosts[0],
			{Name: "direct", Domains: []string{"direct"}, Routes: []*config.Route{{Name: "teapot", Match: config.RouteMatch{Path: "/"},
				DirectResponse: &config.DirectResponse{Status: 418, Body: "short and stout"}, ResponseHeadersToAdd: []config.HeaderValueOption{{Name: "x-direct", Value: "1"}}}}},
			{Name: "nomatch", Domains: []string{"nomatch"}, Routes: []*config.Route{{Name: "only-exact", Match: config.RouteMatch{PathKind: config.PathExact, Path: "/only"}, Action: &config.RouteAction{Clusters: []config.WeightedCluster{wc("app")}}}}},
		}}},
		Clusters: map[string]*config.Cluster{
			"refused": proxytest.Cluster("refused", config.ProtocolHTTP1, dead),
			"empty":   proxytest.Cluster("empty", config.ProtocolH2C),
			"app":     proxytest.Cluster("app", config.ProtocolHTTP1, app.Addr),
		},
	}
	proxytest.StartProxy(t, "A", snap)
	c := proxytest.Client(t)
	tests := []struct {
		host, path string
		status     int
		reason     string
	}{
		{"no-such-host", "/", 404, "route_not_found"},
		{"nomatch", "/other", 404, "route_not_found"},
		{"refused", "/", 503, "upstream_connect_failure"},
		{"empty", "/", 503, "no_healthy_upstream"},
		{"unknown-cluster", "/", 503, "cluster_not_found"},
		{"slow", "/slow?ms=5000", 504, "upstream_timeout"},
		{"direct", "/", 418, ""},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			resp, _ := do(t, c, newReq(t, "GET", addr, tt.host, tt.path, nil))
			if got := resp.Header.Get("X-Meshproxy-Error"); resp.StatusCode != tt.status || got != tt.reason {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, got, tt.status, tt.reason)
			}
		})
	}
	resp, body := do(t, c, newReq(t, "GET", addr, "direct", "/", nil))
	if body != "short and stout" || resp.Header.Get("X-Direct") != "1" {
		t.Errorf("direct response: body %q, x-direct %q; want %q, 1", body, resp.Header.Get("X-Direct"), "short and stout")
	}
}

func TestRefusedUpstreamThroughTwoProxies(t *testing.T) {
	m := proxytest.TwoHop(t, proxytest.FreeAddr(t), config.ProtocolHTTP1)
	resp, _ := do(t, proxytest.Client(t), newReq(t, "GET", m.OutboundAddr, "backend", "/", nil))
	if got := resp.Header.Get("X-Meshproxy-Error"); resp.StatusCode != 503 || got != "upstream_connect_failure" {
		t.Errorf("got %d %q, want 503 upstream_connect_failure", resp.StatusCode, got)
	}
}

// dialWebSocket opens a WebSocket to backend:8080/ws through the proxy listening
// at addr, with a 10 s deadline on the connection.
func dialWebSocket(addr string) (*websocket.Conn, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	cfg, err := websocket.NewConfig("ws://backend:8080/ws", "http://localhost/")
	if err != nil {
		conn.Close()
		return nil, err
	}
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("websocket handshake: %w", err)
	}
	return ws, nil
}
