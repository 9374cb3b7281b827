package e2e

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Paths of the binaries under test, set once by TestMain.
var (
	controlplaneBin string
	meshproxyBin    string
)

var (
	keepLogs    = flag.Bool("e2e.logs", false, "print every process's output even when the test passes")
	xdsModeFlag = flag.String("e2e.xds-mode", "", "meshproxy --xds-mode for tests that do not choose one (empty: the binary's default, delta)")
)

// TestMain builds ./cmd/controlplane and ./cmd/meshproxy once into a temp dir
// (or uses E2E_BIN_DIR when set, to test prebuilt binaries), runs the tests and
// removes the build. E2E_RACE=1 builds the binaries with the race detector.
func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir := os.Getenv("E2E_BIN_DIR")
	if dir == "" {
		tmp, err := os.MkdirTemp("", "tinymesh-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(tmp)
		for _, name := range []string{"controlplane", "meshproxy"} {
			if err := build(tmp, name); err != nil {
				fmt.Fprintln(os.Stderr, "e2e:", err)
				return 1
			}
		}
		dir = tmp
	}
	controlplaneBin = filepath.Join(dir, "controlplane")
	meshproxyBin = filepath.Join(dir, "meshproxy")
	code := m.Run()
	if code == 0 {
		// The tests start servers, clients and log readers; all must be gone.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: leaked goroutines:", err)
			code = 1
		}
	}
	return code
}

func build(dir, name string) error {
	args := []string{"build", "-tags", "grpcnotrace", "-o", filepath.Join(dir, name)} // the release build (README)
	if os.Getenv("E2E_RACE") == "1" {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/"+name)
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if os.Getenv("E2E_RACE") == "1" {
		cmd.Env = os.Environ() // the race detector needs cgo
	}
	cmd.Dir = ".." // the module root: go test runs in the package directory
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build ./cmd/%s: %w\n%s", name, err, out)
	}
	return nil
}

// Loopback addresses. Each sidecar gets its own 127.B.x.y address so that its
// per-port outbound TCP listeners (OUTBOUND_IP:<service port>) never collide with
// another's; B is random per test binary run so that concurrent runs on the same
// machine rarely share addresses.
var (
	ipBase = 32 + rand.IntN(200)
	ipNext atomic.Int32
)

// newIP returns an unused loopback IPv4 address (the whole of 127/8 is local on
// Linux).
func newIP(t *testing.T) string {
	t.Helper()
	n := int(ipNext.Add(1))
	ip := fmt.Sprintf("127.%d.%d.%d", ipBase, n/250, n%250+1)
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("loopback address %s unusable: %v", ip, err)
	}
	ln.Close()
	return ip
}

// handedOut holds every address freePort returned, so that it never returns one
// twice: the kernel may hand the same free port to two bind(:0) calls in a row,
// and two listeners of one process (inbound and admin) would then collide.
var handedOut sync.Map // "ip:port" -> struct{}

// freePort returns a port that was free on ip a moment ago and that it has not
// returned before. Another process could take it before ours binds; with
// per-test IPs that is unlikely enough.
func freePort(t *testing.T, ip string) int {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Fatalf("free port on %s: %v", ip, err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if _, dup := handedOut.LoadOrStore(net.JoinHostPort(ip, strconv.Itoa(port)), struct{}{}); !dup {
			return port
		}
	}
	t.Fatalf("no fresh free port on %s after 100 tries", ip)
	return 0
}

func freeAddr(t *testing.T, ip string) string {
	return net.JoinHostPort(ip, strconv.Itoa(freePort(t, ip)))
}

func hostOf(addr string) string {
	host, _, _ := net.SplitHostPort(addr)
	return host
}

// process is one started binary with its combined stdout and stderr captured line
// by line. A reader goroutine owns the pipe; it ends when the process has exited
// and closed its output, then closes done.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed after Wait returned
	err  error         // Wait's result; read after done

	mu       sync.Mutex
	lines    []string // the last maxLines lines, guarded by mu
	total    int      // lines seen so far, guarded by mu
	watchers map[*logWatch]struct{}
}

const maxLines = 20000

type logWatch struct {
	match func(string) bool
	ch    chan string // buffered 1; receives the first matching line
}

// startProcess starts bin with args and adds it to t's group, whose cleanup stops
// it and, if the test failed (or with -e2e.logs), prints its output.
func startProcess(t *testing.T, name, bin string, args ...string) *process {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = pw
	cmd.Stderr = pw
	// Should the test binary die, take the children with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	pw.Close() // the child holds its own copy; EOF comes when it exits
	p := &process{name: name, cmd: cmd, done: make(chan struct{}), watchers: map[*logWatch]struct{}{}}
	go p.read(pr)
	t.Logf("started %s (pid %d): %s %s", name, cmd.Process.Pid, filepath.Base(bin), strings.Join(args, " "))
	groupOf(t).add(p)
	return p
}

