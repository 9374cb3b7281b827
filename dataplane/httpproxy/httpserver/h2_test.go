package httpserver

// HTTP/2 protocol tests: flow control both ways, resets and cancellation,
// trailers, the header list and concurrent stream limits, IdleTimeout and
// connection errors. Where the frames themselves matter a raw http2.Framer
// client (h2Client) drives the connection; elsewhere golang.org/x/net/http2's
// Transport does, a client independent of net/http's bundled one that the
// other h2c tests use. Basic h2c (concurrent streams, echo, response
// trailers, panics, Shutdown, Close) is in lifecycle_test.go and
// server_test.go.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Client is a client connection driven frame by frame, from the test's
// goroutine only.
type h2Client struct {
	t   *testing.T
	c   *rawConn
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
}

// dialH2 opens an h2c connection with prior knowledge, sends settings and
// checks that the server's first frame is its SETTINGS.
func dialH2(t *testing.T, addr string, settings ...http2.Setting) *h2Client {
	t.Helper()
	c := dialRaw(t, addr)
	c.send(http2.ClientPreface)
	h := &h2Client{t: t, c: c, fr: http2.NewFramer(c.Conn, c.br)}
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.enc = hpack.NewEncoder(&h.hb)
	if err := h.fr.WriteSettings(settings...); err != nil {
		t.Fatalf("writing SETTINGS: %v", err)
	}
	if sf, ok := h.next().(*http2.SettingsFrame); !ok || sf.IsAck() {
		t.Fatalf("the server's first frame is not SETTINGS")
	}
	return h
}

// read reads a frame, acknowledging the server's SETTINGS. A frame's payload
// is valid until the next read.
func (h *h2Client) read() (http2.Frame, error) {
	h.c.SetReadDeadline(time.Now().Add(hangGuard))
	f, err := h.fr.ReadFrame()
	if err != nil {
		return nil, err
	}
	if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
		if err := h.fr.WriteSettingsAck(); err != nil {
			return nil, err
		}
	}
	return f, nil
}

func (h *h2Client) next() http2.Frame {
	h.t.Helper()
	f, err := h.read()
	if err != nil {
		h.t.Fatalf("reading frames: %v", err)
	}
	return f
}

// headers sends one HEADERS frame with the fields kv (name, value, ...).
func (h *h2Client) headers(id uint32, end bool, kv ...string) {
	h.t.Helper()
	h.hb.Reset()
	for i := 0; i < len(kv); i += 2 {
		h.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.hb.Bytes(), EndStream: end, EndHeaders: true}); err != nil {
		h.t.Fatalf("writing HEADERS: %v", err)
	}
}

// request opens stream id with a request; end: it has no body.
func (h *h2Client) request(id uint32, method, path string, end bool, extra ...string) {
	h.t.Helper()
	h.headers(id, end, append([]string{":method", method, ":scheme", "http", ":authority", "x", ":path", path}, extra...)...)
}

type h2Response struct {
	status string
	header []hpack.HeaderField
	body   bytes.Buffer
}

// response reads stream id's response to its end, crediting its DATA back;
// frames of other streams are skipped.
func (h *h2Client) response(id uint32) *h2Response {
	h.t.Helper()
	r := &h2Response{}
	for {
		f := h.next()
		if f.Header().StreamID != id {
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				h.t.Fatalf("GOAWAY %v while waiting for stream %d", ga.ErrCode, id)
			}
			continue
		}
		end := f.Header().Flags.Has(http2.FlagDataEndStream)
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if r.status == "" {
				r.status, r.header = f.PseudoValue("status"), f.RegularFields()
			}
		case *http2.DataFrame:
			r.body.Write(f.Data())
			h.credit(id, f.Length, !end)
		case *http2.RSTStreamFrame:
			h.t.Fatalf("stream %d reset: %v", id, f.ErrCode)
		}
		if end {
			return r
		}
	}
}

// credit gives n bytes back to the connection's window, and the stream's.
func (h *h2Client) credit(id, n uint32, stream bool) {
	h.t.Helper()
	if n == 0 {
		return
	}
	err := h.fr.WriteWindowUpdate(0, n)
	if err == nil && stream {
		err = h.fr.WriteWindowUpdate(id, n)
	}
	if err != nil {
		h.t.Fatalf("writing WINDOW_UPDATE: %v", err)
	}
}

