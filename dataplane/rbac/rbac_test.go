package rbac_test

import (
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/rbac"
)

const (
	frontend = "spiffe://cluster.local/ns/default/sa/frontend"
	opsBatch = "spiffe://cluster.local/ns/ops/sa/batch"
)

func principal(kind config.StringMatchKind, v string) config.RBACMatcher {
	return config.RBACMatcher{Kind: config.RBACAuthenticated, String: config.StringMatcher{Kind: kind, Value: v}}
}

func header(name string, kind config.HeaderMatchKind, v string, invert bool) config.RBACMatcher {
	return config.RBACMatcher{Kind: config.RBACHeader, Header: config.HeaderMatcher{Name: name, Kind: kind, Value: v, Invert: invert}}
}

func urlPath(kind config.StringMatchKind, v string, ignoreCase bool) config.RBACMatcher {
	return config.RBACMatcher{Kind: config.RBACURLPath, String: config.StringMatcher{Kind: kind, Value: v, IgnoreCase: ignoreCase}}
}

func port(lo, hi uint16) config.RBACMatcher {
	return config.RBACMatcher{Kind: config.RBACDestinationPort, PortLow: lo, PortHigh: hi}
}

var anyM = config.RBACMatcher{Kind: config.RBACAny}

func policy(name string, perm, princ config.RBACMatcher) config.RBACPolicy {
	return config.RBACPolicy{Name: name, Permissions: []config.RBACMatcher{perm}, Principals: []config.RBACMatcher{princ}}
}

// httpReq is a GET / from frontend over TLS to 10.0.0.1:8080.
func httpReq(f func(r *rbac.Request)) *rbac.Request {
	r := &rbac.Request{
		Principal: frontend,
		Remote:    netip.MustParseAddrPort("10.0.0.2:40000"),
		Local:     netip.MustParseAddrPort("10.0.0.1:8080"),
		Method:    "GET", Authority: "backend:8080", Path: "/", RequestURI: "/", Scheme: "https",
		Header: http.Header{"Content-Type": {"text/plain"}},
	}
	if f != nil {
		f(r)
	}
	return r
}

