package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestSidecarLinksNoHeavyModules keeps modules out of the sidecar whose init
// and descriptors cost resident memory in every pod: Kubernetes (the control
// plane's), and go-control-plane's Envoy protos, which meshproxy replaces with
// the trimmed mirrors in proto/envoywire (docs/benchmarks.md, "Idle memory").
func TestSidecarLinksNoHeavyModules(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 100 {
		t.Fatalf("go list -deps listed %d packages; expected the sidecar's full closure", len(deps))
	}
	for _, p := range deps {
		for _, banned := range []string{"k8s.io/", "sigs.k8s.io/", "github.com/envoyproxy/go-control-plane", "github.com/cncf/xds"} {
			if strings.HasPrefix(p, banned) {
				t.Errorf("meshproxy links %s", p)
			}
		}
	}
}
