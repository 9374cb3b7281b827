package translate_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/tinymesh/tinymesh/xds/mesh"
	"github.com/tinymesh/tinymesh/xds/source/file"
	"github.com/tinymesh/tinymesh/xds/translate"
)

// fuzzOptions serve both secrets, so TLS contexts and secrets are both exercised.
var fuzzOptions = translate.Options{TrustBundle: []byte(bundlePEM), Certificate: []byte(chainPEM)}

// FuzzTranslate feeds arbitrary YAML through decode and validation; every model
// that validates must translate without error or panic for sidecar and proxyless
// nodes, pass the consistency check, and give the same bytes twice.
func FuzzTranslate(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/mesh/*.yaml")
	var all []byte
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		all = append(all, b...)
		all = append(all, "\n---\n"...)
	}
	f.Add(all)
	f.Add([]byte(base + "  - backendRefs: [{name: backend-v1, port: 8080, weight: 0}]\n"))
	nodes := []mesh.Workload{frontend, backendV1, db, client}
	f.Fuzz(func(t *testing.T, data []byte) {
		m := &mesh.Model{}
		if err := file.Decode("fuzz.yaml", data, m); err != nil {
			return
		}
		m.Normalize()
		if err := m.Validate(); err != nil {
			return
		}
		for _, n := range nodes {
			a, err := translate.Translate(m, nodes, &n, fuzzOptions)
			if err != nil {
				t.Fatalf("Translate(%s) of a valid model: %v", n.NodeID, err)
			}
			if err := translate.Consistent(a); err != nil {
				t.Fatalf("Consistent(%s): %v", n.NodeID, err)
			}
			b, err := translate.Translate(m, nodes, &n, fuzzOptions)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(marshal(t, a), marshal(t, b)) {
				t.Fatalf("node %s: two translations differ", n.NodeID)
			}
		}
	})
}
