package e2e

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"

	"github.com/tinymesh/tinymesh/xds/xdstest"
)

// TestNACKKeepsServing drives the real meshproxy from a test management server
// that sends invalid and unsupported resources while traffic flows: each is
// NACKed with a detail naming the resource and field, no request fails, and a
// valid update afterwards is applied.
func TestNACKKeepsServing(t *testing.T) {
	srv, err := xdstest.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)

	ip := newIP(t)
	v1 := startHTTPBackend(t, ip, backendID{"backend", "v1", "v1-a"}, false)
	v2 := startHTTPBackend(t, ip, backendID{"backend", "v2", "v2-a"}, false)
	port := uint32(freePort(t, ip))
	valid := func(cluster string) xdstest.Resources {
		return xdstest.Resources{
			xdstest.ListenerType: {xdstest.HTTPListener("outbound_http", ip, port, "routes")},
			xdstest.RouteType:    {xdstest.RouteConfig("routes", cluster, "backend")},
			xdstest.ClusterType: {
				xdstest.StaticCluster("backend-v1", v1.addr),
				xdstest.StaticCluster("backend-v2", v2.addr),
			},
		}
	}
	version := 1
	push := func(res xdstest.Resources) {
		t.Helper()
		version++
		if err := srv.SetResources(xdstest.AllNodes, string(rune('a'+version)), res); err != nil {
			t.Fatal(err)
		}
	}
	push(valid("backend-v1"))

	p := startProxy(t, nil, proxyOptions{workload: "client", ip: ip, xds: srv.Addr(), extra: []string{"--outbound", ip + ":" + itoa(port)}})
	p.outbound = ip + ":" + itoa(port)
	l := startLoad(t, loadOptions{target: p.outbound, host: "backend"})
	l.waitTotal(t, l.stats(), 200, 10*time.Second)

	badRegex := valid("backend-v1")
	rc := proto.Clone(badRegex[xdstest.RouteType][0]).(*routev3.RouteConfiguration)
	rc.VirtualHosts[0].Routes[0].Match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/(api"}}
	rc.VirtualHosts[0].Routes[0].GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "backend-v2"}
	badRegex[xdstest.RouteType] = []cachetypes.Resource{rc}

	unknownFilter := valid("backend-v1")
	unknownFilter[xdstest.ListenerType] = []cachetypes.Resource{
		xdstest.ListenerWith("outbound_http", ip, port, "envoy.filters.network.redis_proxy", &listenerv3.Listener{})}

	leastRequest := valid("backend-v1")
	c := proto.Clone(leastRequest[xdstest.ClusterType][1]).(*clusterv3.Cluster)
	c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	leastRequest[xdstest.ClusterType][1] = c

	for _, tc := range []struct {
		name    string
		res     xdstest.Resources
		typeURL string
		want    []string // the NACK detail names resource and field
	}{
		{"invalid regex", badRegex, xdstest.RouteType, []string{`RouteConfiguration "routes"`, "virtual_hosts[0].routes[0].match.safe_regex"}},
		{"unknown filter", unknownFilter, xdstest.ListenerType, []string{`Listener "outbound_http"`, "filter_chains[0].filters[0]"}},
		{"unsupported lb policy", leastRequest, xdstest.ClusterType, []string{`Cluster "backend-v2"`, "lb_policy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from := l.stats()
			mark := srv.Mark()
			push(tc.res)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			nack, err := srv.WaitNACK(ctx, mark, tc.typeURL)
			if err != nil {
				t.Fatalf("no NACK of %s: %v", tc.typeURL, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(nack.ErrorDetail.GetMessage(), w) {
					t.Errorf("NACK detail %q does not name %q", nack.ErrorDetail.GetMessage(), w)
				}
			}
			w := l.waitTotal(t, from, 300, 10*time.Second)
			if w.Failed != 0 || w.Versions["v2"] != 0 {
				t.Errorf("after the NACK: %d failed, %d served by v2 (want 0 and 0: the old config keeps serving); failures: %v", w.Failed, w.Versions["v2"], w.Failures)
			}
		})
	}

	// A valid update after the NACKs is taken.
	push(valid("backend-v2"))
	l.waitWindow(t, "all answered by v2", 200, 10*time.Second, func(s loadStats) bool { return s.Versions["v2"] == s.OK && s.Failed == 0 }, l.stats())
	if s := l.stop(); s.Failed != 0 {
		t.Errorf("%d of %d requests failed; first failures: %v", s.Failed, s.total(), s.Failures)
	}
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }
