package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	testTD = spiffeid.RequireTrustDomainFromString("cluster.local")
	testID = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/backend")
)

func newCA(t *testing.T, opts Options) *CA {
	t.Helper()
	if opts.TrustDomain.IsZero() {
		opts.TrustDomain = testTD
	}
	c, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func raw(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}

func keyPEM(t *testing.T, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func TestSignIssuesSPIFFEConformantSVID(t *testing.T) {
	c := newCA(t, Options{DataDir: t.TempDir()})
	key := newKey(t)
	before := time.Now()
	chain, err := c.Sign(key.Public(), testID, time.Hour)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if len(chain) != 1 {
		t.Fatalf("chain has %d certificates, want 1 (the leaf; the root is in the bundle)", len(chain))
	}
	// go-spiffe checks the SPIFFE X.509-SVID rules for the leaf and the key...
	if _, err := x509svid.ParseRaw(slices.Concat(raw(chain)...), mustPKCS8(t, key)); err != nil {
		t.Fatalf("x509svid.ParseRaw: %v", err)
	}
	// ... and the chain against the bundle.
	id, _, err := x509svid.ParseAndVerify(raw(chain), c)
	if err != nil {
		t.Fatalf("x509svid.ParseAndVerify: %v", err)
	}
	if id != testID {
		t.Errorf("verified ID = %s, want %s", id, testID)
	}
	leaf := chain[0]
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		t.Errorf("leaf IsCA=%v BasicConstraintsValid=%v, want CA:false present", leaf.IsCA, leaf.BasicConstraintsValid)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("leaf KeyUsage = %v, want digitalSignature only", leaf.KeyUsage)
	}
	if want := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}; !slices.Equal(leaf.ExtKeyUsage, want) {
		t.Errorf("leaf ExtKeyUsage = %v, want %v", leaf.ExtKeyUsage, want)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != testID.String() || len(leaf.DNSNames) != 0 {
		t.Errorf("leaf SANs: URIs %v DNS %v, want only %s", leaf.URIs, leaf.DNSNames, testID)
	}
	if !leaf.NotBefore.Before(before) {
		t.Errorf("leaf NotBefore %s not before issuance %s (clock skew allowance)", leaf.NotBefore, before)
	}
	if got := leaf.NotAfter.Sub(before); got < time.Hour-time.Second || got > time.Hour+time.Minute {
		t.Errorf("leaf lives %s after issuance, want about 1h", got)
	}
	// The signing certificate names the trust domain.
	root := c.Bundle()[0]
	if len(root.URIs) != 1 || root.URIs[0].String() != "spiffe://cluster.local" {
		t.Errorf("root URIs = %v, want [spiffe://cluster.local]", root.URIs)
	}
	chain2, err := c.Sign(key.Public(), testID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if chain2[0].SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Errorf("two leaves share serial %s", leaf.SerialNumber)
	}
}

func mustPKCS8(t *testing.T, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestSignRefusesOtherTrustDomain(t *testing.T) {
	c := newCA(t, Options{DataDir: t.TempDir()})
	other := spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/backend")
	if _, err := c.Sign(newKey(t).Public(), other, time.Hour); err == nil {
		t.Fatal("Sign for another trust domain succeeded")
	}
}

func TestRootFilesAndRestart(t *testing.T) {
	dir := t.TempDir()
	c1 := newCA(t, Options{DataDir: dir})
	for path, want := range map[string]os.FileMode{
		filepath.Join(dir, "ca"):          0o700 | os.ModeDir,
		filepath.Join(dir, "ca/root.key"): 0o600,
		filepath.Join(dir, "ca/root.crt"): 0o644,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode(); got != want {
			t.Errorf("%s mode = %v, want %v", path, got, want)
		}
	}
	root := c1.Bundle()[0]
	if !root.IsCA || root.NotAfter.Sub(root.NotBefore) < 9*365*24*time.Hour {
		t.Errorf("root: IsCA=%v lifetime %s, want a CA for about 10 years", root.IsCA, root.NotAfter.Sub(root.NotBefore))
	}
	// A restart reuses the root: SVIDs issued before still verify.
	chain, err := c1.Sign(newKey(t).Public(), testID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c2 := newCA(t, Options{DataDir: dir})
	if string(c2.BundlePEM()) != string(c1.BundlePEM()) {
		t.Fatal("restart made a new root")
	}
	if _, _, err := x509svid.Verify(chain, c2); err != nil {
		t.Errorf("SVID from before the restart: %v", err)
	}
}

func TestNewRefusesAnotherTrustDomainsRoot(t *testing.T) {
	dir := t.TempDir()
	newCA(t, Options{DataDir: dir})
	_, err := New(Options{DataDir: dir, TrustDomain: spiffeid.RequireTrustDomainFromString("example.org")})
	if err == nil {
		t.Fatal("New with another trust domain over an existing root succeeded")
	}
}

// operatorPKI writes a root and an intermediate under it, as an operator's PKI
// would, and returns the file paths.
type operatorPKI struct {
	rootCrt, interCrt, interKey string
	root, inter                 *x509.Certificate
}

func newOperatorPKI(t *testing.T, interLifetime time.Duration) operatorPKI {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	rootKey, interKey := newKey(t), newKey(t)
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "operator root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(rootDER)
	interTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "mesh intermediate"},
		URIs:      []*url.URL{testTD.ID().URL()},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(interLifetime),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	interDER, err := x509.CreateCertificate(rand.Reader, interTmpl, root, interKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	inter, _ := x509.ParseCertificate(interDER)
	p := operatorPKI{
		rootCrt: filepath.Join(dir, "root.crt"), interCrt: filepath.Join(dir, "ca.crt"), interKey: filepath.Join(dir, "ca.key"),
		root: root, inter: inter,
	}
	for path, data := range map[string][]byte{
		p.rootCrt:  EncodeCertificates([]*x509.Certificate{root}),
		p.interCrt: EncodeCertificates([]*x509.Certificate{inter}),
		p.interKey: keyPEM(t, interKey),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func TestOperatorIntermediate(t *testing.T) {
	pki := newOperatorPKI(t, 30*time.Minute)
	c := newCA(t, Options{CertFile: pki.interCrt, KeyFile: pki.interKey, BundleFile: pki.rootCrt})
	chain, err := c.Sign(newKey(t).Public(), testID, time.Hour)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if len(chain) != 2 || !chain[1].Equal(pki.inter) {
		t.Fatalf("chain has %d certificates, want the leaf and the intermediate", len(chain))
	}
	// Verified against the operator's root alone.
	id, _, err := x509svid.ParseAndVerify(raw(chain), x509bundle.FromX509Authorities(testTD, []*x509.Certificate{pki.root}))
	if err != nil {
		t.Fatalf("x509svid.ParseAndVerify under the operator root: %v", err)
	}
	if id != testID {
		t.Errorf("ID = %s, want %s", id, testID)
	}
	if got := c.Bundle(); len(got) != 1 || !got[0].Equal(pki.root) {
		t.Errorf("bundle = %d certificates, want the operator root", len(got))
	}
	// The intermediate ends in 30 minutes: so does the leaf, whatever the TTL.
	if !chain[0].NotAfter.Equal(pki.inter.NotAfter) {
		t.Errorf("leaf NotAfter = %s, want the intermediate's %s", chain[0].NotAfter, pki.inter.NotAfter)
	}
}

func TestOperatorBundleDefaultsToTheCACertificate(t *testing.T) {
	pki := newOperatorPKI(t, time.Hour)
	c := newCA(t, Options{CertFile: pki.interCrt, KeyFile: pki.interKey})
	chain, err := c.Sign(newKey(t).Public(), testID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Bundle(); len(got) != 1 || !got[0].Equal(pki.inter) {
		t.Fatalf("bundle = %d certificates, want the CA certificate", len(got))
	}
	if _, _, err := x509svid.Verify(chain, c); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestOperatorRefusesBadFiles(t *testing.T) {
	pki := newOperatorPKI(t, time.Hour)
	other := newOperatorPKI(t, time.Hour)
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"key of another certificate", Options{CertFile: pki.interCrt, KeyFile: other.interKey}},
		{"bundle that does not lead to the certificate", Options{CertFile: pki.interCrt, KeyFile: pki.interKey, BundleFile: other.rootCrt}},
		{"certificate without key", Options{CertFile: pki.interCrt}},
		{"missing file", Options{CertFile: pki.interCrt + ".missing", KeyFile: pki.interKey}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.TrustDomain = testTD
			if _, err := New(tc.opts); err == nil {
				t.Fatal("New succeeded")
			}
		})
	}
}

func TestRotateOverlap(t *testing.T) {
	dir := t.TempDir()
	c := newCA(t, Options{DataDir: dir})
	oldRoot := c.Bundle()[0]
	oldChain, err := c.Sign(newKey(t).Public(), testID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	rot, err := Rotate(dir, 2*time.Hour)
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if d := time.Until(rot.TrustedUntil); d < time.Hour || d > 2*time.Hour {
		t.Errorf("TrustedUntil in %s, want about 2h", d)
	}
	changed, err := c.Reload()
	if err != nil || !changed {
		t.Fatalf("Reload = %v, %v; want a changed bundle", changed, err)
	}
	bundle := c.Bundle()
	if len(bundle) != 2 || bundle[0].Equal(oldRoot) || !bundle[1].Equal(oldRoot) {
		t.Fatalf("bundle during the overlap: %d roots, want the new one then the old one", len(bundle))
	}
	if _, _, err := x509svid.Verify(oldChain, c); err != nil {
		t.Errorf("an SVID of the old root during the overlap: %v", err)
	}
	newChain, err := c.Sign(newKey(t).Public(), testID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := newChain[0].CheckSignatureFrom(bundle[0]); err != nil {
		t.Errorf("new SVIDs are not signed by the new root: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, "ca/root.key"))
	if err != nil || fi.Mode() != 0o600 {
		t.Errorf("root.key after rotation: %v, %v; want mode 0600", fi.Mode(), err)
	}

	// A control plane starting after the overlap trusts only the new root, and
	// forgets the old one's file.
	later := newCA(t, Options{DataDir: dir, Now: func() time.Time { return time.Now().Add(3 * time.Hour) }})
	if b := later.Bundle(); len(b) != 1 || !b[0].Equal(bundle[0]) {
		t.Fatalf("bundle after the overlap: %d roots, want only the new one", len(b))
	}
	if _, _, err := x509svid.Verify(oldChain, later); err == nil {
		t.Error("an SVID of the old root verifies after the overlap")
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "ca/previous")); len(left) != 0 {
		t.Errorf("ca/previous still holds %d files after the overlap", len(left))
	}
}

func TestRotateWithoutOverlap(t *testing.T) {
	dir := t.TempDir()
	c := newCA(t, Options{DataDir: dir})
	if _, err := Rotate(dir, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	if n := len(c.Bundle()); n != 1 {
		t.Errorf("bundle has %d roots, want 1", n)
	}
}

func TestRotateNeedsARoot(t *testing.T) {
	if _, err := Rotate(t.TempDir(), time.Hour); err == nil {
		t.Fatal("Rotate of an empty data directory succeeded")
	}
}

func TestRunReloadsAfterRotation(t *testing.T) {
	dir := t.TempDir()
	bundles := make(chan []byte, 4)
	c := newCA(t, Options{DataDir: dir, ReloadInterval: 10 * time.Millisecond,
		OnBundleChange: func(b []byte) { bundles <- b }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	if _, err := Rotate(dir, time.Hour); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-bundles:
		certs, err := parseCertificatesPEM(b)
		if err != nil || len(certs) != 2 {
			t.Fatalf("bundle after rotation: %d roots, %v; want 2", len(certs), err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no bundle change within 10s of the rotation")
	}
}
