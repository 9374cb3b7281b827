// Package svid is the proxy's side of the control plane's CA (docs/identity.md,
// "Issuance"): it keeps this workload's X.509-SVID current. It generates an
// ECDSA P-256 key in memory for every certificate (keys never leave the
// process), sends a CSR for the workload's SPIFFE ID to
// tinymesh.identity.v1.CertificateService/Sign with the join token the first
// time and with a proof of the current SVID afterwards, and renews at half the
// lifetime, retrying with capped backoff. The keys go to the KeyStore, where
// the xDS client finds the one matching the chain the control plane serves
// over SDS.
//
// The package stays lean for meshproxy: grpc, the generated proto, crypto and
// go-spiffe's x509svid; no Kubernetes, no go-control-plane.
//
// Concurrency: Fetch, then Run, on the owner's goroutine (Run loops until its
// context ends); Current, RenewNow and the KeyStore from any goroutine; Close
// after Run has returned.
package svid

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tinymesh/tinymesh/identity"
	identityv1 "github.com/tinymesh/tinymesh/proto/identity/v1"
)

// Options configure New. ServerAddr, ID, NodeID and JoinToken are required.
type Options struct {
	// ServerAddr is the control plane's gRPC (xDS) address, host:port.
	ServerAddr string
	// DialOptions are added to the gRPC dial options (insecure credentials by
	// default, like the xDS client's).
	DialOptions []grpc.DialOption
	// ID is the SPIFFE ID asked for.
	ID spiffeid.ID
	// NodeID is the xDS node.id the control plane serves the SVID to over SDS;
	// it must equal the one the xDS client sends.
	NodeID string
	// JoinToken is the credential for the first SVID.
	JoinToken string
	// RetryBase and RetryMax bound the delay between failed attempts (Fetch
	// while the control plane is unreachable, renewals); defaults 500ms and 30s.
	RetryBase, RetryMax time.Duration
	// CallTimeout bounds one Sign call; default 10s.
	CallTimeout time.Duration
	// OnUpdate, if set, is called with every new SVID, on the goroutine of
	// Fetch or Run, after Current returns it. It must not block for long.
	OnUpdate func(*SVID)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// SVID is one issued X.509-SVID. It is never modified after it is published.
type SVID struct {
	ID spiffeid.ID
	// Certificates is the chain, leaf first.
	Certificates []*x509.Certificate
	// PrivateKey is the leaf's key.
	PrivateKey *ecdsa.PrivateKey
	// Bundle is the trust bundle that came with it (every root in force).
	Bundle []*x509.Certificate
	// ExpiresAt is the leaf's NotAfter; RenewAt is when the Client renews
	// (half the lifetime left when it arrived).
	ExpiresAt, RenewAt time.Time
}

// RefusedError is a Sign call the control plane answered with a refusal (a
// bad credential or CSR), as opposed to one that did not reach it.
type RefusedError struct {
	Code    codes.Code
	Message string
}

func (e *RefusedError) Error() string { return e.Message + " (" + e.Code.String() + ")" }

// Client obtains and renews the SVID.
type Client struct {
	// set in New, read-only after
	opts Options
	log  *slog.Logger
	conn *grpc.ClientConn
	rpc  identityv1.CertificateServiceClient
	keys *KeyStore

	// owned by the goroutine calling Fetch and Run
	pendingKey *ecdsa.PrivateKey // reused by retries until a Sign succeeds

	// accessed atomically
	cur atomic.Pointer[SVID]

	renewC chan struct{} // RenewNow's signal, buffered 1
}

// New checks opts and prepares the gRPC channel; it does not connect yet.
func New(opts Options) (*Client, error) {
	switch {
	case opts.ServerAddr == "":
		return nil, errors.New("svid: ServerAddr is required")
	case opts.ID.IsZero():
		return nil, errors.New("svid: ID is required")
	case opts.NodeID == "":
		return nil, errors.New("svid: NodeID is required")
	case opts.JoinToken == "":
		return nil, errors.New("svid: JoinToken is required")
	}
	if opts.RetryBase <= 0 {
		opts.RetryBase = 500 * time.Millisecond
	}
	if opts.RetryMax < opts.RetryBase {
		opts.RetryMax = max(30*time.Second, opts.RetryBase)
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	dial := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts.DialOptions...)
	conn, err := grpc.NewClient(opts.ServerAddr, dial...)
	if err != nil {
		return nil, fmt.Errorf("svid: dial %s: %w", opts.ServerAddr, err)
	}
	return &Client{
		opts:   opts,
		log:    opts.Logger.With("spiffe_id", opts.ID.String()),
		conn:   conn,
		rpc:    identityv1.NewCertificateServiceClient(conn),
		keys:   newKeyStore(time.Now),
		renewC: make(chan struct{}, 1),
	}, nil
}

// Keys returns the store of this client's private keys.
func (c *Client) Keys() *KeyStore { return c.keys }

// Current returns the SVID in force, nil before Fetch succeeded.
func (c *Client) Current() *SVID { return c.cur.Load() }

// RenewNow asks Run to renew at once, e.g. because the xDS stream reconnected:
// a restarted control plane has forgotten the certificates it issued, and only
// serves the "default" secret again once it issues a new one. It does not block;
// requests made while one is pending coalesce.
func (c *Client) RenewNow() {
	select {
	case c.renewC <- struct{}{}:
	default:
	}
}

// Close releases the gRPC channel. Call it after Run has returned.
func (c *Client) Close() error { return c.conn.Close() }

// Fetch obtains the first SVID with the join token. While the control plane
// cannot be reached it retries with backoff until ctx ends; a refusal (an
// invalid or used token, a CSR the control plane rejects) returns at once as a
// *RefusedError, since the token will not get better.
func (c *Client) Fetch(ctx context.Context) (*SVID, error) {
	for attempt := 0; ; attempt++ {
		s, err := c.sign(ctx, nil)
		if err == nil {
			return s, nil
		}
		if _, ok := errors.AsType[*RefusedError](err); ok {
			return nil, err
		}
		d := backoff(attempt, c.opts.RetryBase, c.opts.RetryMax)
		c.log.Warn("first SVID: control plane not reachable; retrying", "err", err, "backoff", d)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("svid: first SVID: %w (last error: %w)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// Run renews the SVID at its RenewAt, and at once on RenewNow, until ctx ends
// (then it returns nil). A failed renewal is retried with backoff; when the
// SVID expires without a successful renewal, Run returns an error: the proxy
// has no credential left to ask with. Fetch must have succeeded first.
func (c *Client) Run(ctx context.Context) error {
	if c.cur.Load() == nil {
		return errors.New("svid: Run before a successful Fetch")
	}
	var retryAt time.Time // zero unless the last renewal failed
	for attempt := 0; ; {
		cur := c.cur.Load()
		next := cur.RenewAt
		if !retryAt.IsZero() {
			next = retryAt
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-c.renewC:
			t.Stop()
		case <-t.C:
		}
		_, err := c.sign(ctx, cur)
		if err == nil {
			attempt, retryAt = 0, time.Time{}
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		now := time.Now()
		if !now.Before(cur.ExpiresAt) {
			return fmt.Errorf("svid: SVID expired at %s and could not be renewed: %w",
				cur.ExpiresAt.UTC().Format(time.RFC3339), err)
		}
		d := backoff(attempt, c.opts.RetryBase, c.opts.RetryMax)
		attempt++
		retryAt = now.Add(d)
		if retryAt.After(cur.ExpiresAt) {
			retryAt = cur.ExpiresAt // one last try right at expiry
		}
		c.log.Warn("SVID renewal failed; retrying", "err", err, "backoff", d,
			"expires_at", cur.ExpiresAt.UTC().Format(time.RFC3339))
	}
}

// sign sends one CSR: with the join token when cur is nil, else with a proof of
// cur. On success it publishes the new SVID and its key.
func (c *Client) sign(ctx context.Context, cur *SVID) (*SVID, error) {
	if c.pendingKey == nil {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("svid: key: %w", err)
		}
		// In the store before the request leaves: the control plane may serve
		// the new chain over SDS before its answer gets here.
		if err := c.keys.setPending(key); err != nil {
			return nil, err
		}
		c.pendingKey = key
	}
	key := c.pendingKey
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{c.opts.ID.URL()}}, key)
	if err != nil {
		return nil, fmt.Errorf("svid: csr: %w", err)
	}
	req := &identityv1.SignRequest{Csr: csr, NodeId: c.opts.NodeID}
	if cur == nil {
		req.Credential = &identityv1.SignRequest_JoinToken{JoinToken: c.opts.JoinToken}
	} else {
		sig, err := ecdsa.SignASN1(rand.Reader, cur.PrivateKey, identity.RenewalDigest(csr))
		if err != nil {
			return nil, fmt.Errorf("svid: renewal proof: %w", err)
		}
		proof := &identityv1.SVIDProof{Signature: sig}
		for _, cert := range cur.Certificates {
			proof.CertificateChain = append(proof.CertificateChain, cert.Raw)
		}
		req.Credential = &identityv1.SignRequest_Svid{Svid: proof}
	}
	callCtx, cancel := context.WithTimeout(ctx, c.opts.CallTimeout)
	resp, err := c.rpc.Sign(callCtx, req)
	cancel()
	if err != nil {
		if st, ok := status.FromError(err); ok {
			switch st.Code() {
			case codes.InvalidArgument, codes.Unauthenticated, codes.PermissionDenied, codes.FailedPrecondition:
				return nil, &RefusedError{Code: st.Code(), Message: st.Message()}
			}
		}
		return nil, fmt.Errorf("svid: sign: %w", err)
	}
	s, err := c.check(resp, key)
	if err != nil {
		return nil, err
	}
	c.keys.promote(key, s.ExpiresAt)
	c.pendingKey = nil
	c.cur.Store(s)
	if c.opts.OnUpdate != nil {
		c.opts.OnUpdate(s)
	}
	kind := "join_token"
	if cur != nil {
		kind = "svid"
	}
	c.log.Info("SVID issued", "credential", kind, "serial", s.Certificates[0].SerialNumber.Text(16),
		"expires_at", s.ExpiresAt.UTC().Format(time.RFC3339), "renew_at", s.RenewAt.UTC().Format(time.RFC3339))
	return s, nil
}

// check verifies a Sign response: a chain for our ID and key that verifies
// against the bundle that came with it.
func (c *Client) check(resp *identityv1.SignResponse, key *ecdsa.PrivateKey) (*SVID, error) {
	var bundle []*x509.Certificate
	for i, der := range resp.GetTrustBundle() {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("svid: response trust_bundle[%d]: %w", i, err)
		}
		bundle = append(bundle, cert)
	}
	now := time.Now()
	id, chains, err := x509svid.ParseAndVerify(resp.GetCertificateChain(),
		x509bundle.FromX509Authorities(c.opts.ID.TrustDomain(), bundle), x509svid.WithTime(now))
	if err != nil {
		return nil, fmt.Errorf("svid: response certificate_chain: %w", err)
	}
	if id != c.opts.ID {
		return nil, fmt.Errorf("svid: response certificate_chain: issued for %s, asked for %s", id, c.opts.ID)
	}
	leaf := chains[0][0]
	if !key.PublicKey.Equal(leaf.PublicKey) {
		return nil, errors.New("svid: response certificate_chain: the leaf's key is not the one in the CSR")
	}
	certs := make([]*x509.Certificate, len(resp.GetCertificateChain()))
	for i, der := range resp.GetCertificateChain() {
		if certs[i], err = x509.ParseCertificate(der); err != nil {
			return nil, fmt.Errorf("svid: response certificate_chain[%d]: %w", i, err)
		}
	}
	return &SVID{
		ID: id, Certificates: certs, PrivateKey: key, Bundle: bundle,
		ExpiresAt: leaf.NotAfter, RenewAt: now.Add(leaf.NotAfter.Sub(now) / 2),
	}, nil
}

// backoff returns the delay before retry n (0-based): exponential from base,
// capped at max, half of it random so proxies do not retry in lockstep.
func backoff(n int, base, max time.Duration) time.Duration {
	d := base
	for i := 0; i < n && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	half := d / 2
	return half + mathrand.N(half+1)
}
