package resource_test

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/xds/resource"
	"github.com/tinymesh/tinymesh/xds/xdstest"
)

func hdr(k, v string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: action}
}

func TestDecodeRouteConfig(t *testing.T) {
	in := &routev3.RouteConfiguration{
		Name:                    "outbound_http",
		RequestHeadersToAdd:     []*corev3.HeaderValueOption{hdr("X-Mesh", "1", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)},
		ResponseHeadersToRemove: []string{"Server"},
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    "backend:8080",
			Domains: []string{"backend", "backend:8080"},
			ResponseHeadersToAdd: []*corev3.HeaderValueOption{{
				Header: &corev3.HeaderValue{Key: "x-vh", RawValue: []byte("raw")}, Append: wrapperspb.Bool(true)}},
			Routes: []*routev3.Route{
				{
					Name: "api",
					Match: &routev3.RouteMatch{
						PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api"},
						CaseSensitive: wrapperspb.Bool(false),
						Headers: []*routev3.HeaderMatcher{
							{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
								MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "GET"}}}},
							{Name: "X-Canary", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}},
							{Name: "x-user", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{
								SafeRegexMatch: &matcherv3.RegexMatcher{Regex: "bot-[0-9]+"}}},
							{Name: "x-old", HeaderMatchSpecifier: &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: "a"}},
							{Name: "x-any"},
						},
					},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
							TotalWeight: wrapperspb.UInt32(100),
							Clusters: []*routev3.WeightedCluster_ClusterWeight{
								{Name: "v1", Weight: wrapperspb.UInt32(90), RequestHeadersToRemove: []string{"X-Drop"}},
								{Name: "v2", Weight: wrapperspb.UInt32(10),
									RequestHeadersToAdd: []*corev3.HeaderValueOption{hdr("x-v", "2", 0)}},
								{Name: "v3", Weight: wrapperspb.UInt32(0)},
							}}},
						Timeout:              durationpb.New(3 * time.Second),
						PrefixRewrite:        "/v2",
						HostRewriteSpecifier: &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "backend.internal"},
					}},
				},
				{
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/healthz"},
						Grpc: &routev3.RouteMatch_GrpcRouteMatchOptions{}},
					Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
						Status: 200, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "ok"}}}},
				},
				{
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/r/.*"}}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"},
						RetryPolicy:      &routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(0)},
					}},
				},
			},
		}},
	}
	want := &config.RouteConfig{
		Name:                    "outbound_http",
		RequestHeadersToAdd:     []config.HeaderValueOption{{Name: "x-mesh", Value: "1"}},
		ResponseHeadersToRemove: []string{"server"},
		VirtualHosts: []*config.VirtualHost{{
			Name: "backend:8080", Domains: []string{"backend", "backend:8080"},
			ResponseHeadersToAdd: []config.HeaderValueOption{{Name: "x-vh", Value: "raw", Append: true}},
			Routes: []*config.Route{
				{
					Name: "api",
					Match: config.RouteMatch{PathKind: config.PathSeparatedPrefix, Path: "/api", Headers: []config.HeaderMatcher{
						{Name: ":method", Kind: config.HeaderExact, Value: "GET"},
						{Name: "x-canary", Kind: config.HeaderPresent, Invert: true},
						{Name: "x-user", Kind: config.HeaderRegex, Value: "bot-[0-9]+", Invert: true},
						{Name: "x-old", Kind: config.HeaderPrefix, Value: "a"},
						{Name: "x-any", Kind: config.HeaderPresent},
					}},
					Action: &config.RouteAction{
						Clusters: []config.WeightedCluster{
							{Name: "v1", Weight: 90, RequestHeadersToRemove: []string{"x-drop"}},
							{Name: "v2", Weight: 10, RequestHeadersToAdd: []config.HeaderValueOption{{Name: "x-v", Value: "2", Append: true}}},
						},
						Timeout: 3 * time.Second, PrefixRewrite: "/v2", HostRewrite: "backend.internal",
					},
				},
				{
					Match:          config.RouteMatch{PathKind: config.PathExact, Path: "/healthz", CaseSensitive: true, GRPCOnly: true},
					DirectResponse: &config.DirectResponse{Status: 200, Body: "ok"},
				},
				{
					Match:  config.RouteMatch{PathKind: config.PathRegex, Path: "/r/.*", CaseSensitive: true},
					Action: &config.RouteAction{Clusters: []config.WeightedCluster{{Name: "c", Weight: 1}}, Timeout: 15 * time.Second},
				},
			},
		}},
	}
	got, err := resource.DecodeRouteConfig(in)
	if err != nil {
		t.Fatalf("DecodeRouteConfig: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("DecodeRouteConfig (-want +got):\n%s", diff)
	}
}

