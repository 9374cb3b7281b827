package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    procStat
		wantErr bool
	}{
		{
			name: "plain",
			in:   "1234 (nginx) S 1200 1234 1234 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 1 0 100 1000 200",
			want: procStat{PPID: 1200, UTime: 250, STime: 75},
		},
		{
			name: "comm with spaces and parens",
			in:   "77 (a) b (c)) R 1 77 77 0 -1 0 0 0 0 0 9 1 0 0 20 0 1 0 100 1000 200",
			want: procStat{PPID: 1, UTime: 9, STime: 1},
		},
		{name: "no comm", in: "1234 nginx S 1", wantErr: true},
		{name: "truncated", in: "1234 (nginx) S 1200 1234", wantErr: true},
		{name: "bad utime", in: "1 (x) S 0 1 1 0 -1 0 0 0 0 0 x 1 0", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseStat(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parseStat(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	in := "Name:\tnginx\nVmPeak:\t  100 kB\nVmHWM:\t   21504 kB\nVmRSS:\t   18304 kB\nThreads:\t1\n"
	got, err := parseStatus([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if want := (memStatus{RSSKiB: 18304, HWMKiB: 21504}); got != want {
		t.Errorf("parseStatus = %+v, want %+v", got, want)
	}
	if _, err := parseStatus([]byte("Name:\tzombie\nState:\tZ\n")); err == nil {
		t.Errorf("parseStatus without VmRSS: got nil error, want one")
	}
}

// TestProcSelf reads our own process through the same code the bench uses for
// proxies: the numbers must be plausible, and our tree must contain a child.
func TestProcSelf(t *testing.T) {
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start sleep: %v", err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	tree := procTree(os.Getpid())
	found := false
	for _, p := range tree {
		found = found || p == cmd.Process.Pid
	}
	if !found {
		t.Errorf("procTree(self) = %v, want it to contain child %d", tree, cmd.Process.Pid)
	}
	m, err := memTree(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSSKiB <= 0 || m.HWMKiB < m.RSSKiB {
		t.Errorf("memTree(self) = %+v, want 0 < RSS <= HWM", m)
	}
	if _, err := cpuTicks([]int{os.Getpid()}); err != nil {
		t.Errorf("cpuTicks(self): %v", err)
	}
	if _, err := cpuTicks([]int{1 << 30}); err == nil {
		t.Errorf("cpuTicks(no such pid): got nil error, want one")
	}
}

func TestRatioAndCPU(t *testing.T) {
	for _, tt := range []struct {
		v, base float64
		want    string
	}{
		{20000, 25000, "0.80x"},
		{3, 2, "1.50x"},
		{1, 0, "n/a"},
		{0, 1, "n/a"},
	} {
		if got := ratio(tt.v, tt.base); got != tt.want {
			t.Errorf("ratio(%v, %v) = %q, want %q", tt.v, tt.base, got, tt.want)
		}
	}
	// 200 ticks = 2 CPU seconds for 100,000 requests = 20 us per request
	// = 20 millicores at 1,000 requests/s.
	if got, want := mcpuPer1k(200, 100000), 20.0; got != want {
		t.Errorf("mcpuPer1k(200, 100000) = %v, want %v", got, want)
	}
	if got := mcpuPer1k(200, 0); got != 0 {
		t.Errorf("mcpuPer1k(200, 0) = %v, want 0", got)
	}
}

func TestCellAggregates(t *testing.T) {
	c := &cell{}
	for _, s := range []sample{
		{res: result{Requests: 1000, RPS: 300, P50: 3 * time.Millisecond, P99: 9 * time.Millisecond}, cpuTicks: 10},
		{res: result{Requests: 3000, Errors: 2, RPS: 100, P50: 1 * time.Millisecond, P99: 7 * time.Millisecond}, cpuTicks: 30},
		{res: result{Requests: 2000, RPS: 200, P50: 2 * time.Millisecond, P99: 8 * time.Millisecond}, cpuTicks: 20},
	} {
		c.samples = append(c.samples, s)
	}
	if got := c.rps(); got != 200 {
		t.Errorf("median rps = %v, want 200", got)
	}
	if got := c.p50(); got != 2*time.Millisecond {
		t.Errorf("median p50 = %v, want 2ms", got)
	}
	req, errs, ticks := c.totals()
	if req != 6000 || errs != 2 || ticks != 60 {
		t.Errorf("totals = %d, %d, %d; want 6000, 2, 60", req, errs, ticks)
	}
	// 0.6 s / 6000 requests = 100 us per request = 100 millicores per 1k rps.
	if got := c.mcpuPer1k(); got != 100 {
		t.Errorf("mcpuPer1k = %v, want 100", got)
	}
	if lo, hi := c.rpsRange(); lo != 100 || hi != 300 {
		t.Errorf("rpsRange = %v, %v; want 100, 300", lo, hi)
	}
	even := &cell{samples: c.samples[:2]}
	if got := even.rps(); got != 200 {
		t.Errorf("median of two = %v, want 200 (mean of 100 and 300)", got)
	}
}

func TestParseWrk(t *testing.T) {
	out := `Running 2s test @ http://127.0.0.1:1/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.31ms    1.03ms  20.01ms   90.00%
    Req/Sec    27.7k     1.2k    29.0k    80.00%
  Latency Distribution
     50%    1.85ms
     75%    2.50ms
     90%    3.00ms
     99%  103.24ms
  57986 requests in 2.01s, 6.80MB read
  Non-2xx or 3xx responses: 986
  Socket errors: connect 1, read 2, write 0, timeout 3
Requests/sec:  28796.00
Transfer/sec:      3.38MB
`
	got, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	want := result{Requests: 57000, Errors: 992, RPS: 28796 * 57000.0 / 57986, P50: 1850 * time.Microsecond, P99: 103240 * time.Microsecond}
	if diff := cmp.Diff(want, got, cmpopts.EquateApprox(0, 1e-6)); diff != "" {
		t.Errorf("parseWrk mismatch (-want +got):\n%s", diff)
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused\n"); err == nil {
		t.Errorf("parseWrk(connection refused): got nil error, want one")
	}
}

func TestParseH2load(t *testing.T) {
	out := `starting benchmark...
finished in 2.00s, 17296.00 req/s, 1.10MB/s
requests: 34592 total, 34720 started, 34592 done, 34590 succeeded, 2 failed, 0 errored, 0 timeout
status codes: 34590 2xx, 0 3xx, 0 4xx, 2 5xx
time for request:      225us     21.18ms      7.31ms      1.33ms    82.11%
`
	got, err := parseH2load(out)
	if err != nil {
		t.Fatal(err)
	}
	want := result{Requests: 34590, Errors: 2, RPS: 17296 * 34590.0 / 34592}
	if diff := cmp.Diff(want, got, cmpopts.EquateApprox(0, 1e-6)); diff != "" {
		t.Errorf("parseH2load mismatch (-want +got):\n%s", diff)
	}
	if _, err := parseH2load("connect error\n"); err == nil {
		t.Errorf("parseH2load(no results): got nil error, want one")
	}
}

func TestParseGhz(t *testing.T) {
	out := `{"count":1010,"total":2000000000,"rps":505,
	"latencyDistribution":[{"percentage":50,"latency":3000000},{"percentage":99,"latency":9000000}],
	"statusCodeDistribution":{"OK":1000,"Unavailable":10},
	"errorDistribution":{"rpc error: code = Unavailable desc = error reading from server: read tcp: use of closed network connection":8,
	"rpc error: code = Unavailable desc = no healthy upstream":2}}`
	got, err := parseGhz([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	// The 8 calls cut by ghz closing its connections are not chain errors.
	want := result{Requests: 1000, Errors: 2, RPS: 500, P50: 3 * time.Millisecond, P99: 9 * time.Millisecond}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseGhz mismatch (-want +got):\n%s", diff)
	}
}

func TestParseFortio(t *testing.T) {
	out := `{"ActualQPS":1999.5,"ActualDuration":2000000000,
	"DurationHistogram":{"Count":4000,"Percentiles":[{"Percentile":50,"Value":0.000541},{"Percentile":99,"Value":0.0035}]},
	"RetCodes":{"200":3990,"503":10}}`
	got, err := parseFortio([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := result{Requests: 3990, Errors: 10, RPS: 1995, P50: 541 * time.Microsecond, P99: 3500 * time.Microsecond}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseFortio mismatch (-want +got):\n%s", diff)
	}
}

func TestConfigs(t *testing.T) {
	listen := addrs{H1: "127.0.0.1:1001", H2C: "127.0.0.1:1002", GRPC: "127.0.0.1:1003"}
	up := addrs{H1: "127.0.0.1:2001", H2C: "127.0.0.1:2002", GRPC: "127.0.0.1:2003"}
	tests := []struct {
		name string
		got  string
		want []string // fragments that must appear
	}{
		{"nginx", nginxConfig("/tmp/x", listen, up), []string{
			"worker_processes 1;", "daemon off;", "pid /tmp/x/nginx.pid;",
			"server 127.0.0.1:2001;", "keepalive 256;", "proxy_http_version 1.1;", `proxy_set_header Connection "";`,
			"listen 127.0.0.1:1001;", "listen 127.0.0.1:1002 http2;", "listen 127.0.0.1:1003 http2;",
			"grpc_pass grpc://up_h2c;", "grpc_pass grpc://up_grpc;", "keepalive_requests 100000000;",
		}},
		{"haproxy", haproxyConfig(listen, up), []string{
			"nbthread 1", "mode http", "http-reuse always",
			"bind 127.0.0.1:1001\n", "server s1 127.0.0.1:2001\n",
			"bind 127.0.0.1:1002 proto h2", "server s1 127.0.0.1:2002 proto h2",
			"bind 127.0.0.1:1003 proto h2", "server s1 127.0.0.1:2003 proto h2",
		}},
		{"caddy", caddyConfig(listen, up), []string{
			"admin off", "auto_https off", "protocols h1 h2c",
			"http://:1001 {\n    bind 127.0.0.1\n    reverse_proxy 127.0.0.1:2001 {",
			"http://:1002 {\n    bind 127.0.0.1\n    reverse_proxy h2c://127.0.0.1:2002 {",
			"http://:1003 {\n    bind 127.0.0.1\n    reverse_proxy h2c://127.0.0.1:2003 {",
		}},
		{"mesh model", meshModel(), []string{
			"kind: Service\nmetadata:\n  name: bench\n  namespace: default\nspec:\n  selector:\n    app: bench\n  ports:\n  - name: http\n    port: 8080\n    appProtocol: http\n",
			"  name: bench-h2c\n", "    app: bench-h2c\n", "    appProtocol: h2c\n",
			"  name: bench-grpc\n", "    app: bench-grpc\n", "    appProtocol: grpc\n",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, w := range tt.want {
				if !strings.Contains(tt.got, w) {
					t.Errorf("config does not contain %q; got:\n%s", w, tt.got)
				}
			}
		})
	}
	if n := strings.Count(meshModel(), "\n---\n"); n != 2 {
		t.Errorf("mesh model has %d document separators, want 2", n)
	}
}

// TestConfigsAccepted asks the installed proxies to check the rendered configs,
// when they are installed; this catches directives the packaged versions lack.
func TestConfigsAccepted(t *testing.T) {
	listen := addrs{H1: "127.0.0.1:1001", H2C: "127.0.0.1:1002", GRPC: "127.0.0.1:1003"}
	up := addrs{H1: "127.0.0.1:2001", H2C: "127.0.0.1:2002", GRPC: "127.0.0.1:2003"}
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// The mTLS configs name real certificate files: both proxies load them
	// when checking.
	certs, err := writeCerts(dir, certClient, certServer)
	if err != nil {
		t.Fatal(err)
	}
	server, client := hopTLS{role: roleServer, certs: certs}, hopTLS{role: roleClient, certs: certs}
	checks := []struct {
		name, tool string
		argv       []string
	}{
		{"nginx", "nginx", []string{"nginx", "-t", "-e", filepath.Join(dir, "e.log"), "-p", dir, "-c", write("nginx.conf", nginxConfig(dir, listen, up))}},
		{"nginx mTLS server", "nginx", []string{"nginx", "-t", "-e", filepath.Join(dir, "e.log"), "-p", dir, "-c", write("nginx-s.conf", nginxHop(dir, listen, up, server))}},
		{"nginx mTLS client", "nginx", []string{"nginx", "-t", "-e", filepath.Join(dir, "e.log"), "-p", dir, "-c", write("nginx-c.conf", nginxHop(dir, listen, up, client))}},
		{"haproxy", "haproxy", []string{"haproxy", "-c", "-f", write("haproxy.cfg", haproxyConfig(listen, up))}},
		{"haproxy mTLS server", "haproxy", []string{"haproxy", "-c", "-f", write("haproxy-s.cfg", haproxyHop(listen, up, server))}},
		{"haproxy mTLS client", "haproxy", []string{"haproxy", "-c", "-f", write("haproxy-c.cfg", haproxyHop(listen, up, client))}},
		{"caddy", "caddy", []string{"caddy", "adapt", "--adapter", "caddyfile", "--config", write("Caddyfile", caddyConfig(listen, up))}},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if _, err := exec.LookPath(c.tool); err != nil {
				t.Skipf("%s not installed (.ci/install-bench-tools.sh)", c.tool)
			}
			cmd := exec.Command(c.argv[0], c.argv[1:]...)
			cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%v: %v\n%s", c.argv, err, out)
			}
		})
	}
}

func TestHealthProtoset(t *testing.T) {
	b, err := healthProtoset()
	if err != nil {
		t.Fatal(err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(b, &set); err != nil {
		t.Fatal(err)
	}
	if len(set.File) != 1 || set.File[0].GetPackage() != "grpc.health.v1" || len(set.File[0].Service) != 1 {
		t.Fatalf("protoset = %v, want one file of package grpc.health.v1 with one service", &set)
	}
	if got := set.File[0].Service[0].GetName(); got != "Health" {
		t.Errorf("service = %q, want Health", got)
	}
}

func TestWriteJSON(t *testing.T) {
	r := newReport([]string{chainDir})
	r.add(testGRPC, chainDir, sample{res: result{Requests: 10, RPS: 5, P50: time.Millisecond}, cpuTicks: 3})
	var b bytes.Buffer
	if err := r.writeJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got jsonReport
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("unmarshal %s: %v", b.Bytes(), err)
	}
	want := []jsonSample{{Test: testGRPC, Chain: chainDir, Round: 1, Requests: 10, RPS: 5, P50ns: 1e6, CPUTicks: 3}}
	if diff := cmp.Diff(want, got.Samples); diff != "" {
		t.Errorf("samples mismatch (-want +got):\n%s", diff)
	}

	back, err := reportFromJSON(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if err := back.writeJSON(&again); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(b.String(), again.String()); diff != "" {
		t.Errorf("JSON round trip mismatch (-want +got):\n%s", diff)
	}
}

func TestWriteDoc(t *testing.T) {
	r := newReport([]string{chainDir, "meshproxy", chainNgx})
	r.Command = "go run ./bench"
	r.add(testH1, chainDir, sample{res: result{Requests: 100, RPS: 30000}})
	r.add(testH1, chainNgx, sample{res: result{Requests: 100, RPS: 24000}, cpuTicks: 100})
	r.add(testH1, "meshproxy", sample{res: result{Requests: 100, RPS: 12000}, cpuTicks: 50})
	r.Mem[chainNgx] = memRow{ClientIdle: 1024, ClientPeak: 2048, ServerIdle: 1024, ServerPeak: 2048}
	var b bytes.Buffer
	r.writeDoc(&b)
	doc := b.String()
	for _, w := range []string{
		"```\ngo run ./bench\n```",
		"| direct | 30000 | 1.00x | 1.25x |",
		"| meshproxy | 12000 | 0.40x | 0.50x |",
		"| nginx | 24000 | 0.80x | 1.00x |",
		"| nginx | n/a | n/a | n/a | n/a | 10000.0 | 1.00x |",
		"| meshproxy | n/a | n/a | n/a | n/a | 5000.0 | 0.50x |",
		"| nginx | 1.0 MiB | 2.0 MiB | 1.0 MiB | 2.0 MiB | 4.0 MiB | 1.00x |",
	} {
		if !strings.Contains(doc, w) {
			t.Errorf("doc does not contain %q; got:\n%s", w, doc)
		}
	}
}

func TestWritePageKeepsHandWrittenPart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "page.md")
	old := "# old tables\n\n" + handWrittenMarker + "\n\n## Analysis\nkept\n"
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writePage(path, []byte("# new tables\n")); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	want := "# new tables\n\n" + handWrittenMarker + "\n\n## Analysis\nkept\n"
	if string(got) != want {
		t.Errorf("page = %q, want %q", got, want)
	}
}

func TestWriteMTLS(t *testing.T) {
	// haproxy-mtls without plaintext haproxy: no cost row, but a comparison column.
	r := newReport([]string{chainDir, chainMesh, chainMeshTL, chainNgx, chainNgxTLS, chainHAPTLS})
	for ch, rps := range map[string]float64{chainDir: 40000, chainMesh: 10000, chainMeshTL: 8000, chainNgx: 20000, chainNgxTLS: 16000, chainHAPTLS: 32000} {
		r.add(testH1, ch, sample{res: result{Requests: 100, RPS: rps}, cpuTicks: 10})
		r.add(testFixed, ch, sample{res: result{Requests: 100, RPS: 2000, P50: time.Duration(1e9 / rps)}, cpuTicks: uint64(4e5 / rps)})
	}
	r.Mem[chainMesh] = memRow{ClientPeak: 1024, ServerPeak: 1024}
	r.Mem[chainMeshTL] = memRow{ClientPeak: 2048, ServerPeak: 1024}
	r.Mem[chainNgxTLS] = memRow{ClientPeak: 1024, ServerPeak: 2048}
	var b bytes.Buffer
	r.writeTables(&b)
	doc := b.String()
	for _, w := range []string{
		// cost of mTLS: mTLS / plaintext.
		"| meshproxy | 0.80x | n/a | n/a | 1.25x | n/a | 1.25x | n/a | 1.50x |\n",
		"| nginx | 0.80x | n/a | n/a | 1.25x | n/a | 1.25x | n/a | n/a |\n",
		"| | meshproxy-mtls | nginx-mtls | haproxy-mtls | meshproxy-mtls vs nginx-mtls | meshproxy-mtls vs haproxy-mtls |\n",
		"| HTTP/1.1 rps (wrk) | 8000 | 16000 | 32000 | 0.50x | 0.25x |\n",
		"| HTTP/1.1 p50 at 2000 rps | 0.125 ms | 0.062 ms | 0.031 ms | 2.00x | 4.00x |\n",
		"| peak memory, both proxies | 3.0 MiB | 3.0 MiB | n/a | 1.00x | n/a |\n",
		// The summary compares mTLS chains with nginx-mtls.
		"**meshproxy-mtls**: throughput vs nginx-mtls 0.50x (HTTP/1.1)",
		"**meshproxy**: throughput vs nginx 0.50x (HTTP/1.1)",
	} {
		if !strings.Contains(doc, w) {
			t.Errorf("tables do not contain %q; got:\n%s", w, doc)
		}
	}
	if strings.Contains(doc, "| haproxy | ") {
		t.Errorf("cost table has a haproxy row without a plaintext haproxy chain:\n%s", doc)
	}
}
