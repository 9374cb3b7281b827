package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"

	"github.com/tinymesh/tinymesh/xds/server"
)

// defaultMonitoringAddr is Istio's istiod monitoring port, on loopback.
const defaultMonitoringAddr = "127.0.0.1:15014"

// monitoring is the control plane's own observability (docs/observability.md,
// "Control plane"): a Prometheus registry with the xDS server's metrics and the
// model and CA counters below, served at /metrics, and the proxies' status at
// /debug/status.
type monitoring struct {
	reg *prometheus.Registry
	// set in newMonitoring, safe for concurrent use
	reloads      prometheus.Counter
	reloadErrors prometheus.Counter
	caIssued     *prometheus.CounterVec
	caRefused    *prometheus.CounterVec
}

func newMonitoring() *monitoring {
	m := &monitoring{
		reg: prometheus.NewRegistry(),
		reloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "controlplane_model_reloads_total",
			Help: "Mesh models loaded from the model directory and applied.",
		}),
		reloadErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "controlplane_model_reload_errors_total",
			Help: "Changed model directories rejected (decode or validation errors); the last good model stays.",
		}),
		caIssued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controlplane_ca_issued_total",
			Help: "X.509-SVIDs issued, by the credential presented (join_token, svid).",
		}, []string{"credential"}),
		caRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controlplane_ca_refused_total",
			Help: "Certificate requests refused, by the credential presented (join_token, svid, none) and gRPC code.",
		}, []string{"credential", "code"}),
	}
	for _, c := range []string{"join_token", "svid"} {
		m.caIssued.WithLabelValues(c)
	}
	m.reg.MustRegister(m.reloads, m.reloadErrors, m.caIssued, m.caRefused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// modelLoaded is the file source's OnLoad.
func (m *monitoring) modelLoaded(err error) {
	if err != nil {
		m.reloadErrors.Inc()
		return
	}
	m.reloads.Inc()
}

// signed is the CertificateService's OnResult.
func (m *monitoring) signed(credential string, code codes.Code) {
	if code == codes.OK {
		m.caIssued.WithLabelValues(credential).Inc()
		return
	}
	m.caRefused.WithLabelValues(credential, code.String()).Inc()
}

// handler serves /metrics and /debug/status.
func (m *monitoring) handler(srv *server.Server, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: slogPrinter{log}}))
	mux.HandleFunc("GET /debug/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(srv.Status()); err != nil {
			log.Debug("write /debug/status", "err", err)
		}
	})
	return mux
}

// serveMonitoring listens on addr and serves h; stop shuts the server down
// (open connections get 5 s) and waits for it.
func serveMonitoring(addr string, h http.Handler, log *slog.Logger) (stop func(), bound net.Addr, err error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("monitoring address: %w", err)
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("monitoring server failed", "err", err)
		}
	}()
	stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := hs.Shutdown(ctx); err != nil {
			hs.Close()
		}
		<-done
	}
	return stop, lis.Addr(), nil
}

// slogPrinter adapts slog to promhttp's error logger.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Error("metrics", "err", fmt.Sprint(v...)) }
