package listener

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/config"
)

// HandshakeTimeout bounds a downstream TLS handshake, so that a peer that
// connects and stalls cannot hold a connection slot (and, for TCP proxies, an
// upstream connection) for longer than this.
const HandshakeTimeout = 15 * time.Second

// PeekTimeout bounds how long a TLS-optional (PERMISSIVE) listener waits for
// a connection's first byte before it takes the connection for plaintext, so
// that protocols where the server speaks first still work (Istio's
// tls_inspector does the same with continue_on_listener_filters_timeout).
const PeekTimeout = 5 * time.Second

// tlsRecordHandshake is the first byte of every TLS connection: a handshake
// record carrying the ClientHello (RFC 8446 section 5.1).
const tlsRecordHandshake = 0x16

// TLS is a listener's compiled TLS settings. It is built once per snapshot
// (NewTLS) and never modified; connections keep the value they were accepted
// with.
type TLS struct {
	Config *tls.Config
	// Optional (PERMISSIVE) serves plaintext connections too; the first byte
	// of a connection decides.
	Optional bool
	// LocalID is the SPIFFE ID of the listener's (first) certificate, or "":
	// what XFCC names in By=.
	LocalID string
}

// NewTLS compiles a listener's TLS settings: nil, nil for a plaintext one.
// Call it when a snapshot is applied, never per connection.
func NewTLS(lc *config.Listener) (*TLS, error) {
	cfg, err := ServerConfig(lc.TLS)
	if cfg == nil || err != nil {
		return nil, err
	}
	t := &TLS{Config: cfg, Optional: lc.TLSOptional}
	if leaf, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0]); err == nil {
		for _, u := range leaf.URIs {
			if u.Scheme == "spiffe" {
				t.LocalID = u.String()
				break
			}
		}
	}
	return t, nil
}

// ServerConfig builds the crypto/tls server configuration of a listener's
// DownstreamTLS. It parses the certificates once; call it when a snapshot is
// applied, never per connection. The result must not be modified. Client
// certificates are verified by crypto/tls against TrustedCA, so a verified
// peer's ConnectionState has VerifiedChains (see PeerSPIFFEID).
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
	if len(d.MatchSANs) > 0 {
		if cfg.ClientCAs == nil {
			return nil, errors.New("tls: client subject alt names matched without a trusted CA")
		}
		sans := slices.Clone(d.MatchSANs)
		// crypto/tls has verified the chain by now; a caller that sent no
		// certificate (allowed only without RequireClientCertificate) has no
		// SANs to match.
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil
			}
			return config.CheckSANs(cs.PeerCertificates[0], sans, "client")
		}
	}
	return cfg, nil
}

// ConnInfo is what a downstream TLS handshake established, worked out once
// per connection right after the handshake. It is immutable.
type ConnInfo struct {
	State tls.ConnectionState
	// PeerID is PeerSPIFFEID(&State): the verified caller's SPIFFE ID or "".
	PeerID string
	// PeerCertSHA256 is the hex SHA-256 of the verified peer leaf's DER
	// (XFCC Hash=), or "" without a verified peer certificate.
	PeerCertSHA256 string
	// LocalID is the SPIFFE ID of the certificate this listener presented
	// (XFCC By=), or "".
	LocalID string
}

// Info returns the TLS facts of a connection accepted by a Listener once its
// handshake has completed, or nil: for plaintext connections (including
// plaintext ones on a TLS-optional listener), before the handshake, and for
// connections not accepted by a Listener. It does not allocate.
func Info(c net.Conn) *ConnInfo {
	if x, ok := c.(interface{ tlsInfo() *ConnInfo }); ok {
		return x.tlsInfo()
	}
	return nil
}

// tlsListener terminates TLS on accepted connections when a configuration is
// stored; with none it passes connections through. The configuration is swapped
// atomically so a kept listener picks up new certificates for new connections
// while open ones keep theirs.
type tlsListener struct {
	net.Listener
	name string       // set at creation, read-only after
	log  *slog.Logger // set at creation, read-only after
	cfg  atomic.Pointer[TLS]
}

func (l *tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	t := l.cfg.Load()
	switch {
	case t == nil:
		return c, nil
	case t.Optional:
		// Peeking happens on the connection's goroutine at its first Read
		// or Write, never in the accept loop.
		return &optionalConn{Conn: c, l: l, t: t}, nil
	}
	// The handshake runs on the connection's goroutine at its first Read,
	// never in the accept loop.
	return l.server(c, t), nil
}

func (l *tlsListener) server(c net.Conn, t *TLS) *serverConn {
	return &serverConn{Conn: tls.Server(c, t.Config), l: l, t: t}
}

// serverConn is a server-side TLS connection whose handshake is bounded by
// HandshakeTimeout. It embeds *tls.Conn so that CloseWrite (half-close for TCP
// proxying, as a TLS close_notify) and ConnectionState stay available.
type serverConn struct {
	*tls.Conn
	l *tlsListener // set at creation, read-only after
	t *TLS         // the settings it was accepted with; read-only

	handshook atomic.Bool              // the handshake succeeded (fast path)
	hsOnce    sync.Once                // runs the handshake, logging a failure once
	hsErr     error                    // the handshake's result; written in hsOnce
	info      atomic.Pointer[ConnInfo] // set once, after the handshake
}

