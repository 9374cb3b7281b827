package listener

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/config"
)

// HandshakeTimeout bounds a downstream TLS handshake, so that a peer that
// connects and stalls cannot hold a connection slot (and, for TCP proxies, an
// upstream connection) for longer than this.
const HandshakeTimeout = 15 * time.Second

// ServerConfig builds the crypto/tls server configuration of a listener's
// DownstreamTLS. It parses the certificates once; call it when a snapshot is
// applied, never per connection. The result must not be modified.
func ServerConfig(d *config.DownstreamTLS) (*tls.Config, error) {
	if d == nil {
		return nil, nil
	}
	if len(d.Certificates) == 0 {
		return nil, errors.New("tls: no certificate")
	}
	cfg := &tls.Config{
		NextProtos:             append([]string(nil), d.ALPN...),
		SessionTicketsDisabled: d.SessionTicketsDisabled,
	}
	var err error
	if cfg.MinVersion, cfg.MaxVersion, err = config.VersionRange(d.MinVersion, d.MaxVersion); err != nil {
		return nil, err
	}
	for i, kp := range d.Certificates {
		c, err := tls.X509KeyPair(kp.CertificateChain, kp.PrivateKey)
		if err != nil {
			return nil, fmt.Errorf("tls: certificate %d: %w", i, err)
		}
		cfg.Certificates = append(cfg.Certificates, c)
	}
	if len(d.TrustedCA) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(d.TrustedCA) {
			return nil, errors.New("tls: trusted CA: no PEM certificate")
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if d.RequireClientCertificate {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	} else if d.RequireClientCertificate {
		return nil, errors.New("tls: client certificates required but no trusted CA")
	}
	return cfg, nil
}

// tlsListener terminates TLS on accepted connections when a configuration is
// stored; with none it passes connections through. The configuration is swapped
// atomically so a kept listener picks up new certificates for new connections
// while open ones keep theirs.
type tlsListener struct {
	net.Listener
	cfg atomic.Pointer[tls.Config] // nil: plain TCP
}

func (l *tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cfg := l.cfg.Load()
	if cfg == nil {
		return c, nil
	}
	// The handshake runs on the connection's goroutine at its first Read,
	// never in the accept loop.
	return &serverConn{Conn: tls.Server(c, cfg)}, nil
}

// serverConn is a server-side TLS connection whose handshake is bounded by
// HandshakeTimeout. It embeds *tls.Conn so that CloseWrite (half-close for TCP
// proxying, as a TLS close_notify) and ConnectionState stay available.
type serverConn struct {
	*tls.Conn
	handshook atomic.Bool
}

func (c *serverConn) Read(p []byte) (int, error) {
	if !c.handshook.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), HandshakeTimeout)
		err := c.Conn.HandshakeContext(ctx)
		cancel()
		if err != nil {
			return 0, fmt.Errorf("tls handshake with %s: %w", c.RemoteAddr(), err)
		}
		c.handshook.Store(true)
	}
	return c.Conn.Read(p)
}
