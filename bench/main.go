package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// options are the command-line settings of one run.
type options struct {
	duration    time.Duration
	warmup      time.Duration
	rounds      int
	rate        int
	chains      []string
	tests       []string
	out         string
	jsonOut     string
	binDir      string
	keepTmp     bool
	wrkConns    int
	h2Conns     int
	h2Streams   int
	ghzConc     int
	ghzConns    int
	fortioConns int
	// fortioUniform spreads the fixed-rate requests evenly over time
	// (fortio -uniform); by default fortio's connections fire together.
	fortioUniform bool
}

// CPU pinning: load generator and client-side proxy share one CPU, backend and
// server-side proxy the other.
const (
	cpuClient = 0
	cpuServer = 1
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("bench: ")

	backend := flag.Bool("backend", false, "internal: run as the backend server")
	backendHTTP := flag.String("backend-http", "", "internal: backend HTTP/1.1+h2c address")
	backendGRPC := flag.String("backend-grpc", "", "internal: backend gRPC address")

	var o options
	var chains, tests string
	quick := flag.Bool("quick", false, "smoke run: 2s measurements, 1 round, short warm-up; does not write --out unless given")
	flag.DurationVar(&o.duration, "duration", 4*time.Second, "length of each measurement (whole seconds)")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "warm-up per chain and test before the measured rounds")
	flag.IntVar(&o.rounds, "rounds", 4, "measured rounds per test; chains run round-robin in each round")
	flag.IntVar(&o.rate, "rate", 2000, "requests/s for the fixed-rate latency test")
	flag.StringVar(&chains, "chains", strings.Join(allChains, ","), "comma-separated chains to run")
	flag.StringVar(&tests, "tests", strings.Join(allTests, ","), "comma-separated tests to run")
	flag.StringVar(&o.out, "out", "docs/benchmarks.md", "Markdown file to write the results page to (empty: none)")
	flag.StringVar(&o.jsonOut, "json", "", "also write every sample as JSON to this file")
	render := flag.String("render", "", "do not measure: re-render the tables and --out from a --json file of an earlier run")
	flag.StringVar(&o.binDir, "bin-dir", "", "directory with prebuilt meshproxy and controlplane (default: go build ./cmd/... into a temp dir)")
	flag.BoolVar(&o.keepTmp, "keep-tmp", false, "keep the temp dir with configs and logs")
	flag.IntVar(&o.wrkConns, "wrk-connections", 64, "wrk connections")
	flag.IntVar(&o.h2Conns, "h2load-clients", 8, "h2load clients (connections)")
	flag.IntVar(&o.h2Streams, "h2load-streams", 16, "h2load concurrent streams per connection")
	flag.IntVar(&o.ghzConc, "ghz-concurrency", 32, "ghz concurrent workers")
	flag.IntVar(&o.ghzConns, "ghz-connections", 4, "ghz connections")
	flag.IntVar(&o.fortioConns, "fortio-connections", 16, "fortio connections for the fixed-rate test")
	flag.BoolVar(&o.fortioUniform, "fortio-uniform", false, "fixed-rate test: spread requests evenly in time (fortio -uniform) instead of fortio's default, where all connections send together")
	flag.Parse()

	if *backend {
		if err := runBackend(*backendHTTP, *backendGRPC); err != nil {
			log.Fatal(err)
		}
		return
	}

	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *quick {
		if !set["duration"] {
			o.duration = 2 * time.Second
		}
		if !set["rounds"] {
			o.rounds = 1
		}
		if !set["warmup"] {
			o.warmup = time.Second
		}
		if !set["out"] {
			o.out = ""
		}
	}
	o.duration = o.duration.Round(time.Second)
	if o.duration < time.Second {
		o.duration = time.Second
	}
	o.warmup = o.warmup.Round(time.Second)
	for _, c := range strings.Split(chains, ",") {
		if c = strings.TrimSpace(c); c == "" {
			continue
		}
		if !slices.Contains(knownChains, c) {
			log.Fatalf("unknown chain %q (want one of %v)", c, knownChains)
		}
		o.chains = append(o.chains, c)
	}

	for _, t := range strings.Split(tests, ",") {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		if !slices.Contains(allTests, t) {
			log.Fatalf("unknown test %q (want one of %v)", t, allTests)
		}
		o.tests = append(o.tests, t)
	}

	if *render != "" {
		if err := renderJSON(*render, o.out); err != nil {
			log.Fatal(err)
		}
		return
	}

	cmd := "go run ./bench"
	if len(os.Args) > 1 {
		cmd += " " + strings.Join(os.Args[1:], " ")
	}
	if err := run(o, cmd); err != nil {
		log.Fatal(err)
	}
}

