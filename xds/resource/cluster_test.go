package resource_test

import (
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/xds/resource"
	"github.com/tinymesh/tinymesh/xds/xdstest"
)

func withCluster(f func(c *clusterv3.Cluster)) *clusterv3.Cluster {
	c := xdstest.EDSCluster("c")
	f(c)
	return c
}

func TestDecodeCluster(t *testing.T) {
	tests := []struct {
		name string
		in   *clusterv3.Cluster
		want *resource.Cluster
	}{
		{"EDS h2c", xdstest.EDSCluster("outbound|80||a.b.svc.cluster.local"), &resource.Cluster{
			Config:         &config.Cluster{Name: "outbound|80||a.b.svc.cluster.local", ConnectTimeout: time.Second, Protocol: config.ProtocolH2C},
			EDSServiceName: "outbound|80||a.b.svc.cluster.local",
		}},
		{"EDS defaults", &clusterv3.Cluster{Name: "c",
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Self{Self: &corev3.SelfConfigSource{}}}}},
			&resource.Cluster{Config: &config.Cluster{Name: "c", ConnectTimeout: 5 * time.Second}, EDSServiceName: "c"}},
		{"static, deprecated http2 options", func() *clusterv3.Cluster {
			c := xdstest.StaticCluster("inbound|8080||", "127.0.0.1:8080")
			c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{}
			return c
		}(), &resource.Cluster{Config: &config.Cluster{Name: "inbound|8080||", ConnectTimeout: 5 * time.Second,
			Protocol: config.ProtocolH2C, Endpoints: []config.Endpoint{{Address: "127.0.0.1:8080", Weight: 1}}}}},
		{"strict DNS with a name, explicit HTTP/1", func() *clusterv3.Cluster {
			c := xdstest.StaticCluster("ext", "127.0.0.1:80")
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
			c.LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().Address = "example.com"
			c.TypedExtensionProtocolOptions = map[string]*anypb.Any{
				"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": xdstest.MustAny(&httpv3.HttpProtocolOptions{
					UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
						ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{}}}}),
			}
			return c
		}(), &resource.Cluster{Config: &config.Cluster{Name: "ext", ConnectTimeout: 5 * time.Second,
			Endpoints: []config.Endpoint{{Address: "example.com:80", Weight: 1}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resource.DecodeCluster(tt.in)
			if err != nil {
				t.Fatalf("DecodeCluster: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("DecodeCluster (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeClusterErrors(t *testing.T) {
	const q = `Cluster "c": `
	tests := []struct {
		name string
		in   *clusterv3.Cluster
		want string
	}{
		{"no name", &clusterv3.Cluster{}, `Cluster "": name: must not be empty`},
		{"least request", withCluster(func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST }),
			q + "lb_policy: unsupported LEAST_REQUEST (only ROUND_ROBIN)"},
		{"unknown transport socket", withCluster(func(c *clusterv3.Cluster) { c.TransportSocket = &corev3.TransportSocket{Name: "tls"} }),
			q + `transport_socket.name: unsupported transport socket "tls"`},
		{"original dst", withCluster(func(c *clusterv3.Cluster) {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
		}), q + "type: unsupported cluster type ORIGINAL_DST"},
		{"eds not ads", withCluster(func(c *clusterv3.Cluster) { c.EdsClusterConfig.EdsConfig = nil }),
			q + "eds_cluster_config.eds_config: only ads or self config sources are supported"},
		{"static without assignment", withCluster(func(c *clusterv3.Cluster) {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
		}), q + "load_assignment: must be set on a STATIC cluster"},
		{"static hostname", func() *clusterv3.Cluster {
			c := xdstest.StaticCluster("c", "127.0.0.1:80")
			c.LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().Address = "example.com"
			return c
		}(), q + `load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: not an IP address: "example.com"`},
		{"use downstream protocol", withCluster(func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"] = xdstest.MustAny(&httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{}})
		}), q + "typed_extension_protocol_options[envoy.extensions.upstreams.http.v3.HttpProtocolOptions].use_downstream_protocol_config: not supported"},
		{"unknown protocol options", withCluster(func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions["envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions"] = xdstest.MustAny(&corev3.Node{})
		}), q + "typed_extension_protocol_options[envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions]: unsupported protocol options"},
		{"zero connect timeout", withCluster(func(c *clusterv3.Cluster) { c.ConnectTimeout = durationpb.New(0) }),
			q + "connect_timeout: must be positive"},
		{"health check without timeout", withCluster(func(c *clusterv3.Cluster) { c.HealthChecks = []*corev3.HealthCheck{{}} }),
			q + "health_checks[0].timeout: must be set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkDecodeError(t, "DecodeCluster", resource.DecodeCluster, tt.in, tt.want)
		})
	}
}

func lbEndpoint(ip string, port uint32, health corev3.HealthStatus, weight uint32) *endpointv3.LbEndpoint {
	le := &endpointv3.LbEndpoint{HealthStatus: health, HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
		Endpoint: &endpointv3.Endpoint{Address: xdstest.SocketAddress(ip, port)}}}
	if weight > 0 {
		le.LoadBalancingWeight = wrapperspb.UInt32(weight)
	}
	return le
}

func TestDecodeClusterLoadAssignment(t *testing.T) {
	in := &endpointv3.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{
		{Priority: 1, LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint("10.0.0.9", 80, 0, 0)}},
		{LbEndpoints: []*endpointv3.LbEndpoint{
			lbEndpoint("10.0.0.1", 80, corev3.HealthStatus_HEALTHY, 3),
			lbEndpoint("10.0.0.2", 80, corev3.HealthStatus_UNHEALTHY, 0),
			lbEndpoint("10.0.0.3", 80, corev3.HealthStatus_DRAINING, 0),
		}},
		{LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint("::1", 81, corev3.HealthStatus_UNKNOWN, 0)}},
	}}
	want := &resource.Assignment{ClusterName: "c", Endpoints: []config.Endpoint{
		{Address: "10.0.0.1:80", Weight: 3}, {Address: "[::1]:81", Weight: 1}}}
	got, err := resource.DecodeClusterLoadAssignment(in)
	if err != nil {
		t.Fatalf("DecodeClusterLoadAssignment: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("DecodeClusterLoadAssignment (-want +got):\n%s", diff)
	}

	errs := []struct {
		name string
		in   *endpointv3.ClusterLoadAssignment
		want string
	}{
		{"no name", &endpointv3.ClusterLoadAssignment{}, `ClusterLoadAssignment "": cluster_name: must not be empty`},
		{"zero weight", &endpointv3.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{
			{LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint("10.0.0.1", 80, 0, 0), {
				LoadBalancingWeight: wrapperspb.UInt32(0), HostIdentifier: in.Endpoints[1].LbEndpoints[0].HostIdentifier}}}}},
			`ClusterLoadAssignment "c": endpoints[0].lb_endpoints[1].load_balancing_weight: must be at least 1`},
		{"named port", &endpointv3.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{
			{LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_NamedPort{NamedPort: "http"}}}}}}}}}}},
			`ClusterLoadAssignment "c": endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value: must be set (named ports are not supported)`},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			checkDecodeError(t, "DecodeClusterLoadAssignment", resource.DecodeClusterLoadAssignment, tt.in, tt.want)
		})
	}
}

func FuzzDecodeCluster(f *testing.F) {
	for _, c := range []*clusterv3.Cluster{xdstest.EDSCluster("c"), xdstest.StaticCluster("s", "127.0.0.1:1", "[::1]:2")} {
		b, err := proto.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var c clusterv3.Cluster
		if proto.Unmarshal(b, &c) != nil {
			return
		}
		got, err := resource.DecodeCluster(&c)
		if err == nil && (got.Config.ConnectTimeout <= 0 || got.Config.Name != c.GetName()) {
			t.Fatalf("DecodeCluster accepted %v as %+v", &c, got.Config)
		}
	})
}

func FuzzDecodeClusterLoadAssignment(f *testing.F) {
	b, err := proto.Marshal(xdstest.Assignment("c", "127.0.0.1:1", "[::1]:2"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		var a endpointv3.ClusterLoadAssignment
		if proto.Unmarshal(b, &a) != nil {
			return
		}
		got, err := resource.DecodeClusterLoadAssignment(&a)
		if err != nil {
			return
		}
		for _, e := range got.Endpoints {
			if e.Weight == 0 {
				t.Fatalf("endpoint %+v has weight 0", e)
			}
		}
	})
}
