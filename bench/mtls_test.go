package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/tinymesh/tinymesh/xds/mesh/v1alpha1"
	"github.com/tinymesh/tinymesh/xds/source/file"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// TestCertsAreSVIDs checks the bench's leaves with go-spiffe: each parses as an
// X.509-SVID of the expected ID and verifies against the bench CA as bundle.
func TestCertsAreSVIDs(t *testing.T) {
	dir := t.TempDir()
	certs, err := writeCerts(dir, certClient, certServer)
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString(trustDomain)
	bundle, err := x509bundle.Load(td, certs.CA)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{certClient, certServer} {
		t.Run(w, func(t *testing.T) {
			for _, pair := range [][2]string{{certs.Cert[w], certs.Key[w]}, {certs.Both[w], certs.Both[w]}} {
				svid, err := x509svid.Load(pair[0], pair[1])
				if err != nil {
					t.Fatalf("x509svid.Load(%s, %s): %v", pair[0], pair[1], err)
				}
				if got, want := svid.ID.String(), spiffeID(w); got != want {
					t.Errorf("SVID ID = %s, want %s", got, want)
				}
				id, _, err := x509svid.Verify(svid.Certificates, bundle)
				if err != nil {
					t.Fatalf("x509svid.Verify: %v", err)
				}
				if id.String() != spiffeID(w) {
					t.Errorf("verified ID = %s, want %s", id, spiffeID(w))
				}
			}
			if fi, err := os.Stat(certs.Key[w]); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("key file %s: mode %v, err %v; want 0600", certs.Key[w], fi.Mode().Perm(), err)
			}
		})
	}
	// Only the server leaf carries the DNS name the C proxies check.
	b, _ := os.ReadFile(certs.Cert[certServer])
	blk, _ := pem.Decode(b)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{serverName}, leaf.DNSNames); diff != "" {
		t.Errorf("server leaf DNS SANs (-want +got):\n%s", diff)
	}
}

