package client_test

import (
	"strings"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/tinymesh/tinymesh/dataplane/proxytest"
	"github.com/tinymesh/tinymesh/xds/client"
	"github.com/tinymesh/tinymesh/xds/xdstest"
)

// parseDump decodes a config dump as Envoy's admin API defines it; an unknown
// field or a wrong @type fails the test.
func parseDump(t *testing.T, b []byte) *adminv3.ConfigDump {
	t.Helper()
	var d adminv3.ConfigDump
	if err := protojson.Unmarshal(b, &d); err != nil {
		t.Fatalf("config dump is not an envoy.admin.v3.ConfigDump: %v\n%s", err, b)
	}
	return &d
}

// sentByName returns the resources of one type that the test server sent.
func sentByName(res xdstest.Resources, typeURL string) map[string]proto.Message {
	out := map[string]proto.Message{}
	for _, r := range res[typeURL] {
		m := r.(proto.Message)
		var name string
		switch v := m.(type) {
		case *listenerv3.Listener:
			name = v.GetName()
		case *routev3.RouteConfiguration:
			name = v.GetName()
		case *clusterv3.Cluster:
			name = v.GetName()
		case *endpointv3.ClusterLoadAssignment:
			name = v.GetClusterName()
		case *tlsv3.Secret:
			name = v.GetName()
		}
		out[name] = m
	}
	return out
}

func TestConfigDumpRoundTrips(t *testing.T) {
	pki := proxytest.NewPKI(t, "mesh root")
	forModes(t, func(t *testing.T, mode client.Mode) {
		keys := &keyStore{}
		h := start(t, mode, func(o *client.Options) { o.Keys = keys })
		if d := parseDump(t, mustDump(t, h.c)); len(d.GetConfigs()) != 5 {
			t.Errorf("config dump before any response has %d configs, want 5 (empty) ones", len(d.GetConfigs()))
		}
		cert := pki.IssueSVID(t, spiffeFrontend)
		keys.add(cert.PrivateKey)
		ss := secrets(cert, pki.CAPEM)
		// An inline private key, which the dump must not show.
		ss[0].GetTlsCertificate().PrivateKeyProvider = nil
		ss[0].GetTlsCertificate().PrivateKey = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: cert.PrivateKey}}
		res := withSecrets(mtlsWorld(), ss)
		before := time.Now()
		h.set("7", res)
		h.waitApply()
		h.waitAllACK(0, "7", res)

		b := mustDump(t, h.c)
		if strings.Contains(string(b), "PRIVATE KEY") || strings.Contains(string(b), "LS0tLS1CRUdJTiBQUklWQVRF") {
			t.Errorf("config dump shows a private key:\n%s", b)
		}
		d := parseDump(t, b)
		got := map[string]map[string]proto.Message{}
		add := func(typeURL string, a *anypb.Any, version string, updated time.Time) {
			t.Helper()
			m, err := a.UnmarshalNew()
			if err != nil {
				t.Fatalf("%s in the dump: %v", typeURL, err)
			}
			if a.GetTypeUrl() != typeURL {
				t.Errorf("resource of type %s in the %s section", a.GetTypeUrl(), typeURL)
			}
			// Delta carries a version per resource (go-control-plane: a hash
			// of it); SotW the response's version_info.
			if (mode == client.SotW && version != "7") || version == "" {
				t.Errorf("%s version_info = %q, want the version it was sent with (SotW: 7)", typeURL, version)
			}
			if updated.Before(before.Add(-time.Second)) || updated.After(time.Now()) {
				t.Errorf("%s last_updated = %v, want between %v and now", typeURL, updated, before)
			}
			if got[typeURL] == nil {
				got[typeURL] = map[string]proto.Message{}
			}
			n := len(got[typeURL])
			for name, sent := range sentByName(xdstest.Resources{typeURL: {m}}, typeURL) {
				got[typeURL][name] = sent
			}
			if len(got[typeURL]) != n+1 {
				t.Errorf("%s listed twice in the dump", typeURL)
			}
		}
		var types []string
		for _, c := range d.GetConfigs() {
			types = append(types, c.GetTypeUrl())
			m, err := c.UnmarshalNew()
			if err != nil {
				t.Fatalf("config %s: %v", c.GetTypeUrl(), err)
			}
			switch m := m.(type) {
			case *adminv3.ListenersConfigDump:
				if m.GetVersionInfo() != "7" {
					t.Errorf("ListenersConfigDump.version_info = %q, want 7", m.GetVersionInfo())
				}
				for _, l := range m.GetDynamicListeners() {
					s := l.GetActiveState()
					add(xdstest.ListenerType, s.GetListener(), s.GetVersionInfo(), s.GetLastUpdated().AsTime())
				}
			case *adminv3.ClustersConfigDump:
				for _, c := range m.GetDynamicActiveClusters() {
					add(xdstest.ClusterType, c.GetCluster(), c.GetVersionInfo(), c.GetLastUpdated().AsTime())
				}
			case *adminv3.RoutesConfigDump:
				for _, r := range m.GetDynamicRouteConfigs() {
					add(xdstest.RouteType, r.GetRouteConfig(), r.GetVersionInfo(), r.GetLastUpdated().AsTime())
				}
			case *adminv3.EndpointsConfigDump:
				for _, e := range m.GetDynamicEndpointConfigs() {
					add(xdstest.EndpointType, e.GetEndpointConfig(), e.GetVersionInfo(), e.GetLastUpdated().AsTime())
				}
			case *adminv3.SecretsConfigDump:
				for _, s := range m.GetDynamicActiveSecrets() {
					add(xdstest.SecretType, s.GetSecret(), s.GetVersionInfo(), s.GetLastUpdated().AsTime())
				}
			default:
				t.Errorf("unexpected config %T in the dump", m)
			}
		}
		if want := "type.googleapis.com/envoy.admin.v3.ClustersConfigDump type.googleapis.com/envoy.admin.v3.EndpointsConfigDump type.googleapis.com/envoy.admin.v3.ListenersConfigDump type.googleapis.com/envoy.admin.v3.RoutesConfigDump type.googleapis.com/envoy.admin.v3.SecretsConfigDump"; strings.Join(types, " ") != want {
			t.Errorf("configs = %v, want %s", types, want)
		}

		// What was sent, with the private key redacted as Envoy does.
		want := map[string]map[string]proto.Message{}
		for typeURL := range res {
			want[typeURL] = sentByName(res, typeURL)
		}
		red := proto.Clone(ss[0]).(*tlsv3.Secret)
		red.GetTlsCertificate().PrivateKey = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: client.Redacted}}
		want[xdstest.SecretType]["default"] = red
		for typeURL, byName := range want {
			if len(got[typeURL]) != len(byName) {
				t.Errorf("%s: dump has %d resources, want %d", typeURL, len(got[typeURL]), len(byName))
			}
			for name, w := range byName {
				if g, ok := got[typeURL][name]; !ok || !proto.Equal(g, w) {
					t.Errorf("%s %q in the dump:\n%v\nwant (as sent):\n%v", typeURL, name, g, w)
				}
			}
		}
	})
}

