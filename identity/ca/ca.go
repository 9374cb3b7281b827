package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Files and timings of the self-managed root (docs/identity.md, "The control
// plane's CA").
const (
	// DefaultReloadInterval is how often Run re-reads the CA files.
	DefaultReloadInterval = 5 * time.Second
	// RootLifetime is the validity of a root the CA creates.
	RootLifetime = 10 * 365 * 24 * time.Hour
	// ClockSkew backdates every certificate's NotBefore, so that a peer whose
	// clock is a little behind still accepts it.
	ClockSkew = time.Minute

	caDir        = "ca"
	rootKeyFile  = "root.key"
	rootCertFile = "root.crt"
	previousDir  = "previous"
)

// ErrExpired reports a signing certificate that is no longer valid.
var ErrExpired = errors.New("CA certificate expired")

// Options configure New. TrustDomain is required, and DataDir unless CertFile
// and KeyFile are set.
type Options struct {
	// TrustDomain is the SPIFFE trust domain every issued ID belongs to.
	TrustDomain spiffeid.TrustDomain
	// DataDir holds ca/root.key and ca/root.crt, created on first use, and
	// ca/previous/ with rotated-out roots still trusted.
	DataDir string
	// CertFile, KeyFile and BundleFile are an operator-provided CA instead:
	// CertFile's first certificate signs the SVIDs (it may be an intermediate,
	// followed in the file by further intermediates, which SVID chains carry);
	// BundleFile holds the roots to trust and defaults to that first certificate.
	CertFile, KeyFile, BundleFile string
	// ReloadInterval is how often Run re-reads the files; default
	// DefaultReloadInterval.
	ReloadInterval time.Duration
	// OnBundleChange is called from Run's goroutine with the new trust bundle
	// (PEM, every root in force) whenever a reload changes it. It may block Run.
	OnBundleChange func(bundlePEM []byte)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
}

// authority is one loaded CA state; never modified after load.
type authority struct {
	signer    crypto.Signer
	cert      *x509.Certificate   // signs the leaves
	chain     []*x509.Certificate // what every SVID chain carries after its leaf
	roots     []*x509.Certificate // the trust bundle
	bundlePEM []byte
	notAfter  time.Time // no leaf outlives any certificate of its chain
}

// CA issues X.509-SVIDs. Sign, Bundle and the other accessors may be called from
// any goroutine; Run, which reloads the files, from one.
type CA struct {
	// set in New, read-only after
	opts Options
	log  *slog.Logger

	// accessed atomically; written only by New and Reload
	auth atomic.Pointer[authority]
}

// New loads the CA, creating the self-managed root in DataDir on first use.
func New(opts Options) (*CA, error) {
	if opts.TrustDomain.IsZero() {
		return nil, errors.New("ca: trust domain is required")
	}
	if (opts.CertFile == "") != (opts.KeyFile == "") {
		return nil, errors.New("ca: an operator CA needs both a certificate and a key file")
	}
	if opts.BundleFile != "" && opts.CertFile == "" {
		return nil, errors.New("ca: a bundle file needs an operator CA certificate and key")
	}
	if opts.CertFile == "" && opts.DataDir == "" {
		return nil, errors.New("ca: a data directory is required")
	}
	if opts.ReloadInterval <= 0 {
		opts.ReloadInterval = DefaultReloadInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &CA{opts: opts, log: opts.Logger}
	if c.log == nil {
		c.log = slog.Default()
	}
	a, err := c.load(true)
	if err != nil {
		return nil, err
	}
	c.auth.Store(a)
	return c, nil
}

// TrustDomain is the CA's trust domain.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.opts.TrustDomain }

// Bundle returns the roots in force, the current one first. The certificates
// are shared: do not modify them.
func (c *CA) Bundle() []*x509.Certificate {
	return append([]*x509.Certificate(nil), c.auth.Load().roots...)
}

// BundlePEM returns Bundle as PEM.
func (c *CA) BundlePEM() []byte { return bytes.Clone(c.auth.Load().bundlePEM) }

// GetX509BundleForTrustDomain makes the CA an x509bundle.Source of the current
// trust bundle, for go-spiffe's verifiers.
func (c *CA) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != c.opts.TrustDomain {
		return nil, fmt.Errorf("ca: no bundle for trust domain %q", td)
	}
	return x509bundle.FromX509Authorities(td, c.auth.Load().roots), nil
}

// Sign issues an X.509-SVID for id with pub, valid for ttl (less when the
// signing certificate ends sooner). It returns the chain, leaf first, without
// the root.
func (c *CA) Sign(pub crypto.PublicKey, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	if !id.MemberOf(c.opts.TrustDomain) {
		return nil, fmt.Errorf("ca: %s is not in trust domain %s", id, c.opts.TrustDomain)
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("ca: ttl %s: must be positive", ttl)
	}
	a := c.auth.Load()
	now := c.opts.Now()
	notBefore := now.Add(-ClockSkew)
	if notBefore.Before(a.cert.NotBefore) {
		notBefore = a.cert.NotBefore
	}
	notAfter := now.Add(ttl)
	if notAfter.After(a.notAfter) {
		notAfter = a.notAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("ca: %w at %s", ErrExpired, a.notAfter.UTC().Format(time.RFC3339))
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	// SPIFFE X.509-SVID, section 4: one URI SAN, not a CA, digitalSignature
	// (ECDSA keys need nothing else), and the TLS usages for both sides of mTLS.
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		URIs:                  []*url.URL{id.URL()},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, pub, a.signer)
	if err != nil {
		return nil, fmt.Errorf("ca: sign %s: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: sign %s: %w", id, err)
	}
	return append([]*x509.Certificate{leaf}, a.chain...), nil
}

// Reload re-reads the CA files and reports whether the trust bundle changed. On
// error the CA keeps what it had.
func (c *CA) Reload() (bundleChanged bool, err error) {
	a, err := c.load(false)
	if err != nil {
		return false, err
	}
	old := c.auth.Swap(a)
	if !a.cert.Equal(old.cert) {
		c.log.Info("CA signing certificate changed", "serial", a.cert.SerialNumber.Text(16),
			"not_after", a.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return !bytes.Equal(a.bundlePEM, old.bundlePEM), nil
}

// Run reloads the CA files every ReloadInterval until ctx is done (a rotation
// by `controlplane ca rotate` or new operator files take effect), calling
// OnBundleChange when the trust bundle changes. It returns nil when ctx ends.
func (c *CA) Run(ctx context.Context) error {
	t := time.NewTicker(c.opts.ReloadInterval)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		changed, err := c.Reload()
		if err != nil {
			if err.Error() != lastErr { // once per distinct failure, not every tick
				c.log.Warn("CA reload failed; keeping the loaded CA", "err", err)
				lastErr = err.Error()
			}
			continue
		}
		lastErr = ""
		if changed {
			c.log.Info("trust bundle changed", "roots", len(c.auth.Load().roots))
			if c.opts.OnBundleChange != nil {
				c.opts.OnBundleChange(c.BundlePEM())
			}
		}
	}
}

func (c *CA) load(create bool) (*authority, error) {
	var a *authority
	var err error
	if c.opts.CertFile != "" {
		a, err = c.loadOperator()
	} else {
		a, err = c.loadManaged(create)
	}
	if err != nil {
		return nil, err
	}
	a.bundlePEM = EncodeCertificates(a.roots)
	return a, nil
}

// loadOperator reads --ca-cert, --ca-key and --ca-bundle.
func (c *CA) loadOperator() (*authority, error) {
	certs, err := readCertificates(c.opts.CertFile)
	if err != nil {
		return nil, fmt.Errorf("ca: certificate: %w", err)
	}
	signer, err := readSigner(c.opts.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("ca: key: %w", err)
	}
	cert := certs[0]
	if err := checkSigningCert(cert, signer); err != nil {
		return nil, fmt.Errorf("ca: %s: %w", c.opts.CertFile, err)
	}
	roots := []*x509.Certificate{cert}
	if c.opts.BundleFile != "" {
		if roots, err = readCertificates(c.opts.BundleFile); err != nil {
			return nil, fmt.Errorf("ca: bundle: %w", err)
		}
	}
	a := &authority{signer: signer, cert: cert, roots: roots, notAfter: cert.NotAfter}
	if !selfSigned(cert) {
		a.chain = append(a.chain, cert)
	}
	for _, ic := range certs[1:] {
		if selfSigned(ic) {
			continue // a root: trusted through the bundle, never sent
		}
		a.chain = append(a.chain, ic)
		if ic.NotAfter.Before(a.notAfter) {
			a.notAfter = ic.NotAfter
		}
	}
	// The chain must lead to the bundle, or no peer would accept our SVIDs.
	rootPool, interPool := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	for _, ic := range certs[1:] {
		interPool.AddCert(ic)
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots: rootPool, Intermediates: interPool, CurrentTime: c.opts.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("ca: %s does not verify against the trust bundle: %w", c.opts.CertFile, err)
	}
	return a, nil
}

// loadManaged reads <data-dir>/ca/, creating the root when create is set and
// there is none, and drops previous roots whose overlap has ended.
func (c *CA) loadManaged(create bool) (*authority, error) {
	dir := filepath.Join(c.opts.DataDir, caDir)
	keyPath, certPath := filepath.Join(dir, rootKeyFile), filepath.Join(dir, rootCertFile)
	if create {
		if err := os.MkdirAll(filepath.Join(dir, previousDir), 0o700); err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		if _, err := os.Stat(keyPath); errors.Is(err, fs.ErrNotExist) {
			if _, err := os.Stat(certPath); err == nil {
				return nil, fmt.Errorf("ca: %s exists without %s", certPath, keyPath)
			}
			if err := createRoot(dir, c.opts.TrustDomain, c.opts.Now()); err != nil {
				return nil, err
			}
			c.log.Info("created CA root", "dir", dir, "trust_domain", c.opts.TrustDomain.String())
		}
	}
	signer, err := readSigner(keyPath)
	if err != nil {
		return nil, fmt.Errorf("ca: root key: %w", err)
	}
	certs, err := readCertificates(certPath)
	if err != nil {
		return nil, fmt.Errorf("ca: root certificate: %w", err)
	}
	cert := certs[0]
	if err := checkSigningCert(cert, signer); err != nil {
		return nil, fmt.Errorf("ca: %s: %w", certPath, err)
	}
	if td, ok := certTrustDomain(cert); ok && td != c.opts.TrustDomain {
		return nil, fmt.Errorf("ca: %s is the root of trust domain %q, not %q: use another data directory",
			certPath, td, c.opts.TrustDomain)
	}
	now := c.opts.Now()
	if now.After(cert.NotAfter) {
		return nil, fmt.Errorf("ca: %s: %w at %s; run `controlplane ca rotate`", certPath, ErrExpired,
			cert.NotAfter.UTC().Format(time.RFC3339))
	}
	prev, err := c.loadPrevious(filepath.Join(dir, previousDir), now)
	if err != nil {
		return nil, err
	}
	roots := []*x509.Certificate{cert}
	for _, p := range prev {
		if !p.Equal(cert) {
			roots = append(roots, p)
		}
	}
	return &authority{signer: signer, cert: cert, roots: roots, notAfter: cert.NotAfter}, nil
}

// loadPrevious returns the rotated-out roots still trusted at now, newest
// first, and deletes those whose time is up.
func (c *CA) loadPrevious(dir string, now time.Time) ([]*x509.Certificate, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	type prevRoot struct {
		until time.Time
		cert  *x509.Certificate
	}
	var out []prevRoot
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".crt") {
			continue
		}
		path := filepath.Join(dir, name)
		until, ok := previousUntil(name)
		if !ok {
			c.log.Warn("ignoring file in previous roots: want <trusted-until>-<serial>.crt", "file", path)
			continue
		}
		certs, err := readCertificates(path)
		if err != nil {
			return nil, fmt.Errorf("ca: previous root: %w", err)
		}
		if cert := certs[0]; now.Before(until) && now.Before(cert.NotAfter) {
			out = append(out, prevRoot{until, cert})
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			c.log.Warn("cannot remove a previous root past its overlap", "file", path, "err", err)
			continue
		}
		c.log.Info("dropped previous root: overlap ended", "file", path, "trusted_until", until.UTC().Format(time.RFC3339))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].until.After(out[j].until) })
	certs := make([]*x509.Certificate, len(out))
	for i, p := range out {
		certs[i] = p.cert
	}
	return certs, nil
}