func TestMTLSConfigs(t *testing.T) {
	listen := addrs{H1: "127.0.0.1:1001", H2C: "127.0.0.1:1002", GRPC: "127.0.0.1:1003"}
	up := addrs{H1: "127.0.0.1:2001", H2C: "127.0.0.1:2002", GRPC: "127.0.0.1:2003"}
	certs := testCertFiles("/c")
	tests := []struct {
		name string
		got  string
		want []string
		not  []string
	}{
		{"nginx server", nginxHop("/x", listen, up, hopTLS{role: roleServer, certs: certs}), []string{
			"listen 127.0.0.1:1001 ssl;", "listen 127.0.0.1:1002 ssl http2;", "listen 127.0.0.1:1003 ssl http2;",
			"ssl_certificate /c/bench-server.crt;", "ssl_certificate_key /c/bench-server.key;",
			"ssl_protocols TLSv1.3;", "ssl_client_certificate /c/ca.crt;", "ssl_verify_client on;",
			"proxy_pass http://up_h1;", "grpc_pass grpc://up_h2c;", "grpc_pass grpc://up_grpc;",
		}, []string{"proxy_ssl", "grpc_ssl", "https://", "grpcs://"}},
		{"nginx client", nginxHop("/x", listen, up, hopTLS{role: roleClient, certs: certs}), []string{
			"listen 127.0.0.1:1001;", "listen 127.0.0.1:1002 http2;",
			"proxy_pass https://up_h1;", "grpc_pass grpcs://up_h2c;", "grpc_pass grpcs://up_grpc;",
			"proxy_ssl_certificate /c/bench-client.crt;", "proxy_ssl_certificate_key /c/bench-client.key;",
			"proxy_ssl_trusted_certificate /c/ca.crt;", "proxy_ssl_verify on;", "proxy_ssl_name bench-server;",
			"proxy_ssl_protocols TLSv1.3;",
			"grpc_ssl_certificate /c/bench-client.crt;", "grpc_ssl_verify on;", "grpc_ssl_name bench-server;",
			"grpc_ssl_protocols TLSv1.3;",
		}, []string{" ssl;", "ssl_verify_client"}},
		{"haproxy server", haproxyHop(listen, up, hopTLS{role: roleServer, certs: certs}), []string{
			"bind 127.0.0.1:1001 ssl crt /c/bench-server.pem ca-file /c/ca.crt verify required ssl-min-ver TLSv1.3\n",
			"bind 127.0.0.1:1002 ssl crt /c/bench-server.pem ca-file /c/ca.crt verify required ssl-min-ver TLSv1.3 alpn h2\n",
			"bind 127.0.0.1:1003 ssl crt /c/bench-server.pem ca-file /c/ca.crt verify required ssl-min-ver TLSv1.3 alpn h2\n",
			"server s1 127.0.0.1:2001\n", "server s1 127.0.0.1:2002 proto h2\n", "server s1 127.0.0.1:2003 proto h2\n",
		}, nil},
		{"haproxy client", haproxyHop(listen, up, hopTLS{role: roleClient, certs: certs}), []string{
			"bind 127.0.0.1:1001\n", "bind 127.0.0.1:1002 proto h2\n",
			"server s1 127.0.0.1:2001 ssl crt /c/bench-client.pem ca-file /c/ca.crt verify required verifyhost bench-server ssl-min-ver TLSv1.3\n",
			"server s1 127.0.0.1:2002 ssl crt /c/bench-client.pem ca-file /c/ca.crt verify required verifyhost bench-server ssl-min-ver TLSv1.3 alpn h2\n",
			"server s1 127.0.0.1:2003 ssl crt /c/bench-client.pem ca-file /c/ca.crt verify required verifyhost bench-server ssl-min-ver TLSv1.3 alpn h2\n",
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, w := range tt.want {
				if !strings.Contains(tt.got, w) {
					t.Errorf("config does not contain %q; got:\n%s", w, tt.got)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(tt.got, n) {
					t.Errorf("config contains %q; got:\n%s", n, tt.got)
				}
			}
		})
	}
}

// testCertFiles names certificate files in dir without creating them.
func testCertFiles(dir string) certFiles {
	f := certFiles{CA: dir + "/ca.crt", Cert: map[string]string{}, Key: map[string]string{}, Both: map[string]string{}}
	for _, w := range []string{certClient, certServer} {
		f.Cert[w], f.Key[w], f.Both[w] = dir+"/"+w+".crt", dir+"/"+w+".key", dir+"/"+w+".pem"
	}
	return f
}

// startTestBackend serves the bench backend in this process on loopback.
func startTestBackend(t *testing.T, ports *portAlloc) addrs {
	t.Helper()
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ports.seen[hl.Addr().String()], ports.seen[gl.Addr().String()] = true, true
	hs, gs := newBackend()
	var wg sync.WaitGroup
	wg.Go(func() { hs.Serve(hl) })
	wg.Go(func() { gs.Serve(gl) })
	t.Cleanup(func() {
		hs.Close()
		gs.Stop()
		wg.Wait()
	})
	return addrs{H1: hl.Addr().String(), H2C: hl.Addr().String(), GRPC: gl.Addr().String()}
}

// startHop starts one nginx or HAProxy hop (unpinned) listening on fresh
// loopback ports in front of up, and waits until all three listeners accept.
func startHop(t *testing.T, procs *procSet, ports *portAlloc, proxy string, up addrs, hop hopTLS) addrs {
	t.Helper()
	listen, err := ports.addrs()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var c *child
	switch proxy {
	case "nginx":
		conf := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(conf, []byte(nginxHop(dir, listen, up, hop)), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err = procs.start(proxy+"-"+hop.role, -1, nil, "nginx", "-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", conf)
	case "haproxy":
		conf := filepath.Join(dir, "haproxy.cfg")
		if err := os.WriteFile(conf, []byte(haproxyHop(listen, up, hop)), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err = procs.start(proxy+"-"+hop.role, -1, nil, "haproxy", "-db", "-f", conf)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{listen.H1, listen.H2C, listen.GRPC} {
		if err := waitTCP(c, a, 10*time.Second); err != nil {
			b, _ := os.ReadFile(filepath.Join(procs.logDir, c.name+".log"))
			t.Fatalf("%s: %v\n%s", c.name, err, b)
		}
	}
	return listen
}

// upstreamSeen is what the fake server-side hop saw of one request.
type upstreamSeen struct {
	Proto   string // HTTP/1.1, HTTP/2.0; for gRPC the ALPN protocol
	TLS13   bool
	PeerURI string
}

// fakeServerHop is a Go mTLS server in place of the server-side proxy: it
// requires a client certificate from the bench CA, offers h2 and http/1.1, and
// records what each request arrived over.
type fakeServerHop struct {
	mu   sync.Mutex
	seen map[string]upstreamSeen // listener (h1, h2c, grpc) -> last request
}

func (f *fakeServerHop) record(listener string, s upstreamSeen) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen[listener] = s
}

func (f *fakeServerHop) get(listener string) upstreamSeen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[listener]
}

func peerURI(cs *tls.ConnectionState) string {
	if cs == nil || len(cs.PeerCertificates) == 0 || len(cs.PeerCertificates[0].URIs) != 1 {
		return ""
	}
	return cs.PeerCertificates[0].URIs[0].String()
}

func startFakeServerHop(t *testing.T, certs certFiles) (addrs, *fakeServerHop) {
	t.Helper()
	caPEM, err := os.ReadFile(certs.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	kp, err := tls.LoadX509KeyPair(certs.Cert[certServer], certs.Key[certServer])
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{kp}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
		MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"},
	}
	f := &fakeServerHop{seen: map[string]upstreamSeen{}}
	var a addrs
	var wg sync.WaitGroup
	var closers []func()
	for _, l := range []struct {
		name string
		dst  *string
	}{{"h1", &a.H1}, {"h2c", &a.H2C}} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		*l.dst = ln.Addr().String()
		name := l.name
		hs := &http.Server{
			TLSConfig: cfg.Clone(),
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				f.record(name, upstreamSeen{Proto: r.Proto, TLS13: r.TLS.Version == tls.VersionTLS13, PeerURI: peerURI(r.TLS)})
				w.Write(backendBody)
			}),
		}
		wg.Go(func() { hs.ServeTLS(ln, "", "") })
		closers = append(closers, func() { hs.Close() })
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.GRPC = gl.Addr().String()
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg.Clone())),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if p, ok := peer.FromContext(ctx); ok {
				if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
					f.record("grpc", upstreamSeen{Proto: ti.State.NegotiatedProtocol, TLS13: ti.State.Version == tls.VersionTLS13, PeerURI: peerURI(&ti.State)})
				}
			}
			return h(ctx, req)
		}))
	hsrv := health.NewServer()
	hsrv.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hsrv)
	wg.Go(func() { gs.Serve(gl) })
	t.Cleanup(func() {
		for _, c := range closers {
			c()
		}
		gs.Stop()
		wg.Wait()
	})
	return a, f
}

