package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Test names, in the order they run and are reported.
const (
	testH1    = "http1"      // wrk, HTTP/1.1 keep-alive, saturation
	testH2C   = "h2c"        // h2load, saturation
	testGRPC  = "grpc"       // ghz, unary, saturation
	testFixed = "fixed"      // fortio, HTTP/1.1 at a fixed rate
	testFixG  = "fixed-grpc" // ghz, gRPC unary at a fixed rate
	chainDir  = "direct"     // no proxy: the baseline
	chainNgx  = "nginx"      // the reference proxy chain
	chainMesh = "meshproxy"

	// mtlsSuffix marks a chain whose middle hop is mutual TLS; the chain without
	// the suffix is the same proxy in plaintext.
	mtlsSuffix  = "-mtls"
	chainNgxTLS = chainNgx + mtlsSuffix // the reference mTLS chain
	chainHAPTLS = "haproxy" + mtlsSuffix
	chainMeshTL = chainMesh + mtlsSuffix
	// chainMeshNoM is the plaintext meshproxy chain with --metrics=false: run
	// it beside chainMesh to see what recording metrics costs.
	chainMeshNoM = chainMesh + "-nometrics"
)

var allTests = []string{testH1, testH2C, testGRPC, testFixed, testFixG}

// allChains are the chains a run has by default, in order.
var allChains = []string{chainDir, chainMesh, chainMeshTL, chainNgx, chainNgxTLS, "haproxy", chainHAPTLS, "caddy"}

// knownChains are the chains --chains accepts: the default ones and variants
// for a focused comparison.
var knownChains = append(slices.Clone(allChains), chainMeshNoM)

// sample is one measurement of one chain in one test.
type sample struct {
	res      result
	cpuTicks uint64 // both proxies, utime+stime, over the measurement
}

// cell collects the samples of one (test, chain) pair across rounds.
type cell struct {
	samples []sample
}

// rps is the median throughput over rounds.
func (c *cell) rps() float64 {
	return median(c.samples, func(s sample) float64 { return s.res.RPS })
}

// rpsRange is the lowest and highest throughput over rounds: the noise.
func (c *cell) rpsRange() (lo, hi float64) {
	for i, s := range c.samples {
		if i == 0 || s.res.RPS < lo {
			lo = s.res.RPS
		}
		if s.res.RPS > hi {
			hi = s.res.RPS
		}
	}
	return lo, hi
}

// p50 and p99 are the medians over rounds of each round's percentile.
func (c *cell) p50() time.Duration {
	return time.Duration(median(c.samples, func(s sample) float64 { return float64(s.res.P50) }))
}

func (c *cell) p99() time.Duration {
	return time.Duration(median(c.samples, func(s sample) float64 { return float64(s.res.P99) }))
}

// totals sums requests, errors and CPU ticks over rounds.
func (c *cell) totals() (req, errs int64, ticks uint64) {
	for _, s := range c.samples {
		req += s.res.Requests
		errs += s.res.Errors
		ticks += s.cpuTicks
	}
	return req, errs, ticks
}

// mcpuPer1k is proxy CPU in millicores per 1,000 requests/s: CPU seconds per
// request times 1e6 (1,000 rps times 1,000 millicores per core).
func (c *cell) mcpuPer1k() float64 {
	req, _, ticks := c.totals()
	return mcpuPer1k(ticks, req)
}

func mcpuPer1k(ticks uint64, requests int64) float64 {
	if requests <= 0 {
		return 0
	}
	return float64(ticks) * 1e6 / (clockTicks * float64(requests))
}

