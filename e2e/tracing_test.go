package e2e

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/tinymesh/tinymesh/dataplane/tracing/tracingtest"
)

// tracingGRPCYAML turns on tracing mesh-wide, exported over OTLP/gRPC to the
// collector at endpoint (docs/observability.md, "Tracing").
func tracingGRPCYAML(endpoint string) string {
	return fmt.Sprintf(`apiVersion: mesh.tinymesh.io/v1alpha1
kind: Telemetry
metadata:
  name: mesh-tracing
  namespace: tinymesh-system
spec:
  tracing:
    protocol: grpc
    endpoint: %s
    samplingPercent: 100
`, endpoint)
}

// TestTracingThroughTheMesh: a Telemetry in the model turns on OTLP/gRPC
// tracing; the control plane serves it as the HCM's tracing with an
// envoy_grpc collector cluster (and as TCP listeners' metadata), and the real
// sidecars export to a real gRPC TraceService. An HTTP request carrying a
// traceparent gives one CLIENT span on the caller's sidecar and one SERVER
// span on the callee's, both in the caller's trace, the SERVER span the
// child of the CLIENT one; a TCP connection gives one span on each sidecar.
func TestTracingThroughTheMesh(t *testing.T) {
	col := tracingtest.NewGRPCCollector(t)
	clientIP := newIP(t)
	tcpPort := freePort(t, clientIP)
	cp := startControlPlane(t, controlPlaneOptions{model: map[string]string{
		"services.yaml": serviceYAML("backend", "app=backend", 8080, "http") + "---\n" +
			serviceYAML("echo", "app=echo", tcpPort, "tcp"),
		"telemetry.yaml": tracingGRPCYAML(col.Endpoint()),
	}})
	ip := newIP(t)
	app := startHTTPBackend(t, ip, backendID{service: "backend", version: "v1", instance: "backend-1"}, false)
	backend := startProxy(t, cp, proxyOptions{workload: "backend", labels: "app=backend,version=v1", app: app.addr, ip: ip})
	ip = newIP(t)
	echo := startEchoServer(t, ip, "echo-1")
	echoSidecar := startProxy(t, cp, proxyOptions{workload: "echo", labels: "app=echo", app: echo.addr, ip: ip})
	client := startProxy(t, cp, proxyOptions{workload: "frontend", labels: "app=frontend", outbound: true, ip: clientIP})
	dumpOnFailure(t, client, backend, echoSidecar)
	probe(t, client.outbound, "backend", 20*time.Second, "v1")

	const traceID, parentID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	req, _ := http.NewRequest(http.MethodGet, "http://"+client.outbound+"/traced", nil)
	req.Host = "backend"
	req.Header.Set("traceparent", "00-"+traceID+"-"+parentID+"-01")
	c := &http.Client{Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("traced request: %s", resp.Status)
	}
	var out, in tracingtest.Span
	retry(t, 15*time.Second, "the traced request's two spans", func() error {
		out, in = tracingtest.Span{}, tracingtest.Span{}
		for _, s := range col.Spans() {
			if s.TraceID != traceID {
				continue
			}
			switch s.Resource["service.name"] {
			case "frontend":
				out = s
			case "backend":
				in = s
			}
		}
		if out.SpanID == "" || in.SpanID == "" {
			return fmt.Errorf("spans of trace %s: frontend %q, backend %q", traceID, out.SpanID, in.SpanID)
		}
		return nil
	})
	if out.Kind != tracepb.Span_SPAN_KIND_CLIENT || in.Kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("span kinds: frontend %v, backend %v; want CLIENT and SERVER", out.Kind, in.Kind)
	}
	if out.ParentSpanID != parentID || in.ParentSpanID != out.SpanID {
		t.Errorf("parents: frontend %q (want the caller's %s), backend %q (want the frontend span %s)",
			out.ParentSpanID, parentID, in.ParentSpanID, out.SpanID)
	}
	if got := in.Attrs["peer.spiffe_id"]; got != spiffeID("frontend") {
		t.Errorf("backend span's peer.spiffe_id %q, want %q", got, spiffeID("frontend"))
	}

	// TCP: no headers, so each sidecar's span is the root of its own trace.
	addr := net.JoinHostPort(client.ip, strconv.Itoa(tcpPort))
	var conn net.Conn
	retry(t, 20*time.Second, "TCP greeting via "+addr, func() error {
		var err error
		conn, _, err = dialEcho(addr)
		return err
	})
	conn.Close()
	retry(t, 15*time.Second, "a span of the TCP connection on each sidecar", func() error {
		var client, server bool
		for _, s := range col.Spans() {
			if s.Attrs["network.transport"] != "tcp" || s.ParentSpanID != "" {
				continue
			}
			switch s.Resource["service.name"] {
			case "frontend":
				client = s.Kind == tracepb.Span_SPAN_KIND_CLIENT && s.Attrs["upstream.spiffe_id"] == spiffeID("echo")
			case "echo":
				server = s.Kind == tracepb.Span_SPAN_KIND_SERVER && s.Attrs["peer.spiffe_id"] == spiffeID("frontend")
			}
		}
		if !client || !server {
			return fmt.Errorf("TCP spans with both SPIFFE IDs: client side %v, server side %v; spans %+v", client, server, col.Spans())
		}
		return nil
	})
}
