package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	demov1 "github.com/tinymesh/tinymesh/proto/demo/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startServer serves a demoapp on loopback ports chosen by the kernel and stops
// it when the test ends.
func startServer(t *testing.T, o options) *server {
	t.Helper()
	if o.httpAddr == "" {
		o.httpAddr = "127.0.0.1:0"
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := newServer(o, log)
	if err != nil {
		t.Fatalf("newServer: %v", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve() }()
	t.Cleanup(func() {
		s.Close()
		if err := <-errc; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

// httpClient returns a client whose idle connections are closed at test end, so
// goleak sees no leftover connection goroutines.
func httpClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// get sends one request and decodes the JSON reply.
func get(t *testing.T, c *http.Client, method, url string, hdr map[string]string) (int, http.Header, reply) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if strings.EqualFold(k, "host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	if got := resp.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("%s %s: Content-Type = %q, want application/json; body %s", method, url, got, body)
	}
	var rep reply
	if err := json.Unmarshal(body, &rep); err != nil {
		t.Fatalf("%s %s: body is not a reply: %v\n%s", method, url, err, body)
	}
	return resp.StatusCode, resp.Header, rep
}

func TestHTTPReplies(t *testing.T) {
	s := startServer(t, options{service: "backend", version: "v2"})
	c := httpClient(t)
	base := "http://" + s.HTTPAddr()

	tests := []struct {
		name     string
		method   string
		path     string
		hdr      map[string]string
		wantCode int
		want     reply // compared without hostname, pid and proto
	}{
		{
			name: "root", method: "GET", path: "/",
			hdr:      map[string]string{"X-Request-Id": "abc", "Host": "backend.default", "Accept": "ignored"},
			wantCode: 200,
			want: reply{Service: "backend", Version: "v2", Method: "GET", Path: "/", Host: "backend.default",
				Headers: map[string]string{"x-request-id": "abc", "user-agent": "Go-http-client/1.1"}},
		},
		{
			name: "healthz", method: "GET", path: "/healthz", wantCode: 200,
			want: reply{Service: "backend", Version: "v2", Method: "GET", Path: "/healthz",
				Headers: map[string]string{"user-agent": "Go-http-client/1.1"}},
		},
		{
			name: "status", method: "POST", path: "/status/503", wantCode: 503,
			want: reply{Service: "backend", Version: "v2", Method: "POST", Path: "/status/503", Status: 503,
				Headers: map[string]string{"user-agent": "Go-http-client/1.1"}},
		},
		{
			name: "echo any path with route-added header", method: "DELETE", path: "/a/b?q=1",
			hdr:      map[string]string{"X-Route": "canary", "User-Agent": "test"},
			wantCode: 200,
			want: reply{Service: "backend", Version: "v2", Method: "DELETE", Path: "/a/b",
				Headers: map[string]string{"x-route": "canary", "user-agent": "test"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, hdr, got := get(t, c, tt.method, base+tt.path, tt.hdr)
			if code != tt.wantCode {
				t.Errorf("status = %d, want %d", code, tt.wantCode)
			}
			if got.Hostname == "" || got.PID == 0 || got.Proto != "HTTP/1.1" {
				t.Errorf("hostname, pid, proto = %q, %d, %q; want non-empty, non-zero, HTTP/1.1", got.Hostname, got.PID, got.Proto)
			}
			if tt.want.Host == "" {
				tt.want.Host = s.HTTPAddr()
			}
			got.Hostname, got.PID, got.Proto = "", 0, ""
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("reply mismatch (-want +got):\n%s", diff)
			}
			if hdr.Get("X-Demo-Version") != "v2" {
				t.Errorf("X-Demo-Version = %q, want v2", hdr.Get("X-Demo-Version"))
			}
		})
	}
}

func TestStatusCodeValidation(t *testing.T) {
	s := startServer(t, options{service: "backend", version: "v1"})
	resp, err := httpClient(t).Get("http://" + s.HTTPAddr() + "/status/99")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("GET /status/99: status = %d, want 400", resp.StatusCode)
	}
}

func TestFrontendCallsUpstream(t *testing.T) {
	backend := startServer(t, options{service: "backend", version: "v1"})
	front := startServer(t, options{
		service: "frontend", version: "v1",
		upstreamURL: "http://" + backend.HTTPAddr(), upstreamHost: "backend",
	})
	c := httpClient(t)

	code, _, got := get(t, c, "GET", "http://"+front.HTTPAddr()+"/", map[string]string{"X-Request-Id": "req-1"})
	if code != 200 {
		t.Fatalf("status = %d, want 200; reply %+v", code, got)
	}
	if got.Service != "frontend" || got.UpstreamStatus != 200 || got.UpstreamError != "" {
		t.Errorf("service, upstreamStatus, upstreamError = %q, %d, %q; want frontend, 200, \"\"",
			got.Service, got.UpstreamStatus, got.UpstreamError)
	}
	var up reply
	if err := json.Unmarshal(got.Upstream, &up); err != nil {
		t.Fatalf("upstream is not a reply: %v\n%s", err, got.Upstream)
	}
	wantUp := reply{Service: "backend", Version: "v1", Method: "GET", Path: "/", Host: "backend",
		Headers: map[string]string{"x-request-id": "req-1", "user-agent": "demoapp/frontend"}}
	up.Hostname, up.PID, up.Proto = "", 0, ""
	if diff := cmp.Diff(wantUp, up); diff != "" {
		t.Errorf("upstream reply mismatch (-want +got):\n%s", diff)
	}

	// Only GET / calls the upstream: health probes must not depend on it.
	_, _, hz := get(t, c, "GET", "http://"+front.HTTPAddr()+"/healthz", nil)
	if hz.Upstream != nil {
		t.Errorf("/healthz upstream = %s, want none", hz.Upstream)
	}
}

func TestFrontendUpstreamFailures(t *testing.T) {
	proxyErr := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Meshproxy-Error", "no_healthy_upstream")
		http.Error(w, "no healthy upstream", http.StatusServiceUnavailable)
	}))
	defer proxyErr.Close()

	// A port nobody listens on: bind, note the address, close.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := l.Addr().String()
	l.Close()

	tests := []struct {
		name       string
		upstream   string
		wantStatus int // upstreamStatus
		wantErr    string
		wantBody   string // JSON of the embedded upstream reply
	}{
		{"proxy error", proxyErr.URL, 503, "x-meshproxy-error: no_healthy_upstream", `"no healthy upstream"`},
		{"connection refused", "http://" + deadAddr, 0, "connection refused", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			front := startServer(t, options{service: "frontend", version: "v1", upstreamURL: tt.upstream, upstreamHost: "backend"})
			code, _, got := get(t, httpClient(t), "GET", "http://"+front.HTTPAddr()+"/", nil)
			if code != http.StatusBadGateway {
				t.Errorf("status = %d, want 502", code)
			}
			if got.UpstreamStatus != tt.wantStatus || !strings.Contains(got.UpstreamError, tt.wantErr) || string(got.Upstream) != tt.wantBody {
				t.Errorf("upstreamStatus, upstreamError, upstream = %d, %q, %s; want %d, containing %q, %s",
					got.UpstreamStatus, got.UpstreamError, got.Upstream, tt.wantStatus, tt.wantErr, tt.wantBody)
			}
		})
	}
}

