// Package v1alpha1 holds the Go types of the mesh's own API group,
// mesh.tinymesh.io/v1alpha1: PeerAuthentication (the mTLS mode of workloads) and
// AuthorizationPolicy (who may call a Service), as docs/identity.md describes them.
//
// They are plain Kubernetes-style types (TypeMeta, ObjectMeta, Spec) with JSON tags
// for sigs.k8s.io/yaml; sources decode them strictly, xds/mesh validates them and
// xds/translate turns them into TLS contexts and RBAC filters. The package holds
// no logic beyond constants and is safe for concurrent use.
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// GroupVersion is the apiVersion of the kinds in this package.
const GroupVersion = "mesh.tinymesh.io/v1alpha1"

// Kind names.
const (
	KindPeerAuthentication  = "PeerAuthentication"
	KindAuthorizationPolicy = "AuthorizationPolicy"
)

// PeerAuthentication sets how a workload's inbound listener treats mTLS. In the
// root namespace without a selector it applies mesh-wide; in another namespace
// without a selector, to that namespace; with a selector, to the matching
// workloads of its namespace.
type PeerAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec PeerAuthenticationSpec `json:"spec"`
}

// PeerAuthenticationSpec is the body of a PeerAuthentication.
type PeerAuthenticationSpec struct {
	// Selector picks workloads of the policy's namespace by label; nil means the
	// whole namespace (or the whole mesh in the root namespace).
	Selector *WorkloadSelector `json:"selector,omitempty"`
	// MTLS holds the mode; required.
	MTLS *PeerAuthenticationMTLS `json:"mtls,omitempty"`
}

// WorkloadSelector matches workloads whose labels include every MatchLabels
// entry. An empty selector matches every workload of the namespace.
type WorkloadSelector struct {
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
}

// PeerAuthenticationMTLS holds the mTLS mode.
type PeerAuthenticationMTLS struct {
	Mode MTLSMode `json:"mode"`
}

// MTLSMode is how an inbound listener treats mTLS.
type MTLSMode string

// The modes, as docs/identity.md defines them.
const (
	// ModeStrict accepts mTLS connections only.
	ModeStrict MTLSMode = "STRICT"
	// ModePermissive accepts mTLS and plaintext on the same port.
	ModePermissive MTLSMode = "PERMISSIVE"
	// ModeDisable accepts plaintext only; clients send plaintext.
	ModeDisable MTLSMode = "DISABLE"
)

// AuthorizationPolicy allows callers to reach the workloads of a Service. With no
// policy for a Service everything is allowed; with one or more, only requests
// matching a rule of one of them.
type AuthorizationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec AuthorizationPolicySpec `json:"spec"`
}

// AuthorizationPolicySpec is the body of an AuthorizationPolicy.
type AuthorizationPolicySpec struct {
	// TargetRef names the destination Service, in the policy's namespace.
	TargetRef PolicyTargetReference `json:"targetRef"`
	// Rules are OR'ed; no rules allows nothing.
	Rules []AuthorizationRule `json:"rules,omitempty"`
}

// PolicyTargetReference names the object a policy applies to: a Service.
type PolicyTargetReference struct {
	// Group is "" (core).
	Group string `json:"group,omitempty"`
	Kind  string `json:"kind"`
	Name  string `json:"name"`
}

// AuthorizationRule allows requests from any of From's callers to To. A nil From
// is any caller (plaintext ones included); a nil To is any request.
type AuthorizationRule struct {
	From *RuleFrom `json:"from,omitempty"`
	To   *RuleTo   `json:"to,omitempty"`
}

// RuleFrom lists callers; a caller matching any entry of any list matches.
type RuleFrom struct {
	// SPIFFEIDs are exact SPIFFE IDs in the mesh's trust domain.
	SPIFFEIDs []string `json:"spiffeIDs,omitempty"`
	// ServiceAccounts are "name" (in the policy's namespace) or "namespace/name".
	ServiceAccounts []string `json:"serviceAccounts,omitempty"`
	// Namespaces match every service account of the namespace.
	Namespaces []string `json:"namespaces,omitempty"`
}

// RuleTo restricts what a caller may request; every field that is set must match.
type RuleTo struct {
	// Paths are exact, or prefixes when ending in "/" or "*" ("*" itself is
	// dropped: "/api*" is the prefix "/api").
	Paths []string `json:"paths,omitempty"`
	// Methods are upper-case HTTP methods.
	Methods []string `json:"methods,omitempty"`
	// Ports are ports of the target Service.
	Ports []int32 `json:"ports,omitempty"`
}
