package translate_test

import (
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tinymesh/tinymesh/xds/mesh"
	"github.com/tinymesh/tinymesh/xds/source/file"
	"github.com/tinymesh/tinymesh/xds/translate"
)

const base = `apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: backend-v1}
spec:
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: backend-v2}
spec:
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: prod}
spec:
  ports: [{name: http, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend}
spec:
  parentRefs: [{kind: Service, name: backend, port: 8080}]
  rules:
`

func mustModel(t testing.TB, docs string) *mesh.Model {
	t.Helper()
	m := &mesh.Model{}
	if err := file.Decode("t.yaml", []byte(docs), m); err != nil {
		t.Fatalf("decode: %v", err)
	}
	m.Normalize()
	if err := m.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	return m
}

var sidecar = mesh.Workload{NodeID: "n", Namespace: "default", OutboundHTTPAddr: "127.0.0.1:15001"}

// backendRoutes translates rules for the backend Service and returns the routes of
// its virtual host on outbound_http (or of its proxyless route configuration).
func backendRoutes(t *testing.T, rules string, node mesh.Workload) []*routev3.Route {
	t.Helper()
	r, err := translate.Translate(mustModel(t, base+rules), nil, &node, translate.Options{})
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	if err := translate.Consistent(r); err != nil {
		t.Fatalf("Consistent: %v", err)
	}
	for _, rc := range r.Routes {
		for _, vh := range rc.VirtualHosts {
			if rc.Name == "backend.default.svc.cluster.local:8080" || vh.Name == "backend.default.svc.cluster.local:8080" {
				return vh.Routes
			}
		}
	}
	t.Fatalf("no virtual host for backend in %v", r.Routes)
	return nil
}

func cluster(name string) string { return "outbound|8080||" + name + ".default.svc.cluster.local" }

func TestRoutes(t *testing.T) {
	prefix := func(p string) *routev3.RouteMatch {
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
	}
	toCluster := func(name string, timeout int64) *routev3.Route_Route {
		return &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster(name)},
			Timeout:          &durationpb.Duration{Seconds: timeout},
		}}
	}
	for _, tc := range []struct {
		name  string
		rules string
		node  mesh.Workload
		want  []*routev3.Route
	}{
		{
			name:  "zero weight dropped",
			rules: "  - backendRefs: [{name: backend-v1, port: 8080, weight: 0}, {name: backend-v2, port: 8080, weight: 5}]\n",
			node:  sidecar,
			want:  []*routev3.Route{{Name: "default/backend/rule0/match0", Match: prefix("/"), Action: toCluster("backend-v2", 0)}},
		},
		{
			name:  "all weights zero is a 500",
			rules: "  - backendRefs: [{name: backend-v1, port: 8080, weight: 0}]\n",
			node:  sidecar,
			want: []*routev3.Route{{Name: "default/backend/rule0/match0", Match: prefix("/"),
				Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 500}}}},
		},
		{
			name:  "weighted split with timeout",
			rules: "  - backendRefs: [{name: backend-v1, port: 8080, weight: 90}, {name: backend-v2, port: 8080, weight: 10}]\n    timeouts: {request: 2s}\n",
			node:  sidecar,
			want: []*routev3.Route{{Name: "default/backend/rule0/match0", Match: prefix("/"),
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
						Clusters: []*routev3.WeightedCluster_ClusterWeight{
							{Name: cluster("backend-v1"), Weight: wrapperspb.UInt32(90)},
							{Name: cluster("backend-v2"), Weight: wrapperspb.UInt32(10)},
						},
					}},
					Timeout: &durationpb.Duration{Seconds: 2},
				}}}},
		},
		{
			name: "header modifier and precedence",
			rules: `  - backendRefs: [{name: backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /api/}, method: GET}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: X-A, value: "1"}], add: [{name: x-b, value: "2"}], remove: [x-c]}
    backendRefs: [{name: backend-v2, port: 8080}]
`,
			node: sidecar,
			want: []*routev3.Route{
				{
					Name: "default/backend/rule1/match0",
					Match: &routev3.RouteMatch{
						PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api"},
						Headers: []*routev3.HeaderMatcher{{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
							StringMatch: stringExact("GET")}}},
					},
					Action: toCluster("backend-v2", 0),
					RequestHeadersToAdd: []*corev3.HeaderValueOption{
						{Header: &corev3.HeaderValue{Key: "x-a", Value: "1"}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD},
						{Header: &corev3.HeaderValue{Key: "x-b", Value: "2"}, AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD},
					},
					RequestHeadersToRemove: []string{"x-c"},
				},
				{Name: "default/backend/rule0/match0", Match: prefix("/"), Action: toCluster("backend-v1", 0)},
			},
		},
		{
			name:  "proxyless prefix becomes path plus prefix",
			rules: "  - matches: [{path: {type: PathPrefix, value: /svc}}]\n    backendRefs: [{name: backend-v1, port: 8080}]\n    timeouts: {request: 1s}\n",
			node:  mesh.Workload{NodeID: "p", Namespace: "default"},
			want: []*routev3.Route{
				{Name: "default/backend/rule0/match0", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/svc"}},
					Action: proxylessAction(cluster("backend-v1"), 1)},
				{Name: "default/backend/rule0/match0/1", Match: prefix("/svc/"), Action: proxylessAction(cluster("backend-v1"), 1)},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := backendRoutes(t, tc.rules, tc.node)
			if diff := cmp.Diff(tc.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("routes (-want +got):\n%s", diff)
			}
		})
	}
}

