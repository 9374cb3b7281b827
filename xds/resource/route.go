package resource

import (
	"regexp"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tinymesh/tinymesh/dataplane/config"
	corev3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/core/v3"
	routev3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/route/v3"
	matcherv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/type/matcher/v3"
)

// DecodeRouteConfig validates m and converts it. m is the proto/envoywire mirror or
// go-control-plane's message. Errors are *Error.
func DecodeRouteConfig(m proto.Message) (*config.RouteConfig, error) {
	rc, err := FromEnvoy[*routev3.RouteConfiguration](m)
	if err != nil {
		return nil, &Error{Type: KindRouteConfiguration, Reason: err.Error()}
	}
	p := path{kind: KindRouteConfiguration, name: rc.GetName()}
	if rc.GetName() == "" {
		return nil, p.at("name").errorf("must not be empty")
	}
	return decodeRouteConfig(p, rc)
}

// decodeRouteConfig is shared by RDS and HCM inline route configs, so that errors
// of inline configs carry the listener's path.
func decodeRouteConfig(p path, rc *routev3.RouteConfiguration) (*config.RouteConfig, error) {
	if rc.GetVhds() != nil {
		return nil, p.at("vhds").errorf("VHDS is not supported")
	}
	if len(rc.GetClusterSpecifierPlugins()) > 0 {
		return nil, p.at("cluster_specifier_plugins").errorf("not supported")
	}
	out := &config.RouteConfig{Name: rc.GetName()}
	var err error
	if out.RequestHeadersToAdd, err = headersToAdd(p, "request_headers_to_add", rc.GetRequestHeadersToAdd()); err != nil {
		return nil, err
	}
	if out.ResponseHeadersToAdd, err = headersToAdd(p, "response_headers_to_add", rc.GetResponseHeadersToAdd()); err != nil {
		return nil, err
	}
	out.RequestHeadersToRemove = lowerAll(rc.GetRequestHeadersToRemove())
	out.ResponseHeadersToRemove = lowerAll(rc.GetResponseHeadersToRemove())
	seen := map[string]int{}
	for i, vh := range rc.GetVirtualHosts() {
		vp := p.idx("virtual_hosts", i)
		v, err := decodeVirtualHost(vp, vh)
		if err != nil {
			return nil, err
		}
		// Envoy rejects a domain served by two virtual hosts; so do we, since the
		// choice between them would be arbitrary.
		for j, d := range v.Domains {
			k := strings.ToLower(d)
			if prev, dup := seen[k]; dup {
				return nil, vp.idx("domains", j).errorf("domain %q is also in virtual_hosts[%d]", d, prev)
			}
			seen[k] = i
		}
		out.VirtualHosts = append(out.VirtualHosts, v)
	}
	return out, nil
}

func decodeVirtualHost(p path, vh *routev3.VirtualHost) (*config.VirtualHost, error) {
	if len(vh.GetDomains()) == 0 {
		return nil, p.at("domains").errorf("must not be empty")
	}
	if vh.GetRequireTls() != routev3.VirtualHost_NONE {
		return nil, p.at("require_tls").errorf("not supported")
	}
	if err := checkRetry(p.at("retry_policy"), vh.GetRetryPolicy()); err != nil {
		return nil, err
	}
	if len(vh.GetRateLimits()) > 0 {
		return nil, p.at("rate_limits").errorf("not supported")
	}
	if vh.GetRequestMirrorPolicies() != nil {
		return nil, p.at("request_mirror_policies").errorf("not supported")
	}
	v := &config.VirtualHost{Name: vh.GetName()}
	for i, d := range vh.GetDomains() {
		if d == "" {
			return nil, p.idx("domains", i).errorf("must not be empty")
		}
		v.Domains = append(v.Domains, d)
	}
	var err error
	if v.RequestHeadersToAdd, err = headersToAdd(p, "request_headers_to_add", vh.GetRequestHeadersToAdd()); err != nil {
		return nil, err
	}
	if v.ResponseHeadersToAdd, err = headersToAdd(p, "response_headers_to_add", vh.GetResponseHeadersToAdd()); err != nil {
		return nil, err
	}
	v.RequestHeadersToRemove = lowerAll(vh.GetRequestHeadersToRemove())
	v.ResponseHeadersToRemove = lowerAll(vh.GetResponseHeadersToRemove())
	if v.RBAC, err = decodePerFilterRBAC(p, vh.GetTypedPerFilterConfig()); err != nil {
		return nil, err
	}
	for i, r := range vh.GetRoutes() {
		rt, err := decodeRoute(p.idx("routes", i), r)
		if err != nil {
			return nil, err
		}
		v.Routes = append(v.Routes, rt)
	}
	return v, nil
}

