package e2e

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// loadOptions describe the traffic a load generator sends: GET http://target/path
// with Host set to host (the service name, as an app behind a sidecar would).
type loadOptions struct {
	target  string // the client sidecar's outbound address
	host    string
	path    string // default "/"
	header  http.Header
	workers int // concurrent keep-alive clients; default 8
}

// load is a bounded load generator: workers each with their own keep-alive
// connection send requests back to back until stop. A request that is in flight
// when stop is called is allowed to finish (bounded by the client timeout), so
// stopping never counts as a failure.
type load struct {
	opts     loadOptions
	stopping atomic.Bool
	wg       sync.WaitGroup
	clients  []*http.Client

	ok     atomic.Int64
	failed atomic.Int64

	mu       sync.Mutex
	versions map[string]int64 // successes per reply.Version, guarded by mu
	// instances counts successes per reply.Instance, guarded by mu.
	instances map[string]int64
	// callers counts successes per x-forwarded-client-cert the backend saw,
	// guarded by mu: each client certificate the caller presented shows up
	// as its own Hash.
	callers map[string]int64
	// first and last failure details, guarded by mu; last is a ring.
	firstFailures, lastFailures []failure
}

// failure is one failed request: n counts failures from 1.
type failure struct {
	n      int64
	detail string
}

// loadStats is a copy of a load generator's counters at one moment.
type loadStats struct {
	OK, Failed int64
	Versions   map[string]int64
	Instances  map[string]int64
	Callers    map[string]int64 // by XFCC value
	// Failures holds the details of the first and the last few failures.
	Failures []failure
}

func (s loadStats) total() int64 { return s.OK + s.Failed }

// share returns the fraction of successful requests answered by version.
func (s loadStats) share(version string) float64 {
	if s.OK == 0 {
		return 0
	}
	return float64(s.Versions[version]) / float64(s.OK)
}

// sub returns s minus an earlier snapshot: the counts of the window between them.
func (s loadStats) sub(earlier loadStats) loadStats {
	d := loadStats{OK: s.OK - earlier.OK, Failed: s.Failed - earlier.Failed, Versions: map[string]int64{}, Instances: map[string]int64{}}
	for _, f := range s.Failures {
		if f.n > earlier.Failed {
			d.Failures = append(d.Failures, f)
		}
	}
	for k, v := range s.Versions {
		if n := v - earlier.Versions[k]; n != 0 {
			d.Versions[k] = n
		}
	}
	for k, v := range s.Instances {
		if n := v - earlier.Instances[k]; n != 0 {
			d.Instances[k] = n
		}
	}
	return d
}

func (s loadStats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ok=%d failed=%d versions=%v instances=%v", s.OK, s.Failed, s.Versions, s.Instances)
	for i, f := range s.Failures {
		if i > 0 && f.n > s.Failures[i-1].n+1 {
			b.WriteString("\n  ...")
		}
		fmt.Fprintf(&b, "\n  failure #%d: %s", f.n, f.detail)
	}
	return b.String()
}

const maxFailureDetails = 10

func startLoad(t *testing.T, o loadOptions) *load {
	t.Helper()
	if o.workers == 0 {
		o.workers = 8
	}
	if o.path == "" {
		o.path = "/"
	}
	l := &load{opts: o, versions: map[string]int64{}, instances: map[string]int64{}, callers: map[string]int64{}}
	for range o.workers {
		c := &http.Client{
			Timeout:   10 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true},
		}
		l.clients = append(l.clients, c)
		l.wg.Add(1)
		go l.work(c)
	}
	// Stop on test end too, so that a failed assertion does not leak workers.
	t.Cleanup(func() { l.stop() })
	return l
}

func (l *load) work(c *http.Client) {
	defer l.wg.Done()
	url := "http://" + l.opts.target + l.opts.path
	for !l.stopping.Load() {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			l.fail(err.Error())
			return
		}
		req.Host = l.opts.host
		for k, vs := range l.opts.header {
			req.Header[k] = vs
		}
		rep, err := doReply(c, req)
		if err != nil {
			l.fail(err.Error())
			continue
		}
		l.mu.Lock() // ok with the maps, so that stats sees them agree
		l.ok.Add(1)
		l.versions[rep.Version]++
		l.instances[rep.Instance]++
		l.callers[rep.XFCC]++
		l.mu.Unlock()
	}
}

func (l *load) fail(detail string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := failure{n: l.failed.Add(1), detail: time.Now().UTC().Format("15:04:05.000 ") + detail}
	if len(l.firstFailures) < maxFailureDetails {
		l.firstFailures = append(l.firstFailures, f)
		return
	}
	// n grows by one per call (under mu), so i cycles 0..max-1 from the first
	// failure after firstFailures filled up: a ring of the latest.
	if i := int((f.n - maxFailureDetails - 1) % maxFailureDetails); i < len(l.lastFailures) {
		l.lastFailures[i] = f
	} else {
		l.lastFailures = append(l.lastFailures, f)
	}
}

