//go:build meshprof

package main

import (
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof/ on http.DefaultServeMux
	"os"
)

// Built only with -tags meshprof, for the measurements in docs/benchmarks.md:
// net/http/pprof links about 1 MB of extra code and data, so release builds leave
// it out. MESHPROXY_PPROF=host:port serves /debug/pprof/ there.
func init() {
	if addr := os.Getenv("MESHPROXY_PPROF"); addr != "" {
		go http.ListenAndServe(addr, nil) //nolint:errcheck // debugging aid only
	}
}
