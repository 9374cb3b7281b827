package resource

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/tinymesh/tinymesh/dataplane/config"
	corev3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/core/v3"
	tlsv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/type/matcher/v3"
)

// Transport socket names and typed_config type URLs we understand.
const (
	transportSocketTLS       = "envoy.transport_sockets.tls"
	transportSocketRawBuffer = "envoy.transport_sockets.raw_buffer"
	typeDownstreamTLS        = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
	typeUpstreamTLS          = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
	typeRawBuffer            = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
)

// defaultHTTPALPN is what an HTTP listener offers when alpn_protocols is empty,
// so that TLS clients can choose HTTP/2 (Envoy leaves ALPN empty; the mesh wants
// h2 over TLS without every control plane having to say so).
var defaultHTTPALPN = []string{"h2", "http/1.1"}

// unsupportedReasons explains why well-known fields are refused; any other
// populated field we do not handle is refused as "not supported".
var unsupportedReasons = map[protoreflect.Name]string{
	"session_ticket_keys_sds_secret_config":            "session ticket keys over SDS are not supported",
	"tls_certificate_provider_instance":                "certificate provider instances are not supported",
	"tls_certificate_certificate_provider":             "certificate providers are not supported",
	"tls_certificate_certificate_provider_instance":    "certificate provider instances are not supported",
	"validation_context_certificate_provider":          "certificate providers are not supported",
	"validation_context_certificate_provider_instance": "certificate provider instances are not supported",
	"ca_certificate_provider_instance":                 "certificate provider instances are not supported",
	"custom_validator_config":                          "custom certificate validators are not supported",
	"custom_tls_certificate_selector":                  "custom certificate selectors are not supported",
	"custom_handshaker":                                "custom handshakers are not supported",
	"session_ticket_keys":                              "configured session ticket keys are not supported",
	"ocsp_staple_policy":                               "OCSP stapling is not supported",
	"ocsp_staple":                                      "OCSP stapling is not supported",
	"environment_variable":                             "only filename, inline_bytes and inline_string are supported",
	"private_key_provider":                             "private key providers are only supported in SDS Secrets",
	"initial_fetch_timeout":                            "not supported for SDS (a TLS listener or cluster waits for its secrets)",
	"trust_chain_verification":                         "only VERIFY_TRUST_CHAIN is supported",
	"allow_expired_certificate":                        "expired certificates are never accepted",
	"cipher_suites":                                    "cipher suite selection is not supported (Go's defaults are used)",
	"ecdh_curves":                                      "curve selection is not supported (Go's defaults are used)",
	"signature_algorithms":                             "signature algorithm selection is not supported",
	"require_sni":                                      "requiring SNI is not supported",
	"auto_host_sni":                                    "not supported (set sni)",
	"auto_sni_san_validation":                          "not supported (set match_typed_subject_alt_names)",
	"allow_renegotiation":                              "renegotiation is not supported",
	"watched_directory":                                "certificate rotation by watched directory is not supported",
}

// rejectUnset returns an error naming the lowest-numbered field of m that is
// populated and not listed in ok, or nil. This keeps NACKs precise for every
// field of the TLS messages, including ones added to the protos later.
func rejectUnset(p path, m proto.Message, ok ...protoreflect.Name) error {
	var bad []protoreflect.FieldDescriptor
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !slices.Contains(ok, fd.Name()) {
			bad = append(bad, fd)
		}
		return true
	})
	if len(bad) == 0 {
		return nil
	}
	sort.Slice(bad, func(i, j int) bool { return bad[i].Number() < bad[j].Number() })
	name := bad[0].Name()
	reason, found := unsupportedReasons[name]
	if !found {
		reason = "not supported"
	}
	return p.at(string(name)).errorf("%s", reason)
}

// transportSocketConfig returns the typed_config of a TLS transport socket, or
// nil for none or a raw_buffer socket (plain TCP).
func transportSocketConfig(p path, ts *corev3.TransportSocket, wantType string) (*anypb.Any, error) {
	if ts == nil {
		return nil, nil
	}
	tc := ts.GetTypedConfig()
	if tc == nil {
		switch ts.GetName() {
		case transportSocketRawBuffer:
			return nil, nil
		case transportSocketTLS:
			return nil, p.at("typed_config").errorf("must be set for %s", transportSocketTLS)
		}
		return nil, p.at("name").errorf("unsupported transport socket %q", ts.GetName())
	}
	switch tc.GetTypeUrl() {
	case typeRawBuffer:
		return nil, nil
	case wantType:
		return tc, nil
	}
	return nil, p.at("typed_config").errorf("unsupported transport socket %s (want %s)", tc.GetTypeUrl(), wantType)
}

