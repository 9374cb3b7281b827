// Package workloadapi makes a SPIFFE Workload API endpoint (a SPIRE agent's
// socket) meshproxy's identity source, in place of the control plane's CA
// (docs/identity.md, Delivery: `--identity-source workload-api:...`).
//
// A Source watches the Workload API with go-spiffe and keeps the two secrets the
// data plane's TLS contexts name, as the control plane would serve them over SDS:
// `default` (the workload's X.509-SVID chain and private key, PEM) and `ROOTCA`
// (the X.509 bundle of the SVID's trust domain, PEM). It is the xDS client's
// local secret provider: the client reads the secrets by name and re-resolves
// its TLS settings when Changed fires.
//
// Concurrency: one goroutine, started by New and stopped by Close, receives the
// Workload API's updates and publishes each as an immutable set of secrets
// through an atomic pointer; every method is safe for concurrent use.
package workloadapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	spiffewl "github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/tinymesh/tinymesh/dataplane/config"
)

// Secret names, as in the control plane's SDS (docs/identity.md).
const (
	// CertificateName is the secret with the workload's certificate and key.
	CertificateName = "default"
	// RootCAName is the secret with the trust bundle.
	RootCAName = "ROOTCA"
)

// DefaultStartTimeout bounds how long New waits for the first X.509-SVID.
const DefaultStartTimeout = 30 * time.Second

// ErrNoSVID reports that the Workload API gave no X.509-SVID before the start
// timeout; the wrapped message says why when the endpoint told us.
var ErrNoSVID = errors.New("no X.509-SVID from the Workload API")

