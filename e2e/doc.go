// Package e2e holds end-to-end tests of the real controlplane and meshproxy
// binaries: TestMain builds both, and each test starts a control plane on a temp
// model directory, sidecars with their own loopback IPs, and real HTTP, h2c, gRPC
// and TCP backends, then drives traffic through the mesh while it changes the model.
//
// Everything lives in _test.go files; this file only carries the package comment so
// that `go build ./...` and `go vet ./e2e/` see the package. Tests run one at a time
// (no t.Parallel): they measure traffic splits and count failures under load on a
// small machine, and every process and goroutine a test starts is stopped by its
// cleanup (processes by PID, SIGTERM then SIGKILL).
//
// Run them with
//
//	go test -count=1 -timeout 5m ./e2e/
//
// E2E_BIN_DIR=dir tests prebuilt binaries dir/controlplane and dir/meshproxy
// instead of building them, E2E_RACE=1 builds them with -race, -e2e.logs
// prints every process's output even when a test passes, and -e2e.xds-mode=sotw
// runs the proxies of every test (but TestSplit, which covers both) with
// state-of-the-world ADS instead of delta.
package e2e
