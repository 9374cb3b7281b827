package translate

import (
	"net/netip"
	"net/url"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tinymesh/tinymesh/xds/mesh"
)

// openTelemetryTracer is Envoy's name for the OpenTelemetry tracer extension.
const openTelemetryTracer = "envoy.tracers.opentelemetry"

// tracingExportTimeout bounds one OTLP export request (http_uri.timeout,
// which Envoy requires; grpc_service.timeout).
const tracingExportTimeout = 5 * time.Second

// TCPTracingKey is the Listener metadata key (typed_filter_metadata) under
// which a TCP listener carries its tracing, an HttpConnectionManager.Tracing:
// Envoy's tcp_proxy has no tracing field and Envoy does not trace TCP, so
// the config stays valid Envoy config that Envoy ignores, and meshproxy
// (xds/resource) reads it.
const TCPTracingKey = "tinymesh.io/tracing"

// TracingClusterName is the cluster of an OTLP/gRPC collector at host:port.
func TracingClusterName(host string, port uint32) string {
	return "opentelemetry|" + host + ":" + strconv.Itoa(int(port))
}

// tracing returns the HCM tracing of the node's listeners from the
// Telemetry that applies to it, or nil: the OpenTelemetry tracer with
// random_sampling its samplingPercent, exporting
//   - over OTLP/HTTP (protocol http) to the endpoint URL; http_uri.cluster,
//     which Envoy requires, names the endpoint's host:port (meshproxy dials
//     the URI itself and does not use it);
//   - over OTLP/gRPC (protocol grpc) with grpc_service envoy_grpc to the
//     collector's cluster (TracingClusterName), which it adds to the node's
//     clusters once: plaintext HTTP/2, STRICT_DNS for a name or STATIC for an
//     IP, as Envoy needs for a gRPC cluster.
func (t *translator) tracing() *hcmv3.HttpConnectionManager_Tracing {
	tr := t.m.Tracing(t.node.Namespace, t.node.Labels, t.rootNamespace)
	if tr == nil {
		return nil
	}
	ot := &tracev3.OpenTelemetryConfig{}
	if tr.Protocol == mesh.TracingGRPC {
		host, port, _ := mesh.TracingGRPCAddress(tr.Endpoint) // checked by validation
		name := TracingClusterName(host, port)
		t.addTracingCluster(name, host, port)
		ot.GrpcService = &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
				ClusterName: name,
				Authority:   tr.Endpoint, // what a collector behind a proxy expects, not the cluster name
			}},
			Timeout: durationpb.New(tracingExportTimeout),
		}
	} else {
		cluster := tr.Endpoint
		if u, err := url.Parse(tr.Endpoint); err == nil { // checked by validation
			cluster = u.Host
		}
		ot.HttpService = &corev3.HttpService{HttpUri: &corev3.HttpUri{
			Uri:              tr.Endpoint,
			HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: cluster},
			Timeout:          durationpb.New(tracingExportTimeout),
		}}
	}
	sampling := 100.0
	if p := tr.SamplingPercent; p != nil {
		sampling = *p
	}
	return &hcmv3.HttpConnectionManager_Tracing{
		RandomSampling: &typev3.Percent{Value: sampling},
		Provider: &tracev3.Tracing_Http{Name: openTelemetryTracer,
			ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(ot)}},
	}
}

// addTracingCluster adds the collector's cluster unless the node has it.
func (t *translator) addTracingCluster(name, host string, port uint32) {
	for _, c := range t.out.Clusters {
		if c.Name == name {
			return
		}
	}
	typ := clusterv3.Cluster_STRICT_DNS
	if _, err := netip.ParseAddr(host); err == nil {
		typ = clusterv3.Cluster_STATIC
	}
	t.out.Clusters = append(t.out.Clusters, &clusterv3.Cluster{
		Name:                          name,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: typ},
		ConnectTimeout:                connectTimeout,
		LbPolicy:                      clusterv3.Cluster_ROUND_ROBIN,
		LoadAssignment:                loadAssignment(name, []mesh.Endpoint{{IP: host, Port: port}}),
		TypedExtensionProtocolOptions: protocolOptions(true), // gRPC: HTTP/2
	})
}

// traceTCPListeners gives every TCP listener of the node (outbound_tcp|...,
// a TCP inbound) the node's tracing in its metadata (TCPTracingKey), so that
// meshproxy traces its connections like the HTTP listeners' requests.
func (t *translator) traceTCPListeners() {
	tr := t.tracing()
	if tr == nil {
		return
	}
	var a *anypb.Any
	for _, l := range t.out.Listeners {
		fcs := l.GetFilterChains()
		if len(fcs) == 0 {
			continue
		}
		fs := fcs[0].GetFilters()
		if len(fs) == 0 || fs[len(fs)-1].GetName() != wellknown.TCPProxy {
			continue
		}
		if a == nil {
			a = mustAny(tr)
		}
		if l.Metadata == nil {
			l.Metadata = &corev3.Metadata{}
		}
		if l.Metadata.TypedFilterMetadata == nil {
			l.Metadata.TypedFilterMetadata = map[string]*anypb.Any{}
		}
		l.Metadata.TypedFilterMetadata[TCPTracingKey] = a
	}
}
