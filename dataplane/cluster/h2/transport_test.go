package h2

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/http2"

	"github.com/tinymesh/tinymesh/dataplane/cluster/internal/upstreamtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newUpstream starts a real net/http server speaking prior-knowledge HTTP/2
// (h2c) on loopback.
func newUpstream(t *testing.T, h http.HandlerFunc, cfg ...func(*http.Server)) *upstreamtest.Server {
	t.Helper()
	h2c := func(s *http.Server) {
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		s.Protocols = p
	}
	return upstreamtest.Start(t, h, append([]func(*http.Server){h2c}, cfg...)...)
}

func newTransport(t *testing.T) *Transport {
	t.Helper()
	var d net.Dialer
	tr := &Transport{Dial: d.DialContext, IdleTimeout: time.Minute}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func TestMultiplexesOnOneConnection(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header()["X-Multi"] = []string{"a", "b"}
		fmt.Fprintf(w, "%s %s %s %s %q", r.Proto, r.Method, r.Host, r.URL.RequestURI(), r.Header.Values("X-In"))
	})
	tr := newTransport(t)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			req := upstreamtest.Request(t, t.Context(), http.MethodGet, fmt.Sprintf("%s/p/%d?q=1", up.URL, i), nil)
			req.Host = "svc.example:8080"
			req.Header["X-In"] = []string{"1", "2"}
			resp, err := tr.RoundTrip(req)
			if err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := fmt.Sprintf(`HTTP/2.0 GET svc.example:8080 /p/%d?q=1 ["1" "2"]`, i)
			if string(b) != want || len(resp.Header["X-Multi"]) != 2 || resp.ProtoMajor != 2 {
				errs <- fmt.Errorf("request %d: %q %v, want %q and two X-Multi values", i, b, resp.Header, want)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := up.Opened.Load(); n != 1 {
		t.Fatalf("upstream accepted %d connections for 20 concurrent requests, want 1", n)
	}
}

func TestRequestBodyBeyondTheWindowsAndTrailersBothWays(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		w.Header().Set("Trailer", "X-Sum")
		fmt.Fprintf(w, "%d %s", n, r.Trailer.Get("X-Req"))
		w.Header().Set("X-Sum", hex.EncodeToString(h.Sum(nil)))
	})
	body := strings.Repeat("0123456789abcdef", 64<<10) // 1 MiB: past the 64 KiB initial windows
	sum := sha256.Sum256([]byte(body))
	pr, pw := io.Pipe()
	go func() {
		io.WriteString(pw, body)
		pw.Close()
	}()
	req := upstreamtest.Request(t, t.Context(), http.MethodPost, up.URL, pr)
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Req": nil}
	req.Trailer.Set("X-Req", "42")
	resp, got := upstreamtest.RoundTrip(t, newTransport(t), req)
	if want := fmt.Sprintf("%d 42", len(body)); got != want {
		t.Fatalf("upstream saw %q, want %q (the whole body and the request trailer)", got, want)
	}
	if _, ok := resp.Trailer["X-Sum"]; !ok {
		t.Fatal("declared trailer X-Sum missing from resp.Trailer")
	}
	if resp.Trailer.Get("X-Sum") != hex.EncodeToString(sum[:]) {
		t.Fatalf("response trailer X-Sum %q, want the body's SHA-256", resp.Trailer.Get("X-Sum"))
	}
}

func TestFullDuplexStreaming(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		sc := bufio.NewScanner(r.Body)
		for sc.Scan() {
			fmt.Fprintf(w, "echo %s\n", sc.Text())
			w.(http.Flusher).Flush()
		}
	})
	pr, pw := io.Pipe()
	req := upstreamtest.Request(t, t.Context(), http.MethodPost, up.URL, pr)
	req.ContentLength = -1
	resp, err := newTransport(t).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		fmt.Fprintf(pw, "line %d\n", i)
		got, err := br.ReadString('\n')
		if want := fmt.Sprintf("echo line %d\n", i); got != want || err != nil {
			t.Fatalf("round %d: %q, %v; want %q before the request body ends", i, got, err, want)
		}
	}
	pw.Close()
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after the request ended: %q, %v; want a clean end", rest, err)
	}
}

