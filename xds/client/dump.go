package client

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	corev3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/core/v3"
	tlsv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/extensions/transport_sockets/tls/v3"
	"github.com/tinymesh/tinymesh/xds/resource"
)

// Redacted replaces private keys, passwords and generic secrets in the config
// dump, as Envoy's admin /config_dump shows them.
const Redacted = "[redacted]"

// rawResource is one accepted resource as the control plane sent it.
type rawResource struct {
	any     *anypb.Any // as received; never modified
	version string     // delta: the resource's version; SotW: the response's version_info
	updated time.Time  // when its content last changed
}

// dumpState is an immutable copy of the accepted resources, published by Run's
// goroutine after every accepted response and read by ConfigDump on any goroutine.
type dumpState struct {
	types map[string]typeDump // by type URL
}

type typeDump struct {
	version   string                 // last accepted version_info of the type
	resources map[string]rawResource // by name
}

// publishDump copies the accepted resources for ConfigDump. Called on Run's
// goroutine after the type states changed; the copy costs what stageMaps
// already costs per response.
func (c *Client) publishDump() {
	d := &dumpState{types: make(map[string]typeDump, len(c.types))}
	for t, ts := range c.types {
		m := make(map[string]rawResource, len(ts.recv))
		for n, r := range ts.recv {
			m[n] = r
		}
		d.types[t] = typeDump{version: ts.version, resources: m}
	}
	c.dump.Store(d)
}

// ConfigDump returns the resources this client has accepted (ACKed), as the
// control plane sent them, in Envoy's admin format: a JSON object
// {"configs": [ClustersConfigDump, EndpointsConfigDump, ListenersConfigDump,
// RoutesConfigDump, SecretsConfigDump]} (envoy.admin.v3), each resource an Any
// with its version_info and last_updated. Secrets have their private keys,
// passwords and generic secrets replaced by Redacted; secrets that
// Options.LocalSecrets provides (the SPIFFE Workload API) appear as dynamic
// active secrets with version_info "local". Safe for concurrent use; the
// result is the caller's.
//
// Resources accepted but not in force yet (a listener waiting for its route
// configuration within the initial fetch timeout) are listed too, like
// Envoy's warming resources, which are listed as well.
func (c *Client) ConfigDump() ([]byte, error) {
	d := c.dump.Load()
	if d == nil {
		d = &dumpState{}
	}
	types, err := envoyTypes()
	if err != nil {
		return nil, fmt.Errorf("config dump: %w", err)
	}
	type entry = map[string]any
	configs := []entry{}
	var firstErr error
	marshal := func(r rawResource) json.RawMessage {
		b, err := protojson.MarshalOptions{Resolver: types}.Marshal(r.any)
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("config dump: %s: %w", r.any.GetTypeUrl(), err)
		}
		return b
	}
	stamp := func(r rawResource) string {
		if r.updated.IsZero() {
			return ""
		}
		return r.updated.UTC().Format(time.RFC3339Nano)
	}
	each := func(typeURL string, f func(name string, r rawResource) entry) []entry {
		td := d.types[typeURL]
		names := make([]string, 0, len(td.resources))
		for n := range td.resources {
			names = append(names, n)
		}
		slices.Sort(names)
		out := make([]entry, 0, len(names))
		for _, n := range names {
			out = append(out, f(n, td.resources[n]))
		}
		return out
	}
	version := func(typeURL string) string { return d.types[typeURL].version }

	configs = append(configs, entry{
		"@type":        "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
		"version_info": version(resource.TypeCluster),
		"dynamic_active_clusters": each(resource.TypeCluster, func(_ string, r rawResource) entry {
			return entry{"version_info": r.version, "cluster": marshal(r), "last_updated": stamp(r)}
		}),
	})
	configs = append(configs, entry{
		"@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
		"dynamic_endpoint_configs": each(resource.TypeClusterLoadAssignment, func(_ string, r rawResource) entry {
			return entry{"version_info": r.version, "endpoint_config": marshal(r), "last_updated": stamp(r)}
		}),
	})
	configs = append(configs, entry{
		"@type":        "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
		"version_info": version(resource.TypeListener),
		"dynamic_listeners": each(resource.TypeListener, func(name string, r rawResource) entry {
			return entry{"name": name, "active_state": entry{"version_info": r.version, "listener": marshal(r), "last_updated": stamp(r)}}
		}),
	})
	configs = append(configs, entry{
		"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
		"dynamic_route_configs": each(resource.TypeRouteConfiguration, func(_ string, r rawResource) entry {
			return entry{"version_info": r.version, "route_config": marshal(r), "last_updated": stamp(r)}
		}),
	})
	secrets := each(resource.TypeSecret, func(name string, r rawResource) entry {
		red, err := redactSecret(r.any)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		r.any = red
		return entry{"name": name, "version_info": r.version, "last_updated": stamp(r), "secret": marshal(r)}
	})
	if ls := c.opts.LocalSecrets; ls != nil {
		secrets = slices.DeleteFunc(secrets, func(e entry) bool { return slices.Contains(ls.Names(), e["name"].(string)) })
		for _, n := range ls.Names() {
			sec, ok := ls.Secret(n)
			if !ok {
				continue
			}
			var chain []byte
			if sec.Certificate != nil {
				chain = sec.Certificate.CertificateChain
			}
			a, err := resource.Pack(localSecretProto(n, sec.Certificate != nil, sec.TrustedCA, chain))
			if err != nil {
				return nil, fmt.Errorf("config dump: secret %q: %w", n, err)
			}
			secrets = append(secrets, entry{"name": n, "version_info": "local", "secret": marshal(rawResource{any: a})})
		}
	}
	configs = append(configs, entry{
		"@type":                  "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
		"dynamic_active_secrets": secrets,
	})
	if firstErr != nil {
		return nil, firstErr
	}
	b, err := json.MarshalIndent(entry{"configs": configs}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("config dump: %w", err)
	}
	return append(b, '\n'), nil
}

// redactSecret returns a copy of a Secret Any with its private key, password,
// generic secret and session ticket keys replaced by Redacted.
func redactSecret(a *anypb.Any) (*anypb.Any, error) {
	var s tlsv3.Secret
	if err := resource.Unpack(a, &s); err != nil {
		return nil, fmt.Errorf("config dump: Secret: %w", err)
	}
	red := func() *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: Redacted}}
	}
	switch t := s.Type.(type) {
	case *tlsv3.Secret_TlsCertificate:
		if t.TlsCertificate.GetPrivateKey() != nil {
			t.TlsCertificate.PrivateKey = red()
		}
		if t.TlsCertificate.GetPassword() != nil {
			t.TlsCertificate.Password = red()
		}
	case *tlsv3.Secret_GenericSecret:
		if t.GenericSecret.GetSecret() != nil {
			t.GenericSecret.Secret = red()
		}
	case *tlsv3.Secret_SessionTicketKeys:
		for i := range t.SessionTicketKeys.GetKeys() {
			t.SessionTicketKeys.Keys[i] = red()
		}
	}
	out, err := resource.Pack(&s)
	if err != nil {
		return nil, fmt.Errorf("config dump: Secret %q: %w", s.GetName(), err)
	}
	return out, nil
}

// localSecretProto describes a secret from LocalSecrets as the Secret the
// control plane would have sent, its private key redacted.
func localSecretProto(name string, isCert bool, trustedCA, chain []byte) proto.Message {
	inline := func(b []byte) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
	}
	if isCert {
		return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(chain),
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: Redacted}},
		}}}
	}
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: inline(trustedCA),
	}}}
}
