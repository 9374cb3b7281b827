package httpserver

// The tests run the server on loopback and talk to it with real clients:
// net/http's (HTTP/1.1 and h2c), raw connections with hand-written requests
// read back by http.ReadResponse, and an HTTP/2 framer where the frames
// themselves matter. Helpers are here; framing and request tests below;
// connection lifecycle tests (watch, hijack, shutdown, timeouts, h2c) in
// lifecycle_test.go.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/http2"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// hangGuard bounds every blocking client read, so that a server that fails
// to answer fails the test instead of hanging it. It is never expected to
// expire in a passing run.
const hangGuard = 5 * time.Second

// countingListener counts accepted connections, to tell keep-alive from
// reconnects.
type countingListener struct {
	net.Listener
	accepted atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

type testServer struct {
	*Server
	addr   string
	ln     *countingListener
	served chan error // Serve's result
}

// start serves s on a loopback port until the test ends; then it closes s
// and checks that Serve returned http.ErrServerClosed.
func start(t *testing.T, s *Server) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: s, addr: ln.Addr().String(), ln: &countingListener{Listener: ln}, served: make(chan error, 1)}
	go func() { ts.served <- s.Serve(ts.ln) }()
	t.Cleanup(func() {
		s.Close()
		select {
		case err := <-ts.served:
			if !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
			}
		case <-time.After(hangGuard):
			t.Errorf("Serve did not return after Close")
		}
	})
	return ts
}

func (ts *testServer) url(path string) string { return "http://" + ts.addr + path }

// newClient returns a net/http HTTP/1.1 client whose idle connections are
// closed when the test ends.
func newClient(t *testing.T) *http.Client {
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 2 * hangGuard}
}

// newH2CClient returns a net/http client speaking HTTP/2 with prior
// knowledge over cleartext.
func newH2CClient(t *testing.T) *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: p, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 2 * hangGuard}
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp, string(b)
}

// rawConn is a client connection driven by hand.
type rawConn struct {
	net.Conn
	t  *testing.T
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{Conn: c, t: t, br: bufio.NewReader(c)}
}

func (c *rawConn) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.Conn, s); err != nil {
		c.t.Fatalf("writing request: %v", err)
	}
}

// read reads one response (to a request with method) and its whole body.
func (c *rawConn) read(method string) (*http.Response, string) {
	c.t.Helper()
	c.SetReadDeadline(time.Now().Add(hangGuard))
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("reading response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("reading response body: %v (got %q)", err, b)
	}
	return resp, string(b)
}

// wantClosed checks that the server has closed the connection: nothing more
// arrives, and the read ends with an error other than a timeout.
func (c *rawConn) wantClosed() {
	c.t.Helper()
	c.SetReadDeadline(time.Now().Add(hangGuard))
	b, err := c.br.ReadByte()
	if err == nil {
		rest, _ := c.br.Peek(c.br.Buffered())
		c.t.Fatalf("got %q after the response, want the connection closed", append([]byte{b}, rest...))
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("connection still open after %v, want it closed", hangGuard)
	}
}

// syncBuffer collects log output written by the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func debugLogger(buf *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

// echoPath answers with the request line it saw, in a sized or chunked body.
func echoPath(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	msg := r.Method + " " + r.URL.Path + " " + string(body)
	if r.URL.Query().Has("chunked") {
		io.WriteString(w, msg[:len(msg)/2])
		io.WriteString(w, msg[len(msg)/2:])
		return
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(msg)))
	io.WriteString(w, msg)
}

func TestKeepAliveReusesConnection(t *testing.T) {
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Remote", r.RemoteAddr)
		echoPath(w, r)
	})})
	c := newClient(t)
	var remote string
	for i := range 6 {
		// Alternate sized and chunked responses: each must end exactly
		// where its framing says for the next one to parse.
		path := fmt.Sprintf("/r%d", i)
		if i%2 == 1 {
			path += "?chunked"
		}
		resp, body := get(t, c, ts.url(path))
		if want := "GET /r" + fmt.Sprint(i) + " "; body != want {
			t.Errorf("request %d: body %q, want %q", i, body, want)
		}
		if i == 0 {
			remote = resp.Header.Get("X-Remote")
		} else if got := resp.Header.Get("X-Remote"); got != remote {
			t.Errorf("request %d came from %s, the first from %s: connection not reused", i, got, remote)
		}
	}
	if n := ts.ln.accepted.Load(); n != 1 {
		t.Errorf("server accepted %d connections for 6 sequential requests, want 1", n)
	}
}

