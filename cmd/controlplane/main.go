// Command controlplane serves the mesh over Envoy v3 xDS (ADS, SotW and delta):
// it watches a directory of Kubernetes-style YAML (Services, EndpointSlices,
// GAMMA HTTPRoutes), registers workloads from their proxies' node metadata and
// pushes every node its listeners, routes, clusters and endpoints.
//
// It is also the mesh's certificate authority (docs/identity.md): it serves
// tinymesh.identity.v1.CertificateService on the xDS port, issuing X.509-SVIDs to
// proxies that present a join token or their current SVID, and delivers them
// and the trust bundle over SDS. Two subcommands work on its data directory
// offline, while it runs: `controlplane token create` mints a join token and
// `controlplane ca rotate` replaces the CA root.
//
// Its own metrics (Prometheus /metrics) and every connected proxy's xDS status
// (/debug/status) are served on --monitoring-addr (docs/observability.md);
// `controlplane status` prints that status as a table, and `controlplane
// validate DIR` checks a model directory offline, for CI.
//
// main only wires things: flags and an optional config file, the slog logger, the
// file source and the CA into the xDS server, and SIGINT/SIGTERM into a graceful
// stop.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tinymesh/tinymesh/identity/ca"
	"github.com/tinymesh/tinymesh/xds/server"
	"github.com/tinymesh/tinymesh/xds/source/file"
)

// settings are the controlplane's knobs; the config file uses the JSON names.
type settings struct {
	XDSAddr        string `json:"xdsAddr"`
	MonitoringAddr string `json:"monitoringAddr"` // /metrics and /debug/status (monitoring.go)
	ModelDir       string `json:"modelDir"`
	EndpointGrace  string `json:"endpointGrace"`
	LogLevel       string `json:"logLevel"`
	LogFormat      string `json:"logFormat"`
	// Identity (docs/identity.md).
	TrustDomain string `json:"trustDomain"`
	DataDir     string `json:"dataDir"`
	SVIDTTL     string `json:"svidTTL"`
	CACert      string `json:"caCert"`
	CAKey       string `json:"caKey"`
	CABundle    string `json:"caBundle"`
}

// Identity defaults, shared by the server and the subcommands.
const (
	defaultTrustDomain = "cluster.local"
	defaultDataDir     = "./controlplane-data"
)

func main() {
	os.Exit(command(os.Args[1:], os.Stdout, os.Stderr))
}

// command dispatches to a subcommand (identity.go) or runs the server.
func command(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "token":
			return tokenCommand(args[1:], stdout, stderr)
		case "ca":
			return caCommand(args[1:], stdout, stderr)
		case "status":
			return statusCommand(args[1:], stdout, stderr)
		case "validate":
			return validateCommand(args[1:], stdout, stderr)
		}
	}
	return run(args, stderr)
}

// run returns the exit code: 0 after a clean shutdown, 1 on a runtime failure,
// 2 on bad flags or configuration.
func run(args []string, stderr io.Writer) int {
	s, err := parse(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "controlplane:", err)
		return 2
	}
	log, err := newLogger(s, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "controlplane:", err)
		return 2
	}
	grace, err := time.ParseDuration(s.EndpointGrace)
	if err != nil || grace < 0 {
		fmt.Fprintf(stderr, "controlplane: invalid endpoint grace %q\n", s.EndpointGrace)
		return 2
	}
	if grace == 0 {
		grace = -1 // the server reads 0 as "default"; the flag means "at once"
	}
	idc, err := identityConfig(s)
	if err != nil {
		fmt.Fprintln(stderr, "controlplane:", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	lis, err := net.Listen("tcp", s.XDSAddr)
	if err != nil {
		log.Error("cannot listen", "addr", s.XDSAddr, "err", err)
		return 1
	}
	mon := newMonitoring()
	srv := server.New(server.Options{EndpointGrace: grace, Logger: log, TrustDomain: idc.trustDomain.Name(), Registerer: mon.reg})
	authority, err := startCA(idc, srv, mon, log)
	if err != nil {
		lis.Close()
		srv.Close()
		log.Error("certificate authority", "err", err)
		return 1
	}
	stopMonitoring, monAddr, err := serveMonitoring(s.MonitoringAddr, mon.handler(srv, log), log)
	if err != nil {
		lis.Close()
		srv.Close()
		log.Error("cannot listen", "addr", s.MonitoringAddr, "err", err)
		return 1
	}
	defer stopMonitoring()
	src := file.New(s.ModelDir, log)
	src.TrustDomain = idc.trustDomain.Name()
	src.OnLoad = mon.modelLoaded

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	srcCtx, cancelSrc := context.WithCancel(ctx)
	srcDone := make(chan error, 1)
	go func() { srcDone <- src.Run(srcCtx, srv.SetModel) }()
	caDone := make(chan error, 1)
	go func() { caDone <- authority.Run(srcCtx) }() // reloads <data-dir>/ca/ (a rotation) every 5 s
	log.Info("serving xDS", "addr", lis.Addr().String(), "monitoring", monAddr.String(), "modelDir", s.ModelDir,
		"trustDomain", idc.trustDomain.Name(), "dataDir", s.DataDir)

	code, srcRunning := 0, true
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-errc:
		log.Error("xDS server failed", "err", err)
		code = 1
	case err := <-srcDone:
		log.Error("model source failed", "err", err)
		code, srcRunning = 1, false
	}
	cancelSrc()
	if srcRunning {
		<-srcDone
	}
	<-caDone
	if err := srv.Close(); err != nil {
		log.Error("close", "err", err)
		code = 1
	}
	return code
}

