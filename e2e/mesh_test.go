package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// serviceYAML is a core/v1 Service in namespace default.
func serviceYAML(name, selector string, port int, appProtocol string) string {
	var sel strings.Builder
	for _, kv := range strings.Split(selector, ",") {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&sel, "    %s: %s\n", k, v)
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: %s
  namespace: default
spec:
  selector:
%s  ports:
  - name: %s
    port: %d
    appProtocol: %s
`, name, sel.String(), appProtocol, port, appProtocol)
}

// backendServices is the model of the split tests: "backend" over every
// app=backend workload and one Service per version, all HTTP on port 8080.
func backendServices() string {
	return strings.Join([]string{
		serviceYAML("backend", "app=backend", 8080, "http"),
		serviceYAML("backend-v1", "app=backend,version=v1", 8080, "http"),
		serviceYAML("backend-v2", "app=backend,version=v2", 8080, "http"),
	}, "---\n")
}

// splitRoute is a GAMMA HTTPRoute on Service backend:8080 sending w1 and w2 to
// backend-v1 and backend-v2. With canary, a first rule sends requests with
// x-canary: true to backend-v2 only. extra is spliced into the first rule's
// keys (to plant an invalid field).
func splitRoute(w1, w2 int, canary bool, extra string) string {
	var b strings.Builder
	b.WriteString(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: backend-split
  namespace: default
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: backend
    port: 8080
  rules:
`)
	if canary {
		b.WriteString(`  - matches:
    - headers:
      - name: x-canary
        value: "true"
    backendRefs:
    - name: backend-v2
      port: 8080
`)
	}
	fmt.Fprintf(&b, `  - backendRefs:
    - name: backend-v1
      port: 8080
      weight: %d
    - name: backend-v2
      port: 8080
      weight: %d
`, w1, w2)
	if extra != "" {
		b.WriteString(extra)
	}
	return b.String()
}

// splitMesh is a control plane, backend-v1 and backend-v2 (each an HTTP app
// behind a sidecar) and a client sidecar with an outbound listener.
type splitMesh struct {
	t      *testing.T // the test that owns the processes
	cp     *controlPlane
	client *proxy
	v1, v2 *proxy
	gate   *tcpGate // between the backends' sidecars and cp; nil unless gateBackends
}

type splitMeshOptions struct {
	xdsMode       string
	endpointGrace time.Duration
	w1, w2        int
	// gateBackends connects the backends' sidecars to the control plane through
	// a tcpGate, so that a test can hold them back while the client reconnects.
	gateBackends bool
}

func startSplitMesh(t *testing.T, o splitMeshOptions) *splitMesh {
	t.Helper()
	if o.w1 == 0 && o.w2 == 0 {
		o.w1, o.w2 = 90, 10
	}
	m := &splitMesh{t: t}
	m.cp = startControlPlane(t, controlPlaneOptions{
		model: map[string]string{
			"services.yaml": backendServices(),
			"route.yaml":    splitRoute(o.w1, o.w2, false, ""),
		},
		endpointGrace: o.endpointGrace,
	})
	xds := ""
	if o.gateBackends {
		m.gate = startTCPGate(t, m.cp.addr)
		xds = m.gate.addr
	}
	m.v1 = startBackendWorkload(t, m.cp, "backend-v1", "v1", o.xdsMode, xds)
	m.v2 = startBackendWorkload(t, m.cp, "backend-v2", "v2", o.xdsMode, xds)
	m.client = startProxy(t, m.cp, proxyOptions{workload: "client", labels: "app=client", xdsMode: o.xdsMode, outbound: true})
	dumpOnFailure(t, m.client)
	// /ready says the client has a complete config, not that the backends'
	// endpoints have reached it: wait until both versions answer.
	probe(t, m.client.outbound, "backend", 20*time.Second, "v1", "v2")
	return m
}

// startBackendWorkload starts an HTTP/1.1 app answering as version and its
// sidecar with labels app=backend,version=<version>, on one fresh loopback IP.
// xds, when set, overrides the control plane address.
func startBackendWorkload(t *testing.T, cp *controlPlane, instance, version, xdsMode, xds string) *proxy {
	t.Helper()
	ip := newIP(t)
	app := startHTTPBackend(t, ip, backendID{service: "backend", version: version, instance: instance}, false)
	return startProxy(t, cp, proxyOptions{
		workload: instance, labels: "app=backend,version=" + version, xdsMode: xdsMode,
		app: app.addr, ip: ip, xds: xds,
	})
}

// load starts a load generator through the client sidecar to Service backend.
func (m *splitMesh) load(t *testing.T, header map[string]string) *load {
	t.Helper()
	o := loadOptions{target: m.client.outbound, host: "backend"}
	if header != nil {
		o.header = map[string][]string{}
		for k, v := range header {
			o.header[k] = []string{v}
		}
	}
	return startLoad(t, o)
}

// checkShare fails the test unless version's share of w is within tolerance
// (absolute, e.g. 0.02) of want.
func checkShare(t *testing.T, what string, w loadStats, version string, want, tolerance float64) {
	t.Helper()
	got := w.share(version)
	if got < want-tolerance || got > want+tolerance {
		t.Errorf("%s: %s share = %.2f%% over %d requests, want %.0f%% ± %.0f points (%v)", what, version, 100*got, w.OK, 100*want, 100*tolerance, w)
	} else {
		t.Logf("%s: %s share = %.2f%% over %d requests", what, version, 100*got, w.OK)
	}
}

// checkEnough fails the test unless window w has at least n successful requests,
// so that a share measured over it means something.
func checkEnough(t *testing.T, what string, w loadStats, n int64) {
	t.Helper()
	if w.OK < n {
		t.Errorf("%s: only %d successful requests, want at least %d to measure a split (%v)", what, w.OK, n, w)
	}
}

// checkNoFailures fails the test if any request in s failed.
func checkNoFailures(t *testing.T, what string, s loadStats) {
	t.Helper()
	if s.Failed != 0 {
		t.Errorf("%s: %d of %d requests failed, want 0: %v", what, s.Failed, s.total(), s)
	} else {
		t.Logf("%s: %d requests, 0 failed", what, s.total())
	}
}

// shareBetween returns a window predicate: version's share within [lo, hi].
func shareBetween(version string, lo, hi float64) func(loadStats) bool {
	return func(w loadStats) bool {
		s := w.share(version)
		return s >= lo && s <= hi
	}
}
