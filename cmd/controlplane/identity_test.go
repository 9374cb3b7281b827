package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tinymesh/tinymesh/identity/ca"
	"github.com/tinymesh/tinymesh/identity/jointoken"
	identityv1 "github.com/tinymesh/tinymesh/proto/identity/v1"
)

func TestTokenCreate(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := command([]string{"token", "create", "--namespace", "default", "--service-account", "backend",
		"--ttl", "10m", "--data-dir", dir}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("token create = %d, stderr %q", code, stderr.String())
	}
	token, rest, _ := strings.Cut(stdout.String(), "\n")
	if token == "" || rest != "" {
		t.Fatalf("stdout = %q, want the token alone on one line", stdout.String())
	}
	store, err := jointoken.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := store.Redeem(token, spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/backend"))
	if err != nil {
		t.Fatalf("Redeem: %v", err)
	}
	if d := time.Until(c.ExpiresAt()); d > 10*time.Minute || d < 9*time.Minute {
		t.Errorf("token expires in %s, want about 10m", d)
	}

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"no verb", []string{"token"}},
		{"no namespace", []string{"token", "create", "--service-account", "x", "--data-dir", dir}},
		{"no service account", []string{"token", "create", "--namespace", "x", "--data-dir", dir}},
		{"bad trust domain", []string{"token", "create", "--namespace", "x", "--service-account", "y", "--trust-domain", "A/B", "--data-dir", dir}},
		{"extra argument", []string{"token", "create", "--namespace", "x", "--service-account", "y", "--data-dir", dir, "z"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if code := command(tc.args, &out, &bytes.Buffer{}); code != 2 || out.Len() != 0 {
				t.Errorf("command(%q) = %d with stdout %q, want 2 and nothing", tc.args, code, out.String())
			}
		})
	}
}

func TestCARotateCommand(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	if code := command([]string{"ca", "rotate", "--data-dir", dir}, &stdout, &stderr); code != 1 {
		t.Errorf("ca rotate without a root = %d, want 1", code)
	}
	authority, err := ca.New(ca.Options{TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"), DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	stderr.Reset()
	if code := command([]string{"ca", "rotate", "--data-dir", dir, "--overlap", "2h"}, &stdout, &stderr); code != 0 {
		t.Fatalf("ca rotate = %d, stderr %q", code, stderr.String())
	}
	if changed, err := authority.Reload(); err != nil || !changed || len(authority.Bundle()) != 2 {
		t.Errorf("after ca rotate: Reload = %v, %v with %d roots; want both roots", changed, err, len(authority.Bundle()))
	}
	if code := command([]string{"ca", "rotate", "--data-dir", dir, "--overlap", "-1h"}, &stdout, &stderr); code != 2 {
		t.Errorf("ca rotate --overlap -1h = %d, want 2", code)
	}
}

// cpProcess is the controlplane command running as a process.
type cpProcess struct {
	addr string
	logs chan string // messages of the JSON log lines
}

func startProcess(t *testing.T, args ...string) *cpProcess {
	t.Helper()
	modelDir := t.TempDir()
	cmd := exec.Command(os.Args[0], append([]string{"--xds-addr", "127.0.0.1:0", "--monitoring-addr", "127.0.0.1:0", "--model-dir", modelDir, "--log-format", "json"}, args...)...)
	cmd.Env = append(os.Environ(), "CONTROLPLANE_TEST_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &cpProcess{logs: make(chan string, 256)}
	exited := make(chan error, 1)
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			if line.Msg == "serving xDS" {
				addrc <- line.Addr
			}
			select {
			case p.logs <- line.Msg:
			default:
			}
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("exit after SIGTERM: %v, want status 0", err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Error("controlplane did not exit within 10s of SIGTERM")
		}
	})
	select {
	case p.addr = <-addrc:
	case err := <-exited:
		t.Fatalf("controlplane exited early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal(`no "serving xDS" log line within 10s`)
	}
	return p
}

func (p *cpProcess) waitLog(t *testing.T, msg string, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case m := <-p.logs:
			if m == msg {
				return
			}
		case <-deadline:
			t.Fatalf("no %q log line within %s", msg, within)
		}
	}
}

