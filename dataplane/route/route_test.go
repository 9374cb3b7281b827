package route

import (
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/tinymesh/tinymesh/dataplane/config"
)

func fwd(cluster string) *config.RouteAction {
	return &config.RouteAction{Clusters: []config.WeightedCluster{{Name: cluster, Weight: 1}}}
}

func testTable(t testing.TB) *Table {
	rc := &config.RouteConfig{
		Name: "rc",
		VirtualHosts: []*config.VirtualHost{
			{Name: "backend", Domains: []string{"backend", "backend:8080", "backend.default.svc.cluster.local"}, Routes: []*config.Route{
				{Name: "exact", Match: config.RouteMatch{PathKind: config.PathExact, Path: "/exact", CaseSensitive: true}, Action: fwd("exact")},
				{Name: "post", Match: config.RouteMatch{Path: "/", Headers: []config.HeaderMatcher{{Name: ":method", Value: "POST"}}}, Action: fwd("post")},
				{Name: "hdr", Match: config.RouteMatch{Path: "/", Headers: []config.HeaderMatcher{{Name: "x-canary", Kind: config.HeaderPresent}}}, Action: fwd("canary")},
				{Name: "notdebug", Match: config.RouteMatch{Path: "/api", Headers: []config.HeaderMatcher{{Name: "x-debug", Kind: config.HeaderExact, Value: "1", Invert: true}}}, Action: fwd("api")},
				{Name: "re", Match: config.RouteMatch{PathKind: config.PathRegex, Path: "/items/[0-9]+", CaseSensitive: true}, Action: fwd("items")},
				{Name: "grpc", Match: config.RouteMatch{Path: "/", GRPCOnly: true}, Action: fwd("grpc")},
				{Name: "sep", Match: config.RouteMatch{PathKind: config.PathSeparatedPrefix, Path: "/sep", CaseSensitive: true}, Action: fwd("sep")},
				{Name: "direct", Match: config.RouteMatch{PathKind: config.PathExact, Path: "/teapot"}, DirectResponse: &config.DirectResponse{Status: 418}},
				{Name: "default", Match: config.RouteMatch{Path: "/"}, Action: fwd("default")},
			}},
			{Name: "wild-suffix", Domains: []string{"*.example.com"}, Routes: []*config.Route{{Name: "s", Match: config.RouteMatch{Path: "/"}, Action: fwd("suffix")}}},
			{Name: "wild-longer", Domains: []string{"*.api.example.com"}, Routes: []*config.Route{{Name: "s2", Match: config.RouteMatch{Path: "/"}, Action: fwd("suffix2")}}},
			{Name: "wild-prefix", Domains: []string{"api.*"}, Routes: []*config.Route{{Name: "p", Match: config.RouteMatch{Path: "/"}, Action: fwd("prefix")}}},
			{Name: "port-only", Domains: []string{"other:9090"}, Routes: []*config.Route{{Name: "o", Match: config.RouteMatch{Path: "/"}, Action: fwd("other")}}},
		},
	}
	tbl, err := Compile(rc)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return tbl
}

