package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

const trustDomain = "cluster.local"

func spiffeID(sa string) string { return "spiffe://" + trustDomain + "/ns/default/sa/" + sa }

// mtlsMesh is Service backend (one workload, service account backend) and a
// client sidecar, service account frontend, all with identities from the
// control plane's CA.
type mtlsMesh struct {
	cp      *controlPlane
	backend *proxy
	client  *proxy
}

func startMTLSMesh(t *testing.T, model map[string]string, cpFlags ...string) *mtlsMesh {
	t.Helper()
	if model == nil {
		model = map[string]string{}
	}
	model["services.yaml"] = serviceYAML("backend", "app=backend", 8080, "http")
	m := &mtlsMesh{}
	m.cp = startControlPlane(t, controlPlaneOptions{model: model, extra: cpFlags})
	ip := newIP(t)
	app := startHTTPBackend(t, ip, backendID{service: "backend", version: "v1", instance: "backend-1"}, false)
	m.backend = startProxy(t, m.cp, proxyOptions{workload: "backend", labels: "app=backend", app: app.addr, ip: ip})
	m.client = startProxy(t, m.cp, proxyOptions{workload: "frontend", labels: "app=frontend", outbound: true})
	dumpOnFailure(t, m.client, m.backend)
	probe(t, m.client.outbound, "backend", 20*time.Second, "v1")
	return m
}

// get sends GET / with Host backend through the client sidecar.
func (m *mtlsMesh) get(t *testing.T) reply {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "http://"+m.client.outbound+"/", nil)
	req.Host = "backend"
	rep, err := doReply(c, req)
	if err != nil {
		t.Fatalf("GET backend through the client sidecar: %v", err)
	}
	return rep
}

// checkXFCC checks that the backend saw the caller's and its own SPIFFE IDs
// in x-forwarded-client-cert, as the handshake proved them.
func checkXFCC(t *testing.T, xfcc, caller, self string) {
	t.Helper()
	for _, want := range []string{"By=" + spiffeID(self), "URI=" + spiffeID(caller), "Hash="} {
		if !strings.Contains(xfcc, want) {
			t.Errorf("x-forwarded-client-cert = %q, want it to contain %q", xfcc, want)
		}
	}
}

// plainGet sends a plaintext HTTP/1.1 request straight to addr.
func plainGet(addr string) (*http.Response, error) {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	req.Host = "backend"
	resp, err := c.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	return resp, err
}

// TestMTLSStrict: by default (STRICT) sidecars talk mTLS, the app learns the
// caller's SPIFFE ID from x-forwarded-client-cert (a forged one is replaced),
// and a plaintext client is refused at the inbound listener.
func TestMTLSStrict(t *testing.T) {
	m := startMTLSMesh(t, nil)
	c := &http.Client{Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "http://"+m.client.outbound+"/", nil)
	req.Host = "backend"
	req.Header.Set("x-forwarded-client-cert", "By=spiffe://evil/x;URI=spiffe://cluster.local/ns/default/sa/admin")
	rep, err := doReply(c, req)
	if err != nil {
		t.Fatal(err)
	}
	checkXFCC(t, rep.XFCC, "frontend", "backend")
	if strings.Contains(rep.XFCC, "evil") || strings.Contains(rep.XFCC, "sa/admin") {
		t.Errorf("x-forwarded-client-cert = %q: the caller's forged value reached the app", rep.XFCC)
	}

	from := m.backend.proc.lineCount()
	if resp, err := plainGet(m.backend.inbound); err == nil && resp.StatusCode/100 == 2 {
		t.Fatalf("plaintext GET to the STRICT inbound listener %s: %s, want it refused", m.backend.inbound, resp.Status)
	}
	m.backend.proc.waitLog(t, from, 10*time.Second, "a log line about the refused plaintext handshake", func(line string) bool {
		return strings.Contains(strings.ToLower(line), "handshake")
	})
}

