package resource_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
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

// testPEM is a CA and a leaf it signed, as PEM.
type testPEM struct {
	ca, cert, key, otherKey []byte
}

func newTestPEM(t testing.TB) testPEM {
	t.Helper()
	gen := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	pemOf := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	keyPEM := func(k *ecdsa.PrivateKey) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pemOf("PRIVATE KEY", der)
	}
	caKey, leafKey := gen(), gen()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "backend"},
		DNSNames: []string{"backend.default.svc.cluster.local"}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return testPEM{ca: pemOf("CERTIFICATE", caDER), cert: pemOf("CERTIFICATE", leafDER), key: keyPEM(leafKey), otherKey: keyPEM(gen())}
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

func downstream(ctx *tlsv3.DownstreamTlsContext) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: xdstest.MustAny(ctx)}}
}

func upstream(ctx *tlsv3.UpstreamTlsContext) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: xdstest.MustAny(ctx)}}
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func TestDecodeListenerTLS(t *testing.T) {
	p := newTestPEM(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, p.cert, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, p.key, 0o600); err != nil {
		t.Fatal(err)
	}
	pair := config.CertificateKeyPair{CertificateChain: p.cert, PrivateKey: p.key}
	certs := func() []*tlsv3.TlsCertificate {
		return []*tlsv3.TlsCertificate{{CertificateChain: inline(p.cert), PrivateKey: inline(p.key)}}
	}
	httpWith := func(ctx *tlsv3.DownstreamTlsContext) *listenerv3.Listener {
		return withListener(func(l *listenerv3.Listener) { l.FilterChains[0].TransportSocket = downstream(ctx) })
	}

	tests := []struct {
		name string
		in   *listenerv3.Listener
		want *config.DownstreamTLS
	}{
		{"HTTP listener, inline, default ALPN", httpWith(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificates: certs()}}),
			&config.DownstreamTLS{Certificates: []config.CertificateKeyPair{pair}, ALPN: []string{"h2", "http/1.1"}}},
		{"files, inline_string CA, client certs required, versions, explicit ALPN", httpWith(&tlsv3.DownstreamTlsContext{
			RequireClientCertificate: wrapperspb.Bool(true),
			SessionTicketKeysType:    &tlsv3.DownstreamTlsContext_DisableStatelessSessionResumption{DisableStatelessSessionResumption: true},
			CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsParams: &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
				TlsCertificates: []*tlsv3.TlsCertificate{{
					CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: certFile}},
					PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: keyFile}}}},
				AlpnProtocols: []string{"http/1.1"},
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
					TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: string(p.ca)}}}},
			}}),
			&config.DownstreamTLS{Certificates: []config.CertificateKeyPair{pair}, ALPN: []string{"http/1.1"}, MinVersion: config.TLS12, MaxVersion: config.TLS13,
				TrustedCA: p.ca, RequireClientCertificate: true, SessionTicketsDisabled: true}},
		{"TCP listener has no default ALPN", func() *listenerv3.Listener {
			l := xdstest.TCPListener("t", "127.0.0.1", 5432, "c")
			l.FilterChains[0].TransportSocket = downstream(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificates: certs()}})
			return l
		}(), &config.DownstreamTLS{Certificates: []config.CertificateKeyPair{pair}}},
		{"raw_buffer by name is plaintext", withListener(func(l *listenerv3.Listener) {
			l.FilterChains[0].TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.raw_buffer"}
		}), nil},
		{"explicit require_sni false is fine", httpWith(&tlsv3.DownstreamTlsContext{RequireSni: wrapperspb.Bool(false),
			CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificates: certs()}}),
			&config.DownstreamTLS{Certificates: []config.CertificateKeyPair{pair}, ALPN: []string{"h2", "http/1.1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resource.DecodeListener(tt.in)
			if err != nil {
				t.Fatalf("DecodeListener: %v", err)
			}
			if diff := cmp.Diff(tt.want, got.Config.TLS); diff != "" {
				t.Errorf("TLS (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeListenerTLSErrors(t *testing.T) {
	p := newTestPEM(t)
	const q = `Listener "outbound_http": filter_chains[0].transport_socket.typed_config.`
	cert := func() *tlsv3.TlsCertificate {
		return &tlsv3.TlsCertificate{CertificateChain: inline(p.cert), PrivateKey: inline(p.key)}
	}
	with := func(f func(d *tlsv3.DownstreamTlsContext)) *listenerv3.Listener {
		d := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificates: []*tlsv3.TlsCertificate{cert()}}}
		f(d)
		return withListener(func(l *listenerv3.Listener) { l.FilterChains[0].TransportSocket = downstream(d) })
	}
	vc := func(v *tlsv3.CertificateValidationContext) *tlsv3.CommonTlsContext_ValidationContext {
		return &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: v}
	}
	tests := []struct {
		name string
		in   *listenerv3.Listener
		want string
	}{
		{"upstream context on a listener", withListener(func(l *listenerv3.Listener) {
			l.FilterChains[0].TransportSocket = upstream(&tlsv3.UpstreamTlsContext{})
		}), `Listener "outbound_http": filter_chains[0].transport_socket.typed_config: unsupported transport socket type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext (want type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext)`},
		{"tls without typed_config", withListener(func(l *listenerv3.Listener) {
			l.FilterChains[0].TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls"}
		}), `Listener "outbound_http": filter_chains[0].transport_socket.typed_config: must be set for envoy.transport_sockets.tls`},
		{"no common context", with(func(d *tlsv3.DownstreamTlsContext) { d.CommonTlsContext = nil }), q + "common_tls_context: must be set"},
		{"no certificate", with(func(d *tlsv3.DownstreamTlsContext) { d.CommonTlsContext.TlsCertificates = nil }),
			q + "common_tls_context.tls_certificates: at least one certificate (or one tls_certificate_sds_secret_configs) is required"},
		{"SDS certificate", with(func(d *tlsv3.DownstreamTlsContext) {
			d.CommonTlsContext.TlsCertificates = nil
			d.CommonTlsContext.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{{Name: "default"}}
		}), q + "common_tls_context.tls_certificate_sds_secret_configs[0].sds_config: must be set (secrets come over ADS: sds_config: {ads: {}})"},
		{"certificate provider instance", with(func(d *tlsv3.DownstreamTlsContext) {
			d.CommonTlsContext.TlsCertificateProviderInstance = &tlsv3.CertificateProviderPluginInstance{InstanceName: "x"}
		}), q + "common_tls_context.tls_certificate_provider_instance: certificate provider instances are not supported"},
		{"SDS validation context", with(func(d *tlsv3.DownstreamTlsContext) {
			d.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ca"}}
		}), q + "common_tls_context.validation_context_sds_secret_config.sds_config: must be set (secrets come over ADS: sds_config: {ads: {}})"},
		{"combined validation context", with(func(d *tlsv3.DownstreamTlsContext) {
			d.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{}}
		}), q + "common_tls_context.combined_validation_context.validation_context_sds_secret_config: must be set"},
		{"custom validator", with(func(d *tlsv3.DownstreamTlsContext) {
			d.CommonTlsContext.ValidationContextType = vc(&tlsv3.CertificateValidationContext{TrustedCa: inline(p.ca),
				CustomValidatorConfig: &corev3.TypedExtensionConfig{Name: "envoy.tls.cert_validator.spiffe"}})
		}), q + "common_tls_context.validation_context.custom_validator_config: custom certificate validators are not supported"},
		{"session ticket keys", with(func(d *tlsv3.DownstreamTlsContext) {
			d.SessionTicketKeysType = &tlsv3.DownstreamTlsContext_SessionTicketKeys{SessionTicketKeys: &tlsv3.TlsSessionTicketKeys{}}
		}), q + "session_ticket_keys: configured session ticket keys are not supported"},
		{"session timeout", with(func(d *tlsv3.DownstreamTlsContext) { d.SessionTimeout = durationpb.New(time.Minute) }),
			q + "session_timeout: not supported"},
		{"ocsp", with(func(d *tlsv3.DownstreamTlsContext) { d.OcspStaplePolicy = tlsv3.DownstreamTlsContext_MUST_STAPLE }),
			q + "ocsp_staple_policy: OCSP stapling is not supported"},
		{"require sni", with(func(d *tlsv3.DownstreamTlsContext) { d.RequireSni = wrapperspb.Bool(true) }),
			q + "require_sni: requiring SNI is not supported"},
		{"client certs without CA", with(func(d *tlsv3.DownstreamTlsContext) { d.RequireClientCertificate = wrapperspb.Bool(true) }),
			q + "require_client_certificate: needs common_tls_context.validation_context.trusted_ca (or an SDS validation context) to verify client certificates"},
		{"cipher suites", with(func(d *tlsv3.DownstreamTlsContext) {
			d.CommonTlsContext.TlsParams = &tlsv3.TlsParameters{CipherSuites: []string{"ECDHE-RSA-AES128-GCM-SHA256"}}
		}), q + "common_tls_context.tls_params.cipher_suites: cipher suite selection is not supported (Go's defaults are used)"},
		{"min above max", with(func(d *tlsv3.DownstreamTlsContext) {
			d.CommonTlsContext.TlsParams = &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_2}
		}), q + "common_tls_context.tls_params: tls_minimum_protocol_version TLSv1_3 is above tls_maximum_protocol_version TLSv1_2"},
		{"max below default min", with(func(d *tlsv3.DownstreamTlsContext) {
			d.CommonTlsContext.TlsParams = &tlsv3.TlsParameters{TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_1}
		}), q + "common_tls_context.tls_params.tls_maximum_protocol_version: TLSv1_1 is below the default minimum TLSv1_2; set tls_minimum_protocol_version"},
		{"empty ALPN entry", with(func(d *tlsv3.DownstreamTlsContext) { d.CommonTlsContext.AlpnProtocols = []string{"h2", ""} }),
			q + "common_tls_context.alpn_protocols[1]: must be 1 to 255 bytes"},
		{"key does not match", with(func(d *tlsv3.DownstreamTlsContext) {
			d.CommonTlsContext.TlsCertificates[0].PrivateKey = inline(p.otherKey)
		}), q + "common_tls_context.tls_certificates[0]: certificate_chain and private_key: tls: private key does not match public key"},
		{"missing file", with(func(d *tlsv3.DownstreamTlsContext) {
			d.CommonTlsContext.TlsCertificates[0].CertificateChain = &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/nonexistent/cert.pem"}}
		}), q + "common_tls_context.tls_certificates[0].certificate_chain.filename: open /nonexistent/cert.pem: no such file or directory"},
		{"device file", with(func(d *tlsv3.DownstreamTlsContext) {
			d.CommonTlsContext.TlsCertificates[0].CertificateChain = &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/dev/zero"}}
		}), q + "common_tls_context.tls_certificates[0].certificate_chain.filename: /dev/zero: not a regular file"},
		{"environment variable", with(func(d *tlsv3.DownstreamTlsContext) {
			d.CommonTlsContext.TlsCertificates[0].PrivateKey = &corev3.DataSource{Specifier: &corev3.DataSource_EnvironmentVariable{EnvironmentVariable: "KEY"}}
		}), q + "common_tls_context.tls_certificates[0].private_key.environment_variable: only filename, inline_bytes and inline_string are supported"},
		{"missing private key", with(func(d *tlsv3.DownstreamTlsContext) { d.CommonTlsContext.TlsCertificates[0].PrivateKey = nil }),
			q + "common_tls_context.tls_certificates[0].private_key: must be set"},
		{"private key provider", with(func(d *tlsv3.DownstreamTlsContext) {
			d.CommonTlsContext.TlsCertificates[0].PrivateKeyProvider = &tlsv3.PrivateKeyProvider{ProviderName: "cryptomb"}
		}), q + "common_tls_context.tls_certificates[0].private_key_provider: private key providers are only supported in SDS Secrets"},
		{"trusted CA not PEM", with(func(d *tlsv3.DownstreamTlsContext) {
			d.CommonTlsContext.ValidationContextType = vc(&tlsv3.CertificateValidationContext{TrustedCa: inline([]byte("junk"))})
		}), q + "common_tls_context.validation_context.trusted_ca: no PEM certificate found"},
		{"key log", with(func(d *tlsv3.DownstreamTlsContext) { d.CommonTlsContext.KeyLog = &tlsv3.TlsKeyLog{Path: "/tmp/keys"} }),
			q + "common_tls_context.key_log: not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkDecodeError(t, "DecodeListener", resource.DecodeListener, tt.in, tt.want)
		})
	}
}

