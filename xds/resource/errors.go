package resource

import (
	"fmt"
	"strings"
)

// Resource type names used in *Error, as the xDS protos name them.
const (
	KindListener              = "Listener"
	KindRouteConfiguration    = "RouteConfiguration"
	KindCluster               = "Cluster"
	KindClusterLoadAssignment = "ClusterLoadAssignment"
)

// Type URLs of the resources this package decodes.
const (
	TypeListener              = "type.googleapis.com/envoy.config.listener.v3.Listener"
	TypeRouteConfiguration    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	TypeCluster               = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	TypeClusterLoadAssignment = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// Error is a validation failure of one resource. Its text becomes the NACK
// error_detail verbatim, so it names the resource type, the resource name and the
// field path (in proto field names, as Envoy prints them).
type Error struct {
	Type   string // KindListener, ...
	Name   string // resource name
	Field  string // e.g. "filter_chains[0].filters[0].typed_config"; empty for the whole resource
	Reason string
}

// Error formats as `Type "name": field: reason`, the NACK error_detail text.
func (e *Error) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s %q: %s", e.Type, e.Name, e.Reason)
	}
	return fmt.Sprintf("%s %q: %s: %s", e.Type, e.Name, e.Field, e.Reason)
}

// path builds field paths while decoding nested messages; it is a value so that
// each nesting level gets its own copy.
type path struct {
	kind, name, field string
}

func (p path) at(field string) path {
	if p.field != "" && !strings.HasPrefix(field, "[") {
		field = "." + field
	}
	p.field += field
	return p
}

func (p path) idx(field string, i int) path {
	return p.at(fmt.Sprintf("%s[%d]", field, i))
}

func (p path) errorf(format string, args ...any) *Error {
	return &Error{Type: p.kind, Name: p.name, Field: p.field, Reason: fmt.Sprintf(format, args...)}
}
