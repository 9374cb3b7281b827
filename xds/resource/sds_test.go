package resource_test

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/xds/resource"
	"github.com/tinymesh/tinymesh/xds/xdstest"
)

func sdsRef(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: xdstest.ADS()}
}

// meshCommon is the CommonTlsContext docs/identity.md has: SDS "default" and
// a combined validation context with SDS "ROOTCA" and SAN matchers.
func meshCommon(sans ...string) *tlsv3.CommonTlsContext {
	def := &tlsv3.CertificateValidationContext{}
	for _, s := range sans {
		def.MatchTypedSubjectAltNames = append(def.MatchTypedSubjectAltNames,
			&tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: exact(s)})
	}
	return &tlsv3.CommonTlsContext{
		TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsRef("default")},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         def,
			ValidationContextSdsSecretConfig: sdsRef("ROOTCA"),
		}},
	}
}

func TestDecodeSDSReferences(t *testing.T) {
	const spiffeB = "spiffe://cluster.local/ns/default/sa/backend"
	l := withListener(func(l *listenerv3.Listener) {
		c := meshCommon()
		c.AlpnProtocols = []string{"h2", "http/1.1"}
		l.FilterChains[0].TransportSocket = downstream(&tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true), CommonTlsContext: c})
	})
	gotL, err := resource.DecodeListener(l)
	if err != nil {
		t.Fatalf("DecodeListener: %v", err)
	}
	wantL := &config.DownstreamTLS{ALPN: []string{"h2", "http/1.1"}, MinVersion: config.TLS13, MaxVersion: config.TLS13,
		RequireClientCertificate: true, CertificateSecret: "default", ValidationSecret: "ROOTCA"}
	if diff := cmp.Diff(wantL, gotL.Config.TLS); diff != "" {
		t.Errorf("listener TLS (-want +got):\n%s", diff)
	}

	c := xdstest.EDSCluster("c")
	c.TransportSocket = upstream(&tlsv3.UpstreamTlsContext{Sni: "backend", CommonTlsContext: func() *tlsv3.CommonTlsContext {
		cc := meshCommon(spiffeB)
		cc.AlpnProtocols = []string{"h2"}
		return cc
	}()})
	gotC, err := resource.DecodeCluster(c)
	if err != nil {
		t.Fatalf("DecodeCluster: %v", err)
	}
	wantC := &config.UpstreamTLS{SNI: "backend", ALPN: []string{"h2"}, MinVersion: config.TLS13, MaxVersion: config.TLS13,
		MatchSANs: []config.SANMatcher{{Type: config.SANURI, Exact: spiffeB}}, CertificateSecret: "default", ValidationSecret: "ROOTCA"}
	if diff := cmp.Diff(wantC, gotC.Config.TLS); diff != "" {
		t.Errorf("cluster TLS (-want +got):\n%s", diff)
	}

	// A plain validation_context_sds_secret_config works too.
	c = xdstest.EDSCluster("c")
	c.TransportSocket = upstream(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: sdsRef("ROOTCA")}}})
	if gotC, err = resource.DecodeCluster(c); err != nil || gotC.Config.TLS.ValidationSecret != "ROOTCA" {
		t.Errorf("DecodeCluster(validation_context_sds_secret_config) = %+v, %v; want ValidationSecret ROOTCA", gotC, err)
	}
}

