package dataplane_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/proxytest"
)

const (
	idFrontend = "spiffe://cluster.local/ns/default/sa/frontend"
	idBackend  = "spiffe://cluster.local/ns/default/sa/backend"
)

// xfccApp answers "app" and reports the XFCC values it received in X-Got-Xfcc
// ("|"-joined).
func xfccApp(t *testing.T) *proxytest.App {
	return proxytest.StartApp(t, "app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Got-Xfcc", strings.Join(r.Header.Values("X-Forwarded-Client-Cert"), "|"))
		io.WriteString(w, "app")
	}))
}

// mtlsInbound is B's inbound listener as the control plane sends it for
// STRICT (or, with optional, PERMISSIVE): TLS 1.3, client certificates
// required and verified against ca, XFCC SANITIZE_SET with the URI.
func mtlsInbound(version, addr, appAddr string, cert config.CertificateKeyPair, ca []byte, optional bool) *config.Snapshot {
	snap := tlsInbound(addr, appAddr, &config.DownstreamTLS{
		Certificates: []config.CertificateKeyPair{cert}, ALPN: []string{"h2", "http/1.1"},
		MinVersion: config.TLS13, MaxVersion: config.TLS13, TrustedCA: ca, RequireClientCertificate: true,
	})
	snap.Version = version
	l := snap.Listeners[0]
	l.TLSOptional = optional
	l.HTTP.ForwardClientCert = config.SanitizeSet
	l.HTTP.SetCurrentClientCertURI = true
	return snap
}

// mtlsOutbound is A's outbound listener sending to target over mTLS, the
// server having to be one of sans.
func mtlsOutbound(version, addr, target string, cert config.CertificateKeyPair, ca []byte, sans ...string) *config.Snapshot {
	snap := proxytest.OutboundSnapshot(version, addr, config.WeightedCluster{Name: proxytest.OutboundCluster, Weight: 1})
	c := proxytest.Cluster(proxytest.OutboundCluster, config.ProtocolH2C, target)
	c.TLS = &config.UpstreamTLS{MinVersion: config.TLS13, MaxVersion: config.TLS13, TrustedCA: ca, ClientCertificate: &cert}
	for _, s := range sans {
		c.TLS.MatchSANs = append(c.TLS.MatchSANs, config.SANMatcher{Type: config.SANURI, Exact: s})
	}
	snap.Clusters[proxytest.OutboundCluster] = c
	return snap
}

// leafSHA256 is the hex SHA-256 of a PEM chain's leaf DER (XFCC Hash=).
func leafSHA256(t *testing.T, chain []byte) string {
	t.Helper()
	b, _ := pem.Decode(chain)
	if b == nil {
		t.Fatal("no PEM block")
	}
	sum := sha256.Sum256(b.Bytes)
	return hex.EncodeToString(sum[:])
}

func TestMTLSBetweenSidecarsSetsXFCC(t *testing.T) {
	pki := proxytest.NewPKI(t, "mesh root")
	certA, certB := pki.IssueSVID(t, idFrontend), pki.IssueSVID(t, idBackend)
	app := xfccApp(t)
	inAddr, outAddr := proxytest.FreeAddr(t), proxytest.FreeAddr(t)
	proxytest.StartProxy(t, "B", mtlsInbound("b1", inAddr, app.Addr, certB, pki.CAPEM, false))
	proxytest.StartProxy(t, "A", mtlsOutbound("a1", outAddr, inAddr, certA, pki.CAPEM, idBackend))

	req, _ := http.NewRequest("GET", "http://"+outAddr+"/", nil)
	req.Host = "backend"
	req.Header.Set("X-Forwarded-Client-Cert", "By=spiffe://evil;URI=spiffe://cluster.local/ns/default/sa/admin")
	resp, err := proxytest.Client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := "By=" + idBackend + ";Hash=" + leafSHA256(t, certA.CertificateChain) + ";URI=" + idFrontend
	if got := resp.Header.Get("X-Got-Xfcc"); resp.StatusCode != http.StatusOK || got != want {
		t.Errorf("through A and B: %d, app got XFCC %q; want 200 and %q (the caller's forged value dropped)", resp.StatusCode, got, want)
	}
}

