package svid

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"sync"
	"time"
)

// KeyStore holds the private keys this proxy generated for its SVIDs, so the
// xDS client can pair the SDS "default" secret's certificate chain with its key
// (docs/identity.md, "Delivery"; xds/resource's KeyFinder). It holds at most
// three: the key of a request in flight (the control plane may serve the new
// chain over SDS before the Sign response arrives), the current one, and the
// previous one (a secret naming it may still be on its way). A key whose
// certificate expired is forgotten. Safe for concurrent use.
type KeyStore struct {
	now func() time.Time // set in newKeyStore, read-only after

	mu      sync.Mutex
	pending *storedKey // guarded by mu: key of a Sign not yet answered
	current *storedKey // guarded by mu
	prev    *storedKey // guarded by mu
}

type storedKey struct {
	key      *ecdsa.PrivateKey
	pem      []byte    // PKCS#8
	notAfter time.Time // of its certificate; zero while pending
}

func newKeyStore(now func() time.Time) *KeyStore { return &KeyStore{now: now} }

// PrivateKeyPEM returns the PKCS#8 PEM of the key whose public half is pub, if
// the store has it. The returned slice is the caller's.
func (k *KeyStore) PrivateKeyPEM(pub crypto.PublicKey) ([]byte, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	for _, s := range []*storedKey{k.pending, k.current, k.prev} {
		if s == nil || (!s.notAfter.IsZero() && now.After(s.notAfter)) {
			continue
		}
		if s.key.PublicKey.Equal(pub) {
			return bytes.Clone(s.pem), true
		}
	}
	return nil, false
}

// Len returns how many unexpired keys the store holds.
func (k *KeyStore) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.dropExpiredLocked()
	n := 0
	for _, s := range []*storedKey{k.pending, k.current, k.prev} {
		if s != nil {
			n++
		}
	}
	return n
}

// setPending records the key of a request about to be sent.
func (k *KeyStore) setPending(key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("svid: encode key: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.pending = &storedKey{key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})}
	return nil
}

// promote makes the pending key current, with its certificate's expiry; the
// current one becomes the previous one.
func (k *KeyStore) promote(key *ecdsa.PrivateKey, notAfter time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.pending == nil || !k.pending.key.Equal(key) {
		return // cannot happen: one goroutine renews; keep the store as it is
	}
	k.pending.notAfter = notAfter
	k.prev, k.current, k.pending = k.current, k.pending, nil
	k.dropExpiredLocked()
}

func (k *KeyStore) dropExpiredLocked() {
	now := k.now()
	if k.prev != nil && now.After(k.prev.notAfter) {
		k.prev = nil
	}
	if k.current != nil && now.After(k.current.notAfter) {
		k.current = nil
	}
}
