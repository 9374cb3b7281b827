package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tinymesh/tinymesh/identity"
	"github.com/tinymesh/tinymesh/identity/jointoken"
	identityv1 "github.com/tinymesh/tinymesh/proto/identity/v1"
)

const testNode = "backend-v1.default~abc123"

type issued struct {
	node     string
	chainPEM []byte
}

// harness is a CertificateService on a loopback gRPC server.
type harness struct {
	dir    string
	ca     *CA
	tokens *jointoken.Store
	client identityv1.CertificateServiceClient

	mu      sync.Mutex
	issued  []issued
	results []string // "credential code" per Sign, from OnResult
}

func newHarness(t *testing.T) *harness { return newHarnessIn(t, t.TempDir()) }

// newHarnessIn serves the CA of dataDir, creating it if need be.
func newHarnessIn(t *testing.T, dataDir string) *harness {
	t.Helper()
	h := &harness{dir: dataDir}
	h.ca = newCA(t, Options{DataDir: h.dir})
	var err error
	if h.tokens, err = jointoken.Open(h.dir); err != nil {
		t.Fatal(err)
	}
	svc, err := NewService(ServiceOptions{
		CA:             h.ca,
		Authenticators: []Authenticator{JoinTokens{Store: h.tokens}, SVIDs{Bundle: h.ca}},
		OnIssued: func(node string, chainPEM []byte) {
			h.mu.Lock()
			h.issued = append(h.issued, issued{node, chainPEM})
			h.mu.Unlock()
		},
		OnResult: func(credential string, code codes.Code) {
			h.mu.Lock()
			h.results = append(h.results, credential+" "+code.String())
			h.mu.Unlock()
		},
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
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
		<-served
	})
	h.client = identityv1.NewCertificateServiceClient(conn)
	return h
}