func TestPipelinedRequestsAnsweredInOrder(t *testing.T) {
	ts := start(t, &Server{Handler: http.HandlerFunc(echoPath)})
	c := dialRaw(t, ts.addr)
	// One write: the server reads several requests into its buffer at once.
	c.send("GET /1 HTTP/1.1\r\nHost: x\r\n\r\n" +
		"POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" +
		"GET /3?chunked HTTP/1.1\r\nHost: x\r\n\r\n" +
		"POST /4 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" +
		"GET /5 HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, want := range []string{"GET /1 ", "POST /2 hello", "GET /3 ", "POST /4 abc", "GET /5 "} {
		resp, body := c.read("GET")
		if resp.StatusCode != 200 || body != want {
			t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	}
	if n := ts.ln.accepted.Load(); n != 1 {
		t.Errorf("accepted %d connections, want 1", n)
	}
}

func TestResponseFraming(t *testing.T) {
	errs := make(chan error, 1)
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/sized":
			w.Header().Set("Content-Length", "11")
			io.WriteString(w, "hello ")
			io.WriteString(w, "world")
		case "/chunked":
			io.WriteString(w, "hello ")
			io.WriteString(w, "world")
		case "/empty":
		case "/204":
			w.WriteHeader(http.StatusNoContent)
			_, err := io.WriteString(w, "leak")
			errs <- err
		case "/304":
			w.Header().Set("Content-Length", "42") // the representation's
			w.Header().Set("Etag", `"v1"`)
			w.WriteHeader(http.StatusNotModified)
			_, err := io.WriteString(w, "leak")
			errs <- err
		case "/304-bare":
			w.WriteHeader(http.StatusNotModified)
		case "/head":
			w.Header().Set("Content-Length", "11")
			io.WriteString(w, "hello world")
		case "/head-unsized":
			io.WriteString(w, "hello world")
		}
	})})

	c := dialRaw(t, ts.addr)
	next := func(method, path string) (*http.Response, string) {
		t.Helper()
		c.send(method + " " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")
		return c.read(method)
	}
	// All on one connection: a byte too many or too few in any response
	// breaks the parsing of the ones after it.
	resp, body := next("GET", "/sized")
	if resp.ContentLength != 11 || len(resp.TransferEncoding) != 0 || body != "hello world" {
		t.Errorf("sized: Content-Length %d, Transfer-Encoding %v, body %q; want 11, none, %q", resp.ContentLength, resp.TransferEncoding, body, "hello world")
	}
	if d, err := http.ParseTime(resp.Header.Get("Date")); err != nil || time.Since(d) > time.Minute || time.Since(d) < -time.Minute {
		t.Errorf("Date %q (%v), want the current time", resp.Header.Get("Date"), err)
	}

	resp, body = next("GET", "/chunked")
	if resp.ContentLength != -1 || !equal(resp.TransferEncoding, []string{"chunked"}) || body != "hello world" {
		t.Errorf("unsized: Content-Length %d, Transfer-Encoding %v, body %q; want chunked %q", resp.ContentLength, resp.TransferEncoding, body, "hello world")
	}
	if resp.Header.Get("Date") == "" {
		t.Error("chunked response has no Date")
	}

	resp, body = next("GET", "/empty")
	if resp.StatusCode != 200 || resp.ContentLength != 0 || len(resp.TransferEncoding) != 0 || body != "" {
		t.Errorf("handler writing nothing: %d, Content-Length %d, Transfer-Encoding %v, body %q; want 200 with Content-Length: 0",
			resp.StatusCode, resp.ContentLength, resp.TransferEncoding, body)
	}

	resp, _ = next("GET", "/204")
	if resp.StatusCode != 204 || resp.Header.Get("Content-Length") != "" || len(resp.TransferEncoding) != 0 {
		t.Errorf("204: status %d, Content-Length %q, Transfer-Encoding %v; want no framing", resp.StatusCode, resp.Header.Get("Content-Length"), resp.TransferEncoding)
	}
	if err := <-errs; !errors.Is(err, http.ErrBodyNotAllowed) {
		t.Errorf("Write after 204: %v, want http.ErrBodyNotAllowed", err)
	}

	resp, _ = next("GET", "/304")
	if resp.StatusCode != 304 || resp.Header.Get("Content-Length") != "42" || resp.Header.Get("Etag") != `"v1"` {
		t.Errorf("304: status %d, Content-Length %q, Etag %q; want the handler's 42 and Etag kept", resp.StatusCode, resp.Header.Get("Content-Length"), resp.Header.Get("Etag"))
	}
	if err := <-errs; !errors.Is(err, http.ErrBodyNotAllowed) {
		t.Errorf("Write after 304: %v, want http.ErrBodyNotAllowed", err)
	}

	// A 304 must not claim the representation is empty (RFC 9110 8.6).
	resp, _ = next("GET", "/304-bare")
	if resp.StatusCode != 304 || resp.Header.Get("Content-Length") != "" {
		t.Errorf("bare 304: status %d, Content-Length %q; want no Content-Length", resp.StatusCode, resp.Header.Get("Content-Length"))
	}

	resp, body = next("HEAD", "/head")
	if resp.ContentLength != 11 || body != "" {
		t.Errorf("HEAD: Content-Length %d, body %q; want 11 and no body", resp.ContentLength, body)
	}
	resp, _ = next("HEAD", "/head-unsized")
	if cl := resp.Header.Get("Content-Length"); cl != "" || len(resp.TransferEncoding) != 0 {
		t.Errorf("HEAD, unsized: Content-Length %q, Transfer-Encoding %v; want neither", cl, resp.TransferEncoding)
	}
	resp, body = next("HEAD", "/empty")
	if cl := resp.Header.Get("Content-Length"); cl != "" || body != "" {
		t.Errorf("HEAD, handler writing nothing: Content-Length %q; want none (the GET's length is unknown)", cl)
	}

	resp, body = next("GET", "/sized")
	if body != "hello world" {
		t.Errorf("last request on the connection: %q, want %q", body, "hello world")
	}
	if n := ts.ln.accepted.Load(); n != 1 {
		t.Errorf("accepted %d connections, want 1", n)
	}
}

