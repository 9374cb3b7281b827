package route

import (
	"fmt"
	"sort"
	"strings"

	"github.com/tinymesh/tinymesh/dataplane/config"
)

// Explanation says how Match decides for a request and why, for the admin
// route explainer. It is built with the same compiled matchers as Match
// (Table.hostHow, Route.pathMatches, headerMatcher.matches), so it cannot
// disagree with the data plane. It allocates; never use it on the request path.
type Explanation struct {
	// VirtualHost is what Match returns first; nil when no virtual host
	// answers for the authority.
	VirtualHost *VirtualHost
	// Domain is the domain of VirtualHost that matched, as configured
	// (lower case): "backend:8080", "*.example.com", "api.*" or "*".
	Domain string
	// DomainReason says how it matched, e.g. "exact match on the authority
	// without its port".
	DomainReason string
	// Route is what Match returns second; nil when no route matched.
	Route *Route
	// RouteIndex is Route's position in its virtual host; -1 without one.
	RouteIndex int
	// Rejected lists the routes tried before the match (all of them when
	// none matched), each with the reason it did not match.
	Rejected []Rejection
	// CloseDomains, when no virtual host answered, lists the configured
	// domains closest to the authority (at most 5), each with why it did
	// not match.
	CloseDomains []Rejection
}

// Rejection is one candidate that did not match and why.
type Rejection struct {
	Index  int    // route index in its virtual host; -1 for domains
	Name   string // route name, or the domain
	Match  string // the route's match, as DescribeMatch gives it
	Reason string
}

// Explain returns how Match decides for req.
func (t *Table) Explain(req *Request) *Explanation {
	e := &Explanation{RouteIndex: -1}
	vh, how, stripped, part := t.hostHow(req.Authority)
	if vh == nil {
		e.CloseDomains = t.closeDomains(req.Authority)
		return e
	}
	e.VirtualHost = vh
	host := strings.ToLower(req.Authority)
	if stripped {
		host = host[:strings.LastIndexByte(host, ':')]
	}
	without := ""
	if stripped {
		without = " without its port"
	}
	switch how {
	case exactDomain:
		e.Domain, e.DomainReason = host, "exact match on the authority"+without
	case suffixDomain:
		e.Domain, e.DomainReason = "*"+part, "suffix wildcard: the authority"+without+" ends in "+part+" (exact domains are tried first, then the longest suffix)"
	case prefixDomain:
		e.Domain, e.DomainReason = part+"*", "prefix wildcard: the authority"+without+" begins with "+part+" (exact and suffix domains are tried first)"
	case anyDomain:
		e.Domain, e.DomainReason = "*", "catch-all: no exact or wildcard domain matches the authority, with or without its port"
	}
	for i, r := range vh.Routes {
		if why := r.mismatch(req); why != "" {
			e.Rejected = append(e.Rejected, Rejection{Index: i, Name: r.Config.Name, Match: DescribeMatch(r.Config.Match), Reason: why})
			continue
		}
		e.Route, e.RouteIndex = r, i
		break
	}
	return e
}

// mismatch returns why r does not match req, or "" when it matches; it
// agrees with matches by construction (same checks, same order).
func (r *Route) mismatch(req *Request) string {
	if !r.pathMatches(req.Path) {
		return fmt.Sprintf("path %q does not match %s", req.Path, describePath(r.match))
	}
	if r.match.GRPCOnly && !IsGRPC(req.Header) {
		return "route is for gRPC only and the request's content-type is not application/grpc"
	}
	for i := range r.headers {
		h := &r.headers[i]
		if h.matches(req) {
			continue
		}
		got := "absent"
		if vs := req.Header[h.key]; len(vs) > 0 {
			got = fmt.Sprintf("%q", vs[0])
		}
		switch h.key {
		case ":method":
			got = fmt.Sprintf("%q", req.Method)
		case ":authority":
			got = fmt.Sprintf("%q", req.Authority)
		case ":path":
			got = fmt.Sprintf("%q", req.Path)
		}
		return fmt.Sprintf("header %s: want %s, got %s", h.Name, describeHeader(h.HeaderMatcher), got)
	}
	if !r.matches(req) {
		// Unreachable while mismatch mirrors matches; say so rather than lie.
		return "does not match"
	}
	return ""
}