// portAlloc hands out free loopback addresses. The listener is closed before the
// address is used, so another process could take it in between; on a test
// machine that is rare and shows up as a startup failure, not a wrong result.
type portAlloc struct{ seen map[string]bool }

func (p *portAlloc) next() (string, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("free port: %w", err)
		}
		a := l.Addr().String()
		l.Close()
		if !p.seen[a] {
			p.seen[a] = true
			return a, nil
		}
	}
	return "", fmt.Errorf("free port: no new port in 20 tries")
}

func (p *portAlloc) addrs() (addrs, error) {
	var a addrs
	var err error
	for _, dst := range []*string{&a.H1, &a.H2C, &a.GRPC} {
		if *dst, err = p.next(); err != nil {
			return addrs{}, err
		}
	}
	return a, nil
}

// interrupted is set by SIGINT/SIGTERM; the run stops between measurements (the
// running load tool gets the terminal's SIGINT itself) and cleans up.
var interrupted atomic.Bool

func run(o options, command string) error {
	tmp, err := os.MkdirTemp("", "tinymesh-bench-")
	if err != nil {
		return err
	}
	if o.keepTmp {
		log.Printf("configs and logs in %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer func() {
		signal.Stop(sig)
		close(sig) // no more deliveries after Stop; ends the goroutine below
	}()
	go func() {
		if _, ok := <-sig; ok {
			interrupted.Store(true)
			log.Printf("interrupted; stopping after the current measurement")
		}
	}()

	tools := map[string]string{}
	for _, t := range []string{"wrk", "h2load", "ghz", "fortio", "taskset"} {
		p, err := findTool(t)
		if err != nil {
			return err
		}
		tools[t] = p
	}
	protoset := filepath.Join(tmp, "health.protoset")
	ps, err := healthProtoset()
	if err != nil {
		return fmt.Errorf("protoset: %w", err)
	}
	if err := os.WriteFile(protoset, ps, 0o644); err != nil {
		return err
	}

	// Throwaway CA and SVIDs for the C-proxy mTLS chains (meshproxy's come from
	// the control plane's own CA).
	certDir := filepath.Join(tmp, "certs")
	if err := os.MkdirAll(certDir, 0o755); err != nil {
		return err
	}
	certs, err := writeCerts(certDir, certClient, certServer)
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}

	procs := &procSet{logDir: tmp}
	defer func() {
		if err := procs.stopAll(); err != nil {
			log.Print(err)
		}
	}()
	ports := &portAlloc{seen: map[string]bool{}}

	rep := newReport(nil)
	rep.Command = command
	rep.Started = time.Now()
	rep.Settings = []string{
		fmt.Sprintf("measurement %s, warm-up %s, %d round(s) per test", o.duration, o.warmup, o.rounds),
		fmt.Sprintf("wrk: 1 thread, %d connections", o.wrkConns),
		fmt.Sprintf("h2load: 1 thread, %d clients x %d streams", o.h2Conns, o.h2Streams),
		fmt.Sprintf("ghz: %d workers over %d connections (fixed rate: --rps %d)", o.ghzConc, o.ghzConns, o.rate),
		fmt.Sprintf("fortio: %d rps over %d connections%s", o.rate, o.fortioConns, map[bool]string{true: ", -uniform"}[o.fortioUniform]),
		"backend: Go net/http (HTTP/1.1 + h2c, 3-byte body) and grpc-go health service, pinned to CPU 1",
	}
	rep.Machine = machineInfo(tools)
	loadStart := loadAvg()

	// Backend: this binary again, so that it can be pinned apart from us.
	back, err := ports.addrs()
	if err != nil {
		return err
	}
	back.H2C = back.H1 // one port serves HTTP/1.1 and h2c
	self, err := os.Executable()
	if err != nil {
		return err
	}
	bp, err := procs.start("backend", cpuServer, nil, self, "-backend", "-backend-http", back.H1, "-backend-grpc", back.GRPC)
	if err != nil {
		return err
	}
	backAlive := func() error {
		if done, err := bp.exited(); done {
			return fmt.Errorf("backend exited: %v", err)
		}
		return nil
	}
	if err := waitChain(back, 10*time.Second, backAlive); err != nil {
		return fmt.Errorf("backend: %w", err)
	}

	var runs []*chainRun
	for _, name := range o.chains {
		cr, err := startChain(name, o, tmp, procs, ports, back, certs)
		if err != nil {
			rep.Notes = append(rep.Notes, fmt.Sprintf("chain %s not measured: %v", name, err))
			log.Printf("chain %s not measured: %v", name, err)
			continue
		}
		if err := waitChain(cr.target, 30*time.Second, cr.alive); err != nil {
			rep.Notes = append(rep.Notes, fmt.Sprintf("chain %s not measured: not serving: %v (logs: %s)", name, err, tmp))
			log.Printf("chain %s not serving: %v", name, err)
			continue
		}
		if cr.verify != nil {
			if err := cr.verify(); err != nil {
				rep.Notes = append(rep.Notes, fmt.Sprintf("chain %s: path not confirmed: %v", name, err))
				log.Printf("chain %s: path not confirmed: %v", name, err)
			} else {
				log.Printf("chain %s: path confirmed", name)
			}
		}
		if err := cr.readIdle(); err != nil {
			return fmt.Errorf("chain %s: %w", name, err)
		}
		runs = append(runs, cr)
		rep.Chains = append(rep.Chains, name)
		log.Printf("chain %s ready at %+v", name, cr.target)
	}
	if len(runs) == 0 {
		return fmt.Errorf("no chain could be started")
	}

	lt := &loadTools{o: o, tools: tools, protoset: protoset, tmp: tmp}
	for _, test := range o.tests {
		if o.warmup > 0 {
			for _, cr := range runs {
				if interrupted.Load() {
					break
				}
				if _, err := lt.run(test, cr.target, o.warmup); err != nil {
					log.Printf("warm-up %s %s: %v", test, cr.name, err)
				}
			}
		}
		for round := range o.rounds {
			for i := range runs {
				if interrupted.Load() {
					return fmt.Errorf("interrupted")
				}
				// Rotate the start so that no chain always runs first or last.
				cr := runs[(i+round)%len(runs)]
				if err := cr.alive(); err != nil {
					rep.Notes = append(rep.Notes, fmt.Sprintf("%s %s round %d: %v", test, cr.name, round+1, err))
					continue
				}
				pids := cr.pids(test)
				t0, err := cpuTicks(pids)
				if err != nil {
					return err
				}
				res, err := lt.run(test, cr.target, o.duration)
				t1, err2 := cpuTicks(pids)
				if err != nil {
					rep.Notes = append(rep.Notes, fmt.Sprintf("%s %s round %d failed: %v", test, cr.name, round+1, err))
					log.Printf("%s %s round %d failed: %v", test, cr.name, round+1, err)
					continue
				}
				if err2 != nil {
					return err2
				}
				rep.add(test, cr.name, sample{res: res, cpuTicks: t1 - t0})
				log.Printf("%-6s %-14s round %d: %8.0f rps  p50 %-10s p99 %-10s errors %d  proxy cpu %.2fs",
					test, cr.name, round+1, res.RPS, res.P50, res.P99, res.Errors, float64(t1-t0)/clockTicks)
			}
		}
	}
	for _, cr := range runs {
		m, err := cr.readPeak()
		if err != nil {
			return fmt.Errorf("chain %s: %w", cr.name, err)
		}
		rep.Mem[cr.name] = m
	}

	for _, ch := range rep.Chains {
		for _, t := range []string{testFixed, testFixG} {
			if got := rep.get(t, ch).rps(); got > 0 && got < 0.97*float64(o.rate) {
				rep.Notes = append(rep.Notes, fmt.Sprintf("%s test: %s achieved %.0f of %d requests/s; its latencies include queueing in the generator", t, ch, got, o.rate))
			}
		}
	}
	// Other work on a shared machine is the main source of noise; record it.
	rep.Machine = append(rep.Machine, fmt.Sprintf("load average (1, 5, 15 min) at start: %s; at end: %s", loadStart, loadAvg()))

	rep.writeSummary(os.Stdout)
	if o.out != "" {
		var b bytes.Buffer
		rep.writeDoc(&b)
		if err := writePage(o.out, b.Bytes()); err != nil {
			return err
		}
	}
	if o.jsonOut != "" {
		var b bytes.Buffer
		if err := rep.writeJSON(&b); err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonOut, b.Bytes(), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", o.jsonOut, err)
		}
		log.Printf("wrote %s", o.jsonOut)
	}
	return nil
}

