package client_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/proxytest"
	"github.com/tinymesh/tinymesh/xds/client"
	"github.com/tinymesh/tinymesh/xds/resource"
	"github.com/tinymesh/tinymesh/xds/xdstest"
)

const spiffeFrontend = "spiffe://cluster.local/ns/default/sa/frontend"

// keyStore is a resource.KeyFinder over PEM PKCS#8 keys.
type keyStore struct {
	mu   sync.Mutex
	keys [][]byte
}

func (k *keyStore) add(pemKey []byte) { k.mu.Lock(); k.keys = append(k.keys, pemKey); k.mu.Unlock() }

func (k *keyStore) PrivateKeyPEM(pub crypto.PublicKey) ([]byte, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, p := range k.keys {
		b, _ := pem.Decode(p)
		key, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err == nil && key.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
			return p, true
		}
	}
	return nil, false
}

func sds(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: xdstest.ADS()}
}

// mtlsWorld is world() with the listener terminating mTLS with the SDS
// secrets "default" and "ROOTCA", as docs/identity.md has it.
func mtlsWorld() xdstest.Resources {
	res := world()
	l := res[xdstest.ListenerType][0].(*listenerv3.Listener)
	l.FilterChains[0].TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: xdstest.MustAny(&tlsv3.DownstreamTlsContext{
			RequireClientCertificate: wrapperspb.Bool(true),
			CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sds("default")},
				ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext:         &tlsv3.CertificateValidationContext{},
					ValidationContextSdsSecretConfig: sds("ROOTCA"),
				}},
			}})}}
	return res
}

// secrets returns the two Secrets the control plane serves: the chain of
// cert with the proxy-generated key provider, and the trust bundle ca.
func secrets(cert config.CertificateKeyPair, ca []byte) []*tlsv3.Secret {
	return []*tlsv3.Secret{
		{Name: "default", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: cert.CertificateChain}},
			PrivateKeyProvider: &tlsv3.PrivateKeyProvider{ProviderName: resource.ProxyGeneratedKey}}}},
		{Name: "ROOTCA", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: ca}}}}},
	}
}

func withSecrets(res xdstest.Resources, ss []*tlsv3.Secret) xdstest.Resources {
	out := xdstest.Resources{}
	for k, v := range res {
		out[k] = v
	}
	for _, s := range ss {
		out[xdstest.SecretType] = append(out[xdstest.SecretType], s)
	}
	return out
}

