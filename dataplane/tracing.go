package dataplane

import (
	"context"
	"fmt"
	"net"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/tracing"
)

// tcpTracerLocked is the tracer of a TCP listener: its own tracing config's
// (from the listener's metadata), else the proxy's default (nil: off).
func (p *Proxy) tcpTracerLocked(tcp *config.TCPProxy) *tracing.Tracer {
	if tcp.Tracing != nil {
		return p.traced[*tcp.Tracing] // nil if it could not be built
	}
	return p.tracer
}

// dialCluster connects a tracing exporter to an endpoint of the named
// cluster of the config in force, picked round robin and dialed with the
// cluster's transport (TLS origination included), as Envoy's envoy_grpc
// sends to a cluster. It runs on the exporter's goroutine and takes no lock.
func (p *Proxy) dialCluster(ctx context.Context, name string) (net.Conn, error) {
	c, ok := p.clustersNow.Load().Get(name)
	if !ok {
		return nil, fmt.Errorf("tracing: cluster %q is not in the config in force", name)
	}
	addr, ok := c.Pick() // as traffic picks: healthy endpoints first
	if !ok {
		return nil, fmt.Errorf("tracing: cluster %q has no healthy endpoint", name)
	}
	return c.Upstream.DialContext(ctx, "tcp", addr)
}