// TestMTLSHops runs the real nginx and HAProxy with the mTLS configs on
// loopback. Server side: in front of the bench backend, verifyMTLS must pass
// (and must fail for the plaintext hop). Client side: in front of a Go mTLS
// server, which must see TLS 1.3, the bench client's SPIFFE ID, and HTTP/1.1
// for the HTTP/1.1 listener but HTTP/2 for the h2c and gRPC ones.
func TestMTLSHops(t *testing.T) {
	dir := t.TempDir()
	certs, err := writeCerts(dir, certClient, certServer)
	if err != nil {
		t.Fatal(err)
	}
	for _, proxy := range []string{"nginx", "haproxy"} {
		t.Run(proxy, func(t *testing.T) {
			if _, err := exec.LookPath(proxy); err != nil {
				t.Skipf("%s not installed (.ci/install-bench-tools.sh)", proxy)
			}
			procs := &procSet{logDir: t.TempDir()}
			t.Cleanup(func() {
				if err := procs.stopAll(); err != nil {
					t.Error(err)
				}
			})
			ports := &portAlloc{seen: map[string]bool{}}
			back := startTestBackend(t, ports)

			t.Run("server side", func(t *testing.T) {
				srv := startHop(t, procs, ports, proxy, back, hopTLS{role: roleServer, certs: certs})
				if err := verifyMTLS(srv, certs); err != nil {
					t.Errorf("verifyMTLS(mTLS %s): %v", proxy, err)
				}
				plain := startHop(t, procs, ports, proxy, back, hopTLS{})
				if err := verifyMTLS(plain, certs); err == nil {
					t.Errorf("verifyMTLS(plaintext %s) = nil, want an error", proxy)
				}
			})

			t.Run("client side", func(t *testing.T) {
				up, fake := startFakeServerHop(t, certs)
				cl := startHop(t, procs, ports, proxy, up, hopTLS{role: roleClient, certs: certs})
				if err := waitChain(cl, 10*time.Second, func() error { return nil }); err != nil {
					t.Fatalf("requests through the client-side %s: %v", proxy, err)
				}
				want := map[string]upstreamSeen{
					"h1":   {Proto: "HTTP/1.1", TLS13: true, PeerURI: spiffeID(certClient)},
					"h2c":  {Proto: "HTTP/2.0", TLS13: true, PeerURI: spiffeID(certClient)},
					"grpc": {Proto: "h2", TLS13: true, PeerURI: spiffeID(certClient)},
				}
				for l, w := range want {
					if diff := cmp.Diff(w, fake.get(l)); diff != "" {
						t.Errorf("%s listener: middle hop (-want +got):\n%s", l, diff)
					}
				}
			})
		})
	}
}

