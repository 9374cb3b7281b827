// Package route compiles a config.RouteConfig into a Table that picks a virtual
// host by authority and then the first matching route, as Envoy's router does.
//
// Concurrency: a Table is built once per snapshot by the config goroutine and is
// immutable afterwards except for the atomic counters inside weighted cluster
// choosers; Match and Route.PickCluster may be called from any goroutine and do not
// allocate for hosts up to 255 bytes.
package route

import (
	"fmt"
	"net/http"
	"net/textproto"
	"regexp"
	"sort"
	"strings"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/lb"
)

// Table is a compiled route configuration.
type Table struct {
	Config *config.RouteConfig

	exact  map[string]*VirtualHost // lower-case domain, with port if it has one
	suffix []wildcard              // "*.example.com": longest suffix first
	prefix []wildcard              // "api.*": longest prefix first
	any    *VirtualHost            // "*"
}

type wildcard struct {
	part string // lower case, without the '*'
	vh   *VirtualHost
}

// VirtualHost is a compiled config.VirtualHost.
type VirtualHost struct {
	Config *config.VirtualHost
	Routes []*Route
}

// Route is a compiled config.Route.
type Route struct {
	Config *config.Route

	match   config.RouteMatch
	re      *regexp.Regexp // for PathRegex
	headers []headerMatcher
	weights *lb.Weighted // nil for direct responses
}

type headerMatcher struct {
	config.HeaderMatcher
	key string         // canonical MIME key, or the pseudo-header name
	re  *regexp.Regexp // for HeaderRegex
}

// Compile builds a Table. It fails on invalid regular expressions, naming the
// virtual host and route, since xds/resource should have rejected them already.
func Compile(rc *config.RouteConfig) (*Table, error) {
	t := &Table{Config: rc, exact: make(map[string]*VirtualHost)}
	for _, vhc := range rc.VirtualHosts {
		vh := &VirtualHost{Config: vhc}
		for i, rt := range vhc.Routes {
			r, err := compileRoute(rt)
			if err != nil {
				return nil, fmt.Errorf("route config %q: virtual host %q: route %d (%q): %w", rc.Name, vhc.Name, i, rt.Name, err)
			}
			vh.Routes = append(vh.Routes, r)
		}
		for _, d := range vhc.Domains {
			d = strings.ToLower(d)
			switch {
			case d == "*":
				if t.any == nil {
					t.any = vh
				}
			case strings.HasPrefix(d, "*"):
				t.suffix = append(t.suffix, wildcard{part: d[1:], vh: vh})
			case strings.HasSuffix(d, "*"):
				t.prefix = append(t.prefix, wildcard{part: d[:len(d)-1], vh: vh})
			default:
				if _, dup := t.exact[d]; !dup {
					t.exact[d] = vh
				}
			}
		}
	}
	// Envoy prefers the longest wildcard; stable sort keeps config order on ties.
	sort.SliceStable(t.suffix, func(i, j int) bool { return len(t.suffix[i].part) > len(t.suffix[j].part) })
	sort.SliceStable(t.prefix, func(i, j int) bool { return len(t.prefix[i].part) > len(t.prefix[j].part) })
	return t, nil
}

func compileRoute(rt *config.Route) (*Route, error) {
	r := &Route{Config: rt, match: rt.Match}
	if rt.Match.PathKind == config.PathRegex {
		expr := "^(?:" + rt.Match.Path + ")$"
		if !rt.Match.CaseSensitive {
			expr = "(?i)" + expr
		}
		re, err := regexp.Compile(expr)
		if err != nil {
			return nil, fmt.Errorf("path regex: %w", err)
		}
		r.re = re
	}
	for _, h := range rt.Match.Headers {
		hm := headerMatcher{HeaderMatcher: h, key: h.Name}
		if !strings.HasPrefix(h.Name, ":") {
			hm.key = textproto.CanonicalMIMEHeaderKey(h.Name)
		}
		if h.Kind == config.HeaderRegex {
			re, err := regexp.Compile("^(?:" + h.Value + ")$")
			if err != nil {
				return nil, fmt.Errorf("header %q regex: %w", h.Name, err)
			}
			hm.re = re
		}
		r.headers = append(r.headers, hm)
	}
	if rt.Action != nil {
		ws := make([]uint32, len(rt.Action.Clusters))
		for i, c := range rt.Action.Clusters {
			ws[i] = c.Weight
		}
		if len(ws) == 1 && ws[0] == 0 {
			ws[0] = 1 // a plain route may leave the weight unset
		}
		r.weights = lb.NewWeighted(ws)
	}
	return r, nil
}

// Request is what route matching looks at; building it does not allocate.
type Request struct {
	Authority string // Host or :authority, possibly with a port
	Method    string
	Path      string // without the query
	Header    http.Header
}

// Match returns the virtual host for req.Authority and the first route in it that
// matches. vh is nil when no virtual host answers; r is nil when none matches.
func (t *Table) Match(req *Request) (vh *VirtualHost, r *Route) {
	vh = t.host(req.Authority)
	if vh == nil {
		return nil, nil
	}
	for _, r := range vh.Routes {
		if r.matches(req) {
			return vh, r
		}
	}
	return vh, nil
}

func (t *Table) host(authority string) *VirtualHost {
	vh, _, _, _ := t.hostHow(authority)
	return vh
}

// domainKind says which kind of domain picked a virtual host (see Explain).
type domainKind uint8

