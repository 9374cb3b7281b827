package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel"

	"github.com/tinymesh/tinymesh/dataplane/tracing"
)

// tracingFlags configure request tracing (docs/observability.md, "Tracing").
type tracingFlags struct {
	endpoint string
	sampling float64
}

func (f *tracingFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.endpoint, "tracing-endpoint", "", "OTLP/HTTP collector for request spans: host:port (plaintext, /v1/traces) or http(s)://host:port/path; empty: tracing off")
	fs.Float64Var(&f.sampling, "tracing-sampling", tracing.DefaultSamplingPercent, "percent (0-100) of new traces to sample; a caller's sampling decision is kept")
}

// startTracing returns the tracer for this workload and a func that flushes
// and stops it, or a nil tracer when --tracing-endpoint is empty: then the
// OpenTelemetry SDK is never constructed and requests carry no tracing work.
func startTracing(o options, nodeID string, log *slog.Logger) (*tracing.Tracer, func(), error) {
	// Export failures reach OpenTelemetry's process-wide error handler, also
	// for tracers built from xDS tracing configs; send them to our log
	// instead of the standard logger.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("tracing: export failed", "err", err) }))
	if o.tracing.endpoint == "" {
		if o.tracing.sampling != tracing.DefaultSamplingPercent {
			return nil, nil, fmt.Errorf("--tracing-sampling needs --tracing-endpoint")
		}
		return nil, func() {}, nil
	}
	topts := tracingDefaults(o, nodeID)
	topts.Endpoint, topts.SamplingPercent = o.tracing.endpoint, o.tracing.sampling
	tr, err := tracing.New(topts)
	if err != nil {
		return nil, nil, fmt.Errorf("--tracing-endpoint %q --tracing-sampling %v: %w", o.tracing.endpoint, o.tracing.sampling, err)
	}
	log.Info("tracing on", "endpoint", o.tracing.endpoint, "sampling_percent", o.tracing.sampling)
	return tr, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tr.Close(ctx); err != nil {
			log.Warn("tracing: flush at exit", "err", err)
		}
	}, nil
}

// tracingDefaults are the resource attributes of this workload's spans, for
// the --tracing-endpoint tracer and for those built from xDS tracing configs:
// service.name is the workload, service.namespace its namespace,
// service.instance.id the xDS node ID.
func tracingDefaults(o options, nodeID string) tracing.Options {
	return tracing.Options{ServiceName: o.workload, Namespace: o.namespace, NodeID: nodeID}
}
