// Package jointoken mints and redeems the control plane's join tokens: the
// credential a proxy presents for its first SVID (docs/identity.md,
// "Issuance"). A token is HMAC-SHA256-signed with a key kept in
// <data-dir>/tokens/token.key (mode 0600) and carries a random token ID, the
// one SPIFFE ID it may be redeemed for, and an expiry. Mint works offline on the
// same data directory, so `controlplane token create` needs no running server.
//
// A token is single use: Redeem records its ID under <data-dir>/tokens/used/
// until it expires, so a replay fails after a control-plane restart too.
//
// Token format: "tmjt1." + base64url(JSON claims) + "." + base64url(HMAC over
// everything before the last dot). A Store is safe for concurrent use; two
// processes sharing a data directory cannot both redeem one token (the used
// marker is created exclusively).
package jointoken

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Errors Redeem returns, each wrapped with detail.
var (
	ErrMalformed    = errors.New("malformed join token")
	ErrSignature    = errors.New("join token signature invalid")
	ErrExpired      = errors.New("join token expired")
	ErrUsed         = errors.New("join token already used")
	ErrWrongID      = errors.New("join token is for another SPIFFE ID")
	errKeyNotLoaded = errors.New("join token key missing")
)

// DefaultTTL is a token's lifetime unless the minter says otherwise.
const DefaultTTL = time.Hour

const (
	version  = "tmjt1"
	dirName  = "tokens"
	keyFile  = "token.key"
	usedDir  = "used"
	keyBytes = 32
	idBytes  = 16
)

// b64 decodes canonical encodings only, so a token has exactly one spelling.
var b64 = base64.RawURLEncoding.Strict()

// Claims is what a token says.
type Claims struct {
	// ID is the token ID (hex), recorded when the token is used.
	ID string `json:"jti"`
	// SPIFFEID is the only identity the token may be redeemed for.
	SPIFFEID string `json:"sub"`
	// Expires is the token's end, Unix seconds.
	Expires int64 `json:"exp"`
}

// ExpiresAt is Expires as a time.
func (c Claims) ExpiresAt() time.Time { return time.Unix(c.Expires, 0) }

// Store mints and redeems tokens in one data directory.
type Store struct {
	// set in Open, read-only after
	dir string // <data-dir>/tokens
	key []byte
	now func() time.Time

	mu        sync.Mutex // guards lastPurge; serialises purges
	lastPurge time.Time
}

// Open loads the token key of dataDir, creating the key (and the directories)
// on first use.
func Open(dataDir string) (*Store, error) {
	return open(dataDir, time.Now)
}

func open(dataDir string, now func() time.Time) (*Store, error) {
	if dataDir == "" {
		return nil, errors.New("join tokens: a data directory is required")
	}
	dir := filepath.Join(dataDir, dirName)
	if err := os.MkdirAll(filepath.Join(dir, usedDir), 0o700); err != nil {
		return nil, fmt.Errorf("join tokens: %w", err)
	}
	key, err := loadOrCreateKey(filepath.Join(dir, keyFile))
	if err != nil {
		return nil, err
	}
	return &Store{dir: dir, key: key, now: now}, nil
}

// Mint returns a new token for id, valid for ttl, using the key in dataDir.
func Mint(dataDir string, id spiffeid.ID, ttl time.Duration) (string, error) {
	s, err := Open(dataDir)
	if err != nil {
		return "", err
	}
	return s.Mint(id, ttl)
}

// Mint returns a new token for id, valid for ttl.
func (s *Store) Mint(id spiffeid.ID, ttl time.Duration) (string, error) {
	if id.IsZero() {
		return "", errors.New("join tokens: mint: no SPIFFE ID")
	}
	if ttl <= 0 {
		return "", fmt.Errorf("join tokens: mint: ttl %s: must be positive", ttl)
	}
	var raw [idBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("join tokens: mint: %w", err)
	}
	c := Claims{ID: hex.EncodeToString(raw[:]), SPIFFEID: id.String(), Expires: s.now().Add(ttl).Unix()}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("join tokens: mint: %w", err)
	}
	signed := version + "." + base64.RawURLEncoding.EncodeToString(payload)
	return signed + "." + base64.RawURLEncoding.EncodeToString(s.mac(signed)), nil
}

