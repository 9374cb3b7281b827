// Package h2 is the proxy's HTTP/2 client transport to upstream endpoints
// (the sidecar-to-sidecar hop, and h2c or gRPC apps): one multiplexed
// connection per endpoint, framed with golang.org/x/net/http2's Framer and
// hpack.
//
// net/http's HTTP/2 transport starts a goroutine per request to write it and
// hands every response from its reader goroutine to that goroutine and on to
// the caller. Here the caller writes its request's frames itself and waits
// for the connection's reader to deliver the response head: one goroutine
// hand-off per request, plus a body writer only for requests with a body.
//
// Concurrency: RoundTrip, the response bodies and CloseIdleConnections may
// be used from any goroutine.
package h2

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	// streamWindow is the receive window each stream gets (SETTINGS
	// INITIAL_WINDOW_SIZE): what an upstream may send ahead of the
	// downstream's reading. net/http's transport uses the same.
	streamWindow = 4 << 20
	// connWindow is the connection's receive window; streams bound what is
	// buffered, so it is credited as data arrives.
	connWindow = 1 << 30
	// creditEvery batches WINDOW_UPDATEs.
	creditEvery = 64 << 10
	// maxHeaderList is the response header block we accept
	// (SETTINGS_MAX_HEADER_LIST_SIZE).
	maxHeaderList = 1 << 20
)

// The errors for requests the upstream never processed (see Unprocessed).
var (
	// errConnUnusable: the connection failed or was shut down before the
	// request's HEADERS were written.
	errConnUnusable = errors.New("h2: client conn not usable")
	// errGoAwayRefused: the stream was above the last one a GOAWAY said the
	// server would process.
	errGoAwayRefused = errors.New("h2: stream not processed: server sent graceful shutdown GOAWAY")
	errBodyClosed    = errors.New("h2: response body closed")
	errIdle          = errors.New("h2: idle connection closed")
)

// Transport is an http.RoundTripper speaking prior-knowledge HTTP/2 on
// connections from Dial (TLS with ALPN h2, when the cluster has it, is Dial's
// business).
type Transport struct {
	Dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	IdleTimeout time.Duration

	mu      sync.Mutex
	conns   map[string][]*conn
	dialing map[string]*dialCall
	reaper  *time.Timer // runs reap while connections exist; created by the first dial
	armed   bool
}

type dialCall struct {
	done chan struct{}
	c    *conn
	err  error
}

// RoundTrip sends req on a connection to req.URL.Host and returns the
// response once its head has arrived.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 1; ; attempt++ {
		c, err := t.getConn(req.Context(), req.URL.Host)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, err := c.roundTrip(req)
		if err == nil {
			return resp, nil
		}
		if attempt < maxAttempts && req.Context().Err() == nil && neverProcessed(err, hasBody(req)) {
			continue // again, on another stream or connection, as net/http does
		}
		closeBody(req)
		return nil, err
	}
}

// maxAttempts bounds the tries of a request the upstream did not process.
const maxAttempts = 3

// neverProcessed reports whether a request that failed with err may be sent
// again on this transport: nothing was written, or the server refused the
// stream and the request has no body (which the writer may have started).
func neverProcessed(err error, body bool) bool {
	return errors.Is(err, errConnUnusable) || Unprocessed(err) && !body
}

// Unprocessed reports whether err says the upstream did not process the
// request at all (RFC 9113 section 8.7): the connection could not take it,
// the server refused the stream (REFUSED_STREAM) or it was above the last
// stream a GOAWAY let through. Such a request may go to another endpoint,
// whatever its method, if its body was not read.
func Unprocessed(err error) bool {
	var se http2.StreamError
	return errors.Is(err, errConnUnusable) || errors.Is(err, errGoAwayRefused) ||
		errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream
}