func equal(a, b []string) bool { return strings.Join(a, "\x00") == strings.Join(b, "\x00") }

func TestHTTP10Framing(t *testing.T) {
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/sized" {
			w.Header().Set("Content-Length", "5")
		}
		io.WriteString(w, "hello")
	})})

	t.Run("close-delimited", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.send("GET /unsized HTTP/1.0\r\n\r\n")
		resp, body := c.read("GET")
		if resp.ProtoMinor != 0 || !resp.Close || len(resp.TransferEncoding) != 0 || resp.ContentLength != -1 || body != "hello" {
			t.Errorf("got HTTP/1.%d, Close %v, Transfer-Encoding %v, Content-Length %d, body %q; want an HTTP/1.0 body ended by the close",
				resp.ProtoMinor, resp.Close, resp.TransferEncoding, resp.ContentLength, body)
		}
	})
	t.Run("sized without keep-alive", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.send("GET /sized HTTP/1.0\r\n\r\n")
		resp, body := c.read("GET")
		if !resp.Close || resp.ContentLength != 5 || body != "hello" {
			t.Errorf("got Close %v, Content-Length %d, body %q; want a sized response and Connection: close", resp.Close, resp.ContentLength, body)
		}
		c.wantClosed()
	})
	t.Run("keep-alive", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		for i := range 2 {
			c.send("GET /sized HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
			resp, body := c.read("GET")
			if resp.Close || resp.Header.Get("Connection") != "keep-alive" || body != "hello" {
				t.Fatalf("request %d: Close %v, Connection %q, body %q; want keep-alive", i, resp.Close, resp.Header.Get("Connection"), body)
			}
		}
	})
	t.Run("keep-alive asked, length unknown", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.send("GET /unsized HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		resp, body := c.read("GET")
		if !resp.Close || len(resp.TransferEncoding) != 0 || body != "hello" {
			t.Errorf("got Close %v, Transfer-Encoding %v, body %q; want close-delimited", resp.Close, resp.TransferEncoding, body)
		}
	})
}

