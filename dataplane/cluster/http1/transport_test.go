package http1

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tinymesh/tinymesh/dataplane/cluster/internal/upstreamtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newTransport(t *testing.T) *Transport {
	t.Helper()
	var d net.Dialer
	tr := &Transport{Dial: d.DialContext, MaxIdlePerHost: 4, IdleTimeout: time.Minute}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func TestKeepAliveReusesOneConnection(t *testing.T) {
	up := upstreamtest.Start(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Method+" "+r.URL.RequestURI()+" "+r.Host)
	})
	tr := newTransport(t)
	for i, m := range []string{http.MethodGet, http.MethodHead, http.MethodGet, http.MethodDelete} {
		req := upstreamtest.Request(t, t.Context(), m, up.URL+"/p?q=1", nil)
		req.Host = "svc.example"
		resp, body := upstreamtest.RoundTrip(t, tr, req)
		want := m + " /p?q=1 svc.example"
		if m == http.MethodHead {
			want = ""
		}
		if resp.StatusCode != 200 || body != want {
			t.Fatalf("request %d: %d %q, want 200 %q", i, resp.StatusCode, body, want)
		}
	}
	if n := up.Opened.Load(); n != 1 {
		t.Fatalf("upstream accepted %d connections for 4 sequential requests, want 1", n)
	}
}

func TestChunkedBodiesAndTrailers(t *testing.T) {
	up := upstreamtest.Start(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Sum")
		w.(http.Flusher).Flush() // no Content-Length: chunked
		io.WriteString(w, strings.ToUpper(string(b)))
		w.Header().Set("X-Sum", r.Trailer.Get("X-Req"))
	})
	tr := newTransport(t)
	pr, pw := io.Pipe()
	go func() {
		io.WriteString(pw, "hello ")
		io.WriteString(pw, "world")
		pw.Close()
	}()
	req := upstreamtest.Request(t, t.Context(), http.MethodPost, up.URL, pr)
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Req": {"42"}}
	resp, body := upstreamtest.RoundTrip(t, tr, req)
	if body != "HELLO WORLD" {
		t.Fatalf("body %q, want HELLO WORLD", body)
	}
	if got := resp.Trailer.Get("X-Sum"); got != "42" {
		t.Fatalf("response trailer X-Sum %q, want 42 (the request trailer echoed)", got)
	}
	// The body writer may report a moment after the response ends; the
	// connection goes back to the pool then.
	upstreamtest.WaitFor(t, "the connection back in the pool", func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return len(tr.idle[up.Addr()]) == 1
	})
	upstreamtest.RoundTrip(t, tr, upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL, nil))
	if n := up.Opened.Load(); n != 1 {
		t.Fatalf("upstream accepted %d connections, want 1 (reused after a chunked exchange)", n)
	}
}

func TestInformationalResponsesAreSkipped(t *testing.T) {
	up := upstreamtest.Start(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "final")
	})
	resp, body := upstreamtest.RoundTrip(t, newTransport(t), upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL, nil))
	if resp.StatusCode != 200 || body != "final" {
		t.Fatalf("got %d %q, want 200 final", resp.StatusCode, body)
	}
}

func TestStaleKeptAliveConnectionIsRetriedForGET(t *testing.T) {
	up := upstreamtest.Start(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	tr := newTransport(t)
	upstreamtest.RoundTrip(t, tr, upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL, nil))
	// The upstream closes its idle connections, as a server's idle timeout
	// does; the client's pooled connection is now dead.
	up.Config.SetKeepAlivesEnabled(false)
	upstreamtest.WaitFor(t, "the upstream to close the idle connection", func() bool { return up.Closed.Load() == 1 })
	up.Config.SetKeepAlivesEnabled(true)

	resp, body := upstreamtest.RoundTrip(t, tr, upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL, nil))
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("GET on a stale pooled connection: %d %q, want a retry on a new connection", resp.StatusCode, body)
	}
	if n := up.Opened.Load(); n != 2 {
		t.Fatalf("upstream accepted %d connections, want 2", n)
	}
}

