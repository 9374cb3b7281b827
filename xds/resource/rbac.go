package resource

import (
	"fmt"
	"net/netip"
	"sort"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/tinymesh/tinymesh/dataplane/config"
	listenerv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/listener/v3"
	rbacv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/rbac/v3"
	routev3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/route/v3"
	httprbacv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/type/matcher/v3"
)

// RBAC: the HTTP filter (envoy.filters.http.rbac) in an HCM with its per-route
// overrides (RBACPerRoute in typed_per_filter_config), and the network filter
// (envoy.filters.network.rbac) before a TCP proxy. Both carry an
// envoy.config.rbac.v3.RBAC, decoded by decodeRBAC into config.RBAC.

const (
	// HTTPRBACFilter is the HTTP RBAC filter's name. Per-route overrides are
	// looked up under it in typed_per_filter_config, so an HCM must give its
	// RBAC filter this name.
	HTTPRBACFilter = "envoy.filters.http.rbac"
	// NetworkRBACFilter is the network RBAC filter's name.
	NetworkRBACFilter = "envoy.filters.network.rbac"

	typeHTTPRBAC         = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
	typeHTTPRBACPerRoute = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
	typeNetworkRBAC      = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
	typeFilterConfig     = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
)

// rbacReasons explains why RBAC fields are refused; other populated fields
// outside the accepted list are "not supported".
var rbacReasons = map[protoreflect.Name]string{
	"matcher":               "the matcher API is not supported (use rules)",
	"delay_deny":            "delaying denials is not supported",
	"audit_logging_options": "audit loggers are not supported",
	"condition":             "CEL conditions are not supported",
	"checked_condition":     "CEL conditions are not supported",
	"cel_config":            "CEL conditions are not supported",
}

// rejectRBACUnset is rejectUnset with RBAC's reasons.
func rejectRBACUnset(p path, m proto.Message, ok ...protoreflect.Name) error {
	err := rejectUnset(p, m, ok...)
	if e, isErr := err.(*Error); isErr {
		if r, found := rbacReasons[protoreflect.Name(lastField(e.Field))]; found {
			e.Reason = r
		}
	}
	return err
}

// isHTTPRBAC reports whether an HCM HTTP filter is the RBAC filter.
func isHTTPRBAC(f *hcmv3.HttpFilter) bool {
	if tc := f.GetTypedConfig(); tc != nil {
		return tc.GetTypeUrl() == typeHTTPRBAC
	}
	return f.GetName() == HTTPRBACFilter
}

// decodeHTTPRBACFilter decodes the HCM's RBAC filter at p (an http_filters
// entry).
func decodeHTTPRBACFilter(p path, f *hcmv3.HttpFilter) (*config.RBACFilter, error) {
	if f.GetName() != HTTPRBACFilter {
		return nil, p.at("name").errorf("the RBAC filter must be named %s: per-route overrides are looked up under that name, got %q", HTTPRBACFilter, f.GetName())
	}
	if f.GetDisabled() {
		return nil, p.at("disabled").errorf("a disabled RBAC filter is not supported")
	}
	tc := f.GetTypedConfig()
	if tc == nil {
		return nil, p.at("typed_config").errorf("must be set")
	}
	var r httprbacv3.RBAC
	if err := Unpack(tc, &r); err != nil {
		return nil, p.at("typed_config").errorf("%v", err)
	}
	return decodeHTTPRBAC(p.at("typed_config"), &r)
}

// decodeHTTPRBAC decodes the HTTP filter's config. Shadow rules and the stats
// settings are accepted and ignored: they only emit stats and dynamic metadata,
// which meshproxy does not have, and never change a decision.
func decodeHTTPRBAC(p path, r *httprbacv3.RBAC) (*config.RBACFilter, error) {
	if err := rejectRBACUnset(p, r, "rules", "rules_stat_prefix", "shadow_rules", "shadow_matcher",
		"shadow_rules_stat_prefix", "track_per_rule_stats"); err != nil {
		return nil, err
	}
	out := &config.RBACFilter{}
	if r.GetRules() == nil {
		return out, nil // Envoy: no rules, nothing enforced
	}
	var err error
	out.Rules, err = decodeRBAC(p.at("rules"), r.GetRules(), true)
	return out, err
}

