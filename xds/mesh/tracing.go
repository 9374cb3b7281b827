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
	var nsWide, root *v1alpha1.Tracing
	found := func(tr *v1alpha1.Tracing) *v1alpha1.Tracing {
		if tr.Disabled {
			return nil
		}
		return tr
	}
	for _, t := range m.Telemetries {
		tr := t.Spec.Tracing
		if tr == nil {
			continue
		}
		switch {
		case t.Namespace == namespace && t.Spec.Selector != nil:
			if SelectsLabels(t.Spec.Selector.MatchLabels, labels) {
				return found(tr)
			}
		case t.Namespace == namespace && nsWide == nil:
			nsWide = tr
		case t.Namespace == rootNamespace && t.Spec.Selector == nil && root == nil:
			root = tr
		}
	}
	switch {
	case nsWide != nil:
		return found(nsWide)
	case root != nil:
		return found(root)
	}
	return nil
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