const (
	noDomain domainKind = iota
	exactDomain
	suffixDomain
	prefixDomain
	anyDomain
)

// hostHow is host, also saying how the virtual host was found: the kind of
// domain, whether the port was stripped first, and a wildcard's fixed part.
func (t *Table) hostHow(authority string) (vh *VirtualHost, how domainKind, portStripped bool, part string) {
	var buf [255]byte
	host := lower(&buf, authority)
	if vh, how, part := t.domain(host); vh != nil {
		return vh, how, false, part
	}
	// "backend:8080" also answers to a domain of plain "backend".
	if i := strings.LastIndexByte(host, ':'); i > 0 && !strings.HasSuffix(host, "]") {
		if vh, how, part := t.domain(host[:i]); vh != nil {
			return vh, how, true, part
		}
	}
	if t.any != nil {
		return t.any, anyDomain, false, ""
	}
	return nil, noDomain, false, ""
}

func (t *Table) domain(host string) (*VirtualHost, domainKind, string) {
	if vh, ok := t.exact[host]; ok {
		return vh, exactDomain, ""
	}
	for _, w := range t.suffix {
		// A wildcard must stand for at least one character (Envoy).
		if len(host) > len(w.part) && strings.HasSuffix(host, w.part) {
			return w.vh, suffixDomain, w.part
		}
	}
	for _, w := range t.prefix {
		if len(host) > len(w.part) && strings.HasPrefix(host, w.part) {
			return w.vh, prefixDomain, w.part
		}
	}
	return nil, noDomain, ""
}

// lower returns s in lower case, using buf when s has upper-case ASCII so the
// common case neither copies nor allocates.
func lower(buf *[255]byte, s string) string {
	i := 0
	for i < len(s) && (s[i] < 'A' || s[i] > 'Z') {
		i++
	}
	if i == len(s) {
		return s
	}
	if len(s) > len(buf) {
		return strings.ToLower(s)
	}
	for j := 0; j < len(s); j++ {
		c := s[j]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[j] = c
	}
	// The result only lives for the lookups in host, which do not retain it.
	return unsafeString(buf[:len(s)])
}

func (r *Route) matches(req *Request) bool {
	if !r.pathMatches(req.Path) {
		return false
	}
	if r.match.GRPCOnly && !IsGRPC(req.Header) {
		return false
	}
	for i := range r.headers {
		if !r.headers[i].matches(req) {
			return false
		}
	}
	return true
}

func (r *Route) pathMatches(path string) bool {
	p := r.match.Path
	switch r.match.PathKind {
	case config.PathExact:
		if r.match.CaseSensitive {
			return path == p
		}
		return strings.EqualFold(path, p)
	case config.PathRegex:
		return r.re.MatchString(path)
	case config.PathSeparatedPrefix:
		if !hasPrefix(path, p, r.match.CaseSensitive) {
			return false
		}
		return len(path) == len(p) || path[len(p)] == '/' || strings.HasSuffix(p, "/")
	default:
		return hasPrefix(path, p, r.match.CaseSensitive)
	}
}

func hasPrefix(s, prefix string, caseSensitive bool) bool {
	if caseSensitive {
		return strings.HasPrefix(s, prefix)
	}
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func (h *headerMatcher) matches(req *Request) bool {
	var v string
	var present bool
	switch h.key {
	case ":method":
		v, present = req.Method, true
	case ":authority":
		v, present = req.Authority, true
	case ":path":
		v, present = req.Path, true
	case ":scheme":
		v, present = "http", true
	default:
		if vs := req.Header[h.key]; len(vs) > 0 {
			// Envoy compares the comma-joined values; the first one is the
			// common case and avoids joining on the hot path.
			v, present = vs[0], true
		}
	}
	var ok bool
	switch h.Kind {
	case config.HeaderPresent:
		ok = present
	case config.HeaderExact:
		ok = present && v == h.Value
	case config.HeaderPrefix:
		ok = present && strings.HasPrefix(v, h.Value)
	case config.HeaderSuffix:
		ok = present && strings.HasSuffix(v, h.Value)
	case config.HeaderContains:
		ok = present && strings.Contains(v, h.Value)
	case config.HeaderRegex:
		ok = present && h.re.MatchString(v)
	}
	return ok != h.Invert
}

// PickCluster returns the weighted cluster chosen for one request, or nil for a
// direct-response route.
func (r *Route) PickCluster() *config.WeightedCluster {
	if r.weights == nil {
		return nil
	}
	i := r.weights.Pick()
	if i < 0 {
		return nil
	}
	return &r.Config.Action.Clusters[i]
}

// RewritePath applies the route's prefix rewrite to path, if it has one.
func (r *Route) RewritePath(path string) string {
	a := r.Config.Action
	if a == nil || a.PrefixRewrite == "" {
		return path
	}
	switch r.match.PathKind {
	case config.PathPrefix, config.PathSeparatedPrefix:
		if len(path) >= len(r.match.Path) {
			return a.PrefixRewrite + path[len(r.match.Path):]
		}
	}
	// Envoy rewrites the whole path of exact and regex matches.
	return a.PrefixRewrite
}

// IsGRPC reports whether the content type is application/grpc or a subtype.
func IsGRPC(h http.Header) bool {
	vs := h["Content-Type"]
	if len(vs) == 0 {
		return false
	}
	ct := vs[0]
	const g = "application/grpc"
	return strings.HasPrefix(ct, g) && (len(ct) == len(g) || ct[len(g)] == '+' || ct[len(g)] == ';')
}
