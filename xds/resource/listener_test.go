package resource_test

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/xds/resource"
	"github.com/tinymesh/tinymesh/xds/xdstest"
)

func defaultHCM(rc string) *config.HTTPConnectionManager {
	return &config.HTTPConnectionManager{
		StatPrefix: rc, RouteConfigName: rc, GenerateRequestID: true,
		MaxRequestHeadersBytes: 60 * 1024, StreamIdleTimeout: 5 * time.Minute, DrainTimeout: 5 * time.Second,
	}
}

// withHCM returns the outbound_http listener with its HCM changed by f.
func withHCM(f func(h *hcmv3.HttpConnectionManager)) *listenerv3.Listener {
	h := xdstest.HCM("outbound_http")
	f(h)
	return xdstest.ListenerWith("outbound_http", "127.0.0.1", 15001, "envoy.filters.network.http_connection_manager", h)
}

func withListener(f func(l *listenerv3.Listener)) *listenerv3.Listener {
	l := xdstest.HTTPListener("outbound_http", "127.0.0.1", 15001, "outbound_http")
	f(l)
	return l
}

func TestDecodeListener(t *testing.T) {
	inline := xdstest.RouteConfig("ignored", "inbound|8080||")
	tests := []struct {
		name string
		in   *listenerv3.Listener
		want *resource.Listener
	}{
		{
			name: "HCM with RDS",
			in:   xdstest.HTTPListener("outbound_http", "127.0.0.1", 15001, "outbound_http"),
			want: &resource.Listener{
				Config:  &config.Listener{Name: "outbound_http", Address: "127.0.0.1:15001", HTTP: defaultHCM("outbound_http")},
				RDSName: "outbound_http",
			},
		},
		{
			name: "inbound HCM with inline route config and settings",
			in: func() *listenerv3.Listener {
				h := xdstest.HCM("inbound")
				h.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: inline}
				h.CodecType = hcmv3.HttpConnectionManager_AUTO
				h.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{
					{UpgradeType: "WebSocket"}, {UpgradeType: "CONNECT", Enabled: wrapperspb.Bool(false)}}
				h.GenerateRequestId = wrapperspb.Bool(false)
				h.UseRemoteAddress = wrapperspb.Bool(true)
				h.MaxRequestHeadersKb = wrapperspb.UInt32(8)
				h.StreamIdleTimeout = durationpb.New(0)
				h.DrainTimeout = durationpb.New(time.Second)
				h.HttpFilters = append([]*hcmv3.HttpFilter{{Name: "envoy.filters.http.fault", IsOptional: true}}, h.HttpFilters...)
				l := xdstest.ListenerWith("inbound", "10.0.0.1", 15006, "envoy.filters.network.http_connection_manager", h)
				l.TrafficDirection = corev3.TrafficDirection_INBOUND
				return l
			}(),
			want: &resource.Listener{
				Config: &config.Listener{Name: "inbound", Address: "10.0.0.1:15006", Direction: config.Inbound,
					HTTP: &config.HTTPConnectionManager{StatPrefix: "inbound", RouteConfigName: "inbound",
						UpgradeTypes: []string{"websocket"}, UseRemoteAddress: true, MaxRequestHeadersBytes: 8192,
						DrainTimeout: time.Second}},
				InlineRoute: &config.RouteConfig{Name: "inbound", VirtualHosts: []*config.VirtualHost{{
					Name: "ignored", Domains: []string{"*"}, Routes: []*config.Route{{
						Match:  config.RouteMatch{Path: "/", CaseSensitive: true},
						Action: &config.RouteAction{Clusters: []config.WeightedCluster{{Name: "inbound|8080||", Weight: 1}}},
					}}}}},
			},
		},
		{
			name: "TCP proxy in default filter chain, IPv6",
			in: func() *listenerv3.Listener {
				l := xdstest.TCPListener("outbound_tcp|5432||db.default.svc.cluster.local", "::1", 5432, "outbound|5432||db.default.svc.cluster.local")
				l.DefaultFilterChain, l.FilterChains = l.FilterChains[0], nil
				return l
			}(),
			want: &resource.Listener{Config: &config.Listener{
				Name: "outbound_tcp|5432||db.default.svc.cluster.local", Address: "[::1]:5432",
				TCP: &config.TCPProxy{StatPrefix: "outbound_tcp|5432||db.default.svc.cluster.local",
					Cluster: "outbound|5432||db.default.svc.cluster.local", IdleTimeout: time.Hour}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resource.DecodeListener(tt.in)
			if err != nil {
				t.Fatalf("DecodeListener: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("DecodeListener (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeListenerErrors(t *testing.T) {
	const q = `Listener "outbound_http": `
	tests := []struct {
		name string
		in   *listenerv3.Listener
		want string
	}{
		{"no name", withListener(func(l *listenerv3.Listener) { l.Name = "" }), `Listener "": name: must not be empty`},
		{"no address", withListener(func(l *listenerv3.Listener) { l.Address = nil }), q + "address.socket_address: must be set"},
		{"hostname address", withListener(func(l *listenerv3.Listener) { l.Address = xdstest.SocketAddress("localhost", 1) }),
			q + `address.socket_address.address: not an IP address: "localhost"`},
		{"udp", withListener(func(l *listenerv3.Listener) { l.Address.GetSocketAddress().Protocol = corev3.SocketAddress_UDP }),
			q + "address.socket_address.protocol: only TCP is supported"},
		{"api listener", withListener(func(l *listenerv3.Listener) { l.ApiListener = &listenerv3.ApiListener{} }),
			q + "api_listener: API listeners are not supported"},
		{"listener filter", withListener(func(l *listenerv3.Listener) {
			l.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.proxy_protocol"}}
		}), q + `listener_filters[0]: unsupported listener filter "envoy.filters.listener.proxy_protocol"`},
		{"two chains", withListener(func(l *listenerv3.Listener) { l.DefaultFilterChain = l.FilterChains[0] }),
			q + "filter_chains: exactly one filter chain is supported, got 2"},
		{"chain match", withListener(func(l *listenerv3.Listener) {
			l.FilterChains[0].FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: []string{"a"}}
		}), q + "filter_chains[0].filter_chain_match: filter chain matching is not supported"},
		{"unknown transport socket", withListener(func(l *listenerv3.Listener) { l.FilterChains[0].TransportSocket = &corev3.TransportSocket{Name: "tls"} }),
			q + `filter_chains[0].transport_socket.name: unsupported transport socket "tls"`},
		{"two filters", withListener(func(l *listenerv3.Listener) {
			l.FilterChains[0].Filters = append(l.FilterChains[0].Filters, l.FilterChains[0].Filters[0])
		}), q + "filter_chains[0].filters: exactly one network filter is supported, got 2"},
		{"unknown filter", xdstest.ListenerWith("outbound_http", "127.0.0.1", 1, "redis", &routev3.Route{}),
			q + "filter_chains[0].filters[0].typed_config: unsupported filter type.googleapis.com/envoy.config.route.v3.Route"},
		{"unknown http filter", withHCM(func(h *hcmv3.HttpConnectionManager) {
			h.HttpFilters = append([]*hcmv3.HttpFilter{{Name: "envoy.filters.http.fault",
				ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdstest.MustAny(&routev3.Route{})}}}, h.HttpFilters...)
		}), q + "filter_chains[0].filters[0].typed_config.http_filters[0]: unsupported HTTP filter type.googleapis.com/envoy.config.route.v3.Route"},
		{"router not last", withHCM(func(h *hcmv3.HttpConnectionManager) {
			h.HttpFilters = append(h.HttpFilters, &hcmv3.HttpFilter{Name: "envoy.filters.http.fault", IsOptional: true})
		}), q + "filter_chains[0].filters[0].typed_config.http_filters[0]: envoy.filters.http.router must be the last HTTP filter"},
		{"no http filters", withHCM(func(h *hcmv3.HttpConnectionManager) { h.HttpFilters = nil }),
			q + "filter_chains[0].filters[0].typed_config.http_filters: must end with envoy.filters.http.router"},
		{"rds not ads", withHCM(func(h *hcmv3.HttpConnectionManager) {
			h.GetRds().ConfigSource = &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Path{Path: "/x"}}
		}), q + "filter_chains[0].filters[0].typed_config.rds.config_source: only ads or self config sources are supported"},
		{"http3", withHCM(func(h *hcmv3.HttpConnectionManager) { h.CodecType = hcmv3.HttpConnectionManager_HTTP3 }),
			q + "filter_chains[0].filters[0].typed_config.codec_type: unsupported codec HTTP3"},
		{"inline route error", withHCM(func(h *hcmv3.HttpConnectionManager) {
			rc := xdstest.RouteConfig("x", "c")
			rc.VirtualHosts[0].Routes[0].Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{}}
			h.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}
		}), q + "filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].redirect: redirects are not supported"},
		{"negative drain", withHCM(func(h *hcmv3.HttpConnectionManager) { h.DrainTimeout = durationpb.New(-time.Second) }),
			q + "filter_chains[0].filters[0].typed_config.drain_timeout: must not be negative, got -1s"},
		{"tcp weighted", xdstest.ListenerWith("outbound_http", "127.0.0.1", 1, "tcp", &tcpv3.TcpProxy{
			ClusterSpecifier: &tcpv3.TcpProxy_WeightedClusters{}}),
			q + "filter_chains[0].filters[0].typed_config.cluster: a single cluster is required (weighted_clusters is not supported)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkDecodeError(t, "DecodeListener", resource.DecodeListener, tt.in, tt.want)
		})
	}
}

func FuzzDecodeListener(f *testing.F) {
	for _, l := range []*listenerv3.Listener{
		xdstest.HTTPListener("outbound_http", "127.0.0.1", 15001, "outbound_http"),
		xdstest.TCPListener("t", "::1", 5432, "c"),
		withHCM(func(h *hcmv3.HttpConnectionManager) {
			h.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: xdstest.RouteConfig("x", "c")}
		}),
	} {
		b, err := proto.Marshal(l)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var l listenerv3.Listener
		if proto.Unmarshal(b, &l) != nil {
			return
		}
		got, err := resource.DecodeListener(&l)
		if err == nil && (got.Config == nil || (got.Config.HTTP == nil) == (got.Config.TCP == nil)) {
			t.Fatalf("DecodeListener accepted %v as %+v: want exactly one of HTTP and TCP", &l, got)
		}
	})
}

// checkDecodeError runs decode (named name in messages) on in and wants exactly
// the error text want: the text is the NACK detail a control plane sees.
func checkDecodeError[R any](t *testing.T, name string, decode func(proto.Message) (R, error), in proto.Message, want string) {
	t.Helper()
	got, err := decode(in)
	if err == nil {
		t.Fatalf("%s = %+v, want error %q", name, got, want)
	}
	if err.Error() != want {
		t.Errorf("%s error:\n got %s\nwant %s", name, err, want)
	}
}
