package dataplane_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/websocket"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/tinymesh/tinymesh/dataplane"
	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/proxytest"
)

const backendFQDN = "backend.default.svc.cluster.local"

// tlsInbound is an inbound TLS listener in front of a plain HTTP/1.1 app.
func tlsInbound(addr, appAddr string, dtls *config.DownstreamTLS) *config.Snapshot {
	l := proxytest.HTTPListener("inbound", addr, config.Inbound)
	l.TLS = dtls
	return &config.Snapshot{
		Version:   "tls-1",
		Listeners: []*config.Listener{l},
		Routes:    map[string]*config.RouteConfig{"inbound": proxytest.Forward("inbound", []string{"*"}, 0, config.WeightedCluster{Name: proxytest.InboundCluster, Weight: 1})},
		Clusters:  map[string]*config.Cluster{proxytest.InboundCluster: proxytest.Cluster(proxytest.InboundCluster, config.ProtocolHTTP1, appAddr)},
	}
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return resp, string(b)
}

func TestTLSListenerServesH2AndHTTP1ByALPN(t *testing.T) {
	pki := proxytest.NewPKI(t, "test-ca")
	srvCert := pki.Issue(t, proxytest.Leaf{CommonName: "backend", DNSNames: []string{backendFQDN}})
	app := proxytest.StartApp(t, "app", nil)
	addr := proxytest.FreeAddr(t)
	proxytest.StartProxy(t, "B", tlsInbound(addr, app.Addr, &config.DownstreamTLS{
		Certificates: []config.CertificateKeyPair{srvCert},
		ALPN:         []string{"h2", "http/1.1"}, // xds/resource's default for HTTP listeners
	}))

	tests := []struct {
		name      string
		alpn      []string
		wantProto string
		wantALPN  string
	}{
		{"h2 via ALPN", []string{"h2"}, "HTTP/2.0", "h2"},
		{"http/1.1 via ALPN", []string{"http/1.1"}, "HTTP/1.1", "http/1.1"},
		{"client offering both gets h2", []string{"h2", "http/1.1"}, "HTTP/2.0", "h2"},
		{"client offering http/1.1 first gets h2 (server preference)", []string{"http/1.1", "h2"}, "HTTP/2.0", "h2"},
		{"no ALPN: HTTP/1.1", nil, "HTTP/1.1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := proxytest.TLSClient(t, pki.Pool, backendFQDN, tt.alpn, nil)
			resp, body := get(t, c, "https://"+addr+"/hello")
			if resp.StatusCode != http.StatusOK || body != "app" {
				t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, "app")
			}
			if resp.Proto != tt.wantProto {
				t.Errorf("downstream proto = %s, want %s", resp.Proto, tt.wantProto)
			}
			if got := resp.TLS.NegotiatedProtocol; got != tt.wantALPN {
				t.Errorf("ALPN = %q, want %q", got, tt.wantALPN)
			}
			// The app behind is plain HTTP/1.1 whatever the downstream spoke.
			if got := resp.Header.Get("X-Got-Proto"); got != "HTTP/1.1" {
				t.Errorf("app saw %s, want HTTP/1.1", got)
			}
		})
	}

	t.Run("plaintext client is refused", func(t *testing.T) {
		c := proxytest.Client(t)
		resp, err := c.Get("http://" + addr + "/hello")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("plain HTTP to a TLS listener got %d, want an error", resp.StatusCode)
		}
	})

	t.Run("untrusted server certificate is refused by the client", func(t *testing.T) {
		other := proxytest.NewPKI(t, "other-ca")
		c := proxytest.TLSClient(t, other.Pool, backendFQDN, []string{"h2", "http/1.1"}, nil)
		resp, err := c.Get("https://" + addr + "/hello")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("got %d, want a certificate error", resp.StatusCode)
		}
	})
}

