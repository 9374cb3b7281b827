// Package resource decodes and validates Envoy v3 xDS resources (Listener,
// RouteConfiguration, Cluster, ClusterLoadAssignment, and SDS Secret) into
// dataplane/config values and assembles them into a complete config.Snapshot,
// resolving the SDS secret names of TLS settings into their material.
//
// It sits between the ADS client (xds/client), which receives protos, and the data
// plane, which only ever sees dataplane/config. Anything the data plane cannot honour
// is rejected with an *Error naming the resource type, name and field path; the
// client sends that text verbatim as the NACK error_detail.
//
// It decodes into proto/envoywire's mirrors of the Envoy messages, not into
// go-control-plane's, so a sidecar never links or builds descriptors for the
// whole Envoy type graph (xds/internal/wiregen explains the mirrors). The
// exported decoders take either kind of message; Unpack, Pack and TypeURL
// handle Anys under the Envoy type URLs.
//
// The package is pure: no goroutines, no package state, and no I/O except one:
// TLS DataSources given as a filename are read while decoding, as Envoy reads
// them when it loads the config, so an unreadable or invalid certificate is a
// NACK naming its field rather than a failure on the first connection. Every function may
// be called from any goroutine; values it returns are new and owned by the caller,
// and must be treated as immutable once they are part of a published snapshot.
package resource