func TestDecodeClusterTLS(t *testing.T) {
	p := newTestPEM(t)
	pair := &config.CertificateKeyPair{CertificateChain: p.cert, PrivateKey: p.key}
	with := func(base *clusterv3.Cluster, ctx *tlsv3.UpstreamTlsContext) *clusterv3.Cluster {
		base.TransportSocket = upstream(ctx)
		return base
	}
	tests := []struct {
		name string
		in   *clusterv3.Cluster
		want *config.UpstreamTLS
	}{
		{"h2 cluster, SNI, typed and deprecated SANs, client cert, versions", with(xdstest.EDSCluster("c"), &tlsv3.UpstreamTlsContext{
			Sni:            "backend.default.svc.cluster.local",
			MaxSessionKeys: wrapperspb.UInt32(0),
			CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsParams:       &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
				TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: inline(p.cert), PrivateKey: inline(p.key)}},
				AlpnProtocols:   []string{"h2"},
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
					TrustedCa: inline(p.ca),
					MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{
						{SanType: tlsv3.SubjectAltNameMatcher_DNS, Matcher: exact("backend.default.svc.cluster.local")},
						{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: exact("spiffe://cluster.local/ns/default/sa/backend")},
					},
					MatchSubjectAltNames: []*matcherv3.StringMatcher{exact("backend")},
				}},
			}}), &config.UpstreamTLS{SNI: "backend.default.svc.cluster.local", ALPN: []string{"h2"}, MinVersion: config.TLS13, TrustedCA: p.ca,
			MatchSANs: []config.SANMatcher{{Type: config.SANDNS, Exact: "backend.default.svc.cluster.local"},
				{Type: config.SANURI, Exact: "spiffe://cluster.local/ns/default/sa/backend"}, {Type: config.SANAny, Exact: "backend"}},
			ClientCertificate: pair}},
		{"HTTP/1 cluster, SNI only (no verification, as Envoy)", with(xdstest.StaticCluster("c", "127.0.0.1:443"), &tlsv3.UpstreamTlsContext{Sni: "example.com"}),
			&config.UpstreamTLS{SNI: "example.com"}},
		{"empty common context", with(xdstest.StaticCluster("c", "127.0.0.1:443"), &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{}}),
			&config.UpstreamTLS{}},
		{"raw_buffer typed config is plaintext", func() *clusterv3.Cluster {
			c := xdstest.StaticCluster("c", "127.0.0.1:80")
			c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.raw_buffer",
				ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: xdstest.MustAny(&rawbufferv3.RawBuffer{})}}
			return c
		}(), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resource.DecodeCluster(tt.in)
			if err != nil {
				t.Fatalf("DecodeCluster: %v", err)
			}
			if diff := cmp.Diff(tt.want, got.Config.TLS); diff != "" {
				t.Errorf("TLS (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeClusterTLSErrors(t *testing.T) {
	p := newTestPEM(t)
	const q = `Cluster "c": transport_socket.typed_config.`
	// with builds an h2 EDS cluster whose UpstreamTlsContext f changes.
	with := func(f func(u *tlsv3.UpstreamTlsContext)) *clusterv3.Cluster {
		u := &tlsv3.UpstreamTlsContext{Sni: "b", CommonTlsContext: &tlsv3.CommonTlsContext{
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: inline(p.ca)}}}}
		f(u)
		c := xdstest.EDSCluster("c")
		c.TransportSocket = upstream(u)
		return c
	}
	vctx := func(u *tlsv3.UpstreamTlsContext) *tlsv3.CertificateValidationContext {
		return u.CommonTlsContext.GetValidationContext()
	}
	tests := []struct {
		name string
		in   *clusterv3.Cluster
		want string
	}{
		{"downstream context on a cluster", func() *clusterv3.Cluster {
			c := xdstest.EDSCluster("c")
			c.TransportSocket = downstream(&tlsv3.DownstreamTlsContext{})
			return c
		}(), `Cluster "c": transport_socket.typed_config: unsupported transport socket type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext (want type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext)`},
		{"transport socket matches", withCluster(func(c *clusterv3.Cluster) {
			c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{{Name: "tls"}}
		}), `Cluster "c": transport_socket_matches: not supported (use transport_socket)`},
		{"ALPN without the cluster's protocol", with(func(u *tlsv3.UpstreamTlsContext) { u.CommonTlsContext.AlpnProtocols = []string{"http/1.1"} }),
			q + `common_tls_context.alpn_protocols: must include "h2" for a cluster speaking h2c`},
		{"auto SNI", with(func(u *tlsv3.UpstreamTlsContext) { u.AutoHostSni = true }), q + "auto_host_sni: not supported (set sni)"},
		{"auto SAN validation", with(func(u *tlsv3.UpstreamTlsContext) { u.AutoSniSanValidation = true }),
			q + "auto_sni_san_validation: not supported (set match_typed_subject_alt_names)"},
		{"renegotiation", with(func(u *tlsv3.UpstreamTlsContext) { u.AllowRenegotiation = true }), q + "allow_renegotiation: renegotiation is not supported"},
		{"two client certificates", with(func(u *tlsv3.UpstreamTlsContext) {
			c := &tlsv3.TlsCertificate{CertificateChain: inline(p.cert), PrivateKey: inline(p.key)}
			u.CommonTlsContext.TlsCertificates = []*tlsv3.TlsCertificate{c, c}
		}), q + "common_tls_context.tls_certificates: at most one client certificate is supported, got 2"},
		{"SDS client certificate", with(func(u *tlsv3.UpstreamTlsContext) {
			u.CommonTlsContext.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{{Name: "default",
				SdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Path{Path: "/etc/sds.yaml"}}}}
		}), q + "common_tls_context.tls_certificate_sds_secret_configs[0].sds_config: only ads config sources are supported (secrets come over this ADS stream)"},
		{"CA provider instance", with(func(u *tlsv3.UpstreamTlsContext) {
			u.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextCertificateProviderInstance{
				ValidationContextCertificateProviderInstance: &tlsv3.CommonTlsContext_CertificateProviderInstance{InstanceName: "x"}}
		}), q + "common_tls_context.validation_context_certificate_provider_instance: certificate provider instances are not supported"},
		{"SAN regex", with(func(u *tlsv3.UpstreamTlsContext) {
			vctx(u).MatchTypedSubjectAltNames = []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_DNS,
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "b.*"}}}}}
		}), q + "common_tls_context.validation_context.match_typed_subject_alt_names[0].matcher: only exact and prefix matching are supported"},
		{"SAN ignore case", with(func(u *tlsv3.UpstreamTlsContext) {
			m := exact("b")
			m.IgnoreCase = true
			vctx(u).MatchSubjectAltNames = []*matcherv3.StringMatcher{m}
		}), q + "common_tls_context.validation_context.match_subject_alt_names[0].ignore_case: not supported"},
		{"SAN email", with(func(u *tlsv3.UpstreamTlsContext) {
			vctx(u).MatchTypedSubjectAltNames = []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_EMAIL, Matcher: exact("a@b")}}
		}), q + "common_tls_context.validation_context.match_typed_subject_alt_names[0].san_type: unsupported EMAIL (only DNS and URI)"},
		{"SANs without CA", with(func(u *tlsv3.UpstreamTlsContext) {
			vctx(u).TrustedCa = nil
			vctx(u).MatchTypedSubjectAltNames = []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_DNS, Matcher: exact("b")}}
		}), q + "common_tls_context.validation_context.trusted_ca: must be set when subject alt names are matched"},
		{"SPKI pinning", with(func(u *tlsv3.UpstreamTlsContext) { vctx(u).VerifyCertificateSpki = []string{"x"} }),
			q + "common_tls_context.validation_context.verify_certificate_spki: not supported"},
		{"accept untrusted", with(func(u *tlsv3.UpstreamTlsContext) {
			vctx(u).TrustChainVerification = tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED
		}), q + "common_tls_context.validation_context.trust_chain_verification: only VERIFY_TRUST_CHAIN is supported"},
		{"CRL", with(func(u *tlsv3.UpstreamTlsContext) { vctx(u).Crl = inline([]byte("x")) }),
			q + "common_tls_context.validation_context.crl: not supported"},
		{"system roots", with(func(u *tlsv3.UpstreamTlsContext) {
			vctx(u).SystemRootCerts = &tlsv3.CertificateValidationContext_SystemRootCerts{}
		}), q + "common_tls_context.validation_context.system_root_certs: not supported"},
		{"custom handshaker", with(func(u *tlsv3.UpstreamTlsContext) {
			u.CommonTlsContext.CustomHandshaker = &corev3.TypedExtensionConfig{Name: "x"}
		}), q + "common_tls_context.custom_handshaker: custom handshakers are not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkDecodeError(t, "DecodeCluster", resource.DecodeCluster, tt.in, tt.want)
		})
	}
}

