package translate_test

import (
	"fmt"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/tinymesh/tinymesh/xds/mesh"
	"github.com/tinymesh/tinymesh/xds/translate"
)

// inboundSummary is the inbound side of a sidecar's resources, flattened so
// that a table test can spell it out: the listener's kind, its virtual hosts
// ("name domains... -> cluster") and the inbound clusters ("name addr proto").
type inboundSummary struct {
	Listener     string // "http" or "tcp -> <cluster>"
	VirtualHosts []string
	Clusters     []string
}

func summarizeInbound(t *testing.T, r *translate.Resources) inboundSummary {
	t.Helper()
	var s inboundSummary
	for _, l := range r.Listeners {
		if l.Name != translate.InboundName {
			continue
		}
		tc := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig()
		if tp := (&tcpv3.TcpProxy{}); tc.MessageIs(tp) {
			if err := tc.UnmarshalTo(tp); err != nil {
				t.Fatal(err)
			}
			s.Listener = "tcp -> " + tp.GetCluster()
			continue
		}
		h := &hcmv3.HttpConnectionManager{}
		if err := tc.UnmarshalTo(h); err != nil {
			t.Fatal(err)
		}
		s.Listener = "http"
		for _, vh := range h.GetRouteConfig().GetVirtualHosts() {
			var clusters []string
			for _, rt := range vh.GetRoutes() {
				clusters = append(clusters, rt.GetRoute().GetCluster())
			}
			s.VirtualHosts = append(s.VirtualHosts,
				vh.GetName()+" "+strings.Join(vh.GetDomains(), ",")+" -> "+strings.Join(clusters, ","))
		}
	}
	for _, c := range r.Clusters {
		if !strings.HasPrefix(c.Name, "inbound|") {
			continue
		}
		s.Clusters = append(s.Clusters, c.Name+" "+clusterAddr(c)+" "+clusterProto(t, c))
	}
	return s
}

func clusterAddr(c *clusterv3.Cluster) string {
	var out []string
	for _, loc := range c.GetLoadAssignment().GetEndpoints() {
		for _, e := range loc.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()))
		}
	}
	return strings.Join(out, ",")
}

func clusterProto(t *testing.T, c *clusterv3.Cluster) string {
	a, ok := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if !ok {
		return "tcp"
	}
	o := &httpv3.HttpProtocolOptions{}
	if err := a.UnmarshalTo(o); err != nil {
		t.Fatal(err)
	}
	if o.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil {
		return "h2c"
	}
	return "http1"
}

// The authorities of backend's two ports, as the inbound virtual hosts list them.
const (
	backend8080 = "backend,backend.default,backend.default.svc,backend.default.svc.cluster.local," +
		"backend:8080,backend.default:8080,backend.default.svc:8080,backend.default.svc.cluster.local:8080"
	backend9090 = "backend:9090,backend.default:9090,backend.default.svc:9090,backend.default.svc.cluster.local:9090"
)