// Options configure a Source. Addr is required.
type Options struct {
	// Addr is the Workload API address: unix:///path/to/agent.sock (or
	// tcp://ip:port).
	Addr string
	// StartTimeout bounds New's wait for the first SVID; default
	// DefaultStartTimeout.
	StartTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Source provides the `default` and `ROOTCA` secrets from the Workload API.
type Source struct {
	// set in New, read-only after
	log     *slog.Logger
	client  *spiffewl.Client
	ctx     context.Context // the watch's; ends with Close
	cancel  context.CancelFunc
	done    chan struct{} // closed when the watch goroutine returns
	changed chan struct{} // capacity 1; see Changed

	// accessed atomically
	cur atomic.Pointer[secrets] // nil until the first update; written only by the watch goroutine

	// guarded by mu
	mu      sync.Mutex
	lastErr error // the latest watch error, reported if no SVID comes
	closed  bool
}

// secrets is one Workload API update, converted; never modified once stored.
type secrets struct {
	id     spiffeid.ID
	expiry time.Time
	cert   *config.TLSSecret
	rootCA *config.TLSSecret
}

// New connects to the Workload API at o.Addr and waits, at most
// o.StartTimeout, for the first X.509-SVID and bundle. It fails when the
// address is malformed, when ctx ends, or when nothing usable arrives in time
// (an unreachable socket, or a workload the agent has no entry for); the error
// then carries the endpoint's last complaint. Close the Source when done.
func New(ctx context.Context, o Options) (*Source, error) {
	if o.Addr == "" {
		return nil, errors.New("workload API: no address")
	}
	if err := spiffewl.ValidateAddress(o.Addr); err != nil {
		return nil, fmt.Errorf("workload API address %q: %w", o.Addr, err)
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = DefaultStartTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	client, err := spiffewl.New(context.Background(), spiffewl.WithAddr(o.Addr))
	if err != nil {
		return nil, fmt.Errorf("workload API %s: %w", o.Addr, err)
	}
	watchCtx, cancel := context.WithCancel(context.Background())
	s := &Source{
		log:     o.Logger.With("workload_api", o.Addr),
		client:  client,
		ctx:     watchCtx,
		cancel:  cancel,
		done:    make(chan struct{}),
		changed: make(chan struct{}, 1),
	}
	go func() {
		defer close(s.done)
		// Returns only once watchCtx ends: go-spiffe retries every other
		// error with a backoff, reporting each to OnX509ContextWatchError.
		_ = client.WatchX509Context(watchCtx, (*watcher)(s))
	}()

	timer := time.NewTimer(o.StartTimeout)
	defer timer.Stop()
	select {
	case <-s.changed:
		// Keep the signal for the consumer: it has not read the secrets yet.
		s.signal()
		cur := s.cur.Load()
		s.log.Info("workload API: X.509-SVID received", "spiffe_id", cur.id.String(), "expires", cur.expiry)
		return s, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-timer.C:
		s.mu.Lock()
		last := s.lastErr
		s.mu.Unlock()
		if last != nil {
			err = fmt.Errorf("%w within %v: %w", ErrNoSVID, o.StartTimeout, last)
		} else {
			err = fmt.Errorf("%w within %v", ErrNoSVID, o.StartTimeout)
		}
	}
	s.Close()
	return nil, fmt.Errorf("workload API %s: %w", o.Addr, err)
}

// Names returns the secret names the Source provides. The slice is new on
// each call.
func (s *Source) Names() []string { return []string{CertificateName, RootCAName} }

// Secret returns the current secret called name. The value is shared and
// must not be modified; a later update replaces it rather than changing it.
func (s *Source) Secret(name string) (*config.TLSSecret, bool) {
	cur := s.cur.Load()
	if cur == nil {
		return nil, false
	}
	switch name {
	case CertificateName:
		return cur.cert, true
	case RootCAName:
		return cur.rootCA, true
	}
	return nil, false
}

// Changed returns a channel with capacity 1 that receives a value after each
// update of the secrets (a new SVID or bundle). Updates that arrive before the
// consumer reads coalesce into one signal; the consumer then reads the latest
// secrets. It has a value when New returns.
func (s *Source) Changed() <-chan struct{} { return s.changed }

// ID returns the SPIFFE ID of the current SVID.
func (s *Source) ID() string { return s.cur.Load().id.String() }

// Close stops watching and waits for the watch goroutine to end. The secrets
// last received stay readable.
func (s *Source) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	err := s.client.Close()
	<-s.done
	return err
}

func (s *Source) signal() {
	select {
	case s.changed <- struct{}{}:
	default: // a signal is already pending; the reader will see this update too
	}
}

// watcher receives go-spiffe's callbacks on the watch goroutine.
type watcher Source

// OnX509ContextUpdate converts and publishes an update. An update it cannot
// use keeps the previous secrets in force.
func (w *watcher) OnX509ContextUpdate(c *spiffewl.X509Context) {
	s := (*Source)(w)
	next, err := convert(c)
	if err != nil {
		s.log.Error("workload API: update ignored", "err", err)
		s.mu.Lock()
		s.lastErr = err
		s.mu.Unlock()
		return
	}
	if prev := s.cur.Load(); prev != nil && prev.same(next) {
		return // e.g. a federated bundle changed: nothing of ours did
	}
	if prev := s.cur.Swap(next); prev != nil {
		s.log.Info("workload API: X.509-SVID updated", "spiffe_id", next.id.String(), "expires", next.expiry)
	}
	s.signal()
}

// OnX509ContextWatchError records a failed watch; go-spiffe retries it.
func (w *watcher) OnX509ContextWatchError(err error) {
	s := (*Source)(w)
	if s.ctx.Err() != nil {
		return // closing: the stream ended because we cancelled it
	}
	s.mu.Lock()
	s.lastErr = err
	s.mu.Unlock()
	if s.cur.Load() != nil {
		// Before the first SVID, New reports the error.
		s.log.Warn("workload API: watch failed; retrying, current SVID stays in use", "err", err)
	}
}

// same reports whether n has the same certificate, key and bundle as s.
func (s *secrets) same(n *secrets) bool {
	return bytes.Equal(s.cert.Certificate.CertificateChain, n.cert.Certificate.CertificateChain) &&
		bytes.Equal(s.cert.Certificate.PrivateKey, n.cert.Certificate.PrivateKey) &&
		bytes.Equal(s.rootCA.TrustedCA, n.rootCA.TrustedCA)
}

// convert turns a Workload API update into the two secrets: the default SVID
// (the first, per the Workload API specification) and the bundle of its trust
// domain.
func convert(c *spiffewl.X509Context) (*secrets, error) {
	if len(c.SVIDs) == 0 {
		return nil, errors.New("update without an X.509-SVID")
	}
	svid := c.DefaultSVID()
	td := svid.ID.TrustDomain()
	bundle, err := c.Bundles.GetX509BundleForTrustDomain(td)
	if err != nil {
		return nil, fmt.Errorf("SVID %s: %w", svid.ID, err)
	}
	if len(bundle.X509Authorities()) == 0 {
		return nil, fmt.Errorf("SVID %s: bundle of trust domain %q is empty", svid.ID, td)
	}
	chainPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		return nil, fmt.Errorf("SVID %s: %w", svid.ID, err)
	}
	bundlePEM, err := bundle.Marshal()
	if err != nil {
		return nil, fmt.Errorf("bundle of trust domain %q: %w", td, err)
	}
	return &secrets{
		id:     svid.ID,
		expiry: svid.Certificates[0].NotAfter,
		cert: &config.TLSSecret{
			Name:        CertificateName,
			Certificate: &config.CertificateKeyPair{CertificateChain: chainPEM, PrivateKey: config.Secret(keyPEM)},
		},
		rootCA: &config.TLSSecret{Name: RootCAName, TrustedCA: bundlePEM},
	}, nil
}
