package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// chainRun is one started chain: where load goes and which processes are its
// proxies. It is used from the main goroutine only.
type chainRun struct {
	name   string
	target addrs
	client *child            // client-side proxy (nil for direct)
	server map[string]*child // server-side proxy per test (the same one except for meshproxy)
	others []*child          // processes that are not proxies (controlplane)
	idle   memRow

	// verify, if set, checks after the chain serves that traffic takes the
	// intended path (meshproxy: client sidecar -> server sidecars).
	verify func() error
}

// pids are the proxy processes whose CPU counts for test.
func (c *chainRun) pids(test string) []int {
	if c.client == nil {
		return nil
	}
	s := c.server[test]
	switch test {
	case testFixed:
		s = c.server[testH1]
	case testFixG:
		s = c.server[testGRPC]
	}
	return []int{c.client.pid(), s.pid()}
}

// servers are the distinct server-side proxies.
func (c *chainRun) servers() []*child {
	var out []*child
	for _, t := range []string{testH1, testH2C, testGRPC} {
		s := c.server[t]
		if s != nil && (len(out) == 0 || out[len(out)-1] != s) {
			out = append(out, s)
		}
	}
	return out
}

// alive reports an error if one of the chain's processes has exited.
func (c *chainRun) alive() error {
	all := append(append([]*child{c.client}, c.servers()...), c.others...)
	for _, p := range all {
		if p == nil {
			continue
		}
		if done, err := p.exited(); done {
			return fmt.Errorf("%s exited: %v", p.name, err)
		}
	}
	return nil
}

// readMem returns client and server memory; for several server-side proxies
// (meshproxy: one per protocol) it takes the largest.
func (c *chainRun) readMem() (client, server memStatus, err error) {
	if c.client == nil {
		return memStatus{}, memStatus{}, nil
	}
	if client, err = memTree(c.client.pid()); err != nil {
		return
	}
	for _, s := range c.servers() {
		m, err := memTree(s.pid())
		if err != nil {
			return memStatus{}, memStatus{}, err
		}
		server.RSSKiB = max(server.RSSKiB, m.RSSKiB)
		server.HWMKiB = max(server.HWMKiB, m.HWMKiB)
	}
	return client, server, nil
}

func (c *chainRun) readIdle() error {
	cl, sv, err := c.readMem()
	c.idle = memRow{ClientIdle: cl.RSSKiB, ServerIdle: sv.RSSKiB}
	return err
}

func (c *chainRun) readPeak() (memRow, error) {
	cl, sv, err := c.readMem()
	m := c.idle
	m.ClientPeak, m.ServerPeak = cl.HWMKiB, sv.HWMKiB
	return m, err
}

