package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/tracing"
)

// tracingFlags configure request tracing (docs/observability.md, "Tracing").
type tracingFlags struct {
	endpoint string
	protocol string
	sampling float64
}

func (f *tracingFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.endpoint, "tracing-endpoint", "", "OTLP collector for request and TCP connection spans: host:port or http(s)://host:port/path (OTLP/HTTP, /v1/traces), grpc://host:port (OTLP/gRPC); empty: tracing off")
	fs.StringVar(&f.protocol, "tracing-protocol", "", "OTLP protocol, as OTEL_EXPORTER_OTLP_PROTOCOL: http/protobuf (or http) or grpc; default: grpc for a grpc:// endpoint, else http/protobuf")
	fs.Float64Var(&f.sampling, "tracing-sampling", tracing.DefaultSamplingPercent, "percent (0-100) of new traces and TCP connections to sample; a caller's sampling decision is kept")
}

// exportOptions turns --tracing-endpoint and --tracing-protocol into the
// exporter's protocol, endpoint and TLS. For OTLP/gRPC, host:port,
// grpc://host:port and http://host:port are plaintext and https://host:port
// is TLS with the system roots (OpenTelemetry's OTEL_EXPORTER_OTLP_ENDPOINT
// rules); a URL path is refused, since gRPC has none.
func (f *tracingFlags) exportOptions(o *tracing.Options) error {
	grpcScheme := strings.HasPrefix(f.endpoint, "grpc://")
	switch f.protocol {
	case "":
		if !grpcScheme {
			o.Endpoint = f.endpoint
			return nil
		}
	case "grpc":
	case "http", "http/protobuf":
		if grpcScheme {
			return fmt.Errorf("--tracing-endpoint %q is a gRPC endpoint; it needs --tracing-protocol grpc", f.endpoint)
		}
		o.Endpoint = f.endpoint
		return nil
	default:
		return fmt.Errorf("--tracing-protocol %q: want http/protobuf or grpc", f.protocol)
	}
	o.Protocol = config.TracingGRPC
	if !strings.Contains(f.endpoint, "://") {
		o.Endpoint = f.endpoint
		return nil
	}
	u, err := url.Parse(f.endpoint)
	if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return fmt.Errorf("--tracing-endpoint %q: want host:port, grpc://host:port or http(s)://host:port for OTLP/gRPC", f.endpoint)
	}
	switch u.Scheme {
	case "grpc", "http":
	case "https":
		o.TLS = true
	default:
		return fmt.Errorf("--tracing-endpoint %q: scheme %q: want grpc, http or https for OTLP/gRPC", f.endpoint, u.Scheme)
	}
	o.Endpoint = u.Host
	return nil
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
		if o.tracing.protocol != "" {
			return nil, nil, fmt.Errorf("--tracing-protocol needs --tracing-endpoint")
		}
		return nil, func() {}, nil
	}
	topts := tracingDefaults(o, nodeID)
	if err := o.tracing.exportOptions(&topts); err != nil {
		return nil, nil, err
	}
	topts.SamplingPercent = o.tracing.sampling
	tr, err := tracing.New(topts)
	if err != nil {
		return nil, nil, fmt.Errorf("--tracing-endpoint %q --tracing-sampling %v: %w", o.tracing.endpoint, o.tracing.sampling, err)
	}
	log.Info("tracing on", "endpoint", o.tracing.endpoint, "protocol", topts.Protocol.String(), "sampling_percent", o.tracing.sampling)
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