func TestEngine(t *testing.T) {
	allowFrontend := &config.RBAC{Policies: []config.RBACPolicy{policy("default/p[0]", anyM, principal(config.StringExact, frontend))}}
	tests := []struct {
		name       string
		rules      *config.RBAC
		req        *rbac.Request
		wantOK     bool
		wantPolicy string
	}{
		{"nil engine allows", nil, httpReq(nil), true, ""},
		{"allow: no policies denies", &config.RBAC{}, httpReq(nil), false, ""},
		{"deny: no policies allows", &config.RBAC{Action: config.RBACDeny}, httpReq(nil), true, ""},
		{"allow: principal exact", allowFrontend, httpReq(nil), true, "default/p[0]"},
		{"allow: other principal", allowFrontend, httpReq(func(r *rbac.Request) { r.Principal = opsBatch }), false, ""},
		{"allow: plaintext", allowFrontend, httpReq(func(r *rbac.Request) { r.Principal = "" }), false, ""},
		{"namespace prefix", &config.RBAC{Policies: []config.RBACPolicy{
			policy("ns", anyM, principal(config.StringPrefix, "spiffe://cluster.local/ns/ops/sa/"))}},
			httpReq(func(r *rbac.Request) { r.Principal = opsBatch }), true, "ns"},
		{"authenticated any needs an identity", &config.RBAC{Policies: []config.RBACPolicy{policy("a", anyM, principal(config.StringAny, ""))}},
			httpReq(func(r *rbac.Request) { r.Principal = "" }), false, ""},
		{"principal suffix ignore case", &config.RBAC{Policies: []config.RBACPolicy{policy("a", anyM,
			config.RBACMatcher{Kind: config.RBACAuthenticated, String: config.StringMatcher{Kind: config.StringSuffix, Value: "/SA/FRONTEND", IgnoreCase: true}})}},
			httpReq(nil), true, "a"},
		{"first matching policy in name order", &config.RBAC{Action: config.RBACDeny, Policies: []config.RBACPolicy{
			policy("a", header(":method", config.HeaderExact, "POST", false), anyM),
			policy("b", anyM, anyM), policy("c", anyM, anyM)}},
			httpReq(nil), false, "b"},
		{"deny: method", &config.RBAC{Action: config.RBACDeny, Policies: []config.RBACPolicy{
			policy("no-delete", header(":method", config.HeaderExact, "DELETE", false), anyM)}},
			httpReq(func(r *rbac.Request) { r.Method = "DELETE" }), false, "no-delete"},
		{"path prefix", &config.RBAC{Policies: []config.RBACPolicy{policy("api", urlPath(config.StringPrefix, "/api/", false), anyM)}},
			httpReq(func(r *rbac.Request) { r.Path = "/api/items"; r.RequestURI = "/api/items?x=1" }), true, "api"},
		{"path exact is case-sensitive", &config.RBAC{Policies: []config.RBACPolicy{policy("h", urlPath(config.StringExact, "/healthz", false), anyM)}},
			httpReq(func(r *rbac.Request) { r.Path = "/HEALTHZ" }), false, ""},
		{"path exact ignore case", &config.RBAC{Policies: []config.RBACPolicy{policy("h", urlPath(config.StringExact, "/healthz", true), anyM)}},
			httpReq(func(r *rbac.Request) { r.Path = "/HEALTHZ" }), true, "h"},
		{"path suffix", &config.RBAC{Policies: []config.RBACPolicy{policy("j", urlPath(config.StringSuffix, ".json", false), anyM)}},
			httpReq(func(r *rbac.Request) { r.Path = "/a.json" }), true, "j"},
		{"path contains ignore case", &config.RBAC{Policies: []config.RBACPolicy{policy("c", urlPath(config.StringContains, "admin", true), anyM)}},
			httpReq(func(r *rbac.Request) { r.Path = "/x/Admin/y" }), true, "c"},
		{":path has the query", &config.RBAC{Policies: []config.RBACPolicy{policy("q", header(":path", config.HeaderSuffix, "?debug=1", false), anyM)}},
			httpReq(func(r *rbac.Request) { r.RequestURI = "/x?debug=1" }), true, "q"},
		{":authority", &config.RBAC{Policies: []config.RBACPolicy{policy("a", header(":authority", config.HeaderPrefix, "backend", false), anyM)}},
			httpReq(nil), true, "a"},
		{":scheme", &config.RBAC{Policies: []config.RBACPolicy{policy("s", header(":scheme", config.HeaderExact, "http", false), anyM)}},
			httpReq(nil), false, ""},
		{"header present", &config.RBAC{Policies: []config.RBACPolicy{policy("h", header("content-type", config.HeaderPresent, "", false), anyM)}},
			httpReq(nil), true, "h"},
		{"header contains", &config.RBAC{Policies: []config.RBACPolicy{policy("h", header("content-type", config.HeaderContains, "plain", false), anyM)}},
			httpReq(nil), true, "h"},
		{"missing header never matches inverted exact", &config.RBAC{Policies: []config.RBACPolicy{
			policy("h", header("x-user", config.HeaderExact, "bot", true), anyM)}},
			httpReq(nil), false, ""},
		{"missing header matches inverted presence", &config.RBAC{Policies: []config.RBACPolicy{
			policy("h", header("x-user", config.HeaderPresent, "", true), anyM)}},
			httpReq(nil), true, "h"},
		{"repeated header values are joined", &config.RBAC{Action: config.RBACDeny, Policies: []config.RBACPolicy{
			policy("h", header("x-role", config.HeaderContains, "admin", false), anyM)}},
			httpReq(func(r *rbac.Request) { r.Header = http.Header{"X-Role": {"user", "admin"}} }), false, "h"},
		{"header in a connection", &config.RBAC{Policies: []config.RBACPolicy{policy("h", header("x-user", config.HeaderPresent, "", true), anyM)}},
			&rbac.Request{Principal: frontend}, false, ""},
		{"port", &config.RBAC{Policies: []config.RBACPolicy{policy("p", port(8080, 8080), anyM)}}, httpReq(nil), true, "p"},
		{"port range miss", &config.RBAC{Policies: []config.RBACPolicy{policy("p", port(9000, 9099), anyM)}}, httpReq(nil), false, ""},
		{"port unknown", &config.RBAC{Policies: []config.RBACPolicy{policy("p", port(0, 65535), anyM)}},
			httpReq(func(r *rbac.Request) { r.Local = netip.AddrPort{} }), false, ""},
		{"destination ip", &config.RBAC{Policies: []config.RBACPolicy{policy("d",
			config.RBACMatcher{Kind: config.RBACDestinationIP, CIDR: netip.MustParsePrefix("10.0.0.0/8")}, anyM)}},
			httpReq(nil), true, "d"},
		{"remote ip v4-mapped", &config.RBAC{Policies: []config.RBACPolicy{policy("r", anyM,
			config.RBACMatcher{Kind: config.RBACRemoteIP, CIDR: netip.MustParsePrefix("10.0.0.0/24")})}},
			httpReq(func(r *rbac.Request) { r.Remote = netip.MustParseAddrPort("[::ffff:10.0.0.9]:1") }), true, "r"},
		{"and or not", &config.RBAC{Policies: []config.RBACPolicy{policy("x",
			config.RBACMatcher{Kind: config.RBACAnd, Rules: []config.RBACMatcher{
				{Kind: config.RBACOr, Rules: []config.RBACMatcher{
					header(":method", config.HeaderExact, "GET", false), header(":method", config.HeaderExact, "HEAD", false)}},
				{Kind: config.RBACNot, Rules: []config.RBACMatcher{urlPath(config.StringPrefix, "/admin", false)}},
			}},
			config.RBACMatcher{Kind: config.RBACNot, Rules: []config.RBACMatcher{principal(config.StringExact, opsBatch)}})}},
			httpReq(func(r *rbac.Request) { r.Method = "HEAD"; r.Path = "/public" }), true, "x"},
		{"and fails on not", &config.RBAC{Policies: []config.RBACPolicy{policy("x",
			config.RBACMatcher{Kind: config.RBACAnd, Rules: []config.RBACMatcher{
				anyM, {Kind: config.RBACNot, Rules: []config.RBACMatcher{urlPath(config.StringPrefix, "/admin", false)}}}}, anyM)}},
			httpReq(func(r *rbac.Request) { r.Path = "/admin/x" }), false, ""},
		{"permission and principal must both match", &config.RBAC{Policies: []config.RBACPolicy{
			policy("x", urlPath(config.StringExact, "/", false), principal(config.StringExact, opsBatch))}},
			httpReq(nil), false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := rbac.Compile(tt.rules)
			ok, pol := e.Allowed(tt.req)
			if ok != tt.wantOK || pol != tt.wantPolicy {
				t.Errorf("Allowed(%+v) = %v, %q; want %v, %q", tt.req, ok, pol, tt.wantOK, tt.wantPolicy)
			}
		})
	}
}