// startChain starts the two proxies of a chain in front of back: the
// server-side one (upstream: the backend) on cpuServer, then the client-side one
// (upstream: the server-side one) on cpuClient.
//
// The "-mtls" chains make the middle hop mutual TLS 1.3 with the certificates
// in certs (see hopTLS); their verify checks that the server-side proxy refuses
// a client without a certificate and serves one with.
func startChain(name string, o options, tmp string, procs *procSet, ports *portAlloc, back addrs, certs certFiles) (*chainRun, error) {
	if name == chainDir {
		return &chainRun{name: name, target: back}, nil
	}
	if name == chainMesh || name == chainMeshTL || name == chainMeshNoM {
		return startMesh(o, name, tmp, procs, ports, back)
	}
	base, mtls := strings.CutSuffix(name, mtlsSuffix)
	hop := func(side string) hopTLS {
		if !mtls {
			return hopTLS{}
		}
		return hopTLS{role: side, certs: certs}
	}
	p1, err := ports.addrs()
	if err != nil {
		return nil, err
	}
	p2, err := ports.addrs()
	if err != nil {
		return nil, err
	}
	cr := &chainRun{name: name, target: p1}
	var start func(side string, cpu int, listen, up addrs) (*child, error)
	switch {
	case base == "nginx":
		start = func(side string, cpu int, listen, up addrs) (*child, error) {
			dir := filepath.Join(tmp, name+"-"+side)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
			conf := filepath.Join(dir, "nginx.conf")
			if err := os.WriteFile(conf, []byte(nginxHop(dir, listen, up, hop(side))), 0o644); err != nil {
				return nil, err
			}
			return procs.start(name+"-"+side, cpu, nil, "nginx", "-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", conf)
		}
	case base == "haproxy":
		start = func(side string, cpu int, listen, up addrs) (*child, error) {
			conf := filepath.Join(tmp, name+"-"+side+".cfg")
			if err := os.WriteFile(conf, []byte(haproxyHop(listen, up, hop(side))), 0o644); err != nil {
				return nil, err
			}
			// -db: stay in the foreground, so the PID we hold is the proxy.
			return procs.start(name+"-"+side, cpu, nil, "haproxy", "-db", "-f", conf)
		}
	case name == "caddy":
		start = func(side string, cpu int, listen, up addrs) (*child, error) {
			dir := filepath.Join(tmp, "caddy-"+side)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
			conf := filepath.Join(dir, "Caddyfile")
			if err := os.WriteFile(conf, []byte(caddyConfig(listen, up)), 0o644); err != nil {
				return nil, err
			}
			env := []string{"GOMAXPROCS=1", "HOME=" + dir, "XDG_DATA_HOME=" + dir, "XDG_CONFIG_HOME=" + dir}
			return procs.start("caddy-"+side, cpu, env, "caddy", "run", "--adapter", "caddyfile", "--config", conf)
		}
	default:
		return nil, fmt.Errorf("unknown chain %q (want one of %s)", name, strings.Join(knownChains, ", "))
	}
	srv, err := start(roleServer, cpuServer, p2, back)
	if err != nil {
		return nil, err
	}
	cr.server = map[string]*child{testH1: srv, testH2C: srv, testGRPC: srv}
	if cr.client, err = start(roleClient, cpuClient, p1, p2); err != nil {
		return nil, err
	}
	if mtls {
		cr.verify = func() error { return verifyMTLS(p2, certs) }
	}
	return cr, nil
}

// verifyMTLS checks that each listener of a server-side proxy at server speaks
// TLS 1.3 only with a client certificate: a request with the bench client's
// certificate succeeds (over HTTP/2, negotiated by ALPN, on the h2c and gRPC
// listeners), and one without a certificate and one in plaintext fail.
func verifyMTLS(server addrs, certs certFiles) error {
	h1, err := certs.tlsConfig(certClient, "http/1.1")
	if err != nil {
		return err
	}
	h2, err := certs.tlsConfig(certClient, "h2")
	if err != nil {
		return err
	}
	noCert, err := certs.tlsConfig("", "h2", "http/1.1")
	if err != nil {
		return err
	}
	if proto, err := tlsGet(server.H1, hostH1, h1); err != nil || proto != "HTTP/1.1" {
		return fmt.Errorf("%s with the client certificate: got %q, %v; want HTTP/1.1", server.H1, proto, err)
	}
	if proto, err := tlsGet(server.H2C, hostH2C, h2); err != nil || proto != "HTTP/2.0" {
		return fmt.Errorf("%s with the client certificate: got %q, %v; want HTTP/2.0", server.H2C, proto, err)
	}
	if err := grpcCheck(server.GRPC, credentials.NewTLS(h2)); err != nil {
		return fmt.Errorf("%s gRPC with the client certificate: %w", server.GRPC, err)
	}
	for _, l := range []struct{ addr, host string }{{server.H1, hostH1}, {server.H2C, hostH2C}} {
		if _, err := tlsGet(l.addr, l.host, noCert); err == nil {
			return fmt.Errorf("%s accepted a TLS client without a certificate", l.addr)
		}
		if _, err := tlsGet(l.addr, l.host, nil); err == nil {
			return fmt.Errorf("%s accepted plaintext", l.addr)
		}
	}
	if err := grpcCheck(server.GRPC, credentials.NewTLS(noCert)); err == nil {
		return fmt.Errorf("%s accepted a gRPC client without a certificate", server.GRPC)
	}
	if err := grpcCheck(server.GRPC, insecure.NewCredentials()); err == nil {
		return fmt.Errorf("%s accepted plaintext gRPC", server.GRPC)
	}
	return nil
}