func TestDecodeSDSReferenceErrors(t *testing.T) {
	p := newTestPEM(t)
	const ql = `Listener "outbound_http": filter_chains[0].transport_socket.typed_config.common_tls_context.`
	const qc = `Cluster "c": transport_socket.typed_config.common_tls_context.`
	listenerWith := func(f func(c *tlsv3.CommonTlsContext)) *listenerv3.Listener {
		c := meshCommon()
		f(c)
		return withListener(func(l *listenerv3.Listener) {
			l.FilterChains[0].TransportSocket = downstream(&tlsv3.DownstreamTlsContext{CommonTlsContext: c})
		})
	}
	combined := func(c *tlsv3.CommonTlsContext) *tlsv3.CommonTlsContext_CombinedCertificateValidationContext {
		return c.GetCombinedValidationContext()
	}
	tests := []struct {
		name string
		in   *listenerv3.Listener
		want string
	}{
		{"two SDS certificates", listenerWith(func(c *tlsv3.CommonTlsContext) {
			c.TlsCertificateSdsSecretConfigs = append(c.TlsCertificateSdsSecretConfigs, sdsRef("other"))
		}), ql + "tls_certificate_sds_secret_configs: exactly one SDS certificate is supported, got 2"},
		{"SDS and inline certificates", listenerWith(func(c *tlsv3.CommonTlsContext) {
			c.TlsCertificates = []*tlsv3.TlsCertificate{{CertificateChain: inline(p.cert), PrivateKey: inline(p.key)}}
		}), ql + "tls_certificate_sds_secret_configs: cannot be combined with tls_certificates"},
		{"SDS over a file", listenerWith(func(c *tlsv3.CommonTlsContext) {
			c.TlsCertificateSdsSecretConfigs[0].SdsConfig = &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_PathConfigSource{
				PathConfigSource: &corev3.PathConfigSource{Path: "/etc/sds.yaml"}}}
		}), ql + "tls_certificate_sds_secret_configs[0].sds_config: only ads config sources are supported (secrets come over this ADS stream)"},
		{"SDS fetch timeout", listenerWith(func(c *tlsv3.CommonTlsContext) {
			c.TlsCertificateSdsSecretConfigs[0].SdsConfig.InitialFetchTimeout = durationpb.New(0)
		}), ql + "tls_certificate_sds_secret_configs[0].sds_config.initial_fetch_timeout: not supported for SDS (a TLS listener or cluster waits for its secrets)"},
		{"SDS without a name", listenerWith(func(c *tlsv3.CommonTlsContext) { c.TlsCertificateSdsSecretConfigs[0].Name = "" }),
			ql + "tls_certificate_sds_secret_configs[0].name: must not be empty"},
		{"downstream SAN suffix", listenerWith(func(c *tlsv3.CommonTlsContext) {
			combined(c).DefaultValidationContext.MatchTypedSubjectAltNames = []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_URI,
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "/sa/x"}}}}
		}), ql + "combined_validation_context.default_validation_context.match_typed_subject_alt_names[0].matcher: only exact and prefix matching are supported"},
		{"inline CA beside the SDS one", listenerWith(func(c *tlsv3.CommonTlsContext) {
			combined(c).DefaultValidationContext.TrustedCa = inline(p.ca)
		}), ql + "combined_validation_context.default_validation_context.trusted_ca: not supported with validation_context_sds_secret_config, which supplies the trusted CA"},
		{"combined without SDS", listenerWith(func(c *tlsv3.CommonTlsContext) { combined(c).ValidationContextSdsSecretConfig = nil }),
			ql + "combined_validation_context.validation_context_sds_secret_config: must be set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkDecodeError(t, "DecodeListener", resource.DecodeListener, tt.in, tt.want)
		})
	}

	c := xdstest.EDSCluster("c")
	cc := meshCommon("spiffe://cluster.local/ns/default/sa/backend")
	combined(cc).DefaultValidationContext.MatchTypedSubjectAltNames[0].SanType = tlsv3.SubjectAltNameMatcher_EMAIL
	c.TransportSocket = upstream(&tlsv3.UpstreamTlsContext{CommonTlsContext: cc})
	checkDecodeError(t, "DecodeCluster", resource.DecodeCluster, c,
		qc+"combined_validation_context.default_validation_context.match_typed_subject_alt_names[0].san_type: unsupported EMAIL (only DNS and URI)")
}

// keyRing is a resource.KeyFinder over PEM keys.
type keyRing [][]byte

func (k keyRing) PrivateKeyPEM(pub crypto.PublicKey) ([]byte, bool) {
	for _, pemKey := range k {
		b, _ := pem.Decode(pemKey)
		key, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			continue
		}
		if key.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
			return pemKey, true
		}
	}
	return nil, false
}