// CloseIdleConnections closes the connections without streams.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	var idle []*conn
	for addr, list := range t.conns {
		keep := list[:0]
		for _, c := range list {
			c.mu.Lock()
			busy := c.reserved > 0
			c.mu.Unlock()
			if busy {
				keep = append(keep, c)
			} else {
				idle = append(idle, c)
			}
		}
		if len(keep) == 0 {
			delete(t.conns, addr)
		} else {
			t.conns[addr] = keep
		}
	}
	t.mu.Unlock()
	for _, c := range idle {
		c.close(errIdle)
	}
}

func hasBody(req *http.Request) bool { return req.Body != nil && req.Body != http.NoBody }

func closeBody(req *http.Request) {
	if hasBody(req) {
		req.Body.Close()
	}
}

// getConn returns a connection to addr with a stream reserved on it.
func (t *Transport) getConn(ctx context.Context, addr string) (*conn, error) {
	for {
		t.mu.Lock()
		for _, c := range t.conns[addr] {
			if c.reserve() {
				t.mu.Unlock()
				return c, nil
			}
		}
		if t.dialing == nil {
			t.dialing = make(map[string]*dialCall)
		}
		if d, ok := t.dialing[addr]; ok {
			t.mu.Unlock()
			select {
			case <-d.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if d.err != nil {
				if ctx.Err() == nil && (errors.Is(d.err, context.Canceled) || errors.Is(d.err, context.DeadlineExceeded)) {
					continue // the request that dialled gave up; this one has not: dial again
				}
				return nil, d.err
			}
			continue
		}
		d := &dialCall{done: make(chan struct{})}
		t.dialing[addr] = d
		t.mu.Unlock()

		d.c, d.err = t.dial(ctx, addr)
		t.mu.Lock()
		delete(t.dialing, addr)
		if d.err == nil {
			if t.conns == nil {
				t.conns = make(map[string][]*conn)
			}
			t.conns[addr] = append(t.conns[addr], d.c)
			t.armReaperLocked()
		}
		t.mu.Unlock()
		close(d.done)
		if d.err != nil {
			return nil, d.err
		}
	}
}

// armReaperLocked makes sure reap runs within half an IdleTimeout while
// there are connections. Caller holds t.mu.
func (t *Transport) armReaperLocked() {
	if t.IdleTimeout <= 0 || t.armed {
		return
	}
	t.armed = true
	if t.reaper == nil {
		t.reaper = time.AfterFunc(t.IdleTimeout/2, t.reap)
		return
	}
	t.reaper.Reset(t.IdleTimeout / 2)
}

// reap closes connections that have had no stream for IdleTimeout, as
// net/http's IdleConnTimeout does (an endpoint gone from the cluster would
// otherwise keep its connection for as long as the peer does).
func (t *Transport) reap() {
	deadline := time.Now().Add(-t.IdleTimeout)
	var stale []*conn
	t.mu.Lock()
	for _, list := range t.conns {
		for _, c := range list {
			c.mu.Lock()
			if c.reserved == 0 && c.idleSince.Before(deadline) {
				stale = append(stale, c)
			}
			c.mu.Unlock()
		}
	}
	t.armed = false
	if len(t.conns) > len(stale) || len(t.dialing) > 0 {
		t.armReaperLocked()
	}
	t.mu.Unlock()
	for _, c := range stale {
		c.close(errIdle) // a stream reserved since is failed as never sent
	}
}

func (t *Transport) remove(c *conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	list := t.conns[c.addr]
	for i, x := range list {
		if x == c {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(t.conns, c.addr)
	} else {
		t.conns[c.addr] = list
	}
}

// dial opens a connection and sends the client preface and settings.
func (t *Transport) dial(ctx context.Context, addr string) (*conn, error) {
	nc, err := t.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &conn{
		t:            t,
		addr:         addr,
		nc:           nc,
		bw:           bufio.NewWriterSize(nc, 16<<10),
		streams:      make(map[uint32]*stream),
		nextID:       1,
		maxStreams:   100, // until the server's SETTINGS say otherwise
		sendWin:      65535,
		peerInitWin:  65535,
		peerMaxFrame: 16 << 10,
		idleSince:    time.Now(),
	}
	c.cond = sync.NewCond(&c.mu)
	c.fr = http2.NewFramer(c.bw, bufio.NewReaderSize(nc, 16<<10))
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.SetReuseFrames()
	c.fr.MaxHeaderListSize = maxHeaderList
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.bw.WriteString(http2.ClientPreface)
	c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderList},
	)
	c.fr.WriteWindowUpdate(0, connWindow-65535)
	if err := c.bw.Flush(); err != nil {
		nc.Close()
		return nil, err
	}
	go c.readLoop()
	return c, nil
}

