package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoReflectMethodLookup guards the recommended build (-tags grpcnotrace, see
// docs/benchmarks.md, "meshproxy memory and allocations"). text/template calls
// reflect.Value.MethodByName; once that is linked, the linker keeps every exported
// method of every type (all getters of the xDS protos), which
// doubles the binary and adds about 5 MB of resident memory. grpc-go links it
// through golang.org/x/net/trace unless built with that tag; this test fails when
// anything else starts to.
func TestNoReflectMethodLookup(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	for _, pkg := range releaseDeps(t) {
		switch pkg {
		case "text/template", "html/template", "golang.org/x/net/trace":
			t.Errorf("meshproxy built with -tags grpcnotrace links %s, which keeps every exported method alive; find the importer with: go list -deps -f '{{.ImportPath}}: {{.Imports}}' -tags grpcnotrace ./cmd/meshproxy | grep %s", pkg, pkg)
		}
	}
}

// TestNoHeavyModules keeps modules out of the sidecar whose init and
// descriptors cost resident memory in every pod: Kubernetes (the control
// plane's), and go-control-plane's Envoy protos, which meshproxy replaces with
// the trimmed mirrors in proto/envoywire (docs/benchmarks.md, "Idle memory").
func TestNoHeavyModules(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	for _, pkg := range releaseDeps(t) {
		for _, heavy := range []string{"k8s.io/", "sigs.k8s.io/", "github.com/envoyproxy/go-control-plane", "github.com/cncf/xds"} {
			if strings.HasPrefix(pkg, heavy) {
				t.Errorf("meshproxy links %s; find the importer with: go list -deps -f '{{.ImportPath}}: {{.Imports}}' -tags grpcnotrace ./cmd/meshproxy | grep %s", pkg, pkg)
			}
		}
	}
}

// releaseDeps lists the packages the release build of meshproxy links.
func releaseDeps(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-tags", "grpcnotrace", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 100 {
		t.Fatalf("go list -deps listed %d packages, not the sidecar's closure", len(deps))
	}
	return deps
}
