// Package spiretest runs a real SPIRE server and agent on loopback for tests:
// the sqlite datastore and the disk key manager in a temp dir, join-token node
// attestation, and the unix workload attestor with workload path discovery, so
// registration entries can select a process by its uid and binary path.
//
// The binaries come from .ci/install-spire.sh (TINYMESH_SPIRE_DIR, or the
// script's default cache directory). Without them, Start skips the test unless
// TINYMESH_REQUIRE_SPIRE is set, as CI does; then it fails.
//
// Everything Start launches is stopped, by PID, in the test's cleanup, which
// also prints the processes' output when the test failed.
package spiretest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Version is the SPIRE release .ci/install-spire.sh builds.
const Version = "v1.13.3"

// RequireEnv, when set to anything, turns a missing SPIRE into a test failure.
const RequireEnv = "TINYMESH_REQUIRE_SPIRE"

// DirEnv names the directory holding spire-server and spire-agent.
const DirEnv = "TINYMESH_SPIRE_DIR"

// maxSocketPath is the longest unix socket path Linux accepts (sun_path is 108
// bytes with the terminating NUL).
const maxSocketPath = 107

// BinDir returns the directory with spire-server and spire-agent: $TINYMESH_SPIRE_DIR,
// else the install script's default, ${XDG_CACHE_HOME:-$HOME/.cache}/tinymesh/spire-<Version>.
func BinDir() (string, error) {
	dir := os.Getenv(DirEnv)
	if dir == "" {
		cache := os.Getenv("XDG_CACHE_HOME")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("SPIRE binaries: %s unset and no home directory: %w", DirEnv, err)
			}
			cache = filepath.Join(home, ".cache")
		}
		dir = filepath.Join(cache, "tinymesh", "spire-"+Version)
	}
	for _, name := range []string{"spire-server", "spire-agent"} {
		if _, err := exec.LookPath(filepath.Join(dir, name)); err != nil {
			return "", fmt.Errorf("SPIRE binaries: %w (run .ci/install-spire.sh, or set %s)", err, DirEnv)
		}
	}
	return dir, nil
}

// Options configure Start.
type Options struct {
	// TrustDomain defaults to cluster.local.
	TrustDomain string
}

// SPIRE is a running server and an agent attested to it.
type SPIRE struct {
	// TrustDomain is the server's trust domain.
	TrustDomain string
	// AgentSocket is the path of the agent's Workload API socket.
	AgentSocket string
	// NodeID is the agent's SPIFFE ID (the join token's alias); registration
	// entries for workloads on this agent name it as their parent.
	NodeID string

	bin          string
	serverSocket string
}

// AgentAddr returns the Workload API address, unix://<AgentSocket>.
func (s *SPIRE) AgentAddr() string { return "unix://" + s.AgentSocket }

// Start runs a SPIRE server and an agent joined to it with a join token, and
// returns once both pass their health checks. It skips t when the binaries
// are missing (see the package comment).
func Start(t testing.TB, o Options) *SPIRE {
	t.Helper()
	bin, err := BinDir()
	if err != nil {
		if os.Getenv(RequireEnv) != "" {
			t.Fatalf("%v; %s is set, so SPIRE is required", err, RequireEnv)
		}
		t.Skipf("%v; set %s to make this a failure", err, RequireEnv)
	}
	if o.TrustDomain == "" {
		o.TrustDomain = "cluster.local"
	}
	data := t.TempDir()
	sockDir := shortTempDir(t)
	s := &SPIRE{
		TrustDomain:  o.TrustDomain,
		AgentSocket:  filepath.Join(sockDir, "agent.sock"),
		NodeID:       "spiffe://" + o.TrustDomain + "/tinymesh/node",
		bin:          bin,
		serverSocket: filepath.Join(sockDir, "server.sock"),
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}

	serverDir := filepath.Join(data, "server")
	serverConf := filepath.Join(data, "server.conf")
	writeFile(t, serverConf, fmt.Sprintf(`server {
	bind_address = "127.0.0.1"
	bind_port = "%d"
	socket_path = %q
	trust_domain = %q
	data_dir = %q
	log_level = "INFO"
}
plugins {
	DataStore "sql" {
		plugin_data {
			database_type = "sqlite3"
			connection_string = %q
		}
	}
	NodeAttestor "join_token" {
		plugin_data {}
	}
	KeyManager "disk" {
		plugin_data {
			keys_path = %q
		}
	}
}
`, port, s.serverSocket, o.TrustDomain, serverDir, filepath.Join(serverDir, "datastore.sqlite3"), filepath.Join(serverDir, "keys.json")))
	startProcess(t, "spire-server", filepath.Join(bin, "spire-server"), "run", "-config", serverConf)
	waitHealthy(t, filepath.Join(bin, "spire-server"), s.serverSocket)

	// The agent trusts the server through the bundle the server shows, as an
	// operator would distribute it (no insecure_bootstrap).
	bundle := filepath.Join(data, "bundle.pem")
	writeFile(t, bundle, string(s.Bundle(t)))
	var token struct {
		Value string `json:"value"`
	}
	s.serverJSON(t, &token, "token", "generate", "-spiffeID", s.NodeID, "-ttl", "600")
	if token.Value == "" {
		t.Fatal("spire-server token generate: no token in its output")
	}

	agentDir := filepath.Join(data, "agent")
	agentConf := filepath.Join(data, "agent.conf")
	writeFile(t, agentConf, fmt.Sprintf(`agent {
	data_dir = %q
	log_level = "INFO"
	server_address = "127.0.0.1"
	server_port = "%d"
	socket_path = %q
	trust_bundle_path = %q
	trust_domain = %q
	experimental {
		# Entries and SVIDs reach the workload within a second instead of five.
		sync_interval = "1s"
	}
}
plugins {
	NodeAttestor "join_token" {
		plugin_data {}
	}
	KeyManager "disk" {
		plugin_data {
			directory = %q
		}
	}
	WorkloadAttestor "unix" {
		plugin_data {
			# unix:path selectors tell apart processes of one uid by binary.
			discover_workload_path = true
			# No unix:sha256 selector: hashing every attested binary is not needed.
			workload_size_limit = -1
		}
	}
}
`, agentDir, port, s.AgentSocket, bundle, o.TrustDomain, agentDir))
	startProcess(t, "spire-agent", filepath.Join(bin, "spire-agent"), "run", "-config", agentConf, "-joinToken", token.Value)
	waitHealthy(t, filepath.Join(bin, "spire-agent"), s.AgentSocket)
	return s
}

