package resource_test

import (
	"net/netip"
	"testing"

	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/xds/resource"
	"github.com/tinymesh/tinymesh/xds/xdstest"
)

// equatePrefix compares netip.Prefix values (unexported fields) with ==.
var equatePrefix = cmpopts.EquateComparable(netip.Prefix{})

func strExact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func strPrefix(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
}

func permAny() *rbacv3.Permission { return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}} }

func princAny() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
}

func princID(matcher *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{
		Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: matcher}}}
}

func permPort(p uint32) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: p}}
}

// rbacRules is an ALLOW rule set with one policy allowing frontend on any
// request.
func rbacRules() *rbacv3.RBAC {
	return &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
		"default/frontend[0]": {Permissions: []*rbacv3.Permission{permAny()},
			Principals: []*rbacv3.Principal{princID(strExact("spiffe://cluster.local/ns/default/sa/frontend"))}},
	}}
}

func rbacFilter(r *httprbacv3.RBAC) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: resource.HTTPRBACFilter,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdstest.MustAny(r)}}
}

// withRBAC returns the outbound_http listener with r as an HTTP RBAC filter
// before the router.
func withRBAC(r *httprbacv3.RBAC) *listenerv3.Listener {
	return withHCM(func(h *hcmv3.HttpConnectionManager) {
		h.HttpFilters = append([]*hcmv3.HttpFilter{rbacFilter(r)}, h.HttpFilters...)
	})
}

// withRules is withRBAC with the filter's rules changed by f.
func withRules(f func(r *rbacv3.RBAC)) *listenerv3.Listener {
	r := rbacRules()
	f(r)
	return withRBAC(&httprbacv3.RBAC{Rules: r})
}

// withPolicy is withRBAC with one policy p named "p".
func withPolicy(p *rbacv3.Policy) *listenerv3.Listener {
	return withRules(func(r *rbacv3.RBAC) { r.Policies = map[string]*rbacv3.Policy{"p": p} })
}

func withPermission(perm *rbacv3.Permission) *listenerv3.Listener {
	return withPolicy(&rbacv3.Policy{Permissions: []*rbacv3.Permission{perm}, Principals: []*rbacv3.Principal{princAny()}})
}

func withPrincipal(pr *rbacv3.Principal) *listenerv3.Listener {
	return withPolicy(&rbacv3.Policy{Permissions: []*rbacv3.Permission{permAny()}, Principals: []*rbacv3.Principal{pr}})
}

// tcpWithRBAC is a TCP listener whose tcp_proxy is preceded by a network RBAC
// filter configured with r.
func tcpWithRBAC(r *netrbacv3.RBAC) *listenerv3.Listener {
	l := xdstest.TCPListener("outbound_http", "127.0.0.1", 15001, "c")
	fc := l.FilterChains[0]
	fc.Filters = append([]*listenerv3.Filter{{Name: resource.NetworkRBACFilter,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(r)}}}, fc.Filters...)
	return l
}

