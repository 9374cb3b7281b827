package file_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tinymesh/tinymesh/xds/mesh"
	"github.com/tinymesh/tinymesh/xds/source/file"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const services = `# two services
apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 8080}]
---
---
apiVersion: v1
kind: Service
metadata: {name: backend-v1, namespace: default}
spec:
  selector: {app: backend, version: v1}
  ports: [{name: http, port: 8080}]
`

const route = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend}
spec:
  parentRefs: [{group: "", kind: Service, name: backend, port: 8080}]
  rules:
  - backendRefs:
    - {name: backend-v1, port: 8080, weight: 100}
`

func write(t *testing.T, dir, name, data string) {
	t.Helper()
	// Write then rename, as editors and kubectl-style tools do, so the watcher
	// never reads half a file.
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func TestLoadValid(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "services.yaml", services)
	write(t, dir, "routes.yml", route)
	write(t, dir, "README.md", "not yaml: [")
	m, err := file.Load(dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, want := len(m.Services), 2; got != want {
		t.Errorf("services: got %d, want %d", got, want)
	}
	if got, want := len(m.HTTPRoutes), 1; got != want {
		t.Errorf("routes: got %d, want %d", got, want)
	}
	if got, want := m.Files[mesh.Key{Kind: "HTTPRoute", Namespace: "default", Name: "backend"}], filepath.Join(dir, "routes.yml"); got != want {
		t.Errorf("file of the route: got %q, want %q", got, want)
	}
}

func peerAuth(spec string) string {
	return "apiVersion: mesh.tinymesh.io/v1alpha1\nkind: PeerAuthentication\nmetadata: {name: pa}\nspec:\n  " + spec + "\n"
}

const target = "{kind: Service, name: backend}"

func authz(target, rules string) string {
	return services + "---\napiVersion: mesh.tinymesh.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: ap}\nspec:\n" +
		"  targetRef: " + target + "\n  rules: " + rules + "\n"
}

const policies = `apiVersion: mesh.tinymesh.io/v1alpha1
kind: PeerAuthentication
metadata: {name: default, namespace: tinymesh-system}
spec:
  mtls: {mode: PERMISSIVE}
---
apiVersion: mesh.tinymesh.io/v1alpha1
kind: PeerAuthentication
metadata: {name: backend}
spec:
  selector: {matchLabels: {app: backend}}
  mtls: {mode: STRICT}
