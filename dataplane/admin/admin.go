// Package admin serves the sidecar's local admin endpoints: GET /ready (200 once the
// first complete config is applied, else 503), GET /healthz (200 while the process
// serves), GET /config_dump (the xDS resources in force in Envoy's admin format;
// ?format=decoded: the data plane's snapshot), and, when their options are set,
// /stats/prometheus, /listeners, /clusters, /explain (the route explainer),
// /logging and POST /drain. docs/observability.md documents them for operators.
//
// Concurrency: Start runs the HTTP server on one goroutine that Close waits for.
// The callbacks in Options are called on request goroutines and must be safe for
// concurrent use.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// DefaultAddr is localhost only: the admin API is not for the mesh.
const DefaultAddr = "127.0.0.1:15000"

// Options configure a Server.
type Options struct {
	Addr       string      // default DefaultAddr
	Ready      func() bool // required
	ConfigDump func() any  // required; the decoded snapshot, encoded as JSON
	// EnvoyConfigDump, when set, serves GET /config_dump: the xDS resources
	// in force in Envoy's admin format (xds/client.Client.ConfigDump), and
	// ConfigDump moves to /config_dump?format=decoded.
	EnvoyConfigDump func() ([]byte, error)
	// Proxy, when set, serves /listeners, /clusters and /explain
	// (endpoints.go).
	Proxy Proxy
	// LogLevel, when set, serves GET and POST /logging to read and change
	// the level of the process's logger at run time.
	LogLevel *slog.LevelVar
	// Drain, when set, serves POST /drain: it must start the process's
	// graceful shutdown (the SIGTERM path) and not block.
	Drain  func()
	Logger *slog.Logger // nil discards logs
	// Metrics serves GET /stats/prometheus (dataplane/stats); nil: the path
	// is not served (meshproxy --metrics=false).
	Metrics http.Handler
}

// Server is the admin HTTP server.
type Server struct {
	opts Options
	srv  *http.Server
	ln   net.Listener  // set by Start
	done chan struct{} // closed when Serve returns
}

// New returns a Server; call Start to bind it.
func New(opts Options) *Server {
	if opts.Addr == "" {
		opts.Addr = DefaultAddr
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{opts: opts, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", s.ready)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /config_dump", s.configDump)
	s.register(mux)
	if opts.Metrics != nil {
		mux.Handle("GET /stats/prometheus", opts.Metrics)
	}
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug),
	}
	return s
}

// Start binds the address and serves in the background.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("admin: bind %s: %w", s.opts.Addr, err)
	}
	s.ln = ln
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.opts.Logger.Error("admin server", "err", err)
		}
	}()
	s.opts.Logger.Info("admin listening", "addr", ln.Addr().String())
	return nil
}

// Addr is the bound address; valid after Start.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server, waiting for requests until ctx is done.
func (s *Server) Close(ctx context.Context) error {
	if s.ln == nil {
		return nil
	}
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	<-s.done
	return err
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !s.opts.Ready() {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "not ready\n")
		return
	}
	io.WriteString(w, "ready\n")
}

func (s *Server) configDump(w http.ResponseWriter, r *http.Request) {
	format := r.URL.Query().Get("format")
	if format != "" && format != "envoy" && format != "decoded" {
		http.Error(w, fmt.Sprintf("format %q: want envoy (the default) or decoded", format), http.StatusBadRequest)
		return
	}
	if s.opts.EnvoyConfigDump != nil && format != "decoded" {
		b, err := s.opts.EnvoyConfigDump()
		if err != nil {
			http.Error(w, "config dump: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
		return
	}
	b, err := json.MarshalIndent(s.opts.ConfigDump(), "", "  ")
	if err != nil {
		http.Error(w, "config dump: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n'))
}