// decodeDownstreamTLS decodes a filter chain's transport_socket (p names it).
// http says the chain runs an HTTP connection manager (ALPN default).
func decodeDownstreamTLS(p path, ts *corev3.TransportSocket, http bool) (*config.DownstreamTLS, error) {
	a, err := transportSocketConfig(p, ts, typeDownstreamTLS)
	if a == nil || err != nil {
		return nil, err
	}
	tp := p.at("typed_config")
	var d tlsv3.DownstreamTlsContext
	if err := Unpack(a, &d); err != nil {
		return nil, tp.errorf("%v", err)
	}
	if err := rejectUnset(tp, &d, "common_tls_context", "require_client_certificate", "require_sni",
		"disable_stateless_session_resumption", "disable_stateful_session_resumption"); err != nil {
		return nil, err
	}
	// Explicit false is harmless; only true asks for something we cannot do.
	if d.GetRequireSni().GetValue() {
		return nil, tp.at("require_sni").errorf("%s", unsupportedReasons["require_sni"])
	}
	out := &config.DownstreamTLS{
		RequireClientCertificate: d.GetRequireClientCertificate().GetValue(),
		// Go's server keeps no session cache, so disabling stateful
		// resumption needs nothing.
		SessionTicketsDisabled: d.GetDisableStatelessSessionResumption(),
	}
	cp := tp.at("common_tls_context")
	c := d.GetCommonTlsContext()
	if c == nil {
		return nil, cp.errorf("must be set")
	}
	if err := rejectUnset(cp, c, commonFields...); err != nil {
		return nil, err
	}
	if out.MinVersion, out.MaxVersion, err = decodeTLSParams(cp.at("tls_params"), c.GetTlsParams()); err != nil {
		return nil, err
	}
	certs, certSecret, err := decodeCertificates(cp, c)
	if err != nil {
		return nil, err
	}
	if len(certs) == 0 && certSecret == "" {
		return nil, cp.at("tls_certificates").errorf("at least one certificate (or one tls_certificate_sds_secret_configs) is required")
	}
	out.Certificates, out.CertificateSecret = certs, certSecret
	if out.ALPN, err = decodeALPN(cp.at("alpn_protocols"), c.GetAlpnProtocols()); err != nil {
		return nil, err
	}
	if len(out.ALPN) == 0 && http {
		out.ALPN = slices.Clone(defaultHTTPALPN)
	}
	v, err := decodeValidation(cp, c)
	if err != nil {
		return nil, err
	}
	out.TrustedCA, out.MatchSANs, out.ValidationSecret = v.trustedCA, v.sans, v.secret
	if out.RequireClientCertificate && len(out.TrustedCA) == 0 && out.ValidationSecret == "" {
		return nil, tp.at("require_client_certificate").errorf("needs common_tls_context.validation_context.trusted_ca (or an SDS validation context) to verify client certificates")
	}
	return out, nil
}

// decodeUpstreamTLS decodes a cluster's transport_socket (p names it) for a
// cluster speaking speaks.
func decodeUpstreamTLS(p path, ts *corev3.TransportSocket, speaks config.Protocol) (*config.UpstreamTLS, error) {
	a, err := transportSocketConfig(p, ts, typeUpstreamTLS)
	if a == nil || err != nil {
		return nil, err
	}
	tp := p.at("typed_config")
	var u tlsv3.UpstreamTlsContext
	if err := Unpack(a, &u); err != nil {
		return nil, tp.errorf("%v", err)
	}
	// max_session_keys is an upper bound on cached sessions; we cache none,
	// which honours any bound.
	if err := rejectUnset(tp, &u, "common_tls_context", "sni", "max_session_keys"); err != nil {
		return nil, err
	}
	out := &config.UpstreamTLS{SNI: u.GetSni()}
	cp := tp.at("common_tls_context")
	c := u.GetCommonTlsContext()
	if c == nil {
		return out, nil // TLS with no verification and no client certificate
	}
	if err := rejectUnset(cp, c, commonFields...); err != nil {
		return nil, err
	}
	if out.MinVersion, out.MaxVersion, err = decodeTLSParams(cp.at("tls_params"), c.GetTlsParams()); err != nil {
		return nil, err
	}
	certs, certSecret, err := decodeCertificates(cp, c)
	if err != nil {
		return nil, err
	}
	if n := len(certs); n > 1 {
		return nil, cp.at("tls_certificates").errorf("at most one client certificate is supported, got %d", n)
	} else if n == 1 {
		out.ClientCertificate = &certs[0]
	}
	out.CertificateSecret = certSecret
	if out.ALPN, err = decodeALPN(cp.at("alpn_protocols"), c.GetAlpnProtocols()); err != nil {
		return nil, err
	}
	if want := speaks.ALPN(); want != "" && len(out.ALPN) > 0 && !slices.Contains(out.ALPN, want) {
		return nil, cp.at("alpn_protocols").errorf("must include %q for a cluster speaking %s", want, speaks)
	}
	v, err := decodeValidation(cp, c)
	if err != nil {
		return nil, err
	}
	out.TrustedCA, out.MatchSANs, out.ValidationSecret = v.trustedCA, v.sans, v.secret
	return out, nil
}

