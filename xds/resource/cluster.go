package resource

import (
	"sort"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tinymesh/tinymesh/dataplane/config"
	clusterv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/cluster/v3"
	corev3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/core/v3"
	endpointv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/endpoint/v3"
	httpv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/extensions/upstreams/http/v3"
)

const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// Cluster is a decoded Cluster resource.
type Cluster struct {
	// Config has no Endpoints for EDS clusters; Assemble fills them in from the
	// assignment named EDSServiceName. Static clusters carry their endpoints.
	Config *config.Cluster
	// EDSServiceName is the ClusterLoadAssignment this cluster needs; empty for
	// clusters with an inline load_assignment.
	EDSServiceName string
}

// DecodeCluster validates m and converts it. m is the proto/envoywire mirror or
// go-control-plane's message. Errors are *Error.
func DecodeCluster(m proto.Message) (*Cluster, error) {
	c, err := FromEnvoy[*clusterv3.Cluster](m)
	if err != nil {
		return nil, &Error{Type: KindCluster, Reason: err.Error()}
	}
	p := path{kind: KindCluster, name: c.GetName()}
	if c.GetName() == "" {
		return nil, p.at("name").errorf("must not be empty")
	}
	out := &Cluster{Config: &config.Cluster{Name: c.GetName(), LBPolicy: config.RoundRobin}}
	dt, ok := c.GetClusterDiscoveryType().(*clusterv3.Cluster_Type)
	if !ok && c.GetClusterDiscoveryType() != nil {
		return nil, p.at("cluster_type").errorf("custom cluster types are not supported")
	}
	typ := clusterv3.Cluster_STATIC
	if dt != nil {
		typ = dt.Type
	}
	switch typ {
	case clusterv3.Cluster_EDS:
		ep := p.at("eds_cluster_config")
		if err := checkConfigSource(ep.at("eds_config"), c.GetEdsClusterConfig().GetEdsConfig()); err != nil {
			return nil, err
		}
		out.EDSServiceName = c.GetEdsClusterConfig().GetServiceName()
		if out.EDSServiceName == "" {
			out.EDSServiceName = c.GetName()
		}
		if c.GetLoadAssignment() != nil {
			return nil, p.at("load_assignment").errorf("must not be set on an EDS cluster")
		}
	case clusterv3.Cluster_STATIC, clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
		if c.GetLoadAssignment() == nil {
			return nil, p.at("load_assignment").errorf("must be set on a %s cluster", typ)
		}
		eps, err := decodeEndpoints(p.at("load_assignment"), c.GetLoadAssignment(), typ == clusterv3.Cluster_STATIC)
		if err != nil {
			return nil, err
		}
		out.Config.Endpoints = eps
	default:
		return nil, p.at("type").errorf("unsupported cluster type %s", typ)
	}
	if c.GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN {
		return nil, p.at("lb_policy").errorf("unsupported %s (only ROUND_ROBIN)", c.GetLbPolicy())
	}
	if c.GetLoadBalancingPolicy() != nil {
		return nil, p.at("load_balancing_policy").errorf("not supported (only lb_policy ROUND_ROBIN)")
	}
	if c.GetLbConfig() != nil {
		if _, rr := c.GetLbConfig().(*clusterv3.Cluster_RoundRobinLbConfig_); !rr {
			return nil, p.errorf("unsupported lb_config %T", c.GetLbConfig())
		}
	}
	if len(c.GetTransportSocketMatches()) > 0 {
		return nil, p.at("transport_socket_matches").errorf("not supported (use transport_socket)")
	}
	if out.Config.CircuitBreakers, err = decodeCircuitBreakers(p.at("circuit_breakers"), c.GetCircuitBreakers()); err != nil {
		return nil, err
	}
	if out.Config.OutlierDetection, err = decodeOutlierDetection(p.at("outlier_detection"), c.GetOutlierDetection()); err != nil {
		return nil, err
	}
	panicThreshold, err := decodePanicThreshold(p.at("common_lb_config"), c.GetCommonLbConfig())
	if err != nil {
		return nil, err
	}
	if out.Config.ConnectTimeout, err = duration(p.at("connect_timeout"), c.GetConnectTimeout(), defaultConnectTimeout); err != nil {
		return nil, err
	}
	if out.Config.ConnectTimeout == 0 {
		return nil, p.at("connect_timeout").errorf("must be positive")
	}
	if c.GetHttp2ProtocolOptions() != nil { //nolint:staticcheck // deprecated but still sent
		out.Config.Protocol = config.ProtocolH2C
	}
	keys := make([]string, 0, len(c.GetTypedExtensionProtocolOptions()))
	for k := range c.GetTypedExtensionProtocolOptions() {
		keys = append(keys, k)
	}
	sort.Strings(keys) // deterministic error for several bad keys
	for _, k := range keys {
		kp := p.at("typed_extension_protocol_options[" + k + "]")
		if k != httpProtocolOptionsKey {
			return nil, kp.errorf("unsupported protocol options")
		}
		proto, err := decodeProtocol(kp, c.GetTypedExtensionProtocolOptions()[k])
		if err != nil {
			return nil, err
		}
		out.Config.Protocol = proto
	}
	// After the protocol: gRPC health checks need HTTP/2.
	if out.Config.HealthCheck, err = decodeHealthChecks(p, c.GetHealthChecks(), out.Config.Protocol); err != nil {
		return nil, err
	}
	if out.Config.OutlierDetection != nil || out.Config.HealthCheck != nil {
		out.Config.HealthyPanicThreshold = panicThreshold // meaningless without them
	}
	// After the protocol: the ALPN offered must include the one spoken.
	if out.Config.TLS, err = decodeUpstreamTLS(p.at("transport_socket"), c.GetTransportSocket(), out.Config.Protocol); err != nil {
		return nil, err
	}
	return out, nil
}

