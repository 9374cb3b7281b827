package httpserver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/tinymesh/tinymesh/dataplane/batchwrite"
	"github.com/tinymesh/tinymesh/dataplane/internal/reqctx"
)

// Connection states, for Shutdown.
const (
	stateNew    int32 = iota // accepted, no request read yet
	stateIdle                // between requests
	stateActive              // reading or serving a request
	stateClosed              // closed by Shutdown
)

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// maxPostHandlerReadBytes is how much of a request body the handler left
// unread is read and discarded to keep the connection, as in net/http.
const maxPostHandlerReadBytes = 256 << 10

// drainTimeout bounds that discarding: the body has to be there already or
// arrive at once; otherwise the connection is closed instead.
const drainTimeout = 250 * time.Millisecond

// aLongTimeAgo is a deadline in the past: setting it makes a blocked read
// return at once.
var aLongTimeAgo = time.Unix(1, 0)

var errTooLarge = errors.New("httpserver: request head too large")

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)

// conn is one downstream connection. Its fields are touched by its serve
// goroutine only, except where noted.
type conn struct {
	srv        *Server
	rwc        net.Conn
	remoteAddr string
	ctx        context.Context // the connection's, from ConnContext

	// reqCtx is the context of the connection's requests, cancelled when
	// the client goes away or the connection ends. Requests run one at a
	// time, so they share it: a context per request (its cancelCtx, Done
	// channel and the map of its children, which each upstream stream's
	// cancel hook joins) was 7 % of the client sidecar's allocations, and
	// the upstream transport watches a reqctx.Context without allocating.
	// So, unlike net/http's, a request's context is not cancelled when its
	// handler returns: what a handler hooks on it it must unhook itself (as
	// the upstream transports do).
	reqCtx   reqctx.Context
	accepted time.Time
	state    atomic.Int32 // read by Shutdown

	cr connReader
	br *bufio.Reader
	bw *bufio.Writer
	w  response // reused by each request

	hijacked bool

	// readDeadline is what the connection's read deadline was last set to
	// (zero: none), so that setReadDeadline can skip setting it again.
	readDeadline time.Time

	// The watch for a client that goes away (see watchStart).
	watchTimer *time.Timer // created by the first request that needs it
	watchMu    sync.Mutex
	inHandler  bool          // guarded by watchMu
	bodyEOF    *atomic.Bool  // the request body has been read to the end; guarded by watchMu
	watching   chan struct{} // closed when the background read returns; guarded by watchMu
	aborting   bool          // guarded by watchMu
	peerGone   atomic.Bool
	oneByte    [1]byte
}

func newConn(s *Server, rwc net.Conn) *conn {
	c := &conn{srv: s, rwc: rwc, accepted: time.Now()}
	c.cr.conn = rwc
	c.cr.remain = maxInt64
	return c
}

const maxInt64 = 1<<63 - 1

// closeIfIdle closes the connection if it is waiting for a request (or new
// for longer than newConnGrace). Called by Shutdown under s.mu.
func (c *conn) closeIfIdle() {
	st := c.state.Load()
	if st == stateNew && time.Since(c.accepted) < newConnGrace {
		return
	}
	if (st == stateIdle || st == stateNew) && c.state.CompareAndSwap(st, stateClosed) {
		c.rwc.Close()
	}
}

func (c *conn) serve() {
	c.remoteAddr = c.rwc.RemoteAddr().String()
	ctx := context.WithValue(context.Background(), http.LocalAddrContextKey, c.rwc.LocalAddr())
	if c.srv.ConnContext != nil {
		ctx = c.srv.ConnContext(ctx, c.rwc)
	}
	c.ctx = ctx
	c.reqCtx.Init(ctx)
	c.br = readerPool.Get().(*bufio.Reader)
	c.br.Reset(&c.cr)
	c.bw = writerPool.Get().(*bufio.Writer)
	c.bw.Reset(c.rwc)
	defer c.end()

	if d := c.srv.ReadHeaderTimeout; d > 0 {
		c.setReadDeadline(time.Now().Add(d))
	}
	// The head's limit counts from here: the preface check reads into the
	// buffer what ReadRequest then parses.
	c.cr.remain = c.headLimit()
	h2, err := c.prefaceFollows()
	if err != nil {
		return
	}
	if h2 {
		c.handOff()
		return
	}
	for first := true; c.next(first); first = false {
	}
}

// end cancels the requests' context and closes the connection unless it
// was hijacked or handed over.
func (c *conn) end() {
	c.reqCtx.Cancel(nil)
	if c.hijacked {
		return
	}
	c.rwc.Close()
	c.srv.forget(c)
	c.br.Reset(nil)
	readerPool.Put(c.br)
	c.bw.Reset(nil)
	writerPool.Put(c.bw)
}

