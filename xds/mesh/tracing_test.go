package mesh_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tinymesh/tinymesh/xds/mesh"
	"github.com/tinymesh/tinymesh/xds/mesh/v1alpha1"
)

func tracingTelemetry(ns, name string, sel map[string]string, tr *v1alpha1.Tracing, a *v1alpha1.AccessLogging) *v1alpha1.Telemetry {
	t := telemetry(ns, name, sel, a)
	t.Spec.Tracing = tr
	return t
}

func TestTracing(t *testing.T) {
	backend := map[string]string{"app": "backend", "version": "v1"}
	mesh1 := &v1alpha1.Tracing{Endpoint: "http://collector:4318/v1/traces"}
	ns := &v1alpha1.Tracing{Endpoint: "http://ns-collector:4318/v1/traces", SamplingPercent: ptr.To(5.0)}
	off := &v1alpha1.Tracing{Disabled: true}
	logs := &v1alpha1.AccessLogging{}
	for _, tc := range []struct {
		name string
		ts   []*v1alpha1.Telemetry
		want *v1alpha1.Tracing
	}{
		{"none", nil, nil},
		{"mesh-wide", []*v1alpha1.Telemetry{tracingTelemetry("tinymesh-system", "m", nil, mesh1, nil)}, mesh1},
		{"namespace beats mesh", []*v1alpha1.Telemetry{
			tracingTelemetry("tinymesh-system", "m", nil, mesh1, nil), tracingTelemetry("default", "d", nil, ns, nil)}, ns},
		{"selector turns it off", []*v1alpha1.Telemetry{
			tracingTelemetry("tinymesh-system", "m", nil, mesh1, nil), tracingTelemetry("default", "b", backend, off, nil)}, nil},
		{"access logs alone do not hide tracing", []*v1alpha1.Telemetry{
			tracingTelemetry("tinymesh-system", "m", nil, mesh1, nil), tracingTelemetry("default", "b", backend, nil, logs)}, mesh1},
		{"other namespace", []*v1alpha1.Telemetry{tracingTelemetry("shop", "d", nil, ns, nil)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &mesh.Model{Telemetries: tc.ts}
			m.Normalize()
			if err := m.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			got := m.Tracing("default", backend, mesh.DefaultRootNamespace)
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("Tracing (-want +got):\n%s", d)
			}
		})
	}
}

func TestValidateTracing(t *testing.T) {
	for _, tc := range []struct {
		name string
		tr   *v1alpha1.Tracing
		want string // "" : valid
	}{
		{"valid", &v1alpha1.Tracing{Endpoint: "https://collector:4318/v1/traces", SamplingPercent: ptr.To(0.5)}, ""},
		{"disabled", &v1alpha1.Tracing{Disabled: true}, ""},
		{"no endpoint", &v1alpha1.Tracing{}, `Telemetry default/a: spec.tracing.endpoint: must be an http:// or https:// URL of an OTLP/HTTP collector, got ""`},
		{"host:port", &v1alpha1.Tracing{Endpoint: "collector:4318"}, `Telemetry default/a: spec.tracing.endpoint: must be an http:// or https:// URL of an OTLP/HTTP collector, got "collector:4318"`},
		{"sampling", &v1alpha1.Tracing{Endpoint: "http://c:4318/v1/traces", SamplingPercent: ptr.To(-1.0)}, "Telemetry default/a: spec.tracing.samplingPercent: must be in 0..100, got -1"},
		{"disabled with endpoint", &v1alpha1.Tracing{Disabled: true, Endpoint: "http://c:4318"}, "Telemetry default/a: spec.tracing.disabled: endpoint, protocol and samplingPercent must be empty when disabled"},
		{"grpc", &v1alpha1.Tracing{Protocol: "grpc", Endpoint: "otel-collector.observability:4317"}, ""},
		{"grpc ip", &v1alpha1.Tracing{Protocol: "grpc", Endpoint: "[::1]:4317"}, ""},
		{"explicit http", &v1alpha1.Tracing{Protocol: "http", Endpoint: "http://c:4318/v1/traces"}, ""},
		{"grpc url", &v1alpha1.Tracing{Protocol: "grpc", Endpoint: "http://c:4317"}, `Telemetry default/a: spec.tracing.endpoint: must be host:port of an OTLP/gRPC collector, got "http://c:4317": address http://c:4317: too many colons in address`},
		{"grpc port", &v1alpha1.Tracing{Protocol: "grpc", Endpoint: "c:0"}, `Telemetry default/a: spec.tracing.endpoint: must be host:port of an OTLP/gRPC collector, got "c:0": port "0": want 1..65535`},
		{"grpc host", &v1alpha1.Tracing{Protocol: "grpc", Endpoint: "c_x:4317"}, `Telemetry default/a: spec.tracing.endpoint: must be host:port of an OTLP/gRPC collector, got "c_x:4317": host "c_x": want a DNS name or an IP address`},
		{"unknown protocol", &v1alpha1.Tracing{Protocol: "zipkin", Endpoint: "c:9411"}, `Telemetry default/a: spec.tracing.protocol: unsupported "zipkin" (want http or grpc)`},
		{"disabled with protocol", &v1alpha1.Tracing{Disabled: true, Protocol: "grpc"}, "Telemetry default/a: spec.tracing.disabled: endpoint, protocol and samplingPercent must be empty when disabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &mesh.Model{Telemetries: []*v1alpha1.Telemetry{
				{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "default"}, Spec: v1alpha1.TelemetrySpec{Tracing: tc.tr}}}}
			m.Normalize()
			err := m.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate: %v, want no error", err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Errorf("Validate error:\n got %v\nwant %s", err, tc.want)
			}
		})
	}
}
