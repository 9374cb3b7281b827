package httpproxy

import (
	"net/http"
	"sync"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/listener"
)

// xfccHeader is x-forwarded-client-cert (XFCC) in canonical form, as Envoy
// defines it: ';'-separated key=value pairs describing the client certificate
// of the connection the proxy received the request on.
const xfccHeader = "X-Forwarded-Client-Cert"

// xfccCache holds one downstream connection's XFCC values. They depend only
// on the connection's handshake, so they are built at its first request and
// shared (capped, see setXFCC) by every later one: the per-request cost is a
// sync.Once check and a map assignment.
type xfccCache struct {
	once sync.Once
	// Set inside once, read-only after; nil without a verified client
	// certificate.
	plain   []string // By=<own id>;Hash=<peer leaf sha256>
	withURI []string // plain;URI=<peer id>
}

// setXFCC applies the HCM's forward_client_cert_details to the outbound
// headers hdr of request r: SANITIZE and SANITIZE_SET always drop the XFCC the
// caller sent (a caller must never be able to claim an identity), and
// SANITIZE_SET then describes the connection's verified client certificate,
// if any, as Envoy does: By=<own SPIFFE ID>;Hash=<hex SHA-256 of the peer's
// leaf DER>, plus ;URI=<peer SPIFFE ID> with set_current_client_cert_details.uri.
func setXFCC(hdr http.Header, r *http.Request, hcm *config.HTTPConnectionManager) {
	delete(hdr, xfccHeader)
	if hcm.ForwardClientCert != config.SanitizeSet {
		return
	}
	sc := sniffFrom(r.Context())
	if sc == nil {
		return // not a connection the listener accepted (handler tests)
	}
	x := &sc.xfcc
	x.once.Do(func() { x.build(listener.Info(sc.Conn)) })
	v := x.plain
	if hcm.SetCurrentClientCertURI {
		v = x.withURI
	}
	if v != nil {
		// Capped so that a later Header.Add copies instead of writing into
		// the connection's shared array.
		hdr[xfccHeader] = v[:1:1]
	}
}

func (x *xfccCache) build(info *listener.ConnInfo) {
	if info == nil || info.PeerCertSHA256 == "" {
		return // plaintext, or no verified client certificate
	}
	v := "Hash=" + info.PeerCertSHA256
	if info.LocalID != "" {
		v = "By=" + info.LocalID + ";" + v
	}
	x.plain = []string{v}
	x.withURI = x.plain
	if info.PeerID != "" {
		x.withURI = []string{v + ";URI=" + info.PeerID}
	}
}
