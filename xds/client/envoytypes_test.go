package client

import (
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestDumpTypesCoverAcceptedAnys: every Any type meshproxy accepts, whether
// it decodes it or not, prints with its fields in the config dump.
func TestDumpTypesCoverAcceptedAnys(t *testing.T) {
	types, err := envoyTypes()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{
		"envoy.config.listener.v3.Listener",
		"envoy.config.route.v3.RouteConfiguration",
		"envoy.config.cluster.v3.Cluster",
		"envoy.config.endpoint.v3.ClusterLoadAssignment",
		"envoy.extensions.transport_sockets.tls.v3.Secret",
		"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
		"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.Tracing",
		"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
		"envoy.extensions.filters.network.rbac.v3.RBAC",
		"envoy.extensions.filters.http.router.v3.Router",
		"envoy.extensions.filters.http.rbac.v3.RBAC",
		"envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
		"envoy.config.route.v3.FilterConfig",
		"envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
		"envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
		"envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
		"envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
		"envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
		"envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
		"envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions",
		"envoy.extensions.access_loggers.file.v3.FileAccessLog",
		"envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
		"envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
		"envoy.config.trace.v3.OpenTelemetryConfig",
	} {
		if _, err := types.Types.FindMessageByURL("type.googleapis.com/" + name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	inspector, err := anypb.New(&tlsinspectorv3.TlsInspector{EnableJa3Fingerprinting: wrapperspb.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	l, err := anypb.New(&listenerv3.Listener{Name: "l", ListenerFilters: []*listenerv3.ListenerFilter{
		{Name: "envoy.filters.listener.tls_inspector", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: inspector}},
		{Name: "example", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: &anypb.Any{
			TypeUrl: "type.googleapis.com/example.Unknown", Value: []byte{0x08, 0x01},
		}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := protojson.MarshalOptions{Resolver: types}.Marshal(l)
	if err != nil {
		t.Fatalf("a Listener with an Any of an unknown type: %v", err)
	}
	for _, want := range []string{`"enableJa3Fingerprinting":true`, `"@type":"type.googleapis.com/example.Unknown"`} {
		if !strings.Contains(strings.ReplaceAll(string(b), " ", ""), want) {
			t.Errorf("dump of the listener lacks %s:\n%s", want, b)
		}
	}
}