// commonFields are the CommonTlsContext fields listeners and clusters accept.
var commonFields = []protoreflect.Name{"tls_params", "tls_certificates", "tls_certificate_sds_secret_configs",
	"validation_context", "validation_context_sds_secret_config", "combined_validation_context", "alpn_protocols"}

// decodeCertificates returns the inline tls_certificates of c, or the name of
// its one tls_certificate_sds_secret_configs entry; cp names c.
func decodeCertificates(cp path, c *tlsv3.CommonTlsContext) ([]config.CertificateKeyPair, string, error) {
	sds := c.GetTlsCertificateSdsSecretConfigs()
	if len(sds) > 0 && len(c.GetTlsCertificates()) > 0 {
		return nil, "", cp.at("tls_certificate_sds_secret_configs").errorf("cannot be combined with tls_certificates")
	}
	if len(sds) > 1 {
		return nil, "", cp.at("tls_certificate_sds_secret_configs").errorf("exactly one SDS certificate is supported, got %d", len(sds))
	}
	if len(sds) == 1 {
		name, err := decodeSDSRef(cp.idx("tls_certificate_sds_secret_configs", 0), sds[0])
		return nil, name, err
	}
	var out []config.CertificateKeyPair
	for i, tc := range c.GetTlsCertificates() {
		kp, err := decodeTLSCertificate(cp.idx("tls_certificates", i), tc)
		if err != nil {
			return nil, "", err
		}
		out = append(out, *kp)
	}
	return out, "", nil
}

// decodeSDSRef returns the name of the Secret an SdsSecretConfig refers to.
// Only secrets delivered over this ADS stream are supported (sds_config.ads,
// as Istio and docs/identity.md send them).
func decodeSDSRef(p path, s *tlsv3.SdsSecretConfig) (string, error) {
	if err := rejectUnset(p, s, "name", "sds_config"); err != nil {
		return "", err
	}
	if s.GetName() == "" {
		return "", p.at("name").errorf("must not be empty")
	}
	sp := p.at("sds_config")
	cs := s.GetSdsConfig()
	if cs == nil {
		return "", sp.errorf("must be set (secrets come over ADS: sds_config: {ads: {}})")
	}
	if cs.GetAds() == nil {
		return "", sp.errorf("only ads config sources are supported (secrets come over this ADS stream)")
	}
	if err := rejectUnset(sp, cs, "ads", "resource_api_version"); err != nil {
		return "", err
	}
	if v := cs.GetResourceApiVersion(); v != corev3.ApiVersion_AUTO && v != corev3.ApiVersion_V3 {
		return "", sp.at("resource_api_version").errorf("only V3 is supported, got %s", v)
	}
	return s.GetName(), nil
}

// validation is how a TLS context verifies its peer.
type validation struct {
	trustedCA []byte // inline PEM
	secret    string // SDS validation context name
	sans      []config.SANMatcher
}