func TestWrongContentLength(t *testing.T) {
	errs := make(chan error, 1)
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		if r.URL.Path == "/more" {
			_, err := io.WriteString(w, "hello world")
			errs <- err
			return
		}
		io.WriteString(w, "hel")
	})})

	t.Run("more", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.send("GET /more HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, body := c.read("GET")
		if resp.ContentLength != 5 || body != "hello" {
			t.Errorf("got Content-Length %d, body %q; want the declared 5 bytes", resp.ContentLength, body)
		}
		if err := <-errs; !errors.Is(err, http.ErrContentLength) {
			t.Errorf("Write past Content-Length: %v, want http.ErrContentLength", err)
		}
		c.wantClosed()
	})
	t.Run("less", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.send("GET /less HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(hangGuard))
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		if !errors.Is(err, io.ErrUnexpectedEOF) || string(body) != "hel" {
			t.Errorf("got %q, %v; want %q cut short by the close (io.ErrUnexpectedEOF)", body, err, "hel")
		}
	})
}

func TestTrailers(t *testing.T) {
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/declared":
			w.Header().Set("Trailer", "X-Sum, X-Count")
			w.WriteHeader(200)
			io.WriteString(w, "body")
			w.Header().Set("X-Sum", "abc")
			w.Header().Set("X-Count", "1")
		case "/prefixed":
			io.WriteString(w, "body")
			w.(http.Flusher).Flush()
			w.Header().Set(http.TrailerPrefix+"X-Late", "late")
		case "/prefixed-empty":
			// No body at all, and trailers only known at the end (a
			// proxied trailers-only response).
			w.Header().Set(http.TrailerPrefix+"X-Late", "late")
		}
	})})
	c := newClient(t)
	for _, tc := range []struct {
		path, body string
		want       http.Header
	}{
		{"/declared", "body", http.Header{"X-Sum": {"abc"}, "X-Count": {"1"}}},
		{"/prefixed", "body", http.Header{"X-Late": {"late"}}},
		{"/prefixed-empty", "", http.Header{"X-Late": {"late"}}},
	} {
		resp, body := get(t, c, ts.url(tc.path))
		if body != tc.body {
			t.Errorf("%s: body %q, want %q", tc.path, body, tc.body)
		}
		for k, v := range tc.want {
			if got := resp.Trailer.Values(k); !equal(got, v) {
				t.Errorf("%s: trailer %s = %q, want %q (trailers %v)", tc.path, k, got, v, resp.Trailer)
			}
		}
		if resp.Header.Get("X-Sum") != "" || resp.Header.Get("X-Late") != "" {
			t.Errorf("%s: trailer values sent in the header: %v", tc.path, resp.Header)
		}
	}
}