// doReply sends req and decodes a backend reply; anything but a 2xx with a reply
// body is an error that says what came back.
func doReply(c *http.Client, req *http.Request) (reply, error) {
	var rep reply
	resp, err := c.Do(req)
	if err != nil {
		return rep, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return rep, fmt.Errorf("%s: reading body: %w", resp.Status, err)
	}
	if resp.StatusCode/100 != 2 {
		return rep, fmt.Errorf("%s x-meshproxy-error=%q body=%.200q", resp.Status, resp.Header.Get("x-meshproxy-error"), body)
	}
	if err := json.Unmarshal(body, &rep); err != nil {
		return rep, fmt.Errorf("%s: decoding %.200q: %w", resp.Status, body, err)
	}
	return rep, nil
}

func (l *load) stats() loadStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Read the counters under mu so that OK and Versions agree.
	failures := append(slices.Clone(l.firstFailures), l.lastFailures...)
	slices.SortFunc(failures, func(a, b failure) int { return cmp.Compare(a.n, b.n) })
	return loadStats{
		OK: l.ok.Load(), Failed: l.failed.Load(),
		Versions: maps.Clone(l.versions), Instances: maps.Clone(l.instances),
		Callers: maps.Clone(l.callers), Failures: failures,
	}
}

// stop ends the load, waits for in-flight requests, closes the connections and
// returns the final counts. It may be called more than once.
func (l *load) stop() loadStats {
	l.stopping.Store(true)
	l.wg.Wait()
	for _, c := range l.clients {
		c.CloseIdleConnections()
	}
	return l.stats()
}

// waitTotal waits until at least n requests have completed since from and
// returns the window's counts.
func (l *load) waitTotal(t *testing.T, from loadStats, n int64, timeout time.Duration) loadStats {
	t.Helper()
	return l.waitWindow(t, fmt.Sprintf("%d requests", n), n, timeout, func(loadStats) bool { return true }, from)
}

// during keeps the load running for d and returns the window's counts. It is for
// tests whose point is steady traffic over a span of time (across pushes that
// may come at any moment in it), not for waiting for a state.
func (l *load) during(t *testing.T, d time.Duration) loadStats {
	t.Helper()
	from := l.stats()
	timer := time.NewTimer(d)
	defer timer.Stop()
	<-timer.C
	return l.stats().sub(from)
}

// waitWindow watches consecutive windows of at least n requests and returns the
// first one for which ok holds; it fails the test at the deadline, printing the
// last window. The first window starts at from.
func (l *load) waitWindow(t *testing.T, what string, n int64, timeout time.Duration, ok func(loadStats) bool, from loadStats) loadStats {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	start := from
	var last loadStats
	for {
		select {
		case <-deadline.C:
			t.Fatalf("no window of %d requests with %s within %v; last window: %v; since start: %v", n, what, timeout, last, l.stats())
		case <-tick.C:
		}
		now := l.stats()
		w := now.sub(start)
		if w.total() < n {
			continue
		}
		if ok(w) {
			return w
		}
		last, start = w, now
	}
}

// probe sends single GETs to target with Host host until every version in want
// has answered, tolerating errors meanwhile (endpoints register as sidecars
// connect). It fails the test at the deadline with the last error.
func probe(t *testing.T, target, host string, timeout time.Duration, want ...string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	seen := map[string]bool{}
	deadline := time.Now().Add(timeout)
	lastErr := "none"
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequest(http.MethodGet, "http://"+target+"/", nil)
		req.Host = host
		rep, err := doReply(c, req)
		if err != nil {
			lastErr = err.Error()
		} else {
			seen[rep.Version] = true
		}
		missing := false
		for _, v := range want {
			if !seen[v] {
				missing = true
			}
		}
		if !missing {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET http://%s/ with Host %q: versions %v never all answered within %v (seen %v, last error: %s)", target, host, want, timeout, seen, lastErr)
		}
		<-tick.C
	}
}

// TestLoadGenerator checks the harness itself, without the binaries: successes
// and versions are counted against a live backend, and once the backend is gone
// failures are counted with their details.
func TestLoadGenerator(t *testing.T) {
	ip := newIP(t)
	b := startHTTPBackend(t, ip, backendID{service: "backend", version: "v7", instance: "i7"}, false)
	l := startLoad(t, loadOptions{target: b.addr, host: "backend", workers: 2})
	w := l.waitTotal(t, loadStats{}, 200, 10*time.Second)
	if w.Failed != 0 || w.Versions["v7"] != w.OK || w.Instances["i7"] != w.OK {
		t.Errorf("against a live backend: got %v, want every request ok from v7/i7", w)
	}
	b.close()
	w = l.waitWindow(t, "failures", 10, 10*time.Second, func(w loadStats) bool { return w.Failed > 0 }, l.stats())
	s := l.stop()
	if len(s.Failures) == 0 || s.Failed < w.Failed {
		t.Errorf("after the backend closed: got %v, want failures with details", s)
	}
	if again := l.stop(); again.total() != s.total() {
		t.Errorf("second stop: total %d, want %d (no requests after stop)", again.total(), s.total())
	}
}
