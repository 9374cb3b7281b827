package jointoken

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	backend  = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/backend")
	frontend = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/frontend")
)

func TestRedeemOnceEvenAfterRestart(t *testing.T) {
	dir := t.TempDir()
	token, err := Mint(dir, backend, time.Hour)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Redeem(token, backend)
	if err != nil {
		t.Fatalf("Redeem: %v", err)
	}
	if c.SPIFFEID != backend.String() {
		t.Errorf("claims name %s, want %s", c.SPIFFEID, backend)
	}
	if _, err := s.Redeem(token, backend); !errors.Is(err, ErrUsed) {
		t.Errorf("replay: err = %v, want ErrUsed", err)
	}
	restarted, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := restarted.Redeem(token, backend); !errors.Is(err, ErrUsed) {
		t.Errorf("replay after a restart: err = %v, want ErrUsed", err)
	}
}

func TestRedeemRefuses(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	s, err := open(dir, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	good, err := s.Mint(backend, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherDir := t.TempDir()
	foreign, err := Mint(otherDir, backend, time.Hour) // another data directory's key
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	// Same MAC, claims edited to another identity.
	claims, _ := base64.RawURLEncoding.DecodeString(parts[1])
	edited := strings.Replace(string(claims), "backend", "frontend", 1)
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(edited)) + "." + parts[2]
	flipped := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString([]byte("not the mac at all, 32 bytes...."))

	for _, tc := range []struct {
		name  string
		token string
		want  spiffeid.ID
		at    time.Time
		err   error
	}{
		{"expired", good, backend, now.Add(time.Hour + time.Second), ErrExpired},
		{"other identity", good, frontend, now, ErrWrongID},
		{"tampered claims", tampered, frontend, now, ErrSignature},
		{"tampered mac", flipped, backend, now, ErrSignature},
		{"minted with another key", foreign, backend, now, ErrSignature},
		{"empty", "", backend, now, ErrMalformed},
		{"wrong version", "tmjt0." + parts[1] + "." + parts[2], backend, now, ErrMalformed},
		{"two parts", parts[0] + "." + parts[1], backend, now, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.now = func() time.Time { return tc.at }
			if _, err := s.Redeem(tc.token, tc.want); !errors.Is(err, tc.err) {
				t.Errorf("Redeem: err = %v, want %v", err, tc.err)
			}
		})
	}
	// None of the refusals used the token up.
	s.now = func() time.Time { return now }
	if _, err := s.Redeem(good, backend); err != nil {
		t.Errorf("Redeem after refusals: %v", err)
	}
}

func TestKeyFileAndPurge(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	s, err := open(dir, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "tokens/token.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o600 {
		t.Errorf("token.key mode = %v, want 0600", fi.Mode())
	}
	short, _ := s.Mint(backend, time.Minute)
	if _, err := s.Redeem(short, backend); err != nil {
		t.Fatal(err)
	}
	used := filepath.Join(dir, "tokens/used")
	if n := countFiles(t, used); n != 1 {
		t.Fatalf("%d used markers, want 1", n)
	}
	// Once the token expired its marker goes with the next redemption.
	long, _ := s.Mint(backend, time.Hour)
	s.now = func() time.Time { return now.Add(2 * time.Minute) }
	if _, err := s.Redeem(long, backend); err != nil {
		t.Fatal(err)
	}
	if n := countFiles(t, used); n != 1 {
		t.Errorf("%d used markers after the first token expired, want 1", n)
	}
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

func TestMintValidates(t *testing.T) {
	if _, err := Mint(t.TempDir(), backend, 0); err == nil {
		t.Error("Mint with ttl 0 succeeded")
	}
	if _, err := Mint(t.TempDir(), spiffeid.ID{}, time.Hour); err == nil {
		t.Error("Mint without an ID succeeded")
	}
}

// FuzzRedeem: no input panics, and only tokens Mint made redeem.
func FuzzRedeem(f *testing.F) {
	dir := f.TempDir()
	s, err := Open(dir)
	if err != nil {
		f.Fatal(err)
	}
	good, err := s.Mint(backend, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add("tmjt1..")
	f.Add("tmjt1.e30.")
	f.Add("")
	f.Fuzz(func(t *testing.T, token string) {
		if token == good {
			return // redeemable once; not a parser question
		}
		if _, err := s.Redeem(token, backend); err == nil {
			t.Errorf("Redeem(%q) accepted a token Mint did not make", token)
		}
	})
}