func parse(args []string, stderr io.Writer) (settings, error) {
	s := settings{XDSAddr: "127.0.0.1:15010", MonitoringAddr: defaultMonitoringAddr, ModelDir: "./mesh", EndpointGrace: "10s", LogLevel: "info", LogFormat: "text",
		TrustDomain: defaultTrustDomain, DataDir: defaultDataDir, SVIDTTL: ca.DefaultSVIDTTL.String()}
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "optional YAML file with xdsAddr, monitoringAddr, modelDir, endpointGrace, logLevel, logFormat, trustDomain, dataDir, svidTTL, caCert, caKey, caBundle; flags override it")
	xdsAddr := fs.String("xds-addr", s.XDSAddr, "gRPC address serving ADS (SotW and delta)")
	monitoringAddr := fs.String("monitoring-addr", s.MonitoringAddr, "HTTP address serving Prometheus /metrics and the proxies' /debug/status")
	modelDir := fs.String("model-dir", s.ModelDir, "directory of multi-document Kubernetes-style YAML (watched)")
	grace := fs.Duration("endpoint-grace", 10*time.Second, "how long a disconnected proxy's endpoint stays")
	level := fs.String("log-level", s.LogLevel, "debug, info, warn or error")
	format := fs.String("log-format", s.LogFormat, "text or json")
	trustDomain := fs.String("trust-domain", s.TrustDomain, "SPIFFE trust domain of the mesh's identities")
	dataDir := fs.String("data-dir", s.DataDir, "directory for the CA root (ca/) and join tokens (tokens/)")
	svidTTL := fs.Duration("svid-ttl", ca.DefaultSVIDTTL, "lifetime of issued SVIDs (at least 1m); proxies renew at half of it")
	caCert := fs.String("ca-cert", "", "operator CA certificate (PEM, may be an intermediate followed by its chain) instead of the self-managed root")
	caKey := fs.String("ca-key", "", "private key of --ca-cert (PEM)")
	caBundle := fs.String("ca-bundle", "", "roots to trust with --ca-cert (PEM; default: the --ca-cert certificate)")
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *config != "" {
		data, err := os.ReadFile(*config)
		if err != nil {
			return s, fmt.Errorf("config: %w", err)
		}
		if err := yaml.UnmarshalStrict(data, &s); err != nil {
			return s, fmt.Errorf("config %s: %w", *config, err)
		}
	}
	// Flags given on the command line win over the file.
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "xds-addr":
			s.XDSAddr = *xdsAddr
		case "monitoring-addr":
			s.MonitoringAddr = *monitoringAddr
		case "model-dir":
			s.ModelDir = *modelDir
		case "endpoint-grace":
			s.EndpointGrace = grace.String()
		case "log-level":
			s.LogLevel = *level
		case "log-format":
			s.LogFormat = *format
		case "trust-domain":
			s.TrustDomain = *trustDomain
		case "data-dir":
			s.DataDir = *dataDir
		case "svid-ttl":
			s.SVIDTTL = svidTTL.String()
		case "ca-cert":
			s.CACert = *caCert
		case "ca-key":
			s.CAKey = *caKey
		case "ca-bundle":
			s.CABundle = *caBundle
		}
	})
	return s, nil
}

func newLogger(s settings, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(s.LogLevel)); err != nil {
		return nil, fmt.Errorf("invalid log level %q", s.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(s.LogFormat) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("invalid log format %q (want text or json)", s.LogFormat)
	}
}
