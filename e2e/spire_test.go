package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/tinymesh/tinymesh/identity/workloadapi/spiretest"
)

// spireTrustDomain is the SPIRE server's trust domain: the control plane's
// default, so its SAN matchers name the IDs SPIRE issues.
const spireTrustDomain = "cluster.local"

// spireWorkloadID is the SPIFFE ID of service account sa in namespace default
// (identity.WorkloadID's form).
func spireWorkloadID(sa string) string {
	return "spiffe://" + spireTrustDomain + "/ns/default/sa/" + sa
}

// TestSPIREIdentity runs the mesh with identities from a real SPIRE server and
// agent instead of the control plane's CA (docs/identity.md, Delivery): both
// sidecars take their SVIDs and bundle from the agent's Workload API, and a
// request from the client app reaches the backend app over mTLS with the
// caller's SPIFFE ID in x-forwarded-client-cert. The SVIDs live 30s, so the
// agent rotates them during the test and traffic must keep flowing.
//
// The agent's unix attestor tells the two sidecars apart by binary path: each
// runs its own copy of meshproxy, and each copy's registration entry selects
// the test's uid and that path.
//
// Without the SPIRE binaries (.ci/install-spire.sh) the test skips, unless
// TINYMESH_REQUIRE_SPIRE is set (CI), when it fails.
func TestSPIREIdentity(t *testing.T) {
	sp := spiretest.Start(t, spiretest.Options{TrustDomain: spireTrustDomain})
	const svidTTL = 30 * time.Second
	bins := map[string]string{}
	for _, sa := range []string{"frontend", "backend"} {
		bins[sa] = copyBinary(t, meshproxyBin, filepath.Join(t.TempDir(), sa))
		sp.CreateEntry(t, spiretest.Entry{
			SPIFFEID:    spireWorkloadID(sa),
			Selectors:   []string{"unix:uid:" + strconv.Itoa(os.Getuid()), "unix:path:" + bins[sa]},
			X509SVIDTTL: svidTTL,
		})
	}

	cp := startControlPlane(t, controlPlaneOptions{model: map[string]string{
		"services.yaml": serviceYAML("backend", "app=backend", 8080, "http"),
	}})
	ip := newIP(t)
	app := startHTTPBackend(t, ip, backendID{service: "backend", version: "v1", instance: "backend-1"}, false)
	// Each proxy waits for its SVID before it connects to the control plane,
	// which covers the agent's sync of the entries just created.
	backend := startSPIREProxy(t, cp, sp, bins["backend"], proxyOptions{workload: "backend", labels: "app=backend", app: app.addr, ip: ip})
	client := startSPIREProxy(t, cp, sp, bins["frontend"], proxyOptions{workload: "frontend", labels: "app=frontend", outbound: true})
	dumpOnFailure(t, client, backend)
	// Mark the logs now: rotations must come after this.
	marks := map[*proxy]int{client: client.proc.lineCount(), backend: backend.proc.lineCount()}
	bundle, err := x509bundle.Parse(spiffeid.RequireTrustDomainFromString(spireTrustDomain), sp.Bundle(t))
	if err != nil {
		t.Fatalf("SPIRE bundle: %v", err)
	}

	probe(t, client.outbound, "backend", 20*time.Second, "v1")
	checkSPIREXFCC(t, getBackend(t, client).XFCC)
	// The backend's sidecar presents the SVID SPIRE issued it (not one from the
	// control plane's CA).
	first := presentedSVID(t, backend.inbound, bundle)
	if got, want := first.URIs[0].String(), spireWorkloadID("backend"); got != want {
		t.Errorf("backend's sidecar presents %s, want %s", got, want)
	}

	// STRICT (the default mode): the backend's sidecar refuses plaintext.
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + backend.inbound + "/"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Errorf("plaintext GET to the backend's inbound listener: got %s %.200q, want the connection refused by TLS", resp.Status, body)
	}

	// Rotation: the agent renews each SVID at half its lifetime (about 10s
	// after issue with SPIRE's 10s backdating); both sidecars log the new one,
	// new handshakes get it, and traffic keeps flowing.
	for p, mark := range marks {
		p.proc.waitLog(t, mark, 2*svidTTL, "a rotated SVID", func(line string) bool {
			return strings.Contains(line, "X.509-SVID updated")
		})
	}
	retry(t, 10*time.Second, "the backend's sidecar presenting its rotated SVID", func() error {
		leaf := presentedSVID(t, backend.inbound, bundle)
		if leaf.SerialNumber.Cmp(first.SerialNumber) == 0 {
			return fmt.Errorf("still serial %x, expiring %v", leaf.SerialNumber, leaf.NotAfter)
		}
		if !leaf.NotAfter.After(first.NotAfter) {
			return fmt.Errorf("new serial %x expires %v, not after the first SVID's %v", leaf.SerialNumber, leaf.NotAfter, first.NotAfter)
		}
		return nil
	})
	retry(t, 10*time.Second, "GET backend after the SVIDs rotated", func() error {
		_, err := getBackendErr(client)
		return err
	})
	checkSPIREXFCC(t, getBackend(t, client).XFCC)
}