// wantGoAway reads until a GOAWAY, checks it, then waits for the server to
// close the connection.
func (h *h2Client) wantGoAway(code http2.ErrCode, last uint32) {
	h.t.Helper()
	for {
		if ga, ok := h.next().(*http2.GoAwayFrame); ok {
			if ga.ErrCode != code || ga.LastStreamID != last {
				h.t.Errorf("GOAWAY %v, last stream %d; want %v, last stream %d", ga.ErrCode, ga.LastStreamID, code, last)
			}
			break
		}
	}
	h.wantClosed()
}

// wantClosed reads (and drops) frames until the server closes the connection.
func (h *h2Client) wantClosed() {
	h.t.Helper()
	for {
		_, err := h.read()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			h.t.Fatalf("connection still open after %v, want it closed", hangGuard)
		}
		if err != nil {
			return
		}
	}
}

// field returns the value of name in fields.
func field(fields []hpack.HeaderField, name string) string {
	for _, f := range fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// newX2Client returns a client on golang.org/x/net/http2's Transport (h2c
// with prior knowledge) whose receive windows are the protocol's initial 64
// KiB rather than the Transport's default 4 MiB, so that a large response
// waits for its WINDOW_UPDATEs.
func newX2Client(t *testing.T) (*http.Client, *http2.Transport) {
	t1 := &http.Transport{HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: 65535, MaxReceiveBufferPerConnection: 65535}}
	tr, err := http2.ConfigureTransports(t1) // the only way to set x/net's windows
	if err != nil {
		t.Fatal(err)
	}
	// ConfigureTransports' pool takes only the connections t1 dials; nil:
	// the Transport dials its own.
	tr.ConnPool = nil
	tr.AllowHTTP = true
	tr.DialTLSContext = func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 2 * hangGuard}, tr
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed)})
	r.Read(b)
	return b
}

func TestH2LargeBodiesBothWays(t *testing.T) {
	const size = 4 << 20 // over the server's 1 MiB stream window and the client's 64 KiB
	respBody := randomBytes(size, 2)
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// All of the request first: the client can send it only as the
		// server credits what the handler reads.
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		w.Header().Set("X-Request-Sha256", hex.EncodeToString(h.Sum(nil)))
		w.Header().Set("X-Request-Len", fmt.Sprint(n, " ", err))
		// Odd-sized writes: frames split at the windows, not the writes.
		for rest := respBody; len(rest) > 0; {
			k := min(len(rest), 1<<20+7)
			if _, err := w.Write(rest[:k]); err != nil {
				return
			}
			rest = rest[k:]
		}
	})})
	c, _ := newX2Client(t)
	reqBody := randomBytes(size, 1)
	resp, err := c.Post(ts.url("/"), "application/octet-stream", bytes.NewReader(reqBody))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatalf("reading the response after %d bytes: %v", n, err)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("got HTTP/%d, want 2", resp.ProtoMajor)
	}
	if got, want := resp.Header.Get("X-Request-Len"), fmt.Sprint(size, " <nil>"); got != want {
		t.Errorf("handler read %q of the request body, want %q", got, want)
	}
	if got, want := resp.Header.Get("X-Request-Sha256"), sum(reqBody); got != want {
		t.Errorf("request body SHA-256 at the handler %s, want %s", got, want)
	}
	if got, want := hex.EncodeToString(h.Sum(nil)), sum(respBody); n != size || got != want {
		t.Errorf("response body: %d bytes, SHA-256 %s; want %d bytes, %s", n, got, size, want)
	}
}

