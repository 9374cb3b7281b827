package cluster

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"

	"github.com/tinymesh/tinymesh/dataplane/config"
)

// ErrTLSHandshake marks upstream TLS handshake failures (wrapped in a
// *net.OpError with Op "dial", so the HTTP stage reports them as
// upstream_connect_failure).
var ErrTLSHandshake = errors.New("upstream TLS handshake failed")

// tlsFingerprint identifies an UpstreamTLS by content, so that an upstream
// (and its pooled connections) is reused across snapshots exactly when every
// input of its tls.Config is unchanged. The zero value means plain TCP.
func tlsFingerprint(u *config.UpstreamTLS) [32]byte {
	if u == nil {
		return [32]byte{}
	}
	h := sha256.New()
	field := func(b []byte) { fmt.Fprintf(h, "%d:%s;", len(b), b) }
	field([]byte(u.SNI))
	field([]byte(strings.Join(u.ALPN, "\x00")))
	field([]byte{byte(u.MinVersion), byte(u.MaxVersion)})
	field(u.TrustedCA)
	for _, m := range u.MatchSANs {
		field([]byte{byte(m.Type)})
		field([]byte(m.Exact))
	}
	if c := u.ClientCertificate; c != nil {
		field(c.CertificateChain)
		field(c.PrivateKey)
	}
	var out [32]byte
	h.Sum(out[:0])
	out[0] |= 1 // never the zero value
	return out
}

// clientTLS builds the crypto/tls client configuration of a cluster. Certificate
// verification is done in VerifyConnection rather than by crypto/tls's hostname
// check, because Envoy's semantics differ: the chain must verify against the
// trusted CA (when one is set) and the leaf must carry one of the configured
// SANs; SNI is only what is sent, never what is checked.
func clientTLS(u *config.UpstreamTLS, p config.Protocol) (*tls.Config, error) {
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
	if c := u.ClientCertificate; c != nil {
		pair, err := tls.X509KeyPair(c.CertificateChain, c.PrivateKey)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if len(u.TrustedCA) == 0 {
		if len(u.MatchSANs) > 0 {
			return nil, errors.New("subject alt names matched without a trusted CA")
		}
		// Envoy without a validation context accepts any server certificate.
		return cfg, nil
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(u.TrustedCA) {
		return nil, errors.New("trusted CA: no PEM certificate")
	}
	sans := slices.Clone(u.MatchSANs)
	cfg.VerifyConnection = func(cs tls.ConnectionState) error { return verifyServer(cs, roots, sans) }
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
	if len(sans) == 0 {
		return nil
	}
	for _, m := range sans {
		if matchSAN(leaf, m) {
			return nil
		}
	}
	return fmt.Errorf("server certificate SANs %s match none of %s", describeSANs(leaf), describeMatchers(sans))
}

func matchSAN(c *x509.Certificate, m config.SANMatcher) bool {
	if m.Type == config.SANDNS || m.Type == config.SANAny {
		if slices.Contains(c.DNSNames, m.Exact) {
			return true
		}
	}
	if m.Type == config.SANURI || m.Type == config.SANAny {
		if slices.ContainsFunc(c.URIs, func(u *url.URL) bool { return u.String() == m.Exact }) {
			return true
		}
	}
	if m.Type == config.SANAny {
		if slices.Contains(c.EmailAddresses, m.Exact) ||
			slices.ContainsFunc(c.IPAddresses, func(ip net.IP) bool { return ip.String() == m.Exact }) {
			return true
		}
	}
	return false
}

func describeSANs(c *x509.Certificate) string {
	var s []string
	for _, d := range c.DNSNames {
		s = append(s, "DNS:"+d)
	}
	for _, u := range c.URIs {
		s = append(s, "URI:"+u.String())
	}
	for _, e := range c.EmailAddresses {
		s = append(s, "email:"+e)
	}
	for _, ip := range c.IPAddresses {
		s = append(s, "IP:"+ip.String())
	}
	return "[" + strings.Join(s, " ") + "]"
}

func describeMatchers(ms []config.SANMatcher) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = m.Type.String() + ":" + m.Exact
	}
	return "[" + strings.Join(s, " ") + "]"
}

// DialContext connects to an endpoint of the cluster: TCP, then the TLS
// handshake when the cluster originates TLS, both within the connect timeout
// (Envoy's connect_timeout covers the handshake). Failures are *net.OpError
// with Op "dial"; TLS ones wrap ErrTLSHandshake and are logged at warn level
// with the cluster, endpoint and cause, since they mean misconfiguration (wrong
// SAN, wrong CA) rather than a transient network error.
func (u *Upstream) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return u.dial(ctx, network, addr, u.tls, u.key.protocol.ALPN())
}

// DialHTTP1 is DialContext for a dedicated HTTP/1.1 connection (an Upgrade
// request, which HTTP/2 cannot carry without RFC 8441): over TLS it offers
// only "http/1.1" by ALPN, whatever the cluster's protocol.
func (u *Upstream) DialHTTP1(ctx context.Context, network, addr string) (net.Conn, error) {
	return u.dial(ctx, network, addr, u.tlsHTTP1, "http/1.1")
}

func (u *Upstream) dial(ctx context.Context, network, addr string, cfg *tls.Config, want string) (net.Conn, error) {
	if u.tlsErr != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("%w: cluster %q: %w", ErrTLSHandshake, u.key.name, u.tlsErr)}
	}
	c, err := u.Dialer.DialContext(ctx, network, addr)
	if err != nil || cfg == nil {
		return c, err
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
		u.log.Warn("upstream TLS handshake failed", "cluster", u.key.name, "endpoint", addr, "sni", cfg.ServerName, "err", err)
		return nil, &net.OpError{Op: "dial", Net: network, Addr: c.RemoteAddr(), Err: fmt.Errorf("%w: %w", ErrTLSHandshake, err)}
	}
	return tc, nil
}
