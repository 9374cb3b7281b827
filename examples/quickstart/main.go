// Command quickstart runs a whole mesh on one machine: it builds controlplane,
// meshproxy and demoapp, starts the control plane on the model in
// examples/quickstart/mesh (watched, so edits apply live), a frontend and two
// backend versions, each behind its own meshproxy sidecar, waits until traffic
// flows end to end, and prints
//
//	mesh ready: http://127.0.0.1:15110/
//
// It then runs until SIGINT/SIGTERM (or --duration) and stops every process it
// started, by PID: SIGTERM first, SIGKILL after a timeout. If any process exits
// early it says so, stops the rest and exits non-zero.
//
// Run it from anywhere inside the repository: go run ./examples/quickstart
//
// Concurrency: run owns everything it starts; the supervisor's goroutines (one
// waiter per child, plus exec's output copiers) end before run returns.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// options are the command-line settings.
type options struct {
	basePort     int
	modelDir     string
	dataDir      string
	binDir       string
	build        bool
	logDir       string
	logLevel     string
	xdsMode      string
	duration     time.Duration
	readyTimeout time.Duration
	stopTimeout  time.Duration
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("quickstart", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.basePort, "base-port", 15100, "first port of the layout; every address is base-port + a fixed offset (see README.md)")
	fs.StringVar(&o.modelDir, "model-dir", "", "mesh model directory the control plane serves and watches (default: examples/quickstart/mesh in the repository)")
	fs.StringVar(&o.dataDir, "data-dir", "", "the control plane's data directory: its CA root and join-token key (default: <bin-dir>/data)")
	fs.StringVar(&o.binDir, "bin-dir", "", "where the binaries are built (default: <user cache dir>/tinymesh-quickstart)")
	fs.BoolVar(&o.build, "build", true, "build the binaries first; false runs what is already in --bin-dir")
	fs.StringVar(&o.logDir, "log-dir", "", "write each process's output to <log-dir>/<role>.log instead of stderr with a role prefix")
	fs.StringVar(&o.logLevel, "log-level", "info", "--log-level passed to every process")
	fs.StringVar(&o.xdsMode, "xds-mode", "delta", "ADS variant the sidecars use: delta or sotw")
	fs.DurationVar(&o.duration, "duration", 0, "stop by itself after this long once ready (0: run until interrupted)")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 60*time.Second, "how long to wait for the mesh to become ready")
	fs.DurationVar(&o.stopTimeout, "stop-timeout", 10*time.Second, "how long a process may take to exit after SIGTERM before it gets SIGKILL")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if o.basePort < 1024 || o.basePort+portSpan > 65535 {
		return o, fmt.Errorf("--base-port %d: want 1024..%d", o.basePort, 65535-portSpan)
	}
	if o.xdsMode != "delta" && o.xdsMode != "sotw" {
		return o, fmt.Errorf("--xds-mode: want delta or sotw, got %q", o.xdsMode)
	}
	if o.duration < 0 || o.readyTimeout <= 0 || o.stopTimeout <= 0 {
		return o, errors.New("--duration must be >= 0, --ready-timeout and --stop-timeout > 0")
	}
	return o, nil
}

// run builds and starts the mesh, prints "mesh ready: URL" to stdout once
// requests flow, and stops everything when ctx is done, --duration has passed
// or a process exits on its own (then it returns an error).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	opts, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	if opts.modelDir == "" {
		opts.modelDir = filepath.Join(root, "examples", "quickstart", "mesh")
	}
	if opts.modelDir, err = filepath.Abs(opts.modelDir); err != nil {
		return fmt.Errorf("--model-dir: %w", err)
	}
	if st, err := os.Stat(opts.modelDir); err != nil || !st.IsDir() {
		return fmt.Errorf("--model-dir %s: not a directory (%v)", opts.modelDir, err)
	}
	if opts.binDir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return fmt.Errorf("no --bin-dir and no user cache dir: %w", err)
		}
		opts.binDir = filepath.Join(cache, "tinymesh-quickstart")
	}
	if opts.dataDir == "" {
		opts.dataDir = filepath.Join(opts.binDir, "data")
	}
	if opts.build {
		fmt.Fprintf(stdout, "building controlplane, meshproxy and demoapp into %s\n", opts.binDir)
		if err := buildBinaries(ctx, root, opts.binDir, stderr); err != nil {
			return err
		}
	}
	if opts.logDir != "" {
		if err := os.MkdirAll(opts.logDir, 0o755); err != nil {
			return fmt.Errorf("--log-dir: %w", err)
		}
		fmt.Fprintf(stdout, "process output goes to %s/<role>.log\n", opts.logDir)
	}

	sup := newSupervisor(stderr, opts.logDir)
	defer func() {
		fmt.Fprintln(stdout, "stopping all processes")
		if serr := sup.stopAll(opts.stopTimeout); serr != nil && err == nil {
			err = serr
		}
	}()
	m := newMesh(layoutAt(opts.basePort), opts)
	url, err := m.start(ctx, sup, stdout)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stdout, "interrupted before the mesh was ready")
			return nil
		}
		return err
	}
	fmt.Fprintf(stdout, "mesh ready: %s\n", url)

	var timeout <-chan time.Time
	if opts.duration > 0 {
		t := time.NewTimer(opts.duration)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-ctx.Done():
		fmt.Fprintln(stdout, "interrupted")
		return nil
	case <-timeout:
		fmt.Fprintf(stdout, "--duration %s elapsed\n", opts.duration)
		return nil
	case p := <-sup.exited():
		return p.exitError()
	}
}