// group holds the processes one test started. Its cleanup stops them all at
// once, since each may take its drain time to exit, then prints their output if
// the test failed.
type group struct {
	mu    sync.Mutex
	procs []*process // guarded by mu
}

var (
	groupsMu sync.Mutex
	groups   = map[*testing.T]*group{}
)

// groupOf returns t's group, registering its cleanup on first use.
func groupOf(t *testing.T) *group {
	groupsMu.Lock()
	defer groupsMu.Unlock()
	g := groups[t]
	if g == nil {
		g = &group{}
		groups[t] = g
		t.Cleanup(func() {
			g.stopAll(t)
			groupsMu.Lock()
			delete(groups, t)
			groupsMu.Unlock()
		})
	}
	return g
}

func (g *group) add(p *process) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.procs = append(g.procs, p)
}

func (g *group) stopAll(t *testing.T) {
	g.mu.Lock()
	procs := slices.Clone(g.procs)
	g.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.stop(t, 15*time.Second) })
	}
	wg.Wait()
	if t.Failed() || *keepLogs {
		for _, p := range procs {
			t.Logf("output of %s (pid %d, exit: %v):\n%s", p.name, p.pid(), p.err, p.output(400))
		}
	}
}

func (p *process) read(r *os.File) {
	defer close(p.done)
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		p.total++
		p.lines = append(p.lines, line)
		if len(p.lines) > maxLines {
			p.lines = append(p.lines[:0], p.lines[len(p.lines)-maxLines/2:]...)
		}
		for w := range p.watchers {
			if w.match(line) {
				w.ch <- line
				delete(p.watchers, w)
			}
		}
		p.mu.Unlock()
	}
	// A line too long for the scanner ends the loop: keep draining so that the
	// child never blocks writing to a pipe nobody reads.
	_, _ = io.Copy(io.Discard, r)
	p.err = p.cmd.Wait()
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// lineCount returns how many lines the process has written so far, a mark for
// waitLog.
func (p *process) lineCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total
}

// waitLog waits until a line numbered from or later (0-based, see lineCount)
// matches, and returns it. It fails the test at the deadline or if the process
// exits first.
func (p *process) waitLog(t *testing.T, from int, timeout time.Duration, what string, match func(string) bool) string {
	t.Helper()
	w := &logWatch{match: match, ch: make(chan string, 1)}
	p.mu.Lock()
	first := p.total - len(p.lines) // line number of p.lines[0]
	for i, line := range p.lines {
		if first+i >= from && match(line) {
			p.mu.Unlock()
			return line
		}
	}
	p.watchers[w] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.watchers, w)
		p.mu.Unlock()
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case line := <-w.ch:
		return line
	case <-p.done:
		select {
		case line := <-w.ch:
			return line
		default:
		}
		t.Fatalf("%s exited (%v) before logging %s; last output:\n%s", p.name, p.err, what, p.output(60))
	case <-timer.C:
		t.Fatalf("%s did not log %s within %v; last output:\n%s", p.name, what, timeout, p.output(60))
	}
	return ""
}