func decodeProtocol(p path, a *anypb.Any) (config.Protocol, error) {
	var o httpv3.HttpProtocolOptions
	if err := Unpack(a, &o); err != nil {
		return 0, p.errorf("%v", err)
	}
	switch u := o.GetUpstreamProtocolOptions().(type) {
	case nil:
		return config.ProtocolHTTP1, nil
	case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_:
		switch u.ExplicitHttpConfig.GetProtocolConfig().(type) {
		case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions:
			return config.ProtocolHTTP1, nil
		case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions:
			return config.ProtocolH2C, nil
		}
		return 0, p.at("explicit_http_config").errorf("only http_protocol_options and http2_protocol_options are supported")
	case *httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig:
		return 0, p.at("use_downstream_protocol_config").errorf("not supported")
	case *httpv3.HttpProtocolOptions_AutoConfig:
		return 0, p.at("auto_config").errorf("not supported")
	default:
		return 0, p.errorf("unsupported upstream protocol options %T", u)
	}
}

// Assignment is a decoded ClusterLoadAssignment.
type Assignment struct {
	ClusterName string
	Endpoints   []config.Endpoint
}

// DecodeClusterLoadAssignment validates m and converts it. m is the proto/envoywire mirror or
// go-control-plane's message. Errors are *Error.
func DecodeClusterLoadAssignment(m proto.Message) (*Assignment, error) {
	a, err := FromEnvoy[*endpointv3.ClusterLoadAssignment](m)
	if err != nil {
		return nil, &Error{Type: KindClusterLoadAssignment, Reason: err.Error()}
	}
	p := path{kind: KindClusterLoadAssignment, name: a.GetClusterName()}
	if a.GetClusterName() == "" {
		return nil, p.at("cluster_name").errorf("must not be empty")
	}
	eps, err := decodeEndpoints(p, a, true)
	if err != nil {
		return nil, err
	}
	return &Assignment{ClusterName: a.GetClusterName(), Endpoints: eps}, nil
}

// decodeEndpoints keeps the usable endpoints of the lowest priority present:
// without health checks or failover we serve the preferred priority only.
func decodeEndpoints(p path, a *endpointv3.ClusterLoadAssignment, needIP bool) ([]config.Endpoint, error) {
	if len(a.GetNamedEndpoints()) > 0 {
		return nil, p.at("named_endpoints").errorf("not supported")
	}
	if len(a.GetPolicy().GetDropOverloads()) > 0 {
		return nil, p.at("policy.drop_overloads").errorf("not supported")
	}
	lowest := ^uint32(0)
	for _, l := range a.GetEndpoints() {
		lowest = min(lowest, l.GetPriority())
	}
	var out []config.Endpoint
	for i, l := range a.GetEndpoints() {
		lp := p.idx("endpoints", i)
		for j, le := range l.GetLbEndpoints() {
			ep := lp.idx("lb_endpoints", j)
			e, ok := le.GetHostIdentifier().(*endpointv3.LbEndpoint_Endpoint)
			if !ok {
				return nil, ep.at("endpoint").errorf("must be set (endpoint_name is not supported)")
			}
			addr, err := decodeSocketAddress(ep.at("endpoint.address"), e.Endpoint.GetAddress(), needIP)
			if err != nil {
				return nil, err
			}
			w := uint32(1)
			if lw := le.GetLoadBalancingWeight(); lw != nil {
				if lw.GetValue() == 0 {
					return nil, ep.at("load_balancing_weight").errorf("must be at least 1")
				}
				w = lw.GetValue()
			}
			if l.GetPriority() != lowest {
				continue // validated above but not served
			}
			switch le.GetHealthStatus() {
			case corev3.HealthStatus_UNKNOWN, corev3.HealthStatus_HEALTHY:
				e := config.Endpoint{Address: addr, Weight: w}
				if err := decodeEndpointMetadata(ep.at("metadata"), le.GetMetadata(), &e); err != nil {
					return nil, err
				}
				out = append(out, e)
			}
		}
	}
	return out, nil
}

// decodeEndpointMetadata takes the workload an endpoint belongs to from
// metadata.filter_metadata["tinymesh"] = {workload, namespace, version}, which
// the control plane adds for stats labels. Other keys and namespaces are
// ignored; the three, when present, must be strings.
func decodeEndpointMetadata(p path, md *corev3.Metadata, e *config.Endpoint) error {
	fields := md.GetFilterMetadata()["tinymesh"].GetFields()
	for key, dst := range map[string]*string{"workload": &e.Workload, "namespace": &e.Namespace, "version": &e.Version} {
		v, ok := fields[key]
		if !ok {
			continue
		}
		sv, ok := v.GetKind().(*structpb.Value_StringValue)
		if !ok {
			return p.at(`filter_metadata["tinymesh"].` + key).errorf("must be a string")
		}
		*dst = sv.StringValue
	}
	return nil
}
