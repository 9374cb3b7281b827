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
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
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
func startChain(name string, o options, tmp string, procs *procSet, ports *portAlloc, back addrs) (*chainRun, error) {
	if name == chainDir {
		return &chainRun{name: name, target: back}, nil
	}
	if name == "meshproxy" {
		return startMesh(o, tmp, procs, ports, back)
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
	switch name {
	case "nginx":
		start = func(side string, cpu int, listen, up addrs) (*child, error) {
			dir := filepath.Join(tmp, "nginx-"+side)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
			conf := filepath.Join(dir, "nginx.conf")
			if err := os.WriteFile(conf, []byte(nginxConfig(dir, listen, up)), 0o644); err != nil {
				return nil, err
			}
			return procs.start("nginx-"+side, cpu, nil, "nginx", "-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", conf)
		}
	case "haproxy":
		start = func(side string, cpu int, listen, up addrs) (*child, error) {
			conf := filepath.Join(tmp, "haproxy-"+side+".cfg")
			if err := os.WriteFile(conf, []byte(haproxyConfig(listen, up)), 0o644); err != nil {
				return nil, err
			}
			// -db: stay in the foreground, so the PID we hold is the proxy.
			return procs.start("haproxy-"+side, cpu, nil, "haproxy", "-db", "-f", conf)
		}
	case "caddy":
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
		return nil, fmt.Errorf("unknown chain %q (want direct, meshproxy, nginx, haproxy or caddy)", name)
	}
	srv, err := start("server", cpuServer, p2, back)
	if err != nil {
		return nil, err
	}
	cr.server = map[string]*child{testH1: srv, testH2C: srv, testGRPC: srv}
	if cr.client, err = start("client", cpuClient, p1, p2); err != nil {
		return nil, err
	}
	return cr, nil
}

// startMesh builds (unless --bin-dir is given) and starts controlplane, one
// server-side meshproxy per protocol and the client-side meshproxy.
func startMesh(o options, tmp string, procs *procSet, ports *portAlloc, back addrs) (*chainRun, error) {
	bin := o.binDir
	if bin == "" {
		bin = filepath.Join(tmp, "bin")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		// The release build (README): grpcnotrace and no cgo, for the smallest RSS.
		cmd := exec.CommandContext(ctx, "go", "build", "-tags", "grpcnotrace", "-o", bin+"/", "./cmd/meshproxy", "./cmd/controlplane")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build ./cmd/meshproxy ./cmd/controlplane: %w: %s", err, strings.TrimSpace(string(out)))
		}
	}
	model := filepath.Join(tmp, "mesh")
	if err := os.MkdirAll(model, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(model, "bench.yaml"), []byte(meshModel()), 0o644); err != nil {
		return nil, err
	}
	xds, err := ports.next()
	if err != nil {
		return nil, err
	}
	cp, err := procs.start("controlplane", cpuServer, []string{"GOMAXPROCS=1"},
		filepath.Join(bin, "controlplane"), "--xds-addr", xds, "--model-dir", model, "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	if err := waitTCP(cp, xds, 20*time.Second); err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	mp := filepath.Join(bin, "meshproxy")
	env := []string{"GOMAXPROCS=1"}
	var admins []string
	sidecar := func(name string, cpu int, args ...string) (*child, error) {
		admin, err := ports.next()
		if err != nil {
			return nil, err
		}
		admins = append(admins, admin)
		argv := append([]string{mp, "--xds", xds, "--admin", admin, "--log-level", "warn", "--shutdown-grace", "1s"}, args...)
		return procs.start("meshproxy-"+name, cpu, env, argv...)
	}
	cr := &chainRun{name: "meshproxy", server: map[string]*child{}, others: []*child{cp}}
	var inbounds []string
	for _, s := range []struct{ test, workload, app string }{
		{testH1, hostH1, back.H1}, {testH2C, hostH2C, back.H2C}, {testGRPC, hostGRPC, back.GRPC},
	} {
		in, err := ports.next()
		if err != nil {
			return nil, err
		}
		inbounds = append(inbounds, in)
		c, err := sidecar(s.workload, cpuServer, "--workload", s.workload, "--labels", "app="+s.workload,
			"--inbound", in, "--app", s.app)
		if err != nil {
			return nil, err
		}
		cr.server[s.test] = c
	}
	out, err := ports.next()
	if err != nil {
		return nil, err
	}
	if cr.client, err = sidecar("client", cpuClient, "--workload", "client", "--labels", "app=client", "--outbound", out); err != nil {
		return nil, err
	}
	cr.target = addrs{H1: out, H2C: out, GRPC: out}
	clientAdmin := admins[len(admins)-1]
	cr.verify = func() error {
		// The client sidecar's endpoints must be the server sidecars' inbound
		// listeners (config.Endpoint.Address in /config_dump), never the backend.
		resp, err := http.Get("http://" + clientAdmin + "/config_dump")
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
		return nil
	}
	for _, a := range admins {
		if err := waitReady(a, 30*time.Second, cr.alive); err != nil {
			return nil, fmt.Errorf("meshproxy admin %s: %w", a, err)
		}
	}
	return cr, nil
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
