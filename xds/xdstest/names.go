package xdstest

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
)

// nameOf decodes just enough of a SotW resource to record its name.
func nameOf(typeURL string, b []byte) string {
	var m interface {
		proto.Message
		GetName() string
	}
	switch typeURL {
	case "type.googleapis.com/envoy.config.listener.v3.Listener":
		m = &listenerv3.Listener{}
	case "type.googleapis.com/envoy.config.route.v3.RouteConfiguration":
		m = &routev3.RouteConfiguration{}
	case "type.googleapis.com/envoy.config.cluster.v3.Cluster":
		m = &clusterv3.Cluster{}
	case "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret":
		m = &tlsv3.Secret{}
	case "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment":
		var cla endpointv3.ClusterLoadAssignment
		if proto.Unmarshal(b, &cla) != nil {
			return ""
		}
		return cla.GetClusterName()
	default:
		return ""
	}
	if proto.Unmarshal(b, m) != nil {
		return ""
	}
	return m.GetName()
}