// decodeValidation decodes the validation_context_type oneof of c: an inline
// validation_context, an SDS validation_context_sds_secret_config, or a
// combined_validation_context of both (SAN matchers inline, the trusted CA
// from SDS).
func decodeValidation(cp path, c *tlsv3.CommonTlsContext) (validation, error) {
	var v validation
	var err error
	switch {
	case c.GetValidationContext() != nil:
		vp := cp.at("validation_context")
		if v, err = decodeValidationContext(vp, c.GetValidationContext(), true); err != nil {
			return v, err
		}
		if len(v.sans) > 0 && len(v.trustedCA) == 0 {
			// As Envoy: matching SANs of an unverified certificate proves nothing.
			return v, vp.at("trusted_ca").errorf("must be set when subject alt names are matched")
		}
	case c.GetValidationContextSdsSecretConfig() != nil:
		v.secret, err = decodeSDSRef(cp.at("validation_context_sds_secret_config"), c.GetValidationContextSdsSecretConfig())
	case c.GetCombinedValidationContext() != nil:
		pp := cp.at("combined_validation_context")
		cv := c.GetCombinedValidationContext()
		if err := rejectUnset(pp, cv, "default_validation_context", "validation_context_sds_secret_config"); err != nil {
			return v, err
		}
		if cv.GetValidationContextSdsSecretConfig() == nil {
			return v, pp.at("validation_context_sds_secret_config").errorf("must be set")
		}
		if d := cv.GetDefaultValidationContext(); d != nil {
			if v, err = decodeValidationContext(pp.at("default_validation_context"), d, false); err != nil {
				return v, err
			}
		}
		v.secret, err = decodeSDSRef(pp.at("validation_context_sds_secret_config"), cv.GetValidationContextSdsSecretConfig())
	}
	return v, err
}

// decodeValidationContext decodes an inline CertificateValidationContext (vp
// names it). withCA allows trusted_ca; a combined context's default takes its
// CA from SDS instead.
func decodeValidationContext(vp path, vc *tlsv3.CertificateValidationContext, withCA bool) (validation, error) {
	var v validation
	ok := []protoreflect.Name{"match_typed_subject_alt_names", "match_subject_alt_names"}
	if withCA {
		ok = append(ok, "trusted_ca")
	}
	if err := rejectUnset(vp, vc, ok...); err != nil {
		if e, isErr := err.(*Error); isErr && lastField(e.Field) == "trusted_ca" {
			e.Reason = "not supported with validation_context_sds_secret_config, which supplies the trusted CA"
		}
		return v, err
	}
	var err error
	if v.trustedCA, err = decodeTrustedCA(vp.at("trusted_ca"), vc.GetTrustedCa()); err != nil {
		return v, err
	}
	for i, m := range vc.GetMatchTypedSubjectAltNames() {
		mp := vp.idx("match_typed_subject_alt_names", i)
		var typ config.SANType
		switch m.GetSanType() {
		case tlsv3.SubjectAltNameMatcher_DNS:
			typ = config.SANDNS
		case tlsv3.SubjectAltNameMatcher_URI:
			typ = config.SANURI
		default:
			return v, mp.at("san_type").errorf("unsupported %s (only DNS and URI)", m.GetSanType())
		}
		if m.GetOid() != "" {
			return v, mp.at("oid").errorf("not supported")
		}
		sm, err := decodeSANString(mp.at("matcher"), m.GetMatcher())
		if err != nil {
			return v, err
		}
		sm.Type = typ
		v.sans = append(v.sans, sm)
	}
	for i, m := range vc.GetMatchSubjectAltNames() { //nolint:staticcheck // deprecated but still sent
		sm, err := decodeSANString(vp.idx("match_subject_alt_names", i), m)
		if err != nil {
			return v, err
		}
		sm.Type = config.SANAny
		v.sans = append(v.sans, sm)
	}
	return v, nil
}

// decodeSANString decodes a SAN StringMatcher: exact or prefix, case-sensitive.
func decodeSANString(p path, m *matcherv3.StringMatcher) (config.SANMatcher, error) {
	var out config.SANMatcher
	if m == nil {
		return out, p.errorf("must be set")
	}
	if m.GetIgnoreCase() {
		return out, p.at("ignore_case").errorf("not supported")
	}
	switch mp := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		if mp.Exact == "" {
			return out, p.at("exact").errorf("must not be empty")
		}
		out.Exact = mp.Exact
	case *matcherv3.StringMatcher_Prefix:
		if mp.Prefix == "" {
			return out, p.at("prefix").errorf("must not be empty")
		}
		out.Prefix = mp.Prefix
	default:
		return out, p.errorf("only exact and prefix matching are supported")
	}
	return out, nil
}