func (h *harness) token(t *testing.T, id spiffeid.ID) string {
	t.Helper()
	tok, err := h.tokens.Mint(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func csrFor(t *testing.T, key any, uris ...string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func (h *harness) sign(t *testing.T, req *identityv1.SignRequest) (*identityv1.SignResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return h.client.Sign(ctx, req)
}

// joinTokenSVID gets an SVID for id with a fresh join token.
func (h *harness) joinTokenSVID(t *testing.T, id spiffeid.ID) (*ecdsa.PrivateKey, *identityv1.SignResponse) {
	t.Helper()
	key := newKey(t)
	resp, err := h.sign(t, &identityv1.SignRequest{
		Csr: csrFor(t, key, id.String()), NodeId: testNode,
		Credential: &identityv1.SignRequest_JoinToken{JoinToken: h.token(t, id)},
	})
	if err != nil {
		t.Fatalf("Sign with a join token: %v", err)
	}
	return key, resp
}

func renewal(t *testing.T, csr []byte, chain [][]byte, signer *ecdsa.PrivateKey) *identityv1.SignRequest {
	t.Helper()
	sig, err := ecdsa.SignASN1(rand.Reader, signer, identity.RenewalDigest(csr))
	if err != nil {
		t.Fatal(err)
	}
	return &identityv1.SignRequest{Csr: csr, NodeId: testNode,
		Credential: &identityv1.SignRequest_Svid{Svid: &identityv1.SVIDProof{CertificateChain: chain, Signature: sig}}}
}

func TestServiceIssuesWithJoinToken(t *testing.T) {
	h := newHarness(t)
	_, resp := h.joinTokenSVID(t, testID)
	id, chains, err := x509svid.ParseAndVerify(resp.CertificateChain, h.ca)
	if err != nil || id != testID {
		t.Fatalf("issued chain: ID %s, %v; want %s verifying against the bundle", id, err, testID)
	}
	if got, want := resp.ExpiresAt.AsTime(), chains[0][0].NotAfter; !got.Equal(want) {
		t.Errorf("expires_at = %s, want the leaf's NotAfter %s", got, want)
	}
	if len(resp.TrustBundle) != 1 || string(resp.TrustBundle[0]) != string(h.ca.Bundle()[0].Raw) {
		t.Errorf("trust_bundle has %d roots, want the CA's root", len(resp.TrustBundle))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.issued) != 1 || h.issued[0].node != testNode {
		t.Fatalf("OnIssued calls = %+v, want one for %s", h.issued, testNode)
	}
	if want := []string{"join_token OK"}; !slices.Equal(h.results, want) {
		t.Errorf("OnResult calls = %q, want %q", h.results, want)
	}
	certs, err := parseCertificatesPEM(h.issued[0].chainPEM)
	if err != nil || len(certs) != 1 || string(certs[0].Raw) != string(resp.CertificateChain[0]) {
		t.Errorf("OnIssued chain: %d certificates, %v; want the issued leaf", len(certs), err)
	}
}

func TestServiceRefusals(t *testing.T) {
	h := newHarness(t)
	key := newKey(t)
	frontend := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/frontend")
	otherNS := spiffeid.RequireFromString("spiffe://cluster.local/ns/ops/sa/backend")
	used := h.token(t, testID)
	if _, err := h.sign(t, &identityv1.SignRequest{Csr: csrFor(t, key, testID.String()), NodeId: testNode,
		Credential: &identityv1.SignRequest_JoinToken{JoinToken: used}}); err != nil {
		t.Fatal(err)
	}
	good := csrFor(t, key, testID.String())
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tok := func(tok string) *identityv1.SignRequest_JoinToken {
		return &identityv1.SignRequest_JoinToken{JoinToken: tok}
	}
	// One character in the middle of the MAC changed.
	tampered := []byte(h.token(t, testID))
	i := len(tampered) - 10
	tampered[i] = map[bool]byte{true: 'A', false: 'B'}[tampered[i] != 'A']

	// An SVID of another CA, and a proof signed with the wrong key.
	stranger := newHarness(t)
	strangerKey, strangerResp := stranger.joinTokenSVID(t, testID)
	ownKey, ownResp := h.joinTokenSVID(t, testID)
	frontKey, frontResp := h.joinTokenSVID(t, frontend)

	for _, tc := range []struct {
		name    string
		req     *identityv1.SignRequest
		code    codes.Code
		message string
	}{
		{"replayed token", &identityv1.SignRequest{Csr: good, NodeId: testNode, Credential: tok(used)}, codes.Unauthenticated, "already used"},
		{"token of another identity", &identityv1.SignRequest{Csr: good, NodeId: testNode, Credential: tok(h.token(t, frontend))}, codes.PermissionDenied, "another SPIFFE ID"},
		{"tampered token", &identityv1.SignRequest{Csr: good, NodeId: testNode, Credential: tok(string(tampered))}, codes.Unauthenticated, "signature"},
		{"no credential", &identityv1.SignRequest{Csr: good, NodeId: testNode}, codes.Unauthenticated, "no credential"},
		{"no node id", &identityv1.SignRequest{Csr: good, Credential: tok(h.token(t, testID))}, codes.InvalidArgument, "node_id"},
		{"garbage csr", &identityv1.SignRequest{Csr: []byte("nope"), NodeId: testNode, Credential: tok(h.token(t, testID))}, codes.InvalidArgument, "csr"},
		{"two URI SANs", &identityv1.SignRequest{Csr: csrFor(t, key, testID.String(), frontend.String()), NodeId: testNode, Credential: tok(h.token(t, testID))}, codes.InvalidArgument, "exactly one URI SAN"},
		{"no URI SAN", &identityv1.SignRequest{Csr: csrFor(t, key), NodeId: testNode, Credential: tok(h.token(t, testID))}, codes.InvalidArgument, "exactly one URI SAN"},
		{"not SPIFFE", &identityv1.SignRequest{Csr: csrFor(t, key, "https://cluster.local/x"), NodeId: testNode, Credential: tok(h.token(t, testID))}, codes.InvalidArgument, "URI SAN"},
		{"other trust domain", &identityv1.SignRequest{Csr: csrFor(t, key, "spiffe://example.org/ns/default/sa/backend"), NodeId: testNode, Credential: tok(h.token(t, testID))}, codes.InvalidArgument, "trust domain"},
		{"RSA key", &identityv1.SignRequest{Csr: csrFor(t, rsaKey, testID.String()), NodeId: testNode, Credential: tok(h.token(t, testID))}, codes.InvalidArgument, "ECDSA P-256"},
		{"node in another namespace", &identityv1.SignRequest{Csr: csrFor(t, key, otherNS.String()), NodeId: testNode, Credential: tok(h.token(t, otherNS))}, codes.PermissionDenied, "namespace"},
		{"SVID of another CA", renewal(t, good, strangerResp.CertificateChain, strangerKey), codes.Unauthenticated, "svid"},
		{"proof signed by another key", renewal(t, good, ownResp.CertificateChain, newKey(t)), codes.Unauthenticated, "svid.signature"},
		{"SVID of another identity", renewal(t, good, frontResp.CertificateChain, frontKey), codes.PermissionDenied, frontend.String()},
		{"empty SVID chain", renewal(t, good, nil, ownKey), codes.Unauthenticated, "certificate_chain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.sign(t, tc.req)
			st, _ := status.FromError(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.message) {
				t.Errorf("Sign: %v; want code %s and a message containing %q", err, tc.code, tc.message)
			}
			h.mu.Lock()
			last := h.results[len(h.results)-1]
			h.mu.Unlock()
			if want := credentialKind(tc.req) + " " + tc.code.String(); last != want {
				t.Errorf("last OnResult = %q, want %q", last, want)
			}
		})
	}
}

func TestServiceRenewsWithSVIDProof(t *testing.T) {
	h := newHarness(t)
	key, resp := h.joinTokenSVID(t, testID)
	newKey := newKey(t)
	renewed, err := h.sign(t, renewal(t, csrFor(t, newKey, testID.String()), resp.CertificateChain, key))
	if err != nil {
		t.Fatalf("renewal: %v", err)
	}
	leaf, err := x509.ParseCertificate(renewed.CertificateChain[0])
	if err != nil {
		t.Fatal(err)
	}
	if !newKey.PublicKey.Equal(leaf.PublicKey) {
		t.Error("the renewed SVID is not for the new CSR's key")
	}
}

func TestServiceRefusesExpiredSVID(t *testing.T) {
	dir := t.TempDir()
	// The CA, started three hours ago, issued a one-hour SVID: expired now.
	past := newCA(t, Options{DataDir: dir, Now: func() time.Time { return time.Now().Add(-3 * time.Hour) }})
	key := newKey(t)
	chain, err := past.Sign(key.Public(), testID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarnessIn(t, dir)
	_, err = h.sign(t, renewal(t, csrFor(t, newKey(t), testID.String()), raw(chain), key))
	if st, _ := status.FromError(err); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "expired") {
		t.Fatalf("renewal with an expired SVID: %v, want Unauthenticated saying expired", err)
	}
}

// FuzzCheckCSR: no CSR bytes panic the request checks.
func FuzzCheckCSR(f *testing.F) {
	c, err := New(Options{TrustDomain: testTD, DataDir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	s, err := NewService(ServiceOptions{CA: c, Authenticators: []Authenticator{SVIDs{Bundle: c}}})
	if err != nil {
		f.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{testID.URL()}}, key)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(der)
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, csr []byte) {
		got, id, err := s.checkCSR(&identityv1.SignRequest{Csr: csr, NodeId: "n"})
		if err == nil && (got == nil || !id.MemberOf(testTD)) {
			t.Errorf("checkCSR accepted %x for %s", csr, id)
		}
	})
}