func TestFlushSendsBeforeHandlerReturns(t *testing.T) {
	release := make(chan struct{})
	var returned atomic.Bool
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer returned.Store(true)
		w.Header().Set("X-Early", "yes")
		io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-time.After(2 * time.Second): // the client never saw "first"
		}
		io.WriteString(w, "second")
	})})
	resp, err := newClient(t).Get(ts.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	if returned.Load() {
		t.Fatal("header and first chunk arrived only after the handler returned")
	}
	if string(first) != "first" || resp.Header.Get("X-Early") != "yes" {
		t.Errorf("got %q, X-Early %q", first, resp.Header.Get("X-Early"))
	}
	close(release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "second" {
		t.Errorf("rest: %q, %v; want %q", rest, err, "second")
	}
}

func TestRequestBodies(t *testing.T) {
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%d %v %d %s", r.ContentLength, r.TransferEncoding, len(b), sum(b))
	})})
	c := newClient(t)
	payload := pattern(300 << 10)

	resp, err := c.Post(ts.url("/"), "application/octet-stream", bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("%d [] %d %s", len(payload), len(payload), sum(payload)); string(got) != want {
		t.Errorf("sized body: handler saw %q, want %q", got, want)
	}

	// An io.Reader of unknown length makes net/http's client send chunks.
	resp, err = c.Post(ts.url("/"), "application/octet-stream", io.MultiReader(bytes.NewReader(payload)))
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("-1 [chunked] %d %s", len(payload), sum(payload)); string(got) != want {
		t.Errorf("chunked body: handler saw %q, want %q", got, want)
	}
	if n := ts.ln.accepted.Load(); n != 1 {
		t.Errorf("accepted %d connections, want 1", n)
	}
}

func TestUnreadRequestBody(t *testing.T) {
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		io.WriteString(w, r.Method+" "+r.URL.Path) // the body stays unread
	})})

	t.Run("small bodies are discarded", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		small := string(pattern(10 << 10))
		c.send("POST /sized HTTP/1.1\r\nHost: x\r\nContent-Length: " + fmt.Sprint(len(small)) + "\r\n\r\n" + small)
		if _, body := c.read("POST"); body != "POST /sized" {
			t.Fatalf("got %q", body)
		}
		c.send("POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(small), small))
		if resp, body := c.read("POST"); body != "POST /chunked" || resp.Close {
			t.Fatalf("got %q, Close %v", body, resp.Close)
		}
		c.send("GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
		if _, body := c.read("GET"); body != "GET /next" {
			t.Errorf("request after unread bodies: got %q, want %q", body, "GET /next")
		}
	})

	t.Run("large body closes the connection", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		large := pattern(4 << 20)
		c.send("POST /large HTTP/1.1\r\nHost: x\r\nContent-Length: " + fmt.Sprint(len(large)) + "\r\n\r\n")
		wrote := make(chan error, 1)
		go func() {
			// Fails once the server closes; that is the point.
			_, err := c.Conn.Write(large)
			wrote <- err
		}()
		// Known too large to drain when the header goes out: the client is
		// told the connection ends.
		if resp, body := c.read("POST"); body != "POST /large" || !resp.Close {
			t.Errorf("got %q, Close %v; want Connection: close", body, resp.Close)
		}
		c.wantClosed()
		c.Close()
		<-wrote
	})

	t.Run("large chunked body closes the connection", func(t *testing.T) {
		// Its size unknown when the header goes out: the drain after the
		// response finds it too large.
		c := dialRaw(t, ts.addr)
		c.send("POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
		chunk := fmt.Sprintf("%x\r\n%s\r\n", 64<<10, pattern(64<<10))
		wrote := make(chan error, 1)
		go func() {
			var err error
			for i := 0; i < 64 && err == nil; i++ {
				_, err = io.WriteString(c.Conn, chunk)
			}
			wrote <- err
		}()
		if _, body := c.read("POST"); body != "POST /chunked" {
			t.Errorf("got %q", body)
		}
		c.wantClosed()
		c.Close()
		<-wrote
	})

	t.Run("slow body closes the connection", func(t *testing.T) {
		// Small, but not there within the drain's time.
		c := dialRaw(t, ts.addr)
		c.send("POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
		if _, body := c.read("POST"); body != "POST /slow" {
			t.Errorf("got %q", body)
		}
		c.wantClosed()
	})

	t.Run("client still sending reads the response", func(t *testing.T) {
		// Closed over unread bytes, a connection is reset, and the reset
		// can reach net/http's client, still writing, before it has read
		// the response; the server lingers so that it does not.
		c := newClient(t)
		large := pattern(8 << 20)
		for i := range 10 {
			path := "/large"
			if i%2 == 1 {
				path = "/close" // closing anyway, the body unread
			}
			resp, err := c.Post(ts.url(path), "application/octet-stream", bytes.NewReader(large))
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "POST "+path {
				t.Errorf("request %d: got %q", i, body)
			}
		}
	})
}

func TestFullDuplexEcho(t *testing.T) {
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.EnableFullDuplex(); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.WriteHeader(200)
		rc.Flush()
		buf := make([]byte, 8<<10)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				if rc.Flush() != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})})
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", ts.url("/echo"), pr)
	resp, err := newClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// Lock-step: each piece must come back before the next is sent, which
	// only works if the body is read while the response is written.
	const piece = 16 << 10
	total := pattern(1 << 20)
	errc := make(chan error, 1)
	go func() {
		for off := 0; off < len(total); off += piece {
			if _, err := pw.Write(total[off : off+piece]); err != nil {
				errc <- err
				return
			}
		}
		errc <- pw.Close()
	}()
	got := make([]byte, len(total))
	if _, err := io.ReadFull(resp.Body, got); err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if !bytes.Equal(got, total) {
		t.Error("echo differs from what was sent")
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
		t.Errorf("after the echo: %q, %v", rest, err)
	}
}

