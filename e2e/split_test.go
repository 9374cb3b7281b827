package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSplit sends at least 5,000 requests through the client sidecar to Service
// backend, split 90/10 between backend-v1 and backend-v2 by an HTTPRoute, over
// both ADS variants, and checks the measured split and that nothing failed.
func TestSplit(t *testing.T) {
	for _, mode := range []string{"delta", "sotw"} {
		t.Run(mode, func(t *testing.T) {
			m := startSplitMesh(t, splitMeshOptions{xdsMode: mode})
			l := m.load(t, nil)
			l.waitTotal(t, loadStats{}, 5000, 60*time.Second)
			s := l.stop()
			checkNoFailures(t, "90/10 split", s)
			checkShare(t, "90/10 split", s, "v1", 0.90, 0.02)
			checkShare(t, "90/10 split", s, "v2", 0.10, 0.02)
		})
	}
}

// TestWeightChangeUnderLoad changes the split from 90/10 to 50/50 while requests
// flow: none may fail, and the new split must take effect.
func TestWeightChangeUnderLoad(t *testing.T) {
	m := startSplitMesh(t, splitMeshOptions{})
	l := m.load(t, nil)
	before := l.waitTotal(t, loadStats{}, 1000, 30*time.Second)
	checkShare(t, "before the change", before, "v1", 0.90, 0.04)

	m.cp.writeModel("route.yaml", splitRoute(50, 50, false, ""))
	l.waitWindow(t, "v1 share in [40%, 60%]", 1000, 20*time.Second, shareBetween("v1", 0.40, 0.60), l.stats())
	after := l.waitTotal(t, l.stats(), 1000, 30*time.Second)
	s := l.stop()
	checkEnough(t, "after the change to 50/50", after, 1000)
	checkShare(t, "after the change to 50/50", after, "v1", 0.50, 0.04)
	checkNoFailures(t, "weight change 90/10 -> 50/50", s)
}

// TestRouteChangeUnderLoad adds a rule sending x-canary: true to backend-v2 while
// two load generators (with and without the header) run: none may fail, canary
// requests must then all reach v2, and the rest keep the 90/10 split.
func TestRouteChangeUnderLoad(t *testing.T) {
	m := startSplitMesh(t, splitMeshOptions{})
	plain := m.load(t, nil)
	canary := m.load(t, map[string]string{"x-canary": "true"})
	before := canary.waitTotal(t, loadStats{}, 1000, 30*time.Second)
	checkShare(t, "canary requests before the rule", before, "v1", 0.90, 0.05)

	m.cp.writeModel("route.yaml", splitRoute(90, 10, true, ""))
	canary.waitWindow(t, "every canary request on v2", 500, 20*time.Second, shareBetween("v2", 1, 1), canary.stats())
	plainFrom := plain.stats()
	canaryAfter := canary.waitTotal(t, canary.stats(), 1000, 30*time.Second)
	plainAfter := plain.waitTotal(t, plainFrom, 1000, 30*time.Second)
	ps, cs := plain.stop(), canary.stop()
	checkEnough(t, "canary requests after the rule", canaryAfter, 1000)
	checkEnough(t, "plain requests after the rule", plainAfter, 1000)
	checkShare(t, "canary requests after the rule", canaryAfter, "v2", 1, 0)
	checkShare(t, "plain requests after the rule", plainAfter, "v1", 0.90, 0.04)
	checkNoFailures(t, "route change (plain requests)", ps)
	checkNoFailures(t, "route change (canary requests)", cs)
}

// TestBackendJoinAndLeaveUnderLoad starts two more backend workloads matching
// backend-v1's labels, one after the other, while requests flow, and waits until
// each gets traffic; then stops both the way pods go: SIGTERM to the sidecar
// (which must drain and exit by itself, status 0), then the app. No request may
// fail while they join or leave, and the leavers must get no more traffic.
// Joining is checked twice because its failure mode is a race (the new endpoint
// reaching the client before the new sidecar listens).
func TestBackendJoinAndLeaveUnderLoad(t *testing.T) {
	m := startSplitMesh(t, splitMeshOptions{endpointGrace: time.Second})
	l := m.load(t, nil)
	l.waitTotal(t, loadStats{}, 500, 30*time.Second)

	type joiner struct {
		name  string
		app   *httpBackend
		proxy *proxy
	}
	var joiners []joiner
	t.Run("join", func(t *testing.T) {
		for _, name := range []string{"backend-v1b", "backend-v1c"} {
			from := l.stats()
			ip := newIP(t)
			// The app and sidecar belong to the parent test: they must outlive
			// this subtest, whose cleanups run when it ends.
			app := startHTTPBackend(m.t, ip, backendID{service: "backend", version: "v1", instance: name}, false)
			p := startProxy(m.t, m.cp, proxyOptions{workload: name, labels: "app=backend,version=v1", app: app.addr, ip: ip})
			joiners = append(joiners, joiner{name, app, p})
			joined := l.waitWindow(t, name+" answering", 500, 20*time.Second, func(w loadStats) bool { return w.Instances[name] > 0 }, l.stats())
			t.Logf("after %s joined: %v", name, joined)
			checkNoFailures(t, "while "+name+" joined", l.stats().sub(from))
		}
	})
	if len(joiners) == 0 {
		t.FailNow()
	}

	t.Run("leave", func(t *testing.T) {
		from := l.stats()
		var wg sync.WaitGroup
		for _, j := range joiners {
			wg.Go(func() {
				start := time.Now()
				switch {
				case !j.proxy.proc.stop(t, 30*time.Second):
					t.Errorf("%s's sidecar did not exit by itself within 30s of SIGTERM", j.name)
				case j.proxy.proc.err != nil:
					t.Errorf("%s's sidecar exited with %v after SIGTERM, want status 0 (a graceful drain)", j.name, j.proxy.proc.err)
				default:
					t.Logf("%s's sidecar exited cleanly %v after SIGTERM", j.name, time.Since(start).Round(time.Millisecond))
				}
				j.app.close()
			})
		}
		wg.Wait()
		// A sidecar that exits before the control plane drops its endpoint (one
		// --endpoint-grace after its stream ends) leaves the clients a dead
		// address: keep the load on until the control plane has dropped both.
		for _, j := range joiners {
			m.cp.proc.waitLog(t, 0, 20*time.Second, "that "+j.name+" was removed", func(line string) bool {
				return strings.Contains(line, "workload removed") && strings.Contains(line, `"node":"`+j.name+".")
			})
		}
		gone := l.waitWindow(t, "no traffic to the leavers", 1000, 20*time.Second, func(w loadStats) bool {
			return w.Instances["backend-v1b"] == 0 && w.Instances["backend-v1c"] == 0
		}, l.stats())
		checkShare(t, "after the leavers left", gone, "v1", 0.90, 0.05)
		checkNoFailures(t, "while backends left", l.stats().sub(from))
	})
	checkNoFailures(t, "backend join and leave", l.stop())
}