// TestCancelResetsTheStreamAndKeepsTheConnection, with a plain cancellable
// context and with the servers' request context (upstreamtest.CancelContexts).
func TestCancelResetsTheStreamAndKeepsTheConnection(t *testing.T) {
	for name, newCtx := range upstreamtest.CancelContexts(t) {
		t.Run(name, func(t *testing.T) {
			reset := make(chan struct{})
			up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/hang" {
					io.WriteString(w, "ok")
					return
				}
				io.WriteString(w, "partial")
				w.(http.Flusher).Flush()
				<-r.Context().Done()
				close(reset)
			})
			tr := newTransport(t)
			ctx, cancel := newCtx()
			resp, err := tr.RoundTrip(upstreamtest.Request(t, ctx, http.MethodGet, up.URL+"/hang", nil))
			if err != nil {
				t.Fatal(err)
			}
			upstreamtest.CancelMidBody(t, resp, cancel)
			select {
			case <-reset:
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream handler never saw the stream reset")
			}
			wantConnectionKept(t, tr, up)
		})
	}
}

// wantConnectionKept: after a reset stream, the next request to up gets
// "ok" on the connection up accepted first, its only one.
func wantConnectionKept(t *testing.T, tr *Transport, up *upstreamtest.Server) {
	t.Helper()
	if _, body := upstreamtest.RoundTrip(t, tr, upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL, nil)); body != "ok" {
		t.Fatalf("next request: %q", body)
	}
	if n := up.Opened.Load(); n != 1 {
		t.Fatalf("upstream accepted %d connections, want 1: a reset stream leaves the connection usable", n)
	}
}

func TestEarlyCloseResetsTheStream(t *testing.T) {
	done := make(chan error, 1)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/big" {
			io.WriteString(w, "ok")
			return
		}
		chunk := []byte(strings.Repeat("x", 16<<10))
		for range 1024 { // 16 MiB: more than the stream window, so the writer blocks
			if _, err := w.Write(chunk); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	})
	tr := newTransport(t)
	resp, err := tr.RoundTrip(upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL+"/big", nil))
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(resp.Body, make([]byte, 10))
	resp.Body.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the upstream wrote all 16 MiB: closing the body did not reset the stream")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream handler is still writing after the body was closed")
	}
	wantConnectionKept(t, tr, up)
}

func TestTrailersOnlyAndEmptyResponses(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/grpc-error": // gRPC's trailers-only response: one HEADERS frame with END_STREAM
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Grpc-Status", "5")
			w.WriteHeader(200)
		case "/early-hints":
			w.Header().Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			io.WriteString(w, "final")
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})
	tr := newTransport(t)
	resp, body := upstreamtest.RoundTrip(t, tr, upstreamtest.Request(t, t.Context(), http.MethodPost, up.URL+"/grpc-error", nil))
	if resp.StatusCode != 200 || resp.Header.Get("Grpc-Status") != "5" || body != "" {
		t.Fatalf("trailers-only response: %d %v %q", resp.StatusCode, resp.Header, body)
	}
	if resp, body := upstreamtest.RoundTrip(t, tr, upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL+"/early-hints", nil)); resp.StatusCode != 200 || body != "final" {
		t.Fatalf("after a 103: %d %q, want 200 final", resp.StatusCode, body)
	}
	if resp, body := upstreamtest.RoundTrip(t, tr, upstreamtest.Request(t, t.Context(), http.MethodHead, up.URL, nil)); resp.StatusCode != 204 || body != "" {
		t.Fatalf("HEAD: %d %q", resp.StatusCode, body)
	}
}

func TestLargeHeaderBlockUsesContinuation(t *testing.T) {
	big := strings.Repeat("v", 40<<10) // past the 16 KiB frame size: HEADERS + CONTINUATION
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, len(r.Header.Get("X-Big")) == len(big))
	})
	req := upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL, nil)
	req.Header.Set("X-Big", big)
	if _, body := upstreamtest.RoundTrip(t, newTransport(t), req); body != "true" {
		t.Fatalf("upstream got the 40 KiB header: %s", body)
	}
}