// prefaceFollows reads as far as needed to tell the HTTP/2 client preface
// from an HTTP/1.1 request. A short line ends the question early, so a
// client that sends less than the preface's length gets its 400 at once.
func (c *conn) prefaceFollows() (bool, error) {
	for n := 1; n <= len(h2Preface); n++ {
		b, err := c.br.Peek(n)
		if err != nil {
			return false, err
		}
		if b[n-1] != h2Preface[n-1] {
			return false, nil
		}
	}
	return true, nil
}

// handOff serves the connection as HTTP/2, reading on from the bytes
// already buffered.
func (c *conn) handOff() {
	c.hijacked = true // no longer an HTTP/1.1 connection to close or pool
	c.srv.forget(c)
	c.setReadDeadline(time.Time{})
	c.cr.remain = maxInt64
	c.bw.Reset(nil)
	writerPool.Put(c.bw)
	// Frames of many streams are worth coalescing into fewer writes; an
	// HTTP/1.1 response, one at a time on its connection, is not.
	batchwrite.Enable(c.rwc)
	c.srv.serveH2(newH2Conn(c.srv, c.rwc, c.br, c.ctx, c.remoteAddr))
}

// next waits for a request, serves it and reports whether the connection
// stays open for another.
func (c *conn) next(first bool) bool {
	if c.br.Buffered() == 0 {
		if !first {
			if !c.becomeIdle() {
				return false
			}
			c.armIdleTimeout()
			// Before the Peek, which fills the buffer with the head.
			c.cr.remain = c.headLimit()
		}
		if _, err := c.br.Peek(1); err != nil {
			return false
		}
	}
	// Pipelined requests keep the connection active; an idle one may have
	// been closed by Shutdown meanwhile.
	if st := c.state.Load(); st == stateClosed || st != stateActive && !c.state.CompareAndSwap(st, stateActive) {
		return false
	}
	if c.cr.remain == maxInt64 {
		// Pipelined: the buffer held the start of this head.
		c.cr.remain = c.headLimit()
	}
	// readHead reads only what is buffered, so it needs no deadline.
	req, err := readHead(c.br), error(nil)
	if req == nil {
		if d := c.srv.ReadHeaderTimeout; d > 0 && !first && !headBuffered(c.br) {
			c.setReadDeadline(time.Now().Add(d))
		}
		req, err = http.ReadRequest(c.br)
	}
	tooLarge := c.cr.hitLimit
	c.cr.remain, c.cr.hitLimit = maxInt64, false
	if err != nil {
		c.reject(err, tooLarge)
		return false
	}
	if req.Body != nil && req.Body != http.NoBody {
		// The handler reads the body: no deadline of the head's or of the
		// idle wait applies to it. Without a body, the deadline may stay:
		// nothing reads the connection until the next head, unless the
		// watch does, which clears it (watchFire).
		c.setReadDeadline(time.Time{})
	}
	if code, why := check(req); code != 0 {
		c.replyError(code, why)
		return false
	}
	if v, ok := req.Header["Expect"]; ok {
		if len(v) != 1 || !strings.EqualFold(v[0], "100-continue") || !req.ProtoAtLeast(1, 1) {
			c.replyError(http.StatusExpectationFailed, "")
			return false
		}
		// As Envoy does by default: answer the expectation here rather than
		// pass it upstream.
		delete(req.Header, "Expect")
		if req.ContentLength != 0 {
			c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			if c.bw.Flush() != nil {
				return false
			}
		}
	}
	return c.serveRequest(req)
}

// setReadDeadline sets the connection's read deadline unless it is set to t
// already: each setting reschedules a runtime timer, three a request on the
// outbound listener's keep-alive connections when each was set and cleared
// around every head (3 % of the client sidecar's CPU).
func (c *conn) setReadDeadline(t time.Time) {
	if t.Equal(c.readDeadline) {
		return
	}
	c.rwc.SetReadDeadline(t)
	c.readDeadline = t
}

// armIdleTimeout bounds the wait for the next request by IdleTimeout. The
// deadline an earlier request set is kept while it is between IdleTimeout
// and IdleTimeout plus idleSlack away; only then is it set again, to the
// far end, so a busy connection sets it about once per
// idleSlack and an idle one is closed after between IdleTimeout and
// IdleTimeout plus idleSlack.
func (c *conn) armIdleTimeout() {
	d := c.srv.IdleTimeout
	if d <= 0 {
		c.setReadDeadline(time.Time{})
		return
	}
	now := time.Now()
	soonest, latest := now.Add(d), now.Add(d+idleSlack(d))
	if !c.readDeadline.Before(soonest) && !c.readDeadline.After(latest) {
		return
	}
	c.setReadDeadline(latest)
}

