package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/tinymesh/tinymesh/identity/ca"
	"github.com/tinymesh/tinymesh/identity/jointoken"
	identityv1 "github.com/tinymesh/tinymesh/proto/identity/v1"
)

func TestJoinTokenFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("tmjt1.abc.def\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		o       options
		want    string
		wantErr string
	}{
		{"none", options{}, "", ""},
		{"flag", options{joinToken: "tmjt1.x.y"}, "tmjt1.x.y", ""},
		{"file, trimmed", options{joinTokenFile: file}, "tmjt1.abc.def", ""},
		{"both", options{joinToken: "a", joinTokenFile: file}, "", "give one"},
		{"missing file", options{joinTokenFile: file + ".missing"}, "", "--join-token-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := joinToken(tc.o)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("joinToken = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestWorkloadSPIFFEID(t *testing.T) {
	id, err := workloadSPIFFEID(options{trustDomain: "cluster.local", namespace: "shop", workload: "backend-v2"})
	if err != nil || id.String() != "spiffe://cluster.local/ns/shop/sa/backend-v2" {
		t.Errorf("default service account: %s, %v", id, err)
	}
	id, err = workloadSPIFFEID(options{trustDomain: "example.org", namespace: "shop", workload: "backend-v2", serviceAccount: "api"})
	if err != nil || id.String() != "spiffe://example.org/ns/shop/sa/api" {
		t.Errorf("explicit service account: %s, %v", id, err)
	}
	if _, err := workloadSPIFFEID(options{trustDomain: "Bad/TD", namespace: "a", workload: "b"}); err == nil {
		t.Error("a bad trust domain was accepted")
	}
}

// caServer is the control plane's CertificateService on loopback.
type caServer struct {
	addr   string
	dir    string
	issued chan []byte // chains handed to OnIssued (PEM)
}

func startCAServer(t *testing.T) *caServer {
	t.Helper()
	s := &caServer{dir: t.TempDir(), issued: make(chan []byte, 8)}
	authority, err := ca.New(ca.Options{TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"), DataDir: s.dir})
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := jointoken.Open(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := ca.NewService(ca.ServiceOptions{CA: authority,
		Authenticators: []ca.Authenticator{ca.JoinTokens{Store: tokens}, ca.SVIDs{Bundle: authority}},
		OnIssued:       func(_ string, chain []byte) { s.issued <- chain },
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	identityv1.RegisterCertificateServiceServer(srv, svc)
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-served })
	s.addr = lis.Addr().String()
	return s
}

func (s *caServer) token(t *testing.T, id string) string {
	t.Helper()
	tok, err := jointoken.Mint(s.dir, spiffeid.RequireFromString(id), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (s *caServer) waitIssued(t *testing.T) *x509.Certificate {
	t.Helper()
	select {
	case chain := <-s.issued:
		block, _ := pem.Decode(chain)
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return leaf
	case <-time.After(10 * time.Second):
		t.Fatal("no SVID issued within 10s")
		return nil
	}
}

func TestStartIdentity(t *testing.T) {
	srv := startCAServer(t)
	o := options{xdsAddr: srv.addr, namespace: "default", workload: "backend", trustDomain: "cluster.local",
		identitySource: identityControlPlane, joinToken: srv.token(t, "spiffe://cluster.local/ns/default/sa/backend")}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	ident, err := startIdentity(ctx, o, "backend.default~1", logger)
	if err != nil {
		t.Fatalf("startIdentity: %v", err)
	}
	defer ident.close()
	first := srv.waitIssued(t)
	if _, ok := ident.keys().PrivateKeyPEM(first.PublicKey); !ok {
		t.Error("the KeyStore given to the xDS client has no key for the issued SVID")
	}
	// The first ADS stream renews nothing; a reconnect renews.
	connect := ident.onConnect()
	connect()
	connect()
	second := srv.waitIssued(t)
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("the reconnect did not get a new SVID")
	}
	if _, ok := ident.keys().PrivateKeyPEM(second.PublicKey); !ok {
		t.Error("no key for the renewed SVID")
	}
	select {
	case chain := <-srv.issued:
		t.Errorf("more SVIDs than reconnects: %d bytes", len(chain))
	case <-time.After(200 * time.Millisecond):
	}

	// The same token again is refused, and the error says for which ID.
	_, err = startIdentity(ctx, o, "backend.default~2", logger)
	if err == nil || !strings.Contains(err.Error(), "join token refused for spiffe://cluster.local/ns/default/sa/backend: ") ||
		!strings.Contains(err.Error(), "already used") {
		t.Errorf("replayed token: %v, want a refusal naming the ID and the reason", err)
	}
}

func TestStartIdentityWithoutToken(t *testing.T) {
	ident, err := startIdentity(context.Background(), options{}, "n~1", slog.Default())
	if err != nil || ident != nil {
		t.Fatalf("startIdentity without a token = %v, %v; want nil, nil", ident, err)
	}
	// A nil identity gives the xDS client nothing.
	if ident.keys() != nil || ident.onConnect() != nil || ident.renewalFailed() != nil {
		t.Error("a proxy without identity passes keys or hooks to the xDS client")
	}
	ident.close()
	_, err = startIdentity(context.Background(), options{joinToken: "t", identitySource: "workload-api:unix:///x.sock"}, "n~1", slog.Default())
	if err == nil {
		t.Error("a join token with a Workload API identity source was accepted")
	}
}
