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
	// Secrets by name: SDS secrets and the ones the proxy supplies itself
	// (xds/client Options.LocalSecrets).
	Secrets map[string]*config.TLSSecret
}

// Missing lists what the resources in a Set refer to but the Set lacks; each
// list is sorted.
type Missing struct {
	Routes      []string // RDS names named by listeners
	Assignments []string // EDS service names of clusters
	Clusters    []string // clusters named by routes or TCP proxies
	// Secrets named by listeners' and clusters' TLS settings that are absent
	// or of the wrong kind (a certificate where a trust bundle is needed).
	Secrets []string
}

// Empty reports whether nothing is missing.
func (m Missing) Empty() bool {
	return len(m.Routes) == 0 && len(m.Assignments) == 0 && len(m.Clusters) == 0 && len(m.Secrets) == 0
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

// SecretNames returns the sorted names of the SDS secrets the listeners and
// clusters use: what a client subscribes to for Secret.
func (s *Set) SecretNames() []string {
	var out []string
	add := func(names ...string) {
		for _, n := range names {
			if n != "" {
				out = append(out, n)
			}
		}
	}
	for _, l := range s.Listeners {
		if t := l.Config.TLS; t != nil {
			add(t.CertificateSecret, t.ValidationSecret)
		}
	}
	for _, c := range s.Clusters {
		if t := c.Config.TLS; t != nil {
			add(t.CertificateSecret, t.ValidationSecret)
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
// SDS secret names in listeners' and clusters' TLS settings are resolved from
// s.Secrets; a missing one is missing like a route, and with fill a TLS
// listener lacking a secret is left out of the snapshot and a TLS cluster
// lacking one has no endpoints (and no TLS), so nothing is ever served or sent
// without its certificate.
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
		lc, ok := resolveListenerTLS(s, l.Config, &miss)
		if !ok {
			// Never serve a TLS listener without its certificate: with fill
			// it is left out until its secrets arrive.
			continue
		}
		snap.Listeners = append(snap.Listeners, lc)
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
		// A tracer exporting through a cluster (envoy_grpc) needs it like a
		// route does: Envoy refuses a gRPC client for an unknown cluster.
		for _, t := range []*config.Tracing{httpTracing(lc), tcpTracing(lc)} {
			if t != nil && t.Cluster != "" {
				needClusters[t.Cluster] = true
			}
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
		if t := cc.TLS; t != nil && (t.CertificateSecret != "" || t.ValidationSecret != "") {
			if cc == c.Config {
				cp := *c.Config
				cc = &cp
			}
			if !resolveUpstreamTLS(s, cc, &miss) {
				// Without its secrets the cluster cannot do its TLS: it has
				// no endpoints until they arrive (requests fail with
				// no_healthy_upstream instead of going out unauthenticated).
				cc.TLS, cc.Endpoints = nil, nil
			}
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
	miss.Secrets = sortUniq(miss.Secrets)
	if !miss.Empty() && !fill {
		return nil, miss
	}
	return snap, miss
}

// secret returns the named secret when it is of the wanted kind, else records
// the name as missing.
func secret(s *Set, name string, cert bool, miss *Missing) (*config.TLSSecret, bool) {
	sec, ok := s.Secrets[name]
	if ok && (cert && sec.Certificate != nil || !cert && len(sec.TrustedCA) > 0) {
		return sec, true
	}
	miss.Secrets = append(miss.Secrets, name)
	return nil, false
}

// resolveListenerTLS returns lc with the material of its SDS secrets filled
// in (a copy; decoded listeners are shared across snapshots), or false when
// a secret is missing.
func resolveListenerTLS(s *Set, lc *config.Listener, miss *Missing) (*config.Listener, bool) {
	t := lc.TLS
	if t == nil || t.CertificateSecret == "" && t.ValidationSecret == "" {
		return lc, true
	}
	nt := *t
	ok := true
	if t.CertificateSecret != "" {
		if sec, found := secret(s, t.CertificateSecret, true, miss); found {
			nt.Certificates = []config.CertificateKeyPair{*sec.Certificate}
		} else {
			ok = false
		}
	}
	if t.ValidationSecret != "" {
		if sec, found := secret(s, t.ValidationSecret, false, miss); found {
			nt.TrustedCA = sec.TrustedCA
		} else {
			ok = false
		}
	}
	if !ok {
		return nil, false
	}
	nl := *lc
	nl.TLS = &nt
	return &nl, true
}

// resolveUpstreamTLS fills in the material of cc's SDS secrets; cc and its
// TLS are the caller's own copy. It reports false when a secret is missing.
func resolveUpstreamTLS(s *Set, cc *config.Cluster, miss *Missing) bool {
	nt := *cc.TLS
	ok := true
	if nt.CertificateSecret != "" {
		if sec, found := secret(s, nt.CertificateSecret, true, miss); found {
			nt.ClientCertificate = sec.Certificate
		} else {
			ok = false
		}
	}
	if nt.ValidationSecret != "" {
		if sec, found := secret(s, nt.ValidationSecret, false, miss); found {
			nt.TrustedCA = sec.TrustedCA
		} else {
			ok = false
		}
	}
	cc.TLS = &nt
	return ok
}

func httpTracing(l *config.Listener) *config.Tracing {
	if l.HTTP == nil {
		return nil
	}
	return l.HTTP.Tracing
}

func tcpTracing(l *config.Listener) *config.Tracing {
	if l.TCP == nil {
		return nil
	}
	return l.TCP.Tracing
}
