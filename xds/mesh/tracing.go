package mesh

import (
	"math"
	"net/url"

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
		if tr.Endpoint != "" || tr.SamplingPercent != nil {
			v.add(k, f+".disabled", "endpoint and samplingPercent must be empty when disabled")
		}
		return
	}
	if u, err := url.Parse(tr.Endpoint); tr.Endpoint == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.add(k, f+".endpoint", "must be an http:// or https:// URL of an OTLP/HTTP collector, got %q", tr.Endpoint)
	}
	if p := tr.SamplingPercent; p != nil && (math.IsNaN(*p) || *p < 0 || *p > 100) {
		v.add(k, f+".samplingPercent", "must be in 0..100, got %v", *p)
	}
}
