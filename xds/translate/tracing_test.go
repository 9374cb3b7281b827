package translate_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/xds/mesh"
	"github.com/tinymesh/tinymesh/xds/resource"
	"github.com/tinymesh/tinymesh/xds/translate"
)

// tracingTelemetries: mesh-wide tracing at 10%, turned off for api v2; an
// access-log-only Telemetry for api v1 does not hide the mesh-wide tracing.
const tracingTelemetries = `apiVersion: mesh.tinymesh.io/v1alpha1
kind: Telemetry
metadata: {name: mesh, namespace: tinymesh-system}
spec:
  tracing: {endpoint: "http://otel-collector.observability:4318/v1/traces", samplingPercent: 10}
---
apiVersion: mesh.tinymesh.io/v1alpha1
kind: Telemetry
metadata: {name: api-v2}
spec:
  selector: {matchLabels: {app: api, version: v2}}
  tracing: {disabled: true}
---
apiVersion: mesh.tinymesh.io/v1alpha1
kind: Telemetry
metadata: {name: api-v1-logs}
spec:
  selector: {matchLabels: {app: api, version: v1}}
  accessLogging: {format: text}
`

// TestTracingDecodes: the HCM tracing Translate emits for a Telemetry's
// tracing section is what meshproxy's decoder accepts, on every HTTP
// listener of the nodes it applies to and on none of the others.
func TestTracingDecodes(t *testing.T) {
	want := &config.Tracing{Endpoint: "http://otel-collector.observability:4318/v1/traces", Timeout: 5 * time.Second, SamplingPercent: 10}
	for _, tc := range []struct {
		name string
		node mesh.Workload
		want map[string]*config.Tracing // HTTP listener name -> tracing
	}{
		{"mesh-wide, outbound", caller, map[string]*config.Tracing{translate.OutboundHTTPName: want}},
		{"mesh-wide, inbound, beside access logs", apiV1, map[string]*config.Tracing{translate.InboundName: want}},
		{"disabled by selector", apiV2, map[string]*config.Tracing{translate.InboundName: nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := translateFor(t, tracingTelemetries, tc.node, translate.Options{})
			got := map[string]*config.Tracing{}
			for _, l := range r.Listeners {
				d, err := resource.DecodeListener(l)
				if err != nil {
					t.Fatalf("DecodeListener(%s): %v", l.Name, err)
				}
				if d.Config.HTTP != nil {
					got[l.Name] = d.Config.HTTP.Tracing
				}
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("tracing by listener (-want +got):\n%s", d)
			}
		})
	}
}
