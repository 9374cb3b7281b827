// Package tcpproxy forwards whole TCP connections to a cluster's endpoints: accept,
// check the network RBAC filter if the listener has one (rbac.go), pick an
// endpoint round robin, dial with the cluster's connect timeout (trying up
// to two other endpoints when the connect fails), and copy both directions with
// half-close until both sides are done or the connection has been idle for the
// configured timeout.
//
// Concurrency: Server.Store publishes compiled state atomically; each connection
// loads it once when accepted and keeps it. Serve runs the accept loop on the
// caller's goroutine and one goroutine (plus one for the second copy direction) per
// connection; Shutdown and Close stop the loop and wait for all of them.
package tcpproxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/cluster"
	"github.com/tinymesh/tinymesh/dataplane/listener"
	"github.com/tinymesh/tinymesh/dataplane/rbac"
	"github.com/tinymesh/tinymesh/dataplane/stream"
	"github.com/tinymesh/tinymesh/dataplane/tracing"
)

// maxConnectAttempts bounds the upstream connects per downstream connection.
const maxConnectAttempts = 3

// State is what a TCP listener serves for one snapshot.
type State struct {
	Cluster     *cluster.Cluster // nil if the snapshot lacks it: connections are closed
	IdleTimeout time.Duration    // 0 disables
	RBAC        *rbac.Engine     // the network RBAC filter; nil allows all (rbac.go)

	// Telemetry (nil Observe: none). Listener and Inbound describe the
	// listener in stream.Info. Opened, when set, is called once the upstream
	// connection is up; Observe when the connection has ended (every one,
	// also those refused before an upstream was dialed). Both are called on
	// the connection's goroutine with an Info they must not keep.
	Listener string
	Inbound  bool
	Opened   stream.Observer
	Observe  stream.Observer
	// Tracer traces each connection (tracing.go); nil: tracing off.
	Tracer *tracing.Tracer
}

// Server serves one listener's connections.
type Server struct {
	log     *slog.Logger          // set in New, read-only after
	state   atomic.Pointer[State] // written by the config goroutine
	denials rbac.DenyLog          // bounds RBAC denial logs; safe for concurrent use

	ctx    context.Context // cancelled by Close; aborts dials
	cancel context.CancelFunc
	wg     sync.WaitGroup // connection goroutines

	mu     sync.Mutex
	ln     net.Listener          // guarded by mu
	conns  map[net.Conn]struct{} // downstream and upstream conns, guarded by mu
	closed bool                  // guarded by mu
}

// New returns a Server serving st until Store replaces it.
func New(log *slog.Logger, st *State) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{log: log, ctx: ctx, cancel: cancel, conns: make(map[net.Conn]struct{})}
	s.state.Store(st)
	return s
}

// Store publishes new state; connections accepted afterwards use it.
func (s *Server) Store(st *State) { s.state.Store(st) }

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("tcpproxy: server closed")

// Serve accepts connections on ln until Shutdown or Close; it always returns a
// non-nil error, ErrServerClosed after a shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.ln = ln
	s.mu.Unlock()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Out of file descriptors and the like: back off, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				t := time.NewTimer(backoff)
				select {
				case <-t.C:
				case <-s.ctx.Done():
					t.Stop()
				}
				continue
			}
			return err
		}
		backoff = 0
		if !s.track(c) {
			c.Close()
			return ErrServerClosed
		}
		s.wg.Add(1)
		go s.handle(c)
	}
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

