package dataplane_test

import (
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/proxytest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return resp, string(b)
}

func newReq(t *testing.T, method, addr, host, path string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	return req
}

func TestHTTP1KeepAliveThroughTwoProxies(t *testing.T) {
	app := proxytest.StartApp(t, "backend-v1", nil)
	m := proxytest.TwoHop(t, app.Addr, config.ProtocolHTTP1)
	c := proxytest.Client(t)

	var conns []string
	for i, host := range []string{"backend", "backend:8080", "Backend.Default.svc.cluster.local", "backend.default"} {
		req := newReq(t, "GET", m.OutboundAddr, host, "/hello?x=1", nil)
		req.Header.Set("Connection", "keep-alive, X-Hop")
		req.Header.Set("X-Hop", "must not arrive")
		trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { conns = append(conns, info.Conn.LocalAddr().String()) }}
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
		resp, body := do(t, c, req)
		if resp.StatusCode != 200 || body != "backend-v1" {
			t.Fatalf("request %d (host %q): got %d %q, want 200 %q", i, host, resp.StatusCode, body, "backend-v1")
		}
		got := map[string]string{
			"proto": resp.Header.Get("X-Got-Proto"), "path": resp.Header.Get("X-Got-Path"),
			"host": resp.Header.Get("X-Got-Host"), "hop": resp.Header.Get("X-Got-Connection"),
			"xff": resp.Header.Get("X-Got-Forwarded-For"),
		}
		want := map[string]string{"proto": "HTTP/1.1", "path": "/hello?x=1", "host": host, "hop": "", "xff": "127.0.0.1"}
		for k := range want {
			if got[k] != want[k] {
				t.Errorf("request %d: app saw %s = %q, want %q", i, k, got[k], want[k])
			}
		}
		if id := resp.Header.Get("X-Got-Request-Id"); len(id) != 36 {
			t.Errorf("request %d: x-request-id = %q, want a generated UUID", i, id)
		}
	}
	for i := 1; i < len(conns); i++ {
		if conns[i] != conns[0] {
			t.Errorf("request %d used client conn %s, want the first one %s (keep-alive)", i, conns[i], conns[0])
		}
	}
}

func TestH2CThroughTwoProxies(t *testing.T) {
	app := proxytest.StartApp(t, "backend-h2", nil)
	m := proxytest.TwoHop(t, app.Addr, config.ProtocolH2C)
	c := proxytest.H2CClient(t)
	for i := range 3 {
		resp, body := do(t, c, newReq(t, "GET", m.OutboundAddr, "backend", "/x", nil))
		if resp.StatusCode != 200 || body != "backend-h2" {
			t.Fatalf("request %d: got %d %q, want 200 backend-h2", i, resp.StatusCode, body)
		}
		if resp.ProtoMajor != 2 || resp.Header.Get("X-Got-Proto") != "HTTP/2.0" {
			t.Errorf("request %d: client proto %s, app saw %q; want HTTP/2 on both", i, resp.Proto, resp.Header.Get("X-Got-Proto"))
		}
	}
	// Streaming response with trailers, end to end.
	resp, body := do(t, c, newReq(t, "GET", m.OutboundAddr, "backend", "/stream?n=3", nil))
	if want := "chunk0\nchunk1\nchunk2\n"; body != want {
		t.Errorf("stream body = %q, want %q", body, want)
	}
	if got := resp.Trailer.Get("X-Checksum"); got != "n=3" {
		t.Errorf("trailer X-Checksum = %q, want n=3", got)
	}
	// Request body streamed back.
	resp, body = do(t, c, newReq(t, "POST", m.OutboundAddr, "backend", "/echo", strings.NewReader(strings.Repeat("a", 100000))))
	if resp.StatusCode != 200 || len(body) != 100000 {
		t.Errorf("echo: got %d with %d bytes, want 200 with 100000", resp.StatusCode, len(body))
	}
}
