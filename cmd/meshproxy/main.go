// Command meshproxy is the sidecar: it subscribes to the control plane over ADS and
// carries the workload's inbound and outbound traffic with the config it receives.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tinymesh/tinymesh/dataplane"
	"github.com/tinymesh/tinymesh/dataplane/admin"
	"github.com/tinymesh/tinymesh/dataplane/gcpace"
	corev3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/core/v3"
	"github.com/tinymesh/tinymesh/xds/client"
)

// options are the command-line settings; see docs/xds-conventions.md for how they
// reach the control plane.
type options struct {
	xdsAddr        string
	xdsMode        string
	namespace      string
	workload       string
	labels         string
	serviceAccount string
	inbound        string
	app            string
	outbound       string
	outboundIP     string
	adminAddr      string
	logLevel       string
	logFormat      string
	drainDelay     time.Duration
	shutdownGrace  time.Duration
	identitySource string // see spire.go
	joinToken      string // see identity.go
	joinTokenFile  string
	trustDomain    string
	metrics        bool         // see telemetry.go
	tracing        tracingFlags // see tracing.go
	gcBudgetMiB    int          // see dataplane/gcpace
}

func main() {
	var o options
	flag.StringVar(&o.xdsAddr, "xds", "127.0.0.1:15010", "control plane ADS address")
	flag.StringVar(&o.xdsMode, "xds-mode", "delta", "ADS variant: delta or sotw")
	flag.StringVar(&o.namespace, "namespace", "default", "workload namespace")
	flag.StringVar(&o.workload, "workload", "", "workload name, e.g. backend-v1 (required)")
	flag.StringVar(&o.labels, "labels", "", "workload labels, e.g. app=backend,version=v1")
	flag.StringVar(&o.serviceAccount, "service-account", "", "service account (default: the workload name)")
	flag.StringVar(&o.inbound, "inbound", "", "inbound listener address for mesh traffic (empty: none)")
	flag.StringVar(&o.app, "app", "", "local app address the inbound listener forwards to")
	flag.StringVar(&o.outbound, "outbound", "", "outbound HTTP listener address the local app sends to (empty: none)")
	flag.StringVar(&o.outboundIP, "outbound-ip", "", "IP for per-port outbound TCP listeners (default: host of --outbound)")
	flag.StringVar(&o.adminAddr, "admin", "127.0.0.1:15000", "admin address (/ready, /config_dump, /clusters, /explain, /drain, ...; see docs/observability.md); keep it on localhost")
	flag.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	flag.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	flag.DurationVar(&o.drainDelay, "drain-delay", 2*time.Second, "on SIGTERM, how long to keep accepting after telling the control plane this workload leaves")
	flag.DurationVar(&o.shutdownGrace, "shutdown-grace", 5*time.Second, "then, how long requests in flight may take to finish")
	flag.StringVar(&o.identitySource, "identity-source", identityControlPlane, identitySourceUsage)
	flag.StringVar(&o.joinToken, "join-token", "", "join token from `controlplane token create`: get an SVID from the control plane's CA (empty: no identity)")
	flag.StringVar(&o.joinTokenFile, "join-token-file", "", "file holding the join token (read once at start), instead of --join-token")
	flag.StringVar(&o.trustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain of the mesh (the control plane's --trust-domain)")
	flag.BoolVar(&o.metrics, "metrics", true, "record Prometheus metrics and serve them on the admin address at /stats/prometheus")
	flag.IntVar(&o.gcBudgetMiB, "gc-budget", gcpace.DefaultBudget>>20, "MiB more heap the garbage collector may let grow between cycles while the allocation rate is high, so that it runs about once a second under load; idle memory is unaffected (0: plain GOGC; see docs/benchmarks.md)")
	o.tracing.register(flag.CommandLine)
	flag.Parse()

	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "meshproxy:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	logger, logLevel, err := newLogger(o.logLevel, o.logFormat)
	if err != nil {
		return err
	}
	node, err := buildNode(o)
	if err != nil {
		return err
	}
	mode := client.Delta
	switch o.xdsMode {
	case "delta":
	case "sotw":
		mode = client.SotW
	default:
		return fmt.Errorf("--xds-mode %q: want delta or sotw", o.xdsMode)
	}

	// The admin endpoint's POST /drain cancels drainCtx: the SIGTERM path.
	drainCtx, drain := context.WithCancel(context.Background())
	defer drain()
	ctx, stop := signal.NotifyContext(drainCtx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	localSecrets, closeLocalSecrets, err := openIdentitySource(ctx, o, logger)
	if err != nil {
		return err
	}
	defer closeLocalSecrets()
	// With a join token: the first SVID before the xDS client starts, so the
	// control plane has a certificate for this node when it first connects.
	ident, err := startIdentity(ctx, o, node.GetId(), logger)
	if err != nil {
		return err
	}
	defer ident.close()

	rec := newStats(o) // nil with --metrics=false
	// tracer is nil without --tracing-endpoint.
	tracer, closeTracer, err := startTracing(o, node.GetId(), logger)
	if err != nil {
		return err
	}
	defer closeTracer() // after proxy.Close below: flushes the last spans
	proxy := dataplane.New(dataplane.Options{Logger: logger, Stats: rec, Tracer: tracer,
		TracingDefaults: tracingDefaults(o, node.GetId())})
	if rec != nil {
		rec.ReadClusters(clusterGauges(proxy))
	}
	xc, err := client.New(client.Options{
		ServerAddr: o.xdsAddr,
		Node:       node,
		Mode:       mode,
		Apply:      proxy.Apply,
		Logger:     logger,
		// LocalSecrets: nil unless --identity-source names a Workload API.
		LocalSecrets: localSecrets,
		Keys:         ident.keys(),      // nil without --join-token
		OnConnect:    ident.onConnect(), // renews after a reconnect
		Observer:     xdsObserver(rec),  // nil with --metrics=false
	})
	if err != nil {
		return err
	}
	defer xc.Close()
	adm := admin.New(admin.Options{
		Addr:       o.adminAddr,
		Ready:      func() bool { return proxy.Ready() && xc.Synced() && ctx.Err() == nil }, // not ready once draining
		ConfigDump: func() any { return proxy.Snapshot() },
		// See docs/observability.md, "Admin endpoint".
		EnvoyConfigDump: xc.ConfigDump,
		Proxy:           proxy,
		LogLevel:        logLevel,
		Drain:           adminDrain(drain, logger),
		Logger:          logger,
		Metrics:         metricsHandler(rec),
	})
	if err := adm.Start(); err != nil {
		return fmt.Errorf("admin: %w", err)
	}

	logger.Info("meshproxy starting", "node", node.GetId(), "xds", o.xdsAddr, "xds_mode", o.xdsMode,
		"inbound", o.inbound, "app", o.app, "outbound", o.outbound, "admin", adm.Addr())

	xdsErr := make(chan error, 1)
	go func() { xdsErr <- xc.Run(ctx) }()
	pacing, stopPacing := context.WithCancel(context.Background())
	paced := make(chan struct{})
	go func() {
		defer close(paced)
		gcpace.Run(pacing, gcpace.Options{Budget: uint64(max(o.gcBudgetMiB, 0)) << 20, Serving: proxy.Ready})
	}()
	defer func() { stopPacing(); <-paced }()

	select {
	case <-ctx.Done():
	case err = <-xdsErr:
	case err = <-ident.renewalFailed():
		err = fmt.Errorf("identity: %w", err)
		stop()
		<-xdsErr
	}
	// Leaving: the xDS client half-closes its stream when ctx ends, so the control
	// plane drops this endpoint from its peers' config at once. Until they have
	// that update they may still send here, so keep serving for drainDelay before
	// the listeners stop accepting; a second signal kills the process outright.
	// After POST /drain signals stay caught and do nothing: a pod's SIGTERM
	// after a preStop hook's /drain must not cut the drain short.
	if drainCtx.Err() == nil {
		stop()
	}
	if err == nil {
		err = <-xdsErr
		logger.Info("meshproxy leaving: still serving while peers update", "drain_delay", o.drainDelay)
		time.Sleep(o.drainDelay)
	}
	logger.Info("meshproxy stopping: draining", "grace", o.shutdownGrace)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), o.shutdownGrace)
	defer cancel()
	if cerr := proxy.Close(shutdownCtx); cerr != nil {
		logger.Warn("drain incomplete", "err", cerr)
	}
	if cerr := adm.Close(shutdownCtx); cerr != nil {
		logger.Warn("admin close", "err", cerr)
	}
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// buildNode checks the flags and describes this workload to the control plane
// (docs/xds-conventions.md).
func buildNode(o options) (*corev3.Node, error) {
	if o.workload == "" {
		return nil, errors.New("--workload is required")
	}
	labels, err := parseLabels(o.labels)
	if err != nil {
		return nil, err
	}
	for flagName, addr := range map[string]string{"--inbound": o.inbound, "--app": o.app, "--outbound": o.outbound} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("%s %q: %w", flagName, addr, err)
		}
	}
	if o.inbound != "" && o.app == "" {
		return nil, errors.New("--inbound needs --app: the address of the local app to hand traffic to")
	}
	info := client.NodeInfo{
		Namespace:        o.namespace,
		Workload:         o.workload,
		ServiceAccount:   o.serviceAccount,
		Labels:           labels,
		InboundAddr:      o.inbound,
		AppAddr:          o.app,
		OutboundHTTPAddr: o.outbound,
		OutboundIP:       o.outboundIP,
	}
	if info.ServiceAccount == "" {
		info.ServiceAccount = o.workload
	}
	if info.OutboundIP == "" && o.outbound != "" {
		info.OutboundIP, _, _ = net.SplitHostPort(o.outbound)
	}
	node, err := client.NewNode(info)
	if err != nil {
		return nil, err
	}
	node.UserAgentName = "meshproxy"
	return node, nil
}

func parseLabels(s string) (map[string]string, error) {
	labels := map[string]string{}
	if s == "" {
		return labels, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--labels %q: want key=value[,key=value]", s)
		}
		labels[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return labels, nil
}

// newLogger returns the process's logger and its level, which the admin
// endpoint's /logging changes at run time.
func newLogger(level, format string) (*slog.Logger, *slog.LevelVar, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	v := new(slog.LevelVar)
	v.Set(lvl)
	opts := &slog.HandlerOptions{Level: v}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), v, nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), v, nil
	}
	return nil, nil, fmt.Errorf("--log-format %q: want text or json", format)
}