// loadTools runs one test's load generator against a chain.
type loadTools struct {
	o        options
	tools    map[string]string
	protoset string
	tmp      string
}

func (l *loadTools) run(test string, t addrs, d time.Duration) (result, error) {
	secs := strconv.Itoa(int(d.Round(time.Second) / time.Second))
	limit := d + 30*time.Second
	switch test {
	case testH1:
		out, err := runTool(limit, cpuClient, l.tools["wrk"], "-t1", "-c"+strconv.Itoa(l.o.wrkConns), "-d"+secs+"s",
			"--latency", "-H", "Host: "+hostH1, "http://"+t.H1+"/")
		if err != nil {
			return result{}, err
		}
		return parseWrk(string(out))
	case testH2C:
		out, err := runTool(limit, cpuClient, l.tools["h2load"], "-t1", "-c", strconv.Itoa(l.o.h2Conns),
			"-m", strconv.Itoa(l.o.h2Streams), "-D", secs, "-H", ":authority: "+hostH2C, "http://"+t.H2C+"/")
		if err != nil {
			return result{}, err
		}
		return parseH2load(string(out))
	case testGRPC, testFixG:
		argv := []string{l.tools["ghz"], "--insecure", "--protoset", l.protoset,
			"--call", "grpc.health.v1.Health.Check", "-d", "{}", "-c", strconv.Itoa(l.o.ghzConc),
			"--connections", strconv.Itoa(l.o.ghzConns), "-z", secs + "s", "--authority", hostGRPC, "-O", "json"}
		if test == testFixG {
			argv = append(argv, "--rps", strconv.Itoa(l.o.rate))
		}
		out, err := runTool(limit, cpuClient, append(argv, t.GRPC)...)
		if err != nil {
			return result{}, err
		}
		return parseGhz(out)
	case testFixed:
		jf := filepath.Join(l.tmp, "fortio.json")
		os.Remove(jf)
		argv := []string{l.tools["fortio"], "load", "-qps", strconv.Itoa(l.o.rate),
			"-c", strconv.Itoa(l.o.fortioConns), "-t", secs + "s", "-p", "50,99", "-loglevel", "Warning",
			"-json", jf, "-H", "Host: " + hostH1}
		if l.o.fortioUniform {
			argv = append(argv, "-uniform")
		}
		if _, err := runTool(limit, cpuClient, append(argv, "http://"+t.H1+"/")...); err != nil {
			return result{}, err
		}
		b, err := os.ReadFile(jf)
		if err != nil {
			return result{}, fmt.Errorf("fortio: %w", err)
		}
		return parseFortio(b)
	}
	return result{}, fmt.Errorf("unknown test %q", test)
}

