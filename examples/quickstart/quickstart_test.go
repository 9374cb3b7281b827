package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The supervisor tests run this test binary as their child process.
	if mode := os.Getenv(helperEnv); mode != "" {
		helperProcess(mode)
		return
	}
	goleak.VerifyTestMain(m)
}

// TestQuickstartSplit runs the real quickstart (go build, then controlplane, three
// demoapps and their meshproxy sidecars as processes), checks the 90/10 split
// and that editing the model moves it to 50/50 within 2 s.
func TestQuickstartSplit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the whole mesh; skipped with -short")
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	modelDir := t.TempDir()
	copyModel(t, filepath.Join(root, "examples", "quickstart", "mesh"), modelDir)
	logDir := t.TempDir()
	base := freePortBlock(t)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	runErr := make(chan error, 1)
	go func() {
		err := run(ctx, []string{
			"--base-port", fmt.Sprint(base),
			"--model-dir", modelDir,
			"--bin-dir", t.TempDir(),
			"--log-dir", logDir,
			"--ready-timeout", "60s",
		}, pw, t.Output())
		pw.Close()
		runErr <- err
	}()
	// On failure, the processes' logs say why.
	defer func() {
		if t.Failed() {
			dumpLogs(t, logDir)
		}
	}()

	url := waitReady(t, pr, runErr, 5*time.Minute)
	go io.Copy(io.Discard, pr) // the rest of run's output, until it closes pw

	client := &http.Client{
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 8},
		Timeout:   10 * time.Second,
	}
	defer client.CloseIdleConnections()

	got := split(t, client, url, 2000)
	checkShare(t, "initial split", got, "v2", 10, 3)

	// Edit the model copy to 50/50 as an editor would: write a new file, then
	// rename it over the old one, so the control plane never reads half a file.
	route := filepath.Join(modelDir, "backend-route.yaml")
	old, err := os.ReadFile(route)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(strings.Replace(string(old), "weight: 90", "weight: 50", 1), "weight: 10", "weight: 50", 1)
	if edited == string(old) || strings.Count(edited, "weight: 50") != 2 {
		t.Fatalf("backend-route.yaml has no 'weight: 90' and 'weight: 10' to edit:\n%s", old)
	}
	tmp := filepath.Join(modelDir, ".backend-route.tmp")
	if err := os.WriteFile(tmp, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	edit := time.Now()
	if err := os.Rename(tmp, route); err != nil {
		t.Fatal(err)
	}

	// Batches of 100 until one looks like 50/50, then the switch happened; the
	// first such batch must start within 2 s of the edit. 100 is a multiple of
	// both weight sums, so a deterministic weighted round robin gives exactly
	// 10 or 50 v2 replies per batch; a random choice gives 30..70 v2 replies
	// under 50/50 and under 90/10 almost never (both beyond 4 sigma).
	const batch = 100
	var switched time.Duration
	for {
		start := time.Since(edit)
		if start > 10*time.Second {
			t.Fatalf("split did not follow the edit to 50/50 within 10s (2s wanted)")
		}
		b := split(t, client, url, batch)
		if v2 := b["v2"]; v2 >= 30 && v2 <= 70 {
			switched = start
			break
		}
	}
	t.Logf("split followed the edit: first 50/50 batch started %v after the rename", switched)
	if switched > 2*time.Second {
		t.Errorf("split followed the edit after %v, want within 2s", switched)
	}
	got = split(t, client, url, 2000)
	checkShare(t, "split after edit", got, "v2", 50, 3)

	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Errorf("run after cancel = %v, want nil", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("run did not stop within 60s of cancel")
	}
}

// waitReady reads run's stdout until the "mesh ready: " line and returns the URL.
func waitReady(t *testing.T, stdout io.Reader, runErr <-chan error, timeout time.Duration) string {
	t.Helper()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("quickstart ended before printing 'mesh ready: ': %v", <-runErr)
			}
			t.Log("quickstart: " + line)
			if url, ok := strings.CutPrefix(line, "mesh ready: "); ok {
				// The scanner goroutine may block sending the next line; drain
				// it so it ends when stdout closes.
				go func() {
					for range lines {
					}
				}()
				return url
			}
		case <-deadline.C:
			t.Fatalf("no 'mesh ready: ' line within %v", timeout)
		}
	}
}

// split sends n GET requests to url from 8 workers and counts the backend
// version that answered each (the frontend's upstream.version). Any failed
// request fails the test.
func split(t *testing.T, c *http.Client, url string, n int) map[string]int {
	t.Helper()
	const workers = 8
	var (
		mu     sync.Mutex
		counts = map[string]int{}
		errs   []error
		wg     sync.WaitGroup
	)
	jobs := make(chan struct{}, n)
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	for range workers {
		wg.Go(func() {
			for range jobs {
				v, err := backendVersion(c, url)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					counts[v]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d requests failed; first: %v", len(errs), n, errors.Join(errs[:min(3, len(errs))]...))
	}
	return counts
}

func backendVersion(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	var r struct {
		Upstream struct {
			Version string            `json:"version"`
			Headers map[string]string `json:"headers"`
		} `json:"upstream"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &r) != nil || r.Upstream.Version == "" {
		return "", fmt.Errorf("GET %s: status %d, x-meshproxy-error %q, body %.300s",
			url, resp.StatusCode, resp.Header.Get("X-Meshproxy-Error"), body)
	}
	// mTLS is on by default: the backend's sidecar tells its app who called,
	// as the frontend's certificate proved it.
	if xfcc := r.Upstream.Headers["x-forwarded-client-cert"]; !strings.Contains(xfcc, "URI=spiffe://cluster.local/ns/default/sa/frontend") {
		return "", fmt.Errorf("GET %s: the backend saw x-forwarded-client-cert %q, want the frontend's SPIFFE ID (mTLS between the sidecars)", url, xfcc)
	}
	return r.Upstream.Version, nil
}

// checkShare fails unless version got wantPct% of the replies, give or take tol
// percentage points.
func checkShare(t *testing.T, what string, counts map[string]int, version string, wantPct, tol float64) {
	t.Helper()
	total := 0
	for _, n := range counts {
		total += n
	}
	got := 100 * float64(counts[version]) / float64(total)
	t.Logf("%s: %v", what, counts)
	if got < wantPct-tol || got > wantPct+tol {
		t.Errorf("%s: %s got %.1f%% of %d requests (%v), want %.0f%% ± %.0f", what, version, got, total, counts, wantPct, tol)
	}
}

func copyModel(t *testing.T, from, to string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(from, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no model files in %s (%v)", from, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// freePortBlock picks a --base-port whose whole layout is free right now, so the
// test does not collide with a quickstart a developer is running.
func freePortBlock(t *testing.T) int {
	t.Helper()
	for range 50 {
		base := 20000 + rand.IntN(40000)
		if blockFree(base) {
			return base
		}
	}
	t.Fatal("no free block of ports found")
	return 0
}

func blockFree(base int) bool {
	l := layoutAt(base)
	addrs := []string{l.XDS}
	for _, w := range l.Workloads {
		addrs = append(addrs, w.Inbound, w.AppAddr, w.Outbound, w.Admin)
	}
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return false
		}
		ln.Close()
	}
	return true
}

func dumpLogs(t *testing.T, dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		t.Logf("--- last lines of %s:\n%s", filepath.Base(f), strings.Join(lines, "\n"))
	}
}
