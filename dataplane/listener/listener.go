// Package listener owns the data plane's bound sockets: it binds an address, runs
// one server's accept loop on it, terminates TLS (DownstreamTlsContext) on
// accepted connections when configured, and drains it when the listener is
// removed.
//
// Concurrency: Start runs the server's Serve on one goroutine owned by the
// Listener; Drain may be called once, from any goroutine, and waits for it.
// StoreTLS may be called from any goroutine; the TLS configuration is loaded
// once per accepted connection (one atomic load) and the handshake (and, on a
// TLS-optional PERMISSIVE listener, the peek at the first byte that decides
// between TLS and plaintext) runs on the connection's own goroutine.
package listener

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
)

// Server is what serves a bound socket: an HTTP server or a TCP proxy. Serve runs
// the accept loop until Shutdown or Close; Shutdown stops accepting and waits for
// open connections until ctx is done; Close cuts them.
type Server interface {
	Serve(net.Listener) error
	Shutdown(ctx context.Context) error
	Close() error
}

// Listener is a bound socket and the server running on it.
type Listener struct {
	Name string
	Addr string // the configured address

	ln   net.Listener
	tl   *tlsListener // wraps ln; holds the TLS config in force
	srv  Server
	done chan struct{} // closed when Serve has returned
	err  error         // Serve's result, read after done
}

// Bind listens on addr; the socket accepts nothing until Start.
func Bind(name, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listener %q: bind %s: %w", name, addr, err)
	}
	return ln, nil
}

// Start runs srv on ln in a goroutine owned by the returned Listener, with
// plain TCP connections.
func Start(name, addr string, ln net.Listener, srv Server) *Listener {
	return StartTLS(name, addr, ln, nil, srv, nil)
}

// StartTLS is Start with TLS terminated on accepted connections when t is not
// nil (see NewTLS); srv then reads and writes plaintext. log (nil discards)
// gets failed handshakes at warn level, naming the listener and the peer.
func StartTLS(name, addr string, ln net.Listener, t *TLS, srv Server, log *slog.Logger) *Listener {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	tl := &tlsListener{Listener: ln, name: name, log: log}
	tl.cfg.Store(t)
	l := &Listener{Name: name, Addr: addr, ln: ln, tl: tl, srv: srv, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		l.err = srv.Serve(tl)
	}()
	return l
}

// StoreTLS replaces the TLS settings for connections accepted from now on
// (certificate rotation, a PERMISSIVE/STRICT change); nil switches to plain
// TCP. Open connections keep what they negotiated.
func (l *Listener) StoreTLS(t *TLS) { l.tl.cfg.Store(t) }

// BoundAddr is the address actually bound (useful with port 0).
func (l *Listener) BoundAddr() net.Addr { return l.ln.Addr() }

// Drain stops accepting, lets open connections finish until ctx is done, then
// closes what is left and waits for the accept loop to return. It returns an
// error wrapping ctx.Err() if it had to cut connections.
func (l *Listener) Drain(ctx context.Context) error {
	err := l.srv.Shutdown(ctx)
	if err != nil {
		l.srv.Close()
	}
	l.ln.Close() // in case Serve never got to own it
	<-l.done
	if err != nil {
		return fmt.Errorf("listener %q: drain cut connections: %w", l.Name, err)
	}
	return nil
}