func TestDecodeSecret(t *testing.T) {
	p := newTestPEM(t)
	provider := func(name string) *tlsv3.Secret {
		return &tlsv3.Secret{Name: "default", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain:   inline(p.cert),
			PrivateKeyProvider: &tlsv3.PrivateKeyProvider{ProviderName: name}}}}
	}
	pair := &config.CertificateKeyPair{CertificateChain: p.cert, PrivateKey: p.key}
	good := []struct {
		name string
		in   *tlsv3.Secret
		keys resource.KeyFinder
		want *config.TLSSecret
	}{
		{"proxy-generated key", provider(resource.ProxyGeneratedKey), keyRing{p.otherKey, p.key}, &config.TLSSecret{Name: "default", Certificate: pair}},
		{"inline key", &tlsv3.Secret{Name: "default", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(p.cert), PrivateKey: inline(p.key)}}}, nil, &config.TLSSecret{Name: "default", Certificate: pair}},
		{"trust bundle", &tlsv3.Secret{Name: "ROOTCA", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(p.ca)}}}, nil, &config.TLSSecret{Name: "ROOTCA", TrustedCA: p.ca}},
	}
	for _, tt := range good {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resource.DecodeSecret(tt.in, tt.keys)
			if err != nil {
				t.Fatalf("DecodeSecret: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("DecodeSecret (-want +got):\n%s", diff)
			}
		})
	}

	bad := []struct {
		name string
		in   *tlsv3.Secret
		keys resource.KeyFinder
		want string
	}{
		{"no key held", provider(resource.ProxyGeneratedKey), keyRing{p.otherKey},
			`Secret "default": tls_certificate.private_key_provider: this proxy holds no private key for the certificate's public key`},
		{"no key finder", provider(resource.ProxyGeneratedKey), nil,
			`Secret "default": tls_certificate.private_key_provider: this proxy holds no private key for the certificate's public key`},
		{"other provider", provider("cryptomb"), keyRing{p.key},
			`Secret "default": tls_certificate.private_key_provider.provider_name: unsupported private key provider "cryptomb" (only "tinymesh.io/proxy-generated-key")`},
		{"key and provider", func() *tlsv3.Secret {
			s := provider(resource.ProxyGeneratedKey)
			s.GetTlsCertificate().PrivateKey = inline(p.key)
			return s
		}(), keyRing{p.key}, `Secret "default": tls_certificate.private_key: cannot be combined with private_key_provider`},
		{"provider fallback", func() *tlsv3.Secret {
			s := provider(resource.ProxyGeneratedKey)
			s.GetTlsCertificate().PrivateKeyProvider.Fallback = true
			return s
		}(), keyRing{p.key}, `Secret "default": tls_certificate.private_key_provider.fallback: not supported`},
		{"chain not PEM", func() *tlsv3.Secret {
			s := provider(resource.ProxyGeneratedKey)
			s.GetTlsCertificate().CertificateChain = inline([]byte("junk"))
			return s
		}(), keyRing{p.key}, `Secret "default": tls_certificate.certificate_chain: no PEM certificate found`},
		{"generic secret", &tlsv3.Secret{Name: "g", Type: &tlsv3.Secret_GenericSecret{GenericSecret: &tlsv3.GenericSecret{}}}, nil,
			`Secret "g": generic_secret: not supported (only tls_certificate and validation_context secrets)`},
		{"empty", &tlsv3.Secret{Name: "e"}, nil, `Secret "e": one of tls_certificate or validation_context must be set`},
		{"no name", &tlsv3.Secret{}, nil, `Secret "": name: must not be empty`},
		{"validation context with SANs", &tlsv3.Secret{Name: "ROOTCA", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(p.ca), MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: exact("x")}}}}}, nil,
			`Secret "ROOTCA": validation_context.match_typed_subject_alt_names: not supported`},
		{"validation context without CA", &tlsv3.Secret{Name: "ROOTCA", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{}}}, nil,
			`Secret "ROOTCA": validation_context.trusted_ca: must be set`},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			checkDecodeError(t, "DecodeSecret", func(s proto.Message) (*config.TLSSecret, error) { return resource.DecodeSecret(s, tt.keys) }, tt.in, tt.want)
		})
	}
}

// permissive builds the inbound listener of a PERMISSIVE workload: TLS
// inspector, a "tls" chain with the mesh's TLS context and a "raw_buffer" one.
func permissive(f func(l *listenerv3.Listener)) *listenerv3.Listener {
	l := xdstest.HTTPListener("inbound", "127.0.0.1", 15006, "inbound")
	l.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.tls_inspector"}}
	tlsChain := l.FilterChains[0]
	plain := proto.Clone(tlsChain).(*listenerv3.FilterChain)
	tlsChain.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "tls"}
	tlsChain.TransportSocket = downstream(&tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true), CommonTlsContext: meshCommon()})
	plain.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"}
	l.FilterChains = []*listenerv3.FilterChain{plain, tlsChain}
	if f != nil {
		f(l)
	}
	return l
}