func (c *serverConn) Read(p []byte) (int, error) {
	if !c.handshook.Load() {
		c.hsOnce.Do(func() { c.hsErr = c.handshake() })
		if c.hsErr != nil {
			return 0, c.hsErr
		}
	}
	return c.Conn.Read(p)
}

func (c *serverConn) handshake() error {
	ctx, cancel := context.WithTimeout(context.Background(), HandshakeTimeout)
	err := c.Conn.HandshakeContext(ctx)
	cancel()
	if err != nil {
		if errors.Is(err, io.EOF) {
			// A port probe or a client that gave up: nothing to fix.
			c.l.log.Debug("tls handshake: peer closed the connection", "listener", c.l.name, "peer", c.RemoteAddr().String())
		} else {
			c.l.log.Warn("tls handshake failed", "listener", c.l.name, "peer", c.RemoteAddr().String(), "err", err)
		}
		return fmt.Errorf("tls handshake with %s: %w", c.RemoteAddr(), err)
	}
	st := c.Conn.ConnectionState()
	info := &ConnInfo{State: st, PeerID: PeerSPIFFEID(&st), LocalID: c.t.LocalID}
	if verified(&st) {
		sum := sha256.Sum256(st.PeerCertificates[0].Raw)
		info.PeerCertSHA256 = hex.EncodeToString(sum[:])
	}
	c.info.Store(info)
	c.handshook.Store(true)
	return nil
}

func (c *serverConn) tlsInfo() *ConnInfo { return c.info.Load() }

// optionalConn is a connection on a TLS-optional (PERMISSIVE) listener. Its
// first Read or Write peeks at the first byte, within PeekTimeout: a TLS
// handshake record makes it a serverConn, anything else (or nothing in time)
// plaintext. ConnectionState reports the TLS state, or the zero value
// (HandshakeComplete false) for plaintext.
type optionalConn struct {
	net.Conn // the accepted connection
	l        *tlsListener
	t        *TLS

	once    sync.Once
	decided atomic.Bool // set at the end of decide
	// Set by decide, read-only after (decide happens before every use).
	tc  *serverConn   // TLS; nil for plaintext
	br  *bufio.Reader // plaintext: holds the peeked byte
	err error         // the peek failed (connection closed)
}

func (c *optionalConn) decide() {
	c.Conn.SetReadDeadline(time.Now().Add(PeekTimeout))
	br := bufio.NewReaderSize(c.Conn, 16) // the minimum; only the peeked byte is buffered
	b, err := br.Peek(1)
	c.Conn.SetReadDeadline(time.Time{})
	var ne net.Error
	switch {
	case err == nil && b[0] == tlsRecordHandshake:
		c.tc = c.l.server(&peekedConn{Conn: c.Conn, r: br}, c.t)
	case err == nil || errors.As(err, &ne) && ne.Timeout():
		c.br = br // plaintext, or a server-speaks-first protocol
	default:
		c.err = err
	}
	c.decided.Store(true)
}

func (c *optionalConn) Read(p []byte) (int, error) {
	c.once.Do(c.decide)
	switch {
	case c.tc != nil:
		return c.tc.Read(p)
	case c.err != nil:
		return 0, c.err
	}
	if c.br.Buffered() > 0 {
		return c.br.Read(p)
	}
	return c.Conn.Read(p)
}

func (c *optionalConn) Write(p []byte) (int, error) {
	c.once.Do(c.decide)
	if c.tc != nil {
		return c.tc.Write(p)
	}
	return c.Conn.Write(p)
}

// Close does not wait for a peek in progress: it closes the socket, which
// ends the peek.
func (c *optionalConn) Close() error {
	if c.decided.Load() && c.tc != nil {
		return c.tc.Close()
	}
	return c.Conn.Close()
}

// CloseWrite half-closes: a TLS close_notify, or a TCP FIN for plaintext.
func (c *optionalConn) CloseWrite() error {
	c.once.Do(c.decide)
	if c.tc != nil {
		return c.tc.CloseWrite()
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// ConnectionState is the TLS state, or the zero value for plaintext.
func (c *optionalConn) ConnectionState() tls.ConnectionState {
	c.once.Do(c.decide)
	if c.tc != nil {
		return c.tc.ConnectionState()
	}
	return tls.ConnectionState{}
}

func (c *optionalConn) tlsInfo() *ConnInfo {
	c.once.Do(c.decide)
	if c.tc != nil {
		return c.tc.tlsInfo()
	}
	return nil
}

// NetConn returns the accepted connection, TLS or not, as tls.Conn.NetConn
// does (dataplane/batchwrite finds its connection through it).
func (c *optionalConn) NetConn() net.Conn { return c.Conn }

// peekedConn is the raw connection with the byte peeked at in front.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if c.r.Buffered() > 0 {
		return c.r.Read(p)
	}
	return c.Conn.Read(p)
}
