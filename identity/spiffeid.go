// Package identity names workloads the way SPIFFE does (docs/identity.md). The
// control plane derives these IDs from the mesh model; certificates carrying them
// (X.509-SVIDs) come from the subpackages: ca (the control plane's CA and its gRPC
// service), jointoken (first-issuance credentials) and svid (the proxy's client,
// which renews them). It holds no state and is safe for concurrent use.
package identity

import (
	"errors"
	"fmt"
	"strings"
)

// DefaultTrustDomain is the trust domain used when none is configured.
const DefaultTrustDomain = "cluster.local"

// WorkloadID is a workload's SPIFFE ID in the Kubernetes-style form
// spiffe://<trust domain>/ns/<namespace>/sa/<service account>.
type WorkloadID struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

// String returns the ID as a URI.
func (id WorkloadID) String() string {
	return "spiffe://" + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// ErrNotWorkloadID reports a URI that is not of the workload form.
var ErrNotWorkloadID = errors.New("not a spiffe://<trust domain>/ns/<namespace>/sa/<service account> ID")

// ParseWorkloadID reads the URI form back.
func ParseWorkloadID(uri string) (WorkloadID, error) {
	rest, ok := strings.CutPrefix(uri, "spiffe://")
	if !ok {
		return WorkloadID{}, fmt.Errorf("%q: %w", uri, ErrNotWorkloadID)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 5 || parts[1] != "ns" || parts[3] != "sa" || parts[0] == "" || parts[2] == "" || parts[4] == "" {
		return WorkloadID{}, fmt.Errorf("%q: %w", uri, ErrNotWorkloadID)
	}
	return WorkloadID{TrustDomain: parts[0], Namespace: parts[2], ServiceAccount: parts[4]}, nil
}