// grpcCheck makes one health check to addr with creds on a fresh connection.
func grpcCheck(addr string, creds credentials.TransportCredentials) error {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if creds.Info().SecurityProtocol == "insecure" {
		// Over TLS the authority is the server name the credentials verify.
		opts = append(opts, grpc.WithAuthority(hostGRPC))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return errors.New("health: " + resp.GetStatus().String())
	}
	return nil
}

// tlsGet sends GET / with Host host to addr over TLS with c (plaintext HTTP/1.1
// if c is nil) on a fresh connection and returns the response's protocol. It
// fails unless the connection is TLS 1.3 and the response is a 200.
func tlsGet(addr, host string, c *tls.Config) (string, error) {
	var tr *http.Transport
	scheme := "http"
	if c != nil {
		scheme = "https"
		var p http.Protocols
		p.SetHTTP1(slices.Contains(c.NextProtos, "http/1.1"))
		p.SetHTTP2(slices.Contains(c.NextProtos, "h2"))
		tr = &http.Transport{TLSClientConfig: c, Protocols: &p, ForceAttemptHTTP2: true}
	} else {
		tr = &http.Transport{}
	}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Timeout: 5 * time.Second, Transport: tr}
	req, err := http.NewRequest("GET", scheme+"://"+addr+"/", nil)
	if err != nil {
		return "", err
	}
	req.Host = host
	resp, err := cl.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if c != nil && (resp.TLS == nil || resp.TLS.Version != tls.VersionTLS13) {
		return "", fmt.Errorf("not TLS 1.3: %+v", resp.TLS)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s", resp.Status)
	}
	return resp.Proto, nil
}