// checkRetry rejects retry policies that would retry: the data plane retries only
// connect failures on its own (like Envoy's connect-failure), not what a policy
// asks for, and silently not doing so would change what the control plane asked
// for. A policy with num_retries 0 is a no-op and accepted.
func checkRetry(p path, rp *routev3.RetryPolicy) error {
	if rp == nil {
		return nil
	}
	if n := rp.GetNumRetries(); n != nil && n.GetValue() == 0 {
		return nil
	}
	return p.errorf("retries are not supported")
}

func decodeRoute(p path, r *routev3.Route) (*config.Route, error) {
	out := &config.Route{Name: r.GetName()}
	var err error
	if out.Match, err = decodeMatch(p.at("match"), r.GetMatch()); err != nil {
		return nil, err
	}
	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		if out.Action, err = decodeRouteAction(p.at("route"), a.Route); err != nil {
			return nil, err
		}
	case *routev3.Route_DirectResponse:
		dp := p.at("direct_response")
		st := a.DirectResponse.GetStatus()
		if st < 200 || st > 599 {
			return nil, dp.at("status").errorf("must be in 200..599, got %d", st)
		}
		d := &config.DirectResponse{Status: int(st)}
		if b := a.DirectResponse.GetBody(); b != nil {
			switch s := b.GetSpecifier().(type) {
			case *corev3.DataSource_InlineString:
				d.Body = s.InlineString
			case *corev3.DataSource_InlineBytes:
				d.Body = string(s.InlineBytes)
			default:
				return nil, dp.at("body").errorf("only inline_string and inline_bytes are supported")
			}
		}
		out.DirectResponse = d
	case *routev3.Route_Redirect:
		return nil, p.at("redirect").errorf("redirects are not supported")
	case nil:
		return nil, p.errorf("an action (route or direct_response) is required")
	default:
		return nil, p.errorf("unsupported route action %T", a)
	}
	if out.RequestHeadersToAdd, err = headersToAdd(p, "request_headers_to_add", r.GetRequestHeadersToAdd()); err != nil {
		return nil, err
	}
	if out.ResponseHeadersToAdd, err = headersToAdd(p, "response_headers_to_add", r.GetResponseHeadersToAdd()); err != nil {
		return nil, err
	}
	out.RequestHeadersToRemove = lowerAll(r.GetRequestHeadersToRemove())
	out.ResponseHeadersToRemove = lowerAll(r.GetResponseHeadersToRemove())
	if out.RBAC, err = decodePerFilterRBAC(p, r.GetTypedPerFilterConfig()); err != nil {
		return nil, err
	}
	return out, nil
}

func decodeMatch(p path, m *routev3.RouteMatch) (config.RouteMatch, error) {
	var out config.RouteMatch
	if m == nil {
		return out, p.errorf("must be set")
	}
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		out.PathKind, out.Path = config.PathPrefix, ps.Prefix
	case *routev3.RouteMatch_Path:
		out.PathKind, out.Path = config.PathExact, ps.Path
	case *routev3.RouteMatch_SafeRegex:
		if err := checkRegex(p.at("safe_regex"), ps.SafeRegex); err != nil {
			return out, err
		}
		out.PathKind, out.Path = config.PathRegex, ps.SafeRegex.GetRegex()
	case *routev3.RouteMatch_PathSeparatedPrefix:
		if strings.ContainsAny(ps.PathSeparatedPrefix, "?#") || strings.HasSuffix(ps.PathSeparatedPrefix, "/") {
			return out, p.at("path_separated_prefix").errorf("must not contain '?' or '#' nor end with '/'")
		}
		out.PathKind, out.Path = config.PathSeparatedPrefix, ps.PathSeparatedPrefix
	case nil:
		return out, p.errorf("a path specifier (prefix, path, safe_regex or path_separated_prefix) is required")
	default:
		return out, p.errorf("unsupported path specifier %T", ps)
	}
	out.CaseSensitive = true
	if cs := m.GetCaseSensitive(); cs != nil {
		out.CaseSensitive = cs.GetValue()
	}
	if len(m.GetQueryParameters()) > 0 {
		return out, p.at("query_parameters").errorf("query parameter matching is not supported")
	}
	if m.GetRuntimeFraction() != nil {
		return out, p.at("runtime_fraction").errorf("not supported")
	}
	if m.GetTlsContext() != nil {
		return out, p.at("tls_context").errorf("not supported")
	}
	if len(m.GetDynamicMetadata()) > 0 {
		return out, p.at("dynamic_metadata").errorf("not supported")
	}
	if len(m.GetFilterState()) > 0 {
		return out, p.at("filter_state").errorf("not supported")
	}
	if m.GetCookies() != nil {
		return out, p.at("cookies").errorf("not supported")
	}
	out.GRPCOnly = m.GetGrpc() != nil
	for i, h := range m.GetHeaders() {
		hm, err := decodeHeaderMatcher(p.idx("headers", i), h)
		if err != nil {
			return out, err
		}
		out.Headers = append(out.Headers, hm)
	}
	return out, nil
}