// TestVerifyMTLSRejectsNoClientAuth: a TLS server that does not ask for a
// client certificate must not pass verifyMTLS.
func TestVerifyMTLSRejectsNoClientAuth(t *testing.T) {
	certs, err := writeCerts(t.TempDir(), certClient, certServer)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tls.LoadX509KeyPair(certs.Cert[certServer], certs.Key[certServer])
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{kp}, NextProtos: []string{"h2", "http/1.1"}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{TLSConfig: cfg, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg.Clone())))
	hsrv := health.NewServer()
	healthpb.RegisterHealthServer(gs, hsrv)
	var wg sync.WaitGroup
	wg.Go(func() { hs.ServeTLS(ln, "", "") })
	wg.Go(func() { gs.Serve(gl) })
	defer func() {
		hs.Close()
		gs.Stop()
		wg.Wait()
	}()
	a := addrs{H1: ln.Addr().String(), H2C: ln.Addr().String(), GRPC: gl.Addr().String()}
	err = verifyMTLS(a, certs)
	if err == nil || !strings.Contains(err.Error(), "without a certificate") {
		t.Errorf("verifyMTLS(server without client auth) = %v, want an error about a client without a certificate", err)
	}
	// The same server answers a client with a certificate, so the error above is
	// about client auth and not a broken setup.
	withCert, err := certs.tlsConfig(certClient, "http/1.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tlsGet(a.H1, hostH1, withCert); err != nil {
		t.Errorf("tlsGet with the client certificate: %v", err)
	}
}

// TestMeshModelsLoad loads both meshproxy chains' models with the control
// plane's own file source: the plaintext one has exactly the mesh-wide
// DISABLE policy, the mTLS one none (the default, STRICT).
func TestMeshModelsLoad(t *testing.T) {
	for _, tt := range []struct {
		name  string
		doc   string
		modes []v1alpha1.MTLSMode
	}{
		{chainMesh, meshModel() + "---\n" + peerAuthDisable(), []v1alpha1.MTLSMode{v1alpha1.ModeDisable}},
		{chainMeshTL, meshModel(), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "bench.yaml"), []byte(tt.doc), 0o644); err != nil {
				t.Fatal(err)
			}
			m, err := file.Load(dir)
			if err != nil {
				t.Fatalf("file.Load: %v\n%s", err, tt.doc)
			}
			if got := len(m.Services); got != 3 {
				t.Errorf("%d services, want 3", got)
			}
			var modes []v1alpha1.MTLSMode
			for _, p := range m.PeerAuthentications {
				if p.Namespace != "tinymesh-system" || p.Spec.Selector != nil {
					t.Errorf("PeerAuthentication %s/%s selector %v, want mesh-wide", p.Namespace, p.Name, p.Spec.Selector)
				}
				modes = append(modes, p.Spec.MTLS.Mode)
			}
			if diff := cmp.Diff(tt.modes, modes); diff != "" {
				t.Errorf("PeerAuthentication modes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCheckXFCC(t *testing.T) {
	good := "By=" + spiffeID(hostH2C) + ";Hash=ab12;URI=" + spiffeID("client")
	for _, tt := range []struct {
		name    string
		xfcc    string
		mtls    bool
		wantErr bool
	}{
		{"mtls", good, true, false},
		{"mtls without header", "", true, true},
		{"mtls wrong caller", "By=" + spiffeID(hostH2C) + ";Hash=ab12;URI=" + spiffeID("other"), true, true},
		{"mtls other server sidecar", "By=" + spiffeID(hostH1) + ";Hash=ab12;URI=" + spiffeID("client"), true, true},
		{"plaintext", "", false, false},
		{"plaintext with header", good, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkXFCC(tt.xfcc, hostH2C, tt.mtls); (err != nil) != tt.wantErr {
				t.Errorf("checkXFCC(%q, %s, %v) = %v, wantErr %v", tt.xfcc, hostH2C, tt.mtls, err, tt.wantErr)
			}
		})
	}
}

// TestProbeXFCC runs the probes against the bench backend directly (no
// header: empty answers), and checks that the backend echoes the header when a
// request carries it, over HTTP and gRPC.
func TestProbeXFCC(t *testing.T) {
	back := startTestBackend(t, &portAlloc{seen: map[string]bool{}})
	for _, svc := range []string{hostH1, hostH2C, hostGRPC} {
		entry := back.H1
		if svc == hostGRPC {
			entry = back.GRPC
		}
		if got, err := probeXFCC(entry, svc); err != nil || got != "" {
			t.Errorf("probe %s = %q, %v; want empty", svc, got, err)
		}
	}
	if _, err := probeXFCC(back.H1, hostGRPC); err == nil {
		t.Errorf("gRPC probe of an HTTP-only address: got nil error, want one")
	}

	const v = "By=spiffe://cluster.local/ns/default/sa/x;Hash=00;URI=spiffe://cluster.local/ns/default/sa/y"
	req, err := http.NewRequest("GET", "http://"+back.H1+xfccPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Forwarded-Client-Cert", v)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != v {
		t.Errorf("HTTP echo = %q, want %q", body, v)
	}
	conn, err := grpc.NewClient(back.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = conn.Invoke(metadata.AppendToOutgoingContext(ctx, "x-forwarded-client-cert", v), "/bench.Probe/XFCC",
		&healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
	if st := status.Convert(err); st.Code() != codes.Unimplemented || st.Message() != xfccPrefix+v {
		t.Errorf("gRPC echo = %v, want Unimplemented %q", err, xfccPrefix+v)
	}
}