// output returns the last n captured lines.
func (p *process) output(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	lines := p.lines
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to grace for the process to exit, then kills it.
// It reports whether the process exited on its own.
func (p *process) stop(t *testing.T, grace time.Duration) bool {
	t.Helper()
	if p.exited() {
		return true
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("SIGTERM %s (pid %d): %v", p.name, p.pid(), err)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		return true
	case <-timer.C:
		t.Errorf("%s (pid %d) still running %v after SIGTERM; killing it", p.name, p.pid(), grace)
		p.kill()
		return false
	}
}

// kill sends SIGKILL and waits for the exit.
func (p *process) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// controlPlane is a controlplane process serving a model directory at a fixed
// address, so that it can be restarted where the proxies expect it.
type controlPlane struct {
	t    *testing.T
	addr string
	// monitoring is its --monitoring-addr (/metrics, /debug/status); fixed
	// like addr, so that restarts keep it.
	monitoring string
	modelDir   string
	stageDir   string // same file system as modelDir, for atomic renames
	// dataDir holds the CA root and the join-token key; it outlives restarts,
	// as an operator's would, so proxies keep trusting the same root.
	dataDir string
	grace   time.Duration
	extra   []string
	proc    *process // the current process; replaced by restart
}

type controlPlaneOptions struct {
	// model maps file names in the model directory to their YAML.
	model map[string]string
	// endpointGrace is --endpoint-grace; zero keeps the binary's default.
	endpointGrace time.Duration
	// extra flags.
	extra []string
}

func startControlPlane(t *testing.T, o controlPlaneOptions) *controlPlane {
	t.Helper()
	root := t.TempDir()
	cp := &controlPlane{
		t:        t,
		addr:     freeAddr(t, newIP(t)),
		modelDir: filepath.Join(root, "mesh"),
		stageDir: filepath.Join(root, "stage"),
		dataDir:  filepath.Join(root, "data"),
		grace:    o.endpointGrace,
		extra:    o.extra,
	}
	cp.monitoring = freeAddr(t, hostOf(cp.addr))
	for _, d := range []string{cp.modelDir, cp.stageDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range o.model {
		cp.writeModel(name, content)
	}
	cp.start()
	return cp
}

// start launches the binary and waits for its "serving xDS" log line.
func (cp *controlPlane) start() {
	t := cp.t
	t.Helper()
	args := []string{"--xds-addr", cp.addr, "--monitoring-addr", cp.monitoring, "--model-dir", cp.modelDir, "--data-dir", cp.dataDir,
		"--log-format", "json", "--log-level", "info"}
	if cp.grace > 0 {
		args = append(args, "--endpoint-grace", cp.grace.String())
	}
	args = append(args, cp.extra...)
	cp.proc = startProcess(t, "controlplane", controlplaneBin, args...)
	cp.proc.waitLog(t, 0, 30*time.Second, `"serving xDS"`, func(line string) bool {
		return strings.Contains(line, "serving xDS")
	})
}

// joinToken mints a join token for namespace/serviceAccount with the
// controlplane CLI, as an operator would.
func (cp *controlPlane) joinToken(namespace, serviceAccount string) string {
	cp.t.Helper()
	out, err := exec.Command(controlplaneBin, "token", "create", "--data-dir", cp.dataDir,
		"--namespace", namespace, "--service-account", serviceAccount).Output()
	if err != nil {
		cp.t.Fatalf("controlplane token create: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// kill stops the control plane abruptly, as a crash would.
func (cp *controlPlane) kill() { cp.proc.kill() }

// restart starts a new process on the same address and model directory.
func (cp *controlPlane) restart() { cp.start() }

// writeModel writes a model file atomically (write elsewhere, then rename), so
// that the control plane's watcher never reads half a file.
func (cp *controlPlane) writeModel(name, content string) {
	t := cp.t
	t.Helper()
	staged := filepath.Join(cp.stageDir, name)
	if err := os.WriteFile(staged, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(staged, filepath.Join(cp.modelDir, name)); err != nil {
		t.Fatal(err)
	}
}

// proxy is a running meshproxy.
type proxy struct {
	workload string
	ip       string // its own loopback IP; also OUTBOUND_IP
	admin    string
	inbound  string // empty without --inbound
	outbound string // empty without --outbound
	proc     *process
}

type proxyOptions struct {
	workload  string
	labels    string // "app=backend,version=v1"
	namespace string // default "default"
	xdsMode   string // default: the binary's (delta)
	// app is the local app's address; when set the proxy gets an inbound listener
	// on its own IP (at inboundAddr when that is set).
	app         string
	inboundAddr string
	// outbound gives the proxy an outbound HTTP listener on its own IP.
	outbound bool
	// ip is the loopback IP for all its listeners; default a fresh one.
	ip string
	// xds overrides the control plane address (to go through a tcpGate).
	xds string
	// noAdmin leaves --admin unset, to test the default.
	noAdmin bool
	// noIdentity starts the proxy without a join token: it then has no SVID
	// and can serve only plaintext configuration.
	noIdentity bool
	// extra flags.
	extra []string
}

// startProxy starts a meshproxy against cp and waits until its admin /ready
// answers 200.
func startProxy(t *testing.T, cp *controlPlane, o proxyOptions) *proxy {
	t.Helper()
	p := &proxy{workload: o.workload, ip: o.ip}
	if p.ip == "" {
		p.ip = newIP(t)
	}
	xds := o.xds
	if xds == "" {
		xds = cp.addr
	}
	args := []string{"--xds", xds, "--workload", o.workload, "--log-format", "json"}
	if o.labels != "" {
		args = append(args, "--labels", o.labels)
	}
	if o.namespace != "" {
		args = append(args, "--namespace", o.namespace)
	}
	// Without our control plane (a test management server) there is no CA
	// to join.
	if !o.noIdentity && cp != nil {
		ns := o.namespace
		if ns == "" {
			ns = "default"
		}
		args = append(args, "--join-token", cp.joinToken(ns, o.workload))
	}
	if o.xdsMode == "" {
		o.xdsMode = *xdsModeFlag
	}
	if o.xdsMode != "" {
		args = append(args, "--xds-mode", o.xdsMode)
	}
	if o.app != "" {
		p.inbound = o.inboundAddr
		if p.inbound == "" {
			p.inbound = freeAddr(t, p.ip)
		}
		args = append(args, "--inbound", p.inbound, "--app", o.app)
	}
	if o.outbound {
		p.outbound = freeAddr(t, p.ip)
		args = append(args, "--outbound", p.outbound)
	}
	if o.noAdmin {
		p.admin = "127.0.0.1:15000" // the documented default
	} else {
		p.admin = freeAddr(t, p.ip)
		args = append(args, "--admin", p.admin)
	}
	args = append(args, o.extra...)
	p.proc = startProcess(t, "meshproxy "+o.workload, meshproxyBin, args...)
	p.waitReady(t, 30*time.Second)
	return p
}

// waitReady polls GET /ready until it answers 200, the process exits or the
// deadline passes.
func (p *proxy) waitReady(t *testing.T, timeout time.Duration) {
	t.Helper()
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := "no answer yet"
	for {
		resp, err := client.Get("http://" + p.admin + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-p.proc.done:
			t.Fatalf("%s exited (%v) before /ready; output:\n%s", p.proc.name, p.proc.err, p.proc.output(60))
		case <-ctx.Done():
			t.Fatalf("%s not ready within %v (last /ready: %s); output:\n%s", p.proc.name, timeout, last, p.proc.output(60))
		case <-tick.C:
		}
	}
}

// configDump fetches the proxy's /config_dump body.
func (p *proxy) configDump() (string, error) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + p.admin + "/config_dump")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	return resp.Status + "\n" + string(body), nil
}

// dumpOnFailure registers a cleanup that, if the test failed, logs the proxies'
// config dumps while they still run (cleanups run last-registered first, so this
// one runs before the processes, started earlier, are stopped).
func dumpOnFailure(t *testing.T, proxies ...*proxy) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, p := range proxies {
			dump, err := p.configDump()
			if err != nil {
				t.Logf("config_dump of %s: %v", p.workload, err)
				continue
			}
			const max = 20000
			if len(dump) > max {
				dump = dump[:max] + "...(truncated)"
			}
			t.Logf("config_dump of %s:\n%s", p.workload, dump)
		}
	})
}

// retry calls try every 50ms until it succeeds or timeout passes, then fails the
// test with the last error. Each try is a real exchange with the mesh, used where
// a resource reaches a proxy after /ready says it has some config.
func retry(t *testing.T, timeout time.Duration, what string, try func() error) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := try()
		if err == nil {
			return
		}
		select {
		case <-deadline.C:
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		case <-tick.C:
		}
	}
}

