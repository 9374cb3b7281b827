package listener_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"testing"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/listener"
	"github.com/tinymesh/tinymesh/dataplane/proxytest"
)

func parse(t *testing.T, kp config.CertificateKeyPair) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(kp.CertificateChain)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPeerSPIFFEID(t *testing.T) {
	pki := proxytest.NewPKI(t, "root")
	const id = "spiffe://cluster.local/ns/default/sa/frontend"
	svid := parse(t, pki.IssueSVID(t, id))
	dnsOnly := parse(t, pki.Issue(t, proxytest.Leaf{DNSNames: []string{"frontend"}}))
	httpsURI := parse(t, pki.Issue(t, proxytest.Leaf{URIs: []string{"https://frontend"}}))
	verified := func(c *x509.Certificate) *tls.ConnectionState {
		return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}, VerifiedChains: [][]*x509.Certificate{{c}}}
	}
	tests := []struct {
		name string
		cs   *tls.ConnectionState
		want string
	}{
		{"plaintext", nil, ""},
		{"no certificate", &tls.ConnectionState{}, ""},
		{"unverified SVID", &tls.ConnectionState{PeerCertificates: []*x509.Certificate{svid}}, ""},
		{"verified SVID", verified(svid), id},
		{"verified, DNS SAN only", verified(dnsOnly), ""},
		{"verified, non-SPIFFE URI", verified(httpsURI), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := listener.PeerSPIFFEID(tt.cs); got != tt.want {
				t.Errorf("PeerSPIFFEID = %q, want %q", got, tt.want)
			}
		})
	}
}

// echoServer is a listener.Server answering each connection's first line.
type echoServer struct{ done chan struct{} }

func (s *echoServer) Serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			b := make([]byte, 64)
			n, err := c.Read(b)
			if err != nil {
				return
			}
			who := "plaintext"
			if info := listener.Info(c); info != nil {
				who = info.PeerID + " by " + info.LocalID
			}
			c.Write(append(b[:n:n], " "+who...))
		}()
	}
}
func (s *echoServer) Shutdown(context.Context) error { return nil }
func (s *echoServer) Close() error                   { return nil }

func TestOptionalTLSListener(t *testing.T) {
	pki := proxytest.NewPKI(t, "root")
	const idA, idB = "spiffe://td/ns/a/sa/a", "spiffe://td/ns/b/sa/b"
	certA, certB := pki.IssueSVID(t, idA), pki.IssueSVID(t, idB)
	lt, err := listener.NewTLS(&config.Listener{TLSOptional: true, TLS: &config.DownstreamTLS{
		Certificates: []config.CertificateKeyPair{certB}, TrustedCA: pki.CAPEM, RequireClientCertificate: true}})
	if err != nil {
		t.Fatal(err)
	}
	if !lt.Optional || lt.LocalID != idB {
		t.Fatalf("NewTLS = %+v, want optional with LocalID %s", lt, idB)
	}
	ln, err := listener.Bind("l", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := listener.StartTLS("l", "127.0.0.1:0", ln, lt, &echoServer{}, nil)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		l.Drain(ctx)
	}()
	addr := l.BoundAddr().String()
	roundTrip := func(c net.Conn) string {
		t.Helper()
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("hi")); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 128)
		n, err := c.Read(b)
		if err != nil {
			t.Fatal(err)
		}
		return string(b[:n])
	}
	plain, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(plain); got != "hi plaintext" {
		t.Errorf("plaintext: %q, want %q", got, "hi plaintext")
	}
	cert := proxytest.TLSCertificate(t, certA)
	tc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := roundTrip(tc), "hi "+idA+" by "+idB; got != want {
		t.Errorf("mTLS: %q, want %q", got, want)
	}
	// A client that connects and leaves at once does not hold the peek.
	gone, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	gone.Close()
	again, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(again); got != "hi plaintext" {
		t.Errorf("plaintext after an aborted connection: %q", got)
	}
}

// TestClientSANMatching: a listener that requires a SPIFFE ID of its trust
// domain refuses client certificates from the same CA without one, or with one
// of another domain, in the handshake, and says why.
func TestClientSANMatching(t *testing.T) {
	pki := proxytest.NewPKI(t, "root")
	server := pki.IssueSVID(t, "spiffe://td/ns/b/sa/b")
	cfg, err := listener.ServerConfig(&config.DownstreamTLS{
		Certificates: []config.CertificateKeyPair{server}, TrustedCA: pki.CAPEM, RequireClientCertificate: true,
		MatchSANs: []config.SANMatcher{{Type: config.SANURI, Prefix: "spiffe://td/"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		client  config.CertificateKeyPair
		wantErr string // "" accepts
	}{
		{"SPIFFE ID in the domain", pki.IssueSVID(t, "spiffe://td/ns/a/sa/a"), ""},
		{"no SPIFFE ID", pki.Issue(t, proxytest.Leaf{DNSNames: []string{"a"}, Client: true}), "peer has no SPIFFE ID (SANs [DNS:a]), want one of [URI:spiffe://td/*]"},
		{"another domain", pki.IssueSVID(t, "spiffe://other/ns/a/sa/a"), "peer SPIFFE ID spiffe://other/ns/a/sa/a not in [URI:spiffe://td/*]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			errc := make(chan error, 1)
			go func() {
				s, err := ln.Accept()
				if err != nil {
					errc <- err
					return
				}
				defer s.Close()
				s.SetDeadline(time.Now().Add(5 * time.Second))
				errc <- tls.Server(s, cfg).Handshake()
			}()
			c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true,
				Certificates: []tls.Certificate{proxytest.TLSCertificate(t, tt.client)}})
			if err == nil {
				defer c.Close()
			}
			err = <-errc
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("handshake: %v, want success", err)
			case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr):
				t.Fatalf("handshake: %v, want %q", err, tt.wantErr)
			}
		})
	}
}