func TestTLSListenerRequiresClientCertificate(t *testing.T) {
	pki := proxytest.NewPKI(t, "test-ca")
	srvCert := pki.Issue(t, proxytest.Leaf{CommonName: "backend", DNSNames: []string{backendFQDN}})
	clientPair := pki.Issue(t, proxytest.Leaf{CommonName: "frontend", URIs: []string{"spiffe://cluster.local/ns/default/sa/frontend"}, Client: true})
	app := proxytest.StartApp(t, "app", nil)
	addr := proxytest.FreeAddr(t)
	proxytest.StartProxy(t, "B", tlsInbound(addr, app.Addr, &config.DownstreamTLS{
		Certificates:             []config.CertificateKeyPair{srvCert},
		ALPN:                     []string{"h2", "http/1.1"},
		TrustedCA:                pki.CAPEM,
		RequireClientCertificate: true,
	}))

	t.Run("with a certificate", func(t *testing.T) {
		cert := proxytest.TLSCertificate(t, clientPair)
		c := proxytest.TLSClient(t, pki.Pool, backendFQDN, []string{"h2"}, &cert)
		resp, body := get(t, c, "https://"+addr+"/")
		if resp.StatusCode != http.StatusOK || body != "app" {
			t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, "app")
		}
	})
	t.Run("without a certificate", func(t *testing.T) {
		c := proxytest.TLSClient(t, pki.Pool, backendFQDN, []string{"h2"}, nil)
		resp, err := c.Get("https://" + addr + "/")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("got %d, want the handshake refused", resp.StatusCode)
		}
	})
	t.Run("with a certificate from another CA", func(t *testing.T) {
		other := proxytest.NewPKI(t, "other-ca")
		cert := proxytest.TLSCertificate(t, other.Issue(t, proxytest.Leaf{CommonName: "mallory", Client: true}))
		c := proxytest.TLSClient(t, pki.Pool, backendFQDN, []string{"h2"}, &cert)
		resp, err := c.Get("https://" + addr + "/")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("got %d, want the handshake refused", resp.StatusCode)
		}
	})
}

// logBuffer collects a proxy's log output for assertions and echoes it to t.
type logBuffer struct {
	t  testing.TB
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startLoggedProxy is proxytest.StartProxy with the log captured.
func startLoggedProxy(t *testing.T, snap *config.Snapshot) (*dataplane.Proxy, *logBuffer) {
	t.Helper()
	lb := &logBuffer{t: t}
	p := dataplane.New(dataplane.Options{Logger: slog.New(slog.NewTextHandler(lb, nil)), DrainTimeout: 5 * time.Second})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Close(ctx)
	})
	if err := p.Apply(snap); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return p, lb
}

func TestTLSClusterOriginatesWithALPNAndVerifiesSAN(t *testing.T) {
	pki := proxytest.NewPKI(t, "test-ca")
	srvCert := pki.Issue(t, proxytest.Leaf{CommonName: "backend", DNSNames: []string{backendFQDN}, URIs: []string{"spiffe://cluster.local/ns/default/sa/backend"}})
	clientPair := pki.Issue(t, proxytest.Leaf{CommonName: "frontend-sidecar", Client: true})
	app := proxytest.StartTLSApp(t, "tls-app", srvCert, pki.Pool)

	tests := []struct {
		name      string
		proto     config.Protocol
		sans      []config.SANMatcher
		wantProto string
		wantALPN  string
	}{
		{"h2 by ALPN, DNS SAN", config.ProtocolH2C, []config.SANMatcher{{Type: config.SANDNS, Exact: backendFQDN}}, "HTTP/2.0", "h2"},
		{"http/1.1 by ALPN, URI SAN", config.ProtocolHTTP1, []config.SANMatcher{{Type: config.SANURI, Exact: "spiffe://cluster.local/ns/default/sa/backend"}}, "HTTP/1.1", "http/1.1"},
		{"h2, any-type SAN among others", config.ProtocolH2C, []config.SANMatcher{{Type: config.SANDNS, Exact: "nope"}, {Type: config.SANAny, Exact: backendFQDN}}, "HTTP/2.0", "h2"},
		{"h2, chain only", config.ProtocolH2C, nil, "HTTP/2.0", "h2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := proxytest.FreeAddr(t)
			snap := proxytest.OutboundSnapshot("a1", out, config.WeightedCluster{Name: proxytest.OutboundCluster, Weight: 1})
			c := proxytest.Cluster(proxytest.OutboundCluster, tt.proto, app.Addr)
			c.TLS = &config.UpstreamTLS{SNI: backendFQDN, TrustedCA: pki.CAPEM, MatchSANs: tt.sans, ClientCertificate: &clientPair}
			snap.Clusters[c.Name] = c
			proxytest.StartProxy(t, "A", snap)

			req, _ := http.NewRequest("GET", "http://"+out+"/x", nil)
			req.Host = "backend"
			resp, err := proxytest.Client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || string(body) != "tls-app" {
				t.Fatalf("got %d %q (error %q), want 200 %q", resp.StatusCode, body, resp.Header.Get("X-Meshproxy-Error"), "tls-app")
			}
			for h, want := range map[string]string{"X-Got-Proto": tt.wantProto, "X-Got-ALPN": tt.wantALPN, "X-Got-Client-CN": "frontend-sidecar", "X-Got-Host": "backend"} {
				if got := resp.Header.Get(h); got != want {
					t.Errorf("%s = %q, want %q", h, got, want)
				}
			}
		})
	}
}

