// Package http1 is the proxy's HTTP/1.1 transport to upstream endpoints: a
// keep-alive pool of connections per endpoint address, on which the goroutine
// making a round trip writes the request and reads the response itself.
//
// net/http's Transport gives every connection a reader and a writer goroutine
// and hands each request and response between them and the caller over
// channels: three goroutines, their wake-ups and a select per request, about
// a fifth of a sidecar's CPU when it forwards to its app. A proxy's round trip
// needs none of that for a request without a body, the common case, and one
// goroutine more (the body writer, so that the upstream may answer before it
// has read the whole body, as with net/http) for a request with one.
//
// Serialisation and parsing stay net/http's (Request.Write, ReadResponse), so
// what reaches the wire, and what is accepted from it, is what net/http's
// Transport would send and accept. The one shortcut, head.go, writes the
// common bodiless GET byte for byte as Request.Write does, with less work.
//
// Concurrency: RoundTrip and CloseIdleConnections may be called from any
// goroutine. A connection belongs to one round trip at a time, from getConn
// until its response body is read to the end and its request body, if any,
// written (then it goes back to the pool), or until either ends early (then
// it is closed).
package http1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/cluster/internal/reaper"
	"github.com/tinymesh/tinymesh/dataplane/internal/reqctx"
)

// Transport is an http.RoundTripper for plain HTTP/1.1 (TLS, when the
// cluster has it, is Dial's business). The zero value is not usable: Dial is
// required.
type Transport struct {
	// Dial opens a connection to addr ("host:port", the request URL's host).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// MaxIdlePerHost bounds the kept-alive connections per address.
	MaxIdlePerHost int
	// IdleTimeout closes a connection that has been idle this long.
	IdleTimeout time.Duration
	// ReadBufferSize and WriteBufferSize size each connection's buffers;
	// 0 means 4 KiB.
	ReadBufferSize, WriteBufferSize int

	mu     sync.Mutex
	idle   map[string][]*conn // per address, most recently used last
	reaper reaper.Timer       // runs reap while the pool holds connections
}

// aLongTimeAgo is a deadline in the past: setting it on a connection makes
// its blocked reads and writes return at once.
var aLongTimeAgo = time.Unix(1, 0)

// errUnexpectedSwitch reports a 101 to a request that did not ask to upgrade
// (upgrades never use this transport).
var errUnexpectedSwitch = errors.New("http1: upstream switched protocols without an Upgrade request")

// RoundTrip sends req to req.URL.Host and returns its response. As
// http.RoundTripper requires, it closes req.Body, also on errors. The
// response body must be read to the end or closed; reading it to the end
// returns the connection to the pool.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	for retried := false; ; retried = true {
		pc, err := t.getConn(req.Context(), req.URL.Host)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, nothingRead, err := pc.roundTrip(req)
		if err == nil {
			return resp, nil
		}
		// A kept-alive connection the upstream closed while it sat in the
		// pool fails before any response byte arrives. Like net/http, try a
		// new connection once, when sending the request again is safe.
		if retried || !pc.reused || !nothingRead || !replayable(req) || req.Context().Err() != nil {
			closeBody(req)
			return nil, err
		}
	}
}

// CloseIdleConnections closes the connections in the pool; connections in
// use are closed by their round trips or come back to the pool later.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.reaper.Stop()
	t.mu.Unlock()
	for _, list := range idle {
		for _, pc := range list {
			pc.nc.Close()
		}
	}
}

// replayable reports whether req may be sent a second time: it has no body
// and, as net/http requires, an idempotent method or an idempotency key.
func replayable(req *http.Request) bool {
	if hasBody(req) {
		return false
	}
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, k1 := req.Header["Idempotency-Key"]
	_, k2 := req.Header["X-Idempotency-Key"]
	return k1 || k2
}

func hasBody(req *http.Request) bool { return req.Body != nil && req.Body != http.NoBody }

func closeBody(req *http.Request) {
	if hasBody(req) {
		req.Body.Close()
	}
}

// getConn takes the most recently used idle connection to addr, or dials one.
func (t *Transport) getConn(ctx context.Context, addr string) (*conn, error) {
	var stale []*conn
	now := time.Now()
	t.mu.Lock()
	list := t.idle[addr]
	var pc *conn
	for len(list) > 0 {
		c := list[len(list)-1]
		list = list[:len(list)-1]
		if t.IdleTimeout > 0 && now.Sub(c.idleSince) > t.IdleTimeout {
			stale = append(stale, c)
			continue
		}
		pc = c
		break
	}
	if t.idle != nil {
		t.idle[addr] = list
	}
	t.mu.Unlock()
	for _, c := range stale {
		c.nc.Close()
	}
	if pc != nil {
		pc.reused = true
		return pc, nil
	}
	nc, err := t.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	pc = &conn{
		t:    t,
		addr: addr,
		nc:   nc,
		br:   bufio.NewReaderSize(nc, bufferSize(t.ReadBufferSize)),
		bw:   bufio.NewWriterSize(nc, bufferSize(t.WriteBufferSize)),
	}
	pc.abortIO = func() { nc.SetDeadline(aLongTimeAgo) }
	return pc, nil
}

func bufferSize(n int) int {
	if n <= 0 {
		return 4 << 10
	}
	return n
}

// put returns pc to the pool, or closes it when the pool for its address is
// full.
func (t *Transport) put(pc *conn) {
	pc.idleSince = time.Now()
	t.mu.Lock()
	if t.idle == nil {
		t.idle = make(map[string][]*conn)
	}
	list := t.idle[pc.addr]
	if len(list) >= t.MaxIdlePerHost {
		t.mu.Unlock()
		pc.nc.Close()
		return
	}
	t.idle[pc.addr] = append(list, pc)
	t.armReaperLocked()
	t.mu.Unlock()
}