func TestMTLSPeerNotInSANsFails(t *testing.T) {
	pki := proxytest.NewPKI(t, "mesh root")
	certA, certB := pki.IssueSVID(t, idFrontend), pki.IssueSVID(t, idBackend)
	app := xfccApp(t)
	inAddr, outAddr := proxytest.FreeAddr(t), proxytest.FreeAddr(t)
	proxytest.StartProxy(t, "B", mtlsInbound("b1", inAddr, app.Addr, certB, pki.CAPEM, false))
	const other = "spiffe://cluster.local/ns/default/sa/other"
	_, logs := startLoggedProxy(t, mtlsOutbound("a1", outAddr, inAddr, certA, pki.CAPEM, other))

	getBackend := func(addr string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		req.Host = "backend"
		resp, err := proxytest.Client(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	resp := getBackend(outAddr)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Meshproxy-Error") != "upstream_connect_failure" {
		t.Errorf("to a peer outside the SANs: %d %q, want 503 upstream_connect_failure", resp.StatusCode, resp.Header.Get("X-Meshproxy-Error"))
	}
	wantLog := "peer SPIFFE ID " + idBackend + " not in [URI:" + other + "]"
	if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, wantLog) || !strings.Contains(l, "cluster="+proxytest.OutboundCluster) {
		t.Errorf("A's logs:\n%s\nwant a WARN line naming the cluster and %q", l, wantLog)
	}

	// A server certificate without any SPIFFE ID fails the same way.
	plainB := pki.Issue(t, proxytest.Leaf{CommonName: "b", DNSNames: []string{"backend"}})
	inAddr2, outAddr2 := proxytest.FreeAddr(t), proxytest.FreeAddr(t)
	proxytest.StartProxy(t, "B2", mtlsInbound("b1", inAddr2, app.Addr, plainB, pki.CAPEM, false))
	_, logs2 := startLoggedProxy(t, mtlsOutbound("a1", outAddr2, inAddr2, certA, pki.CAPEM, idBackend))
	if resp := getBackend(outAddr2); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("to a peer without a SPIFFE ID: %d, want 503", resp.StatusCode)
	}
	if l := logs2.String(); !strings.Contains(l, "peer has no SPIFFE ID") {
		t.Errorf("A's logs:\n%s\nwant one saying the peer has no SPIFFE ID", l)
	}
}

func TestMTLSUntrustedClientRefused(t *testing.T) {
	pki, stranger := proxytest.NewPKI(t, "mesh root"), proxytest.NewPKI(t, "other root")
	certB := pki.IssueSVID(t, idBackend)
	app := xfccApp(t)
	inAddr := proxytest.FreeAddr(t)
	_, logs := startLoggedProxy(t, mtlsInbound("b1", inAddr, app.Addr, certB, pki.CAPEM, false))

	for _, tc := range []struct {
		name    string
		cert    *tls.Certificate
		wantLog string
	}{
		{"certificate from another CA", func() *tls.Certificate {
			c := proxytest.TLSCertificate(t, stranger.IssueSVID(t, idFrontend))
			return &c
		}(), "x509: certificate signed by unknown authority"},
		{"no certificate", nil, "client didn't provide a certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := proxytest.TLSClient(t, pki.Pool, "", []string{"h2"}, tc.cert)
			cfg := c.Transport.(*http.Transport).TLSClientConfig
			cfg.InsecureSkipVerify = true // the server's SVID has no DNS name
			// Send the certificate even though the server asks for another CA's.
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				if tc.cert == nil {
					return &tls.Certificate{}, nil
				}
				return tc.cert, nil
			}
			if resp, err := c.Get("https://" + inAddr + "/"); err == nil {
				resp.Body.Close()
				t.Fatalf("request with %s: %d, want a failed handshake", tc.name, resp.StatusCode)
			}
			deadline := time.Now().Add(5 * time.Second)
			for !strings.Contains(logs.String(), tc.wantLog) && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond) // the server logs after the client saw the alert
			}
			if l := logs.String(); !strings.Contains(l, `level=WARN msg="tls handshake failed" listener=inbound peer=127.0.0.1:`) || !strings.Contains(l, tc.wantLog) {
				t.Errorf("B's logs:\n%s\nwant a WARN tls handshake line with listener, peer and %q", l, tc.wantLog)
			}
		})
	}
	if app.Requests.Load() != 0 {
		t.Errorf("app saw %d requests, want none", app.Requests.Load())
	}
}

