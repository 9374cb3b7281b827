package httpserver

// Connection lifecycle: the watch for a client going away, Hijack, h2c,
// Shutdown and Close, idle and header timeouts.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// serveErr waits for Serve to return, as the test's cleanup also does.
func (ts *testServer) serveErr(t *testing.T) error {
	t.Helper()
	select {
	case err := <-ts.served:
		ts.served <- err // for the cleanup
		return err
	case <-time.After(hangGuard):
		t.Fatal("Serve did not return")
		return nil
	}
}

// waitClosing waits until Shutdown, started on another goroutine, has begun.
func (ts *testServer) waitClosing(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(hangGuard); !ts.closing.Load(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Shutdown did not begin")
		}
	}
}

// waitWatchRead waits, from a handler, until the watch on w's connection has
// read a byte the client sent after the request (white box: only then is the
// byte in neither the socket nor the read buffer).
func waitWatchRead(w http.ResponseWriter) bool {
	c := w.(*response).c
	for deadline := time.Now().Add(hangGuard); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		c.watchMu.Lock()
		saved := c.cr.hasSaved
		c.watchMu.Unlock()
		if saved {
			return true
		}
	}
	return false
}

func TestWatchCancelsWhenClientCloses(t *testing.T) {
	started, cancelled := make(chan struct{}), make(chan struct{})
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(hangGuard):
		}
	})})
	c := dialRaw(t, ts.addr)
	c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	// Past WatchDelay, the client still there: the watch must not cancel.
	time.Sleep(3 * WatchDelay)
	select {
	case <-cancelled:
		t.Fatal("request cancelled while its client is connected")
	default:
	}
	c.Close()
	select {
	case <-cancelled:
	case <-time.After(time.Second):
		t.Fatal("request not cancelled within 1s of its client closing the connection")
	}
}

func TestWatchKeepsPipelinedByte(t *testing.T) {
	started := make(chan struct{})
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/slow" {
			echoPath(w, r)
			return
		}
		close(started)
		read := waitWatchRead(w)
		fmt.Fprintf(w, "watch read=%v ctx=%v", read, r.Context().Err())
	})})
	c := dialRaw(t, ts.addr)
	c.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	// Sent while the first request is in its handler: the watch reads its
	// first byte, which must go to the next request.
	c.send("POST /next HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
	if _, body := c.read("GET"); body != "watch read=true ctx=<nil>" {
		t.Errorf("first: %q, want the watch to have read a byte without cancelling", body)
	}
	if resp, body := c.read("POST"); resp.StatusCode != 200 || body != "POST /next hi" {
		t.Errorf("pipelined: %d %q, want 200 %q", resp.StatusCode, body, "POST /next hi")
	}
}

func TestWatchWaitsForRequestBody(t *testing.T) {
	gotHello, cancelled := make(chan struct{}), make(chan struct{})
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		first := make([]byte, 5)
		io.ReadFull(r.Body, first)
		close(gotHello)
		// Busy, not reading, while the rest of the body arrives and
		// WatchDelay passes: the watch must leave the body alone.
		time.Sleep(3 * WatchDelay)
		rest, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s%s %v", first, rest, err)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(hangGuard):
		}
	})})
	c := dialRaw(t, ts.addr)
	c.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
	<-gotHello
	time.Sleep(2 * WatchDelay)
	c.send("world")
	c.SetReadDeadline(time.Now().Add(hangGuard))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("helloworld <nil>"))
	if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != "helloworld <nil>" {
		t.Fatalf("handler read %q, %v; want %q", got, err, "helloworld <nil>")
	}
	// The body has been read: now the watch is on, and sees the close.
	c.Close()
	select {
	case <-cancelled:
	case <-time.After(time.Second):
		t.Fatal("request not cancelled within 1s of its client closing the connection")
	}
}

func TestHalfClosedClientGetsResponse(t *testing.T) {
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The watch sees the half-close as EOF and cancels, as net/http's
		// server does; the response still goes out, as net/http's does.
		select {
		case <-r.Context().Done():
		case <-time.After(hangGuard):
		}
		io.WriteString(w, "done")
	})})
	c := dialRaw(t, ts.addr)
	c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	c.Conn.(*net.TCPConn).CloseWrite()
	if resp, body := c.read("GET"); resp.StatusCode != 200 || body != "done" {
		t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, "done")
	}
}

