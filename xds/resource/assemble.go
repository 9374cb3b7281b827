package resource

import (
	"slices"
	"sort"

	"github.com/tinymesh/tinymesh/dataplane/config"
)

// Set is the decoded resources an ADS client holds, each map keyed by resource
// name. Assemble only reads it; the values must not be modified once decoded.
type Set struct {
	Listeners   map[string]*Listener
	Routes      map[string]*config.RouteConfig // RDS route configurations
	Clusters    map[string]*Cluster
	Assignments map[string]*Assignment // by cluster_name (the EDS service name)
}

// Missing lists what the resources in a Set refer to but the Set lacks; each
// list is sorted.
type Missing struct {
	Routes      []string // RDS names named by listeners
	Assignments []string // EDS service names of clusters
	Clusters    []string // clusters named by routes or TCP proxies
}

// Empty reports whether nothing is missing.
func (m Missing) Empty() bool {
	return len(m.Routes) == 0 && len(m.Assignments) == 0 && len(m.Clusters) == 0
}

// RouteNames returns the sorted RDS route configuration names the listeners use:
// what a client subscribes to for RouteConfiguration.
func (s *Set) RouteNames() []string {
	var out []string
	for _, l := range s.Listeners {
		if l.RDSName != "" {
			out = append(out, l.RDSName)
		}
	}
	return sortUniq(out)
}

// AssignmentNames returns the sorted EDS service names of the clusters: what a
// client subscribes to for ClusterLoadAssignment.
func (s *Set) AssignmentNames() []string {
	var out []string
	for _, c := range s.Clusters {
		if c.EDSServiceName != "" {
			out = append(out, c.EDSServiceName)
		}
	}
	return sortUniq(out)
}

func sortUniq(s []string) []string {
	sort.Strings(s)
	return slices.Compact(s)
}

// Assemble builds a snapshot from s. When something is missing it returns a nil
// snapshot and what is missing, unless fill is set: then, as Envoy does after its
// initial_fetch_timeout, missing route configurations become empty tables, EDS
// clusters without an assignment have no endpoints, and clusters named but absent
// are added without endpoints (so requests to them fail as no_healthy_upstream).
// The snapshot is deterministic for a given Set and shares decoded values with it.
func Assemble(s *Set, version string, fill bool) (*config.Snapshot, Missing) {
	var miss Missing
	snap := &config.Snapshot{
		Version:  version,
		Routes:   make(map[string]*config.RouteConfig),
		Clusters: make(map[string]*config.Cluster),
	}
	needClusters := map[string]bool{}
	useRoute := func(rc *config.RouteConfig) {
		for _, vh := range rc.VirtualHosts {
			for _, r := range vh.Routes {
				if r.Action == nil {
					continue
				}
				for _, wc := range r.Action.Clusters {
					needClusters[wc.Name] = true
				}
			}
		}
	}
	for _, l := range s.Listeners {
		snap.Listeners = append(snap.Listeners, l.Config)
		switch {
		case l.InlineRoute != nil:
			snap.Routes[l.InlineRoute.Name] = l.InlineRoute
			useRoute(l.InlineRoute)
		case l.RDSName != "":
			if rc, ok := s.Routes[l.RDSName]; ok {
				snap.Routes[l.RDSName] = rc
				useRoute(rc)
			} else {
				miss.Routes = append(miss.Routes, l.RDSName)
				snap.Routes[l.RDSName] = &config.RouteConfig{Name: l.RDSName}
			}
		case l.Config.TCP != nil:
			needClusters[l.Config.TCP.Cluster] = true
		}
	}
	sort.Slice(snap.Listeners, func(i, j int) bool { return snap.Listeners[i].Name < snap.Listeners[j].Name })
	for name, c := range s.Clusters {
		cc := c.Config
		if c.EDSServiceName != "" {
			cp := *c.Config // fresh value: decoded clusters are shared across snapshots
			if a, ok := s.Assignments[c.EDSServiceName]; ok {
				cp.Endpoints = a.Endpoints
			} else {
				miss.Assignments = append(miss.Assignments, c.EDSServiceName)
				cp.Endpoints = nil
			}
			cc = &cp
		}
		snap.Clusters[name] = cc
	}
	for name := range needClusters {
		if _, ok := snap.Clusters[name]; !ok {
			miss.Clusters = append(miss.Clusters, name)
			snap.Clusters[name] = &config.Cluster{Name: name, ConnectTimeout: defaultConnectTimeout}
		}
	}
	miss.Routes = sortUniq(miss.Routes)
	miss.Assignments = sortUniq(miss.Assignments)
	miss.Clusters = sortUniq(miss.Clusters)
	if !miss.Empty() && !fill {
		return nil, miss
	}
	return snap, miss
}
