package httpproxy

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/rbac"
	"github.com/tinymesh/tinymesh/dataplane/route"
)

// rbacState is a one-route State whose RBAC filter allows GET and HEAD from
// 127.0.0.0/8 to port 15006. The route is a direct response, which the filter
// must guard too.
func rbacState(t testing.TB) *State {
	rc := &config.RouteConfig{Name: "rc", VirtualHosts: []*config.VirtualHost{{Name: "vh", Domains: []string{"*"},
		Routes: []*config.Route{{Name: "r", Match: config.RouteMatch{Path: "/"}, DirectResponse: &config.DirectResponse{Status: 200, Body: "ok"}}}}}}
	tbl, err := route.Compile(rc)
	if err != nil {
		t.Fatal(err)
	}
	method := func(m string) config.RBACMatcher {
		return config.RBACMatcher{Kind: config.RBACHeader, Header: config.HeaderMatcher{Name: ":method", Kind: config.HeaderExact, Value: m}}
	}
	f := &config.RBACFilter{Rules: &config.RBAC{Policies: []config.RBACPolicy{{Name: "read",
		Permissions: []config.RBACMatcher{{Kind: config.RBACAnd, Rules: []config.RBACMatcher{
			{Kind: config.RBACOr, Rules: []config.RBACMatcher{method("GET"), method("HEAD")}},
			{Kind: config.RBACDestinationPort, PortLow: 15006, PortHigh: 15006}}}},
		Principals: []config.RBACMatcher{{Kind: config.RBACRemoteIP, CIDR: netip.MustParsePrefix("127.0.0.0/8")}}}}}}
	return &State{HCM: &config.HTTPConnectionManager{RouteConfigName: "rc"}, Routes: tbl, RBAC: rbac.NewHTTP(f, rc)}
}

// rbacRequest is a request as the server hands it to the handler: remote and
// local address known, no TLS.
func rbacRequest(method, grpcType string) *http.Request {
	r := httptest.NewRequest(method, "http://backend/api/items?id=1", nil)
	r.RemoteAddr = "127.0.0.1:40000"
	if grpcType != "" {
		r.Header.Set("Content-Type", grpcType)
	}
	return r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 15006}))
}

func TestRBACHandler(t *testing.T) {
	h := NewHandler(slog.New(slog.DiscardHandler), rbacState(t))
	tests := []struct {
		name, method, contentType string
		wantStatus                int
		wantHeader                map[string]string
	}{
		{"allowed reaches the direct response", "GET", "", 200, map[string]string{ErrorHeader: ""}},
		{"denied", "DELETE", "", 403, map[string]string{ErrorHeader: "rbac_denied"}},
		{"denied gRPC is trailers-only PERMISSION_DENIED", "POST", "application/grpc+proto", 200, map[string]string{
			ErrorHeader: "rbac_denied", "Grpc-Status": "7", "Grpc-Message": "RBAC: access denied", "Content-Type": "application/grpc"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, rbacRequest(tt.method, tt.contentType))
			if w.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d", w.Code, tt.wantStatus)
			}
			for k, want := range tt.wantHeader {
				if got := w.Header().Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

// TestRBACAllowedAllocs: authorizing an allowed request costs no allocation.
func TestRBACAllowedAllocs(t *testing.T) {
	st := rbacState(t)
	h := NewHandler(slog.New(slog.DiscardHandler), st)
	r := rbacRequest("GET", "")
	rq := route.Request{Authority: r.Host, Method: r.Method, Path: r.URL.Path, Header: r.Header}
	vh, rt := st.Routes.Match(&rq)
	n := testing.AllocsPerRun(200, func() {
		if !h.authorize(nil, r, st, vh, rt, false, nil) {
			t.Fatal("denied")
		}
	})
	if n != 0 {
		t.Errorf("authorize: %v allocs per run, want 0", n)
	}
}

func BenchmarkRBACAuthorize(b *testing.B) {
	st := rbacState(b)
	h := NewHandler(slog.New(slog.DiscardHandler), st)
	r := rbacRequest("GET", "")
	rq := route.Request{Authority: r.Host, Method: r.Method, Path: r.URL.Path, Header: r.Header}
	vh, rt := st.Routes.Match(&rq)
	b.ReportAllocs()
	for b.Loop() {
		if !h.authorize(nil, r, st, vh, rt, false, nil) {
			b.Fatal("denied")
		}
	}
}
