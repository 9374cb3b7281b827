package mesh

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/tinymesh/tinymesh/xds/mesh/v1alpha1"
)

// Tracing returns the tracing settings of a workload in namespace with labels,
// or nil when it has none (no Telemetry with a tracing section applies, or the
// one that applies is disabled). The Telemetry is chosen as for AccessLogging,
// among those that have a tracing section.
func (m *Model) Tracing(namespace string, labels map[string]string, rootNamespace string) *v1alpha1.Tracing {
	t, ok := scoped(m.Telemetries, func(t *v1alpha1.Telemetry) (string, *v1alpha1.WorkloadSelector, bool) {
		return t.Namespace, t.Spec.Selector, t.Spec.Tracing != nil
	}, namespace, labels, rootNamespace)
	if !ok || t.Spec.Tracing.Disabled {
		return nil
	}
	return t.Spec.Tracing
}

// tracing validates a Telemetry's tracing section; nil is valid.
func (v *validator) tracing(k Key, tr *v1alpha1.Tracing) {
	if tr == nil {
		return
	}
	const f = "spec.tracing"
	if tr.Disabled {
		if tr.Endpoint != "" || tr.SamplingPercent != nil || tr.Protocol != "" {
			v.add(k, f+".disabled", "endpoint, protocol and samplingPercent must be empty when disabled")
		}
		return
	}
	switch tr.Protocol {
	case "", TracingHTTP:
		if u, err := url.Parse(tr.Endpoint); tr.Endpoint == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.add(k, f+".endpoint", "must be an http:// or https:// URL of an OTLP/HTTP collector, got %q", tr.Endpoint)
		}
	case TracingGRPC:
		if _, _, err := TracingGRPCAddress(tr.Endpoint); err != nil {
			v.add(k, f+".endpoint", "must be host:port of an OTLP/gRPC collector, got %q: %v", tr.Endpoint, err)
		}
	default:
		v.add(k, f+".protocol", "unsupported %q (want http or grpc)", tr.Protocol)
	}
	if p := tr.SamplingPercent; p != nil && (math.IsNaN(*p) || *p < 0 || *p > 100) {
		v.add(k, f+".samplingPercent", "must be in 0..100, got %v", *p)
	}
}

// Tracing protocols of a Telemetry's tracing section.
const (
	TracingHTTP = "http"
	TracingGRPC = "grpc"
)

// TracingGRPCAddress splits an OTLP/gRPC collector endpoint, host:port with
// a DNS name or IP address and a port in 1..65535.
func TracingGRPCAddress(endpoint string) (host string, port uint32, err error) {
	h, ps, err := net.SplitHostPort(endpoint)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || n == 0 {
		return "", 0, fmt.Errorf("port %q: want 1..65535", ps)
	}
	if _, ipErr := netip.ParseAddr(h); ipErr != nil && !validDNSName(h) {
		return "", 0, fmt.Errorf("host %q: want a DNS name or an IP address", h)
	}
	return h, uint32(n), nil
}

// validDNSName reports whether s is a DNS name: dot-separated labels of
// letters, digits and inner hyphens, 1..63 bytes each, 253 in all.
func validDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