func TestGracefulShutdownFinishesStreamsInFlight(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
		io.WriteString(w, "finished")
	})
	tr := newTransport(t)
	type result struct {
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := tr.RoundTrip(upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL, nil))
		if err != nil {
			res <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{string(b), err}
	}()
	<-arrived
	shut := make(chan error, 1)
	go func() { shut <- up.Config.Shutdown(t.Context()) }() // GOAWAY, then waits for the stream
	time.Sleep(50 * time.Millisecond)
	close(release)
	if r := <-res; r.err != nil || r.body != "finished" {
		t.Fatalf("request in flight during a graceful shutdown: %q, %v; want it to finish", r.body, r.err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	_, err := tr.RoundTrip(upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL, nil))
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("request after the shutdown: %v; want a dial error (the old connection is not used)", err)
	}
}

func TestStreamsBeyondTheServersLimitOpenAnotherConnection(t *testing.T) {
	var inFlight, peak atomic.Int64
	release := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-release
		inFlight.Add(-1)
		io.WriteString(w, "ok")
	}, func(s *http.Server) { s.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 2} })
	tr := newTransport(t)
	// The server's SETTINGS must have arrived before the burst.
	close(release)
	upstreamtest.RoundTrip(t, tr, upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL, nil))
	release = make(chan struct{})
	var wg sync.WaitGroup
	fails := make(chan error, 6)
	for range 6 {
		wg.Go(func() {
			resp, err := tr.RoundTrip(upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL, nil))
			if err != nil {
				fails <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	upstreamtest.WaitFor(t, "all 6 requests at the upstream", func() bool { return inFlight.Load() == 6 })
	close(release)
	wg.Wait()
	close(fails)
	for err := range fails {
		t.Error(err)
	}
	if n := up.Opened.Load(); n != 3 {
		t.Fatalf("upstream accepted %d connections for 6 concurrent streams at 2 per connection, want 3", n)
	}
}

func TestIdleConnectionsAreClosed(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	tr := newTransport(t)
	tr.IdleTimeout = 100 * time.Millisecond
	upstreamtest.RoundTrip(t, tr, upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL, nil))
	upstreamtest.WaitFor(t, "the idle connection to be closed", func() bool { return up.Closed.Load() == 1 })
	if _, body := upstreamtest.RoundTrip(t, tr, upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL, nil)); body != "ok" {
		t.Fatalf("request after the idle close: %q", body)
	}
}

// TestSharedDialOutlivesTheRequestThatStartedIt: requests to a new endpoint
// wait for one dial; when the request that started it is cancelled, the
// others dial again instead of failing with its cancellation.
func TestSharedDialOutlivesTheRequestThatStartedIt(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	var d net.Dialer
	var dials atomic.Int64
	started := make(chan struct{})
	tr := &Transport{IdleTimeout: time.Minute, Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if dials.Add(1) == 1 {
			close(started)
			<-ctx.Done() // a slow connect, given up by its request
			return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
		}
		return d.DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithCancel(t.Context())
	first := make(chan error, 1)
	go func() {
		_, err := tr.RoundTrip(upstreamtest.Request(t, ctx, http.MethodGet, up.URL, nil))
		first <- err
	}()
	<-started
	second := make(chan string, 1)
	go func() {
		resp, err := tr.RoundTrip(upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL, nil))
		if err != nil {
			second <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		second <- string(b)
	}()
	time.Sleep(20 * time.Millisecond) // the second request is waiting on the first one's dial
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled request: %v, want context.Canceled", err)
	}
	if got := <-second; got != "ok" {
		t.Fatalf("the request that shared the cancelled dial: %s, want ok", got)
	}
}