// TestMTLSPermissive: a PERMISSIVE workload takes mTLS and plaintext on one
// port; only mTLS callers get an x-forwarded-client-cert.
func TestMTLSPermissive(t *testing.T) {
	m := startMTLSMesh(t, map[string]string{"peer.yaml": `apiVersion: mesh.tinymesh.io/v1alpha1
kind: PeerAuthentication
metadata:
  name: backend-migration
  namespace: default
spec:
  selector:
    matchLabels:
      app: backend
  mtls:
    mode: PERMISSIVE
`})
	checkXFCC(t, m.get(t).XFCC, "frontend", "backend")
	resp, err := plainGet(m.backend.inbound)
	if err != nil {
		t.Fatalf("plaintext GET to the PERMISSIVE inbound listener: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("plaintext GET to the PERMISSIVE inbound listener: %s, want 200", resp.Status)
	}
}

// TestMTLSRejectsBadClientCertificates connects straight to a STRICT inbound
// listener with certificates the mesh must not accept. Each is refused in the
// handshake and the sidecar logs why.
func TestMTLSRejectsBadClientCertificates(t *testing.T) {
	m := startMTLSMesh(t, nil)
	root, rootKey := loadCARoot(t, m.cp.dataDir)
	bundle := x509.NewCertPool()
	bundle.AddCert(root)
	otherRoot, otherKey := newTestCA(t, "spiffe://other.example")

	cases := []struct {
		name      string
		cert      tls.Certificate
		logReason string // lower-case substring of the sidecar's log line
	}{
		{"another trust domain", leafCert(t, otherRoot, otherKey, "spiffe://other.example/ns/default/sa/frontend", time.Hour), "unknown authority"},
		{"expired", leafCert(t, root, rootKey, spiffeID("frontend"), -time.Minute), "expired"},
		{"no SPIFFE ID", leafCert(t, root, rootKey, "", time.Hour), "spiffe"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			from := m.backend.proc.lineCount()
			cert := tc.cert
			conf := &tls.Config{
				// Present the certificate even when the server's list of
				// acceptable CAs does not name its issuer, as an attacker would.
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
				RootCAs:              bundle,
				NextProtos:           []string{"h2"},
				MinVersion:           tls.VersionTLS13,
				// The server's SPIFFE ID is checked by TestMTLSStrict's
				// sidecars; here only the client side is under test.
				InsecureSkipVerify: true,
			}
			tr := &http2.Transport{TLSClientConfig: conf}
			defer tr.CloseIdleConnections()
			c := &http.Client{Timeout: 5 * time.Second, Transport: tr}
			resp, err := c.Get("https://" + m.backend.inbound + "/")
			if err == nil {
				resp.Body.Close()
				t.Fatalf("GET with a client certificate (%s): %s, want the handshake refused", tc.name, resp.Status)
			}
			m.backend.proc.waitLog(t, from, 10*time.Second, "a handshake failure naming "+tc.logReason, func(line string) bool {
				l := strings.ToLower(line)
				return strings.Contains(l, "handshake") && strings.Contains(l, tc.logReason)
			})
		})
	}
}

// TestSVIDRotationUnderLoad runs load through two sidecars whose SVIDs live one
// minute (renewed every 30 s) for long enough that both rotate twice: no
// request may fail. Established connections keep the certificate they were
// made with (rotation must not touch them), so the rotations are seen in the
// sidecars' logs: every SVID they were issued, by serial.
func TestSVIDRotationUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("rotation needs more than a minute; -short skips it")
	}
	m := startMTLSMesh(t, nil, "--svid-ttl", "1m")
	l := startLoad(t, loadOptions{target: m.client.outbound, host: "backend", workers: 4})
	s := l.during(t, 70*time.Second)
	final := l.stop()
	checkNoFailures(t, "SVID rotations", final)
	checkEnough(t, "during the rotations", s, 1000)
	for xfcc := range final.Callers {
		checkXFCC(t, xfcc, "frontend", "backend")
	}
	for _, p := range []*proxy{m.client, m.backend} {
		serials := map[string]bool{}
		for _, line := range strings.Split(p.proc.output(math.MaxInt), "\n") {
			var e struct{ Msg, Serial string }
			if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "SVID issued" {
				serials[e.Serial] = true
			}
		}
		// The first SVID, then one renewal at 30 s and one at 60 s.
		if len(serials) < 3 {
			t.Errorf("meshproxy %s was issued %d SVIDs in 70 s, want at least 3 (two rotations)", p.workload, len(serials))
		}
	}
}

