package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// result is what one load-tool run measured.
type result struct {
	Requests int64   // requests that got a successful response
	Errors   int64   // failed requests (connect/read errors, non-2xx, non-OK)
	RPS      float64 // successful requests per second of run time
	P50, P99 time.Duration
}

// findTool returns the path of a load tool: from PATH, else from Go's install
// directory (where .ci/install-bench-tools.sh puts ghz and fortio).
func findTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	var dirs []string
	if gb := os.Getenv("GOBIN"); gb != "" {
		dirs = append(dirs, gb)
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, p := range filepath.SplitList(strings.TrimSpace(string(out))) {
			dirs = append(dirs, filepath.Join(p, "bin"))
		}
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or %v (run .ci/install-bench-tools.sh)", name, dirs)
}

// runTool runs argv pinned to cpu, bounded by limit, and returns stdout. On
// failure the error includes the tail of stderr.
func runTool(limit time.Duration, cpu int, argv ...string) ([]byte, error) {
	if cpu >= 0 {
		argv = append([]string{"taskset", "-c", strconv.Itoa(cpu)}, argv...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tail := stderr.String()
		if len(tail) > 600 {
			tail = tail[len(tail)-600:]
		}
		return out, fmt.Errorf("%s: %w: %s", filepath.Base(argv[len(argv)-1]), err, tail)
	}
	return out, nil
}

// parseDur parses the latency notation of wrk and h2load: "250.00us", "1.20ms",
// "2.00s", "3.1m".
func parseDur(s string) (time.Duration, error) {
	units := []struct {
		suffix string
		mult   float64
	}{{"us", 1e3}, {"ms", 1e6}, {"ns", 1}, {"s", 1e9}, {"m", 60e9}}
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("duration %q: %w", s, err)
			}
			return time.Duration(math.Round(f * u.mult)), nil
		}
	}
	return 0, fmt.Errorf("duration %q: unknown unit", s)
}

// parseWrk parses wrk --latency output.
func parseWrk(out string) (result, error) {
	var r result
	var non2xx int64
	var haveReq, haveRPS bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 2 && (f[0] == "50%" || f[0] == "99%"):
			d, err := parseDur(f[1])
			if err != nil {
				return result{}, fmt.Errorf("wrk: %w", err)
			}
			if f[0] == "50%" {
				r.P50 = d
			} else {
				r.P99 = d
			}
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return result{}, fmt.Errorf("wrk: requests: %w", err)
			}
			r.Requests, haveReq = n, true
		case len(f) >= 2 && f[0] == "Requests/sec:":
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return result{}, fmt.Errorf("wrk: rps: %w", err)
			}
			r.RPS, haveRPS = v, true
		case len(f) >= 5 && f[0] == "Non-2xx":
			non2xx, _ = strconv.ParseInt(f[len(f)-1], 10, 64)
			r.Errors += non2xx
		case len(f) >= 3 && f[0] == "Socket" && f[1] == "errors:":
			// "Socket errors: connect 0, read 0, write 0, timeout 0"
			for i := 2; i+1 < len(f); i += 2 {
				n, _ := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				r.Errors += n
			}
		}
	}
	if !haveReq || !haveRPS {
		return result{}, errors.New("wrk: no request count or Requests/sec in output")
	}
	// wrk counts non-2xx responses as requests (socket errors not); report only successes.
	if non2xx > 0 && r.Requests > 0 {
		good := max(r.Requests-non2xx, 0)
		r.RPS *= float64(good) / float64(r.Requests)
		r.Requests = good
	}
	return r, nil
}