// decodePerFilterRBAC returns the RBAC override in a virtual host's or route's
// typed_per_filter_config, nil when there is none. Entries for other filters
// are left alone.
func decodePerFilterRBAC(p path, m map[string]*anypb.Any) (*config.RBACFilter, error) {
	a, ok := m[HTTPRBACFilter]
	if !ok {
		return nil, nil
	}
	p = p.at(fmt.Sprintf("typed_per_filter_config[%q]", HTTPRBACFilter))
	if a.GetTypeUrl() == typeFilterConfig {
		var fc routev3.FilterConfig
		if err := Unpack(a, &fc); err != nil {
			return nil, p.errorf("%v", err)
		}
		if fc.GetDisabled() {
			return &config.RBACFilter{}, nil // the filter is off here
		}
		if fc.GetConfig() == nil {
			return nil, p.at("config").errorf("must be set unless disabled")
		}
		p, a = p.at("config"), fc.GetConfig()
	}
	if a.GetTypeUrl() != typeHTTPRBACPerRoute {
		return nil, p.errorf("want %s, got %s", typeHTTPRBACPerRoute, a.GetTypeUrl())
	}
	var pr httprbacv3.RBACPerRoute
	if err := Unpack(a, &pr); err != nil {
		return nil, p.errorf("%v", err)
	}
	if pr.GetRbac() == nil {
		return &config.RBACFilter{}, nil // Envoy: an RBACPerRoute without rbac disables the filter
	}
	return decodeHTTPRBAC(p.at("rbac"), pr.GetRbac())
}

// isNetworkRBAC reports whether a listener filter is the network RBAC filter.
func isNetworkRBAC(f *listenerv3.Filter) bool {
	if tc := f.GetTypedConfig(); tc != nil {
		return tc.GetTypeUrl() == typeNetworkRBAC
	}
	return f.GetName() == NetworkRBACFilter
}

// decodeNetworkRBAC decodes a network RBAC filter at p (a filters entry); nil
// means nothing is enforced. Both enforcement types are accepted: the data
// plane evaluates once, when the connection is accepted, and nothing it
// evaluates (principal, addresses, ports) changes during a connection, so
// CONTINUOUS gives the same decisions.
func decodeNetworkRBAC(p path, f *listenerv3.Filter) (*config.RBAC, error) {
	tc := f.GetTypedConfig()
	if tc == nil {
		return nil, p.at("typed_config").errorf("must be set")
	}
	p = p.at("typed_config")
	var r netrbacv3.RBAC
	if err := Unpack(tc, &r); err != nil {
		return nil, p.errorf("%v", err)
	}
	// Shadow rules and stat_prefix only feed stats, as in decodeHTTPRBAC.
	ok := []protoreflect.Name{"rules", "shadow_rules", "shadow_matcher", "shadow_rules_stat_prefix", "stat_prefix", "enforcement_type"}
	if d := r.GetDelayDeny(); d != nil && d.GetSeconds() == 0 && d.GetNanos() == 0 {
		ok = append(ok, "delay_deny") // zero: no delay
	}
	if err := rejectRBACUnset(p, &r, ok...); err != nil {
		return nil, err
	}
	if r.GetRules() == nil {
		return nil, nil
	}
	return decodeRBAC(p.at("rules"), r.GetRules(), false)
}

// decodeRBAC decodes rules; http says whether HTTP attributes (headers, path)
// can be matched.
func decodeRBAC(p path, r *rbacv3.RBAC, http bool) (*config.RBAC, error) {
	if err := rejectRBACUnset(p, r, "action", "policies"); err != nil {
		return nil, err
	}
	out := &config.RBAC{}
	switch r.GetAction() {
	case rbacv3.RBAC_ALLOW:
		out.Action = config.RBACAllow
	case rbacv3.RBAC_DENY:
		out.Action = config.RBACDeny
	default:
		// LOG only marks requests in dynamic metadata for access logs, which
		// meshproxy does not have; accepting it would silently do nothing.
		return nil, p.at("action").errorf("%s is not supported (only ALLOW and DENY)", r.GetAction())
	}
	names := make([]string, 0, len(r.GetPolicies()))
	for name := range r.GetPolicies() {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		pp := p.at(fmt.Sprintf("policies[%q]", name))
		pol := r.GetPolicies()[name]
		if err := rejectRBACUnset(pp, pol, "permissions", "principals"); err != nil {
			return nil, err
		}
		if len(pol.GetPermissions()) == 0 {
			return nil, pp.at("permissions").errorf("must not be empty")
		}
		if len(pol.GetPrincipals()) == 0 {
			return nil, pp.at("principals").errorf("must not be empty")
		}
		op := config.RBACPolicy{Name: name}
		for i, perm := range pol.GetPermissions() {
			m, err := decodePermission(pp.idx("permissions", i), perm, http)
			if err != nil {
				return nil, err
			}
			op.Permissions = append(op.Permissions, m)
		}
		for i, pr := range pol.GetPrincipals() {
			m, err := decodePrincipal(pp.idx("principals", i), pr, http)
			if err != nil {
				return nil, err
			}
			op.Principals = append(op.Principals, m)
		}
		out.Policies = append(out.Policies, op)
	}
	return out, nil
}

