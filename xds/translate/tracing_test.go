package translate_test

import (
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
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

// tracingByListener decodes r's listeners and clusters as meshproxy does and
// returns every listener's tracing (HTTP: the HCM's; TCP: the metadata's),
// checking that each gRPC collector cluster decodes too.
func tracingByListener(t *testing.T, r *translate.Resources) map[string]*config.Tracing {
	t.Helper()
	clusters := map[string]bool{}
	for _, c := range r.Clusters {
		if _, err := resource.DecodeCluster(c); err != nil {
			t.Fatalf("DecodeCluster(%s): %v", c.Name, err)
		}
		clusters[c.Name] = true
	}
	got := map[string]*config.Tracing{}
	for _, l := range r.Listeners {
		d, err := resource.DecodeListener(l)
		if err != nil {
			t.Fatalf("DecodeListener(%s): %v", l.Name, err)
		}
		var tr *config.Tracing
		if d.Config.HTTP != nil {
			tr = d.Config.HTTP.Tracing
		} else {
			tr = d.Config.TCP.Tracing
		}
		got[l.Name] = tr
		if tr != nil && tr.Cluster != "" && !clusters[tr.Cluster] {
			t.Errorf("listener %s traces to cluster %q, which the node does not have", l.Name, tr.Cluster)
		}
	}
	return got
}

// TestTracingDecodes: the tracing Translate emits for a Telemetry's tracing
// section is what meshproxy's decoder accepts, on every listener (HTTP and
// TCP) of the nodes it applies to and on none of the others.
func TestTracingDecodes(t *testing.T) {
	want := &config.Tracing{Endpoint: "http://otel-collector.observability:4318/v1/traces", Timeout: 5 * time.Second, SamplingPercent: 10}
	const outTCP = "outbound_tcp|5432||legacy.default.svc.cluster.local"
	for _, tc := range []struct {
		name string
		node mesh.Workload
		want map[string]*config.Tracing // listener name -> tracing
	}{
		{"mesh-wide, outbound", caller, map[string]*config.Tracing{translate.OutboundHTTPName: want, outTCP: want}},
		{"mesh-wide, inbound, beside access logs", apiV1, map[string]*config.Tracing{translate.InboundName: want}},
		{"mesh-wide, tcp inbound", legacyW, map[string]*config.Tracing{translate.InboundName: want}},
		{"disabled by selector", apiV2, map[string]*config.Tracing{translate.InboundName: nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := translateFor(t, tracingTelemetries, tc.node, translate.Options{})
			if d := cmp.Diff(tc.want, tracingByListener(t, r)); d != "" {
				t.Errorf("tracing by listener (-want +got):\n%s", d)
			}
		})
	}
}

// TestTracingGRPC: protocol grpc becomes grpc_service envoy_grpc to a
// plaintext HTTP/2 collector cluster (STRICT_DNS for a name, STATIC for an
// IP), added once per node, valid for Envoy (the translator's PGV check and
// Consistent run in translateFor) and for meshproxy.
func TestTracingGRPC(t *testing.T) {
	for _, tc := range []struct {
		name, endpoint, cluster string
		typ                     clusterv3.Cluster_DiscoveryType
	}{
		{"dns name", "otel-collector.observability:4317", "opentelemetry|otel-collector.observability:4317", clusterv3.Cluster_STRICT_DNS},
		{"ip", "10.0.0.9:4317", "opentelemetry|10.0.0.9:4317", clusterv3.Cluster_STATIC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			docs := `apiVersion: mesh.tinymesh.io/v1alpha1
kind: Telemetry
metadata: {name: mesh, namespace: tinymesh-system}
spec:
  tracing: {protocol: grpc, endpoint: "` + tc.endpoint + `", samplingPercent: 50}
`
			want := &config.Tracing{Protocol: config.TracingGRPC, Cluster: tc.cluster, Authority: tc.endpoint, Timeout: 5 * time.Second, SamplingPercent: 50}
			r := translateFor(t, docs, caller, translate.Options{})
			got := tracingByListener(t, r)
			wantAll := map[string]*config.Tracing{translate.OutboundHTTPName: want, "outbound_tcp|5432||legacy.default.svc.cluster.local": want}
			if d := cmp.Diff(wantAll, got); d != "" {
				t.Errorf("tracing by listener (-want +got):\n%s", d)
			}
			var found []*clusterv3.Cluster
			for _, c := range r.Clusters {
				if c.Name == tc.cluster {
					found = append(found, c)
				}
			}
			if len(found) != 1 {
				t.Fatalf("collector cluster %q: found %d, want 1", tc.cluster, len(found))
			}
			c := found[0]
			if c.GetType() != tc.typ || c.GetTransportSocket() != nil {
				t.Errorf("collector cluster type %v, transport socket %v; want %v, plaintext", c.GetType(), c.GetTransportSocket(), tc.typ)
			}
			d, err := resource.DecodeCluster(c)
			if err != nil {
				t.Fatal(err)
			}
			if d.Config.Protocol != config.ProtocolH2C {
				t.Errorf("collector cluster protocol %v, want h2c (gRPC)", d.Config.Protocol)
			}
		})
	}
}