func TestDecodeHTTPRBAC(t *testing.T) {
	in := &httprbacv3.RBAC{
		ShadowRules:     &rbacv3.RBAC{Action: rbacv3.RBAC_LOG}, // ignored: stats only
		RulesStatPrefix: "x",
		Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
			"z-last": {Permissions: []*rbacv3.Permission{permAny()}, Principals: []*rbacv3.Principal{princAny()}},
			"a-first": {
				Permissions: []*rbacv3.Permission{
					{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
						{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: ":method",
							HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: strExact("POST")}}}},
						{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{
							Path: &matcherv3.StringMatcher{IgnoreCase: true, MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/Admin/"}}}}}},
					}}}},
					{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
						permPort(8080),
						{Rule: &rbacv3.Permission_DestinationPortRange{DestinationPortRange: &typev3.Int32Range{Start: 9000, End: 9100}}},
					}}}},
					{Rule: &rbacv3.Permission_NotRule{NotRule: &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{
						DestinationIp: &corev3.CidrRange{AddressPrefix: "10.1.2.3", PrefixLen: wrapperspb.UInt32(16)}}}}},
				},
				Principals: []*rbacv3.Principal{
					{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
						princID(strPrefix("spiffe://cluster.local/ns/ops/sa/")),
						{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{}}},
					}}}},
					{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
						{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: &corev3.CidrRange{AddressPrefix: "::1", PrefixLen: wrapperspb.UInt32(128)}}},
						{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: &corev3.CidrRange{AddressPrefix: "192.168.0.0", PrefixLen: wrapperspb.UInt32(16)}}},
						{Identifier: &rbacv3.Principal_SourceIp{SourceIp: &corev3.CidrRange{AddressPrefix: "0.0.0.0"}}},
					}}}},
					{Identifier: &rbacv3.Principal_NotId{NotId: &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{
						Header: &routev3.HeaderMatcher{Name: "X-Bot"}}}}},
					{Identifier: &rbacv3.Principal_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{
						Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".json"}}}}}},
				},
			},
		}},
	}
	want := &config.RBACFilter{Rules: &config.RBAC{Action: config.RBACDeny, Policies: []config.RBACPolicy{
		{
			Name: "a-first",
			Permissions: []config.RBACMatcher{
				{Kind: config.RBACAnd, Rules: []config.RBACMatcher{
					{Kind: config.RBACHeader, Header: config.HeaderMatcher{Name: ":method", Kind: config.HeaderExact, Value: "POST"}},
					{Kind: config.RBACURLPath, String: config.StringMatcher{Kind: config.StringPrefix, Value: "/Admin/", IgnoreCase: true}},
				}},
				{Kind: config.RBACOr, Rules: []config.RBACMatcher{
					{Kind: config.RBACDestinationPort, PortLow: 8080, PortHigh: 8080},
					{Kind: config.RBACDestinationPort, PortLow: 9000, PortHigh: 9099},
				}},
				{Kind: config.RBACNot, Rules: []config.RBACMatcher{
					{Kind: config.RBACDestinationIP, CIDR: netip.MustParsePrefix("10.1.0.0/16")},
				}},
			},
			Principals: []config.RBACMatcher{
				{Kind: config.RBACOr, Rules: []config.RBACMatcher{
					{Kind: config.RBACAuthenticated, String: config.StringMatcher{Kind: config.StringPrefix, Value: "spiffe://cluster.local/ns/ops/sa/"}},
					{Kind: config.RBACAuthenticated, String: config.StringMatcher{Kind: config.StringAny}},
				}},
				{Kind: config.RBACAnd, Rules: []config.RBACMatcher{
					{Kind: config.RBACRemoteIP, CIDR: netip.MustParsePrefix("::1/128")},
					{Kind: config.RBACRemoteIP, CIDR: netip.MustParsePrefix("192.168.0.0/16")},
					{Kind: config.RBACRemoteIP, CIDR: netip.MustParsePrefix("0.0.0.0/0")},
				}},
				{Kind: config.RBACNot, Rules: []config.RBACMatcher{
					{Kind: config.RBACHeader, Header: config.HeaderMatcher{Name: "x-bot", Kind: config.HeaderPresent}},
				}},
				{Kind: config.RBACURLPath, String: config.StringMatcher{Kind: config.StringSuffix, Value: ".json"}},
			},
		},
		{Name: "z-last", Permissions: []config.RBACMatcher{{Kind: config.RBACAny}}, Principals: []config.RBACMatcher{{Kind: config.RBACAny}}},
	}}}
	got, err := resource.DecodeListener(withRBAC(in))
	if err != nil {
		t.Fatalf("DecodeListener: %v", err)
	}
	if diff := cmp.Diff(want, got.Config.HTTP.RBAC, equatePrefix); diff != "" {
		t.Errorf("HCM RBAC (-want +got):\n%s", diff)
	}

	// Without rules the filter enforces nothing (Envoy), but it is there for
	// per-route overrides.
	got, err = resource.DecodeListener(withRBAC(&httprbacv3.RBAC{}))
	if err != nil {
		t.Fatalf("DecodeListener without rules: %v", err)
	}
	if diff := cmp.Diff(&config.RBACFilter{}, got.Config.HTTP.RBAC); diff != "" {
		t.Errorf("HCM RBAC without rules (-want +got):\n%s", diff)
	}
	// No filter: nil.
	got, err = resource.DecodeListener(xdstest.HTTPListener("l", "127.0.0.1", 1, "r"))
	if err != nil || got.Config.HTTP.RBAC != nil {
		t.Errorf("DecodeListener without RBAC filter = %+v, %v; want nil RBAC", got.Config.HTTP.RBAC, err)
	}
}