// median of f over samples; the mean of the middle two for even counts, 0 for none.
func median(samples []sample, f func(sample) float64) float64 {
	if len(samples) == 0 {
		return 0
	}
	v := make([]float64, len(samples))
	for i, s := range samples {
		v[i] = f(s)
	}
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// ratio formats v/base as "1.23x"; "n/a" when either is missing (zero).
func ratio(v, base float64) string {
	if v == 0 || base == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", v/base)
}

// memRow is the resident memory of one chain's two proxies, in KiB.
type memRow struct {
	ClientIdle, ClientPeak int64
	ServerIdle, ServerPeak int64
}

// report holds everything one run measured and renders it.
type report struct {
	Command  string
	Started  time.Time
	Machine  []string // "key: value" lines
	Settings []string
	Notes    []string                    // skipped chains, errors seen
	Chains   []string                    // in report order, direct first
	Cells    map[string]map[string]*cell // test -> chain
	Mem      map[string]memRow           // chain -> memory
}

func newReport(chains []string) *report {
	r := &report{Chains: chains, Cells: map[string]map[string]*cell{}, Mem: map[string]memRow{}}
	for _, t := range allTests {
		r.Cells[t] = map[string]*cell{}
		for _, c := range chains {
			r.Cells[t][c] = &cell{}
		}
	}
	return r
}

// add records one measurement, creating the cell on first use.
func (r *report) add(test, chain string, s sample) {
	if r.Cells[test] == nil {
		r.Cells[test] = map[string]*cell{}
	}
	c := r.Cells[test][chain]
	if c == nil {
		c = &cell{}
		r.Cells[test][chain] = c
	}
	c.samples = append(c.samples, s)
}

// get returns the cell or an empty one, so that missing chains render as n/a.
func (r *report) get(test, chain string) *cell {
	if c := r.Cells[test][chain]; c != nil {
		return c
	}
	return &cell{}
}

func fmtRPS(v float64) string {
	if v == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f", v)
}

func fmtLat(d time.Duration) string {
	if d == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.3f ms", float64(d)/1e6)
}

func fmtMiB(kib int64) string {
	if kib == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MiB", float64(kib)/1024)
}

// summary is one line per proxy chain with the headline numbers: throughput
// and CPU against nginx, and the median latency the two proxies add to the
// direct path at the fixed rate.
func (r *report) summary() []string {
	var out []string
	added := func(test, ch string) string {
		c, d := r.get(test, ch).p50(), r.get(test, chainDir).p50()
		if c == 0 || d == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%+.2f ms", float64(c-d)/1e6)
	}
	for _, ch := range r.Chains {
		if ch == chainDir {
			continue
		}
		// mTLS chains are compared with nginx doing mTLS too.
		ref := chainNgx
		if strings.HasSuffix(ch, mtlsSuffix) && slices.Contains(r.Chains, chainNgxTLS) {
			ref = chainNgxTLS
		}
		vs := func(test string) string { return ratio(r.get(test, ch).rps(), r.get(test, ref).rps()) }
		cpu := func(test string) string { return ratio(r.get(test, ch).mcpuPer1k(), r.get(test, ref).mcpuPer1k()) }
		m, rm := r.Mem[ch], r.Mem[ref]
		out = append(out, fmt.Sprintf("**%s**: throughput vs %s %s (HTTP/1.1), %s (h2c), %s (gRPC); "+
			"p50 added to the direct path at %s: %s (HTTP/1.1), %s (gRPC); "+
			"proxy CPU vs %s %s (HTTP/1.1) and %s (gRPC) at that rate; peak memory of both proxies %s (%s %s).",
			ch, ref, vs(testH1), vs(testH2C), vs(testGRPC),
			r.rateLabel(), added(testFixed, ch), added(testFixG, ch),
			ref, cpu(testFixed), cpu(testFixG),
			fmtMiB(m.ClientPeak+m.ServerPeak), ratio(float64(m.ClientPeak+m.ServerPeak), float64(rm.ClientPeak+rm.ServerPeak)), ref))
	}
	return out
}

// mtlsPairs are the chains with an "-mtls" variant in the report whose
// plaintext chain is in the report too, as (plaintext, mTLS), in report order.
func (r *report) mtlsPairs() [][2]string {
	var out [][2]string
	for _, ch := range r.Chains {
		if plain, ok := strings.CutSuffix(ch, mtlsSuffix); ok && slices.Contains(r.Chains, plain) {
			out = append(out, [2]string{plain, ch})
		}
	}
	return out
}

// peak is the summed peak memory of a chain's two proxies, in KiB.
func (r *report) peak(ch string) float64 {
	m := r.Mem[ch]
	return float64(m.ClientPeak + m.ServerPeak)
}

// writeMTLS writes the two mTLS tables: each proxy with mTLS against itself in
// plaintext, and meshproxy-mtls against the other mTLS chains.
func (r *report) writeMTLS(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	if pairs := r.mtlsPairs(); len(pairs) > 0 {
		p("\n### The cost of mTLS: each proxy with mTLS between the two proxies / the same proxy in plaintext\n\n")
		p("Throughput: below 1.00x is the cost; latency, CPU and memory: above 1.00x is the cost.\n\n")
		p("| proxy | HTTP/1.1 rps | h2c rps | gRPC rps | HTTP/1.1 p50 at %[1]s | gRPC p50 at %[1]s | HTTP/1.1 CPU at %[1]s | gRPC CPU at %[1]s | peak memory |\n", r.rateLabel())
		p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, pr := range pairs {
			plain, tls := pr[0], pr[1]
			p("| %s", plain)
			for _, t := range []string{testH1, testH2C, testGRPC} {
				p(" | %s", ratio(r.get(t, tls).rps(), r.get(t, plain).rps()))
			}
			for _, t := range []string{testFixed, testFixG} {
				p(" | %s", ratio(float64(r.get(t, tls).p50()), float64(r.get(t, plain).p50())))
			}
			for _, t := range []string{testFixed, testFixG} {
				p(" | %s", ratio(r.get(t, tls).mcpuPer1k(), r.get(t, plain).mcpuPer1k()))
			}
			p(" | %s |\n", ratio(r.peak(tls), r.peak(plain)))
		}
	}

	if !slices.Contains(r.Chains, chainMeshTL) {
		return
	}
	var others []string
	for _, ch := range r.Chains {
		if ch != chainMeshTL && strings.HasSuffix(ch, mtlsSuffix) {
			others = append(others, ch)
		}
	}
	if len(others) == 0 {
		return
	}
	p("\n### %s against the other proxies with mTLS\n\n", chainMeshTL)
	p("| | %s", chainMeshTL)
	for _, o := range others {
		p(" | %s", o)
	}
	for _, o := range others {
		p(" | %s vs %s", chainMeshTL, o)
	}
	p(" |\n| ---%s |\n", strings.Repeat(" | ---:", 1+2*len(others)))
	row := func(label string, f func(ch string) float64, format func(float64) string) {
		p("| %s | %s", label, format(f(chainMeshTL)))
		for _, o := range others {
			p(" | %s", format(f(o)))
		}
		for _, o := range others {
			p(" | %s", ratio(f(chainMeshTL), f(o)))
		}
		p(" |\n")
	}
	lat := func(v float64) string { return fmtLat(time.Duration(v)) }
	cpu := func(v float64) string {
		if v == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.1f mcores", v)
	}
	mib := func(v float64) string { return fmtMiB(int64(v)) }
	row("HTTP/1.1 rps (wrk)", func(ch string) float64 { return r.get(testH1, ch).rps() }, fmtRPS)
	row("h2c rps (h2load)", func(ch string) float64 { return r.get(testH2C, ch).rps() }, fmtRPS)
	row("gRPC rps (ghz)", func(ch string) float64 { return r.get(testGRPC, ch).rps() }, fmtRPS)
	for _, fx := range []struct{ test, name string }{{testFixed, "HTTP/1.1"}, {testFixG, "gRPC"}} {
		row(fx.name+" p50 at "+r.rateLabel(), func(ch string) float64 { return float64(r.get(fx.test, ch).p50()) }, lat)
		row(fx.name+" p99 at "+r.rateLabel(), func(ch string) float64 { return float64(r.get(fx.test, ch).p99()) }, lat)
		row(fx.name+" CPU per 1,000 rps", func(ch string) float64 { return r.get(fx.test, ch).mcpuPer1k() }, cpu)
	}
	row("peak memory, both proxies", r.peak, mib)
}

// rateLabel is the achieved rate of the direct path in the fixed-rate test,
// rounded to 100, or "the fixed rate" if unknown.
func (r *report) rateLabel() string {
	v := r.get(testFixed, chainDir).rps()
	if v == 0 {
		return "the fixed rate"
	}
	return fmt.Sprintf("%.0f rps", math.Round(v/100)*100)
}

// writeTables writes the result tables as Markdown.
func (r *report) writeTables(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }

	p("### Summary\n\n")
	for _, l := range r.summary() {
		p("- %s\n", l)
	}
	p("\n")

	p("### Throughput at saturation (requests/s, median of rounds)\n\n")
	p("| chain | HTTP/1.1 (wrk) | vs direct | vs nginx | h2c (h2load) | vs direct | vs nginx | gRPC unary (ghz) | vs direct | vs nginx |\n")
	p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, ch := range r.Chains {
		p("| %s", ch)
		for _, t := range []string{testH1, testH2C, testGRPC} {
			v := r.get(t, ch).rps()
			p(" | %s | %s | %s", fmtRPS(v), ratio(v, r.get(t, chainDir).rps()), ratio(v, r.get(t, chainNgx).rps()))
		}
		p(" |\n")
	}

	p("\nSpread over rounds (lowest - highest requests/s), a measure of the noise:\n\n")
	p("| chain | HTTP/1.1 | h2c | gRPC |\n| --- | ---: | ---: | ---: |\n")
	for _, ch := range r.Chains {
		p("| %s", ch)
		for _, t := range []string{testH1, testH2C, testGRPC} {
			lo, hi := r.get(t, ch).rpsRange()
			p(" | %s - %s", fmtRPS(lo), fmtRPS(hi))
		}
		p(" |\n")
	}

	for _, fx := range []struct{ test, title string }{
		{testFixed, "HTTP/1.1 keep-alive (fortio)"},
		{testFixG, "gRPC unary (ghz --rps)"},
	} {
		p("\n### Latency at a fixed rate: %s\n\n", fx.title)
		p("| chain | achieved rps | p50 | vs direct | vs nginx | p99 | vs direct | vs nginx |\n")
		p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, ch := range r.Chains {
			c, d, n := r.get(fx.test, ch), r.get(fx.test, chainDir), r.get(fx.test, chainNgx)
			p("| %s | %s | %s | %s | %s | %s | %s | %s |\n", ch, fmtRPS(c.rps()),
				fmtLat(c.p50()), ratio(float64(c.p50()), float64(d.p50())), ratio(float64(c.p50()), float64(n.p50())),
				fmtLat(c.p99()), ratio(float64(c.p99()), float64(d.p99())), ratio(float64(c.p99()), float64(n.p99())))
		}
	}

	p("\n### Saturation latency (median of rounds; h2load reports no percentiles)\n\n")
	p("| chain | HTTP/1.1 p50 | HTTP/1.1 p99 | gRPC p50 | gRPC p99 |\n")
	p("| --- | ---: | ---: | ---: | ---: |\n")
	for _, ch := range r.Chains {
		h, g := r.get(testH1, ch), r.get(testGRPC, ch)
		p("| %s | %s | %s | %s | %s |\n", ch, fmtLat(h.p50()), fmtLat(h.p99()), fmtLat(g.p50()), fmtLat(g.p99()))
	}

	p("\n### Proxy CPU (both proxies, millicores per 1,000 requests/s; lower is better)\n\n")
	p("| chain | HTTP/1.1 fixed rate | vs nginx | gRPC fixed rate | vs nginx | HTTP/1.1 saturated | vs nginx | h2c saturated | vs nginx | gRPC saturated | vs nginx |\n")
	p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, ch := range r.Chains {
		if ch == chainDir {
			p("| %s | no proxy | | | | | | | | | |\n", ch)
			continue
		}
		p("| %s", ch)
		for _, t := range []string{testFixed, testFixG, testH1, testH2C, testGRPC} {
			v := r.get(t, ch).mcpuPer1k()
			s := "n/a"
			if v > 0 {
				s = fmt.Sprintf("%.1f", v)
			}
			p(" | %s | %s", s, ratio(v, r.get(t, chainNgx).mcpuPer1k()))
		}
		p(" |\n")
	}

	p("\n### Proxy memory (resident set; idle = VmRSS before any load, peak = VmHWM after the run)\n\n")
	p("| chain | client-side idle | client-side peak | server-side idle | server-side peak | both peak | vs nginx |\n")
	p("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	ngx := r.Mem[chainNgx]
	for _, ch := range r.Chains {
		if ch == chainDir {
			p("| %s | no proxy | | | | | |\n", ch)
			continue
		}
		m := r.Mem[ch]
		both := m.ClientPeak + m.ServerPeak
		p("| %s | %s | %s | %s | %s | %s | %s |\n", ch, fmtMiB(m.ClientIdle), fmtMiB(m.ClientPeak),
			fmtMiB(m.ServerIdle), fmtMiB(m.ServerPeak), fmtMiB(both), ratio(float64(both), float64(ngx.ClientPeak+ngx.ServerPeak)))
	}

	r.writeMTLS(w)

	p("\n### Errors (failed requests summed over rounds; should all be 0)\n\n")
	p("| chain | HTTP/1.1 | h2c | gRPC | HTTP/1.1 fixed rate | gRPC fixed rate |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, ch := range r.Chains {
		p("| %s", ch)
		for _, t := range []string{testH1, testH2C, testGRPC, testFixed, testFixG} {
			req, errs, _ := r.get(t, ch).totals()
			p(" | %d of %d", errs, req+errs)
		}
		p(" |\n")
	}
}

// writeDoc writes the whole docs/benchmarks.md page: how to run it, the machine,
// the tables and how to read them.
func (r *report) writeDoc(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("# Benchmarks: meshproxy against nginx, HAProxy and Caddy\n\n")
	p("This page is generated by `go run ./bench` (source: [`bench/`](../bench)); re-run it to refresh the numbers.\n\n")
	p("## What is measured\n\n")
	p("The same load goes to a Go backend directly and through chains of two proxies, the shape of a\n")
	p("sidecar-to-sidecar call: load generator -> proxy 1 (client side) -> proxy 2 (server side) -> backend.\n")
	p("Each proxy runs once in plaintext and once (`-mtls`) with mutual TLS between the two proxies.\n\n")
	p("- **direct**: no proxy, the baseline.\n")
	p("- **meshproxy**: a real `controlplane` with a model directory the bench writes, a client-side `meshproxy`\n")
	p("  (outbound listener, Host `bench`) and a server-side `meshproxy` (inbound listener -> backend), configured\n")
	p("  over ADS. Sidecar to sidecar is HTTP/2 (h2c) as in the mesh; the inbound hop speaks the Service's\n")
	p("  `appProtocol`. A sidecar has one inbound listener and one app address, so there is one Service and one\n")
	p("  server-side sidecar per protocol (`bench` http, `bench-h2c` h2c, `bench-grpc` grpc), all in front of the same backend.\n")
	p("  A test's CPU counts the client sidecar and that protocol's server sidecar; server-side memory is the\n")
	p("  largest of the three. mTLS is on by default in the mesh; this chain turns it off mesh-wide with a\n")
	p("  `PeerAuthentication` (`mtls.mode: DISABLE`) in the root namespace `tinymesh-system`.\n")
	p("- **meshproxy-mtls**: the same sidecars with the mesh's default mode, STRICT ([identity.md](identity.md)):\n")
	p("  the control plane runs its own CA (`--data-dir`), each sidecar gets its X.509-SVID with a join token\n")
	p("  (`controlplane token create`, `meshproxy --join-token`) and its trust bundle over SDS. Sidecar to sidecar\n")
	p("  is TLS 1.3 with ALPN `h2`, both certificates verified, for every test (the sidecar hop is always HTTP/2);\n")
	p("  the server sidecar checks the client's SPIFFE ID only against the CA (no `AuthorizationPolicy`), and\n")
	p("  the client sidecar checks the server's URI SAN. The chain's check before measuring reads the\n")
	p("  `x-forwarded-client-cert` header the server sidecar sets (the bench backend answers it on a probe path).\n")
	p("- **nginx**, **haproxy**, **caddy**: Debian packages, two processes each, reverse proxies with keep-alive\n")
	p("  upstreams. HTTP/1.1 test: HTTP/1.1 on every hop. h2c and gRPC tests: HTTP/2 prior knowledge on every hop\n")
	p("  (nginx `listen ... http2` + `grpc_pass`, its only HTTP/2 upstream; HAProxy `proto h2`; Caddy `h2c://`).\n")
	p("  Debian 12 ships nginx 1.22, which predates `http2 on` (1.25.1), hence `listen ... http2`.\n")
	p("  The rendered configs are in `bench/configs.go`; `go run ./bench --keep-tmp` keeps them with the logs.\n")
	p("- **nginx-mtls**, **haproxy-mtls**: the same two chains with mutual TLS 1.3 between the proxies; the\n")
	p("  generator -> client-side proxy and server-side proxy -> backend legs stay plaintext, as with a sidecar.\n")
	p("  At start the bench makes a throwaway CA and two SPIFFE-style leaves with crypto/x509 (ECDSA P-256, URI\n")
	p("  SAN `spiffe://cluster.local/ns/default/sa/bench-client` and `.../sa/bench-server`; the server's also has\n")
	p("  the DNS SAN `bench-server`, since nginx and HAProxy check an upstream's name against DNS SANs only).\n")
	p("  The server side requires and verifies the client certificate against the CA (nginx `ssl_verify_client\n")
	p("  on`, HAProxy `verify required`; neither can match a URI SAN); the client side presents its certificate\n")
	p("  and verifies the server's (`proxy_ssl_verify`/`grpc_ssl_verify` with `*_ssl_name`, HAProxy `verify\n")
	p("  required verifyhost`). Middle hop, HTTP/1.1 test: HTTP/1.1 over TLS in both (nginx `proxy_pass\n")
	p("  https://`, HAProxy `ssl` server without ALPN); h2c and gRPC tests: HTTP/2 over TLS, ALPN `h2` (nginx\n")
	p("  `grpc_pass grpcs://`, HAProxy `alpn h2` on the server and bind lines). Before measuring, the bench checks\n")
	p("  that the server-side proxy serves a client with the bench client certificate over TLS 1.3 (HTTP/2 on the\n")
	p("  h2c and gRPC ports) and refuses one without a certificate and one in plaintext; `go test ./bench`\n")
	p("  checks what the client-side proxies speak on that hop against a Go TLS server.\n")
	p("  All connections are kept alive, so handshakes are rare: the mTLS chains mostly measure record\n")
	p("  encryption and the TLS layer's buffering. OpenSSL prefers AES-256-GCM, Go AES-128-GCM.\n\n")
	p("Tests, each run for every chain in turn (round-robin, several short rounds so drift hits all chains alike):\n\n")
	p("- HTTP/1.1 keep-alive throughput at saturation: `wrk`.\n")
	p("- h2c throughput at saturation: `h2load`, several concurrent streams per connection.\n")
	p("- gRPC unary throughput at saturation: `ghz`, `grpc.health.v1.Health/Check`.\n")
	p("- Latency at a fixed 2,000 requests/s: HTTP/1.1 keep-alive with `fortio load -qps 2000`, gRPC unary\n")
	p("  with `ghz --rps 2000`.\n")
	p("- Proxy CPU: utime+stime of both proxies (and their children) from `/proc/<pid>/stat` over each\n")
	p("  measurement, divided by the successful requests, shown as millicores per 1,000 requests/s.\n")
	p("- Proxy memory: VmRSS of each proxy before any load, VmHWM (peak) after the run, from `/proc/<pid>/status`.\n\n")
	p("Pinning on a 2-core machine: load generator and client-side proxy on CPU 0, backend and server-side\n")
	p("proxy on CPU 1 (`taskset -c`); one worker per proxy (nginx `worker_processes 1`, HAProxy `nbthread 1`,\n")
	p("Caddy and meshproxy `GOMAXPROCS=1`).\n\n")
	p("## Command\n\n```\n%s\n```\n\n", r.Command)
	p("Settings:\n\n")
	for _, s := range r.Settings {
		p("- %s\n", s)
	}
	p("\nTools: install with `.ci/install-bench-tools.sh` (apt: wrk, nghttp2-client, nginx, haproxy, caddy;\n")
	p("`go install` ghz and fortio). `go run ./bench -h` lists the flags (`--quick` is a smoke run of about 3 minutes).\n")
	p("`--json FILE` also saves every sample; `go run ./bench --render FILE` re-renders this page from such a file\n")
	p("without measuring (the samples of the run below are in `bench/results/`).\n\n")
	p("## Machine\n\n")
	for _, m := range r.Machine {
		p("- %s\n", m)
	}
	p("\n## Results (run of %s)\n\n", r.Started.UTC().Format("2006-01-02 15:04 UTC"))
	if len(r.Notes) > 0 {
		for _, n := range r.Notes {
			p("> %s\n>\n", n)
		}
		p("\n")
	}
	r.writeTables(w)
	p("\n## How to read this\n\n")
	p("- \"vs direct\" divides by the direct path and \"vs nginx\" by the nginx chain. For throughput higher is\n")
	p("  better, so a meshproxy \"vs nginx\" of 1.10x means 10%% more requests/s than two nginx; for latency, CPU\n")
	p("  and memory lower is better, so 0.90x is 10%% less.\n")
	p("- In the main tables the `-mtls` chains are also divided by plaintext nginx; the summary compares\n")
	p("  them with nginx-mtls, and the two mTLS tables compare each with its plaintext self (the cost of mTLS)\n")
	p("  and meshproxy-mtls with the other proxies doing mTLS.\n")
	p("- The saturation tests measure the whole machine: with two cores the load generator shares CPU 0\n")
	p("  with the client-side proxy, so a proxy that needs less CPU leaves more to the generator and the\n")
	p("  backend. Compare chains with each other, not with published numbers of other machines.\n")
	p("- The fixed-rate latency is the number closest to what a sidecar adds to a real call: two extra\n")
	p("  hops at moderate load. p99 on a shared 2-core VM is noisy; look at differences of more than ~20%%.\n")
	p("  When \"achieved rps\" is below the target the generator fell behind (the machine was busy) and the\n")
	p("  latencies of that chain include queueing in the generator.\n")
	p("- CPU per 1,000 requests/s is what you would budget per sidecar pair; 100 millicores means a tenth\n")
	p("  of a core for the two proxies at 1,000 requests/s. The tick resolution of /proc is 10 ms, so short\n")
	p("  runs have about +-2 ticks of error per measurement.\n")
	p("- Errors should be zero; a chain with errors has throughput numbers that do not mean much. Calls that\n")
	p("  ghz itself cuts when it closes its connections at the end of a run are not counted as errors.\n")
	p("- Throughputs are medians over rounds; CPU is total CPU over total requests across rounds.\n")
}

// writeSummary writes a short plain-text header and the tables, for stdout.
func (r *report) writeSummary(w io.Writer) {
	fmt.Fprintf(w, "\n%s\n", strings.Repeat("=", 72))
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	r.writeTables(w)
}

// jsonSample is one measurement in the --json output.
type jsonSample struct {
	Test     string  `json:"test"`
	Chain    string  `json:"chain"`
	Round    int     `json:"round"`
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	RPS      float64 `json:"rps"`
	P50ns    int64   `json:"p50_ns,omitempty"`
	P99ns    int64   `json:"p99_ns,omitempty"`
	CPUTicks uint64  `json:"proxy_cpu_ticks"`
}

// jsonReport is the raw data of a run, for comparing runs with other tools.
type jsonReport struct {
	Command  string            `json:"command"`
	Started  time.Time         `json:"started"`
	Machine  []string          `json:"machine"`
	Settings []string          `json:"settings"`
	Notes    []string          `json:"notes,omitempty"`
	Samples  []jsonSample      `json:"samples"`
	Memory   map[string]memRow `json:"memory_kib"`
}

// writeJSON writes every sample and the memory figures as indented JSON.
func (r *report) writeJSON(w io.Writer) error {
	out := jsonReport{Command: r.Command, Started: r.Started, Machine: r.Machine, Settings: r.Settings,
		Notes: r.Notes, Memory: r.Mem, Samples: []jsonSample{}}
	for _, t := range allTests {
		for _, ch := range r.Chains {
			for i, s := range r.get(t, ch).samples {
				out.Samples = append(out.Samples, jsonSample{Test: t, Chain: ch, Round: i + 1,
					Requests: s.res.Requests, Errors: s.res.Errors, RPS: s.res.RPS,
					P50ns: int64(s.res.P50), P99ns: int64(s.res.P99), CPUTicks: s.cpuTicks})
			}
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// reportFromJSON is the inverse of writeJSON.
func reportFromJSON(b []byte) (*report, error) {
	var in jsonReport
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, err
	}
	r := newReport(nil)
	r.Command, r.Started, r.Machine, r.Settings, r.Notes = in.Command, in.Started, in.Machine, in.Settings, in.Notes
	if in.Memory != nil {
		r.Mem = in.Memory
	}
	for _, s := range in.Samples {
		if !slices.Contains(r.Chains, s.Chain) {
			r.Chains = append(r.Chains, s.Chain)
		}
		r.add(s.Test, s.Chain, sample{
			res:      result{Requests: s.Requests, Errors: s.Errors, RPS: s.RPS, P50: time.Duration(s.P50ns), P99: time.Duration(s.P99ns)},
			cpuTicks: s.CPUTicks,
		})
	}
	if len(r.Chains) == 0 {
		return nil, errors.New("no samples")
	}
	return r, nil
}