// subscribedSecrets returns the Secret names the client asked for on the
// stream starting at request from.
func subscribedSecrets(h *harness, from int) []string {
	var names []string
	for _, r := range h.srv.Requests()[from:] {
		if r.TypeURL != xdstest.SecretType {
			continue
		}
		names = append(names, r.ResourceNames...)
		names = append(names, r.Subscribe...)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

func TestSecretsOverSDS(t *testing.T) {
	pki := proxytest.NewPKI(t, "mesh root")
	forModes(t, func(t *testing.T, mode client.Mode) {
		keys := &keyStore{}
		h := start(t, mode, func(o *client.Options) { o.Keys = keys })
		cert := pki.IssueSVID(t, spiffeFrontend)
		keys.add(cert.PrivateKey)

		// Without its secrets the TLS listener waits, like for a route.
		res := mtlsWorld()
		h.set("1", res)
		h.waitACK(0, xdstest.ListenerType, "1")
		h.waitACK(0, xdstest.EndpointType, "1")
		h.waitACK(0, xdstest.RouteType, "1")
		h.noApply()
		if got, want := subscribedSecrets(h, 0), []string{"ROOTCA", "default"}; !cmp.Equal(got, want) {
			t.Errorf("Secrets subscribed = %q, want %q", got, want)
		}

		h.set("2", withSecrets(res, secrets(cert, pki.CAPEM)))
		got := h.waitApply()
		for len(got.Listeners) == 0 || got.Listeners[0].TLS == nil || len(got.Listeners[0].TLS.Certificates) == 0 {
			got = h.waitApply()
		}
		lt := got.Listeners[0].TLS
		if string(lt.Certificates[0].CertificateChain) != string(cert.CertificateChain) || string(lt.Certificates[0].PrivateKey) != string(cert.PrivateKey) ||
			string(lt.TrustedCA) != string(pki.CAPEM) || !lt.RequireClientCertificate {
			t.Errorf("listener TLS = %+v; want the SDS chain with the proxy's key and ROOTCA", lt)
		}
		if !strings.Contains(got.Version, "sds=2") {
			t.Errorf("snapshot version %q does not name the SDS version", got.Version)
		}
		h.waitACK(0, xdstest.SecretType, "2")

		// Rotation: a new certificate for a new key is a new snapshot.
		next := pki.IssueSVID(t, spiffeFrontend)
		keys.add(next.PrivateKey)
		m := h.srv.Mark()
		h.set("3", withSecrets(res, secrets(next, pki.CAPEM)))
		got = h.waitApply()
		if c := got.Listeners[0].TLS.Certificates[0]; string(c.CertificateChain) != string(next.CertificateChain) {
			t.Errorf("after rotation the listener has chain %.60q..., want the new one", c.CertificateChain)
		}
		h.waitACK(m, xdstest.SecretType, "3")

		// A certificate for a key this proxy never generated is NACKed and
		// the last good one stays.
		stranger := pki.IssueSVID(t, spiffeFrontend)
		m = h.srv.Mark()
		h.set("4", withSecrets(res, secrets(stranger, pki.CAPEM)))
		nack := h.waitNACK(m, xdstest.SecretType)
		if want := `Secret "default": tls_certificate.private_key_provider: this proxy holds no private key for the certificate's public key`; !strings.Contains(nack.ErrorDetail.GetMessage(), want) {
			t.Errorf("NACK detail = %q, want it to contain %q", nack.ErrorDetail.GetMessage(), want)
		}
		h.noApply()
	})
}

func TestMissingSecretLeavesTLSListenerOut(t *testing.T) {
	pki := proxytest.NewPKI(t, "mesh root")
	forModes(t, func(t *testing.T, mode client.Mode) {
		keys := &keyStore{}
		h := start(t, mode, func(o *client.Options) { o.Keys = keys; o.InitialFetchTimeout = 100 * time.Millisecond })
		res := mtlsWorld()
		res[xdstest.ListenerType] = append(res[xdstest.ListenerType], xdstest.TCPListener("tcp", "127.0.0.1", 15002, cName))
		h.set("1", res)
		got := h.waitApply()
		if len(got.Listeners) != 1 || got.Listeners[0].Name != "tcp" {
			t.Fatalf("after the fetch timeout, listeners = %+v; want only the plaintext one (no TLS listener without its certificate)", got.Listeners)
		}
		cert := pki.IssueSVID(t, spiffeFrontend)
		keys.add(cert.PrivateKey)
		h.set("2", withSecrets(res, secrets(cert, pki.CAPEM)))
		for got = h.waitApply(); len(got.Listeners) != 2; got = h.waitApply() {
		}
		if got.Listeners[0].TLS == nil || len(got.Listeners[0].TLS.Certificates) != 1 {
			t.Errorf("listener %q TLS = %+v once the secrets came; want the certificate", got.Listeners[0].Name, got.Listeners[0].TLS)
		}
	})
}

// localSecrets is a client.LocalSecrets.
type localSecrets struct {
	mu      sync.Mutex
	secrets map[string]*config.TLSSecret
	changed chan struct{}
}

func (l *localSecrets) Names() []string { return []string{"default", "ROOTCA"} }

func (l *localSecrets) Secret(name string) (*config.TLSSecret, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.secrets[name]
	return s, ok
}

func (l *localSecrets) Changed() <-chan struct{} { return l.changed }

func (l *localSecrets) set(cert config.CertificateKeyPair, ca []byte) {
	l.mu.Lock()
	l.secrets = map[string]*config.TLSSecret{"default": {Name: "default", Certificate: &cert}, "ROOTCA": {Name: "ROOTCA", TrustedCA: ca}}
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

func TestLocalSecrets(t *testing.T) {
	pki := proxytest.NewPKI(t, "spire root")
	forModes(t, func(t *testing.T, mode client.Mode) {
		local := &localSecrets{changed: make(chan struct{}, 1)}
		first := pki.IssueSVID(t, spiffeFrontend)
		local.set(first, pki.CAPEM)
		h := start(t, mode, func(o *client.Options) { o.LocalSecrets = local })
		res := mtlsWorld()
		h.set("1", res)
		got := h.waitApply()
		if c := got.Listeners[0].TLS.Certificates; len(c) != 1 || string(c[0].CertificateChain) != string(first.CertificateChain) {
			t.Fatalf("listener certificates = %+v, want the local SVID", c)
		}
		h.waitACK(0, xdstest.ListenerType, "1")
		if got := subscribedSecrets(h, 0); len(got) != 0 {
			t.Errorf("subscribed to Secrets %q over SDS, want none: they are local", got)
		}
		// A rotated SVID is applied at once.
		next := pki.IssueSVID(t, spiffeFrontend)
		local.set(next, pki.CAPEM)
		got = h.waitApply()
		if c := got.Listeners[0].TLS.Certificates[0]; string(c.CertificateChain) != string(next.CertificateChain) {
			t.Errorf("after the local change the listener has chain %.60q..., want the new SVID", c.CertificateChain)
		}
	})
}

func TestOnConnect(t *testing.T) {
	var n atomic.Int32
	connected := make(chan struct{}, 10)
	h := start(t, client.Delta, func(o *client.Options) {
		o.OnConnect = func() { n.Add(1); connected <- struct{}{} }
	})
	waitConnect := func(what string) {
		t.Helper()
		select {
		case <-connected:
		case <-time.After(wait):
			t.Fatalf("OnConnect not called %s", what)
		}
	}
	waitConnect("for the first stream")
	h.set("1", world())
	h.waitApply()
	h.srv.Stop()
	if err := h.srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitConnect("after the control plane restarted")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := h.srv.WaitRequest(ctx, 0, func(r xdstest.Request, _ *xdstest.Response) bool { return r.StreamID > 1 || n.Load() >= 2 }); err != nil {
		t.Fatal(err)
	}
	if got := n.Load(); got < 2 {
		t.Errorf("OnConnect called %d times over two streams, want at least 2", got)
	}
}
