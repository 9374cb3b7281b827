package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// protocolMesh has one Service per app protocol, each backed by one workload
// (app plus sidecar), and a client sidecar with an outbound HTTP listener and
// per-port TCP listeners on its own IP.
type protocolMesh struct {
	client  *proxy
	tcpPort int // the echo Service's port, bound by the client on its IP
}

func startProtocolMesh(t *testing.T) *protocolMesh {
	t.Helper()
	clientIP := newIP(t)
	tcpPort := freePort(t, clientIP)
	// A backend outside the mesh (no sidecar), known by an EndpointSlice.
	external := startHTTPBackend(t, newIP(t), backendID{service: "external", version: "external-v1", instance: "external-1"}, false)
	extHost, extPort, _ := net.SplitHostPort(external.addr)
	cp := startControlPlane(t, controlPlaneOptions{model: map[string]string{
		"services.yaml": strings.Join([]string{
			serviceYAML("web", "app=web", 8081, "http"),
			serviceYAML("h2svc", "app=h2svc", 8082, "h2c"),
			serviceYAML("greeter", "app=greeter", 9090, "grpc"),
			serviceYAML("echo", "app=echo", tcpPort, "tcp"),
		}, "---\n"),
		"external.yaml": fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: external
spec:
  ports:
  - name: http
    port: 8083
    appProtocol: http
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: external-1
  labels:
    kubernetes.io/service-name: external
addressType: IPv4
endpoints:
- addresses: [%q]
ports:
- name: http
  port: %s
`, extHost, extPort),
	}})

	ip := newIP(t)
	web := startHTTPBackend(t, ip, backendID{service: "web", version: "web-v1", instance: "web-1"}, false)
	startProxy(t, cp, proxyOptions{workload: "web-1", labels: "app=web", app: web.addr, ip: ip})

	ip = newIP(t)
	h2 := startHTTPBackend(t, ip, backendID{service: "h2svc", version: "h2-v1", instance: "h2-1"}, true)
	startProxy(t, cp, proxyOptions{workload: "h2-1", labels: "app=h2svc", app: h2.addr, ip: ip})

	ip = newIP(t)
	greeter := startGRPCBackend(t, ip, backendID{service: "greeter", version: "greeter-v1", instance: "greeter-1"})
	startProxy(t, cp, proxyOptions{workload: "greeter-1", labels: "app=greeter", app: greeter.addr, ip: ip})

	ip = newIP(t)
	echo := startEchoServer(t, ip, "echo-1")
	startProxy(t, cp, proxyOptions{workload: "echo-1", labels: "app=echo", app: echo.addr, ip: ip})

	m := &protocolMesh{tcpPort: tcpPort}
	m.client = startProxy(t, cp, proxyOptions{workload: "client", labels: "app=client", outbound: true, ip: clientIP})
	dumpOnFailure(t, m.client)
	probe(t, m.client.outbound, "web", 20*time.Second, "web-v1")
	probe(t, m.client.outbound, "h2svc", 20*time.Second, "h2-v1")
	return m
}

// TestProtocols carries HTTP/1.1, h2c, gRPC and TCP through a client sidecar and
// the backends' sidecars, each Service declaring its appProtocol.
func TestProtocols(t *testing.T) {
	m := startProtocolMesh(t)
	t.Run("http1", func(t *testing.T) { testHTTP1(t, m) })
	t.Run("h2c", func(t *testing.T) { testH2C(t, m) })
	t.Run("grpc", func(t *testing.T) { testGRPC(t, m) })
	t.Run("tcp", func(t *testing.T) { testTCP(t, m) })
	t.Run("endpointslice", func(t *testing.T) { testEndpointSlice(t, m) })
}

// testEndpointSlice reaches a Service whose endpoint is outside the mesh: the
// client sidecar must speak the Service's appProtocol (http) to it directly.
func testEndpointSlice(t *testing.T, m *protocolMesh) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	var rep reply
	retry(t, 20*time.Second, "GET external through the client sidecar", func() error {
		req, _ := http.NewRequest(http.MethodGet, "http://"+m.client.outbound+"/", nil)
		req.Host = "external.default:8083"
		var err error
		rep, err = doReply(c, req)
		return err
	})
	if rep.Service != "external" || rep.Proto != "HTTP/1.1" {
		t.Errorf("GET external: reached %q speaking %q, want external speaking HTTP/1.1", rep.Service, rep.Proto)
	}
}

func testHTTP1(t *testing.T, m *protocolMesh) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	// Every authority form the conventions list for the first port of a Service.
	for _, host := range []string{"web", "web.default", "web.default.svc", "web.default.svc.cluster.local", "web:8081", "web.default:8081", "web.default.svc.cluster.local:8081"} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+m.client.outbound+"/some/path", nil)
		req.Host = host
		rep, err := doReply(c, req)
		if err != nil {
			t.Errorf("GET with Host %q: %v", host, err)
			continue
		}
		if rep.Service != "web" || rep.Proto != "HTTP/1.1" {
			t.Errorf("GET with Host %q: reached service %q speaking %q, want web speaking HTTP/1.1 (appProtocol http)", host, rep.Service, rep.Proto)
		}
	}

	body := randomBytes(t, 1<<20)
	req, _ := http.NewRequest(http.MethodPost, "http://"+m.client.outbound+"/echo", bytes.NewReader(body))
	req.Host = "web"
	checkEcho(t, c, req, body, "HTTP/1.1")

	req, _ = http.NewRequest(http.MethodGet, "http://"+m.client.outbound+"/", nil)
	req.Host = "no-such-service"
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET with an unknown Host: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 == 2 || resp.Header.Get("x-meshproxy-error") != "route_not_found" {
		t.Errorf("GET with an unknown Host: got %s with x-meshproxy-error %q, want an error status with x-meshproxy-error \"route_not_found\"", resp.Status, resp.Header.Get("x-meshproxy-error"))
	}
}

// checkEcho sends req (a POST /echo of body) and checks the body comes back
// intact and the backend received the request over wantProto.
func checkEcho(t *testing.T, c *http.Client, req *http.Request, body []byte, wantProto string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST /echo of %d bytes: %v", len(body), err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("POST /echo: reading the response: %v", err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, body) {
		t.Errorf("POST /echo of %d bytes: got %s with %d bytes (equal: %v), want 200 with the same bytes", len(body), resp.Status, len(got), bytes.Equal(got, body))
	}
	if p := resp.Header.Get("x-backend-proto"); p != wantProto {
		t.Errorf("POST /echo: backend received %q, want %q", p, wantProto)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func testH2C(t *testing.T, m *protocolMesh) {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true) // prior knowledge, no HTTP/1.1 at all
	c := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	defer c.CloseIdleConnections()

	// Concurrent streams over the one h2c connection to the client sidecar.
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, "http://"+m.client.outbound+"/", nil)
			req.Host = "h2svc:8082"
			resp, err := c.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			if resp.Proto != "HTTP/2.0" {
				errs <- fmt.Errorf("client sidecar answered over %s, want HTTP/2.0", resp.Proto)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"proto":"HTTP/2.0"`) || !strings.Contains(string(body), `"service":"h2svc"`) {
				errs <- fmt.Errorf("got %s %s, want 200 from h2svc which received HTTP/2.0 (appProtocol h2c)", resp.Status, body)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("GET h2svc over h2c: %v", err)
	}

	body := randomBytes(t, 1<<20)
	req, _ := http.NewRequest(http.MethodPost, "http://"+m.client.outbound+"/echo", bytes.NewReader(body))
	req.Host = "h2svc.default.svc.cluster.local:8082"
	checkEcho(t, c, req, body, "HTTP/2.0")
}

func testGRPC(t *testing.T, m *protocolMesh) {
	cc, err := grpc.NewClient("passthrough:///"+m.client.outbound,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority("greeter:9090"))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := testgrpc.NewTestServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The greeter's endpoint may reach the client after /ready: retry the first
	// call until it succeeds or the deadline passes.
	var resp *testgrpc.SimpleResponse
	var header metadata.MD
	retry(t, 20*time.Second, "first UnaryCall through the mesh", func() error {
		callCtx, callCancel := context.WithTimeout(ctx, 5*time.Second)
		defer callCancel()
		resp, err = client.UnaryCall(callCtx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("hello")}}, grpc.Header(&header))
		return err
	})
	if resp.GetServerId() != "greeter-v1" || string(resp.GetPayload().GetBody()) != "hello" {
		t.Errorf("UnaryCall: got server_id %q payload %q, want greeter-v1 and hello", resp.GetServerId(), resp.GetPayload().GetBody())
	}
	if got := header.Get("x-backend-version"); len(got) != 1 || got[0] != "greeter-v1" {
		t.Errorf("UnaryCall response header x-backend-version = %v, want [greeter-v1]", got)
	}

	// A gRPC error status must come back as sent (trailers-only response).
	_, err = client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.NotFound), Message: "no such greeting"}})
	if st, _ := status.FromError(err); st.Code() != codes.NotFound || st.Message() != "no such greeting" {
		t.Errorf("UnaryCall asking for NOT_FOUND: got %v, want code NotFound message %q", err, "no such greeting")
	}

	// Server streaming: several messages, some larger than a default HTTP/2 frame.
	sizes := []int32{10, 70000, 1, 250000, 5}
	var params []*testgrpc.ResponseParameters
	for _, s := range sizes {
		params = append(params, &testgrpc.ResponseParameters{Size: s})
	}
	stream, err := client.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: params})
	if err != nil {
		t.Fatalf("StreamingOutputCall: %v", err)
	}
	var got []int32
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("StreamingOutputCall: Recv after %v: %v", got, err)
		}
		got = append(got, int32(len(msg.GetPayload().GetBody())))
	}
	if fmt.Sprint(got) != fmt.Sprint(sizes) {
		t.Errorf("StreamingOutputCall: got message sizes %v, want %v", got, sizes)
	}

	// Bidirectional streaming: each send waits for its echo, so the proxies must
	// forward frames as they come rather than buffer whole bodies.
	duplex, err := client.FullDuplexCall(ctx)
	if err != nil {
		t.Fatalf("FullDuplexCall: %v", err)
	}
	for i := range 10 {
		want := "ping " + strconv.Itoa(i)
		if err := duplex.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte(want)}}); err != nil {
			t.Fatalf("FullDuplexCall: Send %d: %v", i, err)
		}
		msg, err := duplex.Recv()
		if err != nil {
			t.Fatalf("FullDuplexCall: Recv %d: %v", i, err)
		}
		if string(msg.GetPayload().GetBody()) != want {
			t.Errorf("FullDuplexCall: got %q, want %q", msg.GetPayload().GetBody(), want)
		}
	}
	if err := duplex.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := duplex.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("FullDuplexCall: after CloseSend got %v, want io.EOF", err)
	}
}