func TestDecodeNetworkRBAC(t *testing.T) {
	tests := []struct {
		name string
		in   *netrbacv3.RBAC
		want *config.RBAC
	}{
		{"rules", &netrbacv3.RBAC{StatPrefix: "tcp", EnforcementType: netrbacv3.RBAC_CONTINUOUS, DelayDeny: durationpb.New(0),
			Rules: rbacRules()},
			&config.RBAC{Policies: []config.RBACPolicy{{Name: "default/frontend[0]",
				Permissions: []config.RBACMatcher{{Kind: config.RBACAny}},
				Principals: []config.RBACMatcher{{Kind: config.RBACAuthenticated,
					String: config.StringMatcher{Value: "spiffe://cluster.local/ns/default/sa/frontend"}}}}}}},
		{"no rules", &netrbacv3.RBAC{StatPrefix: "tcp"}, nil},
		{"allow nothing", &netrbacv3.RBAC{Rules: &rbacv3.RBAC{}}, &config.RBAC{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resource.DecodeListener(tcpWithRBAC(tt.in))
			if err != nil {
				t.Fatalf("DecodeListener: %v", err)
			}
			if diff := cmp.Diff(&config.TCPProxy{StatPrefix: "outbound_http", Cluster: "c", IdleTimeout: 3600e9, RBAC: tt.want}, got.Config.TCP, equatePrefix); diff != "" {
				t.Errorf("TCP proxy (-want +got):\n%s", diff)
			}
		})
	}
}

func perFilter(m proto.Message) map[string]*anypb.Any {
	return map[string]*anypb.Any{resource.HTTPRBACFilter: xdstest.MustAny(m), "envoy.filters.http.other": xdstest.MustAny(&routev3.Route{})}
}