// idleSlack is how much later than IdleTimeout an idle connection may be
// closed: an eighth of it, at most a second.
func idleSlack(d time.Duration) time.Duration {
	return min(d/8, time.Second)
}

// headBuffered reports whether the buffer holds a whole request head, up to
// the empty line that ends it (CRLF or bare LF, as textproto reads lines):
// then ReadRequest reads nothing from the connection and needs no deadline.
func headBuffered(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	return bytes.Contains(b, []byte("\n\r\n")) || bytes.Contains(b, []byte("\n\n"))
}

// headLimit is how many bytes may be read for a request head: its
// MaxHeaderBytes and 4 KiB of slack, as net/http allows.
func (c *conn) headLimit() int64 {
	n := c.srv.MaxHeaderBytes
	if n <= 0 {
		n = http.DefaultMaxHeaderBytes
	}
	return int64(n) + 4<<10
}

// becomeIdle marks the connection idle between requests; false if the
// server is closing (then the connection ends).
func (c *conn) becomeIdle() bool {
	c.state.Store(stateIdle)
	// Shutdown sets closing and then closes idle connections: one of the two
	// sees the other's write.
	return !c.srv.closing.Load()
}

// check applies what net/http's server checks beyond ReadRequest.
func check(req *http.Request) (int, string) {
	if req.ProtoMajor != 1 {
		return http.StatusHTTPVersionNotSupported, "unsupported protocol version"
	}
	if req.Host == "" && req.ProtoAtLeast(1, 1) && req.Method != http.MethodConnect {
		return http.StatusBadRequest, "missing required Host header"
	}
	if req.Host != "" && !httpguts.ValidHostHeader(req.Host) {
		return http.StatusBadRequest, "malformed Host header"
	}
	return 0, ""
}

// reject answers a request that could not be read, if the client is still
// there to hear it.
func (c *conn) reject(err error, tooLarge bool) {
	var ne net.Error
	switch {
	case tooLarge:
		c.replyError(http.StatusRequestHeaderFieldsTooLarge, "")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.As(err, &ne) && ne.Timeout():
		// The client closed, or sent nothing in time: nobody to answer.
	default:
		c.srv.logger().Debug("bad request", "remote", c.remoteAddr, "err", err)
		c.replyError(http.StatusBadRequest, "")
	}
}

// replyError writes a plain error response, as net/http's server does for a
// request it cannot serve, and leaves the connection to be closed.
func (c *conn) replyError(code int, why string) {
	msg := fmt.Sprintf("%d %s", code, http.StatusText(code))
	if why != "" {
		msg += ": " + why
	}
	c.rwc.SetWriteDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c.bw, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		code, http.StatusText(code), len(msg), msg)
	c.bw.Flush()
	c.lingerClose()
}

// lingerTimeout bounds how long lingerClose reads what a client still sends.
const lingerTimeout = 500 * time.Millisecond

// lingerClose prepares the close of a connection whose client may still be
// sending (a request body, or a request the server would not read): closed
// over unread bytes, the connection is reset, and the reset can destroy the
// response before the client reads it; a client blocked writing sees only
// the reset. So the server half-closes and reads and discards until the
// client closes too or lingerTimeout passes (RFC 9112 section 9.6), as
// net/http's server waits before such a close.
func (c *conn) lingerClose() {
	cw, ok := c.rwc.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	// Bounded by time only: a client still sending a large body needs the
	// time, not a byte count, to read the response before the close.
	c.setReadDeadline(time.Now().Add(lingerTimeout))
	io.Copy(io.Discard, c.rwc)
}

// serveRequest runs the handler for req and finishes its response; it
// reports whether the connection can carry another request.
func (c *conn) serveRequest(req *http.Request) bool {
	*req = *req.WithContext(&c.reqCtx)
	req.RemoteAddr = c.remoteAddr
	var body *requestBody
	if req.Body != nil && req.Body != http.NoBody {
		body = &requestBody{rc: req.Body, size: req.ContentLength}
		req.Body = body
	}
	w := &c.w
	w.reset(c, req)
	w.body = body
	c.watchStart(body)
	panicked := c.srv.callHandler(c.srv.Handler, w, req, c.remoteAddr)
	c.watchStop()
	if c.hijacked {
		return false
	}
	if panicked {
		return false
	}
	if c.peerGone.Load() {
		// The read side ended: a client that half-closed still reads the
		// response, as from net/http's server; the connection ends after it.
		w.finish()
		return false
	}
	bodyLeft := body != nil && !body.eof.Load()
	if !w.finish() {
		if bodyLeft {
			c.lingerClose()
		}
		return false
	}
	if bodyLeft && !c.drain(body) {
		c.lingerClose()
		return false
	}
	return !c.srv.closing.Load()
}

