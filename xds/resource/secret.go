package resource

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"

	"google.golang.org/protobuf/proto"

	"github.com/tinymesh/tinymesh/dataplane/config"
	tlsv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/extensions/transport_sockets/tls/v3"
)

// KindSecret and TypeSecret name SDS secrets, delivered over ADS like the
// other resource types (docs/identity.md, "Delivery: SDS").
const (
	KindSecret = "Secret"
	TypeSecret = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
)

// ProxyGeneratedKey is the private_key_provider name of a tls_certificate
// whose key the proxy generated itself for its CSR: the key never travels,
// and the proxy pairs the chain with the key it holds for the leaf's public
// key (a KeyFinder).
const ProxyGeneratedKey = "tinymesh.io/proxy-generated-key"

// KeyFinder holds the private keys this proxy generated. DecodeSecret calls
// PrivateKeyPEM from the xDS client's goroutine; it must be safe for
// concurrent use with whatever adds keys (the identity client), must not
// block, and returns a PEM private key (PKCS#8, SEC 1 or PKCS#1) the caller
// may keep but must not modify.
type KeyFinder interface {
	PrivateKeyPEM(pub crypto.PublicKey) ([]byte, bool)
}

// DecodeSecret validates m, the proto/envoywire mirror of a Secret or
// go-control-plane's, and converts it: a tls_certificate (inline chain and
// key, or a chain whose key the proxy holds, found through keys by the leaf's
// public key; keys may be nil) or a validation_context with a trusted CA.
// Errors are *Error.
func DecodeSecret(m proto.Message, keys KeyFinder) (*config.TLSSecret, error) {
	s, err := FromEnvoy[*tlsv3.Secret](m)
	if err != nil {
		return nil, &Error{Type: KindSecret, Reason: err.Error()}
	}
	p := path{kind: KindSecret, name: s.GetName()}
	if s.GetName() == "" {
		return nil, p.at("name").errorf("must not be empty")
	}
	out := &config.TLSSecret{Name: s.GetName()}
	switch {
	case s.GetTlsCertificate() != nil:
		kp, err := decodeSecretCertificate(p.at("tls_certificate"), s.GetTlsCertificate(), keys)
		if err != nil {
			return nil, err
		}
		out.Certificate = kp
	case s.GetValidationContext() != nil:
		vp := p.at("validation_context")
		vc := s.GetValidationContext()
		if err := rejectUnset(vp, vc, "trusted_ca"); err != nil {
			return nil, err
		}
		ca, err := decodeTrustedCA(vp.at("trusted_ca"), vc.GetTrustedCa())
		if err != nil {
			return nil, err
		}
		if ca == nil {
			return nil, vp.at("trusted_ca").errorf("must be set")
		}
		out.TrustedCA = ca
	case s.GetSessionTicketKeys() != nil:
		return nil, p.at("session_ticket_keys").errorf("not supported (only tls_certificate and validation_context secrets)")
	case s.GetGenericSecret() != nil:
		return nil, p.at("generic_secret").errorf("not supported (only tls_certificate and validation_context secrets)")
	default:
		return nil, p.errorf("one of tls_certificate or validation_context must be set")
	}
	return out, nil
}

// decodeSecretCertificate is decodeTLSCertificate plus private_key_provider.
func decodeSecretCertificate(p path, c *tlsv3.TlsCertificate, keys KeyFinder) (*config.CertificateKeyPair, error) {
	pkp := c.GetPrivateKeyProvider()
	if pkp == nil {
		return decodeTLSCertificate(p, c)
	}
	if err := rejectUnset(p, c, "certificate_chain", "private_key_provider"); err != nil {
		if e, ok := err.(*Error); ok && lastField(e.Field) == "private_key" {
			e.Reason = "cannot be combined with private_key_provider"
		}
		return nil, err
	}
	pp := p.at("private_key_provider")
	if err := rejectUnset(pp, pkp, "provider_name"); err != nil {
		return nil, err
	}
	if n := pkp.GetProviderName(); n != ProxyGeneratedKey {
		return nil, pp.at("provider_name").errorf("unsupported private key provider %q (only %q)", n, ProxyGeneratedKey)
	}
	chain, err := dataSource(p.at("certificate_chain"), c.GetCertificateChain())
	if err != nil {
		return nil, err
	}
	leaf, err := leafCertificate(chain)
	if err != nil {
		return nil, p.at("certificate_chain").errorf("%v", err)
	}
	var key []byte
	found := false
	if keys != nil {
		key, found = keys.PrivateKeyPEM(leaf.PublicKey)
	}
	if !found {
		return nil, pp.errorf("this proxy holds no private key for the certificate's public key")
	}
	if _, err := tls.X509KeyPair(chain, key); err != nil {
		return nil, pp.errorf("the key this proxy holds does not fit the certificate: %v", err)
	}
	return &config.CertificateKeyPair{CertificateChain: chain, PrivateKey: key}, nil
}

// leafCertificate parses the first certificate of a PEM chain.
func leafCertificate(chain []byte) (*x509.Certificate, error) {
	for rest := chain; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errNoCertificate
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

var errNoCertificate = errors.New("no PEM certificate found")