// notHTTP is the reason HTTP-only matchers are refused in the network filter:
// Envoy lets them never match there, which would silently turn a DENY policy
// into nothing.
const notHTTP = "HTTP attributes cannot be matched by " + NetworkRBACFilter

func decodePermission(p path, perm *rbacv3.Permission, http bool) (config.RBACMatcher, error) {
	var out config.RBACMatcher
	switch r := perm.GetRule().(type) {
	case *rbacv3.Permission_Any:
		if !r.Any {
			return out, p.at("any").errorf("must be true")
		}
		out.Kind = config.RBACAny
	case *rbacv3.Permission_AndRules:
		return decodePermissionSet(p.at("and_rules"), config.RBACAnd, r.AndRules, http)
	case *rbacv3.Permission_OrRules:
		return decodePermissionSet(p.at("or_rules"), config.RBACOr, r.OrRules, http)
	case *rbacv3.Permission_NotRule:
		if r.NotRule == nil {
			return out, p.at("not_rule").errorf("must be set")
		}
		m, err := decodePermission(p.at("not_rule"), r.NotRule, http)
		if err != nil {
			return out, err
		}
		out.Kind, out.Rules = config.RBACNot, []config.RBACMatcher{m}
	case *rbacv3.Permission_Header:
		if !http {
			return out, p.at("header").errorf(notHTTP)
		}
		h, err := decodeRBACHeader(p.at("header"), r.Header)
		if err != nil {
			return out, err
		}
		out.Kind, out.Header = config.RBACHeader, h
	case *rbacv3.Permission_UrlPath:
		if !http {
			return out, p.at("url_path").errorf(notHTTP)
		}
		s, err := decodePathMatcher(p.at("url_path"), r.UrlPath)
		if err != nil {
			return out, err
		}
		out.Kind, out.String = config.RBACURLPath, s
	case *rbacv3.Permission_DestinationPort:
		if r.DestinationPort > 65535 {
			return out, p.at("destination_port").errorf("out of range: %d", r.DestinationPort)
		}
		out.Kind = config.RBACDestinationPort
		out.PortLow, out.PortHigh = uint16(r.DestinationPort), uint16(r.DestinationPort)
	case *rbacv3.Permission_DestinationPortRange:
		// Int32Range: start inclusive, end exclusive.
		lo, hi := r.DestinationPortRange.GetStart(), r.DestinationPortRange.GetEnd()
		if lo < 0 || hi > 65536 || lo >= hi {
			return out, p.at("destination_port_range").errorf("want 0 <= start < end <= 65536, got [%d, %d)", lo, hi)
		}
		out.Kind = config.RBACDestinationPort
		out.PortLow, out.PortHigh = uint16(lo), uint16(hi-1)
	case *rbacv3.Permission_DestinationIp:
		c, err := decodeCIDR(p.at("destination_ip"), r.DestinationIp.GetAddressPrefix(), r.DestinationIp.GetPrefixLen().GetValue())
		if err != nil {
			return out, err
		}
		out.Kind, out.CIDR = config.RBACDestinationIP, c
	case *rbacv3.Permission_RequestedServerName:
		return out, p.at("requested_server_name").errorf("not supported")
	case *rbacv3.Permission_Metadata:
		return out, p.at("metadata").errorf("metadata matching is not supported")
	case *rbacv3.Permission_SourcedMetadata:
		return out, p.at("sourced_metadata").errorf("metadata matching is not supported")
	case *rbacv3.Permission_Matcher:
		return out, p.at("matcher").errorf("extension matchers are not supported")
	case *rbacv3.Permission_UriTemplate:
		return out, p.at("uri_template").errorf("URI templates are not supported")
	case nil:
		return out, p.errorf("a rule must be set")
	default:
		return out, p.errorf("unsupported permission %T", r)
	}
	return out, nil
}