func TestTLSClusterWrongSANIsConnectFailure(t *testing.T) {
	pki := proxytest.NewPKI(t, "test-ca")
	srvCert := pki.Issue(t, proxytest.Leaf{CommonName: "backend", DNSNames: []string{backendFQDN}})
	app := proxytest.StartTLSApp(t, "tls-app", srvCert, nil)
	other := proxytest.NewPKI(t, "other-ca")

	tests := []struct {
		name    string
		tls     *config.UpstreamTLS
		wantLog string
	}{
		{"wrong SAN", &config.UpstreamTLS{SNI: backendFQDN, TrustedCA: pki.CAPEM,
			MatchSANs: []config.SANMatcher{{Type: config.SANDNS, Exact: "payments.default.svc.cluster.local"}}},
			"server certificate SANs [DNS:" + backendFQDN + "] match none of [DNS:payments.default.svc.cluster.local]"},
		{"untrusted CA", &config.UpstreamTLS{SNI: backendFQDN, TrustedCA: other.CAPEM}, "certificate signed by unknown authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := proxytest.FreeAddr(t)
			snap := proxytest.OutboundSnapshot("a1", out, config.WeightedCluster{Name: proxytest.OutboundCluster, Weight: 1})
			c := proxytest.Cluster(proxytest.OutboundCluster, config.ProtocolH2C, app.Addr)
			c.TLS = tt.tls
			snap.Clusters[c.Name] = c
			_, logs := startLoggedProxy(t, snap)

			req, _ := http.NewRequest("GET", "http://"+out+"/x", nil)
			req.Host = "backend"
			resp, err := proxytest.Client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Meshproxy-Error") != "upstream_connect_failure" {
				t.Errorf("got %d %q, want 503 upstream_connect_failure", resp.StatusCode, resp.Header.Get("X-Meshproxy-Error"))
			}
			if app.Requests.Load() != 0 {
				t.Errorf("app saw %d requests, want 0", app.Requests.Load())
			}
			got := logs.String()
			if !strings.Contains(got, "upstream TLS handshake failed") || !strings.Contains(got, tt.wantLog) || !strings.Contains(got, "level=WARN") {
				t.Errorf("log = %q\nwant a WARN line with %q and %q", got, "upstream TLS handshake failed", tt.wantLog)
			}
		})
	}
}

func TestGRPCOverTLSCluster(t *testing.T) {
	pki := proxytest.NewPKI(t, "test-ca")
	srvCert := pki.Issue(t, proxytest.Leaf{CommonName: "backend", DNSNames: []string{backendFQDN}})
	app := proxytest.StartGRPCTLSApp(t, srvCert)
	out := proxytest.FreeAddr(t)
	snap := proxytest.OutboundSnapshot("a1", out, config.WeightedCluster{Name: proxytest.OutboundCluster, Weight: 1})
	c := proxytest.Cluster(proxytest.OutboundCluster, config.ProtocolH2C, app.Addr)
	c.TLS = &config.UpstreamTLS{SNI: backendFQDN, TrustedCA: pki.CAPEM, MatchSANs: []config.SANMatcher{{Type: config.SANDNS, Exact: backendFQDN}}}
	snap.Clusters[c.Name] = c
	proxytest.StartProxy(t, "A", snap)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := grpcClient(t, out, "backend:8080").UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("over tls")}})
	if err != nil {
		t.Fatalf("UnaryCall: %v", err)
	}
	if got := string(resp.GetPayload().GetBody()); got != "over tls" {
		t.Errorf("payload = %q, want %q", got, "over tls")
	}
}

