package cluster

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/tinymesh/tinymesh/dataplane/batchwrite"
	"github.com/tinymesh/tinymesh/dataplane/config"
)

// ErrTLSHandshake marks upstream TLS handshake failures (wrapped in a
// *net.OpError with Op "dial", so the HTTP stage reports them as
// upstream_connect_failure).
var ErrTLSHandshake = errors.New("upstream TLS handshake failed")

// tlsFingerprint identifies an UpstreamTLS by the settings that shape its
// tls.Config, so that an upstream (and its pooled connections) is reused
// across snapshots exactly when they are unchanged. Certificate material (the
// client certificate and the trusted CA) is left out on purpose: it is
// resolved at each handshake from the upstream's current material (see
// material), so rotating a certificate or a trust bundle keeps the upstream
// and its established connections; only whether there is a client
// certificate and whether the server is verified count. The zero value means
// plain TCP.
func tlsFingerprint(u *config.UpstreamTLS) [32]byte {
	if u == nil {
		return [32]byte{}
	}
	h := sha256.New()
	field := func(b []byte) { fmt.Fprintf(h, "%d:%s;", len(b), b) }
	field([]byte(u.SNI))
	field([]byte(strings.Join(u.ALPN, "\x00")))
	field([]byte{byte(u.MinVersion), byte(u.MaxVersion)})
	field([]byte{btob(len(u.TrustedCA) > 0), btob(u.ClientCertificate != nil)})
	for _, m := range u.MatchSANs {
		field([]byte{byte(m.Type)})
		field([]byte(m.Exact))
		field([]byte(m.Prefix))
	}
	var out [32]byte
	h.Sum(out[:0])
	out[0] |= 1 // never the zero value
	return out
}

func btob(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// material is an upstream's certificate material, parsed once per change and
// swapped atomically: handshakes load it (GetClientCertificate,
// VerifyConnection), so a new certificate or trust bundle applies to new
// connections while pooled ones stay open.
type material struct {
	fp    [32]byte         // materialFingerprint of what it was parsed from
	cert  *tls.Certificate // nil: no client certificate
	roots *x509.CertPool   // nil: the server is not verified
}

// materialFingerprint identifies the certificate material of u.
func materialFingerprint(u *config.UpstreamTLS) [32]byte {
	if u == nil {
		return [32]byte{}
	}
	h := sha256.New()
	field := func(b []byte) { fmt.Fprintf(h, "%d:%s;", len(b), b) }
	field(u.TrustedCA)
	if c := u.ClientCertificate; c != nil {
		field(c.CertificateChain)
		field(c.PrivateKey)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// parseMaterial parses the client certificate and trusted CA of u.
func parseMaterial(u *config.UpstreamTLS) (*material, error) {
	m := &material{fp: materialFingerprint(u)}
	if c := u.ClientCertificate; c != nil {
		pair, err := tls.X509KeyPair(c.CertificateChain, c.PrivateKey)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		m.cert = &pair
	}
	if len(u.TrustedCA) > 0 {
		m.roots = x509.NewCertPool()
		if !m.roots.AppendCertsFromPEM(u.TrustedCA) {
			return nil, errors.New("trusted CA: no PEM certificate")
		}
	}
	return m, nil
}

// clientTLS builds the crypto/tls client configuration of a cluster. Certificate
// verification is done in VerifyConnection rather than by crypto/tls's hostname
// check, because Envoy's semantics differ: the chain must verify against the
// trusted CA (when one is set) and the leaf must carry one of the configured
// SANs; SNI is only what is sent, never what is checked. The client
// certificate and the roots come from cur at each handshake.
func clientTLS(u *config.UpstreamTLS, p config.Protocol, cur func() *material) (*tls.Config, error) {
	cfg := &tls.Config{
		ServerName:         u.SNI,
		InsecureSkipVerify: true, // replaced by verifyServer below
		NextProtos:         slices.Clone(u.ALPN),
	}
	if len(cfg.NextProtos) == 0 && p.ALPN() != "" {
		cfg.NextProtos = []string{p.ALPN()}
	}
	var err error
	if cfg.MinVersion, cfg.MaxVersion, err = config.VersionRange(u.MinVersion, u.MaxVersion); err != nil {
		return nil, err
	}
	if u.ClientCertificate != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if m := cur(); m != nil && m.cert != nil {
				return m.cert, nil
			}
			return &tls.Certificate{}, nil // none: the server decides
		}
	}
	if len(u.TrustedCA) == 0 {
		if len(u.MatchSANs) > 0 {
			return nil, errors.New("subject alt names matched without a trusted CA")
		}
		// Envoy without a validation context accepts any server certificate.
		return cfg, nil
	}
	sans := slices.Clone(u.MatchSANs)
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		m := cur()
		if m == nil || m.roots == nil {
			return errors.New("no trusted CA")
		}
		return verifyServer(cs, m.roots, sans)
	}
	return cfg, nil
}