func TestHijack(t *testing.T) {
	hijacked := make(chan net.Conn, 1)
	returned := make(chan struct{})
	errs := make(chan error, 2)
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(returned)
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			errs <- err
			return
		}
		_, err = w.Write([]byte("x"))
		errs <- err
		// Sent by the client in the same write as the request: already in
		// the server's read buffer.
		buf := make([]byte, 5)
		if _, err := io.ReadFull(brw, buf); err != nil {
			errs <- err
			conn.Close()
			return
		}
		fmt.Fprintf(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\ngot %s\n", buf)
		errs <- nil
		hijacked <- conn
	})})
	c := dialRaw(t, ts.addr)
	c.send("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\nhello")
	if err := <-errs; !errors.Is(err, http.ErrHijacked) {
		t.Errorf("Write after Hijack: %v, want http.ErrHijacked", err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if resp, _ := c.read("GET"); resp.StatusCode != 101 {
		t.Fatalf("got %d, want 101", resp.StatusCode)
	}
	if line, err := c.br.ReadString('\n'); line != "got hello\n" {
		t.Fatalf("got %q, %v", line, err)
	}
	hc := <-hijacked
	defer hc.Close()
	<-returned
	// The server is done with the connection; Shutdown does not wait for
	// it either.
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	c.send("ping")
	hc.SetReadDeadline(time.Now().Add(hangGuard))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(hc, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("hijacked side read %q, %v: the server closed or read the connection", buf, err)
	}
	io.WriteString(hc, "pong")
	if _, err := io.ReadFull(c.br, buf); err != nil || string(buf) != "pong" {
		t.Errorf("client read %q, %v", buf, err)
	}
}

// TestHijackAfterWatchRead hijacks after the watch has read the first byte
// sent behind the request; the hijacker must get it whether it reads through
// the returned bufio.Reader or, after the buffered bytes, from the conn.
func TestHijackAfterWatchRead(t *testing.T) {
	started := make(chan struct{}, 1)
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		if !waitWatchRead(w) {
			http.Error(w, "the watch read nothing", 500)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 5)
		if r.URL.Path == "/reader" {
			io.ReadFull(brw, buf)
		} else {
			n, _ := brw.Read(buf[:brw.Reader.Buffered()])
			io.ReadFull(conn, buf[n:])
		}
		fmt.Fprintf(conn, "got %s\n", buf)
	})})
	for _, path := range []string{"/reader", "/conn"} {
		c := dialRaw(t, ts.addr)
		c.send("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")
		<-started
		c.send("hello")
		c.SetReadDeadline(time.Now().Add(hangGuard))
		if line, err := c.br.ReadString('\n'); line != "got hello\n" {
			t.Errorf("%s: got %q, %v; want %q", path, line, err, "got hello\n")
		}
	}
}

func TestH2C(t *testing.T) {
	const streams = 8
	var inflight atomic.Int32
	together := make(chan struct{})
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/together":
			if inflight.Add(1) == streams {
				close(together)
			}
			select {
			case <-together:
				fmt.Fprintf(w, "together %d", r.ProtoMajor)
			case <-time.After(2 * time.Second):
				fmt.Fprintf(w, "alone %d", r.ProtoMajor)
			}
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
		case "/grpc":
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
			w.WriteHeader(200)
			w.Write([]byte{0, 0, 0, 0, 2, 'h', 'i'})
			w.Header().Set("Grpc-Status", "0")
			w.Header().Set("Grpc-Message", "fine")
			w.Header().Set(http.TrailerPrefix+"X-Late", "late")
		}
	})})
	c := newH2CClient(t)
	// One connection first: net/http's client dials one per request
	// until it has one to share.
	if resp, body := get(t, c, ts.url("/echo")); resp.ProtoMajor != 2 || body != "" {
		t.Fatalf("got HTTP/%d %q", resp.ProtoMajor, body)
	}

	var wg sync.WaitGroup
	bodies := make([]string, streams)
	for i := range streams {
		wg.Go(func() {
			resp, err := c.Get(ts.url("/together"))
			if err != nil {
				bodies[i] = err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			bodies[i] = string(b)
		})
	}
	wg.Wait()
	for i, b := range bodies {
		if b != "together 2" {
			t.Errorf("stream %d: %q, want all %d streams in their handlers at once over HTTP/2", i, b, streams)
		}
	}

	payload := pattern(200 << 10)
	resp, err := c.Post(ts.url("/echo"), "application/octet-stream", bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, payload) {
		t.Errorf("echo over h2c: got %d bytes, want the %d sent", len(got), len(payload))
	}

	req, _ := http.NewRequest("POST", ts.url("/grpc"), bytes.NewReader([]byte{0, 0, 0, 0, 0}))
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || len(got) != 7 || resp.Trailer.Get("Grpc-Status") != "0" || resp.Trailer.Get("Grpc-Message") != "fine" || resp.Trailer.Get("X-Late") != "late" {
		t.Errorf("gRPC-style response: HTTP/%d, %d bytes, trailers %v", resp.ProtoMajor, len(got), resp.Trailer)
	}
	if n := ts.ln.accepted.Load(); n != 1 {
		t.Errorf("accepted %d connections, want 1", n)
	}
}

