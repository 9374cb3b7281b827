package config

import "net/netip"

// RBACAction is what an RBAC configuration does with a request or connection
// that matches one of its policies (envoy.config.rbac.v3.RBAC.action).
type RBACAction uint8

const (
	// RBACAllow lets through only what matches a policy; with no policies
	// nothing is allowed.
	RBACAllow RBACAction = iota
	// RBACDeny refuses what matches a policy; with no policies everything is
	// allowed.
	RBACDeny
)

func (a RBACAction) String() string {
	if a == RBACDeny {
		return "DENY"
	}
	return "ALLOW"
}

// RBAC is one set of authorization rules (envoy.config.rbac.v3.RBAC), used by
// the HTTP RBAC filter (HTTPConnectionManager.RBAC and its per-route
// overrides) and the network RBAC filter (TCPProxy.RBAC).
type RBAC struct {
	Action RBACAction
	// Policies sorted by Name, the order they are evaluated in, so that the
	// policy a decision names is deterministic (Envoy keeps them in a sorted
	// map too). Names are unique.
	Policies []RBACPolicy
}

// RBACPolicy matches when at least one permission and at least one principal
// match. Both lists have at least one entry.
type RBACPolicy struct {
	Name        string
	Permissions []RBACMatcher
	Principals  []RBACMatcher
}

// RBACMatchKind says what an RBACMatcher tests.
type RBACMatchKind uint8

const (
	// RBACAny matches everything.
	RBACAny RBACMatchKind = iota
	// RBACAnd matches when every matcher in Rules does (and_rules, and_ids).
	RBACAnd
	// RBACOr matches when any matcher in Rules does (or_rules, or_ids).
	RBACOr
	// RBACNot matches when its only Rules entry does not (not_rule, not_id).
	RBACNot
	// RBACHeader tests a request header with Header; pseudo-headers
	// ":method", ":authority", ":path" (with the query) and ":scheme" are
	// matched against the request, as in Envoy. HTTP only.
	RBACHeader
	// RBACURLPath tests the request path without the query with String
	// (url_path). HTTP only.
	RBACURLPath
	// RBACDestinationPort matches a local (listener) port in
	// [PortLow, PortHigh]: destination_port, or destination_port_range.
	RBACDestinationPort
	// RBACDestinationIP matches a local address inside CIDR.
	RBACDestinationIP
	// RBACAuthenticated matches a caller with a verified certificate whose
	// SPIFFE ID matches String (authenticated.principal_name); StringAny
	// matches every such caller.
	RBACAuthenticated
	// RBACRemoteIP matches the downstream peer address inside CIDR
	// (direct_remote_ip, remote_ip and source_ip: the data plane never takes
	// the caller's address from x-forwarded-for, so the three are one).
	RBACRemoteIP
)

// RBACMatcher is one node of a permission or principal tree. Kind says which
// fields are used; the others are zero.
type RBACMatcher struct {
	Kind   RBACMatchKind
	Rules  []RBACMatcher // RBACAnd, RBACOr: at least one; RBACNot: exactly one
	Header HeaderMatcher // RBACHeader; Kind is never HeaderRegex
	String StringMatcher // RBACURLPath, RBACAuthenticated
	// PortLow and PortHigh bound RBACDestinationPort, both inclusive.
	PortLow, PortHigh uint16
	CIDR              netip.Prefix // RBACDestinationIP, RBACRemoteIP; masked
}

// StringMatchKind says how StringMatcher.Value is compared.
type StringMatchKind uint8

const (
	StringExact StringMatchKind = iota
	StringPrefix
	StringSuffix
	StringContains
	// StringAny matches every value, including the empty one.
	StringAny
)

// StringMatcher tests a string (envoy.type.matcher.v3.StringMatcher without
// regular expressions). IgnoreCase compares ASCII letters case-insensitively.
type StringMatcher struct {
	Kind       StringMatchKind
	Value      string
	IgnoreCase bool
}

// RBACFilter is the HTTP RBAC filter's configuration at one level: the HCM's
// filter, or a virtual host's or route's override (typed_per_filter_config
// "envoy.filters.http.rbac", an RBACPerRoute).
type RBACFilter struct {
	// Rules is what is enforced; nil enforces nothing, as Envoy does for a
	// filter without rules or an RBACPerRoute without rbac.
	Rules *RBAC
}
