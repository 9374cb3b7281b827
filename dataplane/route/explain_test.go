package route

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestExplain(t *testing.T) {
	tbl := testTable(t)
	grpcHdr := http.Header{"Content-Type": {"application/grpc"}}
	tests := []struct {
		name       string
		req        Request
		wantDomain string
		wantReason string // substring of DomainReason
		wantIndex  int
		wantWhy    []string // substrings of the rejections' reasons, in order
		wantClose  []string // closest domains, when no virtual host answers
	}{
		{name: "exact host, first route", req: Request{Authority: "backend", Method: "GET", Path: "/exact"},
			wantDomain: "backend", wantReason: "exact match on the authority", wantIndex: 0},
		{name: "port stripped, header route", req: Request{Authority: "Backend:1234", Method: "GET", Path: "/x", Header: http.Header{"X-Canary": {"1"}}},
			wantDomain: "backend", wantReason: "without its port", wantIndex: 2,
			wantWhy: []string{`path "/x" does not match exact path "/exact"`, `header :method: want exact "POST", got "GET"`}},
		{name: "grpc only and inverted header", req: Request{Authority: "backend:8080", Method: "GET", Path: "/api", Header: http.Header{"X-Debug": {"1"}}},
			wantDomain: "backend:8080", wantIndex: 8,
			wantWhy: []string{"exact path", ":method", "header x-canary: want present, got absent", `header x-debug: want not exact "1", got "1"`,
				`path "/api" does not match path regex`, "gRPC only", "path-separated prefix", "exact path \"/teapot\" (case-insensitive)"}},
		{name: "grpc", req: Request{Authority: "backend", Method: "GET", Path: "/svc/M", Header: grpcHdr}, wantDomain: "backend", wantIndex: 5,
			wantWhy: []string{"exact", ":method", "x-canary", "/api", "regex"}},
		{name: "suffix wildcard", req: Request{Authority: "v1.api.example.com", Method: "GET", Path: "/"},
			wantDomain: "*.api.example.com", wantReason: "longest suffix", wantIndex: 0},
		{name: "prefix wildcard", req: Request{Authority: "api.internal", Method: "GET", Path: "/"},
			wantDomain: "api.*", wantReason: "prefix wildcard", wantIndex: 0},
		{name: "no virtual host: other port", req: Request{Authority: "other:9091", Method: "GET", Path: "/"}, wantIndex: -1,
			wantClose: []string{"other:9090: port 9091 differs from the domain's 9090"}},
		{name: "no virtual host: typo", req: Request{Authority: "backedn", Method: "GET", Path: "/"}, wantIndex: -1,
			wantClose: []string{`backend: host "backedn" differs from "backend"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.req.Header == nil {
				tt.req.Header = http.Header{}
			}
			e := tbl.Explain(&tt.req)
			// Explain must agree with Match.
			vh, r := tbl.Match(&tt.req)
			if e.VirtualHost != vh || e.Route != r {
				t.Fatalf("Explain picked %v/%v, Match %v/%v", e.VirtualHost, e.Route, vh, r)
			}
			if e.Domain != tt.wantDomain || !strings.Contains(e.DomainReason, tt.wantReason) {
				t.Errorf("domain = %q (%q), want %q (containing %q)", e.Domain, e.DomainReason, tt.wantDomain, tt.wantReason)
			}
			if e.RouteIndex != tt.wantIndex {
				t.Errorf("route index = %d, want %d", e.RouteIndex, tt.wantIndex)
			}
			if tt.wantIndex >= 0 && len(e.Rejected) != tt.wantIndex {
				t.Errorf("%d routes rejected, want %d: %+v", len(e.Rejected), tt.wantIndex, e.Rejected)
			}
			for i, w := range tt.wantWhy {
				if i >= len(e.Rejected) || !strings.Contains(e.Rejected[i].Reason+" "+e.Rejected[i].Match, w) {
					t.Errorf("rejection %d = %+v, want it to mention %q; all: %+v", i, e.Rejected[min(i, len(e.Rejected)-1)], w, e.Rejected)
				}
			}
			for i, w := range tt.wantClose {
				if i >= len(e.CloseDomains) || e.CloseDomains[i].Name+": "+e.CloseDomains[i].Reason != w {
					t.Errorf("close domains = %+v, want #%d %q", e.CloseDomains, i, w)
				}
			}
		})
	}
}

func TestExplainNoMatchListsAllRoutes(t *testing.T) {
	tbl := testTable(t)
	e := tbl.Explain(&Request{Authority: "other:9090", Method: "GET", Path: "/", Header: http.Header{}})
	if e.Route == nil || e.RouteIndex != 0 {
		t.Fatalf("other:9090 / = route %d, want 0", e.RouteIndex)
	}
	e = tbl.Explain(&Request{Authority: "www.example.com", Method: "GET", Path: "", Header: http.Header{}})
	got := []string{}
	for _, r := range e.Rejected {
		got = append(got, r.Reason)
	}
	if diff := cmp.Diff([]string{`path "" does not match prefix "/" (case-insensitive)`}, got); e.Route != nil || diff != "" {
		t.Errorf("rejections (-want +got):\n%s", diff)
	}
}