func TestStaleKeptAliveConnectionIsNotRetriedForPOST(t *testing.T) {
	up := upstreamtest.Start(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	tr := newTransport(t)
	upstreamtest.RoundTrip(t, tr, upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL, nil))
	up.Config.SetKeepAlivesEnabled(false)
	upstreamtest.WaitFor(t, "the upstream to close the idle connection", func() bool { return up.Closed.Load() == 1 })

	_, err := tr.RoundTrip(upstreamtest.Request(t, t.Context(), http.MethodPost, up.URL, nil))
	if err == nil {
		t.Fatal("POST on a stale pooled connection succeeded; it must fail rather than risk sending twice")
	}
	if n := up.Opened.Load(); n != 1 {
		t.Fatalf("upstream accepted %d connections, want 1 (no retry)", n)
	}
}

func TestEarlyResponseWhileBodyStreams(t *testing.T) {
	up := upstreamtest.Start(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusRequestEntityTooLarge)
	})
	tr := newTransport(t)
	pr, pw := io.Pipe()
	defer pw.Close()
	go io.WriteString(pw, "the start of a body that never ends")
	req := upstreamtest.Request(t, t.Context(), http.MethodPut, up.URL, pr)
	req.ContentLength = -1
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("PUT: %v; want the upstream's early 413", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", resp.StatusCode)
	}
	// The request body never ended, so the connection is not at a request
	// boundary: the next request needs a new one.
	pw.CloseWithError(errors.New("client gave up"))
	upstreamtest.RoundTrip(t, tr, upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL, nil))
	if n := up.Opened.Load(); n != 2 {
		t.Fatalf("upstream accepted %d connections, want 2", n)
	}
}

// TestUnfinishedBodyIsNotReused answers before the request body ends and
// keeps the connection open, as an upstream that streams may: the
// connection is not at a request boundary, so it must not go back to the
// pool until the body has been written, although the response allows
// keep-alive.
func TestUnfinishedBodyIsNotReused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var accepted atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer c.Close()
				c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
				io.Copy(io.Discard, c) // keeps reading whatever comes
			}()
		}
	}()
	tr := newTransport(t)
	pr, pw := io.Pipe()
	defer pw.Close()
	go io.WriteString(pw, "a body that has not ended")
	req := upstreamtest.Request(t, t.Context(), http.MethodPut, "http://"+l.Addr().String(), pr)
	req.ContentLength = -1
	if _, body := upstreamtest.RoundTrip(t, tr, req); body != "ok" {
		t.Fatalf("body %q, want ok", body)
	}
	tr.mu.Lock()
	pooled := len(tr.idle[l.Addr().String()])
	tr.mu.Unlock()
	if pooled != 0 {
		t.Fatal("a connection still sending a request body went back to the pool")
	}
	// Once the body ends, the connection is at a request boundary.
	pw.Close()
	upstreamtest.WaitFor(t, "the connection back in the pool once its request body ended", func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return len(tr.idle[l.Addr().String()]) == 1
	})
	if n := accepted.Load(); n != 1 {
		t.Fatalf("accepted %d connections, want 1", n)
	}
}

// TestCancelUnblocksAResponseInProgress, with a plain cancellable context
// and with the servers' request context (upstreamtest.CancelContexts).
func TestCancelUnblocksAResponseInProgress(t *testing.T) {
	for name, newCtx := range upstreamtest.CancelContexts(t) {
		t.Run(name, func(t *testing.T) {
			release := make(chan struct{})
			up := upstreamtest.Start(t, func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "partial")
				w.(http.Flusher).Flush()
				select {
				case <-release:
				case <-r.Context().Done():
				}
			})
			defer close(release)
			tr := newTransport(t)
			ctx, cancel := newCtx()
			resp, err := tr.RoundTrip(upstreamtest.Request(t, ctx, http.MethodGet, up.URL, nil))
			if err != nil {
				t.Fatal(err)
			}
			upstreamtest.CancelMidBody(t, resp, cancel)
			upstreamtest.WaitFor(t, "the cancelled connection to close", func() bool { return up.Closed.Load() == 1 })
		})
	}
}

