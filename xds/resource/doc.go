// Package resource decodes and validates Envoy v3 xDS resources (Listener,
// RouteConfiguration, Cluster, ClusterLoadAssignment) into dataplane/config values
// and assembles them into a complete config.Snapshot.
//
// It sits between the ADS client (xds/client), which receives protos, and the data
// plane, which only ever sees dataplane/config. Anything the data plane cannot honour
// is rejected with an *Error naming the resource type, name and field path; the
// client sends that text verbatim as the NACK error_detail.
//
// The package is pure: no goroutines, no I/O, no package state. Every function may
// be called from any goroutine; values it returns are new and owned by the caller,
// and must be treated as immutable once they are part of a published snapshot.
package resource
