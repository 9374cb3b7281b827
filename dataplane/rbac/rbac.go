// Package rbac is the authorization stage of the data plane: it compiles a
// config.RBAC (the envoy.filters.http.rbac and envoy.filters.network.rbac
// filters) into an Engine with one job, deciding whether a request or a
// connection is allowed. httpproxy asks it after route matching and before
// anything is forwarded; tcpproxy asks it once per connection, after the TLS
// handshake and before the upstream dial.
//
// Semantics follow Envoy's RBAC filter: a policy matches when one of its
// permissions and one of its principals match; an ALLOW engine allows what a
// policy matches (nothing when it has no policies), a DENY engine refuses it.
// Policies are tried in name order, so the policy a decision names is
// deterministic. A missing header never matches a header matcher except an
// inverted presence test (Envoy, without treat_missing_header_as_empty); the
// values of a repeated header are joined with "," before matching, as Envoy
// does, so a second value cannot hide from a DENY rule.
//
// Concurrency: an Engine and an HTTP are built off the hot path when a
// snapshot is applied and are immutable afterwards; Allowed and HTTP.Engine may
// be called from any goroutine without locks. They do not allocate, except
// when a matched header occurs more than once in a request.
package rbac

import (
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"

	"github.com/tinymesh/tinymesh/dataplane/config"
)

// Request is what an Engine decides on. Building it must not allocate on the
// hot path: callers fill it from values they already hold.
type Request struct {
	// Principal is the caller's SPIFFE ID from a certificate the TLS
	// handshake verified; empty for plaintext and unverified callers, which
	// never match an authenticated principal.
	Principal string
	// Remote is the downstream peer's address; Local the address the
	// connection arrived at (its port is the destination port). Zero values
	// match no IP or port rule.
	Remote, Local netip.AddrPort

	// HTTP attributes; Header is nil for connections (network RBAC), where
	// decoding refuses HTTP matchers.
	Method    string
	Authority string // Host or :authority
	Path      string // the URL path without the query, for url_path
	// RequestURI is the request target as sent, with the query: the
	// ":path" pseudo-header. Path is used when it is empty.
	RequestURI string
	Scheme     string // ":scheme": "https" over TLS, "http" otherwise
	Header     http.Header
}

// Engine is a compiled config.RBAC. A nil *Engine allows everything.
type Engine struct {
	action   config.RBACAction
	policies []policy
	checked  string // for logs: the policy names, bounded
}

type policy struct {
	name        string
	permissions []node
	principals  []node
}

// node is a compiled config.RBACMatcher.
type node struct {
	kind   config.RBACMatchKind
	kids   []node
	header headerMatcher
	str    config.StringMatcher
	lo, hi uint16
	cidr   netip.Prefix
}

type headerMatcher struct {
	config.HeaderMatcher
	key string // canonical MIME key, or the pseudo-header name
}

// maxLoggedPolicies bounds the policy names Checked lists.
const maxLoggedPolicies = 8

// Compile builds an Engine from c; nil c gives a nil Engine (allow all).
func Compile(c *config.RBAC) *Engine {
	if c == nil {
		return nil
	}
	e := &Engine{action: c.Action, policies: make([]policy, len(c.Policies))}
	var names strings.Builder
	for i, p := range c.Policies {
		e.policies[i] = policy{name: p.Name, permissions: compileAll(p.Permissions), principals: compileAll(p.Principals)}
		switch {
		case i < maxLoggedPolicies:
			if i > 0 {
				names.WriteByte(',')
			}
			names.WriteString(p.Name)
		case i == maxLoggedPolicies:
			names.WriteString(",...")
		}
	}
	if len(c.Policies) == 0 {
		names.WriteString("(none)")
	}
	e.checked = names.String()
	return e
}

func compileAll(ms []config.RBACMatcher) []node {
	out := make([]node, len(ms))
	for i := range ms {
		out[i] = compile(&ms[i])
	}
	return out
}

func compile(m *config.RBACMatcher) node {
	n := node{kind: m.Kind, kids: compileAll(m.Rules), str: m.String, lo: m.PortLow, hi: m.PortHigh, cidr: m.CIDR}
	if m.Kind == config.RBACHeader {
		n.header = headerMatcher{HeaderMatcher: m.Header, key: m.Header.Name}
		if !strings.HasPrefix(m.Header.Name, ":") {
			n.header.key = textproto.CanonicalMIMEHeaderKey(m.Header.Name)
		}
	}
	return n
}

