package mesh_test

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tinymesh/tinymesh/xds/mesh"
	"github.com/tinymesh/tinymesh/xds/mesh/v1alpha1"
)

func telemetry(ns, name string, sel map[string]string, a *v1alpha1.AccessLogging) *v1alpha1.Telemetry {
	t := &v1alpha1.Telemetry{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       v1alpha1.TelemetrySpec{AccessLogging: a},
	}
	if sel != nil {
		t.Spec.Selector = &v1alpha1.WorkloadSelector{MatchLabels: sel}
	}
	return t
}

func TestAccessLogging(t *testing.T) {
	backend := map[string]string{"app": "backend", "version": "v1"}
	stdout := &v1alpha1.AccessLogging{Path: "/dev/stdout"}
	file := &v1alpha1.AccessLogging{Path: "/var/log/a.log"}
	text := &v1alpha1.AccessLogging{Format: v1alpha1.AccessLogText}
	off := &v1alpha1.AccessLogging{Disabled: true}
	for _, tc := range []struct {
		name string
		ts   []*v1alpha1.Telemetry
		ns   string
		want *v1alpha1.AccessLogging
	}{
		{"none", nil, "default", nil},
		{"root", []*v1alpha1.Telemetry{telemetry("tinymesh-system", "m", nil, stdout)}, "default", stdout},
		{"root selector is for the root namespace only", []*v1alpha1.Telemetry{
			telemetry("tinymesh-system", "m", map[string]string{"app": "backend"}, stdout),
		}, "default", nil},
		{"namespace over root", []*v1alpha1.Telemetry{
			telemetry("default", "ns", nil, file), telemetry("tinymesh-system", "m", nil, stdout),
		}, "default", file},
		{"namespace disables root", []*v1alpha1.Telemetry{
			telemetry("default", "ns", nil, off), telemetry("tinymesh-system", "m", nil, stdout),
		}, "default", nil},
		{"other namespace ignored", []*v1alpha1.Telemetry{telemetry("prod", "ns", nil, file)}, "default", nil},
		{"selector over namespace; first name wins", []*v1alpha1.Telemetry{
			telemetry("default", "a", map[string]string{"app": "backend"}, text),
			telemetry("default", "b", map[string]string{"version": "v1"}, file),
			telemetry("default", "ns", nil, stdout),
		}, "default", text},
		{"selector disables namespace", []*v1alpha1.Telemetry{
			telemetry("default", "a", map[string]string{"app": "backend"}, off),
			telemetry("default", "ns", nil, stdout),
		}, "default", nil},
		{"selector not matching", []*v1alpha1.Telemetry{
			telemetry("default", "a", map[string]string{"app": "frontend"}, text),
			telemetry("default", "ns", nil, stdout),
		}, "default", stdout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &mesh.Model{Telemetries: tc.ts}
			if got := m.AccessLogging(tc.ns, backend, mesh.DefaultRootNamespace); got != tc.want {
				t.Errorf("AccessLogging = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestValidateTelemetry(t *testing.T) {
	for _, tc := range []struct {
		name string
		ts   []*v1alpha1.Telemetry
		want []string
	}{
		{"valid", []*v1alpha1.Telemetry{
			telemetry("default", "a", nil, &v1alpha1.AccessLogging{Format: v1alpha1.AccessLogText, Path: "/var/log/mesh/a.log", SamplingPercent: ptr.To(12.5)}),
			telemetry("default", "b", map[string]string{"app": "x"}, &v1alpha1.AccessLogging{Disabled: true}),
			telemetry("tinymesh-system", "m", nil, &v1alpha1.AccessLogging{SamplingPercent: ptr.To(0.0)}),
		}, nil},
		{"no accessLogging", []*v1alpha1.Telemetry{telemetry("default", "a", nil, nil)},
			[]string{"Telemetry default/a: spec.accessLogging: required unless spec.tracing is set"}},
		{"bad fields", []*v1alpha1.Telemetry{telemetry("default", "a", nil, &v1alpha1.AccessLogging{
			Format: "xml", Path: "logs/a.log", SamplingPercent: ptr.To(100.5),
		})}, []string{
			`Telemetry default/a: spec.accessLogging.format: unsupported "xml" (want json or text)`,
			`Telemetry default/a: spec.accessLogging.path: must be /dev/stdout, /dev/stderr or a clean absolute file path, got "logs/a.log"`,
			"Telemetry default/a: spec.accessLogging.samplingPercent: must be in 0..100, got 100.5",
		}},
		{"too precise", []*v1alpha1.Telemetry{telemetry("default", "a", nil, &v1alpha1.AccessLogging{SamplingPercent: ptr.To(0.00001)})},
			[]string{"Telemetry default/a: spec.accessLogging.samplingPercent: at most four decimals"}},
		{"disabled with settings", []*v1alpha1.Telemetry{telemetry("default", "a", nil, &v1alpha1.AccessLogging{Disabled: true, Path: "/dev/stderr"})},
			[]string{"Telemetry default/a: spec.accessLogging.disabled: format, path and samplingPercent must be empty when disabled"}},
		{"two namespace-wide", []*v1alpha1.Telemetry{
			telemetry("default", "a", nil, &v1alpha1.AccessLogging{}), telemetry("default", "b", nil, &v1alpha1.AccessLogging{}),
		}, []string{"Telemetry default/b: spec.selector: Telemetry default/a already applies to the whole namespace"}},
		{"bad selector", []*v1alpha1.Telemetry{telemetry("default", "a", map[string]string{"-x": "y"}, &v1alpha1.AccessLogging{})},
			[]string{`Telemetry default/a: spec.selector.matchLabels: invalid label key "-x"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &mesh.Model{Telemetries: tc.ts}
			m.Normalize()
			checkValidate(t, m, tc.want)
		})
	}
}
