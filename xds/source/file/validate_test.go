package file_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/tinymesh/tinymesh/xds/mesh"
	"github.com/tinymesh/tinymesh/xds/source/file"
)

// TestValidateCollectsEveryProblem: every document that fails to decode, in
// every file, is one problem; once all decode, every validation failure is one.
func TestValidateCollectsEveryProblem(t *testing.T) {
	t.Run("decode", func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, "a.yaml", `
apiVersion: v1
kind: Service
metadata: {name: a}
spec: {selector: {app: a}, ports: [{port: 80}], bogus: 1}
---
apiVersion: v1
kind: Service
metadata: {name: ok}
spec: {selector: {app: ok}, ports: [{port: 80}]}
---
apiVersion: v9
kind: Thing
metadata: {name: t}
`)
		write(t, dir, "b.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: [}\n")
		m, problems := file.Validate(dir, "")
		if m != nil {
			t.Errorf("Validate returned a model with %d problems", len(problems))
		}
		want := []string{"a.yaml: document 1", "a.yaml: document 3", "b.yaml: document 1"}
		if len(problems) != len(want) {
			t.Fatalf("problems = %q, want %d: %q", problems, len(want), want)
		}
		for i, w := range want {
			if !strings.Contains(problems[i].Error(), w) {
				t.Errorf("problem %d = %q, want it to name %q", i, problems[i], w)
			}
		}
	})
	t.Run("validate", func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, "svc.yaml", `
apiVersion: v1
kind: Service
metadata: {name: Bad_Name}
spec: {selector: {app: a}, ports: [{port: 80}]}
`)
		write(t, dir, "route.yaml", `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{group: "", kind: Service, name: missing, port: 80}]
  rules: [{backendRefs: [{name: missing-too, port: 80}]}]
`)
		_, problems := file.Validate(dir, "")
		if len(problems) < 2 {
			t.Fatalf("problems = %q, want one for the Service and one or more for the HTTPRoute", problems)
		}
		files := map[string]bool{}
		for _, p := range problems {
			var fe *mesh.FieldError
			if !errors.As(p, &fe) || fe.Field == "" {
				t.Errorf("problem %q is not a FieldError naming a field", p)
				continue
			}
			files[fe.File] = true
		}
		for _, f := range []string{"svc.yaml", "route.yaml"} {
			found := false
			for got := range files {
				found = found || strings.HasSuffix(got, f)
			}
			if !found {
				t.Errorf("no problem names %s; problems: %q", f, problems)
			}
		}
	})
	t.Run("valid", func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, "svc.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {selector: {app: a}, ports: [{port: 80}]}\n")
		m, problems := file.Validate(dir, "example.org")
		if len(problems) != 0 || m == nil || len(m.Services) != 1 || m.TrustDomain != "example.org" {
			t.Fatalf("Validate = %v, %q; want a model with one Service in example.org", m, problems)
		}
	})
}
