package main

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// root is the repository root, from this package's directory.
const root = "../../.."

// TestCommittedFilesAreCurrent fails when proto/envoywire or the descriptor
// set is not what wiregen writes for the go-control-plane in go.mod: after a
// go-control-plane upgrade or a change to the mirrored list, run wiregen and
// buf generate (see the package doc).
func TestCommittedFilesAreCurrent(t *testing.T) {
	want, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]byte{}
	dir := filepath.Join(root, OutDir)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".proto") {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		got[filepath.ToSlash(rel)], err = os.ReadFile(p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, w := range want {
		if g, ok := got[name]; !ok {
			t.Errorf("%s/%s is missing", OutDir, name)
		} else if !bytes.Equal(g, w) {
			t.Errorf("%s/%s is stale", OutDir, name)
		}
		delete(got, name)
	}
	for name := range got {
		t.Errorf("%s/%s is not generated any more", OutDir, name)
	}
	set, err := Descriptors()
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(root, DescriptorsFile)); err != nil || !bytes.Equal(b, set) {
		t.Errorf("%s is stale or missing (%v)", DescriptorsFile, err)
	}
	if t.Failed() {
		t.Log("regenerate: go run ./xds/internal/wiregen && buf generate")
	}
}