// previousTimeLayout names previous roots by their trusted-until time (UTC).
const previousTimeLayout = "20060102T150405Z"

func previousName(until time.Time, cert *x509.Certificate) string {
	serial := cert.SerialNumber.Text(16)
	if len(serial) > 16 {
		serial = serial[:16]
	}
	return until.UTC().Format(previousTimeLayout) + "-" + serial + ".crt"
}

func previousUntil(name string) (time.Time, bool) {
	ts, _, ok := strings.Cut(name, "-")
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(previousTimeLayout, ts)
	return t, err == nil
}

// createRoot writes a new root key and self-signed certificate into dir,
// failing if either file exists.
func createRoot(dir string, td spiffeid.TrustDomain, now time.Time) error {
	keyPEM, certPEM, err := newRoot(td, now)
	if err != nil {
		return err
	}
	keyPath := filepath.Join(dir, rootKeyFile)
	if err := writeNew(keyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("ca: root key: %w", err)
	}
	if err := writeNew(filepath.Join(dir, rootCertFile), certPEM, 0o644); err != nil {
		os.Remove(keyPath)
		return fmt.Errorf("ca: root certificate: %w", err)
	}
	return nil
}

// newRoot makes an ECDSA P-256 key and a self-signed root for td, returned as
// PEM. The root names the trust domain in its URI SAN and signs leaves only
// (path length 0).
func newRoot(td spiffeid.TrustDomain, now time.Time) (keyPEM, certPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: root key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"tinymesh"}, CommonName: "tinymesh root CA " + td.String()},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(RootLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: root certificate: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: root key: %w", err)
	}
	return keyPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// checkSigningCert checks that cert may sign certificates and that signer is
// its key.
func checkSigningCert(cert *x509.Certificate, signer crypto.Signer) error {
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return errors.New("not a CA certificate (basic constraints CA:true missing)")
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("key usage lacks keyCertSign")
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return errors.New("the key does not belong to the certificate")
	}
	return nil
}

func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}

// certTrustDomain returns the trust domain of a signing certificate's SPIFFE
// URI SAN, if it has one.
func certTrustDomain(c *x509.Certificate) (spiffeid.TrustDomain, bool) {
	for _, u := range c.URIs {
		if id, err := spiffeid.FromURI(u); err == nil {
			return id.TrustDomain(), true
		}
	}
	return spiffeid.TrustDomain{}, false
}

// randomSerial returns a random positive 128-bit serial number (RFC 5280,
// section 4.1.2.2: at most 20 octets).
func randomSerial() (*big.Int, error) {
	for {
		n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
		if err != nil {
			return nil, fmt.Errorf("ca: serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}