// TestJoinTokens: a token obtains only the identity it was minted for, once,
// before it expires; the CA key is private to its owner.
func TestJoinTokens(t *testing.T) {
	cp := startControlPlane(t, controlPlaneOptions{model: map[string]string{
		"services.yaml": serviceYAML("backend", "app=backend", 8080, "http"),
	}})
	refused := func(t *testing.T, name string, args ...string) {
		t.Helper()
		argv := append([]string{"--xds", cp.addr, "--workload", name, "--admin", freeAddr(t, "127.0.0.1"), "--log-format", "json"}, args...)
		p := startProcess(t, "meshproxy "+name, meshproxyBin, argv...)
		deadline := time.Now().Add(20 * time.Second)
		for !p.exited() {
			if time.Now().After(deadline) {
				t.Fatalf("meshproxy %s with a bad join token still runs after 20 s; output:\n%s", name, p.output(20))
			}
			time.Sleep(50 * time.Millisecond)
		}
		if p.err == nil {
			t.Fatalf("meshproxy %s exited with status 0, want a failure; output:\n%s", name, p.output(20))
		}
		if out := strings.ToLower(p.output(20)); !strings.Contains(out, "join token") {
			t.Errorf("meshproxy %s output does not explain the refused join token:\n%s", name, out)
		}
	}

	t.Run("replay", func(t *testing.T) {
		token := cp.joinToken("default", "web")
		startProxy(t, cp, proxyOptions{workload: "web", outbound: true, noIdentity: true, extra: []string{"--join-token", token}})
		refused(t, "web", "--join-token", token)
	})
	t.Run("other identity", func(t *testing.T) {
		refused(t, "admin", "--join-token", cp.joinToken("default", "web"))
	})
	t.Run("expired", func(t *testing.T) {
		out, err := execOutput(controlplaneBin, "token", "create", "--data-dir", cp.dataDir,
			"--namespace", "default", "--service-account", "late", "--ttl", "1s")
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second) // let the token expire
		refused(t, "late", "--join-token", strings.TrimSpace(out))
	})
	t.Run("CA key is private", func(t *testing.T) {
		st, err := os.Stat(filepath.Join(cp.dataDir, "ca", "root.key"))
		if err != nil {
			t.Fatal(err)
		}
		if mode := st.Mode().Perm(); mode != 0o600 {
			t.Errorf("ca/root.key mode = %v, want 0600", mode)
		}
	})
}

// loadCARoot reads the control plane's CA root from its data directory, as
// only an attacker holding the key could, to mint certificates the CA never
// would issue.
func loadCARoot(t *testing.T, dataDir string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	certPEM, err := os.ReadFile(filepath.Join(dataDir, "ca", "root.crt"))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dataDir, "ca", "root.key"))
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		t.Fatal("ca/root.crt or ca/root.key is not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		if k, err = x509.ParseECPrivateKey(kb.Bytes); err != nil {
			t.Fatalf("ca/root.key: %v", err)
		}
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("ca/root.key is a %T, want ECDSA", k)
	}
	return cert, key
}

func newTestCA(t *testing.T, uri string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(uri)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"e2e other CA"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// leafCert signs a client certificate with uri as its URI SAN (none when
// empty) that expires validFor from now (in the past when negative).
func leafCert(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, uri string, validFor time.Duration) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "e2e client"},
		NotBefore:    time.Now().Add(-2 * time.Hour),
		NotAfter:     time.Now().Add(validFor),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	if uri != "" {
		u, _ := url.Parse(uri)
		tmpl.URIs = []*url.URL{u}
	} else {
		tmpl.DNSNames = []string{"frontend.default.svc"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// execOutput runs a command and returns its stdout, with stderr in the error.
func execOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// TestMTLSRejectsServerWithWrongIdentity: the backend's sidecar dies and, within
// the control plane's endpoint grace, another workload (service account
// impostor) takes over its address. The client still has the old endpoint and
// must refuse to talk to whoever answers there, because the server does not
// prove the SPIFFE ID the control plane expects for Service backend.
func TestMTLSRejectsServerWithWrongIdentity(t *testing.T) {
	m := startMTLSMesh(t, nil, "--endpoint-grace", "60s")
	addr := m.backend.inbound
	m.backend.proc.kill()
	app := startHTTPBackend(t, m.backend.ip, backendID{service: "impostor", version: "evil", instance: "impostor-1"}, false)
	startProxy(t, m.cp, proxyOptions{workload: "impostor", labels: "app=impostor", app: app.addr, ip: m.backend.ip, inboundAddr: addr})

	from := m.client.proc.lineCount()
	c := &http.Client{Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "http://"+m.client.outbound+"/", nil)
	req.Host = "backend"
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("GET backend answered by an impostor: %s, want 503", resp.Status)
	}
	m.client.proc.waitLog(t, from, 10*time.Second, "a handshake failure naming the impostor's SPIFFE ID", func(line string) bool {
		return strings.Contains(strings.ToLower(line), "handshake") && strings.Contains(line, spiffeID("impostor"))
	})
}
