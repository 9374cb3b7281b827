package cluster

import (
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

func TestGetAndPickDoNotAllocate(t *testing.T) {
	s := NewSet()
	defer s.Close()
	tbl := s.Build(snap(&config.Cluster{Name: "outbound|8080||backend.default.svc.cluster.local",
		Endpoints: []config.Endpoint{{Address: "127.0.0.1:1"}, {Address: "127.0.0.1:2"}}}))
	name := "outbound|8080||backend.default.svc.cluster.local"
	if n := testing.AllocsPerRun(1000, func() {
		c, _ := tbl.Get(name)
		c.Picker.Pick()
	}); n != 0 {
		t.Errorf("allocs per Get+Pick = %v, want 0", n)
	}
}

func BenchmarkGetAndPick(b *testing.B) {
	s := NewSet()
	defer s.Close()
	name := "outbound|8080||backend.default.svc.cluster.local"
	tbl := s.Build(snap(&config.Cluster{Name: name, Endpoints: []config.Endpoint{{Address: "127.0.0.1:1"}}}))
	b.ReportAllocs()
	for b.Loop() {
		c, _ := tbl.Get(name)
		c.Picker.Pick()
	}
}