func TestShutdown(t *testing.T) {
	newServer := func(t *testing.T) (*testServer, chan struct{}, chan struct{}) {
		started, release := make(chan struct{}, 1), make(chan struct{})
		ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				started <- struct{}{}
				select {
				case <-release:
				case <-r.Context().Done(): // Close
				case <-time.After(hangGuard):
				}
			}
			io.WriteString(w, "done")
		})})
		return ts, started, release
	}
	shutdown := func(ts *testServer, d time.Duration) chan error {
		errc := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), d)
			defer cancel()
			errc <- ts.Shutdown(ctx)
		}()
		return errc
	}

	t.Run("idle connection", func(t *testing.T) {
		ts, _, _ := newServer(t)
		c := dialRaw(t, ts.addr)
		c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.read("GET")
		// An idle connection is closed at the first look, well before this
		// deadline.
		if err := <-shutdown(ts, hangGuard); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		c.wantClosed()
		if err := ts.serveErr(t); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v, want http.ErrServerClosed", err)
		}
	})

	t.Run("request in flight", func(t *testing.T) {
		ts, started, release := newServer(t)
		c := dialRaw(t, ts.addr)
		c.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
		<-started
		errc := shutdown(ts, hangGuard)
		ts.waitClosing(t)
		if nc, err := net.Dial("tcp", ts.addr); err == nil {
			nc.Close()
			t.Error("new connection accepted after Shutdown")
		}
		select {
		case err := <-errc:
			t.Fatalf("Shutdown returned %v with a request in flight", err)
		case <-time.After(2 * WatchDelay):
		}
		close(release)
		if resp, body := c.read("GET"); body != "done" || !resp.Close {
			t.Errorf("got %q, Close %v; want the response with Connection: close", body, resp.Close)
		}
		c.wantClosed()
		if err := <-errc; err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})

	t.Run("new connection's first request", func(t *testing.T) {
		ts, _, _ := newServer(t)
		c := dialRaw(t, ts.addr)
		for ts.ln.accepted.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		errc := shutdown(ts, hangGuard)
		ts.waitClosing(t)
		c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, body := c.read("GET"); body != "done" || !resp.Close {
			t.Errorf("got %q, Close %v; want the response with Connection: close", body, resp.Close)
		}
		if err := <-errc; err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})

	t.Run("handler outlives ctx", func(t *testing.T) {
		ts, started, release := newServer(t)
		defer close(release)
		c := dialRaw(t, ts.addr)
		c.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
		<-started
		if err := <-shutdown(ts, 2*WatchDelay); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown: %v, want context.DeadlineExceeded", err)
		}
		if err := ts.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		// Close cut the connection: no response.
		c.wantClosed()
		if err := ts.serveErr(t); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v, want http.ErrServerClosed", err)
		}
	})

	t.Run("idle h2c connection", func(t *testing.T) {
		ts, _, _ := newServer(t)
		if resp, body := get(t, newH2CClient(t), ts.url("/")); resp.ProtoMajor != 2 || body != "done" {
			t.Fatalf("got HTTP/%d %q", resp.ProtoMajor, body)
		}
		if err := <-shutdown(ts, hangGuard); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})

	t.Run("Close cuts h2c streams", func(t *testing.T) {
		ts, started, _ := newServer(t)
		errc := make(chan error, 1)
		go func() {
			resp, err := newH2CClient(t).Get(ts.url("/slow"))
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			errc <- err
		}()
		<-started
		ts.Close()
		if err := <-errc; err == nil {
			t.Error("request in flight completed after Close")
		}
	})

	t.Run("h2c GOAWAY", func(t *testing.T) {
		ts, started, release := newServer(t)
		c := dialRaw(t, ts.addr)
		c.send(http2.ClientPreface)
		fr := http2.NewFramer(c.Conn, c.br)
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		fr.WriteSettings()
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/slow"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
		// readUntil reads frames until stop says so, acking SETTINGS.
		readUntil := func(stop func(http2.Frame) bool) {
			t.Helper()
			for {
				c.SetReadDeadline(time.Now().Add(hangGuard))
				f, err := fr.ReadFrame()
				if err != nil {
					t.Fatalf("reading frames: %v", err)
				}
				if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
					fr.WriteSettingsAck()
				}
				if stop(f) {
					return
				}
			}
		}
		<-started
		errc := shutdown(ts, hangGuard)
		readUntil(func(f http2.Frame) bool {
			ga, ok := f.(*http2.GoAwayFrame)
			if ok && (ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID < 1) {
				t.Errorf("GOAWAY %v, last stream %d; want NO_ERROR covering stream 1", ga.ErrCode, ga.LastStreamID)
			}
			return ok
		})
		close(release)
		var status string
		var data bytes.Buffer
		readUntil(func(f http2.Frame) bool {
			if f.Header().StreamID != 1 {
				return false
			}
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				status = f.PseudoValue("status")
			case *http2.DataFrame:
				data.Write(f.Data())
			}
			return f.Header().Flags.Has(http2.FlagDataEndStream)
		})
		if status != "200" || data.String() != "done" {
			t.Errorf("stream 1: status %q, body %q; want 200 %q", status, data.String(), "done")
		}
		// Done with the connection; the server need not wait to see the
		// client read its last frames.
		c.Close()
		if err := <-errc; err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
}