// Action is the engine's action; ALLOW for a nil Engine.
func (e *Engine) Action() config.RBACAction {
	if e == nil {
		return config.RBACAllow
	}
	return e.action
}

// Checked lists the engine's policy names for logs ("a,b,c", at most
// maxLoggedPolicies and then ",...", or "(none)").
func (e *Engine) Checked() string {
	if e == nil {
		return ""
	}
	return e.checked
}

// Allowed decides on r. policy names the policy that decided: the one that
// allowed r under ALLOW or denied it under DENY; it is empty when no policy
// matched (ALLOW denied, DENY allowed) and for a nil Engine.
func (e *Engine) Allowed(r *Request) (ok bool, policy string) {
	if e == nil {
		return true, ""
	}
	for i := range e.policies {
		p := &e.policies[i]
		if anyMatch(p.permissions, r) && anyMatch(p.principals, r) {
			return e.action == config.RBACAllow, p.name
		}
	}
	return e.action == config.RBACDeny, ""
}

func anyMatch(ns []node, r *Request) bool {
	for i := range ns {
		if ns[i].matches(r) {
			return true
		}
	}
	return false
}

func (n *node) matches(r *Request) bool {
	switch n.kind {
	case config.RBACAny:
		return true
	case config.RBACAnd:
		for i := range n.kids {
			if !n.kids[i].matches(r) {
				return false
			}
		}
		return true
	case config.RBACOr:
		return anyMatch(n.kids, r)
	case config.RBACNot:
		return !n.kids[0].matches(r)
	case config.RBACHeader:
		return n.header.matches(r)
	case config.RBACURLPath:
		return r.Header != nil && matchString(&n.str, r.Path)
	case config.RBACDestinationPort:
		p := r.Local.Port()
		return r.Local.IsValid() && n.lo <= p && p <= n.hi
	case config.RBACDestinationIP:
		return r.Local.IsValid() && n.cidr.Contains(r.Local.Addr().Unmap())
	case config.RBACAuthenticated:
		return r.Principal != "" && matchString(&n.str, r.Principal)
	case config.RBACRemoteIP:
		return r.Remote.IsValid() && n.cidr.Contains(r.Remote.Addr().Unmap())
	}
	return false
}

func (h *headerMatcher) matches(r *Request) bool {
	if r.Header == nil {
		return false
	}
	var v string
	present := true
	switch h.key {
	case ":method":
		v = r.Method
	case ":authority":
		v = r.Authority
	case ":path":
		v = r.RequestURI
		if v == "" {
			v = r.Path
		}
	case ":scheme":
		v = r.Scheme
	default:
		switch vs := r.Header[h.key]; len(vs) {
		case 0:
			present = false
		case 1:
			v = vs[0]
		default:
			v = strings.Join(vs, ",") // rare; Envoy matches the joined values
		}
	}
	if !present {
		// Envoy: an absent header fails every matcher, inverted or not,
		// except an inverted presence test ("must be absent").
		return h.Kind == config.HeaderPresent && h.Invert
	}
	var ok bool
	switch h.Kind {
	case config.HeaderPresent:
		ok = true
	case config.HeaderExact:
		ok = v == h.Value
	case config.HeaderPrefix:
		ok = strings.HasPrefix(v, h.Value)
	case config.HeaderSuffix:
		ok = strings.HasSuffix(v, h.Value)
	case config.HeaderContains:
		ok = strings.Contains(v, h.Value)
	}
	return ok != h.Invert
}

// matchString applies m to s without allocating; IgnoreCase folds case as
// strings.EqualFold does.
func matchString(m *config.StringMatcher, s string) bool {
	v := m.Value
	switch m.Kind {
	case config.StringAny:
		return true
	case config.StringExact:
		if m.IgnoreCase {
			return strings.EqualFold(s, v)
		}
		return s == v
	case config.StringPrefix:
		if m.IgnoreCase {
			return len(s) >= len(v) && strings.EqualFold(s[:len(v)], v)
		}
		return strings.HasPrefix(s, v)
	case config.StringSuffix:
		if m.IgnoreCase {
			return len(s) >= len(v) && strings.EqualFold(s[len(s)-len(v):], v)
		}
		return strings.HasSuffix(s, v)
	case config.StringContains:
		if !m.IgnoreCase {
			return strings.Contains(s, v)
		}
		for i := 0; i+len(v) <= len(s); i++ {
			if strings.EqualFold(s[i:i+len(v)], v) {
				return true
			}
		}
	}
	return false
}
