package svid

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/tinymesh/tinymesh/identity/ca"
	"github.com/tinymesh/tinymesh/identity/jointoken"
	identityv1 "github.com/tinymesh/tinymesh/proto/identity/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testID = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/backend")

const testNode = "backend-v1.default~abc123"

// controlPlane is the real CertificateService on a loopback gRPC server.
type controlPlane struct {
	addr   string
	ca     *ca.CA
	tokens *jointoken.Store
	srv    *grpc.Server
	served chan struct{}
	// keyAtIssue reports, for each issuance, whether the proxy's KeyStore
	// already had the key when the control plane published the chain.
	keyAtIssue chan bool
	keys       func() *KeyStore
}

func startControlPlane(t *testing.T, ttl time.Duration, lis net.Listener) *controlPlane {
	t.Helper()
	dir := t.TempDir()
	authority, err := ca.New(ca.Options{TrustDomain: testID.TrustDomain(), DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := jointoken.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	cp := &controlPlane{ca: authority, tokens: tokens, keyAtIssue: make(chan bool, 16), served: make(chan struct{})}
	svc, err := ca.NewService(ca.ServiceOptions{
		CA: authority, TTL: ttl,
		Authenticators: []ca.Authenticator{ca.JoinTokens{Store: tokens}, ca.SVIDs{Bundle: authority}},
		OnIssued: func(node string, chainPEM []byte) {
			if node != testNode {
				t.Errorf("OnIssued for node %q, want %q", node, testNode)
			}
			if cp.keys != nil {
				block, _ := pem.Decode(chainPEM)
				leaf, err := x509.ParseCertificate(block.Bytes)
				if err != nil {
					t.Errorf("OnIssued chain: %v", err)
				}
				_, ok := cp.keys().PrivateKeyPEM(leaf.PublicKey)
				cp.keyAtIssue <- ok
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if lis == nil {
		if lis, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	cp.addr = lis.Addr().String()
	cp.srv = grpc.NewServer()
	identityv1.RegisterCertificateServiceServer(cp.srv, svc)
	go func() { defer close(cp.served); cp.srv.Serve(lis) }()
	t.Cleanup(cp.stop)
	return cp
}

func (cp *controlPlane) stop() {
	cp.srv.Stop()
	<-cp.served
}

func (cp *controlPlane) token(t *testing.T) string {
	t.Helper()
	tok, err := cp.tokens.Mint(testID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func newClient(t *testing.T, cp *controlPlane, token string) *Client {
	t.Helper()
	c, _ := newClientUpdates(t, cp, token)
	return c
}

// newClientUpdates also returns a channel receiving every new SVID.
func newClientUpdates(t *testing.T, cp *controlPlane, token string) (*Client, <-chan *SVID) {
	t.Helper()
	updates := make(chan *SVID, 16)
	c, err := New(Options{ServerAddr: cp.addr, ID: testID, NodeID: testNode, JoinToken: token,
		RetryBase: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond, CallTimeout: 2 * time.Second,
		OnUpdate: func(s *SVID) { updates <- s }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cp.keys = c.Keys
	return c, updates
}

func waitUpdate(t *testing.T, updates <-chan *SVID, within time.Duration) *SVID {
	t.Helper()
	select {
	case s := <-updates:
		return s
	case <-time.After(within):
		t.Fatalf("no new SVID within %s", within)
		return nil
	}
}

func fetch(t *testing.T, c *Client) *SVID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.Fetch(ctx)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	return s
}

// running is a Run in its own goroutine.
type running struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	err    error         // Run's result, set before done is closed
}

// stop ends Run and returns its result.
func (r *running) stop() error {
	r.cancel()
	<-r.done
	return r.err
}

// runClient starts Run; the test's cleanup stops it.
func runClient(t *testing.T, c *Client) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = c.Run(ctx)
	}()
	t.Cleanup(func() { r.stop() })
	return r
}

func TestFetchWithJoinToken(t *testing.T) {
	cp := startControlPlane(t, time.Hour, nil)
	c := newClient(t, cp, cp.token(t))
	if c.Current() != nil {
		t.Fatal("Current before Fetch is not nil")
	}
	s := fetch(t, c)
	if c.Current() != s || s.ID != testID {
		t.Fatalf("Current = %+v, want the fetched SVID for %s", c.Current(), testID)
	}
	if _, _, err := x509svid.Verify(s.Certificates, cp.ca); err != nil {
		t.Errorf("SVID does not verify against the CA: %v", err)
	}
	if !<-cp.keyAtIssue {
		t.Error("the key was not in the KeyStore when the control plane published the chain")
	}
	keyPEM, ok := c.Keys().PrivateKeyPEM(s.Certificates[0].PublicKey)
	if !ok {
		t.Fatal("KeyStore has no key for the SVID")
	}
	// The key and the chain form a valid SVID (go-spiffe checks they match).
	var chainPEM []byte
	for _, cert := range s.Certificates {
		chainPEM = append(chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})...)
	}
	if _, err := x509svid.Parse(chainPEM, keyPEM); err != nil {
		t.Errorf("x509svid.Parse(chain, key from the store): %v", err)
	}
	if d := s.RenewAt.Sub(time.Now()); d < 25*time.Minute || d > 31*time.Minute {
		t.Errorf("RenewAt in %s, want about half of 1h", d)
	}
	if _, ok := c.Keys().PrivateKeyPEM(newKeyPub(t)); ok {
		t.Error("KeyStore returned a key for a public key it never made")
	}
}

func TestFetchRefused(t *testing.T) {
	cp := startControlPlane(t, time.Hour, nil)
	token := cp.token(t)
	fetch(t, newClient(t, cp, token))
	<-cp.keyAtIssue

	c := newClient(t, cp, token) // the same token again
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Fetch(ctx)
	refused, ok := errors.AsType[*RefusedError](err)
	if !ok || refused.Code != codes.Unauthenticated {
		t.Fatalf("Fetch with a used token: %v, want a RefusedError with Unauthenticated", err)
	}
	if ctx.Err() != nil {
		t.Error("Fetch kept retrying a refusal until its deadline")
	}
}

func TestFetchWaitsForTheControlPlane(t *testing.T) {
	// The port is bound but nothing serves gRPC on it yet: calls time out.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held := &heldListener{Listener: lis, release: make(chan struct{}), asked: make(chan struct{})}
	cp := startControlPlane(t, time.Hour, held)
	c, err := New(Options{ServerAddr: cp.addr, ID: testID, NodeID: testNode, JoinToken: cp.token(t),
		RetryBase: 20 * time.Millisecond, RetryMax: 50 * time.Millisecond, CallTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := make(chan error, 1)
	go func() {
		_, err := c.Fetch(ctx)
		got <- err
	}()
	<-held.asked // Fetch has connected; nothing answers yet
	select {
	case err := <-got:
		t.Fatalf("Fetch returned while the control plane did not answer: %v", err)
	case <-time.After(time.Second): // five call timeouts: Fetch must be retrying
	}
	close(held.release)
	if err := <-got; err != nil {
		t.Fatalf("Fetch once the control plane serves: %v", err)
	}
}

// heldListener hands the gRPC server no connection until release is closed;
// asked is closed when the first client connects.
type heldListener struct {
	net.Listener
	release chan struct{}
	asked   chan struct{}
	once    sync.Once
}

func (h *heldListener) Accept() (net.Conn, error) {
	conn, err := h.Listener.Accept()
	if err == nil {
		h.once.Do(func() { close(h.asked) })
	}
	<-h.release
	return conn, err
}

func TestRenewNow(t *testing.T) {
	cp := startControlPlane(t, time.Hour, nil)
	c, updates := newClientUpdates(t, cp, cp.token(t))
	first := fetch(t, c)
	waitUpdate(t, updates, time.Second)
	<-cp.keyAtIssue
	run := runClient(t, c)

	c.RenewNow()
	second := waitUpdate(t, updates, 10*time.Second)
	if !<-cp.keyAtIssue {
		t.Error("the renewal's key was not in the KeyStore when the control plane published the chain")
	}
	if err := run.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if c.Current() != second {
		t.Error("Current is not the SVID OnUpdate reported")
	}
	if second == first || second.Certificates[0].SerialNumber.Cmp(first.Certificates[0].SerialNumber) == 0 {
		t.Fatal("Current did not change after RenewNow")
	}
	if second.PrivateKey.Equal(first.PrivateKey) {
		t.Error("the renewal reused the key")
	}
	// Both keys stay: a secret with the old chain may still be on its way.
	for name, s := range map[string]*SVID{"previous": first, "current": second} {
		if _, ok := c.Keys().PrivateKeyPEM(s.Certificates[0].PublicKey); !ok {
			t.Errorf("KeyStore lost the %s key", name)
		}
	}
}

func TestRunRenewsAtHalfLife(t *testing.T) {
	cp := startControlPlane(t, 2*time.Second, nil)
	c, updates := newClientUpdates(t, cp, cp.token(t))
	first := fetch(t, c)
	waitUpdate(t, updates, time.Second)
	run := runClient(t, c)
	// Issued for 2s: renewed after about 1s, then again.
	for i := range 2 {
		waitUpdate(t, updates, 10*time.Second)
		if now := time.Now(); i == 0 && now.Before(first.RenewAt) {
			t.Errorf("renewed at %s, before RenewAt %s", now, first.RenewAt)
		}
	}
	if err := run.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if now := c.Current(); now == first || now.ExpiresAt.Before(first.ExpiresAt) {
		t.Errorf("no later SVID after two renewals")
	}
	if n := c.Keys().Len(); n > 3 {
		t.Errorf("KeyStore holds %d keys, want at most 3", n)
	}
}

func TestRunFailsOnceTheSVIDExpired(t *testing.T) {
	cp := startControlPlane(t, 2*time.Second, nil)
	c := newClient(t, cp, cp.token(t))
	s := fetch(t, c)
	cp.stop() // the control plane is gone for good
	run := runClient(t, c)
	select {
	case <-run.done:
		if run.err == nil {
			t.Fatal("Run returned nil although the SVID expired")
		}
		if time.Now().Before(s.ExpiresAt) {
			t.Errorf("Run gave up at %s, before the SVID expired at %s", time.Now(), s.ExpiresAt)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run still running 15s after a 2s SVID was issued with no control plane")
	}
	if _, ok := c.Keys().PrivateKeyPEM(s.Certificates[0].PublicKey); ok {
		t.Error("KeyStore still returns the key of an expired SVID")
	}
}

func newKeyPub(t *testing.T) crypto.PublicKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}