func TestH2SendWindowOfOneByte(t *testing.T) {
	const body = "hello, flow control"
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body) // one write: the server splits it
	})})
	h := dialH2(t, ts.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
	h.request(1, "GET", "/", true)
	window, frames := 1, 0 // the stream's send window as the client counts it
	var got []byte
	ping := [8]byte{'w', 'i', 'n', 'd', 'o', 'w'}
	pinged := false
	for done := false; !done; {
		switch f := h.next().(type) {
		case *http2.MetaHeadersFrame:
			if s := f.PseudoValue("status"); s != "200" {
				t.Fatalf("status %s, want 200", s)
			}
		case *http2.DataFrame:
			if int(f.Length) > window {
				t.Fatalf("DATA of %d bytes after %q, with a stream window of %d", f.Length, got, window)
			}
			window -= int(f.Length)
			got = append(got, f.Data()...)
			done = f.StreamEnded()
			if f.Length == 0 {
				continue
			}
			frames++
			if !pinged {
				// The handler now waits for the window: the connection
				// must still answer a PING, and send no DATA until the
				// WINDOW_UPDATE.
				pinged = true
				h.fr.WritePing(false, ping)
				continue
			}
			h.fr.WriteWindowUpdate(1, 1)
			window++
		case *http2.PingFrame:
			if !f.IsAck() || f.Data != ping {
				t.Fatalf("unexpected PING %v %q", f.IsAck(), f.Data)
			}
			h.fr.WriteWindowUpdate(1, 1)
			window++
		case *http2.RSTStreamFrame:
			t.Fatalf("stream reset: %v", f.ErrCode)
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY: %v", f.ErrCode)
		}
	}
	if string(got) != body || frames != len(body) {
		t.Errorf("got %q in %d DATA frames, want %q in %d one-byte frames", got, frames, body, len(body))
	}
}

func TestH2ClientExceedsStreamWindow(t *testing.T) {
	started := make(chan struct{})
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stall" {
			close(started)
			<-r.Context().Done() // reads nothing: the window is not credited
			return
		}
		io.WriteString(w, "ok")
	})})
	h := dialH2(t, ts.addr)
	h.request(1, "POST", "/stall", false)
	<-started
	chunk := make([]byte, h2MaxFrame)
	for sent := 0; sent < h2StreamWindow; sent += len(chunk) {
		if err := h.fr.WriteData(1, false, chunk); err != nil {
			t.Fatal(err)
		}
	}
	h.fr.WriteData(1, false, []byte{0}) // one byte over
	for {
		f := h.next()
		if rst, ok := f.(*http2.RSTStreamFrame); ok {
			if rst.StreamID != 1 || rst.ErrCode != http2.ErrCodeFlowControl {
				t.Fatalf("RST_STREAM %d %v, want 1 FLOW_CONTROL_ERROR", rst.StreamID, rst.ErrCode)
			}
			break
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			t.Fatalf("GOAWAY %v, want a stream error only", ga.ErrCode)
		}
	}
	h.request(3, "GET", "/", true)
	if r := h.response(3); r.status != "200" || r.body.String() != "ok" {
		t.Errorf("after the flow control error: %s %q, want 200 %q", r.status, r.body.String(), "ok")
	}
}

func TestH2ClientResetCancelsHandler(t *testing.T) {
	started := make(chan string, 2)
	cancelled := make(chan struct{}, 1)
	release := make(chan struct{})
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- r.URL.Path
		switch r.URL.Path {
		case "/wait":
			select {
			case <-r.Context().Done():
				cancelled <- struct{}{}
			case <-time.After(hangGuard):
			}
		case "/other":
			select {
			case <-release:
			case <-time.After(hangGuard):
			}
			fmt.Fprintf(w, "ctx=%v", r.Context().Err())
		}
	})})
	waitCancelled := func(t *testing.T) {
		t.Helper()
		select {
		case <-cancelled:
		case <-time.After(time.Second):
			t.Fatal("handler's context not cancelled within 1s of the client's RST_STREAM")
		}
	}

	t.Run("raw", func(t *testing.T) {
		h := dialH2(t, ts.addr)
		h.request(1, "GET", "/wait", true)
		h.request(3, "GET", "/other", true)
		<-started
		<-started
		h.fr.WriteRSTStream(1, http2.ErrCodeCancel)
		waitCancelled(t)
		close(release)
		for {
			f := h.next()
			if f.Header().StreamID == 1 {
				// Nothing may answer a reset stream, RST_STREAM least of
				// all (RFC 9113 section 5.4.2).
				t.Fatalf("frame on the reset stream: %v", f)
			}
			if f.Header().StreamID != 3 {
				continue
			}
			if d, ok := f.(*http2.DataFrame); ok && len(d.Data()) > 0 {
				if got := string(d.Data()); got != "ctx=<nil>" {
					t.Errorf("other stream: got %q, want %q (not cancelled)", got, "ctx=<nil>")
				}
			}
			if f.Header().Flags.Has(http2.FlagDataEndStream) {
				break
			}
		}
	})

	t.Run("x/net transport", func(t *testing.T) {
		c, _ := newX2Client(t)
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", ts.url("/wait"), nil)
		errc := make(chan error, 1)
		go func() {
			resp, err := c.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		<-started
		cancel()
		waitCancelled(t)
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("request: %v, want context.Canceled", err)
		}
		// The connection carries on.
		before := ts.ln.accepted.Load()
		resp, err := c.Get(ts.url("/other"))
		if err != nil {
			t.Fatal(err)
		}
		<-started
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "ctx=<nil>" || ts.ln.accepted.Load() != before {
			t.Errorf("after the cancel: %q on %d new connections, want %q on the same one", body, ts.ln.accepted.Load()-before, "ctx=<nil>")
		}
	})
}