// conn is one HTTP/2 connection.
type conn struct {
	t    *Transport
	addr string
	nc   net.Conn

	// wmu serialises frame writes, the header encoder and stream ID order
	// (IDs must appear on the wire in increasing order).
	wmu  sync.Mutex
	bw   *bufio.Writer
	fr   *http2.Framer // its reading side is the reader goroutine's only
	henc *hpack.Encoder
	hbuf bytes.Buffer

	mu           sync.Mutex
	cond         *sync.Cond // send windows grew, or the connection failed
	streams      map[uint32]*stream
	nextID       uint32
	reserved     int    // streams open or being opened
	maxStreams   uint32 // the server's MAX_CONCURRENT_STREAMS
	sendWin      int32  // connection send window
	peerInitWin  int32
	peerMaxFrame uint32
	goAway       bool
	err          error     // set once the connection failed
	recvUnacked  int       // connection-level bytes received, not yet credited
	idleSince    time.Time // when reserved last fell to 0
}

// reserve takes a stream slot, or reports that the connection cannot take
// another stream.
func (c *conn) reserve() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nextID >= 1<<31-1-2*uint32(c.reserved) {
		c.goAway = true // stream IDs run out: drain it like a shut-down one
	}
	if c.err != nil || c.goAway || uint32(c.reserved) >= c.maxStreams {
		return false
	}
	c.reserved++
	return true
}

// release ends a stream's reservation.
func (c *conn) release() {
	c.mu.Lock()
	c.reserved--
	if c.reserved == 0 {
		c.idleSince = time.Now()
	}
	c.mu.Unlock()
}

// close fails the connection and every stream on it.
func (c *conn) close(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	streams := c.streams
	c.streams = map[uint32]*stream{}
	c.cond.Broadcast()
	c.mu.Unlock()
	c.nc.Close()
	c.t.remove(c)
	for _, s := range streams {
		s.fail(fmt.Errorf("h2: connection to %s lost: %w", c.addr, err))
	}
}

// roundTrip writes req on c, whose stream slot the caller reserved, and
// waits for the response head.
func (c *conn) roundTrip(req *http.Request) (*http.Response, error) {
	body := hasBody(req)
	s := &stream{c: c, req: req, respc: make(chan struct{}), notify: make(chan struct{}, 1), sentEnd: !body}

	c.wmu.Lock()
	c.mu.Lock()
	if c.err != nil || c.goAway {
		c.mu.Unlock()
		c.wmu.Unlock()
		c.release()
		return nil, errConnUnusable
	}
	s.id = c.nextID
	c.nextID += 2
	s.sendWin = c.peerInitWin
	c.streams[s.id] = s
	maxFrame := c.peerMaxFrame
	c.mu.Unlock()
	err := c.writeHeaders(s.id, !body, maxFrame, func(enc func(k, v string)) { encodeRequest(req, body, enc) })
	if err == nil {
		err = c.bw.Flush()
	}
	c.wmu.Unlock()
	if err != nil {
		c.close(err)
		return nil, err
	}
	if body {
		go s.writeBody(req.Body, req.Trailer)
	}
	// A done request resets the stream: the wait below and the body's
	// reads return.
	s.stop = context.AfterFunc(req.Context(), func() { s.reset(http2.ErrCodeCancel, req.Context().Err()) })
	<-s.respc
	if s.respErr != nil {
		s.stop()
		return nil, s.respErr
	}
	return s.resp, nil
}