func signWithToken(t *testing.T, client identityv1.CertificateServiceClient, id spiffeid.ID, token string) (*identityv1.SignResponse, error) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return client.Sign(ctx, &identityv1.SignRequest{Csr: csr, NodeId: "backend-v1.default~1",
		Credential: &identityv1.SignRequest_JoinToken{JoinToken: token}})
}

// TestProcessIssuesAndRotates runs the server, mints tokens with the
// subcommand while it runs, gets SVIDs over the xDS port, and rotates the root
// under it.
func TestProcessIssuesAndRotates(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	p := startProcess(t, "--data-dir", dataDir, "--trust-domain", "mesh.test", "--svid-ttl", "5m")
	fi, err := os.Stat(filepath.Join(dataDir, "ca", "root.key"))
	if err != nil || fi.Mode() != 0o600 {
		t.Fatalf("root.key: %v, %v; want mode 0600", fi, err)
	}
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := identityv1.NewCertificateServiceClient(conn)
	id := spiffeid.RequireFromString("spiffe://mesh.test/ns/default/sa/backend")
	mint := func() string {
		var stdout, stderr bytes.Buffer
		if code := command([]string{"token", "create", "--namespace", "default", "--service-account", "backend",
			"--trust-domain", "mesh.test", "--data-dir", dataDir}, &stdout, &stderr); code != 0 {
			t.Fatalf("token create = %d: %s", code, stderr.String())
		}
		return strings.TrimSpace(stdout.String())
	}

	token := mint()
	resp, err := signWithToken(t, client, id, token)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	bundle := func(r *identityv1.SignResponse) *x509bundle.Bundle {
		var roots []*x509.Certificate
		for _, der := range r.TrustBundle {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			roots = append(roots, c)
		}
		return x509bundle.FromX509Authorities(id.TrustDomain(), roots)
	}
	got, chains, err := x509svid.ParseAndVerify(resp.CertificateChain, bundle(resp))
	if err != nil || got != id {
		t.Fatalf("issued SVID: %s, %v; want %s", got, err, id)
	}
	if d := chains[0][0].NotAfter.Sub(chains[0][0].NotBefore); d > 7*time.Minute || d < 5*time.Minute {
		t.Errorf("SVID lifetime %s, want --svid-ttl 5m (plus the clock-skew allowance)", d)
	}
	if _, err := signWithToken(t, client, id, token); status.Code(err) != codes.Unauthenticated {
		t.Errorf("replayed token: %v, want Unauthenticated", err)
	}

	var stdout, stderr bytes.Buffer
	if code := command([]string{"ca", "rotate", "--data-dir", dataDir, "--overlap", "1h"}, &stdout, &stderr); code != 0 {
		t.Fatalf("ca rotate = %d: %s", code, stderr.String())
	}
	p.waitLog(t, "trust bundle changed", 15*time.Second)
	resp2, err := signWithToken(t, client, id, mint())
	if err != nil {
		t.Fatalf("Sign after rotation: %v", err)
	}
	if n := len(resp2.TrustBundle); n != 2 {
		t.Fatalf("trust bundle after rotation has %d roots, want 2", n)
	}
	newRoot, err := x509.ParseCertificate(resp2.TrustBundle[0])
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(resp2.CertificateChain[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.CheckSignatureFrom(newRoot); err != nil {
		t.Errorf("SVID after rotation is not signed by the new root: %v", err)
	}
	// The SVID from before still verifies during the overlap.
	if _, _, err := x509svid.ParseAndVerify(resp.CertificateChain, bundle(resp2)); err != nil {
		t.Errorf("old SVID against the overlap bundle: %v", err)
	}
}