func TestMatch(t *testing.T) {
	tbl := testTable(t)
	grpcHdr := http.Header{"Content-Type": {"application/grpc+proto"}}
	tests := []struct {
		name   string
		req    Request
		wantVH string
		want   string // route name, "" for none
	}{
		{name: "exact host", req: Request{Authority: "backend", Method: "GET", Path: "/x"}, wantVH: "backend", want: "default"},
		{name: "host with port listed", req: Request{Authority: "backend:8080", Method: "GET", Path: "/x"}, wantVH: "backend", want: "default"},
		{name: "host with unlisted port falls back to bare host", req: Request{Authority: "backend:1234", Method: "GET", Path: "/x"}, wantVH: "backend", want: "default"},
		{name: "case-insensitive host", req: Request{Authority: "BackEnd.Default.SVC.cluster.local", Method: "GET", Path: "/x"}, wantVH: "backend", want: "default"},
		{name: "exact path", req: Request{Authority: "backend", Method: "GET", Path: "/exact"}, wantVH: "backend", want: "exact"},
		{name: "exact path is case sensitive", req: Request{Authority: "backend", Method: "GET", Path: "/EXACT"}, wantVH: "backend", want: "default"},
		{name: "method", req: Request{Authority: "backend", Method: "POST", Path: "/x"}, wantVH: "backend", want: "post"},
		{name: "header present", req: Request{Authority: "backend", Method: "GET", Path: "/x", Header: http.Header{"X-Canary": {"yes"}}}, wantVH: "backend", want: "hdr"},
		{name: "inverted header", req: Request{Authority: "backend", Method: "GET", Path: "/api/v1"}, wantVH: "backend", want: "notdebug"},
		{name: "inverted header not matching", req: Request{Authority: "backend", Method: "GET", Path: "/api/v1", Header: http.Header{"X-Debug": {"1"}}}, wantVH: "backend", want: "default"},
		{name: "regex", req: Request{Authority: "backend", Method: "GET", Path: "/items/42"}, wantVH: "backend", want: "re"},
		{name: "regex must match whole path", req: Request{Authority: "backend", Method: "GET", Path: "/items/42/x"}, wantVH: "backend", want: "default"},
		{name: "grpc", req: Request{Authority: "backend", Method: "GET", Path: "/svc/M", Header: grpcHdr}, wantVH: "backend", want: "grpc"},
		{name: "separated prefix", req: Request{Authority: "backend", Method: "GET", Path: "/sep/a"}, wantVH: "backend", want: "sep"},
		{name: "separated prefix needs separator", req: Request{Authority: "backend", Method: "GET", Path: "/separate"}, wantVH: "backend", want: "default"},
		{name: "suffix wildcard", req: Request{Authority: "www.example.com", Method: "GET", Path: "/"}, wantVH: "wild-suffix", want: "s"},
		{name: "longest suffix wins", req: Request{Authority: "v1.api.example.com", Method: "GET", Path: "/"}, wantVH: "wild-longer", want: "s2"},
		{name: "prefix wildcard", req: Request{Authority: "api.internal", Method: "GET", Path: "/"}, wantVH: "wild-prefix", want: "p"},
		{name: "port-specific domain", req: Request{Authority: "other:9090", Method: "GET", Path: "/"}, wantVH: "port-only", want: "o"},
		{name: "port-specific domain, other port", req: Request{Authority: "other:9091", Method: "GET", Path: "/"}},
		{name: "unknown host", req: Request{Authority: "nope", Method: "GET", Path: "/"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.req.Header == nil {
				tt.req.Header = http.Header{}
			}
			vh, r := tbl.Match(&tt.req)
			var gotVH, got string
			if vh != nil {
				gotVH = vh.Config.Name
			}
			if r != nil {
				got = r.Config.Name
			}
			if diff := cmp.Diff([2]string{tt.wantVH, tt.want}, [2]string{gotVH, got}); diff != "" {
				t.Errorf("Match(%+v) vhost/route (-want +got):\n%s", tt.req, diff)
			}
		})
	}
}

func TestCatchAllAndRewrite(t *testing.T) {
	tbl, err := Compile(&config.RouteConfig{VirtualHosts: []*config.VirtualHost{{
		Name: "all", Domains: []string{"*"},
		Routes: []*config.Route{{Name: "r", Match: config.RouteMatch{Path: "/old"}, Action: &config.RouteAction{
			Clusters: []config.WeightedCluster{{Name: "a", Weight: 1}}, PrefixRewrite: "/new"}}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	_, r := tbl.Match(&Request{Authority: "anything:80", Method: "GET", Path: "/old/x", Header: http.Header{}})
	if r == nil {
		t.Fatal("no route for catch-all host")
	}
	if got, want := r.RewritePath("/old/x"), "/new/x"; got != want {
		t.Errorf("RewritePath = %q, want %q", got, want)
	}
	if got := r.PickCluster().Name; got != "a" {
		t.Errorf("PickCluster = %q, want a", got)
	}
}

func TestCompileRejectsBadRegex(t *testing.T) {
	_, err := Compile(&config.RouteConfig{Name: "rc", VirtualHosts: []*config.VirtualHost{{Name: "v", Domains: []string{"*"},
		Routes: []*config.Route{{Name: "bad", Match: config.RouteMatch{PathKind: config.PathRegex, Path: "("}, Action: fwd("a")}}}}})
	if err == nil {
		t.Fatal("Compile(bad regex) err = nil, want error")
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	tbl := testTable(t)
	reqs := []*Request{
		{Authority: "Backend.Default.svc.cluster.local", Method: "GET", Path: "/items/1", Header: http.Header{}},
		{Authority: "v1.api.example.com", Method: "GET", Path: "/", Header: http.Header{}},
		{Authority: "backend:1234", Method: "GET", Path: "/api", Header: http.Header{"X-Debug": {"0"}}},
	}
	for _, req := range reqs {
		if n := testing.AllocsPerRun(200, func() {
			_, r := tbl.Match(req)
			r.PickCluster()
		}); n != 0 {
			t.Errorf("Match(%+v): allocs = %v, want 0", req, n)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	tbl := testTable(b)
	req := &Request{Authority: "backend.default.svc.cluster.local:8080", Method: "GET", Path: "/some/path", Header: http.Header{"User-Agent": {"x"}}}
	b.ReportAllocs()
	for b.Loop() {
		_, r := tbl.Match(req)
		r.PickCluster()
	}
}