func TestH2RequestTrailers(t *testing.T) {
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		declared := fmt.Sprint(r.Trailer)
		b, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "declared=%s body=%s err=%v trailer=%v", declared, b, err, r.Trailer)
	})})
	c, _ := newX2Client(t)
	req, _ := http.NewRequest("POST", ts.url("/"), io.MultiReader(strings.NewReader("payload")))
	req.Trailer = http.Header{"X-Checksum": {"abc123"}, "X-Count": {"1", "2"}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// Declared in "Trailer", the keys are there from the start, their
	// values after EOF, as net/http's servers do it.
	want := "declared=map[X-Checksum:[] X-Count:[]] body=payload err=<nil> trailer=map[X-Checksum:[abc123] X-Count:[1 2]]"
	if string(body) != want {
		t.Errorf("handler saw\n%s\nwant\n%s", body, want)
	}
}

func TestH2TrailersOnlyResponse(t *testing.T) {
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", "5")
		w.Header().Set("Grpc-Message", "no such thing")
		w.WriteHeader(200)
	})})
	h := dialH2(t, ts.addr)
	h.request(1, "POST", "/pkg.Service/Method", false, "content-type", "application/grpc", "te", "trailers")
	h.fr.WriteData(1, true, []byte{0, 0, 0, 0, 0})
	var got *http2.MetaHeadersFrame
	for got == nil {
		switch f := h.next().(type) {
		case *http2.MetaHeadersFrame:
			got = f
		case *http2.DataFrame:
			if f.StreamID == 1 {
				t.Fatalf("DATA before the HEADERS")
			}
		case *http2.RSTStreamFrame:
			t.Fatalf("stream reset: %v", f.ErrCode)
		}
	}
	if !got.StreamEnded() || !got.HeadersEnded() {
		t.Errorf("HEADERS flags %v, want END_STREAM and END_HEADERS: a trailers-only response is one frame", got.Flags)
	}
	if s, fs := got.PseudoValue("status"), got.RegularFields(); s != "200" || field(fs, "grpc-status") != "5" ||
		field(fs, "grpc-message") != "no such thing" || field(fs, "content-type") != "application/grpc" {
		t.Errorf("HEADERS: status %s, fields %v", s, fs)
	}
	// Nothing more on the stream: a PING's answer comes after anything the
	// handler's goroutine wrote along with the HEADERS.
	ping := [8]byte{'a', 'f', 't', 'e', 'r'}
	h.fr.WritePing(false, ping)
	for {
		f := h.next()
		if f.Header().StreamID == 1 {
			t.Fatalf("frame after END_STREAM: %v", f)
		}
		if p, ok := f.(*http2.PingFrame); ok && p.IsAck() && p.Data == ping {
			break
		}
	}
}

func TestH2HeaderListTooLarge(t *testing.T) {
	var called atomic.Int32
	ts := start(t, &Server{MaxHeaderBytes: 1 << 10, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called.Add(1)
		io.WriteString(w, "x-small="+r.Header.Get("X-Small"))
	})})
	h := dialH2(t, ts.addr)
	// Over the limit in all, each field under it: x/net's decoder, which
	// the server uses, fails the whole connection (COMPRESSION_ERROR) on a
	// single string longer than the limit. The fields go into the HPACK
	// dynamic table: the server must decode the block it rejects, or the
	// next one, which refers to them, goes wrong.
	big := strings.Repeat("b", 400)
	h.request(1, "GET", "/", true, "x-small", "v", "x-big1", big, "x-big2", big, "x-big3", big)
	if r := h.response(1); r.status != "431" {
		t.Errorf("header list over MaxHeaderBytes: status %s, want 431", r.status)
	}
	if n := called.Load(); n != 0 {
		t.Errorf("handler called %d times for the request too large", n)
	}
	h.request(3, "GET", "/", true, "x-small", "v")
	if r := h.response(3); r.status != "200" || r.body.String() != "x-small=v" {
		t.Errorf("next request on the connection: %s %q, want 200 %q", r.status, r.body.String(), "x-small=v")
	}
}