// DescribeMatch renders a route match for humans, e.g.
// `prefix "/api" (case-insensitive), header x-canary exact "true"`.
func DescribeMatch(m config.RouteMatch) string {
	parts := []string{describePath(m)}
	if m.GRPCOnly {
		parts = append(parts, "gRPC only")
	}
	for _, h := range m.Headers {
		parts = append(parts, "header "+h.Name+" "+describeHeader(h))
	}
	return strings.Join(parts, ", ")
}

func describePath(m config.RouteMatch) string {
	kind := [...]string{"prefix", "exact path", "path regex", "path-separated prefix"}[m.PathKind]
	s := fmt.Sprintf("%s %q", kind, m.Path)
	if !m.CaseSensitive {
		s += " (case-insensitive)"
	}
	return s
}

func describeHeader(h config.HeaderMatcher) string {
	var s string
	switch h.Kind {
	case config.HeaderPresent:
		s = "present"
	case config.HeaderExact:
		s = fmt.Sprintf("exact %q", h.Value)
	case config.HeaderPrefix:
		s = fmt.Sprintf("prefix %q", h.Value)
	case config.HeaderSuffix:
		s = fmt.Sprintf("suffix %q", h.Value)
	case config.HeaderContains:
		s = fmt.Sprintf("contains %q", h.Value)
	case config.HeaderRegex:
		s = fmt.Sprintf("regex %q", h.Value)
	}
	if h.Invert {
		s = "not " + s
	}
	return s
}

// closeDomains ranks every configured domain by how much of the authority
// it shares and explains why the closest did not match.
func (t *Table) closeDomains(authority string) []Rejection {
	a := strings.ToLower(authority)
	host, port := a, ""
	if i := strings.LastIndexByte(a, ':'); i > 0 && !strings.HasSuffix(a, "]") {
		host, port = a[:i], a[i+1:]
	}
	type cand struct {
		d     string
		score int
	}
	var cs []cand
	seen := map[string]bool{}
	for _, vhc := range t.Config.VirtualHosts {
		for _, d := range vhc.Domains {
			d = strings.ToLower(d)
			if seen[d] {
				continue
			}
			seen[d] = true
			dh := d
			if i := strings.LastIndexByte(d, ':'); i > 0 && !strings.HasSuffix(d, "]") {
				dh = d[:i]
			}
			score := commonPrefix(dh, host) + commonSuffix(dh, host)
			if dh == host {
				score += 1000
			}
			cs = append(cs, cand{d, score})
		}
	}
	sort.SliceStable(cs, func(i, j int) bool {
		if cs[i].score != cs[j].score {
			return cs[i].score > cs[j].score
		}
		return cs[i].d < cs[j].d
	})
	var out []Rejection
	for _, c := range cs[:min(len(cs), 5)] {
		out = append(out, Rejection{Index: -1, Name: c.d, Reason: domainMismatch(c.d, host, port)})
	}
	return out
}

func domainMismatch(d, host, port string) string {
	dh, dp := d, ""
	if i := strings.LastIndexByte(d, ':'); i > 0 && !strings.HasSuffix(d, "]") {
		dh, dp = d[:i], d[i+1:]
	}
	switch {
	case strings.HasPrefix(d, "*"):
		return fmt.Sprintf("the authority does not end in %q (or the wildcard would match nothing)", d[1:])
	case strings.HasSuffix(d, "*"):
		return fmt.Sprintf("the authority does not begin with %q (or the wildcard would match nothing)", d[:len(d)-1])
	case dh == host && dp != port:
		if port == "" {
			return fmt.Sprintf("the domain has port %s and the authority has none", dp)
		}
		return fmt.Sprintf("port %s differs from the domain's %s", port, cmpOr(dp, "(none)"))
	}
	return fmt.Sprintf("host %q differs from %q", host, dh)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

func commonSuffix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[len(a)-1-n] == b[len(b)-1-n] {
		n++
	}
	return n
}
