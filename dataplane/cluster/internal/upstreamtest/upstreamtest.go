// Package upstreamtest helps the upstream transports' tests: real net/http
// servers on loopback that count the connections they accept and close, and
// the requests and waits those tests make.
package upstreamtest

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/internal/reqctx"
)

// Server is a running net/http server on loopback.
type Server struct {
	*httptest.Server
	Opened, Closed atomic.Int64 // connections accepted, and closed or hijacked
}

// Start starts a server for h, applying configure to it first (protocols,
// HTTP/2 settings); t's cleanup closes it.
func Start(t testing.TB, h http.HandlerFunc, configure ...func(*http.Server)) *Server {
	t.Helper()
	s := &Server{Server: httptest.NewUnstartedServer(h)}
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.Opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			s.Closed.Add(1)
		}
	}
	for _, f := range configure {
		f(s.Config)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return strings.TrimPrefix(s.URL, "http://") }

// Request builds a request or fails the test.
func Request(t testing.TB, ctx context.Context, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// RoundTrip sends req on rt and reads the whole response body, failing the
// test on any error.
func RoundTrip(t testing.TB, rt http.RoundTripper, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading the body of %s %s: %v", req.Method, req.URL, err)
	}
	return resp, string(b)
}

// WaitFor polls cond for up to 5 s: connection closes reach the server a
// moment after the client closes.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// CancelContexts are the kinds of request context a transport watches, each
// made cancellable under t: a plain one (watched through context.AfterFunc)
// and the servers' reqctx.Context (watched through its slot).
func CancelContexts(t testing.TB) map[string]func() (context.Context, context.CancelFunc) {
	return map[string]func() (context.Context, context.CancelFunc){
		"context.WithCancel": func() (context.Context, context.CancelFunc) { return context.WithCancel(t.Context()) },
		"reqctx.Context": func() (context.Context, context.CancelFunc) {
			c := new(reqctx.Context)
			c.Init(t.Context())
			return c, func() { c.Cancel(nil) }
		},
	}
}

// CancelMidBody reads the first bytes of resp, which must be "partial",
// cancels its request while the rest is awaited, and fails t unless the
// body then ends in an error; it closes the body.
func CancelMidBody(t testing.TB, resp *http.Response, cancel context.CancelFunc) {
	t.Helper()
	buf := make([]byte, 7)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "partial" {
		t.Fatalf("first bytes %q, %v", buf, err)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		cancel()
	}()
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("reading a response whose request was cancelled ended without an error")
	}
	resp.Body.Close()
}
