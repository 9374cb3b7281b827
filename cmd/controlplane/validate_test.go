package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeModel(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const validModel = `apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  selector: {app: db}
  ports: [{name: tcp, port: 5432, appProtocol: tcp}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend}
spec:
  parentRefs: [{group: "", kind: Service, name: backend, port: 8080}]
  rules: [{backendRefs: [{name: backend, port: 8080}]}]
`

func TestValidateCommand(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		args  []string
		code  int
		// want are substrings of stdout, one per problem line, in order.
		want []string
	}{
		{"valid", map[string]string{"mesh.yaml": validModel}, nil, 0, []string{"3 resources OK"}},
		{"decode errors in two files", map[string]string{
			"a.yaml": validModel + "---\napiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {nope: 1}\n",
			"b.yaml": "apiVersion: v2\nkind: Gadget\n",
		}, nil, 1, []string{"a.yaml: document 4: Service", "b.yaml: document 1: unsupported apiVersion"}},
		{"every validation error", map[string]string{
			"svc.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: Bad_Name}\nspec: {selector: {app: a}, ports: [{port: 80}]}\n",
			"route.yaml": `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: missing, port: 80}]
  rules: [{backendRefs: [{name: backend, port: 80}]}]
`,
		}, nil, 1, []string{"route.yaml: HTTPRoute shop/r: spec.", "svc.yaml: Service default/Bad_Name: metadata.name"}},
		{"policy outside the trust domain", map[string]string{"mesh.yaml": validModel + `---
apiVersion: mesh.tinymesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: allow}
spec:
  targetRef: {group: "", kind: Service, name: backend}
  rules: [{from: {spiffeIDs: [spiffe://example.org/ns/default/sa/frontend]}}]
`}, []string{"--trust-domain", "cluster.local"}, 1, []string{"AuthorizationPolicy default/allow: spec.rules[0].from.spiffeIDs[0]"}},
		{"same policy in its trust domain", map[string]string{"mesh.yaml": validModel + `---
apiVersion: mesh.tinymesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: allow}
spec:
  targetRef: {group: "", kind: Service, name: backend}
  rules: [{from: {spiffeIDs: [spiffe://example.org/ns/default/sa/frontend]}}]
`}, []string{"--trust-domain", "example.org"}, 0, []string{"4 resources OK"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeModel(t, tc.files)
			var stdout, stderr bytes.Buffer
			code := command(append(append([]string{"validate"}, tc.args...), dir), &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout:\n%s\nstderr:\n%s", code, tc.code, stdout.String(), stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
			if tc.code == 1 && len(lines) < len(tc.want) {
				t.Fatalf("%d problem lines, want at least %d:\n%s", len(lines), len(tc.want), stdout.String())
			}
			for _, w := range tc.want {
				found := false
				for _, l := range lines {
					found = found || strings.Contains(l, w)
				}
				if !found {
					t.Errorf("no line contains %q; stdout:\n%s", w, stdout.String())
				}
			}
		})
	}
}

func TestValidateCommandUsage(t *testing.T) {
	for _, args := range [][]string{{"validate"}, {"validate", "a", "b"}, {"validate", "--trust-domain", "Not A Domain!", "x"}} {
		if code := command(args, &bytes.Buffer{}, &bytes.Buffer{}); code != 2 {
			t.Errorf("command(%q) = %d, want 2", args, code)
		}
	}
	if code := command([]string{"validate", filepath.Join(t.TempDir(), "missing")}, &bytes.Buffer{}, &bytes.Buffer{}); code != 1 {
		t.Errorf("validate of a missing directory = %d, want 1", code)
	}
}