---
apiVersion: mesh.tinymesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: backend-callers}
spec:
  targetRef: {group: "", kind: Service, name: backend}
  rules:
  - from:
      spiffeIDs: [spiffe://example.org/ns/default/sa/frontend]
      serviceAccounts: [frontend, other-ns/batch]
      namespaces: [ops]
    to:
      paths: [/api/, /healthz, "/v1*"]
      methods: [GET, POST]
      ports: [8080]
  - {}
`

// TestLoadPolicies: the mesh's own kinds decode and validate, in the source's
// trust domain.
func TestLoadPolicies(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "services.yaml", services)
	write(t, dir, "policies.yaml", policies)
	if _, err := file.Load(dir); err == nil || !strings.Contains(err.Error(), `is not in the trust domain "cluster.local"`) {
		t.Fatalf("Load in the default trust domain: got %v, want the example.org ID refused", err)
	}
	src := file.New(dir, nil)
	src.TrustDomain = "example.org"
	models := make(chan *mesh.Model, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, func(m *mesh.Model) { models <- m }) }()
	defer func() { cancel(); <-done }()
	var m *mesh.Model
	select {
	case m = <-models:
	case <-time.After(5 * time.Second):
		t.Fatal("no model within 5s")
	}
	if len(m.PeerAuthentications) != 2 || len(m.AuthorizationPolicies) != 1 {
		t.Fatalf("got %d PeerAuthentications and %d AuthorizationPolicies, want 2 and 1", len(m.PeerAuthentications), len(m.AuthorizationPolicies))
	}
	if got := m.PeerAuthentications[0]; got.Namespace != "default" || got.Spec.Selector.MatchLabels["app"] != "backend" {
		t.Errorf("first PeerAuthentication (sorted) = %s/%s %+v", got.Namespace, got.Name, got.Spec)
	}
	if got, want := len(m.AuthorizationPolicies[0].Spec.Rules[0].From.ServiceAccounts), 2; got != want {
		t.Errorf("serviceAccounts: got %d, want %d", got, want)
	}
	if got, want := m.Files[mesh.Key{Kind: "AuthorizationPolicy", Namespace: "default", Name: "backend-callers"}], filepath.Join(dir, "policies.yaml"); got != want {
		t.Errorf("file of the policy: got %q, want %q", got, want)
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name, files, want string
	}{
		{"unknown field", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}], bogus: 1}\n",
			`m.yaml: document 1: Service: error unmarshaling JSON: while decoding JSON: json: unknown field "bogus"`},
		{"unknown kind", "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n",
			`m.yaml: document 1: unsupported apiVersion "v1" kind "Pod"`},
		{"bad weight", services + "---\n" + strings.Replace(route, "weight: 100", "weight: -1", 1),
			"m.yaml: HTTPRoute default/backend: spec.rules[0].backendRefs[0].weight: must be >= 0"},
		{"missing backend", services + "---\n" + strings.Replace(route, "name: backend-v1,", "name: nope,", 1),
			"m.yaml: HTTPRoute default/backend: spec.rules[0].backendRefs[0].name: Service default/nope not found"},
		{"bad port", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 70000}]}\n",
			"m.yaml: Service default/a: spec.ports[0].port: must be in 1..65535, got 70000"},
		{"bad protocol", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80, appProtocol: udp}]}\n",
			`m.yaml: Service default/a: spec.ports[0].appProtocol: unsupported "udp"`},
		{"bad regex", services + "---\n" + strings.Replace(route, "  - backendRefs:", "  - matches: [{path: {type: RegularExpression, value: '(['}}]\n    backendRefs:", 1),
			"m.yaml: HTTPRoute default/backend: spec.rules[0].matches[0].path.value: invalid RE2 regular expression"},
		{"parent not a service", services + "---\n" + strings.Replace(route, "kind: Service, name: backend,", "kind: Gateway, name: backend,", 1),
			"m.yaml: HTTPRoute default/backend: spec.parentRefs[0].kind: must be Service (GAMMA)"},
		{"peer authentication unknown field", peerAuth("mtls: {mode: STRICT, level: 3}"),
			`m.yaml: document 1: PeerAuthentication: error unmarshaling JSON: while decoding JSON: json: unknown field "level"`},
		{"peer authentication mode", peerAuth("mtls: {mode: strict}"),
			`m.yaml: PeerAuthentication default/pa: spec.mtls.mode: unsupported "strict" (want STRICT, PERMISSIVE or DISABLE)`},
		{"peer authentication without mtls", peerAuth("selector: {matchLabels: {app: backend}}"),
			"m.yaml: PeerAuthentication default/pa: spec.mtls: required"},
		{"peer authentication selector expressions", peerAuth("selector: {matchExpressions: []}\n  mtls: {mode: STRICT}"),
			`json: unknown field "matchExpressions"`},
		{"two namespace-wide peer authentications", peerAuth("mtls: {mode: STRICT}") + "---\n" +
			strings.Replace(peerAuth("mtls: {mode: DISABLE}"), "name: pa", "name: pb", 1),
			"m.yaml: PeerAuthentication default/pb: spec.selector: PeerAuthentication default/pa already applies to the whole namespace"},
		{"policy target kind", authz("{kind: Deployment, name: backend}", "[]"),
			`m.yaml: AuthorizationPolicy default/ap: spec.targetRef.kind: must be Service, got "Deployment"`},
		{"policy target missing", authz("{kind: Service, name: nope}", "[]"),
			"m.yaml: AuthorizationPolicy default/ap: spec.targetRef.name: Service default/nope not found"},
		{"policy spiffe id", authz(target, "[{from: {spiffeIDs: [spiffe://cluster.local/ns/a/sa/b, 'spiffe://Bad/x', spiffe://other.org/ns/a/sa/b]}}]"),
			`m.yaml: AuthorizationPolicy default/ap: spec.rules[0].from.spiffeIDs[1]: invalid SPIFFE ID "spiffe://Bad/x"`},
		{"policy trust domain", authz(target, "[{from: {spiffeIDs: [spiffe://other.org/ns/a/sa/b]}}]"),
			`m.yaml: AuthorizationPolicy default/ap: spec.rules[0].from.spiffeIDs[0]: SPIFFE ID "spiffe://other.org/ns/a/sa/b" is not in the trust domain "cluster.local"`},
		{"policy empty from", authz(target, "[{from: {}}]"),
			"m.yaml: AuthorizationPolicy default/ap: spec.rules[0].from: at least one of spiffeIDs, serviceAccounts or namespaces is required"},
		{"policy service account", authz(target, "[{from: {serviceAccounts: [a/b/c]}}]"),
			`m.yaml: AuthorizationPolicy default/ap: spec.rules[0].from.serviceAccounts[0]: invalid service account "a/b/c"`},
		{"policy port", authz(target, "[{to: {ports: [8080, 9090]}}]"),
			"m.yaml: AuthorizationPolicy default/ap: spec.rules[0].to.ports[1]: Service default/backend has no port 9090"},
		{"policy method", authz(target, "[{to: {methods: [GET, get]}}]"),
			`m.yaml: AuthorizationPolicy default/ap: spec.rules[0].to.methods[1]: must be an upper-case HTTP method token (GET, POST, ...), got "get"`},
		{"policy path", authz(target, "[{to: {paths: [/ok, api/]}}]"),
			`m.yaml: AuthorizationPolicy default/ap: spec.rules[0].to.paths[1]: must start with /, got "api/"`},
		{"policy path wildcard", authz(target, "[{to: {paths: ['/a*/b']}}]"),
			`m.yaml: AuthorizationPolicy default/ap: spec.rules[0].to.paths[0]: * is only allowed at the end, got "/a*/b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, dir, "m.yaml", tc.files)
			_, err := file.Load(dir)
			if err == nil {
				t.Fatalf("Load: got nil error, want %q", tc.want)
			}
			got := strings.ReplaceAll(err.Error(), dir+string(filepath.Separator), "")
			if !strings.Contains(got, tc.want) {
				t.Errorf("error:\n got %q\nwant it to contain %q", got, tc.want)
			}
		})
	}
}

