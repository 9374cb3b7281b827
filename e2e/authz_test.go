package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// authzPolicy allows callers to reach service; extraRule, when set, is spliced
// in as a second rule.
func authzPolicy(service string, callers []string, extraRule string) string {
	return fmt.Sprintf(`apiVersion: mesh.tinymesh.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: %s-callers
  namespace: default
spec:
  targetRef:
    kind: Service
    name: %s
  rules:
  - from:
      serviceAccounts: [%s]
%s`, service, service, strings.Join(callers, ", "), extraRule)
}

// TestAuthorizationPolicy: once a Service has a policy, only the callers it
// names get through, for HTTP (403), gRPC (PERMISSION_DENIED) and TCP (the
// connection is closed); a rule narrowed by path admits another caller to
// that path only; every denial is logged with the caller's identity.
func TestAuthorizationPolicy(t *testing.T) {
	frontendIP, intruderIP := newIP(t), newIP(t)
	tcpPort := freePort(t, frontendIP)
	cp := startControlPlane(t, controlPlaneOptions{model: map[string]string{
		"services.yaml": strings.Join([]string{
			serviceYAML("backend", "app=backend", 8080, "http"),
			serviceYAML("greeter", "app=greeter", 9090, "grpc"),
			serviceYAML("echo", "app=echo", tcpPort, "tcp"),
		}, "---\n"),
		"authz.yaml": strings.Join([]string{
			authzPolicy("backend", []string{"frontend"}, `  - from:
      serviceAccounts: [intruder]
    to:
      paths: [/public/]
      methods: [GET]
`),
			authzPolicy("greeter", []string{"frontend"}, ""),
			authzPolicy("echo", []string{"frontend"}, ""),
		}, "---\n"),
	}})

	ip := newIP(t)
	web := startHTTPBackend(t, ip, backendID{service: "backend", version: "v1", instance: "backend-1"}, false)
	backend := startProxy(t, cp, proxyOptions{workload: "backend", labels: "app=backend", app: web.addr, ip: ip})
	ip = newIP(t)
	greeterApp := startGRPCBackend(t, ip, backendID{service: "greeter", version: "greeter-v1", instance: "greeter-1"})
	greeter := startProxy(t, cp, proxyOptions{workload: "greeter", labels: "app=greeter", app: greeterApp.addr, ip: ip})
	ip = newIP(t)
	echoApp := startEchoServer(t, ip, "echo-1")
	echo := startProxy(t, cp, proxyOptions{workload: "echo", labels: "app=echo", app: echoApp.addr, ip: ip})

	frontend := startProxy(t, cp, proxyOptions{workload: "frontend", labels: "app=frontend", outbound: true, ip: frontendIP})
	intruder := startProxy(t, cp, proxyOptions{workload: "intruder", labels: "app=intruder", outbound: true, ip: intruderIP})
	dumpOnFailure(t, frontend, intruder, backend, greeter, echo)
	probe(t, frontend.outbound, "backend", 20*time.Second, "v1")

	t.Run("http", func(t *testing.T) {
		from := backend.proc.lineCount()
		if code, errHdr := httpStatus(t, intruder.outbound, "/"); code != http.StatusForbidden || errHdr != "rbac_denied" {
			t.Errorf("intruder GET /: %d x-meshproxy-error=%q, want 403 rbac_denied", code, errHdr)
		}
		backend.proc.waitLog(t, from, 10*time.Second, "the denial logged with the intruder's SPIFFE ID", func(line string) bool {
			return strings.Contains(line, "rbac denied") && strings.Contains(line, spiffeID("intruder"))
		})
		if code, _ := httpStatus(t, intruder.outbound, "/public/status"); code != http.StatusOK {
			t.Errorf("intruder GET /public/status: %d, want 200 (the path rule admits it)", code)
		}
		if code, _ := httpStatus(t, frontend.outbound, "/"); code != http.StatusOK {
			t.Errorf("frontend GET /: %d, want 200", code)
		}
	})

	t.Run("grpc", func(t *testing.T) {
		call := func(p *proxy) error {
			cc, err := grpc.NewClient("passthrough:///"+p.outbound,
				grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("greeter:9090"))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = testgrpc.NewTestServiceClient(cc).UnaryCall(ctx, &testgrpc.SimpleRequest{})
			return err
		}
		retry(t, 20*time.Second, "frontend's gRPC call to greeter", func() error { return call(frontend) })
		from := greeter.proc.lineCount()
		if err := call(intruder); status.Code(err) != codes.PermissionDenied {
			t.Errorf("intruder's gRPC call: %v, want PERMISSION_DENIED", err)
		}
		greeter.proc.waitLog(t, from, 10*time.Second, "the gRPC denial logged", func(line string) bool {
			return strings.Contains(line, "rbac denied") && strings.Contains(line, spiffeID("intruder"))
		})
	})

	t.Run("tcp", func(t *testing.T) {
		retry(t, 20*time.Second, "frontend's TCP greeting from echo", func() error {
			conn, greeting, err := dialEcho(net.JoinHostPort(frontendIP, strconv.Itoa(tcpPort)))
			if err != nil {
				return err
			}
			conn.Close()
			if greeting != "echo-1" {
				return fmt.Errorf("greeting %q", greeting)
			}
			return nil
		})
		from := echo.proc.lineCount()
		addr := net.JoinHostPort(intruderIP, strconv.Itoa(tcpPort))
		retry(t, 20*time.Second, "intruder's outbound TCP listener", func() error {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(conn)
		if len(b) > 0 {
			t.Errorf("intruder's TCP connection got %q from echo, want it closed unanswered", b)
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("intruder's TCP connection still open after 10 s, want it closed")
		}
		echo.proc.waitLog(t, from, 10*time.Second, "the TCP denial logged", func(line string) bool {
			return strings.Contains(line, "rbac denied") && strings.Contains(line, spiffeID("intruder"))
		})
	})
}

// httpStatus sends GET path with Host backend through a client sidecar and
// returns the status and x-meshproxy-error.
func httpStatus(t *testing.T, outbound, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "http://"+outbound+path, nil)
	req.Host = "backend"
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s via %s: %v", path, outbound, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("x-meshproxy-error")
}
