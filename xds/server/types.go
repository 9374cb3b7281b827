package server

import "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

// The resource types a snapshot holds, in dependency order.
const (
	typeListener = resource.ListenerType
	typeRoute    = resource.RouteType
	typeCluster  = resource.ClusterType
	typeEndpoint = resource.EndpointType
	typeSecret   = resource.SecretType
)
