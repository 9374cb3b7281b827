package tcpproxy

import (
	"net"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/listener"
	"github.com/tinymesh/tinymesh/dataplane/rbac"
	"github.com/tinymesh/tinymesh/dataplane/stream"
)

// authorize evaluates the network RBAC filter e for a freshly accepted
// connection, before anything is dialed. The decision needs the caller's
// verified identity, so it first completes the TLS handshake (or, on a
// TLS-optional listener, the plaintext-or-TLS peek) with an empty Read, which
// crypto/tls documents as the way to run the handshake for its side effect;
// the listener bounds it (HandshakeTimeout, PeekTimeout) and logs failures.
// It logs a denial and returns false when the connection must be closed.
// A denial is recorded in si (RBAC flag) when si is not nil.
func (s *Server) authorize(down net.Conn, e *rbac.Engine, si *stream.Info) bool {
	var req rbac.Request
	if a, ok := down.RemoteAddr().(*net.TCPAddr); ok {
		req.Remote = a.AddrPort()
	}
	if a, ok := down.LocalAddr().(*net.TCPAddr); ok {
		req.Local = a.AddrPort()
	}
	if _, err := down.Read(nil); err != nil {
		s.log.Debug("tcp proxy: connection failed before authorization", "downstream", down.RemoteAddr().String(), "err", err)
		return false
	}
	caller := "plaintext"
	if info := listener.Info(down); info != nil {
		req.Principal = info.PeerID
		caller = "unauthenticated" // TLS without a verified SPIFFE ID
		if req.Principal != "" {
			caller = req.Principal
		}
	}
	ok, policy := e.Allowed(&req)
	if ok {
		return true
	}
	if si != nil {
		si.Flags |= stream.RBACDenied
	}
	if log, suppressed := s.denials.Allow(time.Now()); log {
		s.log.Info("rbac denied", "caller", caller, "remote", down.RemoteAddr().String(),
			"action", e.Action().String(), "policies", e.Checked(), "matched", policy, "suppressed", suppressed)
	}
	return false
}