// verifyServer checks the server's chain against roots and its leaf's SANs
// against sans (any one suffices; none configured accepts any SAN).
func verifyServer(cs tls.ConnectionState, roots *x509.CertPool, sans []config.SANMatcher) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("server sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return err
	}
	return config.CheckSANs(leaf, sans, "server")
}

// DialContext connects to an endpoint of the cluster: TCP, then the TLS
// handshake when the cluster originates TLS, both within the connect timeout
// (Envoy's connect_timeout covers the handshake). Failures are *net.OpError
// with Op "dial"; TLS ones wrap ErrTLSHandshake and are logged at warn level
// with the cluster, endpoint and cause, since they mean misconfiguration (wrong
// SAN, wrong CA) rather than a transient network error.
func (u *Upstream) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return u.dialWith(ctx, network, addr, u.tls, u.key.protocol.ALPN(), false)
}

// DialHTTP1 is DialContext for a dedicated HTTP/1.1 connection (an Upgrade
// request, which HTTP/2 cannot carry without RFC 8441): over TLS it offers
// only "http/1.1" by ALPN, whatever the cluster's protocol.
func (u *Upstream) DialHTTP1(ctx context.Context, network, addr string) (net.Conn, error) {
	return u.dialWith(ctx, network, addr, u.tlsHTTP1, "http/1.1", false)
}

// dialWith dials addr. Traffic dials (probe false) take a slot of
// max_connections (failing with ErrOverflow when there is none), count
// connect failures and feed them to outlier detection as gateway failures;
// health-check probes (probe true) do none of that.
func (u *Upstream) dialWith(ctx context.Context, network, addr string, cfg *tls.Config, want string, probe bool) (net.Conn, error) {
	if u.tlsErr != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("%w: cluster %q: %w", ErrTLSHandshake, u.key.name, u.tlsErr)}
	}
	var ep *EndpointStats
	var open *atomic.Int64
	if !probe {
		if err := u.reserveConn(network, addr); err != nil {
			return nil, err
		}
		ep, open = u.Endpoint(addr), &u.res.cxOpen
	}
	fail := func() {
		if probe {
			return
		}
		open.Add(-1)
		ep.ConnectFailures.Add(1)
		if ctx.Err() == nil { // a caller that gave up says nothing about the endpoint
			u.ObserveFailure(ep)
		}
	}
	c, err := u.Dialer.DialContext(ctx, network, addr)
	if err != nil {
		fail()
		return nil, err
	}
	if want == "h2" {
		// HTTP/2 to the peer sidecar: coalesce the transport's per-request
		// flushes (and TLS records) per scheduling round.
		c = batchwrite.New(c)
	}
	if cfg == nil {
		return u.count(c, ep, open), nil
	}
	hctx, cancel := context.WithTimeout(ctx, u.key.timeout)
	defer cancel()
	tc := tls.Client(c, cfg)
	err = tc.HandshakeContext(hctx)
	if err == nil && want != "" {
		// A server that ignores ALPN still gets the protocol we were told to
		// speak; one that picks another protocol would misparse it.
		if got := tc.ConnectionState().NegotiatedProtocol; got != "" && got != want {
			err = fmt.Errorf("ALPN negotiated %q, want %q", got, want)
		}
	}
	if err != nil {
		c.Close()
		fail()
		if !probe {
			u.log.Warn("upstream TLS handshake failed", "cluster", u.key.name, "endpoint", addr, "sni", cfg.ServerName, "err", err)
		}
		return nil, &net.OpError{Op: "dial", Net: network, Addr: c.RemoteAddr(), Err: fmt.Errorf("%w: %w", ErrTLSHandshake, err)}
	}
	return u.count(tc, ep, open), nil
}

func (u *Upstream) count(c net.Conn, ep *EndpointStats, open *atomic.Int64) net.Conn {
	if ep == nil {
		return c // a probe
	}
	return counted(c, ep, open)
}