// startMesh builds (unless --bin-dir is given) and starts controlplane, one
// server-side meshproxy per protocol and the client-side meshproxy. With mtls
// the mesh keeps its default mode (STRICT) and every sidecar joins with a
// join token minted on the control plane's data directory; without, the model
// has a mesh-wide PeerAuthentication with mode DISABLE, so the sidecar hop is
// h2c. Each variant has its own control plane, model and data directory.
// startMesh starts a meshproxy chain: name is chainMesh, chainMeshTL (mTLS
// between the sidecars) or chainMeshNoM (no metrics recorded).
func startMesh(o options, name, tmp string, procs *procSet, ports *portAlloc, back addrs) (*chainRun, error) {
	mtls := name == chainMeshTL
	bin := o.binDir
	if bin == "" {
		bin = filepath.Join(tmp, "bin")
		if err := buildMesh(bin); err != nil {
			return nil, err
		}
	}
	model := filepath.Join(tmp, name+"-model")
	if err := os.MkdirAll(model, 0o755); err != nil {
		return nil, err
	}
	doc := meshModel()
	if !mtls {
		doc += "---\n" + peerAuthDisable()
	}
	if err := os.WriteFile(filepath.Join(model, "bench.yaml"), []byte(doc), 0o644); err != nil {
		return nil, err
	}
	data := filepath.Join(tmp, name+"-data")
	cpBin := filepath.Join(bin, "controlplane")
	xds, err := ports.next()
	if err != nil {
		return nil, err
	}
	// Its own monitoring address too: both meshproxy chains run a control plane.
	mon, err := ports.next()
	if err != nil {
		return nil, err
	}
	cp, err := procs.start(name+"-controlplane", cpuServer, []string{"GOMAXPROCS=1"},
		cpBin, "--xds-addr", xds, "--monitoring-addr", mon, "--model-dir", model, "--data-dir", data, "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	if err := waitTCP(cp, xds, 20*time.Second); err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	mp := filepath.Join(bin, "meshproxy")
	env := []string{"GOMAXPROCS=1"}
	var admins []string
	sidecar := func(workload string, cpu int, args ...string) (*child, error) {
		admin, err := ports.next()
		if err != nil {
			return nil, err
		}
		admins = append(admins, admin)
		argv := []string{mp, "--xds", xds, "--admin", admin, "--log-level", "warn", "--shutdown-grace", "1s",
			"--namespace", "default", "--workload", workload, "--labels", "app=" + workload}
		if name == chainMeshNoM {
			argv = append(argv, "--metrics=false")
		}
		if mtls {
			tok, err := joinToken(cpBin, data, workload)
			if err != nil {
				return nil, err
			}
			argv = append(argv, "--join-token", tok)
		}
		return procs.start(name+"-"+workload, cpu, env, append(argv, args...)...)
	}
	cr := &chainRun{name: name, server: map[string]*child{}, others: []*child{cp}}
	var inbounds []string
	for _, s := range []struct{ test, workload, app string }{
		{testH1, hostH1, back.H1}, {testH2C, hostH2C, back.H2C}, {testGRPC, hostGRPC, back.GRPC},
	} {
		in, err := ports.next()
		if err != nil {
			return nil, err
		}
		inbounds = append(inbounds, in)
		c, err := sidecar(s.workload, cpuServer, "--inbound", in, "--app", s.app)
		if err != nil {
			return nil, err
		}
		cr.server[s.test] = c
	}
	out, err := ports.next()
	if err != nil {
		return nil, err
	}
	if cr.client, err = sidecar("client", cpuClient, "--outbound", out); err != nil {
		return nil, err
	}
	cr.target = addrs{H1: out, H2C: out, GRPC: out}
	clientAdmin := admins[len(admins)-1]
	cr.verify = func() error {
		// The client sidecar's endpoints must be the server sidecars' inbound
		// listeners (config.Endpoint.Address in /config_dump?format=decoded), never the backend.
		resp, err := http.Get("http://" + clientAdmin + "/config_dump?format=decoded")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		dump := string(body)
		for _, in := range inbounds {
			if !strings.Contains(dump, `"`+in+`"`) {
				return fmt.Errorf("client sidecar /config_dump does not mention server sidecar inbound %s", in)
			}
		}
		for _, b := range []string{back.H1, back.GRPC} {
			if strings.Contains(dump, `"`+b+`"`) {
				return fmt.Errorf("client sidecar /config_dump mentions the backend %s directly", b)
			}
		}
		// The server sidecar sets x-forwarded-client-cert only for a caller that
		// presented a certificate (docs/identity.md), so the header the backend
		// sees behind each server sidecar tells whether that hop is mTLS.
		for _, svc := range []string{hostH1, hostH2C, hostGRPC} {
			xfcc, err := probeXFCC(out, svc)
			if err != nil {
				return fmt.Errorf("%s: %w", svc, err)
			}
			if err := checkXFCC(xfcc, svc, mtls); err != nil {
				return fmt.Errorf("%s: %w", svc, err)
			}
		}
		return nil
	}
	for _, a := range admins {
		if err := waitReady(a, 30*time.Second, cr.alive); err != nil {
			return nil, fmt.Errorf("meshproxy admin %s: %w", a, err)
		}
	}
	return cr, nil
}

// checkXFCC checks the x-forwarded-client-cert header the bench backend saw
// behind the server sidecar of Service svc: with mTLS it names that sidecar
// (By) and the client sidecar (URI), without it is absent.
func checkXFCC(xfcc, svc string, mtls bool) error {
	if !mtls {
		if xfcc != "" {
			return fmt.Errorf("plaintext chain: backend got x-forwarded-client-cert %q, want none", xfcc)
		}
		return nil
	}
	for _, want := range []string{"By=" + spiffeID(svc) + ";", "Hash=", "URI=" + spiffeID("client")} {
		if !strings.Contains(xfcc, want) {
			return fmt.Errorf("backend got x-forwarded-client-cert %q, want it to contain %q", xfcc, want)
		}
	}
	return nil
}

// probeXFCC asks the backend, through the chain's entry and Service svc, for
// the x-forwarded-client-cert header of the request it received: over
// HTTP/1.1 for hostH1, h2c for hostH2C (xfccPath), gRPC for hostGRPC
// (xfccGRPC).
func probeXFCC(entry, svc string) (string, error) {
	if svc == hostGRPC {
		conn, err := grpc.NewClient(entry, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(svc))
		if err != nil {
			return "", err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = conn.Invoke(ctx, "/bench.Probe/XFCC", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
		msg, ok := strings.CutPrefix(status.Convert(err).Message(), xfccPrefix)
		if !ok {
			return "", fmt.Errorf("gRPC probe: got %v, want the backend's answer", err)
		}
		return msg, nil
	}
	tr := &http.Transport{}
	if svc == hostH2C {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = &p
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: tr}
	defer c.CloseIdleConnections()
	req, err := http.NewRequest("GET", "http://"+entry+xfccPath, nil)
	if err != nil {
		return "", err
	}
	req.Host = svc
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s %q", xfccPath, resp.Status, body)
	}
	return string(body), nil
}

// buildMesh builds meshproxy and controlplane into bin unless a previous chain
// of this run already did.
func buildMesh(bin string) error {
	if _, err := os.Stat(filepath.Join(bin, "controlplane")); err == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The release build (README): grpcnotrace and no cgo, for the smallest RSS.
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", "grpcnotrace", "-o", bin+"/", "./cmd/meshproxy", "./cmd/controlplane")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/meshproxy ./cmd/controlplane: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// joinToken mints a join token for workload (its service account is the
// workload name) with `controlplane token create` on the data directory data.
func joinToken(controlplane, data, workload string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, controlplane, "token", "create", "--data-dir", data,
		"--namespace", "default", "--service-account", workload)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("controlplane token create for %s: %w: %s", workload, err, strings.TrimSpace(stderr.String()))
	}
	tok := strings.TrimSpace(string(out))
	if tok == "" || strings.ContainsAny(tok, " \n\t") {
		return "", fmt.Errorf("controlplane token create for %s: want one token on stdout, got %q", workload, out)
	}
	return tok, nil
}

// waitTCP waits until addr accepts connections or c exits.
func waitTCP(c *child, addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		if done, werr := c.exited(); done {
			return fmt.Errorf("exited before listening on %s: %v", addr, werr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s after %s: %w", addr, limit, err)
		}
		time.Sleep(50 * time.Millisecond) // polling another process; there is no event to wait on
	}
}

// waitReady polls a meshproxy admin /ready until it answers 200.
func waitReady(admin string, limit time.Duration, alive func() error) error {
	return poll(limit, func() error {
		if err := alive(); err != nil {
			return errFatal{err}
		}
		resp, err := http.Get("http://" + admin + "/ready")
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/ready: %s", resp.Status)
		}
		return nil
	})
}