// drain reads what is left of a request body the handler did not read, so
// the connection can carry the next request; false: it could not, in bounds.
func (c *conn) drain(b *requestBody) bool {
	c.setReadDeadline(time.Now().Add(drainTimeout))
	n, err := io.CopyN(io.Discard, b.rc, maxPostHandlerReadBytes+1)
	c.setReadDeadline(time.Time{})
	return err == io.EOF && n <= maxPostHandlerReadBytes
}

// watchStart arms the watch for a client that goes away while the handler
// runs: after WatchDelay, once the request body has been read to the end, a
// background read on the connection cancels the request if it fails. A byte
// it reads instead (a pipelined request) is kept for the next request.
func (c *conn) watchStart(body *requestBody) {
	c.watchMu.Lock()
	c.inHandler, c.aborting = true, false
	c.bodyEOF = nil
	if body != nil {
		c.bodyEOF = &body.eof
	}
	if c.watchTimer == nil {
		// Under watchMu: watchFire reads the field.
		c.watchTimer = time.AfterFunc(WatchDelay, c.watchFire)
		c.watchMu.Unlock()
		return
	}
	c.watchMu.Unlock()
	c.watchTimer.Reset(WatchDelay)
}

func (c *conn) watchFire() {
	c.watchMu.Lock()
	defer c.watchMu.Unlock()
	if !c.inHandler || c.watching != nil {
		return
	}
	if c.bodyEOF != nil && !c.bodyEOF.Load() {
		c.watchTimer.Reset(WatchDelay) // the handler is still reading the body
		return
	}
	done := make(chan struct{})
	c.watching = done
	// A deadline left from the head or the idle wait must not end the
	// watch's read; watchStop leaves the deadline cleared.
	c.rwc.SetReadDeadline(time.Time{})
	go func() {
		n, err := c.rwc.Read(c.oneByte[:])
		c.watchMu.Lock()
		if n == 1 {
			c.cr.saved, c.cr.hasSaved = c.oneByte[0], true
		} else if err != nil && !c.aborting {
			c.peerGone.Store(true)
			c.reqCtx.Cancel(nil)
		}
		c.watchMu.Unlock()
		close(done)
	}()
}

// watchStop ends the watch once the handler has returned (or hijacks): it
// stops a background read and waits for it, so that the connection is read
// by one goroutine only.
func (c *conn) watchStop() {
	c.watchTimer.Stop()
	c.watchMu.Lock()
	c.inHandler = false
	done := c.watching
	c.watching = nil
	if done != nil {
		c.aborting = true
	}
	c.watchMu.Unlock()
	if done != nil {
		c.rwc.SetReadDeadline(aLongTimeAgo)
		<-done
		c.rwc.SetReadDeadline(time.Time{})
		c.readDeadline = time.Time{}
	}
}

// connReader is what a connection's bufio.Reader reads: the connection, after
// a byte the watch may have read, with a limit while a request head is read.
type connReader struct {
	conn     net.Conn
	remain   int64 // bytes left before errTooLarge
	hitLimit bool
	saved    byte // read by the watch; written under watchMu, which the reader has since synchronized with
	hasSaved bool
}

func (r *connReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if r.hasSaved {
		p[0], r.hasSaved = r.saved, false
		return 1, nil
	}
	if r.remain <= 0 {
		r.hitLimit = true
		return 0, errTooLarge
	}
	if int64(len(p)) > r.remain {
		p = p[:r.remain]
	}
	n, err := r.conn.Read(p)
	r.remain -= int64(n)
	return n, err
}

// requestBody is a request's body as the handler sees it. Close does not
// read the rest (net/http's body would, to the end, on the caller's
// goroutine); the connection decides after the handler what to do with it.
type requestBody struct {
	rc     io.ReadCloser
	size   int64 // Content-Length; -1: chunked
	read   atomic.Int64
	eof    atomic.Bool
	closed atomic.Bool
}

func (b *requestBody) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, http.ErrBodyReadAfterClose
	}
	n, err := b.rc.Read(p)
	if n > 0 {
		b.read.Add(int64(n))
	}
	if err == io.EOF {
		b.eof.Store(true)
	}
	return n, err
}

// tooLargeToDrain reports whether what is left of a sized body is more than
// drain would read: the connection will be closed after the response. Safe
// on nil (no body).
func (b *requestBody) tooLargeToDrain() bool {
	return b != nil && b.size >= 0 && !b.eof.Load() && b.size-b.read.Load() > maxPostHandlerReadBytes
}

func (b *requestBody) Close() error {
	b.closed.Store(true)
	return nil
}
