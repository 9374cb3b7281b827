// Command demoapp is the small HTTP and gRPC application the examples run behind
// meshproxy sidecars. Every reply says which workload answered (service, version,
// hostname, pid), so that routing and traffic splits are visible from the outside.
//
// HTTP (--http): every response is a JSON object (see reply). With --upstream-url
// set (the frontend role), GET / also calls the upstream through the local
// sidecar's outbound listener, with Host set to --upstream-host, and embeds the
// upstream's JSON reply under "upstream" (502 with the error if that call fails).
// The HTTP port also speaks h2c, and gRPC requests arriving on it are served by
// the same gRPC server as --grpc, so one port works for both when a sidecar
// forwards HTTP/2.
//
// gRPC (--grpc, optional): demo.v1.DemoService (proto/demo/v1), grpc.health.v1
// and server reflection.
//
// Concurrency: main owns every goroutine through server.Serve and server.Close;
// handlers are safe for concurrent use and share one keep-alive HTTP client.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "demoapp:", err)
		os.Exit(1)
	}
}

// run parses args, serves until ctx is done, then shuts down gracefully.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	opts, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(opts.logLevel, opts.logFormat, stderr)
	if err != nil {
		return err
	}
	srv, err := newServer(opts, log)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	select {
	case <-ctx.Done():
		log.Info("shutting down")
		srv.Close()
		return <-errc
	case err := <-errc:
		srv.Close()
		return err
	}
}

// options are the command-line settings.
type options struct {
	service      string
	version      string
	httpAddr     string
	grpcAddr     string
	upstreamURL  string
	upstreamHost string
	logLevel     string
	logFormat    string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("demoapp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.service, "service", "demo", "service name reported in every reply")
	fs.StringVar(&o.version, "version", "v1", "version reported in every reply")
	fs.StringVar(&o.httpAddr, "http", "127.0.0.1:8080", "HTTP listen address (HTTP/1.1, h2c and gRPC)")
	fs.StringVar(&o.grpcAddr, "grpc", "", "optional dedicated gRPC listen address")
	fs.StringVar(&o.upstreamURL, "upstream-url", "", "base URL GET / calls, usually the local sidecar's outbound address, e.g. http://127.0.0.1:15101")
	fs.StringVar(&o.upstreamHost, "upstream-host", "", "Host header for upstream calls (the service name, e.g. backend); default: the host of --upstream-url")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if o.httpAddr == "" {
		return o, errors.New("--http is required")
	}
	if o.upstreamHost != "" && o.upstreamURL == "" {
		return o, errors.New("--upstream-host needs --upstream-url")
	}
	return o, nil
}

func newLogger(level, format string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	ho := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, ho)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, ho)), nil
	default:
		return nil, fmt.Errorf("--log-format: want text or json, got %q", format)
	}
}