// trackUpstream tracks the upstream connection of a downstream one that is
// already being served. A graceful Shutdown lets such connections finish, so
// only Close (which cancels ctx before closing what is tracked) refuses it:
// refusing it once the listener stops accepting would reset a connection the
// proxy had accepted before the drain began.
func (s *Server) trackUpstream(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *Server) handle(down net.Conn) {
	defer s.wg.Done()
	defer s.untrack(down)
	defer down.Close()
	st := s.state.Load()
	var si *stream.Info
	var sp *tracing.Span // nil when tracing is off
	if st.Observe != nil || st.Tracer != nil {
		si = stream.Get()
		si.Start, si.Listener, si.Inbound, si.Protocol = time.Now(), st.Listener, st.Inbound, "tcp"
		si.DownstreamRemote = down.RemoteAddr().String()
		sp = startSpan(st, si) // tracing.go
		defer s.endStream(st.Observe, si, sp, down)
	}
	if st.RBAC != nil && !s.authorize(down, st.RBAC, si) {
		return
	}
	if st.Cluster == nil {
		s.log.Warn("tcp proxy: no cluster", "downstream", down.RemoteAddr())
		if si != nil {
			si.Flags |= stream.NoRoute
		}
		return
	}
	if si != nil {
		si.Cluster = st.Cluster.Name
	}
	addr, ok := st.Cluster.Pick()
	if !ok {
		s.log.Warn("tcp proxy: no healthy upstream", "cluster", st.Cluster.Name)
		if si != nil {
			si.Flags |= stream.NoHealthyUpstream
		}
		return
	}
	// The cluster's dialer adds TLS origination when the cluster has it. A
	// failed connect sent nothing, so another endpoint is tried (preferring
	// ones not tried yet) before the downstream is given up, like Envoy's
	// tcp_proxy max_connect_attempts.
	var tried [maxConnectAttempts]string
	n := 0
	var up net.Conn
	var err error
	for {
		tried[n] = addr
		n++
		up, err = st.Cluster.Upstream.DialContext(s.ctx, "tcp", addr)
		// max_connections overflow: refuse the downstream, as Envoy does.
		if err == nil || n == maxConnectAttempts || s.ctx.Err() != nil || errors.Is(err, cluster.ErrOverflow) {
			break
		}
		next, _ := st.Cluster.PickExcept(tried[:n])
		s.log.Debug("tcp proxy: upstream connect failed, retrying", "cluster", st.Cluster.Name, "endpoint", addr, "next", next, "attempt", n, "err", err)
		addr = next
	}
	if si != nil {
		si.Attempts, si.UpstreamHost = n, addr
	}
	if errors.Is(err, cluster.ErrOverflow) {
		s.log.Debug("tcp proxy: circuit breaker open (max_connections)", "cluster", st.Cluster.Name)
		if si != nil {
			si.Flags |= stream.UpstreamOverflow
		}
		return
	}
	if err != nil {
		s.log.Warn("tcp proxy: upstream connect failure", "cluster", st.Cluster.Name, "endpoint", addr, "attempts", n, "err", err)
		if si != nil {
			si.Flags |= stream.UpstreamConnectionFailure
			if n == maxConnectAttempts {
				si.Flags |= stream.UpstreamRetryLimitExceeded
			}
		}
		return
	}
	st.Cluster.Upstream.ObserveConnect(st.Cluster.Upstream.Endpoint(addr)) // outlier detection
	if !s.trackUpstream(up) {
		up.Close()
		return
	}
	defer s.untrack(up)
	upstreamPeer(sp, up) // tracing.go
	if si != nil && st.Opened != nil {
		st.Opened(si)
	}
	recv, sent := SpliceCount(down, up, st.IdleTimeout)
	if si != nil {
		si.BytesReceived, si.BytesSent = recv, sent
	}
}

// endStream completes si (the peer's identity is known once the handshake,
// which the first Read runs, is done), hands it to obs (if any) and the
// connection's span, and pools it.
func (s *Server) endStream(obs stream.Observer, si *stream.Info, sp *tracing.Span, down net.Conn) {
	if ci := listener.Info(down); ci != nil {
		si.PeerID, si.MTLS = ci.PeerID, ci.PeerCertSHA256 != ""
	}
	si.Duration = time.Since(si.Start)
	if obs != nil {
		obs(si)
	}
	sp.End(si)
	stream.Put(si)
}

// Shutdown stops accepting and waits for open connections to finish until ctx is
// done, then closes them. It returns ctx.Err() if it had to cut connections.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopAccepting()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.Close()
		<-done
		return ctx.Err()
	}
}

// Close stops accepting, closes every connection and waits for their goroutines.
func (s *Server) Close() error {
	s.stopAccepting()
	s.cancel()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *Server) stopAccepting() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.ln != nil {
		s.ln.Close()
	}
}

type closeWriter interface{ CloseWrite() error }

// Splice copies a to b and b to a until both directions have ended, propagating
// half-close (CloseWrite) so a peer can still answer after the other side's EOF.
// With idle > 0 it gives up when neither direction has moved data for that long.
// It closes both connections before returning.
func Splice(a, b net.Conn, idle time.Duration) { SpliceCount(a, b, idle) }

// SpliceCount is Splice, returning the bytes copied from a to b and from b to a.
func SpliceCount(a, b net.Conn, idle time.Duration) (ab, ba int64) {
	var last atomic.Int64 // unix nanos of the last data moved in either direction
	last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	go func() {
		defer close(done)
		ab = pipe(b, a, idle, &last) // pipe(dst, src): a to b
	}()
	ba = pipe(a, b, idle, &last) // b to a
	<-done
	a.Close()
	b.Close()
	return ab, ba
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// pipe copies src to dst and returns the bytes written. On EOF it half-closes
// dst; on any other error it closes both so the other direction stops too.
func pipe(dst, src net.Conn, idle time.Duration, last *atomic.Int64) (written int64) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp) // the buffer is only used inside this call
	buf := *bp
	for {
		if idle > 0 {
			src.SetReadDeadline(time.Unix(0, last.Load()).Add(idle))
		}
		n, err := src.Read(buf)
		if n > 0 {
			last.Store(time.Now().UnixNano())
			if idle > 0 {
				dst.SetWriteDeadline(time.Now().Add(idle))
			}
			m, werr := dst.Write(buf[:n])
			written += int64(m)
			if werr != nil {
				src.Close()
				dst.Close()
				return written
			}
		}
		if err == nil {
			continue
		}
		var ne net.Error
		if idle > 0 && errors.As(err, &ne) && ne.Timeout() &&
			time.Since(time.Unix(0, last.Load())) < idle {
			continue // the other direction was active: not idle yet
		}
		if errors.Is(err, io.EOF) {
			if cw, ok := dst.(closeWriter); ok {
				cw.CloseWrite()
			} else {
				dst.Close()
			}
			return written
		}
		src.Close()
		dst.Close()
		return written
	}
}