func TestTimeoutOnResponseHead(t *testing.T) {
	up := upstreamtest.Start(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	tr := newTransport(t)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err := tr.RoundTrip(upstreamtest.Request(t, ctx, http.MethodGet, up.URL, nil))
	if err == nil || ctx.Err() == nil {
		t.Fatalf("RoundTrip returned %v with the context at %v; want an error after the deadline", err, ctx.Err())
	}
}

func TestEarlyCloseAndConnectionCloseAreNotReused(t *testing.T) {
	up := upstreamtest.Start(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		io.WriteString(w, strings.Repeat("x", 64<<10))
	})
	tr := newTransport(t)
	// Closed before the end: the rest of the body is still on the wire.
	resp, err := tr.RoundTrip(upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL+"/big", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	upstreamtest.RoundTrip(t, tr, upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL+"/close", nil))
	upstreamtest.RoundTrip(t, tr, upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL+"/big", nil))
	if n := up.Opened.Load(); n != 3 {
		t.Fatalf("upstream accepted %d connections, want 3 (none reusable)", n)
	}
}

func TestPoolBoundsAndIdleTimeout(t *testing.T) {
	hold := make(chan struct{})
	var arrived atomic.Int64
	up := upstreamtest.Start(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			arrived.Add(1)
			<-hold
		}
		io.WriteString(w, "ok")
	})
	tr := newTransport(t)
	tr.MaxIdlePerHost = 1
	tr.IdleTimeout = 100 * time.Millisecond

	// Two requests at once need two connections; the pool keeps one.
	done := make(chan struct{}, 2)
	for range 2 {
		go func() {
			defer func() { done <- struct{}{} }()
			resp, err := tr.RoundTrip(upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL+"/hold", nil))
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	upstreamtest.WaitFor(t, "both requests to reach the upstream", func() bool { return arrived.Load() == 2 })
	close(hold)
	<-done
	<-done
	upstreamtest.WaitFor(t, "the connection over MaxIdlePerHost to close", func() bool { return up.Closed.Load() == 1 })

	// The kept one is closed by the reaper once idle past IdleTimeout,
	// with no request coming to find it stale.
	upstreamtest.WaitFor(t, "the idle connection to be reaped", func() bool { return up.Closed.Load() == 2 })
	tr.mu.Lock()
	n := len(tr.idle)
	tr.mu.Unlock()
	if n != 0 {
		t.Fatalf("pool holds %d addresses after reaping, want 0", n)
	}
}

func TestDialErrorIsReturnedUnchanged(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	_, err = newTransport(t).RoundTrip(upstreamtest.Request(t, t.Context(), http.MethodGet, "http://"+addr+"/", nil))
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("error %v; want the dialer's *net.OpError (the proxy retries dial failures on another endpoint)", err)
	}
}

// BenchmarkRoundTrip compares a GET through this transport with the same GET
// through net/http's Transport, against one real server.
func BenchmarkRoundTrip(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer srv.Close()
	var d net.Dialer
	p := new(http.Protocols)
	p.SetHTTP1(true)
	for _, c := range []struct {
		name string
		rt   http.RoundTripper
	}{
		{"http1", &Transport{Dial: d.DialContext, MaxIdlePerHost: 64, IdleTimeout: time.Minute}},
		{"net-http", &http.Transport{DialContext: d.DialContext, Protocols: p, MaxIdleConnsPerHost: 64, DisableCompression: true}},
	} {
		b.Run(c.name, func(b *testing.B) {
			buf := make([]byte, 512)
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
				resp, err := c.rt.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				for {
					if _, err := resp.Body.Read(buf); err != nil {
						break
					}
				}
				resp.Body.Close()
			}
			c.rt.(interface{ CloseIdleConnections() }).CloseIdleConnections()
		})
	}
}