func TestGRPC(t *testing.T) {
	s := startServer(t, options{service: "backend", version: "v2", grpcAddr: "127.0.0.1:0"})
	for _, tc := range []struct{ name, addr string }{
		{"dedicated port", s.GRPCAddr()},
		{"h2c on the HTTP port", s.HTTPAddr()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			conn, err := grpc.NewClient(tc.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			client := demov1.NewDemoServiceClient(conn)

			hello, err := client.Hello(ctx, &demov1.HelloRequest{Name: "mesh"})
			if err != nil {
				t.Fatalf("Hello: %v", err)
			}
			if hello.GetMessage() != "hello, mesh" || hello.GetService() != "backend" || hello.GetVersion() != "v2" {
				t.Errorf("Hello = %v; want message %q, service backend, version v2", hello, "hello, mesh")
			}

			stream, err := client.Chat(ctx)
			if err != nil {
				t.Fatalf("Chat: %v", err)
			}
			var got []string
			for _, text := range []string{"a", "b", "c"} {
				if err := stream.Send(&demov1.ChatRequest{Text: text}); err != nil {
					t.Fatalf("Send: %v", err)
				}
				r, err := stream.Recv()
				if err != nil {
					t.Fatalf("Recv: %v", err)
				}
				got = append(got, r.GetText()+"/"+r.GetVersion()+"/"+strconv.FormatInt(r.GetSequence(), 10))
			}
			if err := stream.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
				t.Errorf("Recv after CloseSend: %v, want io.EOF", err)
			}
			if diff := cmp.Diff([]string{"a/v2/1", "b/v2/2", "c/v2/3"}, got); diff != "" {
				t.Errorf("Chat replies (-want +got):\n%s", diff)
			}

			hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("health Check = %v, %v; want SERVING", hc, err)
			}
		})
	}
}

func TestGRPCOverHTTP1(t *testing.T) {
	s := startServer(t, options{service: "backend", version: "v1"})
	req, err := http.NewRequest("POST", "http://"+s.HTTPAddr()+"/demo.v1.DemoService/Hello", strings.NewReader("\x00\x00\x00\x00\x00"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	resp, err := httpClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	// Trailers are set once the body has been read to EOF.
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got := []string{resp.Proto, resp.Header.Get("Content-Type"), resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")}
	want := []string{"HTTP/1.1", "application/grpc", "13", errGRPCOverHTTP1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("gRPC over HTTP/1.1: proto, content-type, grpc-status, grpc-message (-want +got):\n%s", diff)
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    options
		wantErr string
	}{
		{
			name: "frontend",
			args: []string{"--service", "frontend", "--http", "127.0.0.1:1", "--upstream-url", "http://127.0.0.1:2", "--upstream-host", "backend"},
			want: options{service: "frontend", version: "v1", httpAddr: "127.0.0.1:1", upstreamURL: "http://127.0.0.1:2",
				upstreamHost: "backend", logLevel: "info", logFormat: "text"},
		},
		{name: "host without url", args: []string{"--upstream-host", "backend"}, wantErr: "--upstream-host needs --upstream-url"},
		{name: "empty http", args: []string{"--http", ""}, wantErr: "--http is required"},
		{name: "stray argument", args: []string{"extra"}, wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFlags(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(options{})); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBadUpstreamURL(t *testing.T) {
	_, err := newServer(options{httpAddr: "127.0.0.1:0", upstreamURL: "https://x"}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "want http://host:port") {
		t.Errorf("newServer with https upstream: err = %v, want a --upstream-url error", err)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	pr, pw := io.Pipe()
	go func() {
		done <- run(ctx, []string{"--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"}, pw)
		pw.Close()
	}()
	// Wait for the "demoapp serving" log line rather than sleeping.
	buf := make([]byte, 4096)
	var out strings.Builder
	for !strings.Contains(out.String(), "demoapp serving") {
		n, err := pr.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			t.Fatalf("run output ended before serving: %v\n%s", err, out.String())
		}
	}
	go io.Copy(io.Discard, pr)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run = %v, want nil after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return within 10s of cancel")
	}
}
