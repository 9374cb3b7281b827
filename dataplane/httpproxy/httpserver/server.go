// Package httpserver serves a listener's downstream connections to an
// http.Handler: HTTP/1.1 and prior-knowledge HTTP/2 (h2c) on one socket, as
// Envoy's codec_type AUTO does.
//
// An HTTP/1.1 connection runs its requests on its own goroutine: the goroutine
// that reads a request calls the handler and writes the response. net/http's
// server also starts a goroutine per request that reads the connection in the
// background, to notice a client that goes away, and stops it again (a read
// deadline in the past, and a wait) before the next request; on a sidecar's
// outbound listener that server was about a third of the CPU. Here the watch
// starts only when a request is still in its handler after WatchDelay, so a
// client that hangs up on a slow or streaming request still cancels it, and a
// fast request pays for a timer reset.
//
// Parsing stays net/http's (ReadRequest), with the checks net/http's server
// adds to it (HTTP version, Host), so the requests accepted are the ones
// net/http's server accepts. A connection that opens with the HTTP/2 preface
// is handed to net/http's HTTP/2 server.
//
// Concurrency: Serve runs the accept loop and may be called once; Shutdown and
// Close may be called from any goroutine. Each connection is served by its
// own goroutine; a handler runs on it and must not use its ResponseWriter
// after returning.
package httpserver

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// WatchDelay is how long a request may be in its handler before its
// connection is watched for the client going away.
const WatchDelay = 50 * time.Millisecond

// newConnGrace is how long Shutdown lets a connection that has not sent its
// first request yet (it is surely coming) live before closing it as idle, as
// net/http does.
const newConnGrace = 5 * time.Second

// Server serves HTTP/1.1 and h2c. Set its fields before Serve; they are
// read-only after.
type Server struct {
	Handler http.Handler
	// ConnContext derives the context of a connection's requests from ctx,
	// which carries http.LocalAddrContextKey; nil: ctx as is.
	ConnContext func(ctx context.Context, c net.Conn) context.Context
	// MaxHeaderBytes bounds a request's head (request line and header
	// fields); beyond it, and its 4 KiB of slack, the answer is 431.
	// 0: http.DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// IdleTimeout closes a keep-alive connection idle this long; 0: never.
	IdleTimeout time.Duration
	// ReadHeaderTimeout bounds reading a request's head; 0: no bound.
	ReadHeaderTimeout time.Duration
	// Log gets handler panics at error level and protocol errors at debug
	// level; nil discards.
	Log *slog.Logger

	closing atomic.Bool // set once by Shutdown or Close

	mu    sync.Mutex
	ln    net.Listener       // guarded by mu
	conns map[*conn]struct{} // HTTP/1.1 connections, not hijacked; guarded by mu

	h2once sync.Once
	h2     *http.Server // net/http's HTTP/2 server; started by the first h2c connection
	h2q    *connQueue   // what h2 accepts from
}

// Serve accepts connections on ln until Shutdown or Close; it then returns
// http.ErrServerClosed.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
	s.ln = ln
	s.mu.Unlock()
	var backoff time.Duration
	for {
		rwc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return http.ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors and the like: wait, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.logger().Warn("accept failed; retrying", "err", err, "in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := s.track(rwc)
		if c == nil {
			rwc.Close()
			return http.ErrServerClosed
		}
		go c.serve()
	}
}

func (s *Server) logger() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// track registers a new connection; nil once the server is closing.
func (s *Server) track(rwc net.Conn) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return nil
	}
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	c := newConn(s, rwc)
	s.conns[c] = struct{}{}
	return c
}

// forget drops a connection that has ended, been hijacked or handed to the
// HTTP/2 server.
func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Shutdown stops accepting, closes idle connections, lets the others finish
// their request in flight (answering it with Connection: close) and has the
// HTTP/2 server send GOAWAY, until they are all gone or ctx is done. Hijacked
// connections are the hijacker's to close.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginClosing()
	h2done := make(chan error, 1)
	if s.h2 != nil {
		go func() { h2done <- s.h2.Shutdown(ctx) }()
	} else {
		h2done <- nil
	}
	wait := time.Millisecond
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for !s.closeIdle() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			wait = min(2*wait, 500*time.Millisecond)
			timer.Reset(wait)
		}
	}
	select {
	case err := <-h2done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close closes the listener and every connection, HTTP/2 ones included.
func (s *Server) Close() error {
	s.beginClosing()
	s.mu.Lock()
	for c := range s.conns {
		c.rwc.Close()
	}
	s.mu.Unlock()
	if s.h2 != nil {
		return s.h2.Close()
	}
	return nil
}

func (s *Server) beginClosing() {
	s.mu.Lock()
	s.closing.Store(true)
	ln := s.ln
	s.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	// Orders s.h2's write (in h2once) before the reads in Shutdown and Close:
	// no h2c connection is handed over once closing is set.
	s.h2once.Do(func() {})
	if s.h2q != nil {
		s.h2q.Close()
	}
}

// closeIdle closes the connections waiting for a request and reports whether
// none is left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.closeIfIdle()
	}
	return len(s.conns) == 0
}

// serveH2 hands an h2c connection, its preface still unread, to net/http's
// HTTP/2 server.
func (s *Server) serveH2(c *replayConn) {
	s.h2once.Do(func() {
		if s.closing.Load() {
			return
		}
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		s.h2q = newConnQueue(c.LocalAddr())
		s.h2 = &http.Server{
			Handler:           s.Handler,
			Protocols:         p,
			ConnContext:       func(_ context.Context, c net.Conn) context.Context { return c.(*replayConn).ctx },
			MaxHeaderBytes:    s.MaxHeaderBytes,
			IdleTimeout:       s.IdleTimeout,
			ReadHeaderTimeout: s.ReadHeaderTimeout,
			ErrorLog:          slog.NewLogLogger(s.logger().Handler(), slog.LevelDebug),
		}
		go s.h2.Serve(s.h2q)
	})
	if s.h2q == nil {
		c.Close() // closing
		return
	}
	s.h2q.put(c)
}

// connQueue is the listener net/http's HTTP/2 server accepts h2c
// connections from.
type connQueue struct {
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
	addr   net.Addr
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{ch: make(chan net.Conn), done: make(chan struct{}), addr: addr}
}

func (q *connQueue) put(c net.Conn) {
	select {
	case q.ch <- c:
	case <-q.done:
		c.Close()
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.closed.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

// replayConn is an h2c connection whose first bytes, read while looking for
// the preface, are read again first.
type replayConn struct {
	net.Conn
	pending []byte
	ctx     context.Context // the connection's context (ConnContext)
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