func TestIdleTimeout(t *testing.T) {
	const idle = 100 * time.Millisecond
	ts := start(t, &Server{IdleTimeout: idle, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(2 * idle) // a request is not idle
		io.WriteString(w, "ok")
	})})
	c := dialRaw(t, ts.addr)
	c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, body := c.read("GET"); body != "ok" {
		t.Fatalf("got %q", body)
	}
	c.wantClosed()
}

// TestIdleTimeoutKeptAcrossRequests: the idle deadline is set again only
// now and then (armIdleTimeout), yet a connection busy for many times
// IdleTimeout stays open, and once idle it closes no earlier than
// IdleTimeout and no later than IdleTimeout plus idleSlack (and some
// scheduling margin).
func TestIdleTimeoutKeptAcrossRequests(t *testing.T) {
	const idle = 80 * time.Millisecond
	ts := start(t, &Server{IdleTimeout: idle, ReadHeaderTimeout: time.Minute, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})})
	c := dialRaw(t, ts.addr)
	var last time.Time
	for end := time.Now().Add(5 * idle); time.Now().Before(end); time.Sleep(idle / 4) {
		// In bursts: the later requests of one keep the deadline the first set.
		for range 3 {
			c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			if _, body := c.read("GET"); body != "ok" {
				t.Fatalf("got %q", body)
			}
		}
		last = time.Now()
	}
	c.wantClosed()
	// last is taken after the server's last idle wait began: allow for the
	// few microseconds between.
	if open := time.Since(last); open < idle-time.Millisecond || open > idle+idleSlack(idle)+time.Second {
		t.Errorf("closed %v after the last response, want between %v and %v", open, idle, idle+idleSlack(idle))
	}
	if n := ts.ln.accepted.Load(); n != 1 {
		t.Errorf("%d connections accepted, want 1 (keep-alive)", n)
	}
}

// TestReadHeaderTimeoutAfterFastRequests: a later head that arrives whole
// is read without a deadline; one that does not is still bounded by
// ReadHeaderTimeout, however far off the idle deadline is.
func TestReadHeaderTimeoutAfterFastRequests(t *testing.T) {
	const d = 100 * time.Millisecond
	ts := start(t, &Server{IdleTimeout: time.Minute, ReadHeaderTimeout: d, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})})
	c := dialRaw(t, ts.addr)
	for range 3 {
		c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if _, body := c.read("GET"); body != "ok" {
			t.Fatalf("got %q", body)
		}
	}
	c.send("GET / HTTP/1.1\r\nHost: x\r\n")
	sent := time.Now()
	c.wantClosed()
	if waited := time.Since(sent); waited > d+time.Second {
		t.Errorf("an unfinished head held the connection %v, want about %v", waited, d)
	}
}

func TestReadHeaderTimeout(t *testing.T) {
	const d = 100 * time.Millisecond
	ts := start(t, &Server{ReadHeaderTimeout: d, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, r.Body)
	})})

	t.Run("first request", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.send("GET / HTTP/1.1\r\nHost: x\r\n")
		c.wantClosed()
	})
	t.Run("cut mid-line", func(t *testing.T) {
		// ReadRequest sees a line cut short by the timeout as malformed;
		// net/http's server answers 400 too.
		c := dialRaw(t, ts.addr)
		c.send("GET / HTTP/1.1\r\nHo")
		if resp, _ := c.read("GET"); resp.StatusCode != 400 {
			t.Errorf("got %d, want 400", resp.StatusCode)
		}
		c.wantClosed()
	})
	t.Run("later request", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		// The bound is on the head only: a body may take longer.
		c.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
		time.Sleep(2 * d)
		c.send("hello")
		if _, body := c.read("POST"); body != "hello" {
			t.Fatalf("got %q", body)
		}
		c.send("GET / HTTP/1.1\r\nHost: x\r\n")
		c.wantClosed()
	})
}