func TestExpectContinue(t *testing.T) {
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "expect=%q body=%s", r.Header.Get("Expect"), b)
	})})

	t.Run("100-continue", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.send("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
		// The body is held back until the server says go on.
		c.SetReadDeadline(time.Now().Add(hangGuard))
		line, err := c.br.ReadString('\n')
		if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
			t.Fatalf("got %q, %v; want the interim 100 Continue", line, err)
		}
		if blank, _ := c.br.ReadString('\n'); blank != "\r\n" {
			t.Fatalf("after 100 Continue: %q", blank)
		}
		c.send("hello")
		resp, body := c.read("POST")
		if resp.StatusCode != 200 || body != `expect="" body=hello` {
			t.Errorf("got %d %q, want 200 and the handler seeing no Expect", resp.StatusCode, body)
		}
	})
	t.Run("net/http client", func(t *testing.T) {
		req, _ := http.NewRequest("POST", ts.url("/"), strings.NewReader("hello"))
		req.Header.Set("Expect", "100-continue")
		c := newClient(t)
		c.Transport.(*http.Transport).ExpectContinueTimeout = time.Minute // waits for the 100
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != `expect="" body=hello` {
			t.Errorf("got %q", body)
		}
	})
	t.Run("other expectation", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.send("POST / HTTP/1.1\r\nHost: x\r\nExpect: something-else\r\nContent-Length: 5\r\n\r\nhello")
		if resp, _ := c.read("POST"); resp.StatusCode != http.StatusExpectationFailed || !resp.Close {
			t.Errorf("got %d, Close %v; want 417 and the connection closed", resp.StatusCode, resp.Close)
		}
		c.wantClosed()
	})
}