func decodePermissionSet(p path, kind config.RBACMatchKind, s *rbacv3.Permission_Set, http bool) (config.RBACMatcher, error) {
	out := config.RBACMatcher{Kind: kind}
	if len(s.GetRules()) == 0 {
		return out, p.at("rules").errorf("must not be empty")
	}
	for i, r := range s.GetRules() {
		m, err := decodePermission(p.idx("rules", i), r, http)
		if err != nil {
			return out, err
		}
		out.Rules = append(out.Rules, m)
	}
	return out, nil
}

func decodePrincipal(p path, pr *rbacv3.Principal, http bool) (config.RBACMatcher, error) {
	var out config.RBACMatcher
	switch id := pr.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		if !id.Any {
			return out, p.at("any").errorf("must be true")
		}
		out.Kind = config.RBACAny
	case *rbacv3.Principal_AndIds:
		return decodePrincipalSet(p.at("and_ids"), config.RBACAnd, id.AndIds, http)
	case *rbacv3.Principal_OrIds:
		return decodePrincipalSet(p.at("or_ids"), config.RBACOr, id.OrIds, http)
	case *rbacv3.Principal_NotId:
		if id.NotId == nil {
			return out, p.at("not_id").errorf("must be set")
		}
		m, err := decodePrincipal(p.at("not_id"), id.NotId, http)
		if err != nil {
			return out, err
		}
		out.Kind, out.Rules = config.RBACNot, []config.RBACMatcher{m}
	case *rbacv3.Principal_Authenticated_:
		ap := p.at("authenticated")
		if err := rejectRBACUnset(ap, id.Authenticated, "principal_name"); err != nil {
			return out, err
		}
		out.Kind = config.RBACAuthenticated
		out.String.Kind = config.StringAny // no principal_name: any verified caller
		if n := id.Authenticated.GetPrincipalName(); n != nil {
			s, err := decodeStringMatcher(ap.at("principal_name"), n)
			if err != nil {
				return out, err
			}
			out.String = s
		}
	case *rbacv3.Principal_DirectRemoteIp:
		return decodeRemoteIP(p.at("direct_remote_ip"), id.DirectRemoteIp.GetAddressPrefix(), id.DirectRemoteIp.GetPrefixLen().GetValue())
	case *rbacv3.Principal_RemoteIp:
		return decodeRemoteIP(p.at("remote_ip"), id.RemoteIp.GetAddressPrefix(), id.RemoteIp.GetPrefixLen().GetValue())
	case *rbacv3.Principal_SourceIp:
		return decodeRemoteIP(p.at("source_ip"), id.SourceIp.GetAddressPrefix(), id.SourceIp.GetPrefixLen().GetValue())
	case *rbacv3.Principal_Header:
		if !http {
			return out, p.at("header").errorf(notHTTP)
		}
		h, err := decodeRBACHeader(p.at("header"), id.Header)
		if err != nil {
			return out, err
		}
		out.Kind, out.Header = config.RBACHeader, h
	case *rbacv3.Principal_UrlPath:
		if !http {
			return out, p.at("url_path").errorf(notHTTP)
		}
		s, err := decodePathMatcher(p.at("url_path"), id.UrlPath)
		if err != nil {
			return out, err
		}
		out.Kind, out.String = config.RBACURLPath, s
	case *rbacv3.Principal_Metadata:
		return out, p.at("metadata").errorf("metadata matching is not supported")
	case *rbacv3.Principal_SourcedMetadata:
		return out, p.at("sourced_metadata").errorf("metadata matching is not supported")
	case *rbacv3.Principal_FilterState:
		return out, p.at("filter_state").errorf("filter state matching is not supported")
	case *rbacv3.Principal_Custom:
		return out, p.at("custom").errorf("custom principals are not supported")
	case nil:
		return out, p.errorf("an identifier must be set")
	default:
		return out, p.errorf("unsupported principal %T", id)
	}
	return out, nil
}

func decodePrincipalSet(p path, kind config.RBACMatchKind, s *rbacv3.Principal_Set, http bool) (config.RBACMatcher, error) {
	out := config.RBACMatcher{Kind: kind}
	if len(s.GetIds()) == 0 {
		return out, p.at("ids").errorf("must not be empty")
	}
	for i, id := range s.GetIds() {
		m, err := decodePrincipal(p.idx("ids", i), id, http)
		if err != nil {
			return out, err
		}
		out.Rules = append(out.Rules, m)
	}
	return out, nil
}

