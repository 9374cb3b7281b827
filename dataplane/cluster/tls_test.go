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
