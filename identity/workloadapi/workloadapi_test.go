package workloadapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"

	"github.com/tinymesh/tinymesh/identity/workloadapi/spiretest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNewBadAddress(t *testing.T) {
	for _, addr := range []string{"", "http://127.0.0.1:1", "unix://relative/agent.sock", "tcp://localhost:1"} {
		t.Run(addr, func(t *testing.T) {
			s, err := New(context.Background(), Options{Addr: addr, StartTimeout: time.Second})
			if err == nil {
				s.Close()
				t.Fatalf("New(%q): got no error, want one", addr)
			}
			t.Logf("New(%q): %v", addr, err)
		})
	}
}

// TestNewUnreachable checks that a socket nobody serves fails within the start
// timeout and says why.
func TestNewUnreachable(t *testing.T) {
	addr := "unix://" + filepath.Join(t.TempDir(), "agent.sock")
	start := time.Now()
	s, err := New(context.Background(), Options{Addr: addr, StartTimeout: 2 * time.Second})
	if err == nil {
		s.Close()
		t.Fatal("New: got no error, want one")
	}
	if !errors.Is(err, ErrNoSVID) {
		t.Errorf("New: got %v, want an error wrapping ErrNoSVID", err)
	}
	for _, want := range []string{addr, "no such file or directory"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New: error %q does not mention %q", err, want)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("New took %v with a 2s start timeout", d)
	}
}

// TestNewContextCanceled checks that New gives up when its context ends.
func TestNewContextCanceled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	s, err := New(ctx, Options{Addr: "unix://" + filepath.Join(t.TempDir(), "agent.sock"), StartTimeout: time.Minute})
	if err == nil {
		s.Close()
		t.Fatal("New: got no error, want one")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("New: got %v, want context.DeadlineExceeded", err)
	}
}

// TestSPIRE runs a real SPIRE server and agent. This test process is the
// workload: its entry selects it by uid and by the path of the test binary.
// Before the entry exists the agent refuses it; after, the Source serves the
// SVID and bundle and follows the agent's rotation of a short-lived SVID.
func TestSPIRE(t *testing.T) {
	sp := spiretest.Start(t, spiretest.Options{})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, err = filepath.EvalSymlinks(exe)
	if err != nil {
		t.Fatal(err)
	}
	const id = "spiffe://cluster.local/ns/default/sa/unit-test"

	t.Run("no entry", func(t *testing.T) {
		s, err := New(context.Background(), Options{Addr: sp.AgentAddr(), StartTimeout: 3 * time.Second})
		if err == nil {
			s.Close()
			t.Fatal("New without a registration entry: got no error, want one")
		}
		// The agent answers PermissionDenied "no identity issued".
		if !errors.Is(err, ErrNoSVID) || !strings.Contains(err.Error(), "no identity issued") {
			t.Errorf("New without a registration entry: got %v, want ErrNoSVID with the agent's \"no identity issued\"", err)
		}
		t.Logf("New without a registration entry: %v", err)
	})

	sp.CreateEntry(t, spiretest.Entry{
		SPIFFEID:    id,
		Selectors:   []string{"unix:uid:" + strconv.Itoa(os.Getuid()), "unix:path:" + exe},
		X509SVIDTTL: 30 * time.Second,
	})
	// The agent has the entry after its next sync; New's wait covers that.
	s, err := New(context.Background(), Options{Addr: sp.AgentAddr(), StartTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	if got := s.Names(); len(got) != 2 || got[0] != "default" || got[1] != "ROOTCA" {
		t.Errorf("Names() = %q, want [default ROOTCA]", got)
	}
	if _, ok := s.Secret("other"); ok {
		t.Error(`Secret("other"): got ok, want not found`)
	}
	select {
	case <-s.Changed():
	default:
		t.Error("Changed() has no signal after New, want one for the first secrets")
	}
	first := checkSecrets(t, s, id)

	// Rotation: SPIRE renews the 30s SVID (40s with its 10s backdating) at
	// half its lifetime, about 10s after issue.
	timer := time.NewTimer(45 * time.Second)
	defer timer.Stop()
	for {
		select {
		case <-s.Changed():
		case <-timer.C:
			t.Fatalf("no new SVID within 45s; still serial %s", first.SerialNumber)
		}
		leaf := checkSecrets(t, s, id)
		if leaf.SerialNumber.Cmp(first.SerialNumber) != 0 {
			if !leaf.NotAfter.After(first.NotAfter) {
				t.Errorf("rotated SVID expires %v, not after the first's %v", leaf.NotAfter, first.NotAfter)
			}
			break
		}
	}
}

// checkSecrets checks that the current secrets hold a valid SVID for id with
// its key and a bundle that verifies it, and returns the leaf.
func checkSecrets(t *testing.T, s *Source, id string) *x509.Certificate {
	t.Helper()
	cert, ok := s.Secret("default")
	if !ok || cert.Name != "default" || cert.Certificate == nil {
		t.Fatalf(`Secret("default") = %+v, %v; want a certificate secret`, cert, ok)
	}
	root, ok := s.Secret("ROOTCA")
	if !ok || root.Name != "ROOTCA" || len(root.TrustedCA) == 0 {
		t.Fatalf(`Secret("ROOTCA") = %+v, %v; want a trust bundle`, root, ok)
	}
	if got := s.ID(); got != id {
		t.Errorf("ID() = %s, want %s", got, id)
	}
	svid, err := x509svid.Parse(cert.Certificate.CertificateChain, cert.Certificate.PrivateKey)
	if err != nil {
		t.Fatalf("default secret is not an X.509-SVID with its key: %v", err)
	}
	if svid.ID.String() != id {
		t.Errorf("SVID ID = %s, want %s", svid.ID, id)
	}
	// The PEM pair loads the way the data plane loads it.
	if _, err := tls.X509KeyPair(cert.Certificate.CertificateChain, cert.Certificate.PrivateKey); err != nil {
		t.Errorf("tls.X509KeyPair(default): %v", err)
	}
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	bundle, err := x509bundle.Parse(td, root.TrustedCA)
	if err != nil {
		t.Fatalf("ROOTCA is not a PEM bundle: %v", err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil {
		t.Errorf("SVID does not verify against ROOTCA: %v", err)
	}
	return svid.Certificates[0]
}