func TestH2ConcurrentStreamLimit(t *testing.T) {
	// newServer serves "/block" with handlers that wait for release.
	newServer := func(t *testing.T) (ts *testServer, entered, release chan struct{}) {
		entered, release = make(chan struct{}, 2*h2MaxStreams), make(chan struct{})
		ts = start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/block":
				entered <- struct{}{}
				select {
				case <-release:
				case <-r.Context().Done(): // the connection failed
				case <-time.After(hangGuard):
				}
			case "/stubborn": // a handler slow to notice a cancel
				entered <- struct{}{}
				select {
				case <-release:
				case <-time.After(hangGuard):
				}
			}
			io.WriteString(w, "ok")
		})})
		return ts, entered, release
	}
	// fill opens h2MaxStreams streams on path, whose handlers block, and
	// waits until they all run.
	fill := func(t *testing.T, h *h2Client, entered chan struct{}, path string) {
		t.Helper()
		for i := range h2MaxStreams {
			h.request(uint32(2*i+1), "GET", path, true)
		}
		for range h2MaxStreams {
			select {
			case <-entered:
			case <-time.After(hangGuard):
				t.Fatal("not all handlers started")
			}
		}
	}

	t.Run("refused, then served", func(t *testing.T) {
		ts, entered, release := newServer(t)
		h := dialH2(t, ts.addr)
		fill(t, h, entered, "/block")
		const over = 2*h2MaxStreams + 1
		h.request(over, "GET", "/block", true)
		for {
			f := h.next()
			if rst, ok := f.(*http2.RSTStreamFrame); ok {
				if rst.StreamID != over || rst.ErrCode != http2.ErrCodeRefusedStream {
					t.Fatalf("RST_STREAM %d %v; want %d REFUSED_STREAM", rst.StreamID, rst.ErrCode, over)
				}
				break
			}
			if f.Header().StreamID != 0 {
				t.Fatalf("frame on stream %d before the handlers were released: %v", f.Header().StreamID, f)
			}
		}
		close(release)
		ended := 0
		for ended < h2MaxStreams {
			f := h.next()
			id := f.Header().StreamID
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				if s := f.PseudoValue("status"); s != "200" {
					t.Fatalf("stream %d: status %s", id, s)
				}
			case *http2.DataFrame:
				h.credit(id, f.Length, false)
			case *http2.RSTStreamFrame, *http2.GoAwayFrame:
				t.Fatalf("stream %d: %v", id, f)
			}
			if id != 0 && f.Header().Flags.Has(http2.FlagDataEndStream) {
				ended++
			}
		}
		// The handlers have returned (or are about to): new streams run.
		for id := uint32(over + 2); id < over+2+6; id += 2 {
			h.request(id, "GET", "/", true)
			if r := h.response(id); r.status != "200" || r.body.String() != "ok" {
				t.Fatalf("stream %d after the others ended: %s %q", id, r.status, r.body.String())
			}
		}
	})

	t.Run("reset streams count until their handlers return", func(t *testing.T) {
		// Else a client resetting its streams at once runs any number of
		// handlers (the HTTP/2 "rapid reset" attack).
		ts, entered, release := newServer(t)
		h := dialH2(t, ts.addr)
		fill(t, h, entered, "/stubborn")
		for i := range h2MaxStreams {
			h.fr.WriteRSTStream(uint32(2*i+1), http2.ErrCodeCancel)
		}
		const over = 2*h2MaxStreams + 1
		h.request(over, "GET", "/", true)
		for {
			f := h.next()
			if f.Header().StreamID == 0 {
				continue
			}
			rst, ok := f.(*http2.RSTStreamFrame)
			if !ok || rst.StreamID != over || rst.ErrCode != http2.ErrCodeRefusedStream {
				t.Fatalf("got %v; want RST_STREAM %d REFUSED_STREAM while the reset streams' handlers run", f, over)
			}
			break
		}
		close(release)
		// Their handlers return: new streams run, once the last of them
		// is done.
		retry := func(id uint32) bool {
			h.request(id, "GET", "/", true)
			for {
				f := h.next()
				if f.Header().StreamID != id {
					continue
				}
				if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.ErrCode == http2.ErrCodeRefusedStream {
					return false
				}
				if d, ok := f.(*http2.DataFrame); ok {
					h.credit(id, d.Length, false)
				}
				if f.Header().Flags.Has(http2.FlagDataEndStream) {
					return true
				}
			}
		}
		id := uint32(over + 2)
		for deadline := time.Now().Add(hangGuard); !retry(id); id += 2 {
			if time.Now().After(deadline) {
				t.Fatal("new streams still refused after the handlers returned")
			}
			time.Sleep(time.Millisecond)
		}
	})

	t.Run("too many refused", func(t *testing.T) {
		ts, entered, _ := newServer(t)
		h := dialH2(t, ts.addr)
		fill(t, h, entered, "/block")
		// One refusal over the allowance ends the connection.
		last := uint32(2*h2MaxStreams - 1)
		for range h2MaxRefused + 1 {
			last += 2
			h.request(last, "GET", "/block", true)
		}
		refused := 0
		for {
			f := h.next()
			if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.ErrCode == http2.ErrCodeRefusedStream {
				refused++
				continue
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				if ga.ErrCode != http2.ErrCodeEnhanceYourCalm || ga.LastStreamID != last {
					t.Errorf("GOAWAY %v, last stream %d; want ENHANCE_YOUR_CALM, %d", ga.ErrCode, ga.LastStreamID, last)
				}
				break
			}
			if f.Header().StreamID != 0 {
				t.Fatalf("frame on stream %d: %v", f.Header().StreamID, f)
			}
		}
		if refused != h2MaxRefused {
			t.Errorf("%d streams refused before GOAWAY, want %d", refused, h2MaxRefused)
		}
		h.wantClosed()
	})
}

