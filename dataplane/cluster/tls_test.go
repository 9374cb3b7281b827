package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/config"
)

// selfSigned returns a PEM self-signed certificate and its PEM key.
func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

func TestCompileReusesUpstreamByTLSContent(t *testing.T) {
	ca, _ := selfSigned(t)
	mk := func(sni string) *config.Cluster {
		// A fresh value each time, as each snapshot decodes its own.
		return &config.Cluster{Name: "a", Protocol: config.ProtocolH2C, TLS: &config.UpstreamTLS{SNI: sni, TrustedCA: append([]byte(nil), ca...),
			MatchSANs: []config.SANMatcher{{Type: config.SANDNS, Exact: "a"}}}}
	}
	s := NewSet()
	defer s.Close()
	var ups []*Upstream
	for i, c := range []*config.Cluster{mk("a"), mk("a"), mk("b"), {Name: "a", Protocol: config.ProtocolH2C}} {
		tbl, err := s.Compile(snap(c))
		if err != nil {
			t.Fatalf("Compile %d: %v", i, err)
		}
		s.Prune(tbl)
		got, _ := tbl.Get("a")
		ups = append(ups, got.Upstream)
	}
	if ups[0] != ups[1] {
		t.Errorf("same TLS settings: upstream replaced, want reused")
	}
	if ups[1] == ups[2] {
		t.Errorf("SNI changed: upstream reused, want a new one")
	}
	if ups[2] == ups[3] || ups[3].tls != nil {
		t.Errorf("TLS removed: got reused=%v tls=%v, want a new plain upstream", ups[2] == ups[3], ups[3].tls != nil)
	}
}

func TestCompileRejectsBadTLSAndDialsFail(t *testing.T) {
	cert, _ := selfSigned(t)
	_, otherKey := selfSigned(t)
	s := NewSet()
	defer s.Close()
	tbl, err := s.Compile(snap(&config.Cluster{Name: "bad", TLS: &config.UpstreamTLS{
		ClientCertificate: &config.CertificateKeyPair{CertificateChain: cert, PrivateKey: otherKey}}}))
	if err == nil || !strings.Contains(err.Error(), `cluster "bad": tls: client certificate`) {
		t.Fatalf("Compile = %v, want an error naming cluster bad and its client certificate", err)
	}
	c, ok := tbl.Get("bad")
	if !ok {
		t.Fatal("table has no cluster bad, want a complete table")
	}
	_, err = c.Upstream.DialContext(context.Background(), "tcp", "127.0.0.1:1")
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" || !errors.Is(err, ErrTLSHandshake) {
		t.Errorf("DialContext = %v, want a dial *net.OpError wrapping ErrTLSHandshake", err)
	}
}

func TestCompileKeepsUpstreamAcrossCertificateRotation(t *testing.T) {
	ca1, _ := selfSigned(t)
	ca2, _ := selfSigned(t)
	cert1, key1 := selfSigned(t)
	cert2, key2 := selfSigned(t)
	_, otherKey := selfSigned(t)
	mk := func(ca, cert, key []byte) *config.Cluster {
		return &config.Cluster{Name: "a", Protocol: config.ProtocolH2C, TLS: &config.UpstreamTLS{TrustedCA: ca,
			MatchSANs:         []config.SANMatcher{{Type: config.SANURI, Exact: "spiffe://td/ns/b/sa/b"}},
			ClientCertificate: &config.CertificateKeyPair{CertificateChain: cert, PrivateKey: key}}}
	}
	s := NewSet()
	defer s.Close()
	t1, err := s.Compile(snap(mk(ca1, cert1, key1)))
	if err != nil {
		t.Fatal(err)
	}
	s.Prune(t1)
	c1, _ := t1.Get("a")
	m1 := c1.Upstream.mat.Load()

	t2, err := s.Compile(snap(mk(ca2, cert2, key2)))
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := t2.Get("a")
	if c2.Upstream != c1.Upstream {
		t.Fatal("new certificate and CA: upstream replaced, want it kept (pooled connections survive a rotation)")
	}
	if c2.Upstream.mat.Load() != m1 {
		t.Error("Compile put the new material in force before Prune (the snapshot may still be refused)")
	}
	s.Prune(t2)
	if m := c2.Upstream.mat.Load(); m == m1 || m.cert == nil || m.roots == nil {
		t.Errorf("after Prune the material is %+v, want the new one", m)
	}

	// Material that does not parse fails the compile and leaves the
	// upstream in force alone.
	t3, err := s.Compile(snap(mk(ca2, cert2, otherKey)))
	if err == nil || !strings.Contains(err.Error(), `cluster "a": tls: client certificate`) {
		t.Fatalf("Compile with a mismatched key = %v, want an error naming cluster a", err)
	}
	c3, _ := t3.Get("a")
	if c3.Upstream == c2.Upstream {
		t.Error("bad material got the upstream in force, want a separate failing one")
	}
	s.Prune(t2) // the proxy keeps the previous table
	if c2.Upstream.mat.Load().cert == nil {
		t.Error("the upstream in force lost its certificate")
	}
}
