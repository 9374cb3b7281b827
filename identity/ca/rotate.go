package ca

import (
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Rotation describes what Rotate did.
type Rotation struct {
	// NewRoot and OldRoot are PEM certificates.
	NewRoot, OldRoot []byte
	// TrustedUntil is when the old root leaves the trust bundle; zero when it
	// left at once (no overlap).
	TrustedUntil time.Time
}

// Rotate replaces the self-managed root in dataDir/ca/ by a new one for the
// same trust domain, keeping the old certificate in ca/previous/ as trusted
// for overlap (not at all when overlap is 0). It is safe to run while a control
// plane uses dataDir: that reloads within its ReloadInterval, signs with the new
// root from then on and serves both roots in the trust bundle until the overlap
// ends. The old key is deleted.
func Rotate(dataDir string, overlap time.Duration) (Rotation, error) {
	if overlap < 0 {
		return Rotation{}, fmt.Errorf("ca: rotate: overlap %s: must not be negative", overlap)
	}
	dir := filepath.Join(dataDir, caDir)
	keyPath, certPath := filepath.Join(dir, rootKeyFile), filepath.Join(dir, rootCertFile)
	signer, err := readSigner(keyPath)
	if err != nil {
		return Rotation{}, fmt.Errorf("ca: rotate: no root to rotate (start the control plane once first): %w", err)
	}
	certs, err := readCertificates(certPath)
	if err != nil {
		return Rotation{}, fmt.Errorf("ca: rotate: %w", err)
	}
	old := certs[0]
	if err := checkSigningCert(old, signer); err != nil {
		return Rotation{}, fmt.Errorf("ca: rotate: %s: %w", certPath, err)
	}
	td, ok := certTrustDomain(old)
	if !ok {
		return Rotation{}, fmt.Errorf("ca: rotate: %s names no trust domain (URI SAN spiffe://<trust domain>)", certPath)
	}
	now := time.Now()
	keyPEM, certPEM, err := newRoot(td, now)
	if err != nil {
		return Rotation{}, err
	}
	r := Rotation{NewRoot: certPEM, OldRoot: EncodeCertificates([]*x509.Certificate{old})}
	if overlap > 0 {
		r.TrustedUntil = now.Add(overlap)
		prev := filepath.Join(dir, previousDir)
		if err := os.MkdirAll(prev, 0o700); err != nil {
			return Rotation{}, fmt.Errorf("ca: rotate: %w", err)
		}
		if err := writeNew(filepath.Join(prev, previousName(r.TrustedUntil, old)), r.OldRoot, 0o644); err != nil {
			return Rotation{}, fmt.Errorf("ca: rotate: keep old root: %w", err)
		}
	}
	// Both files are written in full before either is renamed into place. Key
	// first, then certificate: a reload between the two renames sees a
	// mismatched pair, refuses it and keeps the old state until the next tick.
	keyTmp, err := writeTemp(dir, keyPEM, 0o600)
	if err != nil {
		return Rotation{}, fmt.Errorf("ca: rotate: %w", err)
	}
	defer os.Remove(keyTmp)
	certTmp, err := writeTemp(dir, certPEM, 0o644)
	if err != nil {
		return Rotation{}, fmt.Errorf("ca: rotate: %w", err)
	}
	defer os.Remove(certTmp)
	if err := os.Rename(keyTmp, keyPath); err != nil {
		return Rotation{}, fmt.Errorf("ca: rotate: %w", err)
	}
	if err := os.Rename(certTmp, certPath); err != nil {
		return Rotation{}, fmt.Errorf("ca: rotate: %s is new but %s is not: %w", keyPath, certPath, err)
	}
	return r, nil
}
