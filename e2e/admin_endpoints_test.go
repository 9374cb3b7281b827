package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// holdingApp answers GET /hold only when release is closed, and everything else
// at once; it counts the /hold requests it holds.
type holdingApp struct {
	addr    string
	held    atomic.Int32
	arrived chan struct{} // one value per /hold request that arrived
	release chan struct{}
}

func startHoldingApp(t *testing.T, ip string) *holdingApp {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	a := &holdingApp{addr: ln.Addr().String(), arrived: make(chan struct{}, 100), release: make(chan struct{})}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			a.held.Add(1)
			a.arrived <- struct{}{}
			select {
			case <-a.release:
			case <-r.Context().Done():
				return
			}
			a.held.Add(-1)
		}
		io.WriteString(w, "done")
	}), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("holding app: %v", err)
		}
	}()
	t.Cleanup(func() {
		select {
		case <-a.release:
		default:
			close(a.release)
		}
		srv.Close()
		<-done
	})
	return a
}

func adminGet(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAdminDrainFinishesInFlight holds requests in a workload's app, asks its
// sidecar to drain with POST /drain, and checks that the sidecar stops being
// ready, keeps the held requests until the app answers them (zero failures)
// and then exits by itself with status 0, a SIGTERM after the /drain
// notwithstanding. On the way it checks /clusters
// (the held requests are active on the app's endpoint), /config_dump (Envoy's
// format, parsed as envoy.admin.v3.ConfigDump) and /explain on the client.
func TestAdminDrainFinishesInFlight(t *testing.T) {
	cp := startControlPlane(t, controlPlaneOptions{model: map[string]string{
		"services.yaml": serviceYAML("slow", "app=slow", 8080, "http"),
	}})
	ip := newIP(t)
	app := startHoldingApp(t, ip)
	slow := startProxy(t, cp, proxyOptions{workload: "slow", labels: "app=slow", app: app.addr, ip: ip,
		extra: []string{"--drain-delay", "300ms", "--shutdown-grace", "20s"}})
	client := startProxy(t, cp, proxyOptions{workload: "client", labels: "app=client", outbound: true})
	dumpOnFailure(t, client, slow)
	retry(t, 20*time.Second, "slow answering through the client sidecar", func() error {
		code, body := httpGet(client.outbound, "slow", "/")
		if code != 200 || body != "done" {
			return fmt.Errorf("GET / = %d %q", code, body)
		}
		return nil
	})

	const cluster = "outbound|8080||slow.default.svc.cluster.local"
	// The client's config dump is Envoy's, and names the cluster.
	code, dump := adminGet(t, client.admin, "/config_dump")
	var d adminv3.ConfigDump
	if err := protojson.Unmarshal([]byte(dump), &d); code != 200 || err != nil {
		t.Fatalf("client /config_dump = %d, not an envoy.admin.v3.ConfigDump: %v\n%.2000s", code, err, dump)
	}
	if !strings.Contains(dump, `"name": "`+cluster+`"`) {
		t.Errorf("client /config_dump does not have cluster %s:\n%.3000s", cluster, dump)
	}
	// The explainer names the route the traffic takes.
	code, body := adminGet(t, client.admin, "/explain?authority=slow:8080&path=/hold")
	var e struct {
		VirtualHost string `json:"virtual_host"`
		Result      string
		Clusters    []struct {
			Name      string
			Endpoints []string
		}
	}
	if err := json.Unmarshal([]byte(body), &e); code != 200 || err != nil || e.Result != "forward" || len(e.Clusters) != 1 ||
		e.Clusters[0].Name != cluster || len(e.Clusters[0].Endpoints) != 1 || e.Clusters[0].Endpoints[0] != slow.inbound {
		t.Errorf("client /explain = %d %s (%v); want forward to %s at %s", code, body, err, cluster, slow.inbound)
	}

	const n = 5
	results := make(chan string, n)
	for range n {
		go func() {
			code, body := httpGet(client.outbound, "slow", "/hold")
			results <- fmt.Sprintf("%d %s", code, body)
		}()
	}
	for i := range n {
		select {
		case <-app.arrived:
		case <-time.After(20 * time.Second):
			t.Fatalf("only %d of %d held requests reached the app", i, n)
		}
	}
	// The slow sidecar's inbound endpoint (the app) has them all active.
	code, body = adminGet(t, slow.admin, "/clusters?format=text")
	if want := "::" + app.addr + "::rq_active::5\n"; code != 200 || !strings.Contains(body, want) {
		t.Errorf("slow /clusters?format=text = %d, want a line ending %q:\n%s", code, want, body)
	}
	// The same counters as Prometheus gauges, per cluster.
	code, body = adminGet(t, slow.admin, "/stats/prometheus")
	if want := regexp.MustCompile(`(?m)^envoy_cluster_upstream_rq_active\{cluster_name="inbound\|[0-9]+\|\|"\} 5$`); code != 200 || !want.MatchString(body) {
		t.Errorf("slow /stats/prometheus = %d, want a line matching %s", code, want)
	}

	from := slow.proc.lineCount()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Post("http://"+slow.admin+"/drain", "", nil)
	if err != nil {
		t.Fatalf("POST /drain: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /drain = %s, want 202", resp.Status)
	}
	// The pod's SIGTERM after a preStop /drain must not cut the drain.
	if err := slow.proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	if code, _ := adminGet(t, slow.admin, "/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("/ready while draining = %d, want 503", code)
	}
	// The listeners stop accepting after --drain-delay; the held requests
	// are still in flight then.
	slow.proc.waitLog(t, from, 20*time.Second, "the drain to start", func(line string) bool {
		return strings.Contains(line, "meshproxy stopping: draining")
	})
	if got := app.held.Load(); got != n {
		t.Errorf("%d requests held in the app when the drain started, want %d", got, n)
	}
	if slow.proc.exited() {
		t.Fatalf("the sidecar exited (%v) with requests in flight", slow.proc.err)
	}
	close(app.release)
	for range n {
		select {
		case r := <-results:
			if r != "200 done" {
				t.Errorf("held request during the drain = %s, want 200 done", r)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("held requests did not finish after the app answered")
		}
	}
	select {
	case <-slow.proc.done:
		if slow.proc.err != nil {
			t.Errorf("sidecar exited with %v after /drain, want status 0", slow.proc.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("sidecar did not exit within 20s after its requests finished")
	}
}

// httpGet sends GET path with Host host to target; code 0 and the error text
// when the exchange failed.
func httpGet(target, host, path string) (int, string) {
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	req, _ := http.NewRequest(http.MethodGet, "http://"+target+path, nil)
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err.Error()
	}
	return resp.StatusCode, string(b)
}
