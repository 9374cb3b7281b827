package batchwrite

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"testing"
	"time"
)

// TestTLSCloseWriteKeepsBufferedData: crypto/tls's close_notify (CloseWrite,
// Close) sets a write deadline of now right after writing the alert; the
// data buffered before it, and the alert, must still reach the peer.
func TestTLSCloseWriteKeepsBufferedData(t *testing.T) {
	cert := selfSignedTLS(t)
	for _, half := range []bool{true, false} {
		client, server := tcpPair(t)
		srv := tls.Server(New(server), &tls.Config{Certificates: []tls.Certificate{cert}})
		cli := tls.Client(client, &tls.Config{InsecureSkipVerify: true})
		errc := make(chan error, 1)
		go func() { errc <- cli.Handshake() }()
		if err := srv.Handshake(); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		srv.Write([]byte("the last response"))
		if half {
			srv.CloseWrite()
		} else {
			srv.Close()
		}
		cli.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(cli)
		if err != nil || string(b) != "the last response" {
			t.Errorf("half-close %v: peer read %q, %v; want the data, then close_notify (EOF)", half, b, err)
		}
	}
}

func selfSignedTLS(t *testing.T) tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}
