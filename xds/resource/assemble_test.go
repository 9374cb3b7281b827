package resource_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/xds/resource"
	"github.com/tinymesh/tinymesh/xds/xdstest"
)

func mustSet(t *testing.T, withRoute, withAssignment bool) *resource.Set {
	t.Helper()
	s := &resource.Set{
		Listeners:   map[string]*resource.Listener{},
		Routes:      map[string]*config.RouteConfig{},
		Clusters:    map[string]*resource.Cluster{},
		Assignments: map[string]*resource.Assignment{},
	}
	for _, l := range []struct{ name, rds string }{{"z_http", "rc"}, {"a_http", "rc"}} {
		d, err := resource.DecodeListener(xdstest.HTTPListener(l.name, "127.0.0.1", 1, l.rds))
		if err != nil {
			t.Fatal(err)
		}
		s.Listeners[l.name] = d
	}
	tcp, err := resource.DecodeListener(xdstest.TCPListener("tcp", "127.0.0.1", 2, "tcpc"))
	if err != nil {
		t.Fatal(err)
	}
	s.Listeners["tcp"] = tcp
	if withRoute {
		rc, err := resource.DecodeRouteConfig(xdstest.RouteConfig("rc", "eds"))
		if err != nil {
			t.Fatal(err)
		}
		s.Routes["rc"] = rc
	}
	eds, err := resource.DecodeCluster(xdstest.EDSCluster("eds"))
	if err != nil {
		t.Fatal(err)
	}
	s.Clusters["eds"] = eds
	static, err := resource.DecodeCluster(xdstest.StaticCluster("tcpc", "127.0.0.1:5"))
	if err != nil {
		t.Fatal(err)
	}
	s.Clusters["tcpc"] = static
	if withAssignment {
		a, err := resource.DecodeClusterLoadAssignment(xdstest.Assignment("eds", "127.0.0.1:6"))
		if err != nil {
			t.Fatal(err)
		}
		s.Assignments["eds"] = a
	}
	return s
}

func TestAssemble(t *testing.T) {
	s := mustSet(t, true, true)
	if diff := cmp.Diff([]string{"rc"}, s.RouteNames()); diff != "" {
		t.Errorf("RouteNames (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"eds"}, s.AssignmentNames()); diff != "" {
		t.Errorf("AssignmentNames (-want +got):\n%s", diff)
	}
	snap, miss := resource.Assemble(s, "v1", false)
	if snap == nil || !miss.Empty() {
		t.Fatalf("Assemble = %v, missing %+v; want a snapshot", snap, miss)
	}
	var names []string
	for _, l := range snap.Listeners {
		names = append(names, l.Name)
	}
	if diff := cmp.Diff([]string{"a_http", "tcp", "z_http"}, names); diff != "" {
		t.Errorf("listener order (-want +got):\n%s", diff)
	}
	if got, want := snap.Clusters["eds"].Endpoints, []config.Endpoint{{Address: "127.0.0.1:6", Weight: 1}}; !cmp.Equal(want, got) {
		t.Errorf("eds endpoints = %v, want %v", got, want)
	}
	if s.Clusters["eds"].Config.Endpoints != nil {
		t.Errorf("Assemble modified the decoded cluster: %+v", s.Clusters["eds"].Config)
	}
	again, _ := resource.Assemble(s, "v1", false)
	if diff := cmp.Diff(snap, again); diff != "" {
		t.Errorf("Assemble is not deterministic (-first +second):\n%s", diff)
	}
}

func TestAssembleMissing(t *testing.T) {
	s := mustSet(t, false, false)
	delete(s.Clusters, "tcpc")
	snap, miss := resource.Assemble(s, "v1", false)
	want := resource.Missing{Routes: []string{"rc"}, Assignments: []string{"eds"}, Clusters: []string{"tcpc"}}
	if snap != nil {
		t.Errorf("Assemble returned a snapshot %+v for an incomplete set", snap)
	}
	if diff := cmp.Diff(want, miss); diff != "" {
		t.Errorf("missing (-want +got):\n%s", diff)
	}
	snap, _ = resource.Assemble(s, "v1", true)
	if snap == nil {
		t.Fatal("Assemble with fill returned nil")
	}
	if diff := cmp.Diff(&config.RouteConfig{Name: "rc"}, snap.Routes["rc"]); diff != "" {
		t.Errorf("filled route config (-want +got):\n%s", diff)
	}
	if c := snap.Clusters["tcpc"]; c == nil || len(c.Endpoints) != 0 {
		t.Errorf("filled cluster tcpc = %+v, want one without endpoints", c)
	}
	if c := snap.Clusters["eds"]; c == nil || len(c.Endpoints) != 0 {
		t.Errorf("eds cluster = %+v, want one without endpoints", c)
	}
}

func TestErrorAs(t *testing.T) {
	var re *resource.Error
	_, err := resource.DecodeRouteConfig(xdstest.RouteConfig("", "c"))
	if !errors.As(err, &re) || re.Type != resource.KindRouteConfiguration || re.Field != "name" {
		t.Errorf("error %v (%#v): want a *resource.Error for RouteConfiguration field name", err, re)
	}
}

// A tracer that exports through a cluster (envoy_grpc) makes the snapshot wait
// for that cluster like a route's cluster: until it arrives the set is missing it.
func TestAssembleTracingCluster(t *testing.T) {
	s := mustSet(t, true, true)
	for _, name := range []string{"a_http", "tcp"} {
		l := *s.Listeners[name]
		cfg := *l.Config
		tr := &config.Tracing{Protocol: config.TracingGRPC, Cluster: "otel-" + name}
		if cfg.HTTP != nil {
			h := *cfg.HTTP
			h.Tracing = tr
			cfg.HTTP = &h
		} else {
			tcp := *cfg.TCP
			tcp.Tracing = tr
			cfg.TCP = &tcp
		}
		l.Config = &cfg
		s.Listeners[name] = &l
	}
	snap, miss := resource.Assemble(s, "v1", false)
	if snap != nil {
		t.Fatalf("Assemble returned a snapshot without the tracing clusters")
	}
	if diff := cmp.Diff([]string{"otel-a_http", "otel-tcp"}, miss.Clusters); diff != "" {
		t.Errorf("missing clusters (-want +got):\n%s", diff)
	}
	for _, name := range []string{"otel-a_http", "otel-tcp"} {
		c, err := resource.DecodeCluster(xdstest.StaticCluster(name, "127.0.0.1:4317"))
		if err != nil {
			t.Fatal(err)
		}
		s.Clusters[name] = c
	}
	if snap, miss = resource.Assemble(s, "v1", false); snap == nil || !miss.Empty() {
		t.Errorf("with the tracing clusters: snapshot %v, missing %+v", snap != nil, miss)
	}
}