func TestBadRequests(t *testing.T) {
	var called atomic.Int32
	var logs syncBuffer
	ts := start(t, &Server{
		MaxHeaderBytes: 1 << 10,
		Log:            debugLogger(&logs),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			called.Add(1)
			io.WriteString(w, "ok")
		}),
	})
	big := strings.Repeat("a", 1<<10+4<<10+100)
	for _, tc := range []struct {
		name, req string
		code      int
	}{
		{"missing Host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"bad Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"HTTP/2.0 request line", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505},
		{"HTTP/3.0 request line", "GET / HTTP/3.0\r\nHost: x\r\n\r\n", 505},
		{"garbage", "\x16\x03\x01\x02\x00garbage\r\n\r\n", 400},
		// Short of a request line; nothing more comes, and the answer must
		// not wait for it.
		{"short line", "GET /\r\n\r\n", 400},
		// The HTTP/2 preface up to its last line: an HTTP/2.0 request.
		{"preface look-alike", "PRI * HTTP/2.0\r\n\r\nXY\r\n\r\n", 505},
		{"head too large", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + big + "\r\n\r\n", 431},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := called.Load()
			c := dialRaw(t, ts.addr)
			c.send(tc.req)
			resp, _ := c.read("GET")
			if resp.StatusCode != tc.code || !resp.Close {
				t.Errorf("got %d, Close %v; want %d and Connection: close", resp.StatusCode, resp.Close, tc.code)
			}
			c.wantClosed()
			if called.Load() != before {
				t.Error("handler was called")
			}
		})
	}
	if !strings.Contains(logs.String(), "level=DEBUG msg=\"bad request\"") {
		t.Errorf("bad requests not logged at debug level; log:\n%s", logs.String())
	}

	// In bounds: accepted; then a head too large on the same connection.
	c := dialRaw(t, ts.addr)
	c.send("GET / HTTP/1.1\r\nHost: x\r\nX-Fits: " + strings.Repeat("a", 900) + "\r\n\r\n")
	if resp, body := c.read("GET"); resp.StatusCode != 200 || body != "ok" {
		t.Errorf("head under MaxHeaderBytes: got %d %q", resp.StatusCode, body)
	}
	c.send("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + big + "\r\n\r\n")
	if resp, _ := c.read("GET"); resp.StatusCode != 431 {
		t.Errorf("second request's head too large: got %d, want 431", resp.StatusCode)
	}
	c = dialRaw(t, ts.addr)
	c.send("GET / HTTP/1.0\r\n\r\n")
	if resp, _ := c.read("GET"); resp.StatusCode != 200 {
		t.Errorf("HTTP/1.0 without Host: got %d, want 200", resp.StatusCode)
	}
}

func TestHandlerPanics(t *testing.T) {
	var logs syncBuffer
	ts := start(t, &Server{
		Log: debugLogger(&logs),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			if r.URL.Path == "/abort" {
				panic(http.ErrAbortHandler)
			}
			panic("boom")
		}),
	})
	c := newClient(t)
	for _, path := range []string{"/abort", "/boom"} {
		resp, err := c.Get(ts.url(path))
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !errors.Is(err, io.ErrUnexpectedEOF) || string(body) != "partial" {
			t.Errorf("%s: got %q, %v; want %q cut short (io.ErrUnexpectedEOF)", path, body, err, "partial")
		}
		if path == "/abort" && strings.Contains(logs.String(), "level=ERROR") {
			t.Errorf("ErrAbortHandler logged at error level:\n%s", logs.String())
		}
	}
	if n := ts.ln.accepted.Load(); n != 2 {
		t.Errorf("accepted %d connections, want 2: each panic closes its connection", n)
	}
	// The second connection is closed after the log line is written.
	if l := logs.String(); !strings.Contains(l, `level=ERROR msg="handler panicked"`) || !strings.Contains(l, "panic=boom") || !strings.Contains(l, "stack=") {
		t.Errorf("panic not logged with its value and stack:\n%s", l)
	}
}