// renderJSON rebuilds the report of an earlier run from its --json file and
// writes it like a run would, so that the page can be regenerated after the
// generator changes without measuring again.
func renderJSON(path, out string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	rep, err := reportFromJSON(b)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	rep.writeSummary(os.Stdout)
	if out == "" {
		return nil
	}
	var doc bytes.Buffer
	rep.writeDoc(&doc)
	return writePage(out, doc.Bytes())
}

// handWrittenMarker starts the part of the results page that people write (the
// analysis of a run); writePage keeps it below the generated tables.
const handWrittenMarker = "<!-- hand-written below: go run ./bench keeps it -->"

// writePage writes the generated page to path, keeping the hand-written part of
// the page already there, if any.
func writePage(path string, generated []byte) error {
	page := generated
	if old, err := os.ReadFile(path); err == nil {
		if i := bytes.Index(old, []byte(handWrittenMarker)); i >= 0 {
			page = append(append(bytes.TrimRight(generated, "\n"), "\n\n"...), old[i:]...)
		}
	}
	if err := os.WriteFile(path, page, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	log.Printf("wrote %s", path)
	return nil
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// machineInfo describes the machine and tool versions for the results page.
func machineInfo(tools map[string]string) []string {
	var out []string
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				out = append(out, "CPU: "+strings.TrimSpace(v))
				break
			}
		}
	}
	out = append(out, fmt.Sprintf("logical CPUs: %d", runtime.NumCPU()))
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		out = append(out, strings.Join(strings.Fields(line), " "))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		out = append(out, "Linux "+strings.TrimSpace(string(b)))
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				out = append(out, "OS: "+strings.Trim(v, `"`))
			}
		}
	}
	out = append(out, "Go: "+runtime.Version())
	version := func(name string, argv ...string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var b bytes.Buffer
		c := exec.CommandContext(ctx, argv[0], argv[1:]...)
		c.Stdout, c.Stderr = &b, &b
		c.Run()
		line, _, _ := strings.Cut(strings.TrimSpace(b.String()), "\n")
		for _, l := range strings.Split(b.String(), "\n") {
			if f := strings.Fields(l); len(f) >= 3 && f[0] == "mod" {
				line = f[2] // go version -m: "mod <path> <version> <sum>"
			}
		}
		out = append(out, name+": "+strings.TrimSpace(line))
	}
	version("nginx", "nginx", "-v")
	version("HAProxy", "haproxy", "-v")
	version("Caddy", "caddy", "version")
	version("wrk", tools["wrk"], "--version")
	version("h2load", tools["h2load"], "--version")
	// ghz built by go install reports "dev"; the module version is in the build info.
	version("ghz", "go", "version", "-m", tools["ghz"])
	version("fortio", tools["fortio"], "version")
	out = append(out, "note: a shared 2-core VM; other work on the machine adds noise, so compare chains measured in the same run")
	return out
}