// writeHeaders writes a header block as HEADERS and CONTINUATION frames.
// Caller holds wmu.
func (c *conn) writeHeaders(id uint32, endStream bool, maxFrame uint32, fields func(enc func(k, v string))) error {
	c.hbuf.Reset()
	fields(func(k, v string) { c.henc.WriteField(hpack.HeaderField{Name: k, Value: v}) })
	block := c.hbuf.Bytes()
	first := true
	for first || len(block) > 0 {
		chunk := block
		if uint32(len(chunk)) > maxFrame {
			chunk = chunk[:maxFrame]
		}
		block = block[len(chunk):]
		var err error
		if first {
			err = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: chunk, EndStream: endStream, EndHeaders: len(block) == 0})
			first = false
		} else {
			err = c.fr.WriteContinuation(id, len(block) == 0, chunk)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// encodeRequest emits req's header fields.
func encodeRequest(req *http.Request, body bool, enc func(k, v string)) {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	enc(":authority", host)
	enc(":method", method)
	enc(":path", req.URL.RequestURI())
	enc(":scheme", "http")
	for k, vs := range req.Header {
		lk := lower(k)
		switch lk {
		case "host", "connection", "proxy-connection", "transfer-encoding", "upgrade", "keep-alive", "content-length":
			continue // connection-specific, or set from the request below
		case "te":
			if len(vs) > 0 && vs[0] == "trailers" {
				enc("te", "trailers")
			}
			continue
		}
		for _, v := range vs {
			enc(lk, v)
		}
	}
	if body && req.ContentLength > 0 {
		enc("content-length", strconv.FormatInt(req.ContentLength, 10))
	}
	if len(req.Trailer) > 0 {
		keys := make([]string, 0, len(req.Trailer))
		for k := range req.Trailer {
			keys = append(keys, lower(k))
		}
		enc("trailer", strings.Join(keys, ","))
	}
}

// commonLower holds the lower-case form of frequent canonical header names,
// so encoding them does not allocate.
var commonLower = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control",
		"Content-Encoding", "Content-Type", "Cookie", "Date", "Etag", "Grpc-Accept-Encoding", "Grpc-Encoding",
		"Grpc-Message", "Grpc-Status", "Grpc-Timeout", "If-Modified-Since", "If-None-Match", "Location",
		"Origin", "Referer", "Server", "Set-Cookie", "Te", "Trailer", "Traceparent", "Tracestate", "User-Agent",
		"X-B3-Sampled", "X-B3-Spanid", "X-B3-Traceid", "X-Envoy-Attempt-Count", "X-Envoy-Expected-Rq-Timeout-Ms",
		"X-Forwarded-Client-Cert", "X-Forwarded-For", "X-Forwarded-Proto", "X-Request-Id"} {
		m[k] = strings.ToLower(k)
	}
	return m
}()

func lower(k string) string {
	if l, ok := commonLower[k]; ok {
		return l
	}
	return strings.ToLower(k)
}

// readLoop reads frames until the connection fails.
func (c *conn) readLoop() {
	var err error
	for {
		var f http2.Frame
		f, err = c.fr.ReadFrame()
		var se http2.StreamError
		if errors.As(err, &se) {
			// A malformed header block on one stream fails that stream.
			if s := c.stream(se.StreamID); s != nil {
				s.reset(se.Code, se)
			}
			continue
		}
		if err != nil {
			break
		}
		if err = c.handle(f); err != nil {
			break
		}
	}
	c.close(err)
}