// TestHandlerPanicsH2C: a panic resets its stream with INTERNAL_ERROR
// after what the handler flushed, and only its stream: the connection
// serves the next one. (Spoken with a raw framer: net/http's client may
// open another connection after a reset under load, which would say
// nothing about the server.)
func TestHandlerPanicsH2C(t *testing.T) {
	var logs syncBuffer
	ts := start(t, &Server{
		Log: debugLogger(&logs),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			switch r.URL.Path {
			case "/abort":
				panic(http.ErrAbortHandler)
			case "/boom":
				panic("boom")
			}
		}),
	})
	h := dialH2(t, ts.addr)
	for i, path := range []string{"/abort", "/boom"} {
		id := uint32(2*i + 1)
		h.request(id, "GET", path, true)
		var body bytes.Buffer
		var reset http2.ErrCode
		for gotReset := false; !gotReset; {
			f := h.next()
			if f.Header().StreamID != id {
				if ga, ok := f.(*http2.GoAwayFrame); ok {
					t.Fatalf("%s: GOAWAY %v", path, ga.ErrCode)
				}
				continue
			}
			switch f := f.(type) {
			case *http2.DataFrame:
				body.Write(f.Data())
				h.credit(id, f.Length, true)
				if f.StreamEnded() {
					t.Fatalf("%s: the stream ended normally, want a reset", path)
				}
			case *http2.RSTStreamFrame:
				reset, gotReset = f.ErrCode, true
			}
		}
		if body.String() != "partial" || reset != http2.ErrCodeInternal {
			t.Errorf("%s: got %q then RST_STREAM %v; want %q then INTERNAL_ERROR", path, body.String(), reset, "partial")
		}
		if path == "/abort" && strings.Contains(logs.String(), "level=ERROR") {
			t.Errorf("ErrAbortHandler logged at error level:\n%s", logs.String())
		}
	}
	h.request(5, "GET", "/ok", true)
	if r := h.response(5); r.status != "200" || r.body.String() != "partial" {
		t.Errorf("after the panics: %s %q, want 200 %q on the same connection", r.status, r.body.String(), "partial")
	}
	if l := logs.String(); !strings.Contains(l, `level=ERROR msg="handler panicked"`) || !strings.Contains(l, "panic=boom") {
		t.Errorf("panic not logged:\n%s", l)
	}
}

// ctxKey is the ConnContext test's context key.
type ctxKey struct{}

func TestConnContext(t *testing.T) {
	ts := start(t, &Server{
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, ctxKey{}, "conn "+c.RemoteAddr().String())
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%d %v %v", r.ProtoMajor, r.Context().Value(ctxKey{}) == "conn "+r.RemoteAddr, r.Context().Value(http.LocalAddrContextKey))
		}),
	})
	for _, tc := range []struct {
		name string
		c    *http.Client
		want string
	}{
		{"HTTP/1.1", newClient(t), "1 true " + ts.addr},
		{"h2c", newH2CClient(t), "2 true " + ts.addr},
	} {
		if _, body := get(t, tc.c, ts.url("/")); body != tc.want {
			t.Errorf("%s: handler saw %q, want %q (protocol, ConnContext value, local address)", tc.name, body, tc.want)
		}
	}
}

// TestAdoptHeader: a response with no header fields yet takes the map it
// is given as its header (edits through either show in the other, and the
// client gets them); one with fields gets the fields added to its own.
func TestAdoptHeader(t *testing.T) {
	type adopter interface{ AdoptHeader(http.Header) http.Header }
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := http.Header{"X-Upstream": {"1"}}
		switch r.URL.Path {
		case "/fresh":
			if got := w.(adopter).AdoptHeader(h); got["X-Upstream"] == nil {
				t.Errorf("%s: adopted header lacks the given field", r.URL.Path)
			}
			h.Set("X-Later", "seen") // the same map as w.Header() now
			if w.Header().Get("X-Later") != "seen" {
				t.Errorf("%s: the given map is not the response's header", r.URL.Path)
			}
		case "/own":
			w.Header().Set("X-Own", "kept")
			w.(adopter).AdoptHeader(h)
			h.Set("X-Later", "not seen") // a copy was made
		}
		io.WriteString(w, "ok")
	})})
	for _, c := range []*http.Client{newClient(t), newH2CClient(t)} {
		for path, want := range map[string]http.Header{
			"/fresh": {"X-Upstream": {"1"}, "X-Later": {"seen"}},
			"/own":   {"X-Upstream": {"1"}, "X-Own": {"kept"}},
		} {
			resp, body := get(t, c, ts.url(path))
			for k, vs := range want {
				if got := resp.Header[k]; !slices.Equal(got, vs) {
					t.Errorf("HTTP/%d %s: %s = %q, want %q", resp.ProtoMajor, path, k, got, vs)
				}
			}
			if path == "/own" && resp.Header.Get("X-Later") != "" {
				t.Errorf("HTTP/%d %s: an edit of the given map after a copy reached the client", resp.ProtoMajor, path)
			}
			if body != "ok" {
				t.Errorf("HTTP/%d %s: body %q", resp.ProtoMajor, path, body)
			}
		}
	}
}
