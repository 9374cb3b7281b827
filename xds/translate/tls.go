package translate

import (
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"

	"github.com/tinymesh/tinymesh/xds/mesh"
	"github.com/tinymesh/tinymesh/xds/mesh/v1alpha1"
)

// SDS secret names and the private key provider, fixed by docs/identity.md.
const (
	// SecretCertificate is the node's own certificate chain.
	SecretCertificate = "default"
	// SecretRootCA is the trust bundle.
	SecretRootCA = "ROOTCA"
	// PrivateKeyProvider names the key the proxy generated for its CSR; the key
	// never leaves the proxy, so the Secret carries only this reference.
	PrivateKeyProvider = "tinymesh.io/proxy-generated-key"
)

// ALPN protocols on the sidecar hop: always HTTP/2 for HTTP-family ports, and the
// inbound side also offers HTTP/1.1 for clients that are not sidecars.
var (
	alpnUpstreamHTTP   = []string{"h2"}
	alpnDownstreamHTTP = []string{"h2", "http/1.1"}
)

// sdsRef names an SDS secret delivered over this ADS stream.
func sdsRef(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: adsSource()}
}

// uriSAN matches a URI SAN with m.
func uriSAN(m *matcherv3.StringMatcher) *tlsv3.SubjectAltNameMatcher {
	return &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: m}
}

// commonTLS is the TLS 1.3-only context of the sidecar hop: the node's
// certificate and the trust bundle from SDS, and sans to match the peer's
// certificate against (none: any certificate the bundle verifies).
func commonTLS(alpn []string, sans []*tlsv3.SubjectAltNameMatcher) *tlsv3.CommonTlsContext {
	dv := &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sans}
	return &tlsv3.CommonTlsContext{
		TlsParams: &tlsv3.TlsParameters{
			TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
			TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
		},
		AlpnProtocols:                  slices.Clone(alpn),
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsRef(SecretCertificate)},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         dv,
				ValidationContextSdsSecretConfig: sdsRef(SecretRootCA),
			},
		},
	}
}

func tlsSocket(ctx proto.Message) *corev3.TransportSocket {
	return &corev3.TransportSocket{
		Name:       wellknown.TransportSocketTLS,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)},
	}
}

// upstreamTLS is the transport socket of an outbound cluster to meshed workloads.
func upstreamTLS(http bool, sans []string) *corev3.TransportSocket {
	var alpn []string
	if http {
		alpn = alpnUpstreamHTTP
	}
	var ms []*tlsv3.SubjectAltNameMatcher
	for _, san := range sans {
		ms = append(ms, uriSAN(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: san}}))
	}
	return tlsSocket(&tlsv3.UpstreamTlsContext{CommonTlsContext: commonTLS(alpn, ms)})
}

// downstreamTLS is the transport socket of the inbound listener: client
// certificates are required, verified against the bundle and must carry a
// SPIFFE ID of the trust domain (a URI SAN prefix: a certificate the CA never
// issued, without one, is refused in the handshake); which IDs may call is
// RBAC's business.
func downstreamTLS(http bool, trustDomain string) *corev3.TransportSocket {
	var alpn []string
	if http {
		alpn = alpnDownstreamHTTP
	}
	inDomain := uriSAN(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://" + trustDomain + "/"}})
	return tlsSocket(&tlsv3.DownstreamTlsContext{
		CommonTlsContext:         commonTLS(alpn, []*tlsv3.SubjectAltNameMatcher{inDomain}),
		RequireClientCertificate: wrapperspb.Bool(true),
	})
}

// secureInbound applies the node's mTLS mode to its inbound listener, which has
// one plaintext filter chain: STRICT puts the TLS socket on it; PERMISSIVE adds
// tls_inspector and a second chain with identical filters, the TLS one matching
// transport_protocol "tls" and the plaintext one "raw_buffer"; DISABLE leaves it.
func secureInbound(l *listenerv3.Listener, mode v1alpha1.MTLSMode, http bool, trustDomain string) {
	fc := l.FilterChains[0]
	switch mode {
	case v1alpha1.ModeStrict:
		fc.TransportSocket = downstreamTLS(http, trustDomain)
	case v1alpha1.ModePermissive:
		plain := proto.Clone(fc).(*listenerv3.FilterChain)
		fc.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "tls"}
		fc.TransportSocket = downstreamTLS(http, trustDomain)
		plain.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"}
		l.FilterChains = append(l.FilterChains, plain)
		l.ListenerFilters = []*listenerv3.ListenerFilter{{
			Name:       wellknown.TlsInspector,
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{})},
		}}
	}
}

// destination is what a client needs to know about a Service's workloads.
type destination struct {
	tls  bool     // some selected workload accepts mTLS (not every one is DISABLE)
	sans []string // their SPIFFE IDs, sorted, deduplicated
}

// destination returns whether clients reach svc over mTLS, and whom to expect.
// A Service with EndpointSlices (no selector) is outside the mesh: plaintext.
// With no workload registered yet, the mode is that of a workload carrying just
// the selector's labels.
func (t *translator) destination(svc *corev1.Service) destination {
	if !mesh.Meshed(svc) {
		return destination{}
	}
	key := svc.Namespace + "/" + svc.Name
	if d, ok := t.dests[key]; ok {
		return d
	}
	var d destination
	selected := false
	for i := range t.registered {
		w := &t.registered[i]
		if w.InboundAddr == "" || !mesh.Selects(svc, w) {
			continue
		}
		selected = true
		d.sans = append(d.sans, w.SPIFFEID(t.trustDomain))
		if t.m.MTLSMode(w.Namespace, w.Labels, t.rootNamespace) != v1alpha1.ModeDisable {
			d.tls = true
		}
	}
	if !selected {
		d.tls = t.m.MTLSMode(svc.Namespace, svc.Spec.Selector, t.rootNamespace) != v1alpha1.ModeDisable
	}
	slices.Sort(d.sans)
	d.sans = slices.Compact(d.sans)
	t.dests[key] = d
	return d
}

// secrets adds the node's SDS secrets that the server has: the trust bundle and
// the node's certificate chain (its key stays in the proxy).
func (t *translator) secrets() {
	if len(t.opts.TrustBundle) > 0 {
		t.out.Secrets = append(t.out.Secrets, &tlsv3.Secret{
			Name: SecretRootCA,
			Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: slices.Clone(t.opts.TrustBundle)}},
			}},
		})
	}
	if len(t.opts.Certificate) > 0 {
		t.out.Secrets = append(t.out.Secrets, &tlsv3.Secret{
			Name: SecretCertificate,
			Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
				CertificateChain:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: slices.Clone(t.opts.Certificate)}},
				PrivateKeyProvider: &tlsv3.PrivateKeyProvider{ProviderName: PrivateKeyProvider},
			}},
		})
	}
}