func (c *conn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		if s := c.stream(f.StreamID); s != nil {
			s.onHeaders(f)
		}
	case *http2.DataFrame:
		n := int(f.Length)
		c.mu.Lock()
		c.recvUnacked += n
		credit := 0
		if c.recvUnacked >= creditEvery {
			credit, c.recvUnacked = c.recvUnacked, 0
		}
		s := c.streams[f.StreamID]
		c.mu.Unlock()
		if credit > 0 {
			c.writeFrame(func() error { return c.fr.WriteWindowUpdate(0, uint32(credit)) })
		}
		if s != nil {
			s.onData(f.Data(), n-len(f.Data()), f.StreamEnded())
		}
	case *http2.RSTStreamFrame:
		if s := c.stream(f.StreamID); s != nil {
			s.fail(http2.StreamError{StreamID: f.StreamID, Code: f.ErrCode})
		}
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if err := c.applySettings(f); err != nil {
			return err
		}
		c.writeFrame(func() error { return c.fr.WriteSettingsAck() })
	case *http2.PingFrame:
		if !f.IsAck() {
			c.writeFrame(func() error { return c.fr.WritePing(true, f.Data) })
		}
	case *http2.GoAwayFrame:
		c.mu.Lock()
		c.goAway = true
		var refused []*stream
		for id, s := range c.streams {
			if id > f.LastStreamID {
				refused = append(refused, s)
				delete(c.streams, id)
			}
		}
		c.mu.Unlock()
		for _, s := range refused {
			s.fail(errGoAwayRefused)
		}
	case *http2.WindowUpdateFrame:
		c.mu.Lock()
		if f.StreamID == 0 {
			c.sendWin += int32(f.Increment)
		} else if s := c.streams[f.StreamID]; s != nil {
			s.sendWin += int32(f.Increment)
		}
		c.cond.Broadcast()
		c.mu.Unlock()
	case *http2.PushPromiseFrame:
		return errors.New("h2: PUSH_PROMISE although push is disabled")
	}
	return nil
}

func (c *conn) stream(id uint32) *stream {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams[id]
}

func (c *conn) applySettings(f *http2.SettingsFrame) error {
	var tableSize uint32
	var hasTable bool
	err := f.ForeachSetting(func(st http2.Setting) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		switch st.ID {
		case http2.SettingMaxConcurrentStreams:
			c.maxStreams = max(st.Val, 1)
		case http2.SettingInitialWindowSize:
			delta := int32(st.Val) - c.peerInitWin
			c.peerInitWin = int32(st.Val)
			for _, s := range c.streams {
				s.sendWin += delta
			}
			c.cond.Broadcast()
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = st.Val
		case http2.SettingHeaderTableSize:
			tableSize, hasTable = st.Val, true
		}
		return nil
	})
	if hasTable {
		c.wmu.Lock()
		c.henc.SetMaxDynamicTableSize(tableSize)
		c.wmu.Unlock()
	}
	return err
}

// writeFrame writes one frame (and flushes) for the reader or a stream; a
// failure fails the connection.
func (c *conn) writeFrame(write func() error) {
	c.wmu.Lock()
	err := write()
	if err == nil {
		err = c.bw.Flush()
	}
	c.wmu.Unlock()
	if err != nil {
		c.close(err)
	}
}

// stream is one request and its response.
type stream struct {
	c     *conn
	id    uint32
	req   *http.Request
	stop  func() bool // stops the context's reset
	respc chan struct{}

	// Set before respc is closed, read after.
	resp    *http.Response
	respErr error

	mu        sync.Mutex
	delivered bool   // respc is closed
	buf       []byte // received body bytes; buf[off:] not read yet
	off       int
	ended     bool  // END_STREAM received
	err       error // reset or connection failure; reads return it
	sentEnd   bool  // our END_STREAM is out (or no body is coming)
	removed   bool  // out of the connection's map, reservation released
	unacked   int   // bytes read, not yet credited to the stream's window
	// trailers holds the trailers as they arrive; Read copies them into
	// resp.Trailer at the end of the body, on the reader's goroutine, since
	// the caller may look at resp.Trailer's declared keys meanwhile.
	trailers http.Header
	notify   chan struct{}
	sendWin  int32 // guarded by c.mu
}

