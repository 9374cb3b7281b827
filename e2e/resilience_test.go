package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// startStatusApp serves every request with status and body on a fresh port of ip.
func startStatusApp(t *testing.T, ip string, status int, body string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	})}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

// TestOutlierEjectionThroughMTLSSidecars puts a DestinationRule with outlier
// detection on a Service with two workloads behind mTLS sidecars, one of whose
// apps answers 503: the client's sidecar ejects that endpoint, every request
// then succeeds, and the client's /clusters shows the endpoint ejected.
func TestOutlierEjectionThroughMTLSSidecars(t *testing.T) {
	cp := startControlPlane(t, controlPlaneOptions{model: map[string]string{
		"services.yaml": serviceYAML("web", "app=web", 8080, "http"),
		"rule.yaml": `apiVersion: mesh.tinymesh.io/v1alpha1
kind: DestinationRule
metadata: {name: web, namespace: default}
spec:
  host: web.default.svc.cluster.local
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 2
      interval: 100ms
      baseEjectionTime: 60s
      maxEjectionPercent: 50
`,
	}})
	goodIP, badIP := newIP(t), newIP(t)
	good := startProxy(t, cp, proxyOptions{workload: "web-good", labels: "app=web", ip: goodIP, app: startStatusApp(t, goodIP, 200, "good")})
	bad := startProxy(t, cp, proxyOptions{workload: "web-bad", labels: "app=web", ip: badIP, app: startStatusApp(t, badIP, 503, "bad")})
	client := startProxy(t, cp, proxyOptions{workload: "client", labels: "app=client", outbound: true})
	dumpOnFailure(t, client, good, bad)

	const cluster = "outbound|8080||web.default.svc.cluster.local"
	ejected := cluster + "::" + bad.inbound + "::health_flags::/failed_outlier_check\n"
	var sawBad bool
	retry(t, 30*time.Second, "the bad endpoint ejected by the client sidecar", func() error {
		code, body := httpGet(client.outbound, "web", "/")
		if code == 503 && body == "bad" {
			sawBad = true // the app's own 503, through both sidecars
		}
		_, text := adminGet(t, client.admin, "/clusters?format=text")
		if !strings.Contains(text, ejected) {
			return fmt.Errorf("last GET = %d %q; /clusters has no %q:\n%s", code, body, ejected, text)
		}
		return nil
	})
	if !sawBad {
		t.Error("no request reached the bad app before the ejection")
	}
	for i := range 10 {
		if code, body := httpGet(client.outbound, "web", "/"); code != 200 || body != "good" {
			t.Fatalf("request %d after the ejection: %d %q, want 200 good", i, code, body)
		}
	}
	_, js := adminGet(t, client.admin, "/clusters")
	var cs struct {
		Clusters []struct {
			Name             string
			OutlierDetection bool   `json:"outlier_detection"`
			Ejections        uint64 `json:"outlier_detection_ejections_total"`
			Endpoints        []struct {
				Address, Health string
				Outlier         string `json:"outlier_detection"`
				Ejections       int
				Left            int64 `json:"ejection_time_left_ms"`
			}
		}
	}
	if err := json.Unmarshal([]byte(js), &cs); err != nil {
		t.Fatalf("/clusters: %v\n%s", err, js)
	}
	found := false
	for _, c := range cs.Clusters {
		if c.Name != cluster {
			continue
		}
		if !c.OutlierDetection || c.Ejections != 1 {
			t.Errorf("cluster %s: outlier_detection=%v ejections=%d, want true 1", cluster, c.OutlierDetection, c.Ejections)
		}
		for _, e := range c.Endpoints {
			want := "healthy"
			if e.Address == bad.inbound {
				want, found = "ejected", true
				if e.Ejections != 1 || e.Left <= 0 || e.Outlier != "ejected" {
					t.Errorf("bad endpoint: %+v, want one ejection with time left", e)
				}
			}
			if e.Health != want {
				t.Errorf("endpoint %s health %q, want %q", e.Address, e.Health, want)
			}
		}
	}
	if !found {
		t.Errorf("/clusters has no endpoint %s in %s:\n%s", bad.inbound, cluster, js)
	}
	_, metrics := adminGet(t, client.admin, "/stats/prometheus")
	if want := `envoy_cluster_outlier_detection_ejections_total{cluster_name="` + cluster + `"} 1`; !strings.Contains(metrics, want) {
		t.Errorf("/stats/prometheus has no %q", want)
	}
}
