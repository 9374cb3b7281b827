package translate_test

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/xds/mesh"
	"github.com/tinymesh/tinymesh/xds/resource"
	"github.com/tinymesh/tinymesh/xds/translate"
)

// TestTelemetryDecodes: what Translate emits for Telemetry (access_log) and for
// endpoint metadata is what meshproxy's decoder (xds/resource) accepts, and it
// decodes to the settings of the model's Telemetry that applies to each node.
func TestTelemetryDecodes(t *testing.T) {
	m := loadModel(t)
	all := []mesh.Workload{frontend, backendV1, backendV2, db, client}
	jsonKeys := []string{
		"authority", "bytes_received", "bytes_sent", "downstream_peer_uri_san", "downstream_remote_address",
		"duration", "grpc_status", "method", "path", "protocol", "request_id", "response_code",
		"response_flags", "route_name", "start_time", "trace_id", "upstream_cluster", "upstream_host",
	}
	for _, tc := range []struct {
		name string
		node mesh.Workload
		// listeners is every listener name the node gets; want its access logs
		// (the same on each).
		listeners []string
		want      func(t *testing.T, logs []config.AccessLog)
	}{
		{"namespace json", frontend, []string{"inbound", "outbound_http", "outbound_tcp|5432||db.data.svc.cluster.local"},
			func(t *testing.T, logs []config.AccessLog) {
				if len(logs) != 1 {
					t.Fatalf("got %d access logs, want 1", len(logs))
				}
				l := logs[0]
				if l.Path != "/dev/stdout" || l.Text != "" || l.SamplePerMillion != 1_000_000 {
					t.Errorf("got path %q text %q sampling %d, want /dev/stdout, JSON, all", l.Path, l.Text, l.SamplePerMillion)
				}
				var keys []string
				for _, f := range l.JSON {
					keys = append(keys, f.Key)
				}
				if diff := cmp.Diff(jsonKeys, keys); diff != "" {
					t.Errorf("JSON keys (-want +got):\n%s", diff)
				}
				if i := slices.IndexFunc(l.JSON, func(f config.AccessLogField) bool { return f.Key == "downstream_peer_uri_san" }); i < 0 || l.JSON[i].Format != "%DOWNSTREAM_PEER_URI_SAN%" {
					t.Errorf("downstream_peer_uri_san field: %+v", l.JSON)
				}
			}},
		{"selector text sampled", backendV2, []string{"inbound"}, func(t *testing.T, logs []config.AccessLog) {
			if len(logs) != 1 {
				t.Fatalf("got %d access logs, want 1", len(logs))
			}
			l := logs[0]
			if l.Path != "/var/log/tinymesh/access.log" || l.Text == "" || l.JSON != nil || l.SamplePerMillion != 250_000 {
				t.Errorf("got %+v, want the text file sampled at 250000 per million", l)
			}
		}},
		{"no telemetry", db, []string{"inbound"}, func(t *testing.T, logs []config.AccessLog) {
			if len(logs) != 0 {
				t.Errorf("got %+v, want no access log", logs)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := translate.Translate(m, all, &tc.node, goldenOptions(tc.node))
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			var names []string
			for _, l := range r.Listeners {
				names = append(names, l.Name)
				d, err := resource.DecodeListener(l)
				if err != nil {
					t.Fatalf("DecodeListener(%s): %v", l.Name, err)
				}
				var logs []config.AccessLog
				switch c := d.Config; {
				case c.HTTP != nil:
					logs = c.HTTP.AccessLogs
				case c.TCP != nil:
					logs = c.TCP.AccessLogs
				}
				t.Run(l.Name, func(t *testing.T) { tc.want(t, logs) })
			}
			if diff := cmp.Diff(tc.listeners, names); diff != "" {
				t.Errorf("listeners (-want +got):\n%s", diff)
			}
		})
	}
}

// TestEndpointMetadataDecodes: EDS endpoints of meshed workloads carry
// {workload, namespace, version}, which the proxy's decoder reads back;
// EndpointSlice endpoints carry nothing.
func TestEndpointMetadataDecodes(t *testing.T) {
	m := loadModel(t)
	all := []mesh.Workload{frontend, backendV1, backendV2, db, client}
	r, err := translate.Translate(m, all, &frontend, goldenOptions(frontend))
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	got := map[string][]config.Endpoint{}
	for _, cla := range r.Endpoints {
		a, err := resource.DecodeClusterLoadAssignment(cla)
		if err != nil {
			t.Fatalf("DecodeClusterLoadAssignment(%s): %v", cla.ClusterName, err)
		}
		got[a.ClusterName] = a.Endpoints
	}
	ep := func(addr, w, ns, v string) config.Endpoint {
		return config.Endpoint{Address: addr, Weight: 1, Workload: w, Namespace: ns, Version: v}
	}
	for cluster, want := range map[string][]config.Endpoint{
		"outbound|8080||backend.default.svc.cluster.local": {
			ep("127.0.0.2:15006", "backend-v1", "default", "v1"), ep("127.0.0.3:15006", "backend-v2", "default", "v2"),
		},
		"outbound|5432||db.data.svc.cluster.local": {ep("127.0.0.4:15006", "db", "data", "")},
		// EndpointSlice addresses are outside the mesh: no workload.
		"outbound|7070||legacy.default.svc.cluster.local": {
			ep("10.0.0.7:17070", "", "", ""), ep("10.0.0.8:17070", "", "", ""), // 10.0.0.9 is not ready
		},
	} {
		if diff := cmp.Diff(want, got[cluster]); diff != "" {
			t.Errorf("%s endpoints (-want +got):\n%s", cluster, diff)
		}
	}
}