// withRoute returns a one-route config whose route is changed by f.
func withRoute(f func(r *routev3.Route)) *routev3.RouteConfiguration {
	rc := xdstest.RouteConfig("rc", "c")
	f(rc.VirtualHosts[0].Routes[0])
	return rc
}

func withAction(f func(a *routev3.RouteAction)) *routev3.RouteConfiguration {
	return withRoute(func(r *routev3.Route) { f(r.GetRoute()) })
}

func TestDecodeRouteConfigErrors(t *testing.T) {
	const q = `RouteConfiguration "rc": virtual_hosts[0].routes[0].`
	regex := func(re string) *matcherv3.RegexMatcher { return &matcherv3.RegexMatcher{Regex: re} }
	tests := []struct {
		name string
		in   *routev3.RouteConfiguration
		want string
	}{
		{"no name", &routev3.RouteConfiguration{}, `RouteConfiguration "": name: must not be empty`},
		{"duplicate domain", func() *routev3.RouteConfiguration {
			rc := xdstest.RouteConfig("rc", "c", "a", "b")
			vh := proto.Clone(rc.VirtualHosts[0]).(*routev3.VirtualHost)
			vh.Domains = []string{"B"}
			rc.VirtualHosts = append(rc.VirtualHosts, vh)
			return rc
		}(), `RouteConfiguration "rc": virtual_hosts[1].domains[0]: domain "B" is also in virtual_hosts[0]`},
		{"no domains", func() *routev3.RouteConfiguration {
			rc := xdstest.RouteConfig("rc", "c")
			rc.VirtualHosts[0].Domains = nil
			return rc
		}(), `RouteConfiguration "rc": virtual_hosts[0].domains: must not be empty`},
		{"bad path regex", withRoute(func(r *routev3.Route) {
			r.Match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: regex("a(")}
		}), q + "match.safe_regex.regex: invalid RE2: error parsing regexp: missing closing ): `a(`"},
		{"bad header regex", withRoute(func(r *routev3.Route) {
			r.Match.Headers = []*routev3.HeaderMatcher{{}, {Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
				StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: regex("[")}}}}}
			r.Match.Headers[0].Name = "ok"
		}), q + "match.headers[1].string_match.safe_regex.regex: invalid RE2: error parsing regexp: missing closing ]: `[`"},
		{"ignore case", withRoute(func(r *routev3.Route) {
			r.Match.Headers = []*routev3.HeaderMatcher{{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
				StringMatch: &matcherv3.StringMatcher{IgnoreCase: true, MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "a"}}}}}
		}), q + "match.headers[0].string_match.ignore_case: not supported"},
		{"range match", withRoute(func(r *routev3.Route) {
			r.Match.Headers = []*routev3.HeaderMatcher{{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{}}}
		}), q + "match.headers[0].range_match: not supported"},
		{"query params", withRoute(func(r *routev3.Route) {
			r.Match.QueryParameters = []*routev3.QueryParameterMatcher{{Name: "q"}}
		}), q + "match.query_parameters: query parameter matching is not supported"},
		{"no path specifier", withRoute(func(r *routev3.Route) { r.Match.PathSpecifier = nil }),
			q + "match: a path specifier (prefix, path, safe_regex or path_separated_prefix) is required"},
		{"redirect", withRoute(func(r *routev3.Route) { r.Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{}} }),
			q + "redirect: redirects are not supported"},
		{"no action", withRoute(func(r *routev3.Route) { r.Action = nil }), `RouteConfiguration "rc": virtual_hosts[0].routes[0]: an action (route or direct_response) is required`},
		{"cluster header", withAction(func(a *routev3.RouteAction) {
			a.ClusterSpecifier = &routev3.RouteAction_ClusterHeader{ClusterHeader: "x-cluster"}
		}), q + "route.cluster_header: not supported"},
		{"zero weights", withAction(func(a *routev3.RouteAction) {
			a.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
				Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: "a"}}}}
		}), q + "route.weighted_clusters: the sum of weights must be positive"},
		{"weights overflow", withAction(func(a *routev3.RouteAction) {
			a.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
				Clusters: []*routev3.WeightedCluster_ClusterWeight{
					{Name: "a", Weight: wrapperspb.UInt32(1 << 31)}, {Name: "b", Weight: wrapperspb.UInt32(1 << 31)}}}}
		}), q + "route.weighted_clusters: the sum of weights must be below 2^32, got 4294967296"},
		{"regex rewrite", withAction(func(a *routev3.RouteAction) { a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{} }),
			q + "route.regex_rewrite: not supported"},
		{"retries", withAction(func(a *routev3.RouteAction) { a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx"} }),
			q + "route.retry_policy: retries are not supported"},
		{"auto host rewrite", withAction(func(a *routev3.RouteAction) {
			a.HostRewriteSpecifier = &routev3.RouteAction_AutoHostRewrite{AutoHostRewrite: wrapperspb.Bool(true)}
		}), q + "route.auto_host_rewrite: not supported"},
		{"negative timeout", withAction(func(a *routev3.RouteAction) { a.Timeout = durationpb.New(-1) }),
			q + "route.timeout: must not be negative, got -1ns"},
		{"append action", withRoute(func(r *routev3.Route) {
			r.RequestHeadersToAdd = []*corev3.HeaderValueOption{hdr("a", "b", corev3.HeaderValueOption_ADD_IF_ABSENT)}
		}), q + "request_headers_to_add[0].append_action: ADD_IF_ABSENT is not supported"},
		{"direct response status", withRoute(func(r *routev3.Route) {
			r.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 99}}
		}), q + "direct_response.status: must be in 200..599, got 99"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkDecodeError(t, "DecodeRouteConfig", resource.DecodeRouteConfig, tt.in, tt.want)
		})
	}
}

func FuzzDecodeRouteConfig(f *testing.F) {
	for _, rc := range []*routev3.RouteConfiguration{
		xdstest.RouteConfig("rc", "c", "a", "b:80"),
		withRoute(func(r *routev3.Route) {
			r.Match.Headers = []*routev3.HeaderMatcher{{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{
				SafeRegexMatch: &matcherv3.RegexMatcher{Regex: "a+"}}}}
		}),
	} {
		b, err := proto.Marshal(rc)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var rc routev3.RouteConfiguration
		if proto.Unmarshal(b, &rc) != nil {
			return
		}
		got, err := resource.DecodeRouteConfig(&rc)
		if err != nil {
			return
		}
		for _, vh := range got.VirtualHosts {
			for _, r := range vh.Routes {
				if (r.Action == nil) == (r.DirectResponse == nil) {
					t.Fatalf("route %+v: want exactly one of Action and DirectResponse", r)
				}
				if r.Action != nil && len(r.Action.Clusters) == 0 {
					t.Fatalf("route %+v: action without clusters", r)
				}
			}
		}
	})
}