// tcpGate relays TCP connections to target while open; while shut it accepts and
// closes them at once, and shut also cuts the relayed ones. Tests put it between
// some proxies and the control plane to choose the order in which they
// reconnect after a restart.
type tcpGate struct {
	addr   string
	target string
	ln     net.Listener
	open   atomic.Bool
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{} // relayed connections (both sides), guarded by mu
}

func startTCPGate(t *testing.T, target string) *tcpGate {
	t.Helper()
	ln, err := net.Listen("tcp", newIP(t)+":0")
	if err != nil {
		t.Fatal(err)
	}
	g := &tcpGate{addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	g.open.Store(true)
	g.wg.Add(1)
	go g.serve()
	t.Cleanup(func() {
		ln.Close()
		g.cut()
		g.wg.Wait()
	})
	return g
}

func (g *tcpGate) serve() {
	defer g.wg.Done()
	for {
		down, err := g.ln.Accept()
		if err != nil {
			return
		}
		if !g.open.Load() {
			down.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", g.target, 2*time.Second)
		if err != nil {
			down.Close()
			continue
		}
		g.mu.Lock()
		g.conns[down], g.conns[up] = struct{}{}, struct{}{}
		g.mu.Unlock()
		g.wg.Add(2)
		go g.pipe(up, down)
		go g.pipe(down, up)
	}
}

// pipe copies src to dst; when either ends, both close.
func (g *tcpGate) pipe(dst, src net.Conn) {
	defer g.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	g.mu.Lock()
	delete(g.conns, dst)
	delete(g.conns, src)
	g.mu.Unlock()
}

// shut refuses new connections and cuts the relayed ones.
func (g *tcpGate) shut() {
	g.open.Store(false)
	g.cut()
}

// reopen relays new connections again.
func (g *tcpGate) reopen() { g.open.Store(true) }

func (g *tcpGate) cut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for c := range g.conns {
		c.Close()
	}
}