func TestDecodeRBACPerRoute(t *testing.T) {
	allowAll := &rbacv3.RBAC{Action: rbacv3.RBAC_DENY}
	tests := []struct {
		name      string
		vh, route map[string]*anypb.Any
		wantVH    *config.RBACFilter
		wantRoute *config.RBACFilter
	}{
		{name: "none"},
		{name: "vhost rules", vh: perFilter(&httprbacv3.RBACPerRoute{Rbac: &httprbacv3.RBAC{Rules: allowAll}}),
			wantVH: &config.RBACFilter{Rules: &config.RBAC{Action: config.RBACDeny}}},
		{name: "route without rbac disables", route: perFilter(&httprbacv3.RBACPerRoute{}),
			wantRoute: &config.RBACFilter{}},
		{name: "rbac without rules disables", route: perFilter(&httprbacv3.RBACPerRoute{Rbac: &httprbacv3.RBAC{}}),
			wantRoute: &config.RBACFilter{}},
		{name: "FilterConfig disabled", vh: perFilter(&routev3.FilterConfig{Disabled: true}),
			wantVH: &config.RBACFilter{}},
		{name: "FilterConfig wrapping RBACPerRoute", route: perFilter(&routev3.FilterConfig{
			Config: xdstest.MustAny(&httprbacv3.RBACPerRoute{Rbac: &httprbacv3.RBAC{Rules: allowAll}})}),
			wantRoute: &config.RBACFilter{Rules: &config.RBAC{Action: config.RBACDeny}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := xdstest.RouteConfig("r", "c")
			rc.VirtualHosts[0].TypedPerFilterConfig = tt.vh
			rc.VirtualHosts[0].Routes[0].TypedPerFilterConfig = tt.route
			got, err := resource.DecodeRouteConfig(rc)
			if err != nil {
				t.Fatalf("DecodeRouteConfig: %v", err)
			}
			if diff := cmp.Diff(tt.wantVH, got.VirtualHosts[0].RBAC); diff != "" {
				t.Errorf("virtual host RBAC (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantRoute, got.VirtualHosts[0].Routes[0].RBAC); diff != "" {
				t.Errorf("route RBAC (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeRBACErrors(t *testing.T) {
	const q = `Listener "outbound_http": `
	const f = q + "filter_chains[0].filters[0].typed_config.http_filters[0]"
	const r = f + ".typed_config.rules"
	const pol = r + `.policies["p"]`
	tests := []struct {
		name string
		in   *listenerv3.Listener
		want string
	}{
		{"wrong name", withHCM(func(h *hcmv3.HttpConnectionManager) {
			fl := rbacFilter(&httprbacv3.RBAC{})
			fl.Name = "rbac"
			h.HttpFilters = append([]*hcmv3.HttpFilter{fl}, h.HttpFilters...)
		}), f + `.name: the RBAC filter must be named envoy.filters.http.rbac: per-route overrides are looked up under that name, got "rbac"`},
		{"no typed_config", withHCM(func(h *hcmv3.HttpConnectionManager) {
			h.HttpFilters = append([]*hcmv3.HttpFilter{{Name: resource.HTTPRBACFilter}}, h.HttpFilters...)
		}), f + ".typed_config: must be set"},
		{"disabled", withHCM(func(h *hcmv3.HttpConnectionManager) {
			fl := rbacFilter(&httprbacv3.RBAC{})
			fl.Disabled = true
			h.HttpFilters = append([]*hcmv3.HttpFilter{fl}, h.HttpFilters...)
		}), f + ".disabled: a disabled RBAC filter is not supported"},
		{"two filters", withHCM(func(h *hcmv3.HttpConnectionManager) {
			h.HttpFilters = append([]*hcmv3.HttpFilter{rbacFilter(&httprbacv3.RBAC{}), rbacFilter(&httprbacv3.RBAC{})}, h.HttpFilters...)
		}), q + "filter_chains[0].filters[0].typed_config.http_filters[1]: only one RBAC filter is supported"},
		{"matcher", withRBAC(&httprbacv3.RBAC{Matcher: &xdsmatcherv3.Matcher{}}), f + ".typed_config.matcher: the matcher API is not supported (use rules)"},
		{"log action", withRules(func(r *rbacv3.RBAC) { r.Action = rbacv3.RBAC_LOG }), r + ".action: LOG is not supported (only ALLOW and DENY)"},
		{"audit logging", withRules(func(r *rbacv3.RBAC) { r.AuditLoggingOptions = &rbacv3.RBAC_AuditLoggingOptions{} }),
			r + ".audit_logging_options: audit loggers are not supported"},
		{"condition", withPolicy(&rbacv3.Policy{Permissions: []*rbacv3.Permission{permAny()}, Principals: []*rbacv3.Principal{princAny()},
			CelConfig: &corev3.CelExpressionConfig{}}), pol + ".cel_config: CEL conditions are not supported"},
		{"no permissions", withPolicy(&rbacv3.Policy{Principals: []*rbacv3.Principal{princAny()}}), pol + ".permissions: must not be empty"},
		{"no principals", withPolicy(&rbacv3.Policy{Permissions: []*rbacv3.Permission{permAny()}}), pol + ".principals: must not be empty"},
		{"any false", withPermission(&rbacv3.Permission{Rule: &rbacv3.Permission_Any{}}), pol + ".permissions[0].any: must be true"},
		{"empty rule", withPermission(&rbacv3.Permission{}), pol + ".permissions[0]: a rule must be set"},
		{"empty and", withPermission(&rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{}}}),
			pol + ".permissions[0].and_rules.rules: must not be empty"},
		{"nested error", withPermission(&rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			permAny(), {Rule: &rbacv3.Permission_NotRule{NotRule: permPort(70000)}}}}}}),
			pol + ".permissions[0].or_rules.rules[1].not_rule.destination_port: out of range: 70000"},
		{"port range", withPermission(&rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPortRange{
			DestinationPortRange: &typev3.Int32Range{Start: 10, End: 10}}}),
			pol + ".permissions[0].destination_port_range: want 0 <= start < end <= 65536, got [10, 10)"},
		{"metadata", withPermission(&rbacv3.Permission{Rule: &rbacv3.Permission_Metadata{Metadata: &matcherv3.MetadataMatcher{}}}),
			pol + ".permissions[0].metadata: metadata matching is not supported"},
		{"sni", withPermission(&rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: strExact("a")}}),
			pol + ".permissions[0].requested_server_name: not supported"},
		{"header regex", withPermission(&rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: "a",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: "a"}}}}}),
			pol + ".permissions[0].header.safe_regex_match: regular expressions are not supported in RBAC"},
		{"header no name", withPermission(&rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{}}}),
			pol + ".permissions[0].header.name: must not be empty"},
		{"path regex", withPermission(&rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{
			Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "a"}}}}}}}),
			pol + ".permissions[0].url_path.path.safe_regex: regular expressions are not supported in RBAC"},
		{"path unset", withPermission(&rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{}}}),
			pol + ".permissions[0].url_path.path: must be set"},
		{"empty prefix", withPrincipal(princID(strPrefix(""))),
			pol + ".principals[0].authenticated.principal_name.prefix: must not be empty"},
		{"bad cidr", withPrincipal(&rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: &corev3.CidrRange{AddressPrefix: "x"}}}),
			pol + `.principals[0].direct_remote_ip.address_prefix: not an IP address: "x"`},
		{"long prefix", withPrincipal(&rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: &corev3.CidrRange{AddressPrefix: "10.0.0.0", PrefixLen: wrapperspb.UInt32(33)}}}),
			pol + ".principals[0].remote_ip.prefix_len: must be at most 32 for 10.0.0.0, got 33"},
		{"any id false", withPrincipal(&rbacv3.Principal{Identifier: &rbacv3.Principal_Any{}}), pol + ".principals[0].any: must be true"},
		{"empty or ids", withPrincipal(&rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{}}}),
			pol + ".principals[0].or_ids.ids: must not be empty"},
		{"filter state", withPrincipal(&rbacv3.Principal{Identifier: &rbacv3.Principal_FilterState{FilterState: &matcherv3.FilterStateMatcher{}}}),
			pol + ".principals[0].filter_state: filter state matching is not supported"},
		{"no identifier", withPrincipal(&rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: &rbacv3.Principal{}}}),
			pol + ".principals[0].not_id: an identifier must be set"},
		{"string matcher unset", withPrincipal(princID(&matcherv3.StringMatcher{})),
			pol + ".principals[0].authenticated.principal_name: one of exact, prefix, suffix or contains must be set"},
		// Network filter.
		{"network before HCM", func() *listenerv3.Listener {
			l := xdstest.HTTPListener("outbound_http", "127.0.0.1", 15001, "r")
			fc := l.FilterChains[0]
			fc.Filters = append([]*listenerv3.Filter{{Name: resource.NetworkRBACFilter,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(&netrbacv3.RBAC{})}}}, fc.Filters...)
			return l
		}(), q + "filter_chains[0].filters[0]: envoy.filters.network.rbac is supported only before envoy.filters.network.tcp_proxy"},
		{"network alone", func() *listenerv3.Listener {
			l := tcpWithRBAC(&netrbacv3.RBAC{})
			l.FilterChains[0].Filters = l.FilterChains[0].Filters[:1]
			return l
		}(), q + "filter_chains[0].filters: envoy.filters.network.rbac must be followed by exactly one envoy.filters.network.tcp_proxy, got 1 filters"},
		{"network delay deny", tcpWithRBAC(&netrbacv3.RBAC{DelayDeny: durationpb.New(1e9)}),
			q + "filter_chains[0].filters[0].typed_config.delay_deny: delaying denials is not supported"},
		{"network header", tcpWithRBAC(&netrbacv3.RBAC{Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"p": {
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: "a"}}}},
			Principals:  []*rbacv3.Principal{princAny()}}}}}),
			q + `filter_chains[0].filters[0].typed_config.rules.policies["p"].permissions[0].header: HTTP attributes cannot be matched by envoy.filters.network.rbac`},
		{"network url_path principal", tcpWithRBAC(&netrbacv3.RBAC{Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"p": {
			Permissions: []*rbacv3.Permission{permAny()},
			Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{
				Path: strExact("/")}}}}}}}}}),
			q + `filter_chains[0].filters[0].typed_config.rules.policies["p"].principals[0].url_path: HTTP attributes cannot be matched by envoy.filters.network.rbac`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkDecodeError(t, "DecodeListener", resource.DecodeListener, tt.in, tt.want)
		})
	}
}