func stringExact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func proxylessAction(c string, secs int64) *routev3.Route_Route {
	return &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier:  &routev3.RouteAction_Cluster{Cluster: c},
		Timeout:           &durationpb.Duration{Seconds: secs},
		MaxStreamDuration: &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: &durationpb.Duration{Seconds: secs}},
	}}
}

func TestProxylessListenerNames(t *testing.T) {
	r, err := translate.Translate(mustModel(t, base+"  - backendRefs: [{name: backend, port: 8080}]\n"), nil,
		&mesh.Workload{NodeID: "p", Namespace: "prod"}, translate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range r.Listeners {
		got = append(got, l.Name)
	}
	want := []string{
		"backend-v1.default.svc.cluster.local:8080", "backend-v1.default:8080",
		"backend-v2.default.svc.cluster.local:8080", "backend-v2.default:8080",
		"backend.default.svc.cluster.local:8080", "backend.default:8080",
		"other.prod.svc.cluster.local:8080", "other.prod:8080", "other:8080",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("listeners (-want +got):\n%s", diff)
	}
}

func TestDeterministic(t *testing.T) {
	m := loadModel(t)
	all := []mesh.Workload{frontend, backendV1, backendV2, db, client}
	for _, node := range all {
		a, err := translate.Translate(m, all, &node, translate.Options{})
		if err != nil {
			t.Fatal(err)
		}
		// Reverse the workloads: the output must not depend on their order.
		rev := []mesh.Workload{client, db, backendV2, backendV1, frontend}
		b, err := translate.Translate(m, rev, &node, translate.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if string(marshal(t, a)) != string(marshal(t, b)) {
			t.Errorf("node %s: output depends on workload order", node.NodeID)
		}
		if !proto.Equal(a.Clusters[0], b.Clusters[0]) {
			t.Errorf("node %s: first cluster differs", node.NodeID)
		}
	}
}

func TestWorkloadFromNode(t *testing.T) {
	md := func(m map[string]any) *structpb.Struct {
		s, err := structpb.NewStruct(m)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct {
		name      string
		node      *corev3.Node
		want      mesh.Workload
		proxyless bool
		wantErr   bool
	}{
		{
			name: "sidecar",
			node: &corev3.Node{Id: "backend-v2.default~abc", Cluster: "backend-v2.default", Metadata: md(map[string]any{
				"NAMESPACE": "default", "WORKLOAD_NAME": "backend-v2", "LABELS": map[string]any{"app": "backend", "version": "v2"},
				"INBOUND_ADDR": "127.0.0.1:15006", "APP_ADDR": "127.0.0.1:8080", "OUTBOUND_HTTP_ADDR": "127.0.0.1:15001",
			})},
			want: mesh.Workload{NodeID: "backend-v2.default~abc", Name: "backend-v2", Namespace: "default", ServiceAccount: "backend-v2",
				Labels:      map[string]string{"app": "backend", "version": "v2"},
				InboundAddr: "127.0.0.1:15006", AppAddr: "127.0.0.1:8080", OutboundHTTPAddr: "127.0.0.1:15001"},
		},
		{
			name:      "proxyless from cluster",
			node:      &corev3.Node{Id: "c~1", Cluster: "client.prod"},
			want:      mesh.Workload{NodeID: "c~1", Name: "client", Namespace: "prod", ServiceAccount: "client"},
			proxyless: true,
		},
		{
			name: "sidecar without listeners is not proxyless",
			node: &corev3.Node{Id: "lonely.default~1", Cluster: "lonely.default", UserAgentName: "meshproxy"},
			want: mesh.Workload{NodeID: "lonely.default~1", Name: "lonely", Namespace: "default", ServiceAccount: "lonely", Sidecar: true},
		},
		{name: "no id", node: &corev3.Node{}, wantErr: true},
		{name: "bad address", node: &corev3.Node{Id: "x", Metadata: md(map[string]any{"INBOUND_ADDR": "localhost:80"})}, wantErr: true},
		{name: "bad outbound ip", node: &corev3.Node{Id: "x", Metadata: md(map[string]any{"OUTBOUND_IP": "1.2.3"})}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := translate.WorkloadFromNode(tc.node)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error = %v, wantErr %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" && !tc.wantErr {
				t.Errorf("workload (-want +got):\n%s", diff)
			}
			if p := got.Proxyless(); !tc.wantErr && p != tc.proxyless {
				t.Errorf("Proxyless() = %v, want %v", p, tc.proxyless)
			}
		})
	}
}

func TestConsistentCatchesMissing(t *testing.T) {
	m := loadModel(t)
	all := []mesh.Workload{frontend, backendV1, backendV2, db, client}
	for _, tc := range []struct {
		name string
		node mesh.Workload
		drop func(r *translate.Resources)
		want string
	}{
		{"route cluster", frontend, func(r *translate.Resources) {
			r.Clusters = slices.DeleteFunc(r.Clusters, func(c *clusterv3.Cluster) bool {
				return c.Name == "outbound|8080||backend-v2.default.svc.cluster.local"
			})
			r.Endpoints = slices.DeleteFunc(r.Endpoints, func(c *endpointv3.ClusterLoadAssignment) bool {
				return c.ClusterName == "outbound|8080||backend-v2.default.svc.cluster.local"
			})
		}, `cluster "outbound|8080||backend-v2.default.svc.cluster.local" missing`},
		{"tcp proxy cluster", db, func(r *translate.Resources) {
			r.Clusters = slices.DeleteFunc(r.Clusters, func(c *clusterv3.Cluster) bool { return c.Name == "inbound|5432||" })
		}, `Listener "inbound": tcp_proxy cluster "inbound|5432||" missing`},
		{"load assignment", frontend, func(r *translate.Resources) { r.Endpoints = r.Endpoints[1:] }, "mismatched"},
		{"api listener route", client, func(r *translate.Resources) { r.Routes = r.Routes[1:] }, "API listener route configuration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := translate.Translate(m, all, &tc.node, translate.Options{})
			if err != nil {
				t.Fatal(err)
			}
			tc.drop(r)
			err = translate.Consistent(r)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Consistent: got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