// armReaperLocked makes sure reap runs within half an IdleTimeout. Caller
// holds t.mu.
func (t *Transport) armReaperLocked() {
	if !t.reaper.Armed() {
		t.reaper.Arm(t.IdleTimeout/2, t.reap)
	}
}

// reap closes connections idle past IdleTimeout, also when no request comes
// to take them (the upstream's half of such a connection is usually closed
// already, and ours would sit in CLOSE_WAIT), and re-arms itself while the
// pool holds connections.
func (t *Transport) reap() {
	var stale []*conn
	deadline := time.Now().Add(-t.IdleTimeout)
	t.mu.Lock()
	for addr, list := range t.idle {
		keep := list[:0]
		for _, pc := range list {
			if pc.idleSince.Before(deadline) {
				stale = append(stale, pc)
			} else {
				keep = append(keep, pc)
			}
		}
		clear(list[len(keep):])
		if len(keep) == 0 {
			delete(t.idle, addr)
		} else {
			t.idle[addr] = keep
		}
	}
	t.reaper.Fired()
	if len(t.idle) > 0 {
		t.armReaperLocked()
	}
	t.mu.Unlock()
	for _, pc := range stale {
		pc.nc.Close()
	}
}

// conn is one upstream connection.
type conn struct {
	t         *Transport
	addr      string
	nc        net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	abortIO   func()    // unblocks its I/O for good; made once, not per round trip
	reused    bool      // it served a round trip before this one
	idleSince time.Time // when it was last put in the pool; guarded by Transport.mu while there
}

// roundTrip writes req and reads the response head. nothingRead reports
// that it failed before any byte of a response arrived. On an error pc is
// closed; on success it belongs to the response body.
func (pc *conn) roundTrip(req *http.Request) (resp *http.Response, nothingRead bool, err error) {
	ctx := req.Context()
	// A done request unblocks the connection's I/O; the connection is then
	// closed, never reused, since the deadline stays in the past.
	stop := reqctx.OnCancel(ctx, pc.abortIO)
	var written chan error
	if hasBody(req) {
		// Write the body while the response is read: the upstream may
		// answer (413, 401, a stream) before it has read it all.
		written = make(chan error, 1)
		go func() { written <- pc.write(req) }()
	} else if err := pc.write(req); err != nil {
		stop.Stop()
		pc.nc.Close()
		return nil, true, err
	}
	resp, nothingRead, err = pc.readResponse(req)
	if err != nil {
		stop.Stop()
		pc.nc.Close()
		if written != nil {
			// The writer is blocked on the request body at worst, which
			// RoundTrip's caller unblocks by closing it (RoundTrip does).
			// Its error, if any, is less telling than the read's.
			go func() { <-written }()
		}
		return nil, nothingRead, err
	}
	reuse := !resp.Close && !req.Close
	if resp.Body == http.NoBody {
		pc.finish(stop, written, reuse)
		return resp, false, nil
	}
	resp.Body = &body{rc: resp.Body, pc: pc, stop: stop, written: written, reuse: reuse}
	return resp, false, nil
}

// write sends req; Request.Write closes req.Body once it has been sent.
func (pc *conn) write(req *http.Request) error {
	if !writeHead(pc.bw, req) {
		if err := req.Write(pc.bw); err != nil {
			return err
		}
	}
	return pc.bw.Flush()
}

// readResponse reads the final response head to req, skipping informational
// (1xx) responses as net/http's Transport does.
func (pc *conn) readResponse(req *http.Request) (*http.Response, bool, error) {
	if _, err := pc.br.Peek(1); err != nil {
		return nil, true, err
	}
	for {
		resp := readHead(pc.br, req)
		if resp == nil {
			var err error
			if resp, err = http.ReadResponse(pc.br, req); err != nil {
				return nil, false, err
			}
		}
		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			return nil, false, errUnexpectedSwitch
		case resp.StatusCode >= 100 && resp.StatusCode < 200:
			continue
		}
		return resp, false, nil
	}
}

// finish ends pc's round trip: back to the pool when the response was read
// to the end (reuse) and the request was written completely, else closed.
func (pc *conn) finish(stop reqctx.Watch, written chan error, reuse bool) {
	if !stop.Stop() { // the request's context ended: the deadline is in the past
		reuse = false
	}
	if written != nil {
		select {
		case err := <-written:
			reuse = reuse && err == nil
		default:
			if reuse {
				// The response is complete and the request body still
				// being written: the connection is at a request boundary
				// once the writer is done.
				go func() {
					if err := <-written; err == nil {
						pc.t.put(pc)
					} else {
						pc.nc.Close()
					}
				}()
				return
			}
		}
	}
	if reuse {
		pc.t.put(pc)
		return
	}
	pc.nc.Close()
}

// body is a response body that ends its connection's round trip.
type body struct {
	rc      io.ReadCloser
	pc      *conn
	stop    reqctx.Watch
	written chan error
	reuse   bool
	done    bool  // the round trip is finished; rc must not be touched
	err     error // what Read returns once done
}

func (b *body) Read(p []byte) (int, error) {
	if b.done {
		return 0, b.err
	}
	n, err := b.rc.Read(p)
	if err != nil {
		b.done, b.err = true, err
		// At io.EOF the body (and its trailers) is complete and the
		// connection is at a request boundary.
		b.pc.finish(b.stop, b.written, b.reuse && err == io.EOF)
	}
	return n, err
}

// Close before the end of the body closes the connection: what is left of
// the response would have to be read before the next one.
func (b *body) Close() error {
	if !b.done {
		b.done, b.err = true, http.ErrBodyReadAfterClose
		b.pc.finish(b.stop, b.written, false)
	}
	return nil
}