// presentedSVID does a TLS handshake with addr, offering no client certificate,
// and returns the leaf the server presented once it verified as an X.509-SVID
// against bundle. (TLS 1.3 sends the server's certificate before the server
// asks for the client's, so the inbound listener's refusal comes too late to
// hide it.)
func presentedSVID(t *testing.T, addr string, bundle *x509bundle.Bundle) *x509.Certificate {
	t.Helper()
	var chain []*x509.Certificate
	conf := &tls.Config{
		// Verified below as SPIFFE requires (URI SAN, SPIRE's roots), which
		// crypto/tls's host name check cannot do.
		InsecureSkipVerify: true,
		NextProtos:         []string{"h2"},
		VerifyConnection: func(cs tls.ConnectionState) error {
			chain = cs.PeerCertificates
			return nil
		},
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, conf)
	if conn != nil {
		conn.Close()
	}
	if len(chain) == 0 {
		t.Fatalf("TLS handshake with %s: no server certificate (%v)", addr, err)
	}
	if _, _, err := x509svid.Verify(chain, bundle); err != nil {
		t.Fatalf("certificate presented at %s (subject %q, issuer %q) is not an SVID of SPIRE's: %v", addr, chain[0].Subject, chain[0].Issuer, err)
	}
	return chain[0]
}

// checkSPIREXFCC checks that the backend app saw the frontend's SPIFFE ID, as
// the SPIRE-issued client certificate proved it, and its own.
func checkSPIREXFCC(t *testing.T, xfcc string) {
	t.Helper()
	t.Logf("the backend app saw x-forwarded-client-cert: %s", xfcc)
	for _, want := range []string{"By=" + spireWorkloadID("backend"), "URI=" + spireWorkloadID("frontend"), "Hash="} {
		if !strings.Contains(xfcc, want) {
			t.Errorf("x-forwarded-client-cert = %q, want it to contain %q", xfcc, want)
		}
	}
}

// getBackend sends GET / with Host backend through p's outbound listener.
func getBackend(t *testing.T, p *proxy) reply {
	t.Helper()
	rep, err := getBackendErr(p)
	if err != nil {
		t.Fatalf("GET backend through %s's sidecar: %v", p.workload, err)
	}
	return rep
}

func getBackendErr(p *proxy) (reply, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "http://"+p.outbound+"/", nil)
	req.Host = "backend"
	return doReply(c, req)
}

// startSPIREProxy starts bin (a copy of meshproxy) with its identity from sp's
// Workload API and no join token, and waits until it is ready. Only o's
// workload, labels, app, outbound and ip are used.
func startSPIREProxy(t *testing.T, cp *controlPlane, sp *spiretest.SPIRE, bin string, o proxyOptions) *proxy {
	t.Helper()
	p := &proxy{workload: o.workload, ip: o.ip}
	if p.ip == "" {
		p.ip = newIP(t)
	}
	p.admin = freeAddr(t, p.ip)
	args := []string{"--xds", cp.addr, "--workload", o.workload, "--labels", o.labels, "--admin", p.admin,
		"--log-format", "json", "--identity-source", "workload-api:" + sp.AgentAddr()}
	if *xdsModeFlag != "" {
		args = append(args, "--xds-mode", *xdsModeFlag)
	}
	if o.app != "" {
		p.inbound = freeAddr(t, p.ip)
		args = append(args, "--inbound", p.inbound, "--app", o.app)
	}
	if o.outbound {
		p.outbound = freeAddr(t, p.ip)
		args = append(args, "--outbound", p.outbound)
	}
	p.proc = startProcess(t, "meshproxy "+o.workload, bin, args...)
	p.waitReady(t, 45*time.Second)
	return p
}

// copyBinary copies the executable src to dir/<its name> and returns the new
// path with symlinks resolved, as SPIRE's unix attestor reports it.
func copyBinary(t *testing.T, src, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, filepath.Base(src))
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	dst, err = filepath.EvalSymlinks(dst)
	if err != nil {
		t.Fatal(err)
	}
	return dst
}