// TestMixedStreamsUnderConcurrency runs requests of every kind at once on one
// connection (bodiless, echoed bodies of various sizes, cancelled mid-body,
// closed early) and checks every complete response byte for byte: the race
// detector and goleak watch the rest.
func TestMixedStreamsUnderConcurrency(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			for range 64 {
				if _, err := w.Write(make([]byte, 16<<10)); err != nil {
					return
				}
			}
			return
		}
		io.Copy(w, r.Body)
	})
	tr := newTransport(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := range 40 {
				switch (w + i) % 4 {
				case 0: // bodiless
					resp, err := tr.RoundTrip(upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL, nil))
					if err != nil {
						errs <- err
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				case 1: // echo, up to ~100 kB: past the initial window at times
					body := strings.Repeat(fmt.Sprintf("%d-%d;", w, i), (i*997)%12000)
					req := upstreamtest.Request(t, t.Context(), http.MethodPost, up.URL, strings.NewReader(body))
					resp, err := tr.RoundTrip(req)
					if err != nil {
						errs <- err
						return
					}
					got, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil || string(got) != body {
						errs <- fmt.Errorf("echo of %d bytes: got %d bytes, %v", len(body), len(got), err)
						return
					}
				case 2: // cancelled while the response streams
					ctx, cancel := context.WithCancel(t.Context())
					resp, err := tr.RoundTrip(upstreamtest.Request(t, ctx, http.MethodGet, up.URL+"/big", nil))
					if err == nil {
						io.ReadFull(resp.Body, make([]byte, 1000))
						cancel()
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
					cancel()
				case 3: // closed early
					resp, err := tr.RoundTrip(upstreamtest.Request(t, t.Context(), http.MethodGet, up.URL+"/big", nil))
					if err != nil {
						errs <- err
						return
					}
					io.ReadFull(resp.Body, make([]byte, 100))
					resp.Body.Close()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Every stream ended: nothing is left reserved on the connection.
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, list := range tr.conns {
		for _, c := range list {
			c.mu.Lock()
			n, open := c.reserved, len(c.streams)
			c.mu.Unlock()
			if n != 0 || open != 0 {
				t.Errorf("connection holds %d reservations and %d streams after every request ended", n, open)
				for id, st := range c.streams {
					t.Errorf("  stream %d: path %q ended %v sentEnd %v err %v delivered %v removed %v body pending %v", id, st.req.URL.Path, st.ended, st.sentEnd, st.err, st.delivered, st.removed, st.in.Pending())
				}
			}
		}
	}
}

func TestUnprocessed(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{errConnUnusable, true},
		{errGoAwayRefused, true},
		{http2.StreamError{StreamID: 5, Code: http2.ErrCodeRefusedStream}, true},
		{fmt.Errorf("wrapped: %w", http2.StreamError{StreamID: 5, Code: http2.ErrCodeRefusedStream}), true},
		{http2.StreamError{StreamID: 5, Code: http2.ErrCodeCancel}, false},
		{fmt.Errorf("h2: connection to x lost: %w", io.EOF), false},   // it may have been processed
		{&net.OpError{Op: "dial", Err: errors.New("refused")}, false}, // the dialer's, not this transport's
	} {
		if got := Unprocessed(tc.err); got != tc.want {
			t.Errorf("Unprocessed(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// BenchmarkRoundTrip compares a GET through this transport with the same GET
// through net/http's HTTP/2 transport, against one real h2c server.
func BenchmarkRoundTrip(b *testing.B) {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	srv.Config.Protocols = p
	srv.Start()
	defer srv.Close()
	var d net.Dialer
	for _, c := range []struct {
		name string
		rt   http.RoundTripper
	}{
		{"h2", &Transport{Dial: d.DialContext, IdleTimeout: time.Minute}},
		{"net-http", &http.Transport{DialContext: d.DialContext, Protocols: p, DisableCompression: true}},
	} {
		b.Run(c.name, func(b *testing.B) {
			buf := make([]byte, 512)
			b.ReportAllocs()
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
					resp, err := c.rt.RoundTrip(req)
					if err != nil {
						b.Error(err)
						return
					}
					for {
						if _, err := resp.Body.Read(buf); err != nil {
							break
						}
					}
					resp.Body.Close()
				}
			})
			c.rt.(interface{ CloseIdleConnections() }).CloseIdleConnections()
		})
	}
}
