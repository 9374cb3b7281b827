package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Workload names of the C-proxy mTLS chains' certificates. The server-side leaf
// also carries the DNS SAN serverName, because nginx (proxy_ssl_name) and HAProxy
// (verifyhost) check the upstream's name against DNS SANs only; the SPIFFE
// X.509-SVID specification allows SANs of other types next to the one URI SAN.
const (
	trustDomain = "cluster.local"
	certClient  = "bench-client"
	certServer  = "bench-server"
	serverName  = certServer
)

// spiffeID is the workload identity of a service account in namespace default,
// as docs/identity.md spells it.
func spiffeID(sa string) string {
	return "spiffe://" + trustDomain + "/ns/default/sa/" + sa
}

// certFiles are the PEM files of a throwaway CA and one leaf per workload, for
// the C-proxy mTLS chains.
type certFiles struct {
	CA   string            // root certificate
	Cert map[string]string // workload -> leaf certificate
	Key  map[string]string // workload -> leaf private key (PKCS#8)
	Both map[string]string // workload -> certificate then key (HAProxy's crt)
}

// writeCerts creates a self-signed root (ECDSA P-256, valid a day) and, for each
// workload, an X.509-SVID signed by it in dir: CA:false, digitalSignature,
// serverAuth and clientAuth, exactly one URI SAN spiffeID(workload), the same
// profile as the control plane's CA (docs/identity.md).
func writeCerts(dir string, workloads ...string) (certFiles, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return certFiles{}, err
	}
	caURI, _ := url.Parse("spiffe://" + trustDomain)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"tinymesh bench"}, CommonName: "bench CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{caURI},
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return certFiles{}, fmt.Errorf("bench CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return certFiles{}, err
	}
	f := certFiles{CA: filepath.Join(dir, "ca.crt"), Cert: map[string]string{}, Key: map[string]string{}, Both: map[string]string{}}
	if err := writePEM(f.CA, 0o644, pemBlock("CERTIFICATE", caDER)); err != nil {
		return certFiles{}, err
	}
	for i, w := range workloads {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return certFiles{}, err
		}
		id, err := url.Parse(spiffeID(w))
		if err != nil {
			return certFiles{}, err
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(int64(i + 2)),
			Subject:               pkix.Name{Organization: []string{"tinymesh bench"}},
			NotBefore:             now.Add(-time.Minute),
			NotAfter:              now.Add(24 * time.Hour),
			KeyUsage:              x509.KeyUsageDigitalSignature,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			BasicConstraintsValid: true,
			URIs:                  []*url.URL{id},
		}
		if w == serverName {
			tmpl.DNSNames = []string{serverName}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return certFiles{}, fmt.Errorf("leaf %s: %w", w, err)
		}
		pk, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return certFiles{}, err
		}
		cert, keyPEM := pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", pk)
		f.Cert[w] = filepath.Join(dir, w+".crt")
		f.Key[w] = filepath.Join(dir, w+".key")
		f.Both[w] = filepath.Join(dir, w+".pem")
		if err := writePEM(f.Cert[w], 0o644, cert); err != nil {
			return certFiles{}, err
		}
		if err := writePEM(f.Key[w], 0o600, keyPEM); err != nil {
			return certFiles{}, err
		}
		if err := writePEM(f.Both[w], 0o600, cert, keyPEM); err != nil {
			return certFiles{}, err
		}
	}
	return f, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func writePEM(path string, mode os.FileMode, blocks ...[]byte) error {
	var b []byte
	for _, p := range blocks {
		b = append(b, p...)
	}
	if err := os.WriteFile(path, b, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// tlsConfig is a TLS 1.3 client configuration that presents workload's
// certificate (none if workload is empty), trusts only the bench CA, expects
// serverName, and offers the ALPN protocols alpn.
func (f certFiles) tlsConfig(workload string, alpn ...string) (*tls.Config, error) {
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s: no certificate", f.CA)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: serverName, NextProtos: alpn}
	if workload != "" {
		kp, err := tls.LoadX509KeyPair(f.Cert[workload], f.Key[workload])
		if err != nil {
			return nil, err
		}
		c.Certificates = []tls.Certificate{kp}
	}
	return c, nil
}