func TestDecodedPrivateKeysAreRedacted(t *testing.T) {
	p := newTestPEM(t)
	l := withListener(func(l *listenerv3.Listener) {
		l.FilterChains[0].TransportSocket = downstream(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: inline(p.cert), PrivateKey: inline(p.key)}}}})
	})
	got, err := resource.DecodeListener(l)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Config.TLS.Certificates[0].PrivateKey, p.key) {
		t.Fatalf("decoded private key differs from the input")
	}
	// The admin config dump is JSON of the snapshot; logs format values.
	j, err := json.Marshal(got.Config)
	if err != nil {
		t.Fatal(err)
	}
	for what, s := range map[string]string{"JSON": string(j), "%v": fmt.Sprintf("%v", *got.Config.TLS), "%+v": fmt.Sprintf("%+v", got.Config.TLS.Certificates), "%#v": fmt.Sprintf("%#v", got.Config.TLS.Certificates[0])} {
		if strings.Contains(s, "PRIVATE KEY") || !strings.Contains(s, "[redacted]") {
			t.Errorf("%s of the decoded listener = %.300s..., want the key shown as [redacted]", what, s)
		}
	}
}

func FuzzDecodeClusterTLS(f *testing.F) {
	p := newTestPEM(f)
	for _, ctx := range []*tlsv3.UpstreamTlsContext{
		{Sni: "b", CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols:   []string{"h2"},
			TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: inline(p.cert), PrivateKey: inline(p.key)}},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa:                 inline(p.ca),
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_DNS, Matcher: exact("b")}}}}}},
		{},
	} {
		c := xdstest.EDSCluster("c")
		c.TransportSocket = upstream(ctx)
		b, err := proto.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var c clusterv3.Cluster
		if proto.Unmarshal(b, &c) != nil {
			return
		}
		got, err := resource.DecodeCluster(&c)
		if err != nil || got.Config.TLS == nil {
			return
		}
		u := got.Config.TLS
		if len(u.MatchSANs) > 0 && len(u.TrustedCA) == 0 && u.ValidationSecret == "" {
			t.Fatalf("accepted SAN matchers without a trusted CA: %+v", u)
		}
		if want := map[config.Protocol]string{config.ProtocolH2C: "h2", config.ProtocolHTTP1: "http/1.1"}[got.Config.Protocol]; want != "" && len(u.ALPN) > 0 && !slices.Contains(u.ALPN, want) {
			t.Fatalf("accepted ALPN %q for a %s cluster", u.ALPN, got.Config.Protocol)
		}
	})
}
