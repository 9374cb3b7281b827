// Package v1alpha1 holds the Go types of the mesh's own API group,
// mesh.tinymesh.io/v1alpha1: PeerAuthentication (the mTLS mode of workloads) and
// AuthorizationPolicy (who may call a Service), as docs/identity.md describes them,
// and Telemetry (workloads' access logs, docs/observability.md).
//
// They are plain Kubernetes-style types (TypeMeta, ObjectMeta, Spec) with JSON tags
// for sigs.k8s.io/yaml; sources decode them strictly, xds/mesh validates them and
// xds/translate turns them into TLS contexts, RBAC filters and access_log. The package holds
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
	KindTelemetry           = "Telemetry"
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

// Telemetry sets the access logs and the tracing of workloads' sidecars. It is
// scoped like a PeerAuthentication: in the root namespace without a selector it
// applies mesh-wide; in another namespace without a selector, to that namespace;
// with a selector, to the matching workloads of its namespace. For each of
// accessLogging and tracing, the most specific Telemetry that sets it applies,
// that section whole (a section's fields are not merged).
type Telemetry struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec TelemetrySpec `json:"spec"`
}

// TelemetrySpec is the body of a Telemetry.
type TelemetrySpec struct {
	// Selector picks workloads of the Telemetry's namespace by label; nil means
	// the whole namespace (or the whole mesh in the root namespace).
	Selector *WorkloadSelector `json:"selector,omitempty"`
	// AccessLogging configures the access log. At least one of AccessLogging
	// and Tracing is required.
	AccessLogging *AccessLogging `json:"accessLogging,omitempty"`
	// Tracing configures request spans (tracing.go).
	Tracing *Tracing `json:"tracing,omitempty"`
}

// AccessLogging is one access log of every listener of a sidecar (inbound,
// outbound HTTP and outbound TCP): one line per HTTP request or TCP connection.
type AccessLogging struct {
	// Disabled turns access logs off where this Telemetry applies (to override
	// a less specific one); the other fields must then be empty.
	Disabled bool `json:"disabled,omitempty"`
	// Format is json (the default) or text.
	Format AccessLogFormat `json:"format,omitempty"`
	// Path is /dev/stdout (the default), /dev/stderr or an absolute file path
	// on the sidecar's host.
	Path string `json:"path,omitempty"`
	// SamplingPercent is the share of requests and connections logged,
	// 0..100 with up to four decimals; nil means 100.
	SamplingPercent *float64 `json:"samplingPercent,omitempty"`
}

// AccessLogFormat is the format of access log lines.
type AccessLogFormat string

// The access log formats.
const (
	// AccessLogJSON writes one JSON object per line.
	AccessLogJSON AccessLogFormat = "json"
	// AccessLogText writes Envoy-style text lines.
	AccessLogText AccessLogFormat = "text"
)

// Access log paths with a logger of their own.
const (
	AccessLogStdout = "/dev/stdout"
	AccessLogStderr = "/dev/stderr"
)