// syncBuffer is a log sink safe for the watcher goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunWatches: the first model arrives, an invalid edit is logged with file,
// resource and field and ignored (nothing emitted), and a valid edit is applied
// within a second.
func TestRunWatches(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "services.yaml", services)
	var logs syncBuffer
	src := file.New(dir, slog.New(slog.NewTextHandler(&logs, nil)))
	src.Rescan = time.Hour // prove that fsnotify alone delivers the edits
	models := make(chan *mesh.Model, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, func(m *mesh.Model) { models <- m }) }()
	defer func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Run: got %v, want context.Canceled", err)
		}
	}()

	next := func(within time.Duration) *mesh.Model {
		t.Helper()
		select {
		case m := <-models:
			return m
		case <-time.After(within):
			t.Fatalf("no model within %v; logs:\n%s", within, logs.String())
			return nil
		}
	}
	if m := next(time.Second); len(m.Services) != 2 {
		t.Fatalf("first model: got %d services, want 2", len(m.Services))
	}

	write(t, dir, "routes.yaml", strings.Replace(route, "weight: 100", "weight: -5", 1))
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(logs.String(), "spec.rules[0].backendRefs[0].weight") {
		if time.Now().After(deadline) {
			t.Fatalf("invalid edit not reported within 2s; logs:\n%s", logs.String())
		}
		select {
		case m := <-models:
			t.Fatalf("model emitted for an invalid directory: %+v", m)
		case <-time.After(10 * time.Millisecond):
		}
	}
	for _, want := range []string{"file=" + filepath.Join(dir, "routes.yaml"), `resource="HTTPRoute default/backend"`, "field=spec.rules[0].backendRefs[0].weight"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}

	start := time.Now()
	write(t, dir, "routes.yaml", route)
	m := next(time.Second)
	if len(m.HTTPRoutes) != 1 || len(m.Services) != 2 {
		t.Errorf("model after the fix: %d routes, %d services; want 1 and 2", len(m.HTTPRoutes), len(m.Services))
	}
	t.Logf("edit applied after %v", time.Since(start))
}

// TestRunRescan: with fsnotify events missed, the periodic rescan still picks up
// an edit.
func TestRunRescan(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "services.yaml", services)
	src := file.New(dir, nil)
	src.Debounce = time.Hour // fsnotify path disabled: only the rescan can apply
	src.Rescan = 100 * time.Millisecond
	models := make(chan *mesh.Model, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, func(m *mesh.Model) { models <- m }) }()
	defer func() { cancel(); <-done }()
	select {
	case <-models:
	case <-time.After(5 * time.Second):
		t.Fatal("no first model within 5s")
	}
	write(t, dir, "routes.yaml", route)
	select {
	case m := <-models:
		if len(m.HTTPRoutes) != 1 {
			t.Errorf("got %d routes, want 1", len(m.HTTPRoutes))
		}
	case <-time.After(time.Second):
		t.Fatal("edit not applied by the rescan within 1s")
	}
}