func TestH2IdleTimeout(t *testing.T) {
	const idle = 100 * time.Millisecond
	ts := start(t, &Server{IdleTimeout: idle, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(2 * idle) // a stream in its handler is not idle
		io.WriteString(w, "ok")
	})})
	h := dialH2(t, ts.addr)
	h.request(1, "GET", "/", true)
	if r := h.response(1); r.status != "200" || r.body.String() != "ok" {
		t.Fatalf("got %s %q", r.status, r.body.String())
	}
	h.wantGoAway(http2.ErrCodeNo, 1) // and EOF: the server half-closed
	// The client closes too, as clients do on EOF (the server's own close
	// after h2CloseDelay would cost the test a second); the server then
	// forgets the connection.
	h.c.Close()
	for deadline := time.Now().Add(hangGuard); ; time.Sleep(5 * time.Millisecond) {
		ts.mu.Lock()
		n := len(ts.h2conns)
		ts.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server still holds %d HTTP/2 connections %v after the GOAWAY", n, hangGuard)
		}
	}
}

func TestH2StreamErrors(t *testing.T) {
	started := make(chan struct{}, 1)
	done := make(chan struct{}, 1)
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			started <- struct{}{}
			<-r.Context().Done()
			done <- struct{}{}
			return
		}
		io.WriteString(w, "ok")
	})})

	t.Run("DATA after RST_STREAM", func(t *testing.T) {
		h := dialH2(t, ts.addr)
		h.request(1, "POST", "/wait", false)
		<-started
		h.fr.WriteRSTStream(1, http2.ErrCodeCancel)
		h.fr.WriteData(1, false, []byte("late")) // most likely while the stream is still there
		<-done
		h.fr.WriteData(1, false, []byte("later"))
		for rsts := 0; rsts < 2; {
			f := h.next()
			if f.Header().StreamID != 1 {
				continue
			}
			rst, ok := f.(*http2.RSTStreamFrame)
			if !ok || rst.ErrCode != http2.ErrCodeStreamClosed {
				t.Fatalf("got %v on the reset stream, want RST_STREAM STREAM_CLOSED", f)
			}
			rsts++
		}
		h.request(3, "GET", "/", true)
		if r := h.response(3); r.status != "200" {
			t.Errorf("next stream: status %s", r.status)
		}
	})

	t.Run("even stream ID", func(t *testing.T) {
		h := dialH2(t, ts.addr)
		h.request(2, "GET", "/", true)
		h.wantGoAway(http2.ErrCodeProtocol, 0)
	})

	t.Run("stream ID going down", func(t *testing.T) {
		h := dialH2(t, ts.addr)
		h.request(5, "GET", "/", true)
		h.response(5)
		h.request(3, "GET", "/", true)
		h.wantGoAway(http2.ErrCodeProtocol, 5)
	})
}

