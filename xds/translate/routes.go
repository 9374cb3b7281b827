package translate

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tinymesh/tinymesh/xds/mesh"
)

// routes returns the routes of a Service port: its HTTPRoutes' rules (GAMMA: an
// HTTPRoute whose parentRef is the Service replaces the default route), or the
// default route to the Service's own cluster. proxyless selects the forms gRPC's
// xDS client accepts.
func (t *translator) routes(svc *corev1.Service, port *corev1.ServicePort, proxyless bool) []*routev3.Route {
	var out []ranked
	for _, hr := range t.m.HTTPRoutes {
		if !attaches(hr, svc, port.Port) {
			continue
		}
		for i := range hr.Spec.Rules {
			out = append(out, t.rule(hr, i, proxyless)...)
		}
	}
	if out == nil {
		return []*routev3.Route{{
			Name:   "default",
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: clusterAction(OutboundClusterName(svc.Name, svc.Namespace, port.Port), 0),
		}}
	}
	// Gateway API precedence: exact path, then longest prefix, then method, then
	// most header matches, then most query matches; ties keep route and rule
	// order (the stable sort over routes sorted by namespace/name).
	slices.SortStableFunc(out, func(a, b ranked) int {
		return cmp.Or(
			cmp.Compare(b.pathRank, a.pathRank),
			cmp.Compare(b.prefixLen, a.prefixLen),
			cmp.Compare(b.method, a.method),
			cmp.Compare(b.headers, a.headers),
			cmp.Compare(b.queries, a.queries),
		)
	})
	routes := make([]*routev3.Route, len(out))
	for i, r := range out {
		routes[i] = r.route
	}
	return routes
}

// attaches reports whether hr has a parentRef to svc covering port.
func attaches(hr *gwv1.HTTPRoute, svc *corev1.Service, port int32) bool {
	for _, p := range hr.Spec.ParentRefs {
		if p.Kind == nil || *p.Kind != "Service" || string(p.Name) != svc.Name {
			continue
		}
		ns := hr.Namespace
		if p.Namespace != nil && *p.Namespace != "" {
			ns = string(*p.Namespace)
		}
		if ns == svc.Namespace && (p.Port == nil || *p.Port == port) {
			return true
		}
	}
	return false
}

// ranked is a route with the keys that order it among its peers.
type ranked struct {
	route                                         *routev3.Route
	pathRank, prefixLen, method, headers, queries int
}

// rule translates rule i of hr into one route per match (two for a proxyless
// path prefix).
func (t *translator) rule(hr *gwv1.HTTPRoute, i int, proxyless bool) []ranked {
	rule := &hr.Spec.Rules[i]
	action, timeout := t.action(hr, rule)
	var add []*corev3.HeaderValueOption
	var remove []string
	for _, f := range rule.Filters {
		if f.Type != gwv1.HTTPRouteFilterRequestHeaderModifier || f.RequestHeaderModifier == nil {
			continue
		}
		for _, h := range f.RequestHeaderModifier.Set {
			add = append(add, headerOption(string(h.Name), h.Value, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD))
		}
		for _, h := range f.RequestHeaderModifier.Add {
			add = append(add, headerOption(string(h.Name), h.Value, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD))
		}
		for _, h := range f.RequestHeaderModifier.Remove {
			remove = append(remove, strings.ToLower(h))
		}
	}
	matches := rule.Matches
	if len(matches) == 0 {
		matches = []gwv1.HTTPRouteMatch{{}} // no matches: everything
	}
	var out []ranked
	for j := range matches {
		m := &matches[j]
		for k, rm := range routeMatches(m, proxyless) {
			name := fmt.Sprintf("%s/%s/rule%d/match%d", hr.Namespace, hr.Name, i, j)
			if k > 0 {
				name += fmt.Sprintf("/%d", k)
			}
			r := &routev3.Route{
				Name:                   name,
				Match:                  rm.match,
				RequestHeadersToAdd:    add,
				RequestHeadersToRemove: remove,
			}
			if action != nil {
				ra := cloneAction(action)
				if proxyless && timeout > 0 {
					// gRPC reads max_stream_duration, not timeout (gRFC A31).
					ra.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(timeout)}
				}
				r.Action = &routev3.Route_Route{Route: ra}
			} else {
				// No backend with a positive weight: the Gateway API says 500.
				r.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 500}}
			}
			out = append(out, ranked{
				route: r, pathRank: rm.pathRank, prefixLen: rm.prefixLen,
				method: b2i(m.Method != nil), headers: len(m.Headers), queries: len(m.QueryParams),
			})
		}
	}
	return out
}