// Redeem checks token (format, signature, expiry, that it is for want) and
// marks it used, so it never redeems again. Errors wrap ErrMalformed,
// ErrSignature, ErrExpired, ErrWrongID or ErrUsed; a token refused for being
// for another ID is not used up.
func (s *Store) Redeem(token string, want spiffeid.ID) (Claims, error) {
	c, err := s.verify(token)
	if err != nil {
		return Claims{}, err
	}
	now := s.now()
	if !now.Before(c.ExpiresAt()) {
		return c, fmt.Errorf("%w at %s", ErrExpired, c.ExpiresAt().UTC().Format(time.RFC3339))
	}
	if c.SPIFFEID != want.String() {
		return c, fmt.Errorf("%w: token for %s, request for %s", ErrWrongID, c.SPIFFEID, want)
	}
	s.purge(now)
	// The marker's name starts with the expiry so purge needs no reads; the
	// exclusive create is what makes a token single use, even across
	// processes.
	marker := filepath.Join(s.dir, usedDir, strconv.FormatInt(c.Expires, 10)+"-"+c.ID)
	f, err := os.OpenFile(marker, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return c, fmt.Errorf("%w (token ID %s)", ErrUsed, c.ID)
	}
	if err != nil {
		return c, fmt.Errorf("join tokens: record use: %w", err)
	}
	if err := f.Close(); err != nil {
		return c, fmt.Errorf("join tokens: record use: %w", err)
	}
	return c, nil
}

// verify checks the format and the MAC and returns the claims.
func (s *Store) verify(token string) (Claims, error) {
	token = strings.TrimSpace(token)
	ver, rest, ok := strings.Cut(token, ".")
	if !ok || ver != version {
		return Claims{}, fmt.Errorf("%w: want %s.<claims>.<mac>", ErrMalformed, version)
	}
	payloadB64, macB64, ok := strings.Cut(rest, ".")
	if !ok {
		return Claims{}, fmt.Errorf("%w: want %s.<claims>.<mac>", ErrMalformed, version)
	}
	mac, err := b64.DecodeString(macB64)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: mac: %v", ErrMalformed, err)
	}
	if !hmac.Equal(mac, s.mac(ver+"."+payloadB64)) {
		return Claims{}, ErrSignature
	}
	payload, err := b64.DecodeString(payloadB64)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: claims: %v", ErrMalformed, err)
	}
	var c Claims
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Claims{}, fmt.Errorf("%w: claims: %v", ErrMalformed, err)
	}
	// The ID names a file: accept only what Mint makes.
	if b, err := hex.DecodeString(c.ID); err != nil || len(b) != idBytes {
		return Claims{}, fmt.Errorf("%w: token ID %q", ErrMalformed, c.ID)
	}
	return c, nil
}

func (s *Store) mac(signed string) []byte {
	h := hmac.New(sha256.New, s.key)
	h.Write([]byte(signed))
	return h.Sum(nil)
}

// purge deletes used markers of expired tokens, at most once a minute: an
// expired token is refused before its marker is looked at.
func (s *Store) purge(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.lastPurge) < time.Minute {
		return
	}
	s.lastPurge = now
	dir := filepath.Join(s.dir, usedDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return // best effort; markers of expired tokens are harmless
	}
	for _, e := range entries {
		exp, _, ok := strings.Cut(e.Name(), "-")
		if !ok {
			continue
		}
		if sec, err := strconv.ParseInt(exp, 10, 64); err == nil && now.Unix() > sec {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// loadOrCreateKey reads the HMAC key, creating it (mode 0600) if absent. Two
// processes creating it at once agree on one: the loser reads the winner's.
func loadOrCreateKey(path string) ([]byte, error) {
	for range 3 {
		key, err := os.ReadFile(path)
		if err == nil {
			if len(key) < keyBytes {
				return nil, fmt.Errorf("join tokens: %s: key is %d bytes, want %d", path, len(key), keyBytes)
			}
			return key, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("join tokens: %w", err)
		}
		key = make([]byte, keyBytes)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("join tokens: key: %w", err)
		}
		tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
		if err != nil {
			return nil, fmt.Errorf("join tokens: %w", err)
		}
		_, werr := tmp.Write(key)
		cerr := tmp.Close()
		if err := errors.Join(werr, cerr); err != nil {
			os.Remove(tmp.Name())
			return nil, fmt.Errorf("join tokens: key: %w", err)
		}
		// CreateTemp makes the file 0600; link fails if another process won.
		err = os.Link(tmp.Name(), path)
		os.Remove(tmp.Name())
		if err == nil {
			return key, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("join tokens: key: %w", err)
		}
	}
	return nil, fmt.Errorf("join tokens: %s: %w", path, errKeyNotLoaded)
}