func TestDecodePermissiveListener(t *testing.T) {
	got, err := resource.DecodeListener(permissive(nil))
	if err != nil {
		t.Fatalf("DecodeListener: %v", err)
	}
	if !got.Config.TLSOptional || got.Config.TLS == nil || got.Config.TLS.CertificateSecret != "default" {
		t.Errorf("PERMISSIVE listener: TLSOptional = %v, TLS = %+v; want TLS optional with SDS certificate default", got.Config.TLSOptional, got.Config.TLS)
	}
	strict, err := resource.DecodeListener(withListener(func(l *listenerv3.Listener) {
		l.FilterChains[0].TransportSocket = downstream(&tlsv3.DownstreamTlsContext{CommonTlsContext: meshCommon()})
	}))
	if err != nil || strict.Config.TLSOptional {
		t.Errorf("STRICT listener: %+v, %v; want TLS required", strict, err)
	}

	const q = `Listener "inbound": `
	tests := []struct {
		name string
		in   *listenerv3.Listener
		want string
	}{
		{"no TLS inspector", permissive(func(l *listenerv3.Listener) { l.ListenerFilters = nil }),
			q + "listener_filters: filter chains matching transport_protocol need envoy.filters.listener.tls_inspector"},
		{"filters differ", permissive(func(l *listenerv3.Listener) {
			l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(xdstest.HCM("other"))}
		}), q + "filter_chains[0].filters: must equal the filters of filter_chains[1] (PERMISSIVE serves the same filters with and without TLS)"},
		{"TLS on the raw_buffer chain", permissive(func(l *listenerv3.Listener) { l.FilterChains[0].TransportSocket = l.FilterChains[1].TransportSocket }),
			q + "filter_chains[0].transport_socket: the raw_buffer filter chain must not have a TLS transport socket"},
		{"no TLS on the tls chain", permissive(func(l *listenerv3.Listener) { l.FilterChains[1].TransportSocket = nil }),
			q + `filter_chains[1].transport_socket: the filter chain matching transport_protocol "tls" must have a TLS transport socket`},
		{"other transport protocol", permissive(func(l *listenerv3.Listener) { l.FilterChains[0].FilterChainMatch.TransportProtocol = "quic" }),
			q + `filter_chains[0].filter_chain_match.transport_protocol: want "tls" or "raw_buffer", got "quic"`},
		{"two tls chains", permissive(func(l *listenerv3.Listener) { l.FilterChains[0].FilterChainMatch.TransportProtocol = "tls" }),
			q + `filter_chains[1].filter_chain_match.transport_protocol: two filter chains match "tls"`},
		{"match on more than the transport", permissive(func(l *listenerv3.Listener) { l.FilterChains[1].FilterChainMatch.ServerNames = []string{"a"} }),
			q + "filter_chains[1].filter_chain_match: only transport_protocol is supported in filter_chain_match"},
		{"three chains", permissive(func(l *listenerv3.Listener) { l.FilterChains = append(l.FilterChains, l.FilterChains[0]) }),
			q + "filter_chains: exactly one filter chain is supported, got 3"},
		{"two chains without matches", permissive(func(l *listenerv3.Listener) {
			l.FilterChains[0].FilterChainMatch, l.FilterChains[1].FilterChainMatch = nil, nil
		}), q + `filter_chains: two filter chains are supported only as a PERMISSIVE pair matching transport_protocol "tls" and "raw_buffer"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkDecodeError(t, "DecodeListener", resource.DecodeListener, tt.in, tt.want)
		})
	}
}

func TestDecodeXFCC(t *testing.T) {
	got, err := resource.DecodeListener(withHCM(func(h *hcmv3.HttpConnectionManager) {
		h.ForwardClientCertDetails = hcmv3.HttpConnectionManager_SANITIZE_SET
		h.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Uri: true}
	}))
	if err != nil {
		t.Fatalf("DecodeListener: %v", err)
	}
	if h := got.Config.HTTP; h.ForwardClientCert != config.SanitizeSet || !h.SetCurrentClientCertURI {
		t.Errorf("XFCC = %s, uri %v; want SANITIZE_SET, uri true", h.ForwardClientCert, h.SetCurrentClientCertURI)
	}
	if got, _ := resource.DecodeListener(withHCM(func(*hcmv3.HttpConnectionManager) {})); got.Config.HTTP.ForwardClientCert != config.Sanitize {
		t.Errorf("default XFCC handling = %s, want SANITIZE (Envoy's default)", got.Config.HTTP.ForwardClientCert)
	}
	const q = `Listener "outbound_http": filter_chains[0].filters[0].typed_config.`
	checkDecodeError(t, "DecodeListener", resource.DecodeListener, withHCM(func(h *hcmv3.HttpConnectionManager) {
		h.ForwardClientCertDetails = hcmv3.HttpConnectionManager_APPEND_FORWARD
	}), q+"forward_client_cert_details: unsupported APPEND_FORWARD (only SANITIZE and SANITIZE_SET; a mesh sidecar never trusts the XFCC a caller sends)")
	checkDecodeError(t, "DecodeListener", resource.DecodeListener, withHCM(func(h *hcmv3.HttpConnectionManager) {
		h.ForwardClientCertDetails = hcmv3.HttpConnectionManager_SANITIZE_SET
		h.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Uri: true, Cert: true}
	}), q+"set_current_client_cert_details.cert: not supported")
}

func TestAssembleSecrets(t *testing.T) {
	p := newTestPEM(t)
	l, err := resource.DecodeListener(permissive(nil))
	if err != nil {
		t.Fatal(err)
	}
	cl := xdstest.StaticCluster("c", "127.0.0.1:8443")
	cl.TransportSocket = upstream(&tlsv3.UpstreamTlsContext{CommonTlsContext: meshCommon("spiffe://td/ns/a/sa/b")})
	c, err := resource.DecodeCluster(cl)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := resource.DecodeRouteConfig(xdstest.RouteConfig("inbound", "c"))
	if err != nil {
		t.Fatal(err)
	}
	set := func(secrets ...*config.TLSSecret) *resource.Set {
		s := &resource.Set{Listeners: map[string]*resource.Listener{"inbound": l}, Routes: map[string]*config.RouteConfig{"inbound": rc},
			Clusters: map[string]*resource.Cluster{"c": c}, Secrets: map[string]*config.TLSSecret{}}
		for _, sec := range secrets {
			s.Secrets[sec.Name] = sec
		}
		return s
	}
	pair := &config.CertificateKeyPair{CertificateChain: p.cert, PrivateKey: p.key}
	cert := &config.TLSSecret{Name: "default", Certificate: pair}
	roots := &config.TLSSecret{Name: "ROOTCA", TrustedCA: p.ca}

	if got, want := set().SecretNames(), []string{"ROOTCA", "default"}; !cmp.Equal(got, want) {
		t.Errorf("SecretNames = %q, want %q", got, want)
	}
	snap, miss := resource.Assemble(set(cert, roots), "v1", false)
	if snap == nil {
		t.Fatalf("Assemble with every secret: missing %+v", miss)
	}
	lt := snap.Listeners[0].TLS
	if diff := cmp.Diff([]config.CertificateKeyPair{*pair}, lt.Certificates); diff != "" || string(lt.TrustedCA) != string(p.ca) || !snap.Listeners[0].TLSOptional {
		t.Errorf("listener TLS = %+v (certificates -want +got: %s); want the secrets' material, still optional", lt, diff)
	}
	ct := snap.Clusters["c"].TLS
	if ct.ClientCertificate != pair || string(ct.TrustedCA) != string(p.ca) || len(snap.Clusters["c"].Endpoints) != 1 {
		t.Errorf("cluster = %+v, TLS %+v; want the secrets' material and its endpoint", snap.Clusters["c"], ct)
	}
	if l.Config.TLS.Certificates != nil || c.Config.TLS.ClientCertificate != nil {
		t.Errorf("Assemble modified the decoded resources it shares across snapshots")
	}

	// A trust bundle where a certificate is wanted counts as missing.
	if snap, miss = resource.Assemble(set(&config.TLSSecret{Name: "default", TrustedCA: p.ca}, roots), "v2", false); snap != nil || !cmp.Equal(miss.Secrets, []string{"default"}) {
		t.Errorf("Assemble without the certificate = %v, missing %+v; want nil, missing Secrets [default]", snap, miss)
	}
	snap, miss = resource.Assemble(set(roots), "v3", true)
	if snap == nil || !cmp.Equal(miss.Secrets, []string{"default"}) {
		t.Fatalf("Assemble(fill) = %v, missing %+v; want a snapshot, missing Secrets [default]", snap, miss)
	}
	if len(snap.Listeners) != 0 {
		t.Errorf("Assemble(fill) kept listener %+v without its certificate; want it left out", snap.Listeners[0])
	}
	if got := snap.Clusters["c"]; got.TLS != nil || len(got.Endpoints) != 0 {
		t.Errorf("Assemble(fill) cluster without its certificate = %+v; want no endpoints and no TLS", got)
	}
}
