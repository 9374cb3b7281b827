package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// telemetryYAML turns on JSON access logs to stdout for the backend workloads
// only (docs/observability.md).
const telemetryYAML = `apiVersion: mesh.tinymesh.io/v1alpha1
kind: Telemetry
metadata:
  name: backend-logs
  namespace: default
spec:
  selector:
    matchLabels:
      app: backend
  accessLogging:
    format: json
    path: /dev/stdout
`

// scrape reads a sidecar's /stats/prometheus.
func scrape(t *testing.T, p *proxy) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := adminGet(t, p.admin, "/stats/prometheus")
	if code != http.StatusOK {
		t.Fatalf("GET %s/stats/prometheus: %d %s", p.admin, code, body)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse %s/stats/prometheus: %v\n%s", p.admin, err, body)
	}
	return fams
}

// counter sums the samples of a counter whose labels include want, and returns
// the matching series' labels for messages.
func counter(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, []string) {
	var sum float64
	var series []string
	for _, m := range fams[name].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		ok := true
		for k, v := range want {
			if labels[k] != v {
				ok = false
			}
		}
		if ok {
			sum += m.GetCounter().GetValue()
			series = append(series, fmt.Sprint(labels))
		}
	}
	return sum, series
}

// TestTelemetry: a Telemetry in the model turns on JSON access logs for the
// backend's sidecar; N requests through the client sidecar show up exactly in
// istio_requests_total on both sidecars with the labels mesh users expect
// (the outbound destination_workload from EDS endpoint metadata, the inbound
// source from the mTLS peer), and the backend sidecar's access log line has
// every field of the request.
func TestTelemetry(t *testing.T) {
	cp := startControlPlane(t, controlPlaneOptions{model: map[string]string{
		"services.yaml":  serviceYAML("backend", "app=backend", 8080, "http"),
		"telemetry.yaml": telemetryYAML,
	}})
	ip := newIP(t)
	app := startHTTPBackend(t, ip, backendID{service: "backend", version: "v1", instance: "backend-1"}, false)
	backend := startProxy(t, cp, proxyOptions{workload: "backend", labels: "app=backend,version=v1", app: app.addr, ip: ip})
	client := startProxy(t, cp, proxyOptions{workload: "frontend", labels: "app=frontend", outbound: true})
	dumpOnFailure(t, client, backend)
	probe(t, client.outbound, "backend", 20*time.Second, "v1")

	outboundLabels := map[string]string{
		"reporter": "source", "source_workload": "frontend", "source_workload_namespace": "default",
		"destination_workload": "backend", "destination_workload_namespace": "default", "destination_version": "v1",
		"destination_service": "backend.default.svc.cluster.local", "response_code": "200", "response_flags": "-",
		"source_principal": spiffeID("frontend"), "destination_principal": spiffeID("backend"),
	}
	inboundLabels := map[string]string{
		"reporter": "destination", "source_workload": "frontend", "source_workload_namespace": "default",
		"source_principal": spiffeID("frontend"), "destination_workload": "backend",
		"destination_workload_namespace": "default", "destination_version": "v1",
		"destination_service": "backend.default.svc.cluster.local", "response_code": "200",
		"connection_security_policy": "mutual_tls", "response_flags": "-",
	}
	// The probe's requests are counted too: measure from here.
	outBefore, _ := counter(scrape(t, client), "istio_requests_total", outboundLabels)
	inBefore, _ := counter(scrape(t, backend), "istio_requests_total", inboundLabels)

	const n = 20
	const requestID = "e2e-telemetry-last"
	from := backend.proc.lineCount()
	c := &http.Client{Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	var lastBody []byte
	for i := range n {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/telemetry/%d", client.outbound, i), nil)
		req.Host = "backend"
		if i == n-1 {
			req.Header.Set("x-request-id", requestID)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %s %v %s", i, resp.Status, err, body)
		}
		lastBody = body
	}

	// The sidecars record a request when its stream ends, a moment after the
	// client has the response: wait for the count, then check it is exact.
	check := func(p *proxy, labels map[string]string, before float64, side string) {
		t.Helper()
		var got float64
		var series []string
		retry(t, 10*time.Second, side+" istio_requests_total to reach its count", func() error {
			got, series = counter(scrape(t, p), "istio_requests_total", labels)
			if got-before < n {
				return fmt.Errorf("%v new requests, want %d; series %v", got-before, n, series)
			}
			return nil
		})
		if got-before != n {
			t.Errorf("%s istio_requests_total grew by %v, want exactly %d; series %v", side, got-before, n, series)
		}
		if len(series) != 1 {
			t.Errorf("%s: %d series match %v, want 1: %v", side, len(series), labels, series)
		}
	}
	check(client, outboundLabels, outBefore, "outbound (client sidecar)")
	check(backend, inboundLabels, inBefore, "inbound (backend sidecar)")
	// The outbound side does not know the transport's security (Istio reports
	// unknown there too); the duration histogram counts the same requests.
	if _, series := counter(scrape(t, client), "istio_requests_total", map[string]string{"reporter": "source", "connection_security_policy": "unknown"}); len(series) == 0 {
		t.Errorf("no outbound series with connection_security_policy unknown")
	}
	var durations uint64
	for _, m := range scrape(t, backend)["istio_request_duration_milliseconds"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "reporter" && l.GetValue() == "destination" {
				durations += m.GetHistogram().GetSampleCount()
			}
		}
	}
	if durations < n {
		t.Errorf("inbound istio_request_duration_milliseconds counts %d requests, want at least %d", durations, n)
	}

	// The access log line of the last request, on the backend sidecar's stdout.
	line := backend.proc.waitLog(t, from, 10*time.Second, "the access log line of request "+requestID, func(l string) bool {
		return strings.Contains(l, `"request_id":"`+requestID+`"`)
	})
	var got map[string]any
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatalf("access log line is not JSON: %v\n%s", err, line)
	}
	want := map[string]any{
		"method":                  "GET",
		"authority":               "backend",
		"path":                    fmt.Sprintf("/telemetry/%d", n-1),
		"protocol":                "HTTP/2", // sidecar to sidecar: h2 over mTLS
		"response_code":           200.0,
		"grpc_status":             nil,
		"response_flags":          "-",
		"bytes_received":          0.0,
		"bytes_sent":              float64(len(lastBody)),
		"upstream_host":           app.addr,
		"upstream_cluster":        "inbound|" + app.addr[strings.LastIndex(app.addr, ":")+1:] + "||",
		"route_name":              "default",
		"downstream_peer_uri_san": spiffeID("frontend"),
		"request_id":              requestID,
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			t.Errorf("access log %s = %#v, want %#v", k, g, w)
		}
	}
	if d, ok := got["duration"].(float64); !ok || d < 0 || d > 5000 {
		t.Errorf("access log duration = %#v, want milliseconds in 0..5000", got["duration"])
	}
	if s, _ := got["start_time"].(string); s == "" {
		t.Errorf("access log start_time = %#v, want a time", got["start_time"])
	} else if ts, err := time.Parse(time.RFC3339Nano, s); err != nil || time.Since(ts) > time.Minute || time.Since(ts) < 0 {
		t.Errorf("access log start_time = %q (%v), want a time within the last minute", s, err)
	}
	if a, _ := got["downstream_remote_address"].(string); !strings.HasPrefix(a, "127.") {
		t.Errorf("access log downstream_remote_address = %#v, want the client sidecar's loopback address", got["downstream_remote_address"])
	}
	// Tracing is off in this test: no trace id.
	if tid, ok := got["trace_id"]; !ok || tid != nil {
		t.Errorf("access log trace_id = %#v, want null (tracing off)", tid)
	}
	var keys []string
	for k := range got {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if len(keys) != 18 {
		t.Errorf("access log keys = %v, want the 18 of docs/observability.md", keys)
	}

	// The client has no Telemetry: no access log lines on its output.
	if out := client.proc.output(maxLines); strings.Contains(out, `"request_id":"`+requestID+`"`) {
		t.Errorf("client sidecar wrote an access log line without a Telemetry for it")
	}
	// xDS client metrics: connected, and an ACKed listener update.
	fams := scrape(t, client)
	if v := fams["meshproxy_xds_connected"].GetMetric(); len(v) != 1 || v[0].GetGauge().GetValue() != 1 {
		t.Errorf("meshproxy_xds_connected = %v, want 1", v)
	}
	if acks, _ := counter(fams, "meshproxy_xds_updates_total", map[string]string{
		"type": "type.googleapis.com/envoy.config.listener.v3.Listener", "result": "ack"}); acks < 1 {
		t.Errorf("meshproxy_xds_updates_total of listeners acked = %v, want >= 1", acks)
	}
}
