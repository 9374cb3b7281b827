package dataplane_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/proxytest"
)

const (
	frontendID = "spiffe://cluster.local/ns/default/sa/frontend"
	intruderID = "spiffe://cluster.local/ns/default/sa/intruder"
)

// rbacPKI is a mesh CA with the backend's serving certificate and two
// callers' SVIDs.
type rbacPKI struct {
	*proxytest.PKI
	server             config.CertificateKeyPair
	frontend, intruder tls.Certificate
}

func newRBACPKI(t *testing.T) *rbacPKI {
	pki := proxytest.NewPKI(t, "mesh-ca")
	return &rbacPKI{
		PKI: pki,
		server: pki.Issue(t, proxytest.Leaf{DNSNames: []string{backendFQDN},
			URIs: []string{"spiffe://cluster.local/ns/default/sa/backend"}}),
		frontend: proxytest.TLSCertificate(t, pki.IssueSVID(t, frontendID)),
		intruder: proxytest.TLSCertificate(t, pki.IssueSVID(t, intruderID)),
	}
}

// mTLS is the inbound listener's TLS as STRICT mTLS has it.
func (p *rbacPKI) mTLS() *config.DownstreamTLS {
	return &config.DownstreamTLS{
		Certificates: []config.CertificateKeyPair{p.server},
		ALPN:         []string{"h2", "http/1.1"},
		MinVersion:   config.TLS13, MaxVersion: config.TLS13,
		TrustedCA: p.CAPEM, RequireClientCertificate: true,
	}
}

// allowOnly is ALLOW rules with one policy per caller, as the control plane
// writes an AuthorizationPolicy.
func allowOnly(ids ...string) *config.RBAC {
	r := &config.RBAC{Action: config.RBACAllow}
	for _, id := range ids {
		r.Policies = append(r.Policies, config.RBACPolicy{
			Name:        "default/callers[" + id[strings.LastIndexByte(id, '/')+1:] + "]",
			Permissions: []config.RBACMatcher{{Kind: config.RBACAny}},
			Principals: []config.RBACMatcher{{Kind: config.RBACAuthenticated,
				String: config.StringMatcher{Kind: config.StringExact, Value: id}}},
		})
	}
	return r
}

// rbacInbound is an mTLS inbound HTTP listener in front of an app speaking
// proto, whose RBAC filter allows only frontend. The virtual host "open"
// (authority open:8080) overrides it to allow any authenticated caller.
func rbacInbound(p *rbacPKI, addr, appAddr string, proto config.Protocol) *config.Snapshot {
	snap := tlsInbound(addr, appAddr, p.mTLS())
	snap.Clusters[proxytest.InboundCluster].Protocol = proto
	snap.Listeners[0].HTTP.RBAC = &config.RBACFilter{Rules: allowOnly(frontendID)}
	rc := snap.Routes["inbound"]
	open := &config.VirtualHost{Name: "open", Domains: []string{"open:8080"}, Routes: rc.VirtualHosts[0].Routes,
		RBAC: &config.RBACFilter{Rules: &config.RBAC{Policies: []config.RBACPolicy{{Name: "any-peer",
			Permissions: []config.RBACMatcher{{Kind: config.RBACAny}},
			Principals:  []config.RBACMatcher{{Kind: config.RBACAuthenticated, String: config.StringMatcher{Kind: config.StringAny}}}}}}}}
	rc.VirtualHosts = append([]*config.VirtualHost{open}, rc.VirtualHosts...)
	return snap
}

func TestRBACHTTP(t *testing.T) {
	p := newRBACPKI(t)
	app := proxytest.StartApp(t, "app", nil)
	addr := proxytest.FreeAddr(t)
	_, logs := startLoggedProxy(t, rbacInbound(p, addr, app.Addr, config.ProtocolHTTP1))

	tests := []struct {
		name       string
		cert       tls.Certificate
		host       string
		alpn       string
		wantStatus int
	}{
		{"frontend over h2", p.frontend, "backend:8080", "h2", http.StatusOK},
		{"frontend over http/1.1", p.frontend, "backend:8080", "http/1.1", http.StatusOK},
		{"intruder over h2", p.intruder, "backend:8080", "h2", http.StatusForbidden},
		{"intruder over http/1.1", p.intruder, "backend:8080", "http/1.1", http.StatusForbidden},
		{"intruder to the open virtual host", p.intruder, "open:8080", "h2", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := app.Requests.Load()
			c := proxytest.TLSClient(t, p.Pool, backendFQDN, []string{tt.alpn}, &tt.cert)
			req, err := http.NewRequest("GET", "https://"+addr+"/api/items?id=1", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tt.host
			resp, body := do(t, c, req)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("got %d %q, want %d", resp.StatusCode, body, tt.wantStatus)
			}
			forwarded := app.Requests.Load() - before
			if tt.wantStatus == http.StatusOK {
				if body != "app" || forwarded != 1 {
					t.Errorf("body %q, app saw %d requests; want app, 1", body, forwarded)
				}
				return
			}
			if got := resp.Header.Get("X-Meshproxy-Error"); got != "rbac_denied" {
				t.Errorf("x-meshproxy-error = %q, want rbac_denied", got)
			}
			if forwarded != 0 {
				t.Errorf("app saw %d requests of a denied caller, want 0", forwarded)
			}
		})
	}

	// Each denial is logged once the response is written; the handler logs
	// before it answers, so the lines are there.
	got := logs.String()
	for _, want := range []string{
		`msg="rbac denied" listener=inbound caller=` + intruderID,
		`method=GET path=/api/items action=ALLOW policies=default/callers[frontend] matched=""`,
	} {
		if strings.Count(got, want) != 2 {
			t.Errorf("log has %d lines with %q, want 2 (one per denied request):\n%s", strings.Count(got, want), want, got)
		}
	}
}