// errFatal marks an error that poll must not retry (a process died).
type errFatal struct{ err error }

func (e errFatal) Error() string { return e.err.Error() }
func (e errFatal) Unwrap() error { return e.err }

// poll calls f every 100 ms until it succeeds, returns an errFatal, or limit
// passes, returning f's last error.
func poll(limit time.Duration, f func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if fe := (errFatal{}); errors.As(err, &fe) {
			return fe.err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", limit, err)
		}
		time.Sleep(100 * time.Millisecond) // polling another process
	}
}

// waitChain waits until one request of each protocol gets a successful answer
// through t, so that measurements never include startup. It gives up as soon as
// alive reports a dead process.
func waitChain(t addrs, limit time.Duration, alive func() error) error {
	h1 := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{}}
	var p2 http.Protocols
	p2.SetUnencryptedHTTP2(true)
	h2 := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Protocols: &p2, TLSClientConfig: &tls.Config{}}}
	defer h1.CloseIdleConnections()
	defer h2.CloseIdleConnections()
	get := func(c *http.Client, addr, host string) error {
		if err := alive(); err != nil {
			return errFatal{err}
		}
		req, err := http.NewRequest("GET", "http://"+addr+"/", nil)
		if err != nil {
			return err
		}
		req.Host = host
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s %s: %s %s %q", addr, host, resp.Status, resp.Header.Get("x-meshproxy-error"), body)
		}
		return nil
	}
	if err := poll(limit, func() error { return get(h1, t.H1, hostH1) }); err != nil {
		return fmt.Errorf("HTTP/1.1: %w", err)
	}
	if err := poll(limit, func() error { return get(h2, t.H2C, hostH2C) }); err != nil {
		return fmt.Errorf("h2c: %w", err)
	}
	conn, err := grpc.NewClient(t.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(hostGRPC))
	if err != nil {
		return fmt.Errorf("gRPC: %w", err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	err = poll(limit, func() error {
		if err := alive(); err != nil {
			return errFatal{err}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return errors.New("health: " + resp.GetStatus().String())
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("gRPC: %w", err)
	}
	return nil
}
