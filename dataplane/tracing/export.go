package tracing

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tinymesh/tinymesh/dataplane/config"
)

// clusterTarget is the gRPC target of a channel to a cluster: the
// passthrough resolver hands it to the context dialer, which ignores it and
// dials the cluster, so the cluster's name (which may hold '|') never has to
// parse as a URI.
const clusterTarget = "passthrough:///cluster"

// newExporter builds the OTLP exporter of o and a func that releases what
// the exporter does not own. Neither protocol connects here: OTLP/HTTP dials
// per export, and the gRPC channel stays idle until the first export.
func newExporter(o Options) (sdktrace.SpanExporter, func() error, error) {
	nop := func() error { return nil }
	if o.Protocol != config.TracingGRPC {
		if o.Endpoint == "" {
			return nil, nil, errors.New("tracing: endpoint is required")
		}
		var eopts []otlptracehttp.Option
		if strings.Contains(o.Endpoint, "://") {
			eopts = append(eopts, otlptracehttp.WithEndpointURL(o.Endpoint))
		} else {
			eopts = append(eopts, otlptracehttp.WithEndpoint(o.Endpoint), otlptracehttp.WithInsecure())
		}
		if o.Timeout > 0 {
			eopts = append(eopts, otlptracehttp.WithTimeout(o.Timeout))
		}
		exp, err := otlptracehttp.New(context.Background(), eopts...)
		if err != nil {
			return nil, nil, fmt.Errorf("tracing: OTLP/HTTP exporter for %q: %w", o.Endpoint, err)
		}
		return exp, nop, nil
	}

	// OTLP/gRPC on a channel of our own (grpc-go is already in the proxy for
	// ADS), so that a cluster can be dialed through the data plane's
	// transport, which is what Envoy's envoy_grpc does.
	var (
		target string
		dopts  []grpc.DialOption
		what   string
	)
	switch {
	case o.Cluster != "":
		if o.DialCluster == nil {
			return nil, nil, fmt.Errorf("tracing: cluster %q: no cluster dialer", o.Cluster)
		}
		cluster, dial := o.Cluster, o.DialCluster
		authority := o.Authority
		if authority == "" {
			authority = cluster // Envoy's default :authority for envoy_grpc
		}
		target, what = clusterTarget, "cluster "+cluster
		dopts = append(dopts,
			// The cluster's transport adds TLS when the cluster has it; the
			// channel itself is plaintext on top of that connection.
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithAuthority(authority),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return dial(ctx, cluster) }))
	case o.Endpoint != "":
		target, what = o.Endpoint, o.Endpoint
		creds := insecure.NewCredentials()
		if o.TLS {
			creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
		}
		dopts = append(dopts, grpc.WithTransportCredentials(creds))
	default:
		return nil, nil, errors.New("tracing: endpoint or cluster is required")
	}
	cc, err := grpc.NewClient(target, dopts...)
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: OTLP/gRPC channel to %s: %w", what, err)
	}
	eopts := []otlptracegrpc.Option{otlptracegrpc.WithGRPCConn(cc)}
	if o.Timeout > 0 {
		eopts = append(eopts, otlptracegrpc.WithTimeout(o.Timeout))
	}
	exp, err := otlptracegrpc.New(context.Background(), eopts...)
	if err != nil {
		cc.Close()
		return nil, nil, fmt.Errorf("tracing: OTLP/gRPC exporter for %s: %w", what, err)
	}
	// The exporter does not close a channel it was given.
	return exp, cc.Close, nil
}