func (s *stream) onHeaders(f *http2.MetaHeadersFrame) {
	s.mu.Lock()
	if s.delivered {
		// Trailers.
		s.trailers = make(http.Header, len(f.Fields))
		for _, hf := range f.RegularFields() {
			k := http.CanonicalHeaderKey(hf.Name)
			s.trailers[k] = append(s.trailers[k], hf.Value)
		}
		s.ended = true
		s.mu.Unlock()
		s.wake()
		s.maybeDone()
		return
	}
	status, err := strconv.Atoi(f.PseudoValue("status"))
	if err != nil || status < 100 || status > 999 {
		s.mu.Unlock()
		s.reset(http2.ErrCodeProtocol, fmt.Errorf("h2: malformed response status %q", f.PseudoValue("status")))
		return
	}
	if status < 200 {
		s.mu.Unlock()
		return // informational: net/http's transport hands these to httptrace only
	}
	h := make(http.Header, len(f.Fields))
	for _, hf := range f.RegularFields() {
		k := http.CanonicalHeaderKey(hf.Name)
		h[k] = append(h[k], hf.Value)
	}
	trailer := http.Header{}
	for _, v := range h["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				trailer[http.CanonicalHeaderKey(k)] = nil
			}
		}
	}
	delete(h, "Trailer")
	cl := int64(-1)
	if v := h.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			cl = n
		}
	}
	resp := &http.Response{
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		StatusCode:    status,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        h,
		Trailer:       trailer,
		ContentLength: cl,
		Request:       s.req,
		Body:          s,
	}
	if f.StreamEnded() {
		s.ended = true
		if cl < 0 {
			resp.ContentLength = 0
		}
	}
	s.resp = resp
	s.delivered = true
	s.mu.Unlock()
	close(s.respc)
	s.maybeDone()
}

func (s *stream) onData(data []byte, padding int, end bool) {
	s.mu.Lock()
	if s.err == nil && !s.removed {
		s.buf = append(s.buf, data...)
	}
	s.unacked += padding
	s.ended = s.ended || end
	s.mu.Unlock()
	s.wake()
	if end {
		s.maybeDone()
	}
}

func (s *stream) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// fail ends the stream with err (a reset, GOAWAY or connection failure).
func (s *stream) fail(err error) {
	s.mu.Lock()
	if s.err == nil && !s.ended {
		s.err = err // a complete response stays readable
	}
	first := !s.delivered
	if first {
		s.delivered = true
		s.respErr = err
	}
	s.mu.Unlock()
	if first {
		close(s.respc)
	}
	s.wake()
	s.c.mu.Lock()
	s.c.cond.Broadcast()
	s.c.mu.Unlock()
	s.remove()
}

// reset sends RST_STREAM and fails the stream with err.
func (s *stream) reset(code http2.ErrCode, err error) {
	s.mu.Lock()
	done := s.removed
	s.mu.Unlock()
	if !done {
		s.c.writeFrame(func() error { return s.c.fr.WriteRSTStream(s.id, code) })
	}
	s.fail(err)
}

// maybeDone removes the stream once both directions have ended.
func (s *stream) maybeDone() {
	s.mu.Lock()
	done := s.ended && s.sentEnd
	s.mu.Unlock()
	if done {
		s.remove()
	}
}

func (s *stream) remove() {
	s.mu.Lock()
	if s.removed {
		s.mu.Unlock()
		return
	}
	s.removed = true
	s.mu.Unlock()
	c := s.c
	c.mu.Lock()
	if c.streams[s.id] == s {
		delete(c.streams, s.id)
	}
	c.reserved--
	if c.reserved == 0 {
		c.idleSince = time.Now()
	}
	drained := c.goAway && c.reserved == 0
	c.mu.Unlock()
	if drained {
		c.close(errIdle) // the server is shutting it down; nothing left on it
	}
}

