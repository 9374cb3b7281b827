package translate

import (
	"fmt"
	"net/netip"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tinymesh/tinymesh/xds/mesh"
)

// connectTimeout bounds upstream connection setup; Envoy's default is 5 s too, but
// we set it so the resources say what we mean.
var connectTimeout = durationpb.New(5 * time.Second)

// httpProtocolOptionsKey is the typed_extension_protocol_options key for upstream
// HTTP protocol options.
const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

func mustAny(m proto.Message) *anypb.Any {
	// Deterministic, so that the same resources always hash to the same version.
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		// Only fails for messages without a registered type: a programmer error.
		panic(fmt.Sprintf("translate: marshal %T: %v", m, err))
	}
	return a
}

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

// protocolOptions sets the upstream protocol explicitly: HTTP/2 with prior
// knowledge, or HTTP/1.1.
func protocolOptions(h2 bool) map[string]*anypb.Any {
	ex := &httpv3.HttpProtocolOptions_ExplicitHttpConfig{}
	if h2 {
		ex.ProtocolConfig = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
			Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
		}
	} else {
		ex.ProtocolConfig = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{
			HttpProtocolOptions: &corev3.Http1ProtocolOptions{},
		}
	}
	return map[string]*anypb.Any{httpProtocolOptionsKey: mustAny(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: ex},
	})}
}

// loadAssignment puts all endpoints in one empty locality with weight 1: gRPC
// rejects localities without an ID message and ignores those with weight 0.
func loadAssignment(cluster string, eps []mesh.Endpoint) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	if len(eps) == 0 {
		return cla
	}
	loc := &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{}, LoadBalancingWeight: wrapperspb.UInt32(1)}
	for _, e := range eps {
		loc.LbEndpoints = append(loc.LbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: socketAddress(e.IP, e.Port),
			}},
			LoadBalancingWeight: wrapperspb.UInt32(1),
			Metadata:            endpointMetadata(e),
		})
	}
	cla.Endpoints = []*endpointv3.LocalityLbEndpoints{loc}
	return cla
}

// endpointMetadata is filter_metadata["tinymesh"] = {workload, namespace,
// version} for an endpoint of a meshed workload (version only when the workload
// has a version label), which the caller's sidecar uses for the
// destination_workload/_namespace/_version labels of its metrics
// (docs/observability.md); nil for other endpoints.
func endpointMetadata(e mesh.Endpoint) *corev3.Metadata {
	if e.Workload == "" {
		return nil
	}
	fields := map[string]*structpb.Value{
		"workload":  structpb.NewStringValue(e.Workload),
		"namespace": structpb.NewStringValue(e.Namespace),
	}
	if e.Version != "" {
		fields["version"] = structpb.NewStringValue(e.Version)
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"tinymesh": {Fields: fields}}}
}

func socketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       ip,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func routerFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{
		Name:       wellknown.Router,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})},
	}
}

// hcmRDS is an HTTP connection manager fetching route config name over ADS.
func hcmRDS(statPrefix, name string, inbound bool) *hcmv3.HttpConnectionManager {
	h := hcmBase(statPrefix, inbound)
	h.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: adsSource(), RouteConfigName: name}}
	return h
}

// hcmInline is an HTTP connection manager with an inline route configuration.
func hcmInline(statPrefix string, rc *routev3.RouteConfiguration) *hcmv3.HttpConnectionManager {
	h := hcmBase(statPrefix, true)
	h.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}
	return h
}

func hcmBase(statPrefix string, inbound bool) *hcmv3.HttpConnectionManager {
	return &hcmv3.HttpConnectionManager{
		StatPrefix:        statPrefix,
		CodecType:         hcmv3.HttpConnectionManager_AUTO,
		HttpFilters:       []*hcmv3.HttpFilter{routerFilter()},
		UpgradeConfigs:    []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
		GenerateRequestId: wrapperspb.Bool(true),
		// Inbound, the downstream is the peer sidecar or a client: its address is
		// the one to record. Outbound, the downstream is our own app.
		UseRemoteAddress: wrapperspb.Bool(inbound),
	}
}

func httpListener(name string, ap netip.AddrPort, dir corev3.TrafficDirection, h *hcmv3.HttpConnectionManager) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:             name,
		Address:          socketAddress(ap.Addr().String(), uint32(ap.Port())),
		TrafficDirection: dir,
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       wellknown.HTTPConnectionManager,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(h)},
		}}}},
	}
}

func tcpListener(name string, ap netip.AddrPort, dir corev3.TrafficDirection, cluster string, logs []*accesslogv3.AccessLog) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:             name,
		Address:          socketAddress(ap.Addr().String(), uint32(ap.Port())),
		TrafficDirection: dir,
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: wellknown.TCPProxy,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&tcpv3.TcpProxy{
				StatPrefix:       name,
				ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster},
				AccessLog:        logs,
			})},
		}}}},
	}
}

func apiListener(name string, h *hcmv3.HttpConnectionManager) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:        name,
		ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(h)},
	}
}

// clusterAction routes to one cluster; a zero timeout disables Envoy's 15 s
// default, which would cut long gRPC streams.
func clusterAction(cluster string, timeout time.Duration) *routev3.Route_Route {
	return &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
		Timeout:          durationpb.New(timeout),
	}}
}