func TestConfigDumpLocalSecrets(t *testing.T) {
	pki := proxytest.NewPKI(t, "spire root")
	local := &localSecrets{changed: make(chan struct{}, 1)}
	cert := pki.IssueSVID(t, spiffeFrontend)
	local.set(cert, pki.CAPEM)
	h := start(t, client.Delta, func(o *client.Options) { o.LocalSecrets = local })
	h.set("1", mtlsWorld())
	h.waitApply()
	b := mustDump(t, h.c)
	if strings.Contains(string(b), "PRIVATE KEY") {
		t.Errorf("config dump shows the local private key:\n%s", b)
	}
	d := parseDump(t, b)
	var sd adminv3.SecretsConfigDump
	if err := d.GetConfigs()[4].UnmarshalTo(&sd); err != nil {
		t.Fatal(err)
	}
	if n := len(sd.GetDynamicActiveSecrets()); n != 2 {
		t.Fatalf("dump has %d secrets, want the 2 local ones:\n%s", n, b)
	}
	var s tlsv3.Secret
	if err := sd.GetDynamicActiveSecrets()[0].GetSecret().UnmarshalTo(&s); err != nil {
		t.Fatal(err)
	}
	if s.GetName() != "default" || string(s.GetTlsCertificate().GetCertificateChain().GetInlineBytes()) != string(cert.CertificateChain) ||
		s.GetTlsCertificate().GetPrivateKey().GetInlineString() != client.Redacted {
		t.Errorf("local secret in the dump = %v; want default with the SVID chain and a redacted key", &s)
	}
}

func mustDump(t *testing.T, c *client.Client) []byte {
	t.Helper()
	b, err := c.ConfigDump()
	if err != nil {
		t.Fatalf("ConfigDump: %v", err)
	}
	return b
}
