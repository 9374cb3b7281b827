// Command bench compares the request path through two chained meshproxy sidecars
// with a direct connection to the backend and with two-proxy chains of nginx,
// HAProxy and Caddy, using the same load tools (wrk, h2load, ghz, fortio) for all.
// meshproxy, nginx and HAProxy also run with mutual TLS 1.3 between the two
// proxies (chains meshproxy-mtls, nginx-mtls, haproxy-mtls): meshproxy with the
// control plane's CA and join tokens, nginx and HAProxy with a throwaway CA and
// SPIFFE-style certificates the bench writes at start (certs.go).
//
// Usage, from the repository root (tools from .ci/install-bench-tools.sh):
//
//	go run ./bench                       # full run (~13 min), writes docs/benchmarks.md
//	go run ./bench --quick               # smoke run (~3 min), prints only
//	go run ./bench --chains direct,nginx --tests http1,fixed --duration 3s --rounds 2 --out /tmp/b.md
//	go run ./bench --chains meshproxy,meshproxy-mtls,nginx-mtls,haproxy-mtls --out /tmp/mtls.md
//
// Tests: http1 (wrk), h2c (h2load), grpc (ghz), all at saturation; fixed
// (fortio, HTTP/1.1) and fixed-grpc (ghz --rps), both at --rate requests/s.
//
// One run starts a Go backend (HTTP/1.1 + h2c on one port, gRPC health on another)
// and every selected chain, then for each test runs all chains round-robin for
// several short rounds so that machine drift affects every chain alike. Load
// generator and client-side proxy are pinned to CPU 0, backend and server-side
// proxy to CPU 1 (taskset), each proxy runs one worker. Proxy CPU is read from
// /proc/<pid>/stat around each measurement, memory from /proc/<pid>/status.
//
// Concurrency: the orchestration runs on the main goroutine; every child process
// is started and stopped by it (by PID, SIGTERM then SIGKILL) and nothing else is
// killed. The backend mode (-backend) serves until SIGTERM.
package main
