package httpproxy

import (
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/listener"
	"github.com/tinymesh/tinymesh/dataplane/rbac"
	"github.com/tinymesh/tinymesh/dataplane/route"
	"github.com/tinymesh/tinymesh/dataplane/stream"
)

// RBAC enforcement (envoy.filters.http.rbac): after route matching, so that
// per-route overrides apply, and before anything is forwarded or a direct
// response is given. The caller's identity is the SPIFFE ID of the certificate
// the connection's TLS handshake verified, which the listener works out once
// per connection (listener.Info), so the allowed path does not allocate.

// authorize evaluates the listener's RBAC filter for r, routed to vh and rt
// (either may be nil). When r is denied it logs the denial, answers 403 (gRPC:
// PERMISSION_DENIED) and returns false.
func (h *Handler) authorize(w http.ResponseWriter, r *http.Request, st *State, vh *route.VirtualHost, rt *route.Route, grpcReq bool, si *stream.Info) bool {
	var vc *config.VirtualHost
	var rc *config.Route
	if vh != nil {
		vc = vh.Config
	}
	if rt != nil {
		rc = rt.Config
	}
	e := st.RBAC.Engine(vc, rc)
	if e == nil {
		return true
	}
	peer := peerOf(r)
	req := rbac.Request{
		Remote:     addrPort(r.RemoteAddr),
		Method:     r.Method,
		Authority:  r.Host,
		Path:       r.URL.Path,
		RequestURI: r.RequestURI,
		Scheme:     "http",
		Header:     r.Header,
	}
	if peer != nil {
		req.Principal, req.Scheme = peer.PeerID, "https"
	}
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr); ok {
		req.Local = a.AddrPort()
	}
	ok, policy := e.Allowed(&req)
	if ok {
		return true
	}
	if log, suppressed := h.denials.Allow(time.Now()); log {
		caller := req.Principal
		switch {
		case caller != "":
		case peer != nil:
			caller = "unauthenticated" // TLS without a verified SPIFFE ID
		default:
			caller = "plaintext"
		}
		h.log.Info("rbac denied", "caller", caller, "remote", r.RemoteAddr,
			"method", r.Method, "path", r.URL.Path, "action", e.Action().String(),
			"policies", e.Checked(), "matched", policy, "suppressed", suppressed)
	}
	writeError(w, grpcReq, RBACDenied, si)
	return false
}

// addrPort parses a RemoteAddr ("ip:port") without allocating; the zero value
// when it is not one.
func addrPort(s string) netip.AddrPort {
	ap, _ := netip.ParseAddrPort(s)
	return ap
}

// peerOf returns the TLS facts of r's connection (listener.Info: worked out
// once, at the handshake), or nil for plaintext and for requests without a
// tracked connection (handler tests calling ServeHTTP directly). Every request
// reaches the handler after its connection's handshake.
func peerOf(r *http.Request) *listener.ConnInfo {
	sc := sniffFrom(r.Context())
	if sc == nil {
		return nil
	}
	return listener.Info(sc.Conn)
}