// parseH2load parses h2load output (run with -D, so "finished in" is the
// measurement window).
func parseH2load(out string) (result, error) {
	var r result
	var haveReq, haveRPS bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "finished in "):
			// "finished in 5.00s, 40000.00 req/s, 1.00MB/s"
			parts := strings.Split(line, ",")
			if len(parts) < 2 {
				return result{}, fmt.Errorf("h2load: %q", line)
			}
			v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(parts[1]), " req/s"), 64)
			if err != nil {
				return result{}, fmt.Errorf("h2load: req/s: %w", err)
			}
			r.RPS, haveRPS = v, true
		case strings.HasPrefix(line, "requests: "):
			// "requests: 10 total, 10 started, 10 done, 9 succeeded, 1 failed, 0 errored, 0 timeout"
			for _, p := range strings.Split(strings.TrimPrefix(line, "requests: "), ",") {
				f := strings.Fields(p)
				if len(f) != 2 {
					continue
				}
				n, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					return result{}, fmt.Errorf("h2load: %q: %w", p, err)
				}
				switch f[1] {
				case "succeeded":
					r.Requests, haveReq = n, true
				case "failed", "errored", "timeout":
					r.Errors += n
				}
			}
		case strings.HasPrefix(line, "time for request:"):
			// min max mean sd +/-sd; h2load prints no percentiles, so P50/P99 stay 0.
		}
	}
	if !haveReq || !haveRPS {
		return result{}, errors.New("h2load: no 'requests:' or 'finished in' line in output")
	}
	// req/s counts every finished request; keep only the successful share.
	if done := r.Requests + r.Errors; done > 0 && r.Errors > 0 {
		r.RPS *= float64(r.Requests) / float64(done)
	}
	return r, nil
}

// ghzReport is the part of ghz -O json the bench reads.
type ghzReport struct {
	Count   int64   `json:"count"`
	RPS     float64 `json:"rps"`
	Total   int64   `json:"total"` // ns
	Latency []struct {
		Percentage int   `json:"percentage"`
		Latency    int64 `json:"latency"` // ns
	} `json:"latencyDistribution"`
	Status map[string]int64 `json:"statusCodeDistribution"`
	Errs   map[string]int64 `json:"errorDistribution"`
}

// ghzShutdownErrors are error messages of calls that were in flight when ghz
// closed its connections at the end of a -z run. They are an artefact of the
// tool stopping (at most one per worker), not failures of the chain.
var ghzShutdownErrors = []string{
	"use of closed network connection",
	"the client connection is closing",
	"context canceled",
}

// parseGhz parses ghz -O json output.
func parseGhz(out []byte) (result, error) {
	var g ghzReport
	if err := json.Unmarshal(out, &g); err != nil {
		return result{}, fmt.Errorf("ghz: %w", err)
	}
	if g.Count == 0 || g.Total == 0 {
		return result{}, errors.New("ghz: no requests in report")
	}
	var r result
	for code, n := range g.Status {
		if code == "OK" {
			r.Requests += n
		} else {
			r.Errors += n
		}
	}
	r.Errors += g.Count - r.Requests - r.Errors
	for msg, n := range g.Errs {
		for _, artefact := range ghzShutdownErrors {
			if strings.Contains(msg, artefact) {
				r.Errors -= n
				break
			}
		}
	}
	r.Errors = max(r.Errors, 0)
	r.RPS = float64(r.Requests) / (float64(g.Total) / 1e9)
	for _, l := range g.Latency {
		switch l.Percentage {
		case 50:
			r.P50 = time.Duration(l.Latency)
		case 99:
			r.P99 = time.Duration(l.Latency)
		}
	}
	return r, nil
}

// fortioReport is the part of fortio's -json output the bench reads.
type fortioReport struct {
	ActualQPS         float64
	ActualDuration    int64 // ns
	DurationHistogram struct {
		Count       int64
		Percentiles []struct {
			Percentile float64
			Value      float64 // seconds
		}
	}
	RetCodes map[string]int64
}

// parseFortio parses fortio load -json output (run with -p "50,99").
func parseFortio(out []byte) (result, error) {
	var f fortioReport
	if err := json.Unmarshal(out, &f); err != nil {
		return result{}, fmt.Errorf("fortio: %w", err)
	}
	if f.DurationHistogram.Count == 0 || f.ActualDuration == 0 {
		return result{}, errors.New("fortio: no requests in report")
	}
	var r result
	for code, n := range f.RetCodes {
		if code == "200" {
			r.Requests += n
		} else {
			r.Errors += n
		}
	}
	r.RPS = float64(r.Requests) / (float64(f.ActualDuration) / 1e9)
	for _, p := range f.DurationHistogram.Percentiles {
		d := time.Duration(math.Round(p.Value * 1e9))
		switch p.Percentile {
		case 50:
			r.P50 = d
		case 99:
			r.P99 = d
		}
	}
	return r, nil
}