func decodeTLSParams(p path, tp *tlsv3.TlsParameters) (lo, hi config.TLSVersion, err error) {
	if tp == nil {
		return config.TLSAuto, config.TLSAuto, nil
	}
	if err := rejectUnset(p, tp, "tls_minimum_protocol_version", "tls_maximum_protocol_version"); err != nil {
		return 0, 0, err
	}
	versions := map[tlsv3.TlsParameters_TlsProtocol]config.TLSVersion{
		tlsv3.TlsParameters_TLS_AUTO: config.TLSAuto,
		tlsv3.TlsParameters_TLSv1_0:  config.TLS10,
		tlsv3.TlsParameters_TLSv1_1:  config.TLS11,
		tlsv3.TlsParameters_TLSv1_2:  config.TLS12,
		tlsv3.TlsParameters_TLSv1_3:  config.TLS13,
	}
	var ok bool
	if lo, ok = versions[tp.GetTlsMinimumProtocolVersion()]; !ok {
		return 0, 0, p.at("tls_minimum_protocol_version").errorf("unknown version %d", tp.GetTlsMinimumProtocolVersion())
	}
	if hi, ok = versions[tp.GetTlsMaximumProtocolVersion()]; !ok {
		return 0, 0, p.at("tls_maximum_protocol_version").errorf("unknown version %d", tp.GetTlsMaximumProtocolVersion())
	}
	if lo != config.TLSAuto && hi != config.TLSAuto && lo > hi {
		return 0, 0, p.errorf("tls_minimum_protocol_version %s is above tls_maximum_protocol_version %s", lo, hi)
	}
	if lo == config.TLSAuto && hi != config.TLSAuto && hi < config.TLS12 {
		return 0, 0, p.at("tls_maximum_protocol_version").errorf("%s is below the default minimum TLSv1_2; set tls_minimum_protocol_version", hi)
	}
	return lo, hi, nil
}

func decodeALPN(p path, protos []string) ([]string, error) {
	for i, a := range protos {
		// RFC 7301 section 3.1: protocol names are 1 to 255 bytes.
		if a == "" || len(a) > 255 {
			return nil, p.at("[" + strconv.Itoa(i) + "]").errorf("must be 1 to 255 bytes")
		}
	}
	return slices.Clone(protos), nil
}

func decodeTLSCertificate(p path, c *tlsv3.TlsCertificate) (*config.CertificateKeyPair, error) {
	if err := rejectUnset(p, c, "certificate_chain", "private_key"); err != nil {
		return nil, err
	}
	chain, err := dataSource(p.at("certificate_chain"), c.GetCertificateChain())
	if err != nil {
		return nil, err
	}
	key, err := dataSource(p.at("private_key"), c.GetPrivateKey())
	if err != nil {
		return nil, err
	}
	if _, err := tls.X509KeyPair(chain, key); err != nil {
		return nil, p.errorf("certificate_chain and private_key: %v", err)
	}
	return &config.CertificateKeyPair{CertificateChain: chain, PrivateKey: key}, nil
}

// decodeTrustedCA returns the PEM bundle of a trusted_ca, or nil when unset
// (callers decide whether one is needed).
func decodeTrustedCA(p path, ds *corev3.DataSource) ([]byte, error) {
	if ds == nil {
		return nil, nil
	}
	pem, err := dataSource(p, ds)
	if err != nil {
		return nil, err
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return nil, p.errorf("no PEM certificate found")
	}
	return pem, nil
}

// dataSource returns the bytes of a DataSource. A filename is read now, as
// Envoy reads it when the config is loaded, so a missing file is a NACK naming
// the field rather than a failure on the first connection.
func dataSource(p path, ds *corev3.DataSource) ([]byte, error) {
	if ds == nil {
		return nil, p.errorf("must be set")
	}
	if err := rejectUnset(p, ds, "filename", "inline_bytes", "inline_string"); err != nil {
		return nil, err
	}
	var b []byte
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_Filename:
		var err error
		if b, err = readPEMFile(s.Filename); err != nil {
			return nil, p.at("filename").errorf("%v", err)
		}
	case *corev3.DataSource_InlineBytes:
		b = slices.Clone(s.InlineBytes)
	case *corev3.DataSource_InlineString:
		b = []byte(s.InlineString)
	}
	if len(b) == 0 {
		return nil, p.errorf("must not be empty")
	}
	return b, nil
}

func lastField(field string) string {
	for i := len(field) - 1; i >= 0; i-- {
		if field[i] == '.' {
			return field[i+1:]
		}
	}
	return field
}

// maxPEMFile bounds a certificate or key file; real ones are a few KiB.
const maxPEMFile = 1 << 20

// readPEMFile reads a regular file of at most maxPEMFile bytes. Devices, pipes
// and huge files are refused so that a bad filename in config cannot block or
// exhaust the decoder (think /dev/zero or a FIFO).
func readPEMFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", name)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxPEMFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, maxPEMFile)
	}
	return b, nil
}