// action returns the route action for a rule's backends, or nil when no backend
// has a positive weight.
func (t *translator) action(hr *gwv1.HTTPRoute, rule *gwv1.HTTPRouteRule) (*routev3.RouteAction, time.Duration) {
	var timeout time.Duration
	if rule.Timeouts != nil && rule.Timeouts.Request != nil {
		timeout, _ = mesh.ParseDuration(*rule.Timeouts.Request) // validated
	}
	var wcs []*routev3.WeightedCluster_ClusterWeight
	for _, b := range rule.BackendRefs {
		w := int32(1)
		if b.Weight != nil {
			w = *b.Weight
		}
		if w <= 0 || b.Port == nil {
			continue
		}
		ns := hr.Namespace
		if b.Namespace != nil && *b.Namespace != "" {
			ns = string(*b.Namespace)
		}
		wcs = append(wcs, &routev3.WeightedCluster_ClusterWeight{
			Name:   OutboundClusterName(string(b.Name), ns, *b.Port),
			Weight: wrapperspb.UInt32(uint32(w)),
		})
	}
	ra := &routev3.RouteAction{Timeout: durationpb.New(timeout)}
	switch len(wcs) {
	case 0:
		return nil, timeout
	case 1:
		ra.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: wcs[0].Name}
	default:
		ra.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: wcs}}
	}
	return ra, timeout
}

// cloneAction copies the fields action sets, so that routes never share messages
// (the proxyless variant adds fields per route).
func cloneAction(a *routev3.RouteAction) *routev3.RouteAction {
	return &routev3.RouteAction{ClusterSpecifier: a.ClusterSpecifier, Timeout: a.Timeout}
}

type routeMatch struct {
	match               *routev3.RouteMatch
	pathRank, prefixLen int
}

const (
	rankPrefix = iota
	rankRegex
	rankExact
)

// routeMatches translates one HTTPRouteMatch. gRPC rejects path_separated_prefix,
// so proxyless clients get the same semantics from an exact path plus a "/"
// terminated prefix.
func routeMatches(m *gwv1.HTTPRouteMatch, proxyless bool) []routeMatch {
	var headers []*routev3.HeaderMatcher
	for _, h := range m.Headers {
		headers = append(headers, &routev3.HeaderMatcher{
			Name: strings.ToLower(string(h.Name)),
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
				StringMatch: stringMatch(h.Type != nil && *h.Type == gwv1.HeaderMatchRegularExpression, h.Value),
			},
		})
	}
	if m.Method != nil {
		headers = append(headers, &routev3.HeaderMatcher{
			Name:                 ":method",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: stringMatch(false, string(*m.Method))},
		})
	}
	var queries []*routev3.QueryParameterMatcher
	for _, q := range m.QueryParams {
		queries = append(queries, &routev3.QueryParameterMatcher{
			Name: string(q.Name),
			QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{
				StringMatch: stringMatch(q.Type != nil && *q.Type == gwv1.QueryParamMatchRegularExpression, q.Value),
			},
		})
	}
	typ, val := gwv1.PathMatchPathPrefix, "/"
	if m.Path != nil {
		if m.Path.Type != nil {
			typ = *m.Path.Type
		}
		if m.Path.Value != nil {
			val = *m.Path.Value
		}
	}
	mk := func(rank, plen int) (routeMatch, *routev3.RouteMatch) {
		rm := &routev3.RouteMatch{Headers: headers, QueryParameters: queries}
		return routeMatch{match: rm, pathRank: rank, prefixLen: plen}, rm
	}
	switch typ {
	case gwv1.PathMatchExact:
		r, rm := mk(rankExact, len(val))
		rm.PathSpecifier = &routev3.RouteMatch_Path{Path: val}
		return []routeMatch{r}
	case gwv1.PathMatchRegularExpression:
		r, rm := mk(rankRegex, len(val))
		rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: val}}
		return []routeMatch{r}
	}
	// PathPrefix matches whole path elements and ignores a trailing slash.
	p := strings.TrimRight(val, "/")
	if p == "" {
		r, rm := mk(rankPrefix, 1)
		rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
		return []routeMatch{r}
	}
	if proxyless {
		r1, rm1 := mk(rankPrefix, len(p))
		rm1.PathSpecifier = &routev3.RouteMatch_Path{Path: p}
		r2, rm2 := mk(rankPrefix, len(p))
		rm2.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: p + "/"}
		return []routeMatch{r1, r2}
	}
	r, rm := mk(rankPrefix, len(p))
	rm.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: p}
	return []routeMatch{r}
}

func stringMatch(regex bool, v string) *matcherv3.StringMatcher {
	if regex {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: v}}}
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}
}

func headerOption(name, value string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: strings.ToLower(name), Value: value},
		AppendAction: action,
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