func decodeHeaderMatcher(p path, h *routev3.HeaderMatcher) (config.HeaderMatcher, error) {
	out := config.HeaderMatcher{Name: strings.ToLower(h.GetName()), Invert: h.GetInvertMatch()}
	if out.Name == "" {
		return out, p.at("name").errorf("must not be empty")
	}
	if h.GetTreatMissingHeaderAsEmpty() {
		return out, p.at("treat_missing_header_as_empty").errorf("not supported")
	}
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case nil:
		// Envoy: a matcher without a specifier matches when the header is present.
		out.Kind = config.HeaderPresent
	case *routev3.HeaderMatcher_ExactMatch:
		out.Kind, out.Value = config.HeaderExact, s.ExactMatch
	case *routev3.HeaderMatcher_PrefixMatch:
		out.Kind, out.Value = config.HeaderPrefix, s.PrefixMatch
	case *routev3.HeaderMatcher_SuffixMatch:
		out.Kind, out.Value = config.HeaderSuffix, s.SuffixMatch
	case *routev3.HeaderMatcher_ContainsMatch:
		out.Kind, out.Value = config.HeaderContains, s.ContainsMatch
	case *routev3.HeaderMatcher_SafeRegexMatch:
		if err := checkRegex(p.at("safe_regex_match"), s.SafeRegexMatch); err != nil {
			return out, err
		}
		out.Kind, out.Value = config.HeaderRegex, s.SafeRegexMatch.GetRegex()
	case *routev3.HeaderMatcher_PresentMatch:
		// present_match: false means "header absent" in Envoy.
		out.Kind = config.HeaderPresent
		if !s.PresentMatch {
			out.Invert = !out.Invert
		}
	case *routev3.HeaderMatcher_StringMatch:
		sp := p.at("string_match")
		sm := s.StringMatch
		if sm.GetIgnoreCase() {
			return out, sp.at("ignore_case").errorf("not supported")
		}
		switch ms := sm.GetMatchPattern().(type) {
		case *matcherv3.StringMatcher_Exact:
			out.Kind, out.Value = config.HeaderExact, ms.Exact
		case *matcherv3.StringMatcher_Prefix:
			out.Kind, out.Value = config.HeaderPrefix, ms.Prefix
		case *matcherv3.StringMatcher_Suffix:
			out.Kind, out.Value = config.HeaderSuffix, ms.Suffix
		case *matcherv3.StringMatcher_Contains:
			out.Kind, out.Value = config.HeaderContains, ms.Contains
		case *matcherv3.StringMatcher_SafeRegex:
			if err := checkRegex(sp.at("safe_regex"), ms.SafeRegex); err != nil {
				return out, err
			}
			out.Kind, out.Value = config.HeaderRegex, ms.SafeRegex.GetRegex()
		default:
			return out, sp.errorf("unsupported string matcher %T", ms)
		}
	case *routev3.HeaderMatcher_RangeMatch:
		return out, p.at("range_match").errorf("not supported")
	default:
		return out, p.errorf("unsupported header matcher %T", s)
	}
	return out, nil
}

// checkRegex makes sure the data plane will be able to compile the expression.
// Go's regexp accepts the RE2 syntax Envoy uses.
func checkRegex(p path, r *matcherv3.RegexMatcher) error {
	if _, err := regexp.Compile(r.GetRegex()); err != nil {
		return p.at("regex").errorf("invalid RE2: %v", err)
	}
	return nil
}

