package proxytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tinymesh/tinymesh/dataplane/config"
)

// PKI is a throwaway certificate authority for TLS tests: a self-signed ECDSA
// P-256 root that issues leaf certificates valid for one hour.
type PKI struct {
	CAPEM []byte // the root certificate, PEM
	Pool  *x509.CertPool

	ca     *x509.Certificate
	key    *ecdsa.PrivateKey
	serial atomic.Int64
}

// NewPKI creates a PKI with a fresh root named cn.
func NewPKI(t testing.TB, cn string) *PKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("PKI: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("PKI: %v", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("PKI: %v", err)
	}
	p := &PKI{CAPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Pool: x509.NewCertPool(), ca: ca, key: key}
	p.Pool.AddCert(ca)
	p.serial.Store(1)
	return p
}

// Leaf describes a certificate to issue.
type Leaf struct {
	CommonName string
	DNSNames   []string
	URIs       []string
	Client     bool // extended key usage clientAuth instead of serverAuth
}

// IssueSVID returns an X.509-SVID for spiffeID as the mesh's CA issues them
// (docs/identity.md): the SPIFFE ID as the only URI SAN, ECDSA P-256,
// digitalSignature, extended key usage serverAuth and clientAuth, PEM chain
// (leaf only) and PEM PKCS#8 key.
func (p *PKI) IssueSVID(t testing.TB, spiffeID string) config.CertificateKeyPair {
	t.Helper()
	return p.issue(t, Leaf{URIs: []string{spiffeID}}, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth})
}

// Issue returns a PEM certificate (leaf only) and PEM PKCS#8 key for l.
func (p *PKI) Issue(t testing.TB, l Leaf) config.CertificateKeyPair {
	t.Helper()
	usage := x509.ExtKeyUsageServerAuth
	if l.Client {
		usage = x509.ExtKeyUsageClientAuth
	}
	return p.issue(t, l, []x509.ExtKeyUsage{usage})
}

func (p *PKI) issue(t testing.TB, l Leaf, usage []x509.ExtKeyUsage) config.CertificateKeyPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial.Add(1)),
		Subject:      pkix.Name{CommonName: l.CommonName},
		DNSNames:     l.DNSNames,
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
	}
	for _, s := range l.URIs {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	k, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	return config.CertificateKeyPair{
		CertificateChain: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		PrivateKey:       pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k}),
	}
}

// TLSCertificate converts a pair for crypto/tls clients and servers.
func TLSCertificate(t testing.TB, kp config.CertificateKeyPair) tls.Certificate {
	t.Helper()
	c, err := tls.X509KeyPair(kp.CertificateChain, kp.PrivateKey)
	if err != nil {
		t.Fatalf("TLSCertificate: %v", err)
	}
	return c
}

// StartTLSApp starts an App serving HTTPS with ALPN h2 and http/1.1 and the
// default handler, which also reports the negotiated ALPN protocol in
// X-Got-ALPN. With clientCAs set it requires a client certificate signed by
// them and reports its common name in X-Got-Client-CN.
func StartTLSApp(t testing.TB, name string, cert config.CertificateKeyPair, clientCAs *x509.CertPool) *App {
	t.Helper()
	a := &App{Name: name}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("app %s: %v", name, err)
	}
	a.Addr = ln.Addr().String()
	cfg := &tls.Config{Certificates: []tls.Certificate{TLSCertificate(t, cert)}, NextProtos: []string{"h2", "http/1.1"}}
	if clientCAs != nil {
		cfg.ClientCAs, cfg.ClientAuth = clientCAs, tls.RequireAndVerifyClientCert
	}
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	srv := &http.Server{Protocols: p, TLSConfig: cfg, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.Requests.Add(1)
		if r.TLS != nil {
			w.Header().Set("X-Got-ALPN", r.TLS.NegotiatedProtocol)
			if len(r.TLS.PeerCertificates) > 0 {
				w.Header().Set("X-Got-Client-CN", r.TLS.PeerCertificates[0].Subject.CommonName)
			}
		}
		a.serveDefault(w, r)
	}),
		// Refused handshakes (the wrong-SAN tests) are expected; keep them quiet.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeTLS(ln, "", "")
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return a
}

// StartGRPCTLSApp starts a GRPCApp serving gRPC over TLS (ALPN h2) with cert.
func StartGRPCTLSApp(t testing.TB, cert config.CertificateKeyPair) *GRPCApp {
	t.Helper()
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{TLSCertificate(t, cert)}})
	return startGRPCApp(t, grpc.Creds(creds))
}

// TLSClient returns an HTTPS client trusting roots that offers alpn (in order)
// and speaks HTTP/2 if alpn has "h2" and HTTP/1.1 if it has "http/1.1" or is
// empty (then no ALPN extension is sent). cert, when set, is its client
// certificate.
func TLSClient(t testing.TB, roots *x509.CertPool, serverName string, alpn []string, cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: roots, ServerName: serverName, NextProtos: alpn}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	p := new(http.Protocols)
	p.SetHTTP1(len(alpn) == 0 || slices.Contains(alpn, "http/1.1"))
	p.SetHTTP2(slices.Contains(alpn, "h2"))
	tr := &http.Transport{TLSClientConfig: cfg, Protocols: p, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}