func TestH2ContentLengthMismatch(t *testing.T) {
	// A proxy must not forward a malformed body as complete: the handler's
	// read fails, and the stream is reset (RFC 9113 section 8.1.1). The
	// handler reads before answering, so the check always comes first; it
	// writes once the client has the RST_STREAM, and nothing of that may
	// follow it.
	readErr, proceed, wrote := make(chan error, 1), make(chan struct{}), make(chan error, 1)
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "POST" {
			return
		}
		_, err := io.ReadAll(r.Body)
		readErr <- err
		select {
		case <-proceed:
		case <-time.After(hangGuard):
		}
		_, err = io.WriteString(w, "read it all")
		wrote <- err
	})})
	for _, tc := range []struct {
		name   string
		length string
		data   []string // DATA frames; the last ends the stream
	}{
		{"more than declared", "1", []string{"test"}},
		{"more than declared, over several frames", "6", []string{"test", "test"}},
		{"less than declared", "10", []string{"test"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := dialH2(t, ts.addr)
			h.request(1, "POST", "/", false, "content-length", tc.length)
			for i, d := range tc.data {
				h.fr.WriteData(1, i == len(tc.data)-1, []byte(d))
			}
			for {
				f := h.next()
				if f.Header().StreamID != 1 {
					continue
				}
				if rst, ok := f.(*http2.RSTStreamFrame); !ok || rst.ErrCode != http2.ErrCodeProtocol {
					t.Fatalf("got %v, want RST_STREAM PROTOCOL_ERROR", f)
				}
				break
			}
			if err := <-readErr; err == nil {
				t.Error("handler read the whole body without an error")
			}
			proceed <- struct{}{}
			if err := <-wrote; err == nil {
				t.Error("handler's Write on the reset stream succeeded")
			}
			// Anything the handler wrote is out before the PING's answer.
			ping := [8]byte{'r', 's', 't'}
			h.fr.WritePing(false, ping)
			for {
				f := h.next()
				if f.Header().StreamID == 1 {
					t.Fatalf("frame after the server's RST_STREAM: %v", f)
				}
				if p, ok := f.(*http2.PingFrame); ok && p.IsAck() && p.Data == ping {
					break
				}
			}
			h.request(3, "GET", "/", true)
			if r := h.response(3); r.status != "200" {
				t.Errorf("next stream: status %s", r.status)
			}
		})
	}
}

func TestH2WindowUpdateOverflow(t *testing.T) {
	// The stream stays open, its handler waiting, so the check always
	// comes first (an early response would close the stream).
	ts := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			select {
			case <-r.Context().Done():
			case <-time.After(hangGuard):
			}
			return
		}
		io.WriteString(w, "ok")
	})})

	t.Run("stream", func(t *testing.T) {
		h := dialH2(t, ts.addr)
		h.request(1, "GET", "/wait", false)
		h.fr.WriteWindowUpdate(1, 1<<31-1) // on top of 65535
		for {
			f := h.next()
			if f.Header().StreamID == 0 {
				if ga, ok := f.(*http2.GoAwayFrame); ok {
					t.Fatalf("GOAWAY %v, want a stream error only", ga.ErrCode)
				}
				continue
			}
			if rst, ok := f.(*http2.RSTStreamFrame); !ok || rst.StreamID != 1 || rst.ErrCode != http2.ErrCodeFlowControl {
				t.Fatalf("got %v, want RST_STREAM 1 FLOW_CONTROL_ERROR", f)
			}
			break
		}
		h.request(3, "GET", "/", true)
		if r := h.response(3); r.status != "200" || r.body.String() != "ok" {
			t.Errorf("next stream: %s %q", r.status, r.body.String())
		}
	})

	t.Run("connection", func(t *testing.T) {
		h := dialH2(t, ts.addr)
		h.request(1, "GET", "/wait", false)
		h.fr.WriteWindowUpdate(0, 1<<31-1)
		h.wantGoAway(http2.ErrCodeFlowControl, 1)
	})
}
