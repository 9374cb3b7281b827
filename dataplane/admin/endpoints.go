package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/tinymesh/tinymesh/dataplane"
)

// Proxy is the running data plane as the admin endpoints see it
// (*dataplane.Proxy). Its methods are called on request goroutines and must be
// safe for concurrent use; returned values are the caller's.
type Proxy interface {
	Listeners() []dataplane.ListenerStatus
	Clusters() []dataplane.ClusterStatus
	Explain(dataplane.ExplainRequest) (*dataplane.Explanation, error)
}

// register adds the endpoints whose options are set.
func (s *Server) register(mux *http.ServeMux) {
	if s.opts.Proxy != nil {
		mux.HandleFunc("GET /listeners", s.listeners)
		mux.HandleFunc("GET /clusters", s.clusters)
		mux.HandleFunc("GET /explain", s.explain)
	}
	if s.opts.LogLevel != nil {
		mux.HandleFunc("GET /logging", s.logging)
		mux.HandleFunc("POST /logging", s.setLogging)
	}
	if s.opts.Drain != nil {
		mux.HandleFunc("POST /drain", s.drain)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n'))
}

func (s *Server) listeners(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, map[string]any{"listeners": s.opts.Proxy.Listeners()})
}

// clusters serves JSON, or with ?format=text Envoy's text format, one
// counter per line: "<cluster>::<endpoint>::<stat>::<value>".
func (s *Server) clusters(w http.ResponseWriter, r *http.Request) {
	cs := s.opts.Proxy.Clusters()
	switch f := r.URL.Query().Get("format"); f {
	case "", "json":
		writeJSON(w, map[string]any{"clusters": cs})
	case "text":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		var b strings.Builder
		for _, c := range cs {
			for _, e := range c.Endpoints {
				p := c.Name + "::" + e.Address + "::"
				fmt.Fprintf(&b, "%scx_active::%d\n%scx_connect_fail::%d\n%srq_active::%d\n%srq_total::%d\n%sweight::%d\n%shealth_flags::%s\n%soutlier_detection::%s\n",
					p, e.ActiveConnections, p, e.ConnectFailures, p, e.ActiveRequests, p, e.TotalRequests, p, e.Weight, p, e.HealthFlags, p, e.Outlier)
				if e.Ejections > 0 {
					fmt.Fprintf(&b, "%sejections::%d\n%sejection_time_left_ms::%d\n", p, e.Ejections, p, e.EjectionTimeLeftMs)
				}
			}
		}
		io.WriteString(w, b.String())
	default:
		http.Error(w, fmt.Sprintf("format %q: want json or text", f), http.StatusBadRequest)
	}
}

// explain answers GET /explain?method=&authority=&path=&header=name:value
// (repeatable)&listener=&peer=&source=.
func (s *Server) explain(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := dataplane.ExplainRequest{
		Listener:  q.Get("listener"),
		Method:    q.Get("method"),
		Authority: q.Get("authority"),
		Path:      q.Get("path"),
		Peer:      q.Get("peer"),
		Source:    q.Get("source"),
		Header:    http.Header{},
	}
	if req.Authority == "" {
		http.Error(w, "authority: required, e.g. authority=backend:8080", http.StatusBadRequest)
		return
	}
	for _, h := range q["header"] {
		k, v, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(k) == "" {
			http.Error(w, fmt.Sprintf("header %q: want name:value", h), http.StatusBadRequest)
			return
		}
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	e, err := s.opts.Proxy.Explain(req)
	if errors.Is(err, dataplane.ErrNoListener) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, e)
}

func (s *Server) logging(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "level: %s\n", strings.ToLower(s.opts.LogLevel.Level().String()))
}

// setLogging changes the level: POST /logging?level=debug|info|warn|error.
func (s *Server) setLogging(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query().Get("level")
	var lvl slog.Level
	switch v {
	case "debug", "info", "warn", "error":
		lvl.UnmarshalText([]byte(v))
	default:
		http.Error(w, fmt.Sprintf("level %q: want debug, info, warn or error", v), http.StatusBadRequest)
		return
	}
	old := s.opts.LogLevel.Level()
	s.opts.LogLevel.Set(lvl)
	s.opts.Logger.Warn("log level changed from the admin endpoint", "from", old.String(), "to", lvl.String())
	s.logging(w, r)
}

// drain starts the same shutdown as SIGTERM and answers at once; the process
// exits when the drain is over.
func (s *Server) drain(w http.ResponseWriter, r *http.Request) {
	s.opts.Drain()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusAccepted)
	io.WriteString(w, "draining\n")
}
