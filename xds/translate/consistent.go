package translate

import (
	"fmt"
	"slices"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// Consistent checks that r is a complete, closed set: every EDS cluster has its
// load assignment and every route configuration a listener names is present, with
// nothing left over. It runs go-control-plane's Snapshot.Consistent, which does not
// look inside API listeners (proxyless gRPC), so their RDS references are checked
// here as well, and so is every cluster named by a route or a TCP proxy. Every SDS
// secret a TLS context names must be present, except default and ROOTCA, which a
// node lacks until it has an identity: it then waits for them (MissingSecrets).
func Consistent(r *Resources) error {
	byType := r.ByType()
	apiRoutes := map[string]bool{}
	for _, l := range r.Listeners {
		if l.GetApiListener() == nil {
			continue
		}
		h := &hcmv3.HttpConnectionManager{}
		if err := l.GetApiListener().GetApiListener().UnmarshalTo(h); err != nil {
			return fmt.Errorf("Listener %q: api_listener: %w", l.Name, err)
		}
		if rds := h.GetRds(); rds != nil {
			apiRoutes[rds.GetRouteConfigName()] = true
		}
	}
	if len(apiRoutes) > 0 {
		// Check the API listeners' routes here and the rest with go-control-plane.
		have := map[string]bool{}
		keep := byType[resource.RouteType][:0:0]
		for _, rc := range r.Routes {
			if apiRoutes[rc.Name] {
				have[rc.Name] = true
				continue
			}
			keep = append(keep, rc)
		}
		for name := range apiRoutes {
			if !have[name] {
				return fmt.Errorf("API listener route configuration %q missing", name)
			}
		}
		byType[resource.RouteType] = keep
	}
	snap, err := cachev3.NewSnapshot("", byType)
	if err != nil {
		return err
	}
	if err := snap.Consistent(); err != nil {
		return err
	}
	if err := clustersPresent(r); err != nil {
		return err
	}
	refs, err := secretRefs(r)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, s := range r.Secrets {
		have[s.Name] = true
	}
	for _, name := range refs {
		if !have[name] && name != SecretCertificate && name != SecretRootCA {
			return fmt.Errorf("Secret %q referenced but missing", name)
		}
	}
	return nil
}

// MissingSecrets returns the names of the SDS secrets that r's TLS contexts
// reference but r lacks, sorted: the node has no identity (or no trust bundle)
// yet, and its TLS listeners and clusters wait for them.
func MissingSecrets(r *Resources) []string {
	refs, _ := secretRefs(r) // undecodable contexts are Consistent's to report
	have := map[string]bool{}
	for _, s := range r.Secrets {
		have[s.Name] = true
	}
	var out []string
	for _, name := range refs {
		if !have[name] {
			out = append(out, name)
		}
	}
	return out
}

// secretRefs lists the SDS secret names in r's listener and cluster TLS contexts,
// sorted and deduplicated.
func secretRefs(r *Resources) ([]string, error) {
	names := map[string]bool{}
	add := func(c *tlsv3.CommonTlsContext) {
		for _, sc := range c.GetTlsCertificateSdsSecretConfigs() {
			names[sc.GetName()] = true
		}
		if sc := c.GetValidationContextSdsSecretConfig(); sc != nil {
			names[sc.GetName()] = true
		}
		if sc := c.GetCombinedValidationContext().GetValidationContextSdsSecretConfig(); sc != nil {
			names[sc.GetName()] = true
		}
	}
	for _, l := range r.Listeners {
		for _, fc := range l.GetFilterChains() {
			tc := fc.GetTransportSocket().GetTypedConfig()
			if tc == nil {
				continue
			}
			d := &tlsv3.DownstreamTlsContext{}
			if err := tc.UnmarshalTo(d); err != nil {
				return nil, fmt.Errorf("Listener %q: transport_socket: %w", l.Name, err)
			}
			add(d.GetCommonTlsContext())
		}
	}
	for _, c := range r.Clusters {
		tc := c.GetTransportSocket().GetTypedConfig()
		if tc == nil {
			continue
		}
		u := &tlsv3.UpstreamTlsContext{}
		if err := tc.UnmarshalTo(u); err != nil {
			return nil, fmt.Errorf("Cluster %q: transport_socket: %w", c.Name, err)
		}
		add(u.GetCommonTlsContext())
	}
	out := make([]string, 0, len(names))
	for n := range names {
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

// clustersPresent checks that every cluster a route or TCP proxy names exists,
// which go-control-plane does not check (Envoy tolerates it, our data plane's
// snapshot contract does not).
func clustersPresent(r *Resources) error {
	have := make(map[string]bool, len(r.Clusters))
	for _, c := range r.Clusters {
		have[c.Name] = true
	}
	checkRoutes := func(rc *routev3.RouteConfiguration) error {
		for _, vh := range rc.GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				a := rt.GetRoute()
				if a == nil {
					continue
				}
				names := []string{}
				if c := a.GetCluster(); c != "" {
					names = append(names, c)
				}
				for _, wc := range a.GetWeightedClusters().GetClusters() {
					names = append(names, wc.GetName())
				}
				for _, n := range names {
					if !have[n] {
						return fmt.Errorf("RouteConfiguration %q: route %q: cluster %q missing", rc.GetName(), rt.GetName(), n)
					}
				}
			}
		}
		return nil
	}
	for _, rc := range r.Routes {
		if err := checkRoutes(rc); err != nil {
			return err
		}
	}
	for _, l := range r.Listeners {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				tc := f.GetTypedConfig()
				switch {
				case tc.MessageIs(&hcmv3.HttpConnectionManager{}):
					h := &hcmv3.HttpConnectionManager{}
					if err := tc.UnmarshalTo(h); err != nil {
						return fmt.Errorf("Listener %q: %w", l.Name, err)
					}
					if rc := h.GetRouteConfig(); rc != nil {
						if err := checkRoutes(rc); err != nil {
							return fmt.Errorf("Listener %q: %w", l.Name, err)
						}
					}
				case tc.MessageIs(&tcpv3.TcpProxy{}):
					tp := &tcpv3.TcpProxy{}
					if err := tc.UnmarshalTo(tp); err != nil {
						return fmt.Errorf("Listener %q: %w", l.Name, err)
					}
					if c := tp.GetCluster(); !have[c] {
						return fmt.Errorf("Listener %q: tcp_proxy cluster %q missing", l.Name, c)
					}
				}
			}
		}
	}
	return nil
}
