// Package listener owns the data plane's bound sockets: it binds an address, runs
// one server's accept loop on it, and drains it when the listener is removed.
//
// Concurrency: Start runs the server's Serve on one goroutine owned by the
// Listener; Drain may be called once, from any goroutine, and waits for it.
package listener

import (
	"context"
	"fmt"
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

// Start runs srv on ln in a goroutine owned by the returned Listener.
func Start(name, addr string, ln net.Listener, srv Server) *Listener {
	l := &Listener{Name: name, Addr: addr, ln: ln, srv: srv, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		l.err = srv.Serve(ln)
	}()
	return l
}

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