func TestChecked(t *testing.T) {
	var rules config.RBAC
	for _, n := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"} {
		rules.Policies = append(rules.Policies, policy(n, anyM, anyM))
	}
	tests := []struct {
		name  string
		rules *config.RBAC
		want  string
	}{
		{"none", &config.RBAC{}, "(none)"},
		{"two", &config.RBAC{Policies: rules.Policies[:2]}, "a,b"},
		{"bounded", &rules, "a,b,c,d,e,f,g,h,..."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rbac.Compile(tt.rules).Checked(); got != tt.want {
				t.Errorf("Checked() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestHTTPOverrides(t *testing.T) {
	denyAll := &config.RBACFilter{Rules: &config.RBAC{}}
	allowAll := &config.RBACFilter{Rules: &config.RBAC{Action: config.RBACDeny}}
	plainVH := &config.VirtualHost{Name: "plain", Routes: []*config.Route{{Name: "r0"}}}
	openVH := &config.VirtualHost{Name: "open", RBAC: allowAll, Routes: []*config.Route{
		{Name: "inherit"}, {Name: "locked", RBAC: denyAll}, {Name: "disabled", RBAC: &config.RBACFilter{}}}}
	rc := &config.RouteConfig{VirtualHosts: []*config.VirtualHost{plainVH, openVH}}
	h := rbac.NewHTTP(denyAll, rc)
	req := httpReq(nil)
	tests := []struct {
		name   string
		h      *rbac.HTTP
		vh     *config.VirtualHost
		rt     *config.Route
		wantOK bool
	}{
		{"filter level", h, plainVH, plainVH.Routes[0], false},
		{"no route uses filter level", h, nil, nil, false},
		{"no route uses vhost", h, openVH, nil, true},
		{"vhost override", h, openVH, openVH.Routes[0], true},
		{"route override", h, openVH, openVH.Routes[1], false},
		{"route disables", h, openVH, openVH.Routes[2], true},
		{"no filter: overrides ignored", rbac.NewHTTP(nil, rc), openVH, openVH.Routes[1], true},
		{"filter without rules", rbac.NewHTTP(&config.RBACFilter{}, rc), plainVH, plainVH.Routes[0], true},
		{"no route config", rbac.NewHTTP(denyAll, nil), openVH, openVH.Routes[0], false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if ok, _ := tt.h.Engine(tt.vh, tt.rt).Allowed(req); ok != tt.wantOK {
				t.Errorf("Engine(%v, %v).Allowed = %v, want %v", tt.vh, tt.rt, ok, tt.wantOK)
			}
		})
	}
}

func TestDenyLog(t *testing.T) {
	var d rbac.DenyLog
	t0 := time.Unix(1000, 0)
	for i := range rbac.DenialsPerSecond {
		if ok, n := d.Allow(t0); !ok || n != 0 {
			t.Fatalf("Allow #%d = %v, %d; want true, 0", i, ok, n)
		}
	}
	for i := range 5 {
		if ok, _ := d.Allow(t0.Add(500 * time.Millisecond)); ok {
			t.Fatalf("Allow over the limit #%d = true, want false", i)
		}
	}
	if ok, n := d.Allow(t0.Add(time.Second)); !ok || n != 5 {
		t.Errorf("Allow in the next second = %v, %d; want true, 5 suppressed", ok, n)
	}
}

// benchRules is what the control plane sends for a Service with two
// AuthorizationPolicy rules: callers by SPIFFE ID and namespace, paths and
// methods.
func benchRules() *config.RBAC {
	return &config.RBAC{Policies: []config.RBACPolicy{
		{Name: "default/backend-callers[0]",
			Permissions: []config.RBACMatcher{{Kind: config.RBACAnd, Rules: []config.RBACMatcher{
				{Kind: config.RBACOr, Rules: []config.RBACMatcher{urlPath(config.StringPrefix, "/api/", false), urlPath(config.StringExact, "/healthz", false)}},
				{Kind: config.RBACOr, Rules: []config.RBACMatcher{header(":method", config.HeaderExact, "GET", false), header(":method", config.HeaderExact, "POST", false)}},
			}}},
			Principals: []config.RBACMatcher{principal(config.StringExact, opsBatch), principal(config.StringPrefix, "spiffe://cluster.local/ns/ops/sa/")}},
		{Name: "default/backend-callers[1]",
			Permissions: []config.RBACMatcher{anyM},
			Principals:  []config.RBACMatcher{principal(config.StringExact, "spiffe://cluster.local/ns/default/sa/other"), principal(config.StringExact, frontend)}},
	}}
}

// TestAllowedAllocs: the decision runs on every request of a listener with
// RBAC and must not allocate (repeated headers aside).
func TestAllowedAllocs(t *testing.T) {
	e := rbac.Compile(benchRules())
	req := httpReq(func(r *rbac.Request) { r.Path = "/api/items" })
	n := testing.AllocsPerRun(200, func() {
		if ok, _ := e.Allowed(req); !ok {
			t.Fatal("denied")
		}
	})
	if n != 0 {
		t.Errorf("Allowed: %v allocs per run, want 0", n)
	}
}

func BenchmarkAllowed(b *testing.B) {
	e := rbac.Compile(benchRules())
	req := httpReq(func(r *rbac.Request) { r.Path = "/api/items" })
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := e.Allowed(req); !ok {
			b.Fatal("denied")
		}
	}
}