func TestDecodeRBACPerRouteErrors(t *testing.T) {
	const q = `RouteConfiguration "r": virtual_hosts[0]`
	const key = `.typed_per_filter_config["envoy.filters.http.rbac"]`
	tests := []struct {
		name      string
		vh, route map[string]*anypb.Any
		want      string
	}{
		{name: "wrong type", vh: perFilter(&routev3.Route{}),
			want: q + key + ": want type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute, got type.googleapis.com/envoy.config.route.v3.Route"},
		{name: "FilterConfig without config", route: perFilter(&routev3.FilterConfig{}),
			want: q + ".routes[0]" + key + ".config: must be set unless disabled"},
		{name: "bad rules", route: perFilter(&httprbacv3.RBACPerRoute{Rbac: &httprbacv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_LOG}}}),
			want: q + ".routes[0]" + key + ".rbac.rules.action: LOG is not supported (only ALLOW and DENY)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := xdstest.RouteConfig("r", "c")
			rc.VirtualHosts[0].TypedPerFilterConfig = tt.vh
			rc.VirtualHosts[0].Routes[0].TypedPerFilterConfig = tt.route
			checkDecodeError(t, "DecodeRouteConfig", resource.DecodeRouteConfig, rc, tt.want)
		})
	}
}

func FuzzDecodeRBAC(f *testing.F) {
	for _, r := range []*httprbacv3.RBAC{{}, {Rules: rbacRules()}} {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var r httprbacv3.RBAC
		if proto.Unmarshal(b, &r) != nil {
			return
		}
		got, err := resource.DecodeListener(withRBAC(&r))
		if err == nil && got.Config.HTTP.RBAC == nil {
			t.Fatalf("DecodeListener accepted %v without an RBAC filter config", &r)
		}
	})
}