func TestPermissiveServesTLSAndPlaintextOnOnePort(t *testing.T) {
	pki := proxytest.NewPKI(t, "mesh root")
	certA, certB := pki.IssueSVID(t, idFrontend), pki.IssueSVID(t, idBackend)
	app := xfccApp(t)
	for _, optional := range []bool{true, false} {
		mode := map[bool]string{true: "PERMISSIVE", false: "STRICT"}[optional]
		t.Run(mode, func(t *testing.T) {
			inAddr := proxytest.FreeAddr(t)
			proxytest.StartProxy(t, "B", mtlsInbound("b1", inAddr, app.Addr, certB, pki.CAPEM, optional))

			// Plaintext, with a forged XFCC.
			req, _ := http.NewRequest("GET", "http://"+inAddr+"/", nil)
			req.Header.Set("X-Forwarded-Client-Cert", "URI=spiffe://cluster.local/ns/default/sa/admin")
			resp, err := proxytest.Client(t).Do(req)
			if optional {
				if err != nil {
					t.Fatalf("plaintext request: %v", err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Got-Xfcc") != "" {
					t.Errorf("plaintext: %d, app got XFCC %q; want 200 and none", resp.StatusCode, resp.Header.Get("X-Got-Xfcc"))
				}
			} else if err == nil {
				resp.Body.Close()
				t.Errorf("plaintext request to a STRICT listener: %d, want a failed connection", resp.StatusCode)
			}

			// mTLS, HTTP/2 and HTTP/1.1, on the same port.
			cert := proxytest.TLSCertificate(t, certA)
			for _, alpn := range []string{"h2", "http/1.1"} {
				c := proxytest.TLSClient(t, pki.Pool, "", []string{alpn}, &cert)
				c.Transport.(*http.Transport).TLSClientConfig.InsecureSkipVerify = true
				resp, body := get(t, c, "https://"+inAddr+"/")
				want := "By=" + idBackend + ";Hash=" + leafSHA256(t, certA.CertificateChain) + ";URI=" + idFrontend
				if resp.StatusCode != http.StatusOK || body != "app" || resp.Header.Get("X-Got-Xfcc") != want {
					t.Errorf("mTLS %s: %d %q, XFCC %q; want 200 app, %q", alpn, resp.StatusCode, body, resp.Header.Get("X-Got-Xfcc"), want)
				}
			}
		})
	}
}

// serverLeaf returns the leaf certificate a TLS listener presents now.
func serverLeaf(t *testing.T, addr string, client tls.Certificate) *x509.Certificate {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{client}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

func TestCertificateRotationKeepsConnections(t *testing.T) {
	roots := []*proxytest.PKI{proxytest.NewPKI(t, "root 1")}
	bundle := func() []byte {
		var b []byte
		for _, r := range roots {
			b = append(b, r.CAPEM...)
		}
		return b
	}
	certA, certB := roots[0].IssueSVID(t, idFrontend), roots[0].IssueSVID(t, idBackend)
	app := xfccApp(t)
	inAddr, outAddr := proxytest.FreeAddr(t), proxytest.FreeAddr(t)
	r := startCountingRelay(t, inAddr)
	relay := r.addr
	B := proxytest.StartProxy(t, "B", mtlsInbound("b0", inAddr, app.Addr, certB, bundle(), false))
	A := proxytest.StartProxy(t, "A", mtlsOutbound("a0", outAddr, relay, certA, bundle(), idBackend))

	// Steady load through A and B until the rotations are done.
	var ok, failed atomic.Int64
	var errMu sync.Mutex
	var errs []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := proxytest.Client(t)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", "http://"+outAddr+"/", nil)
				req.Host = "backend"
				resp, err := client.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d %s", resp.StatusCode, resp.Header.Get("X-Meshproxy-Error"))
					}
				}
				if err != nil {
					failed.Add(1)
					errMu.Lock()
					errs = append(errs, err.Error())
					errMu.Unlock()
					continue
				}
				ok.Add(1)
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	// waitRequests waits for n more successful requests, a few seconds at most.
	waitRequests := func(n int64) {
		t.Helper()
		target := ok.Load() + n
		deadline := time.Now().Add(10 * time.Second)
		for ok.Load() < target && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if ok.Load() < target {
			t.Fatalf("load stalled: %d ok, %d failed, want %d ok", ok.Load(), failed.Load(), target)
		}
	}
	waitRequests(200)

	for i := 1; i <= 4; i++ {
		ca := roots[len(roots)-1]
		if i == 3 {
			// Root rotation: the bundle holds both roots during the overlap
			// and new SVIDs come from the new one.
			ca = proxytest.NewPKI(t, "root 2")
			roots = append(roots, ca)
		}
		certA, certB = ca.IssueSVID(t, idFrontend), ca.IssueSVID(t, idBackend)
		if err := B.Apply(mtlsInbound(fmt.Sprintf("b%d", i), inAddr, app.Addr, certB, bundle(), false)); err != nil {
			t.Fatalf("rotation %d: B: %v", i, err)
		}
		if err := A.Apply(mtlsOutbound(fmt.Sprintf("a%d", i), outAddr, relay, certA, bundle(), idBackend)); err != nil {
			t.Fatalf("rotation %d: A: %v", i, err)
		}
		// New handshakes use the new certificate.
		if got, want := serverLeaf(t, inAddr, proxytest.TLSCertificate(t, certA)).SerialNumber, mustLeaf(t, certB).SerialNumber; got.Cmp(want) != 0 {
			t.Errorf("rotation %d: B presents serial %v to a new connection, want the new certificate's %v", i, got, want)
		}
		waitRequests(200)
	}
	close(stop)
	wg.Wait()
	stop = make(chan struct{}) // for the deferred close
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed across 4 certificate rotations, want 0: %q", failed.Load(), failed.Load()+ok.Load(), errs[:min(len(errs), 5)])
	}
	if n := r.accepted.Load(); n != 1 {
		t.Errorf("A opened %d connections to B across the rotations, want 1 (the pooled HTTP/2 connection reused)", n)
	}
	// A new connection from A uses the newest client certificate: its XFCC
	// hash names it. Close the load's keep-alive connections first: net/http's
	// Shutdown waits up to 5 s for a connection that has sent no request yet.
	client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := A.Close(ctx); err != nil {
		t.Fatal(err)
	}
	A = proxytest.StartProxy(t, "A2", mtlsOutbound("a5", outAddr, relay, certA, bundle(), idBackend))
	req, _ := http.NewRequest("GET", "http://"+outAddr+"/", nil)
	req.Host = "backend"
	resp, err := proxytest.Client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, want := resp.Header.Get("X-Got-Xfcc"), leafSHA256(t, certA.CertificateChain); !strings.Contains(got, want) {
		t.Errorf("XFCC after rotation = %q, want the newest client certificate's hash %s", got, want)
	}
}