func decodeRemoteIP(p path, addr string, bits uint32) (config.RBACMatcher, error) {
	c, err := decodeCIDR(p, addr, bits)
	return config.RBACMatcher{Kind: config.RBACRemoteIP, CIDR: c}, err
}

// decodeCIDR parses a CidrRange. An unset prefix_len is 0, as in Envoy.
func decodeCIDR(p path, addr string, bits uint32) (netip.Prefix, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, p.at("address_prefix").errorf("not an IP address: %q", addr)
	}
	a = a.Unmap()
	if bits > uint32(a.BitLen()) {
		return netip.Prefix{}, p.at("prefix_len").errorf("must be at most %d for %s, got %d", a.BitLen(), a, bits)
	}
	return netip.PrefixFrom(a, int(bits)).Masked(), nil
}

// decodeRBACHeader decodes a header matcher as routes do, without regular
// expressions: the data plane compiles RBAC rules without a failure path.
func decodeRBACHeader(p path, h *routev3.HeaderMatcher) (config.HeaderMatcher, error) {
	if h.GetSafeRegexMatch() != nil {
		return config.HeaderMatcher{}, p.at("safe_regex_match").errorf("regular expressions are not supported in RBAC")
	}
	if h.GetStringMatch().GetSafeRegex() != nil {
		return config.HeaderMatcher{}, p.at("string_match.safe_regex").errorf("regular expressions are not supported in RBAC")
	}
	return decodeHeaderMatcher(p, h)
}

func decodePathMatcher(p path, m *matcherv3.PathMatcher) (config.StringMatcher, error) {
	s := m.GetPath()
	if s == nil {
		return config.StringMatcher{}, p.at("path").errorf("must be set")
	}
	return decodeStringMatcher(p.at("path"), s)
}

// decodeStringMatcher accepts exact, prefix, suffix and contains, each with
// ignore_case.
func decodeStringMatcher(p path, m *matcherv3.StringMatcher) (config.StringMatcher, error) {
	out := config.StringMatcher{IgnoreCase: m.GetIgnoreCase()}
	switch ms := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		out.Kind, out.Value = config.StringExact, ms.Exact
	case *matcherv3.StringMatcher_Prefix:
		out.Kind, out.Value = config.StringPrefix, ms.Prefix
	case *matcherv3.StringMatcher_Suffix:
		out.Kind, out.Value = config.StringSuffix, ms.Suffix
	case *matcherv3.StringMatcher_Contains:
		out.Kind, out.Value = config.StringContains, ms.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		return out, p.at("safe_regex").errorf("regular expressions are not supported in RBAC")
	case *matcherv3.StringMatcher_Custom:
		return out, p.at("custom").errorf("custom matchers are not supported")
	case nil:
		return out, p.errorf("one of exact, prefix, suffix or contains must be set")
	default:
		return out, p.errorf("unsupported string matcher %T", ms)
	}
	if out.Kind != config.StringExact && out.Value == "" {
		// Envoy's validation requires a non-empty prefix, suffix or contains.
		return out, p.at(kindField[out.Kind]).errorf("must not be empty")
	}
	return out, nil
}

var kindField = [...]string{
	config.StringExact:    "exact",
	config.StringPrefix:   "prefix",
	config.StringSuffix:   "suffix",
	config.StringContains: "contains",
}

// leadingNetworkRBAC decodes a network RBAC filter at the head of a filter
// chain's filters. first is 1 when there is one (the filter to serve comes
// after it), 0 otherwise.
func leadingNetworkRBAC(cp path, filters []*listenerv3.Filter) (r *config.RBAC, first int, err error) {
	if len(filters) == 0 || !isNetworkRBAC(filters[0]) {
		return nil, 0, nil
	}
	if len(filters) != 2 {
		return nil, 0, cp.at("filters").errorf("%s must be followed by exactly one envoy.filters.network.tcp_proxy, got %d filters", NetworkRBACFilter, len(filters))
	}
	r, err = decodeNetworkRBAC(cp.idx("filters", 0), filters[0])
	return r, 1, err
}

// attachNetworkRBAC puts a leading network RBAC filter (first 1) into the TCP
// proxy it guards.
func attachNetworkRBAC(cp path, first int, r *config.RBAC, l *config.Listener) error {
	if first == 0 {
		return nil
	}
	if l.TCP == nil {
		return cp.idx("filters", 0).errorf("%s is supported only before envoy.filters.network.tcp_proxy", NetworkRBACFilter)
	}
	l.TCP.RBAC = r
	return nil
}