// TestTCPTLSTerminationAndOrigination chains two TCP listeners of one proxy:
// "edge" takes plain TCP and originates TLS to "secure", which terminates TLS
// and forwards plaintext to the echo server; a TLS client also talks to
// "secure" directly. Half-close travels as TLS close_notify.
func TestTCPTLSTerminationAndOrigination(t *testing.T) {
	pki := proxytest.NewPKI(t, "test-ca")
	srvCert := pki.Issue(t, proxytest.Leaf{CommonName: "echo", DNSNames: []string{"echo.default.svc.cluster.local"}})
	echo := proxytest.StartTCPEcho(t)
	edge, secure := proxytest.FreeAddr(t), proxytest.FreeAddr(t)
	snap := &config.Snapshot{
		Version: "tcp-tls-1",
		Listeners: []*config.Listener{
			{Name: "edge", Address: edge, TCP: &config.TCPProxy{Cluster: "to-secure", IdleTimeout: 10 * time.Second}},
			{Name: "secure", Address: secure, Direction: config.Inbound, TCP: &config.TCPProxy{Cluster: "echo", IdleTimeout: 10 * time.Second},
				TLS: &config.DownstreamTLS{Certificates: []config.CertificateKeyPair{srvCert}}},
		},
		Clusters: map[string]*config.Cluster{
			"to-secure": func() *config.Cluster {
				c := proxytest.Cluster("to-secure", config.ProtocolTCP, secure)
				c.TLS = &config.UpstreamTLS{SNI: "echo.default.svc.cluster.local", TrustedCA: pki.CAPEM,
					MatchSANs: []config.SANMatcher{{Type: config.SANDNS, Exact: "echo.default.svc.cluster.local"}}}
				return c
			}(),
			"echo": proxytest.Cluster("echo", config.ProtocolTCP, echo.Addr),
		},
	}
	proxytest.StartProxy(t, "P", snap)

	roundTrip := func(t *testing.T, c net.Conn, half func() error) {
		t.Helper()
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "ping"); err != nil {
			t.Fatal(err)
		}
		if err := half(); err != nil {
			t.Fatalf("half-close: %v", err)
		}
		b, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if string(b) != "echo:ping" {
			t.Errorf("got %q, want %q", b, "echo:ping")
		}
	}
	t.Run("plain client, TLS originated then terminated", func(t *testing.T) {
		c, err := net.Dial("tcp", edge)
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, c, c.(*net.TCPConn).CloseWrite)
	})
	t.Run("TLS client to the terminating listener", func(t *testing.T) {
		c, err := tls.Dial("tcp", secure, &tls.Config{RootCAs: pki.Pool, ServerName: "echo.default.svc.cluster.local"})
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, c, c.CloseWrite)
	})
}

func TestTLSApplyRejectsBadCertificateAndKeepsConfig(t *testing.T) {
	pki := proxytest.NewPKI(t, "test-ca")
	srvCert := pki.Issue(t, proxytest.Leaf{CommonName: "backend", DNSNames: []string{backendFQDN}})
	app := proxytest.StartApp(t, "app", nil)
	addr := proxytest.FreeAddr(t)
	good := tlsInbound(addr, app.Addr, &config.DownstreamTLS{Certificates: []config.CertificateKeyPair{srvCert}, ALPN: []string{"h2", "http/1.1"}})
	p := proxytest.StartProxy(t, "B", good)

	other := pki.Issue(t, proxytest.Leaf{CommonName: "other"})
	bad := tlsInbound(addr, app.Addr, &config.DownstreamTLS{Certificates: []config.CertificateKeyPair{{CertificateChain: srvCert.CertificateChain, PrivateKey: other.PrivateKey}}})
	bad.Version = "tls-2"
	err := p.Apply(bad)
	if err == nil || !strings.Contains(err.Error(), `listener "inbound"`) {
		t.Fatalf("Apply(mismatched key) = %v, want an error naming the listener", err)
	}
	if got := p.Snapshot().Version; got != "tls-1" {
		t.Errorf("version in force = %s, want tls-1", got)
	}
	c := proxytest.TLSClient(t, pki.Pool, backendFQDN, []string{"h2"}, nil)
	if resp, body := get(t, c, "https://"+addr+"/"); resp.StatusCode != http.StatusOK || body != "app" {
		t.Errorf("after the rejected Apply got %d %q, want 200 app", resp.StatusCode, body)
	}

	// A kept listener picks up a new certificate for new connections.
	rotated := pki.Issue(t, proxytest.Leaf{CommonName: "backend-rotated", DNSNames: []string{backendFQDN}})
	next := tlsInbound(addr, app.Addr, &config.DownstreamTLS{Certificates: []config.CertificateKeyPair{rotated}, ALPN: []string{"h2", "http/1.1"}})
	next.Version = "tls-3"
	if err := p.Apply(next); err != nil {
		t.Fatalf("Apply(rotated): %v", err)
	}
	c2 := proxytest.TLSClient(t, pki.Pool, backendFQDN, []string{"h2"}, nil)
	resp, _ := get(t, c2, "https://"+addr+"/")
	if got := resp.TLS.PeerCertificates[0].Subject.CommonName; got != "backend-rotated" {
		t.Errorf("certificate CN after rotation = %q, want backend-rotated", got)
	}
}