func mustLeaf(t *testing.T, kp config.CertificateKeyPair) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(kp.CertificateChain)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPermissiveTCPWithHalfClose(t *testing.T) {
	pki := proxytest.NewPKI(t, "mesh root")
	certA, certB := pki.IssueSVID(t, idFrontend), pki.IssueSVID(t, idBackend)
	echo := proxytest.StartTCPEcho(t)
	addr := proxytest.FreeAddr(t)
	proxytest.StartProxy(t, "B", &config.Snapshot{
		Version: "b1",
		Listeners: []*config.Listener{{Name: "inbound", Address: addr, Direction: config.Inbound, TCP: &config.TCPProxy{Cluster: "inbound|9000||"},
			TLS:         &config.DownstreamTLS{Certificates: []config.CertificateKeyPair{certB}, MinVersion: config.TLS13, TrustedCA: pki.CAPEM, RequireClientCertificate: true},
			TLSOptional: true}},
		Clusters: map[string]*config.Cluster{"inbound|9000||": proxytest.Cluster("inbound|9000||", config.ProtocolTCP, echo.Addr)},
	})
	cert := proxytest.TLSCertificate(t, certA)
	for _, useTLS := range []bool{false, true} {
		var c interface {
			Write([]byte) (int, error)
			Read([]byte) (int, error)
			CloseWrite() error
			Close() error
			SetDeadline(time.Time) error
		}
		var err error
		if useTLS {
			c, err = tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}})
		} else {
			var nc *net.TCPConn
			var d net.Conn
			d, err = net.Dial("tcp", addr)
			if err == nil {
				nc = d.(*net.TCPConn)
			}
			c = nc
		}
		if err != nil {
			t.Fatalf("dial (tls %v): %v", useTLS, err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatalf("write (tls %v): %v", useTLS, err)
		}
		c.CloseWrite() // the echo answers after our EOF
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(b) != "echo:hello" {
			t.Errorf("TCP over the PERMISSIVE listener (tls %v): %q, %v; want %q", useTLS, b, err, "echo:hello")
		}
	}
}
