package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tinymesh/tinymesh/xds/server"
)

// TestMain lets the test binary act as the controlplane command, so the tests
// can run it as a real process.
func TestMain(m *testing.M) {
	if os.Getenv("CONTROLPLANE_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func TestParse(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "cp.yaml")
	if err := os.WriteFile(cfg, []byte("xdsAddr: 127.0.0.1:1\nmonitoringAddr: 127.0.0.1:2\nmodelDir: /from/file\nlogFormat: json\n"+
		"trustDomain: example.org\ndataDir: /from/file/data\nsvidTTL: 5m\ncaCert: /file/ca.crt\ncaKey: /file/ca.key\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		args    []string
		want    settings
		wantErr bool
	}{
		{"defaults", nil, settings{XDSAddr: "127.0.0.1:15010", MonitoringAddr: "127.0.0.1:15014", ModelDir: "./mesh", EndpointGrace: "10s", LogLevel: "info", LogFormat: "text",
			TrustDomain: "cluster.local", DataDir: "./controlplane-data", SVIDTTL: "1h0m0s"}, false},
		{"file then flags", []string{"--config", cfg, "--model-dir", "/from/flag", "--endpoint-grace", "2s", "--svid-ttl", "10m", "--ca-key", "/flag/ca.key",
			"--monitoring-addr", "127.0.0.1:3"},
			settings{XDSAddr: "127.0.0.1:1", MonitoringAddr: "127.0.0.1:3", ModelDir: "/from/flag", EndpointGrace: "2s", LogLevel: "info", LogFormat: "json",
				TrustDomain: "example.org", DataDir: "/from/file/data", SVIDTTL: "10m0s", CACert: "/file/ca.crt", CAKey: "/flag/ca.key"}, false},
		{"bad flag", []string{"--nope"}, settings{}, true},
		{"extra args", []string{"x"}, settings{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parse(tc.args, io.Discard)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error = %v, wantErr %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("settings (-want +got):\n%s", diff)
			}
		})
	}
}

// TestProcess runs the command, waits for its "serving xDS" log line, fetches
// clusters over ADS and stops it with SIGTERM, expecting exit code 0.
func TestProcess(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "svc.yaml"), []byte(`apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  ports: [{name: http, port: 8080}]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "--xds-addr", "127.0.0.1:0", "--monitoring-addr", "127.0.0.1:0", "--model-dir", dir,
		"--log-format", "json", "--data-dir", filepath.Join(t.TempDir(), "data"))
	cmd.Env = append(os.Environ(), "CONTROLPLANE_TEST_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	addrc := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line struct{ Msg, Addr, Monitoring string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "serving xDS" {
				addrc <- [2]string{line.Addr, line.Monitoring}
			}
		}
		exited <- cmd.Wait()
	}()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	}()
	var addr, monitoring string
	select {
	case a := <-addrc:
		addr, monitoring = a[0], a[1]
	case err := <-exited:
		t.Fatalf("controlplane exited early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal(`no "serving xDS" log line within 10s`)
	}

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "client~1"}, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	r, err := stream.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	if len(r.Resources) != 1 || !strings.Contains(string(r.Resources[0].Value), "outbound|8080||backend.default.svc.cluster.local") {
		t.Errorf("clusters: got %d resources %v, want the backend cluster", len(r.Resources), r.Resources)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ClusterType, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce}); err != nil {
		t.Fatal(err)
	}
	checkMonitoring(t, monitoring, r.VersionInfo)

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v, want status 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("controlplane did not exit within 10s of SIGTERM")
	}
}

func TestRunExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"bad log format", []string{"--log-format", "xml"}, 2},
		{"bad log level", []string{"--log-level", "loud"}, 2},
		{"negative grace", []string{"--endpoint-grace", "-1s"}, 2},
		{"missing config file", []string{"--config", "/nonexistent/cp.yaml"}, 2},
		{"cannot listen", []string{"--xds-addr", "256.0.0.1:1"}, 1},
		{"SVID TTL under a minute", []string{"--svid-ttl", "30s"}, 2},
		{"bad trust domain", []string{"--trust-domain", "Not/A/Domain"}, 2},
		{"CA certificate without key", []string{"--ca-cert", "/x.crt"}, 2},
		{"bundle without CA", []string{"--ca-bundle", "/x.crt"}, 2},
		{"unreadable CA files", []string{"--xds-addr", "127.0.0.1:0", "--ca-cert", "/nonexistent/ca.crt", "--ca-key", "/nonexistent/ca.key",
			"--data-dir", t.TempDir()}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := run(tc.args, io.Discard); got != tc.want {
				t.Errorf("run(%q) = %d, want %d", tc.args, got, tc.want)
			}
		})
	}
}

// checkMonitoring checks the monitoring endpoints of a control plane that has
// loaded one model and served one SotW client ("client~1") its clusters, at
// version cds, which the client ACKed.
func checkMonitoring(t *testing.T, addr, cds string) {
	t.Helper()
	// The ACK is in flight: wait for the status to show it.
	var out bytes.Buffer
	deadline := time.Now().Add(10 * time.Second)
	for {
		out.Reset()
		var stderr bytes.Buffer
		if code := command([]string{"status", "--addr", addr}, &out, &stderr); code != 0 {
			t.Fatalf("controlplane status = %d: %s", code, stderr.String())
		}
		if strings.Contains(out.String(), "SYNCED ("+cds[:8]+")") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("controlplane status never showed CDS SYNCED at %s:\n%s", cds, out.String())
		}
		time.Sleep(20 * time.Millisecond) // polling another process, bounded by the deadline
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[1], "client~1 ") {
		t.Fatalf("status table:\n%s\nwant a header and one line for client~1", out.String())
	}
	for _, want := range []string{"sotw", "NOT SENT", "true"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("status line %q does not contain %q", lines[1], want)
		}
	}
	out.Reset()
	if code := command([]string{"status", "--addr", addr, "--json"}, &out, io.Discard); code != 0 {
		t.Fatalf("controlplane status --json = %d", code)
	}
	var st []server.ProxyStatus
	if err := json.Unmarshal(out.Bytes(), &st); err != nil || len(st) != 1 || !st[0].InSync || st[0].Types["CDS"].Acked != cds {
		t.Errorf("status --json = %s (%v), want client~1 in sync with CDS %s acked", out.String(), err, cds)
	}

	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"controlplane_model_reloads_total 1\n",
		"controlplane_model_reload_errors_total 0\n",
		`controlplane_connected_proxies{variant="sotw"} 1` + "\n",
		`controlplane_connected_proxies{variant="delta"} 0` + "\n",
		`controlplane_xds_pushes_total{type="CDS"} 1` + "\n",
		`controlplane_xds_nacks_total{type="CDS"} 0` + "\n",
		// A client that asks for clusters alone never has its whole snapshot in
		// force, so no latency is observed.
		"controlplane_xds_push_latency_seconds_count 0\n",
		`controlplane_ca_issued_total{credential="join_token"} 0` + "\n",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics has no line %q", strings.TrimSpace(want))
		}
	}
}
