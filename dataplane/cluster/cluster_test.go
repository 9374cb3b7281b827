package cluster

import (
	"time"

	"testing"

	"github.com/tinymesh/tinymesh/dataplane/config"
)

func snap(clusters ...*config.Cluster) *config.Snapshot {
	s := &config.Snapshot{Clusters: map[string]*config.Cluster{}}
	for _, c := range clusters {
		s.Clusters[c.Name] = c
	}
	return s
}

func TestBuildReusesUpstreamByIdentity(t *testing.T) {
	s := NewSet()
	defer s.Close()
	t1 := s.Build(snap(
		&config.Cluster{Name: "a", Protocol: config.ProtocolH2C, Endpoints: []config.Endpoint{{Address: "127.0.0.1:1"}}},
		&config.Cluster{Name: "b"},
	))
	s.Prune(t1)
	t2 := s.Build(snap(
		&config.Cluster{Name: "a", Protocol: config.ProtocolH2C, Endpoints: []config.Endpoint{{Address: "127.0.0.1:2"}}},
		&config.Cluster{Name: "b", Protocol: config.ProtocolH2C},
	))
	s.Prune(t2)
	a1, _ := t1.Get("a")
	a2, _ := t2.Get("a")
	if a1.Upstream != a2.Upstream {
		t.Errorf("cluster a: upstream replaced although name and protocol are unchanged")
	}
	b1, _ := t1.Get("b")
	b2, _ := t2.Get("b")
	if b1.Upstream == b2.Upstream {
		t.Errorf("cluster b: upstream reused although protocol changed")
	}
	if !b1.Upstream.removed.Load() {
		t.Errorf("old upstream of b: removed = false, want true")
	}
	if got, _ := a2.Picker.Pick(); got != "127.0.0.1:2" {
		t.Errorf("a2 pick = %q, want 127.0.0.1:2", got)
	}
	if _, ok := t2.Get("missing"); ok {
		t.Errorf("Get(missing) ok = true, want false")
	}
}

// requestPathClusters are the two kinds of cluster the request path picks
// from: a plain one, and one with outlier detection, whose picks go through
// the upstream's health-aware picker.
func requestPathClusters(t testing.TB) (*Set, *Table, map[string]string) {
	s := NewSet()
	eps := []config.Endpoint{{Address: "127.0.0.1:1"}, {Address: "127.0.0.1:2"}}
	plain := &config.Cluster{Name: "outbound|8080||backend.default.svc.cluster.local", Endpoints: eps}
	outlier := &config.Cluster{Name: "outbound|8080||web.default.svc.cluster.local", Endpoints: eps,
		HealthyPanicThreshold: 50,
		OutlierDetection: &config.OutlierDetection{Consecutive5xx: 5, EnforcingConsecutive5xx: 100,
			Interval: time.Hour, BaseEjectionTime: time.Minute, MaxEjectionTime: time.Hour, MaxEjectionPercent: 10}}
	tbl := s.Build(snap(plain, outlier))
	s.Prune(tbl) // puts outlier detection in force
	if c, _ := tbl.Get(outlier.Name); c.picker() == c.Picker {
		t.Fatal("the outlier-detecting cluster picks without its health-aware picker")
	}
	return s, tbl, map[string]string{"plain": plain.Name, "outlier": outlier.Name}
}

func TestRequestPathDoesNotAllocate(t *testing.T) {
	s, tbl, names := requestPathClusters(t)
	defer s.Close()
	for kind, name := range names {
		c, _ := tbl.Get(name)
		ep := c.Upstream.Endpoint("127.0.0.1:1")
		if n := testing.AllocsPerRun(1000, func() {
			c, _ := tbl.Get(name)
			c.Pick()
			if c.Upstream.BeginRequest() {
				c.Upstream.EndRequest()
			}
			c.Upstream.ObserveResponse(ep, 200)
		}); n != 0 {
			t.Errorf("%s: allocs per Get+Pick+BeginRequest+ObserveResponse = %v, want 0", kind, n)
		}
	}
}

// BenchmarkGetAndPick is the per-request cluster work: lookup, pick,
// max_requests admission and the outlier detector's look at the response.
func BenchmarkGetAndPick(b *testing.B) {
	s, tbl, names := requestPathClusters(b)
	defer s.Close()
	for _, kind := range []string{"plain", "outlier"} {
		b.Run(kind, func(b *testing.B) {
			name := names[kind]
			c, _ := tbl.Get(name)
			ep := c.Upstream.Endpoint("127.0.0.1:1")
			b.ReportAllocs()
			for b.Loop() {
				c, _ := tbl.Get(name)
				c.Pick()
				if c.Upstream.BeginRequest() {
					c.Upstream.EndRequest()
				}
				c.Upstream.ObserveResponse(ep, 200)
			}
		})
	}
}
