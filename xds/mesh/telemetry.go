package mesh

import (
	"math"
	"path/filepath"

	"github.com/tinymesh/tinymesh/xds/mesh/v1alpha1"
)

// AccessLogging returns the access log settings of a workload in namespace with
// labels, or nil when it has none (no Telemetry applies, or the one that applies
// is disabled). The Telemetry is chosen as MTLSMode chooses a
// PeerAuthentication: one with a selector matching the workload in its
// namespace (the first in name order), then the namespace-wide one, then the
// mesh-wide one (no selector, in rootNamespace).
func (m *Model) AccessLogging(namespace string, labels map[string]string, rootNamespace string) *v1alpha1.AccessLogging {
	t, ok := scoped(m.Telemetries, func(t *v1alpha1.Telemetry) (string, *v1alpha1.WorkloadSelector, bool) {
		return t.Namespace, t.Spec.Selector, t.Spec.AccessLogging != nil // else: a Telemetry for tracing only
	}, namespace, labels, rootNamespace)
	if !ok || t.Spec.AccessLogging.Disabled {
		return nil
	}
	return t.Spec.AccessLogging
}

func (v *validator) telemetry(k Key, t *v1alpha1.Telemetry) {
	v.name(k, "metadata.name", t.Name)
	v.label(k, "metadata.namespace", t.Namespace)
	if t.Spec.Selector != nil {
		v.labels(k, "spec.selector.matchLabels", t.Spec.Selector.MatchLabels)
	}
	v.tracing(k, t.Spec.Tracing) // tracing.go
	a := t.Spec.AccessLogging
	if a == nil {
		if t.Spec.Tracing == nil {
			v.add(k, "spec.accessLogging", "required unless spec.tracing is set")
		}
		return
	}
	const f = "spec.accessLogging"
	if a.Disabled {
		if a.Format != "" || a.Path != "" || a.SamplingPercent != nil {
			v.add(k, f+".disabled", "format, path and samplingPercent must be empty when disabled")
		}
		return
	}
	switch a.Format {
	case "", v1alpha1.AccessLogJSON, v1alpha1.AccessLogText:
	default:
		v.add(k, f+".format", "unsupported %q (want json or text)", a.Format)
	}
	if a.Path != "" && (!filepath.IsAbs(a.Path) || filepath.Clean(a.Path) != a.Path) {
		v.add(k, f+".path", "must be /dev/stdout, /dev/stderr or a clean absolute file path, got %q", a.Path)
	}
	if p := a.SamplingPercent; p != nil {
		switch {
		case math.IsNaN(*p) || *p < 0 || *p > 100:
			v.add(k, f+".samplingPercent", "must be in 0..100, got %v", *p)
		case math.Abs(*p*10_000-math.Round(*p*10_000)) > 1e-6:
			v.add(k, f+".samplingPercent", "at most four decimals (parts per million), got %v", *p)
		}
	}
}