func decodeRouteAction(p path, a *routev3.RouteAction) (*config.RouteAction, error) {
	out := &config.RouteAction{}
	switch cs := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		if cs.Cluster == "" {
			return nil, p.at("cluster").errorf("must not be empty")
		}
		out.Clusters = []config.WeightedCluster{{Name: cs.Cluster, Weight: 1}}
	case *routev3.RouteAction_WeightedClusters:
		wp := p.at("weighted_clusters")
		var sum uint64
		for i, wc := range cs.WeightedClusters.GetClusters() {
			cp := wp.idx("clusters", i)
			if wc.GetName() == "" {
				return nil, cp.at("name").errorf("must be set (cluster_header is not supported)")
			}
			if len(wc.GetResponseHeadersToAdd()) > 0 || len(wc.GetResponseHeadersToRemove()) > 0 {
				return nil, cp.errorf("response header changes per weighted cluster are not supported")
			}
			w := wc.GetWeight().GetValue()
			if w == 0 {
				continue // never chosen; Envoy accepts it as well
			}
			sum += uint64(w)
			add, err := headersToAdd(cp, "request_headers_to_add", wc.GetRequestHeadersToAdd())
			if err != nil {
				return nil, err
			}
			out.Clusters = append(out.Clusters, config.WeightedCluster{
				Name: wc.GetName(), Weight: w,
				RequestHeadersToAdd:    add,
				RequestHeadersToRemove: lowerAll(wc.GetRequestHeadersToRemove()),
			})
		}
		if sum == 0 {
			return nil, wp.errorf("the sum of weights must be positive")
		}
		if sum >= 1<<32 {
			return nil, wp.errorf("the sum of weights must be below 2^32, got %d", sum)
		}
	case *routev3.RouteAction_ClusterHeader:
		return nil, p.at("cluster_header").errorf("not supported")
	case nil:
		return nil, p.errorf("cluster or weighted_clusters is required")
	default:
		return nil, p.errorf("unsupported cluster specifier %T", cs)
	}
	var err error
	if out.Timeout, err = duration(p.at("timeout"), a.GetTimeout(), defaultRouteTimeout); err != nil {
		return nil, err
	}
	out.PrefixRewrite = a.GetPrefixRewrite()
	if a.GetRegexRewrite() != nil {
		return nil, p.at("regex_rewrite").errorf("not supported")
	}
	if a.GetPathRewritePolicy() != nil {
		return nil, p.at("path_rewrite_policy").errorf("not supported")
	}
	switch hr := a.GetHostRewriteSpecifier().(type) {
	case nil:
	case *routev3.RouteAction_HostRewriteLiteral:
		out.HostRewrite = hr.HostRewriteLiteral
	case *routev3.RouteAction_AutoHostRewrite:
		if hr.AutoHostRewrite.GetValue() {
			return nil, p.at("auto_host_rewrite").errorf("not supported")
		}
	default:
		return nil, p.errorf("unsupported host rewrite %T", hr)
	}
	if err := checkRetry(p.at("retry_policy"), a.GetRetryPolicy()); err != nil {
		return nil, err
	}
	if len(a.GetRequestMirrorPolicies()) > 0 {
		return nil, p.at("request_mirror_policies").errorf("not supported")
	}
	if len(a.GetRateLimits()) > 0 {
		return nil, p.at("rate_limits").errorf("not supported")
	}
	if len(a.GetHashPolicy()) > 0 {
		return nil, p.at("hash_policy").errorf("not supported (round robin only)")
	}
	return out, nil
}

func headersToAdd(p path, field string, hs []*corev3.HeaderValueOption) ([]config.HeaderValueOption, error) {
	var out []config.HeaderValueOption
	for i, h := range hs {
		hp := p.idx(field, i)
		name := strings.ToLower(h.GetHeader().GetKey())
		if name == "" {
			return nil, hp.at("header.key").errorf("must not be empty")
		}
		val := h.GetHeader().GetValue()
		if raw := h.GetHeader().GetRawValue(); len(raw) > 0 {
			val = string(raw)
		}
		appendIt := true
		if a := h.GetAppend(); a != nil {
			appendIt = boolValue(a)
		} else {
			switch h.GetAppendAction() {
			case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
				appendIt = false
			default:
				return nil, hp.at("append_action").errorf("%s is not supported", h.GetAppendAction())
			}
		}
		out = append(out, config.HeaderValueOption{Name: name, Value: val, Append: appendIt})
	}
	return out, nil
}

func boolValue(b *wrapperspb.BoolValue) bool { return b.GetValue() }

func lowerAll(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = strings.ToLower(v)
	}
	return out
}