// TestControlPlaneRestartUnderLoad kills the control plane while requests flow and
// starts it again on the same address. Traffic must never fail: not while it is
// down, and not while the proxies reconnect. The proxies reconnect in whatever
// order their backoff gives; the test forces the worst one, the client first and
// the backends a second later (by holding them behind a tcpGate), which happens
// naturally two times in three. Finally a weight change must apply, showing that
// every proxy is connected again. Both ADS variants: they resume differently.
func TestControlPlaneRestartUnderLoad(t *testing.T) {
	for _, mode := range []string{"delta", "sotw"} {
		t.Run(mode, func(t *testing.T) { testControlPlaneRestart(t, mode) })
	}
}

func testControlPlaneRestart(t *testing.T, xdsMode string) {
	m := startSplitMesh(t, splitMeshOptions{gateBackends: true, xdsMode: xdsMode})
	l := m.load(t, nil)
	l.waitTotal(t, loadStats{}, 1000, 30*time.Second)

	m.gate.shut()
	m.cp.kill()
	down := l.waitTotal(t, l.stats(), 1000, 30*time.Second)
	checkShare(t, "while the control plane is down", down, "v1", 0.90, 0.05)
	from := l.stats()
	m.cp.restart()
	registered := func(w string) {
		m.cp.proc.waitLog(t, 0, 30*time.Second, "that "+w+" reconnected", func(line string) bool {
			return strings.Contains(line, "workload registered") && strings.Contains(line, `"workload":"`+w+`"`)
		})
	}
	registered("client")
	early := l.during(t, time.Second)
	t.Logf("client reconnected, backends not yet: %v", early)
	m.gate.reopen()
	registered("backend-v1")
	registered("backend-v2")
	up := l.during(t, 2*time.Second)
	checkShare(t, "after every proxy reconnected", up, "v1", 0.90, 0.05)
	checkNoFailures(t, "from the restart until 2s after every proxy reconnected", l.stats().sub(from))

	m.cp.writeModel("route.yaml", splitRoute(50, 50, false, ""))
	l.waitWindow(t, "v1 share in [40%, 60%] after the restart", 1000, 30*time.Second, shareBetween("v1", 0.40, 0.60), l.stats())
	s := l.stop()
	checkNoFailures(t, "control plane restart", s)
}

// TestInvalidModelKeepsOldConfig writes invalid model files (an unknown field)
// while requests flow: the control plane must log the file and the field, and
// traffic must go on with the old weights; a corrected file then applies.
func TestInvalidModelKeepsOldConfig(t *testing.T) {
	m := startSplitMesh(t, splitMeshOptions{})
	l := m.load(t, nil)
	l.waitTotal(t, loadStats{}, 500, 30*time.Second)

	steps := []struct {
		name, file, field, content string
	}{{
		name:  "new file with a bad Service",
		file:  "bad.yaml",
		field: "portz",
		content: `apiVersion: v1
kind: Service
metadata:
  name: other
  namespace: default
spec:
  selector:
    app: other
  portz:
  - port: 8080
`,
	}, {
		// The same route with new weights and a misspelt field: a control plane
		// that ignored the field would apply 50/50.
		name:    "route with a bad field and new weights",
		file:    "route.yaml",
		field:   "bogusField",
		content: splitRoute(50, 50, false, "    bogusField: true\n"),
	}}
	for _, step := range steps {
		mark := m.cp.proc.lineCount()
		m.cp.writeModel(step.file, step.content)
		line := m.cp.proc.waitLog(t, mark, 15*time.Second, "an error naming "+step.file+" and "+step.field, func(line string) bool {
			return strings.Contains(line, step.file) && strings.Contains(line, step.field)
		})
		t.Logf("%s: control plane logged: %s", step.name, line)
		w := l.waitTotal(t, l.stats(), 3000, 30*time.Second)
		checkShare(t, "after "+step.name, w, "v1", 0.90, 0.03)
	}

	if err := os.Remove(filepath.Join(m.cp.modelDir, "bad.yaml")); err != nil {
		t.Fatal(err)
	}
	m.cp.writeModel("route.yaml", splitRoute(50, 50, false, ""))
	l.waitWindow(t, "v1 share in [40%, 60%] once the model is fixed", 1000, 20*time.Second, shareBetween("v1", 0.40, 0.60), l.stats())
	s := l.stop()
	checkNoFailures(t, "invalid model files", s)
}