func TestInbound(t *testing.T) {
	const twoPorts = `apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports:
  - {name: http, port: 8080, appProtocol: http}
  - {name: grpc, port: 9090, appProtocol: grpc}
`
	node := func(app string) mesh.Workload {
		return mesh.Workload{NodeID: "b", Name: "backend-1", Namespace: "default", Labels: map[string]string{"app": "backend"},
			InboundAddr: "10.0.0.1:15006", AppAddr: app}
	}
	for _, tc := range []struct {
		name  string
		model string
		node  mesh.Workload
		want  inboundSummary
	}{
		{
			name:  "http and grpc ports, app on the http port",
			model: twoPorts,
			node:  node("10.0.0.1:8080"),
			want: inboundSummary{
				Listener: "http",
				VirtualHosts: []string{
					"backend.default.svc.cluster.local:8080 " + backend8080 + " -> inbound|8080||",
					"backend.default.svc.cluster.local:9090 " + backend9090 + " -> inbound|9090||",
					"inbound|*:8080 *:8080 -> inbound|8080||",
					"inbound|*:9090 *:9090 -> inbound|9090||",
					"inbound * -> inbound|8080||",
				},
				Clusters: []string{"inbound|8080|| 10.0.0.1:8080 http1", "inbound|9090|| 10.0.0.1:9090 h2c"},
			},
		},
		{
			name:  "app on the grpc port makes it primary",
			model: twoPorts,
			node:  node("10.0.0.1:9090"),
			want: inboundSummary{
				Listener: "http",
				VirtualHosts: []string{
					// The bare names stay with the Service's first HTTP port, as on
					// outbound_http: a client's "backend" means port 8080.
					"backend.default.svc.cluster.local:8080 " + backend8080 + " -> inbound|8080||",
					"backend.default.svc.cluster.local:9090 " + backend9090 + " -> inbound|9090||",
					"inbound|*:8080 *:8080 -> inbound|8080||",
					"inbound|*:9090 *:9090 -> inbound|9090||",
					"inbound * -> inbound|9090||",
				},
				Clusters: []string{"inbound|8080|| 10.0.0.1:8080 http1", "inbound|9090|| 10.0.0.1:9090 h2c"},
			},
		},
		{
			name: "target ports differ from service ports",
			model: `apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: grpc, port: 90, targetPort: 9000, appProtocol: grpc}
`,
			node: node("10.0.0.1:8080"),
			want: inboundSummary{
				Listener: "http",
				VirtualHosts: []string{
					"backend.default.svc.cluster.local:80 backend,backend.default,backend.default.svc,backend.default.svc.cluster.local," +
						"backend:80,backend.default:80,backend.default.svc:80,backend.default.svc.cluster.local:80 -> inbound|8080||",
					"backend.default.svc.cluster.local:90 backend:90,backend.default:90,backend.default.svc:90,backend.default.svc.cluster.local:90 -> inbound|9000||",
					"inbound|*:80 *:80 -> inbound|8080||",
					"inbound|*:90 *:90 -> inbound|9000||",
					"inbound * -> inbound|8080||",
				},
				Clusters: []string{"inbound|8080|| 10.0.0.1:8080 http1", "inbound|9000|| 10.0.0.1:9000 h2c"},
			},
		},
		{
			name:  "app port matching no target port: first port is primary, at APP_ADDR",
			model: twoPorts,
			node:  node("10.0.0.1:3000"),
			want: inboundSummary{
				Listener: "http",
				VirtualHosts: []string{
					"backend.default.svc.cluster.local:8080 " + backend8080 + " -> inbound|3000||",
					"backend.default.svc.cluster.local:9090 " + backend9090 + " -> inbound|9090||",
					"inbound|*:8080 *:8080 -> inbound|3000||",
					"inbound|*:9090 *:9090 -> inbound|9090||",
					"inbound * -> inbound|3000||",
				},
				Clusters: []string{"inbound|3000|| 10.0.0.1:3000 http1", "inbound|9090|| 10.0.0.1:9090 h2c"},
			},
		},
		{
			name: "named target port is taken as the port number",
			model: `apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports:
  - {name: http, port: 8080, appProtocol: http}
  - {name: grpc, port: 9090, targetPort: grpc-port, appProtocol: grpc}
`,
			node: node("10.0.0.1:8080"),
			want: inboundSummary{
				Listener: "http",
				VirtualHosts: []string{
					"backend.default.svc.cluster.local:8080 " + backend8080 + " -> inbound|8080||",
					"backend.default.svc.cluster.local:9090 " + backend9090 + " -> inbound|9090||",
					"inbound|*:8080 *:8080 -> inbound|8080||",
					"inbound|*:9090 *:9090 -> inbound|9090||",
					"inbound * -> inbound|8080||",
				},
				Clusters: []string{"inbound|8080|| 10.0.0.1:8080 http1", "inbound|9090|| 10.0.0.1:9090 h2c"},
			},
		},
		{
			name: "tcp port that is not primary is not served",
			model: `apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports:
  - {name: http, port: 8080}
  - {name: pg, port: 5432, appProtocol: tcp}
`,
			node: node("10.0.0.1:8080"),
			want: inboundSummary{
				Listener: "http",
				VirtualHosts: []string{
					"backend.default.svc.cluster.local:8080 " + backend8080 + " -> inbound|8080||",
					"inbound|*:8080 *:8080 -> inbound|8080||",
					"inbound * -> inbound|8080||",
				},
				Clusters: []string{"inbound|8080|| 10.0.0.1:8080 http1"},
			},
		},
		{
			name: "tcp primary port makes the listener a tcp proxy",
			model: `apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports:
  - {name: pg, port: 5432, appProtocol: tcp}
  - {name: http, port: 8080}
`,
			node: node("10.0.0.1:5432"),
			want: inboundSummary{
				Listener: "tcp -> inbound|5432||",
				Clusters: []string{"inbound|5432|| 10.0.0.1:5432 tcp"},
			},
		},
		{
			name: "two Services: same target port keeps the first protocol, same port number the first cluster",
			model: `apiVersion: v1
kind: Service
metadata: {name: alpha}
spec:
  selector: {app: backend}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: web, port: 81, targetPort: 9000}
---
apiVersion: v1
kind: Service
metadata: {name: beta}
spec:
  selector: {app: backend}
  ports:
  - {name: grpc, port: 81, targetPort: 9000, appProtocol: grpc}
  - {name: other, port: 82, targetPort: 9001, appProtocol: h2c}
`,
			node: node("10.0.0.1:8080"),
			want: inboundSummary{
				Listener: "http",
				VirtualHosts: []string{
					"alpha.default.svc.cluster.local:80 alpha,alpha.default,alpha.default.svc,alpha.default.svc.cluster.local," +
						"alpha:80,alpha.default:80,alpha.default.svc:80,alpha.default.svc.cluster.local:80 -> inbound|8080||",
					"alpha.default.svc.cluster.local:81 alpha:81,alpha.default:81,alpha.default.svc:81,alpha.default.svc.cluster.local:81 -> inbound|9000||",
					"beta.default.svc.cluster.local:81 beta,beta.default,beta.default.svc,beta.default.svc.cluster.local," +
						"beta:81,beta.default:81,beta.default.svc:81,beta.default.svc.cluster.local:81 -> inbound|9000||",
					"beta.default.svc.cluster.local:82 beta:82,beta.default:82,beta.default.svc:82,beta.default.svc.cluster.local:82 -> inbound|9001||",
					"inbound|*:80 *:80 -> inbound|8080||",
					"inbound|*:81 *:81 -> inbound|9000||",
					"inbound|*:82 *:82 -> inbound|9001||",
					"inbound * -> inbound|8080||",
				},
				Clusters: []string{
					"inbound|8080|| 10.0.0.1:8080 http1",
					"inbound|9000|| 10.0.0.1:9000 http1",
					"inbound|9001|| 10.0.0.1:9001 h2c",
				},
			},
		},
		{
			name:  "no Service selects the workload",
			model: twoPorts,
			node: mesh.Workload{NodeID: "x", Name: "x", Namespace: "default", Labels: map[string]string{"app": "x"},
				InboundAddr: "10.0.0.1:15006", AppAddr: "10.0.0.1:8080"},
			want: inboundSummary{
				Listener:     "http",
				VirtualHosts: []string{"inbound * -> inbound|8080||"},
				Clusters:     []string{"inbound|8080|| 10.0.0.1:8080 http1"},
			},
		},
		{
			name:  "Service in another namespace does not select",
			model: strings.Replace(twoPorts, "{name: backend}", "{name: backend, namespace: prod}", 1),
			node:  node("10.0.0.1:9090"),
			want: inboundSummary{
				Listener:     "http",
				VirtualHosts: []string{"inbound * -> inbound|9090||"},
				Clusters:     []string{"inbound|9090|| 10.0.0.1:9090 http1"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mustModel(t, tc.model)
			r, err := translate.Translate(m, []mesh.Workload{tc.node}, &tc.node, translate.Options{})
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			consistent(t, r)
			if diff := cmp.Diff(tc.want, summarizeInbound(t, r)); diff != "" {
				t.Errorf("inbound (-want +got):\n%s", diff)
			}
		})
	}
}