// TestRBACHTTPPlaintextCaller: with PERMISSIVE-style listeners or none at all,
// a caller without a certificate never matches an authenticated principal.
func TestRBACHTTPPlaintextCaller(t *testing.T) {
	app := proxytest.StartApp(t, "app", nil)
	addr := proxytest.FreeAddr(t)
	snap := tlsInbound(addr, app.Addr, nil)
	snap.Listeners[0].TLS = nil
	snap.Listeners[0].HTTP.RBAC = &config.RBACFilter{Rules: allowOnly(frontendID)}
	_, logs := startLoggedProxy(t, snap)
	resp, body := do(t, proxytest.Client(t), newReq(t, "GET", addr, "backend", "/", nil))
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Meshproxy-Error") != "rbac_denied" {
		t.Fatalf("got %d %q (%s), want 403 rbac_denied", resp.StatusCode, body, resp.Header.Get("X-Meshproxy-Error"))
	}
	if want := `msg="rbac denied" listener=inbound caller=plaintext`; !strings.Contains(logs.String(), want) {
		t.Errorf("log lacks %q:\n%s", want, logs)
	}
}

func TestRBACGRPC(t *testing.T) {
	p := newRBACPKI(t)
	app := proxytest.StartGRPCApp(t)
	addr := proxytest.FreeAddr(t)
	startLoggedProxy(t, rbacInbound(p, addr, app.Addr, config.ProtocolH2C))

	client := func(t *testing.T, cert tls.Certificate) testgrpc.TestServiceClient {
		creds := credentials.NewTLS(&tls.Config{RootCAs: p.Pool, ServerName: backendFQDN, Certificates: []tls.Certificate{cert}})
		cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return testgrpc.NewTestServiceClient(cc)
	}
	t.Run("frontend is allowed", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := client(t, p.frontend).UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("hi")}})
		if err != nil {
			t.Fatalf("UnaryCall: %v", err)
		}
		if got := string(resp.GetPayload().GetBody()); got != "hi" {
			t.Errorf("payload = %q, want hi", got)
		}
	})
	t.Run("intruder gets PERMISSION_DENIED", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var tr metadata.MD
		_, err := client(t, p.intruder).UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Trailer(&tr))
		st := status.Convert(err)
		if st.Code() != codes.PermissionDenied || st.Message() != "RBAC: access denied" {
			t.Errorf("status = %v %q, want PermissionDenied %q", st.Code(), st.Message(), "RBAC: access denied")
		}
		if got := tr.Get("x-meshproxy-error"); len(got) != 1 || got[0] != "rbac_denied" {
			t.Errorf("x-meshproxy-error = %q, want [rbac_denied]", got)
		}
	})
}

func TestRBACTCP(t *testing.T) {
	p := newRBACPKI(t)
	echo := proxytest.StartTCPEcho(t)
	secure, plain := proxytest.FreeAddr(t), proxytest.FreeAddr(t)
	rules := allowOnly(frontendID)
	snap := &config.Snapshot{
		Version: "tcp-rbac-1",
		Listeners: []*config.Listener{
			{Name: "secure", Address: secure, Direction: config.Inbound, TLS: p.mTLS(),
				TCP: &config.TCPProxy{Cluster: "echo", IdleTimeout: 10 * time.Second, RBAC: rules}},
			{Name: "plain", Address: plain, Direction: config.Inbound,
				TCP: &config.TCPProxy{Cluster: "echo", IdleTimeout: 10 * time.Second, RBAC: rules}},
		},
		Clusters: map[string]*config.Cluster{"echo": proxytest.Cluster("echo", config.ProtocolTCP, echo.Addr)},
	}
	snap.Listeners[0].TLS.ALPN = nil // TCP: no ALPN
	_, logs := startLoggedProxy(t, snap)

	dialTLS := func(t *testing.T, cert tls.Certificate) net.Conn {
		c, err := tls.Dial("tcp", secure, &tls.Config{RootCAs: p.Pool, ServerName: backendFQDN, Certificates: []tls.Certificate{cert}})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// closedWithoutData reads until the proxy closes c; a denied connection
	// gets no bytes. TLS 1.3 clients finish their handshake before the server
	// checks the certificate, so the refusal shows on the first read.
	closedWithoutData := func(t *testing.T, c net.Conn) {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "ping") // may fail if the close won the race
		b, err := io.ReadAll(c)
		if len(b) != 0 {
			t.Fatalf("read %q, want the connection closed without data", b)
		}
		// EOF (nil) or a reset both mean closed; only a timeout means open.
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			t.Fatalf("read: %v, want the connection closed", err)
		}
	}

	t.Run("intruder is closed", func(t *testing.T) { closedWithoutData(t, dialTLS(t, p.intruder)) })
	t.Run("plaintext is closed", func(t *testing.T) {
		c, err := net.Dial("tcp", plain)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		closedWithoutData(t, c)
	})
	t.Run("frontend is forwarded", func(t *testing.T) {
		c := dialTLS(t, p.frontend)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "ping"); err != nil {
			t.Fatal(err)
		}
		if err := c.(*tls.Conn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(c)
		if err != nil || string(b) != "echo:ping" {
			t.Fatalf("got %q, %v; want echo:ping", b, err)
		}
	})
	// The echo server accepts in order: had a denied connection been dialed
	// upstream, it would have been accepted before frontend's.
	if n := len(echo.Accepted); n != 1 {
		t.Errorf("upstream accepted %d connections, want 1 (denied ones are never dialed)", n)
	}
	for _, want := range []string{
		`msg="rbac denied" listener=secure caller=` + intruderID,
		`msg="rbac denied" listener=plain caller=plaintext`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}