// tlsTwoHop is the mesh shape the identity work builds on: A's outbound
// cluster originates TLS (ALPN h2, SAN checked) to B's inbound TLS listener,
// which forwards plaintext to the app speaking appProto.
func tlsTwoHop(t *testing.T, appAddr string, appProto config.Protocol) (outbound string) {
	t.Helper()
	pki := proxytest.NewPKI(t, "mesh-ca")
	bCert := pki.Issue(t, proxytest.Leaf{CommonName: "backend", DNSNames: []string{backendFQDN}})
	in := proxytest.FreeAddr(t)
	snapB := tlsInbound(in, appAddr, &config.DownstreamTLS{Certificates: []config.CertificateKeyPair{bCert}, ALPN: []string{"h2", "http/1.1"}})
	snapB.Clusters[proxytest.InboundCluster].Protocol = appProto
	proxytest.StartProxy(t, "B", snapB)

	outbound = proxytest.FreeAddr(t)
	snapA := proxytest.OutboundSnapshot("a1", outbound, config.WeightedCluster{Name: proxytest.OutboundCluster, Weight: 1})
	c := proxytest.Cluster(proxytest.OutboundCluster, config.ProtocolH2C, in)
	c.TLS = &config.UpstreamTLS{SNI: backendFQDN, TrustedCA: pki.CAPEM, MatchSANs: []config.SANMatcher{{Type: config.SANDNS, Exact: backendFQDN}}}
	snapA.Clusters[c.Name] = c
	proxytest.StartProxy(t, "A", snapA)
	return outbound
}

func TestTLSBetweenSidecars(t *testing.T) {
	t.Run("HTTP", func(t *testing.T) {
		app := proxytest.StartApp(t, "app", nil)
		out := tlsTwoHop(t, app.Addr, config.ProtocolHTTP1)
		req, _ := http.NewRequest("GET", "http://"+out+"/stream?n=3", nil)
		req.Host = "backend.default:8080"
		resp, err := proxytest.Client(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(body) != "chunk0\nchunk1\nchunk2\n" {
			t.Fatalf("got %d %q, want 200 with 3 chunks", resp.StatusCode, body)
		}
		if got := resp.Trailer.Get("X-Checksum"); got != "n=3" {
			t.Errorf("trailer X-Checksum = %q, want n=3", got)
		}
	})
	t.Run("gRPC", func(t *testing.T) {
		app := proxytest.StartGRPCApp(t)
		out := tlsTwoHop(t, app.Addr, config.ProtocolH2C)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := grpcClient(t, out, "backend:8080").UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("hop")}})
		if err != nil {
			t.Fatalf("UnaryCall: %v", err)
		}
		if got := string(resp.GetPayload().GetBody()); got != "hop" {
			t.Errorf("payload = %q, want hop", got)
		}
	})
	t.Run("WebSocket takes an HTTP/1.1 TLS connection", func(t *testing.T) {
		app := proxytest.StartWebSocketApp(t)
		out := tlsTwoHop(t, app, config.ProtocolHTTP1)
		ws, err := dialWebSocket(out)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		if err := websocket.Message.Send(ws, "hello"); err != nil {
			t.Fatalf("send: %v", err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatalf("receive: %v", err)
		}
		if got != "hello" {
			t.Errorf("echo = %q, want hello", got)
		}
	})
}
