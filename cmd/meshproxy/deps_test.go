package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoReflectMethodLookup guards the recommended build (-tags grpcnotrace, see
// docs/benchmarks.md, "meshproxy memory and allocations"). text/template calls
// reflect.Value.MethodByName; once that is linked, the linker keeps every exported
// method of every type (all getters and validators of the Envoy protos), which
// doubles the binary and adds about 5 MB of resident memory. grpc-go links it
// through golang.org/x/net/trace unless built with that tag; this test fails when
// anything else starts to.
func TestNoReflectMethodLookup(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", "-tags", "grpcnotrace", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		switch pkg {
		case "text/template", "html/template", "golang.org/x/net/trace":
			t.Errorf("meshproxy built with -tags grpcnotrace links %s, which keeps every exported method alive; find the importer with: go list -deps -f '{{.ImportPath}}: {{.Imports}}' -tags grpcnotrace ./cmd/meshproxy | grep %s", pkg, pkg)
		}
	}
}
