// Package httpserver serves a listener's downstream connections to an
// http.Handler: HTTP/1.1 and prior-knowledge HTTP/2 (h2c, or h2 once the
// listener has terminated TLS) on one socket, as Envoy's codec_type AUTO does.
//
// An HTTP/1.1 connection runs its requests on its own goroutine: the goroutine
// that reads a request calls the handler and writes the response. net/http's
// server also starts a goroutine per request that reads the connection in the
// background, to notice a client that goes away, and stops it again (a read
// deadline in the past, and a wait) before the next request; on a sidecar's
// outbound listener that server was about a third of the CPU. Here the watch
// starts only when a request is still in its handler after WatchDelay, so a
// client that hangs up on a slow or streaming request still cancels it, and a
// fast request pays for a timer reset. The requests of a connection share
// one context, cancelled when the client goes away or the connection ends
// but not, as net/http's are, when each handler returns (conn.go says why).
// Parsing is net/http's
// (ReadRequest), with the checks net/http's server adds to it (HTTP version,
// Host), so the requests accepted are the ones net/http's server accepts;
// the plainest heads, a bodiless request whole in the read buffer, are read
// without its general machinery into the same request (readhead.go).
//
// A connection that opens with the HTTP/2 preface is served by this
// package's HTTP/2 server (h2conn.go, h2stream.go), built on
// golang.org/x/net/http2's Framer and hpack: the connection's goroutine reads
// frames, and each stream's handler goroutine writes its own HEADERS and DATA
// frames under the connection's write lock. net/http's HTTP/2 server routes
// every frame a handler writes through its serve loop and a writer goroutine,
// three hand-offs per response; on the sidecar-to-sidecar hop that was about
// a third of the server sidecar's CPU (docs/benchmarks.md).
//
// Concurrency: Serve runs the accept loop and may be called once; Shutdown and
// Close may be called from any goroutine. Each connection is served by its
// own goroutine, each HTTP/2 stream by one more; a handler must not use its
// ResponseWriter after returning.
package httpserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
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

	done    chan struct{}  // closed once closing is set; made by init
	workers chan *h2stream // idle stream workers wait here; made by init
	once    sync.Once

	mu      sync.Mutex
	ln      net.Listener         // guarded by mu
	conns   map[*conn]struct{}   // HTTP/1.1 connections, not hijacked; guarded by mu
	h2conns map[*h2conn]struct{} // guarded by mu
}

// Serve accepts connections on ln until Shutdown or Close; it then returns
// http.ErrServerClosed.
func (s *Server) Serve(ln net.Listener) error {
	s.init()
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
	return nil
}

// Close closes the listener and every connection, HTTP/2 ones included.
func (s *Server) Close() error {
	s.beginClosing()
	s.mu.Lock()
	h2conns := make([]*h2conn, 0, len(s.h2conns))
	for c := range s.conns {
		c.rwc.Close()
	}
	for c := range s.h2conns {
		h2conns = append(h2conns, c)
	}
	s.mu.Unlock()
	for _, c := range h2conns {
		c.fail(errH2Closed)
	}
	return nil
}

func (s *Server) init() {
	s.once.Do(func() {
		s.done = make(chan struct{})
		s.workers = make(chan *h2stream)
	})
}

func (s *Server) beginClosing() {
	s.init()
	s.mu.Lock()
	if !s.closing.Load() {
		close(s.done)
	}
	s.closing.Store(true)
	ln := s.ln
	s.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
}

// closeIdle closes the HTTP/1.1 connections waiting for a request, sends
// GOAWAY on the HTTP/2 ones (once), and reports whether no connection is
// left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	for c := range s.conns {
		c.closeIfIdle()
	}
	h2conns := make([]*h2conn, 0, len(s.h2conns))
	for c := range s.h2conns {
		h2conns = append(h2conns, c)
	}
	left := len(s.conns) + len(s.h2conns)
	s.mu.Unlock()
	for _, c := range h2conns {
		c.shutdown()
	}
	return left == 0
}

// serveH2 serves an HTTP/2 connection, its preface still unread in br, on
// the calling goroutine.
func (s *Server) serveH2(c *h2conn) {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		c.nc.Close()
		return
	}
	if s.h2conns == nil {
		s.h2conns = make(map[*h2conn]struct{})
	}
	s.h2conns[c] = struct{}{}
	s.mu.Unlock()
	c.serve()
}

// streamWorkerIdle is how long a stream's goroutine waits for another
// stream before it ends.
const streamWorkerIdle = 10 * time.Second

// runStream runs an HTTP/2 stream's handler on an idle worker goroutine, or
// a new one. A new goroutine's stack grows, and is copied, two or three
// times on the proxy's path; that was a tenth of a server sidecar's CPU. A
// worker keeps its grown stack for the next stream.
func (s *Server) runStream(st *h2stream) {
	select {
	case s.workers <- st:
	default:
		go s.streamWorker(st)
	}
}

func (s *Server) streamWorker(st *h2stream) {
	idle := time.NewTimer(streamWorkerIdle)
	defer idle.Stop()
	for {
		st.run()
		idle.Reset(streamWorkerIdle)
		select {
		case st = <-s.workers:
		case <-idle.C:
			return
		case <-s.done:
			return
		}
	}
}

func (s *Server) forgetH2(c *h2conn) {
	s.mu.Lock()
	delete(s.h2conns, c)
	s.mu.Unlock()
}

func (s *Server) maxHeaderBytes() int {
	if s.MaxHeaderBytes > 0 {
		return s.MaxHeaderBytes
	}
	return http.DefaultMaxHeaderBytes
}

// callHandler runs h and reports whether it panicked. A panic with
// http.ErrAbortHandler is a handler's way to cut its response short; any
// other is logged too.
func (s *Server) callHandler(h http.Handler, w http.ResponseWriter, req *http.Request, remote string) (panicked bool) {
	defer func() {
		if p := recover(); p != nil {
			panicked = true
			if p != http.ErrAbortHandler {
				buf := make([]byte, 16<<10)
				buf = buf[:runtime.Stack(buf, false)]
				s.logger().Error("handler panicked", "remote", remote, "panic", fmt.Sprint(p), "stack", string(buf))
			}
		}
	}()
	h.ServeHTTP(w, req)
	return false
}