func testTCP(t *testing.T, m *protocolMesh) {
	addr := net.JoinHostPort(m.client.ip, strconv.Itoa(m.tcpPort))
	// The per-port listener appears once the client has the echo Service; a
	// connection may also be accepted before the echo endpoint is known, so retry
	// until the greeting arrives.
	var conn net.Conn
	var greeting string
	retry(t, 20*time.Second, "TCP greeting via "+addr+" (OUTBOUND_IP:<echo port>)", func() error {
		var err error
		conn, greeting, err = dialEcho(addr)
		return err
	})
	defer conn.Close()
	if greeting != "echo-1" {
		t.Errorf("TCP greeting = %q, want %q", greeting, "echo-1")
	}

	body := randomBytes(t, 256<<10)
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Write(body)
		errc <- err
	}()
	got := make([]byte, len(body))
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatalf("TCP echo of %d bytes: %v", len(body), err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("TCP write: %v", err)
	}
	if !bytes.Equal(got, body) {
		t.Errorf("TCP echo: the %d bytes came back changed", len(body))
	}

	// Half-close: the client's FIN must reach the echo server, whose close must
	// come back as EOF.
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("TCP after CloseWrite: Read = %d, %v; want EOF", n, err)
	}
}

// dialEcho connects to addr and reads the echo server's greeting line.
func dialEcho(addr string) (net.Conn, string, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, "", err
	}
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		conn.Close()
		return nil, "", fmt.Errorf("reading the greeting: %w", err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	return conn, strings.TrimSuffix(line, "\n"), nil
}