// Read reads the response body.
func (s *stream) Read(p []byte) (int, error) {
	for {
		s.mu.Lock()
		if s.off < len(s.buf) {
			n := copy(p, s.buf[s.off:])
			s.off += n
			if s.off == len(s.buf) {
				s.buf, s.off = s.buf[:0], 0 // the next DATA reuses the array
			}
			s.unacked += n
			credit := 0
			if s.unacked >= creditEvery && !s.ended {
				credit, s.unacked = s.unacked, 0
			}
			s.mu.Unlock()
			if credit > 0 {
				s.c.writeFrame(func() error { return s.c.fr.WriteWindowUpdate(s.id, uint32(credit)) })
			}
			return n, nil
		}
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return 0, err
		}
		if s.ended {
			trailers := s.trailers
			s.trailers = nil
			s.mu.Unlock()
			s.stop()
			for k, vs := range trailers {
				s.resp.Trailer[k] = vs
			}
			return 0, io.EOF
		}
		s.mu.Unlock()
		<-s.notify
	}
}

// Close ends the body; before the end of the response it resets the
// stream.
func (s *stream) Close() error {
	s.mu.Lock()
	complete := s.ended && s.err == nil && s.off == len(s.buf)
	s.mu.Unlock()
	s.stop()
	if !complete {
		s.reset(http2.ErrCodeCancel, errBodyClosed)
	}
	return nil
}

// writeBody sends the request body as DATA frames within the send windows,
// then END_STREAM (with trailers, if any).
func (s *stream) writeBody(body io.ReadCloser, trailer http.Header) {
	defer body.Close()
	c := s.c
	buf := make([]byte, 16<<10)
	for {
		n, rerr := body.Read(buf)
		for data := buf[:n]; len(data) > 0; {
			allowed := s.awaitWindow(len(data))
			if allowed == 0 {
				return // the stream or connection ended
			}
			chunk := data[:allowed]
			c.wmu.Lock()
			err := c.fr.WriteData(s.id, false, chunk)
			if err == nil {
				err = c.bw.Flush()
			}
			c.wmu.Unlock()
			if err != nil {
				c.close(err)
				return
			}
			data = data[allowed:]
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			s.reset(http2.ErrCodeCancel, rerr)
			return
		}
	}
	c.wmu.Lock()
	var err error
	if len(trailer) > 0 {
		c.mu.Lock()
		maxFrame := c.peerMaxFrame
		c.mu.Unlock()
		err = c.writeHeaders(s.id, true, maxFrame, func(enc func(k, v string)) {
			for k, vs := range trailer {
				for _, v := range vs {
					enc(lower(k), v)
				}
			}
		})
	} else {
		err = c.fr.WriteData(s.id, true, nil)
	}
	if err == nil {
		err = c.bw.Flush()
	}
	c.wmu.Unlock()
	if err != nil {
		c.close(err)
		return
	}
	s.mu.Lock()
	s.sentEnd = true
	s.mu.Unlock()
	s.maybeDone()
}

// awaitWindow waits until the stream may send, and takes up to n bytes of
// both windows; 0 means the stream is over.
func (s *stream) awaitWindow(n int) int {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		s.mu.Lock()
		over := s.err != nil || s.removed
		s.mu.Unlock()
		if over || c.err != nil {
			return 0
		}
		if c.sendWin > 0 && s.sendWin > 0 {
			break
		}
		c.cond.Wait()
	}
	allowed := min(int32(n), c.sendWin, s.sendWin, int32(c.peerMaxFrame))
	c.sendWin -= allowed
	s.sendWin -= allowed
	return int(allowed)
}