// Bundle returns the server's current X.509 trust bundle, PEM: the roots its
// SVIDs chain to.
func (s *SPIRE) Bundle(t testing.TB) []byte {
	t.Helper()
	return []byte(s.server(t, "bundle", "show"))
}

// Entry is a registration entry for a workload on the agent.
type Entry struct {
	// SPIFFEID is the workload's ID, spiffe://<trust domain>/...
	SPIFFEID string
	// Selectors, e.g. "unix:uid:1000", "unix:path:/usr/bin/meshproxy"; all
	// must match.
	Selectors []string
	// X509SVIDTTL is the SVID lifetime; zero keeps the server's default (1h).
	// SPIRE backdates SVIDs by 10s and the agent renews at half the lifetime,
	// so a TTL of 30s gives a new SVID about every 20s.
	X509SVIDTTL time.Duration
}

// CreateEntry registers e under the agent and returns the entry ID. The agent
// learns of it at its next sync (within about a second).
func (s *SPIRE) CreateEntry(t testing.TB, e Entry) string {
	t.Helper()
	args := []string{"entry", "create", "-parentID", s.NodeID, "-spiffeID", e.SPIFFEID}
	for _, sel := range e.Selectors {
		args = append(args, "-selector", sel)
	}
	if e.X509SVIDTTL > 0 {
		args = append(args, "-x509SVIDTTL", strconv.Itoa(int(e.X509SVIDTTL/time.Second)))
	}
	var out struct {
		Results []struct {
			Status struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"status"`
			Entry struct {
				ID string `json:"id"`
			} `json:"entry"`
		} `json:"results"`
	}
	s.serverJSON(t, &out, args...)
	if len(out.Results) != 1 || out.Results[0].Status.Code != 0 || out.Results[0].Entry.ID == "" {
		t.Fatalf("spire-server entry create %s: unexpected result %+v", e.SPIFFEID, out)
	}
	return out.Results[0].Entry.ID
}

// server runs a spire-server CLI command against the running server and
// returns its standard output.
func (s *SPIRE) server(t testing.TB, args ...string) string {
	t.Helper()
	args = append(args, "-socketPath", s.serverSocket)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, "spire-server"), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("spire-server %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return string(out)
}

// serverJSON runs a spire-server CLI command with -output json and decodes
// its output into v.
func (s *SPIRE) serverJSON(t testing.TB, v any, args ...string) {
	t.Helper()
	out := s.server(t, append(args, "-output", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("spire-server %s: output is not the JSON expected: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// waitHealthy runs `<bin> healthcheck` until it passes, for at most 30s.
func waitHealthy(t testing.TB, bin, socket string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		out, err := exec.CommandContext(ctx, bin, "healthcheck", "-socketPath", socket).CombinedOutput()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s healthcheck did not pass within 30s: %v\n%s", filepath.Base(bin), err, out)
		case <-tick.C:
		}
	}
}

// shortTempDir makes a temp dir whose socket paths stay far below the unix
// socket limit even when TMPDIR is long, and removes it in t's cleanup.
func shortTempDir(t testing.TB) string {
	t.Helper()
	base := os.TempDir()
	if len(base)+len("/tm-spire-0123456789/server.sock") > maxSocketPath {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "tm-spire-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// process is a started SPIRE binary whose output is kept for the failure log.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when Wait returned
	out  lockedBuffer
}

// startProcess starts bin and registers a cleanup that stops it by PID
// (SIGTERM, then SIGKILL after 10s) and prints its output if t failed.
func startProcess(t testing.TB, name, bin string, args ...string) *process {
	t.Helper()
	p := &process{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout = &p.out
	p.cmd.Stderr = &p.out
	// Should the test binary die, take the child with it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Logf("started %s (pid %d)", name, p.cmd.Process.Pid)
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("output of %s (pid %d, %v):\n%s", name, p.cmd.Process.Pid, p.cmd.ProcessState, p.out.tail(200))
		}
	})
	return p
}

func (p *process) stop(t testing.TB) {
	select {
	case <-p.done:
		return
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("SIGTERM %s (pid %d): %v", p.name, p.cmd.Process.Pid, err)
	}
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		t.Errorf("%s (pid %d) still running 10s after SIGTERM; killing it", p.name, p.cmd.Process.Pid)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// lockedBuffer collects a process's output; exec's copying goroutines write
// while a failing test may read.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// tail returns the last n lines written.
func (b *lockedBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	lines := strings.Split(strings.TrimRight(b.buf.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
