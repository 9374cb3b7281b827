package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tinymesh/tinymesh/xds/server"
)

// statusModel is an HTTP Service for the client proxy's outbound listener plus,
// when dbPort is set, a TCP Service whose outbound listener the client binds at
// its OUTBOUND_IP:dbPort.
func statusModel(dbPort int) string {
	m := `apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 8080}]
`
	if dbPort != 0 {
		m += fmt.Sprintf(`---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  selector: {app: db}
  ports: [{name: tcp, port: %d, appProtocol: tcp}]
`, dbPort)
	}
	return m
}

// TestStatusNACKAndBack runs `controlplane status` against the real binaries
// while a proxy cannot apply its listeners: a TCP Service's port is already
// bound on the proxy's OUTBOUND_IP by the test, so the proxy NACKs the
// configuration and the status says NACKED with the bind error; after the model
// moves the Service to a free port, the proxy is in sync again.
func TestStatusNACKAndBack(t *testing.T) {
	cp := startControlPlane(t, controlPlaneOptions{model: map[string]string{"mesh.yaml": statusModel(0)}})
	client := startProxy(t, cp, proxyOptions{workload: "client", labels: "app=client", outbound: true})
	dumpOnFailure(t, client)

	// Responses go out type by type, and a node is in sync with what it was
	// sent so far: wait for the listeners and clusters too.
	st := waitProxyStatus(t, cp, "client", 20*time.Second, "client in sync on LDS and CDS", func(ps server.ProxyStatus) bool {
		return ps.InSync && ps.Types["LDS"].State == server.StateSynced && ps.Types["CDS"].State == server.StateSynced
	})
	if st.LastNACK != nil || st.Types["LDS"].State != server.StateSynced {
		t.Fatalf("before the conflict: %+v, want LDS SYNCED and no NACK", st)
	}

	// Take the port the db listener will want, then publish the Service.
	taken, err := net.Listen("tcp", client.ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cp.writeModel("mesh.yaml", statusModel(taken.Addr().(*net.TCPAddr).Port))
	// meshproxy applies a configuration once it is complete and NACKs the
	// response that completed it, whichever type that is (here usually EDS,
	// the db cluster's endpoints).
	st = waitProxyStatus(t, cp, "client", 20*time.Second, "a NACK", func(ps server.ProxyStatus) bool {
		return ps.LastNACK != nil && ps.Types[ps.LastNACK.Type].State == server.StateNACKed
	})
	nacked := st.Types[st.LastNACK.Type]
	if st.InSync || !strings.Contains(st.LastNACK.Message, "bind") || st.LastNACK.Version != nacked.Sent {
		t.Errorf("after the conflict: %+v (last NACK %+v); want out of sync, the version sent NACKed with the bind error",
			st, st.LastNACK)
	}
	table := statusTable(t, cp)
	if line := lineOf(table, "client."); !strings.Contains(line, "NACKED") || !strings.Contains(line, "false") || !strings.Contains(line, "bind") {
		t.Errorf("status table line %q: want a type NACKED, not in sync, and the bind error; table:\n%s", line, table)
	}

	// Move the Service to a port that is free: the next push is applied.
	cp.writeModel("mesh.yaml", statusModel(freePort(t, client.ip)))
	st = waitProxyStatus(t, cp, "client", 20*time.Second, "client in sync again on LDS and EDS", func(ps server.ProxyStatus) bool {
		return ps.InSync && ps.Types["LDS"].State == server.StateSynced && ps.Types["EDS"].State == server.StateSynced
	})
	if st.Types["LDS"].State != server.StateSynced || st.Types["EDS"].State != server.StateSynced || st.LastNACK == nil {
		t.Errorf("after the fix: %+v, want LDS and EDS SYNCED and the NACK kept as the last one", st)
	}
	table = statusTable(t, cp)
	if line := lineOf(table, "client."); strings.Contains(line, "NACKED") || !strings.Contains(line, "true") {
		t.Errorf("status table line %q: want every type SYNCED or NOT SENT, in sync; table:\n%s", line, table)
	}
}

// waitProxyStatus runs `controlplane status --json` until the proxy of
// workload satisfies ok, and returns its status.
func waitProxyStatus(t *testing.T, cp *controlPlane, workload string, timeout time.Duration, what string, ok func(server.ProxyStatus) bool) server.ProxyStatus {
	t.Helper()
	var last server.ProxyStatus
	retry(t, timeout, what, func() error {
		out, err := exec.Command(controlplaneBin, "status", "--addr", cp.monitoring, "--json").Output()
		if err != nil {
			return fmt.Errorf("controlplane status --json: %w", err)
		}
		var all []server.ProxyStatus
		if err := json.Unmarshal(out, &all); err != nil {
			return fmt.Errorf("decode %s: %w", out, err)
		}
		for _, ps := range all {
			if ps.Workload == workload {
				last = ps
				if ok(ps) {
					return nil
				}
				return fmt.Errorf("status of %s: %+v", workload, ps)
			}
		}
		return fmt.Errorf("no proxy of workload %s in %s", workload, out)
	})
	return last
}

func statusTable(t *testing.T, cp *controlPlane) string {
	t.Helper()
	out, err := exec.Command(controlplaneBin, "status", "--addr", cp.monitoring).CombinedOutput()
	if err != nil {
		t.Fatalf("controlplane status: %v\n%s", err, out)
	}
	return string(out)
}

func lineOf(table, prefix string) string {
	for l := range strings.SplitSeq(table, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}
