package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tinymesh/tinymesh/xds/server"
	"github.com/tinymesh/tinymesh/xds/translate"
)

// testCA is a real root and the SVIDs it signs, PEM-encoded as the CA hands them
// to the server.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	td, _ := url.Parse("spiffe://cluster.local")
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs: []*url.URL{td},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// svid issues an X.509-SVID for id and returns its chain as PEM.
func (ca *testCA) svid(t *testing.T, id string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{u},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// secrets decodes a Secret response by name.
func secrets(t *testing.T, r *discoveryv3.DiscoveryResponse) map[string]*tlsv3.Secret {
	t.Helper()
	out := map[string]*tlsv3.Secret{}
	for _, a := range r.Resources {
		s := &tlsv3.Secret{}
		mustUnmarshal(t, a, s)
		out[s.Name] = s
	}
	return out
}

// checkSecrets asserts the content of the default and ROOTCA secrets; a nil
// want leaves that secret out.
func checkSecrets(t *testing.T, got map[string]*tlsv3.Secret, wantChain, wantBundle []byte) {
	t.Helper()
	if wantChain == nil {
		if _, ok := got[translate.SecretCertificate]; ok {
			t.Errorf("default secret served before a certificate was issued")
		}
	} else {
		tc := got[translate.SecretCertificate].GetTlsCertificate()
		if !bytes.Equal(tc.GetCertificateChain().GetInlineBytes(), wantChain) {
			t.Errorf("default certificate_chain:\n%s\nwant\n%s", tc.GetCertificateChain().GetInlineBytes(), wantChain)
		}
		if got, want := tc.GetPrivateKeyProvider().GetProviderName(), translate.PrivateKeyProvider; got != want {
			t.Errorf("default private_key_provider = %q, want %q", got, want)
		}
		if tc.GetPrivateKey() != nil {
			t.Errorf("default carries a private key: %v", tc.GetPrivateKey())
		}
	}
	vc := got[translate.SecretRootCA].GetValidationContext()
	if !bytes.Equal(vc.GetTrustedCa().GetInlineBytes(), wantBundle) {
		t.Errorf("ROOTCA trusted_ca:\n%s\nwant\n%s", vc.GetTrustedCa().GetInlineBytes(), wantBundle)
	}
	if pool := x509.NewCertPool(); !pool.AppendCertsFromPEM(vc.GetTrustedCa().GetInlineBytes()) {
		t.Errorf("ROOTCA trusted_ca holds no PEM certificate")
	}
}

// TestSecretsSotW: a sidecar gets ROOTCA as soon as the server has a bundle and
// default once its certificate is issued, a new bundle is pushed to it, and its
// clusters to meshed Services name the peers' SPIFFE IDs.
func TestSecretsSotW(t *testing.T) {
	s, addr := startServer(t, server.Options{Debounce: 10 * time.Millisecond})
	s.SetModel(model(t, meshYAML))
	ca1 := newTestCA(t, "root-1")
	s.SetTrustBundle(ca1.pem)

	const id = "backend-v1.default~1"
	be := dialADS(t, addr, node(id, backendNode("127.0.0.1:17006")))
	be.subscribe(resource.SecretType, translate.SecretCertificate, translate.SecretRootCA)
	checkSecrets(t, secrets(t, be.next(resource.SecretType, 5*time.Second)), nil, ca1.pem)

	chain := ca1.svid(t, "spiffe://cluster.local/ns/default/sa/backend-v1")
	s.SetCertificate(id, chain)
	checkSecrets(t, secrets(t, be.next(resource.SecretType, 5*time.Second)), chain, ca1.pem)

	// A rotated root: both roots in force, pushed to the node.
	ca2 := newTestCA(t, "root-2")
	bundle := append(append([]byte{}, ca1.pem...), ca2.pem...)
	s.SetTrustBundle(bundle)
	checkSecrets(t, secrets(t, be.next(resource.SecretType, 5*time.Second)), chain, bundle)

	// A certificate issued to another node is not this node's business.
	s.SetCertificate("frontend.default~1", ca2.svid(t, "spiffe://cluster.local/ns/default/sa/frontend"))
	be.none(resource.SecretType, 200*time.Millisecond)

	// The frontend's cluster to backend expects the backend's identity.
	fe := dialADS(t, addr, node("frontend.default~1", frontendNode("")))
	fe.subscribe(resource.ClusterType)
	var sans []string
	for _, a := range fe.next(resource.ClusterType, 5*time.Second).Resources {
		c := &clusterv3.Cluster{}
		mustUnmarshal(t, a, c)
		if c.Name != backendCluster {
			continue
		}
		u := &tlsv3.UpstreamTlsContext{}
		mustUnmarshal(t, c.GetTransportSocket().GetTypedConfig(), u)
		for _, m := range u.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames() {
			sans = append(sans, m.GetSanType().String()+" "+m.GetMatcher().GetExact())
		}
	}
	if diff := cmp.Diff([]string{"URI spiffe://cluster.local/ns/default/sa/backend-v1"}, sans); diff != "" {
		t.Errorf("SAN matchers of %s (-want +got):\n%s", backendCluster, diff)
	}
}

// TestSecretsDelta: the incremental variant delivers both secrets and pushes
// only ROOTCA when the bundle changes.
func TestSecretsDelta(t *testing.T) {
	s, addr := startServer(t, server.Options{Debounce: 10 * time.Millisecond})
	s.SetModel(model(t, meshYAML))
	ca1 := newTestCA(t, "root-1")
	const id = "backend-v1.default~delta"
	chain := ca1.svid(t, "spiffe://cluster.local/ns/default/sa/backend-v1")
	s.SetTrustBundle(ca1.pem)
	s.SetCertificate(id, chain) // proxies get their certificate before they connect

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node: node(id, backendNode("127.0.0.1:17007")), TypeUrl: resource.SecretType,
		ResourceNamesSubscribe: []string{translate.SecretCertificate, translate.SecretRootCA},
	}); err != nil {
		t.Fatal(err)
	}
	recv := func() map[string]*tlsv3.Secret {
		t.Helper()
		r, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce}); err != nil {
			t.Fatalf("ACK: %v", err)
		}
		out := map[string]*tlsv3.Secret{}
		for _, res := range r.Resources {
			sec := &tlsv3.Secret{}
			if err := res.GetResource().UnmarshalTo(sec); err != nil {
				t.Fatal(err)
			}
			if sec.Name != res.Name {
				t.Errorf("resource %q holds Secret %q", res.Name, sec.Name)
			}
			out[sec.Name] = sec
		}
		return out
	}
	checkSecrets(t, recv(), chain, ca1.pem)

	ca2 := newTestCA(t, "root-2")
	s.SetTrustBundle(ca2.pem)
	got := recv()
	if _, ok := got[translate.SecretCertificate]; ok || len(got) != 1 {
		t.Errorf("delta after a bundle change carries %d secrets (default: %v), want ROOTCA only", len(got), ok)
	}
	if !bytes.Equal(got[translate.SecretRootCA].GetValidationContext().GetTrustedCa().GetInlineBytes(), ca2.pem) {
		t.Errorf("ROOTCA after the change is not the new bundle")
	}
}

// TestReadyNeedsSecrets: a node with a certificate from us is published only
// after it has ACKed its Secrets as well.
func TestReadyNeedsSecrets(t *testing.T) {
	s, addr := startServer(t, server.Options{Debounce: 10 * time.Millisecond})
	s.SetModel(model(t, meshYAML))
	ca := newTestCA(t, "root")
	s.SetTrustBundle(ca.pem)
	const id = "backend-v1.default~1"
	s.SetCertificate(id, ca.svid(t, "spiffe://cluster.local/ns/default/sa/backend-v1"))

	fe := dialADS(t, addr, node("frontend.default~1", frontendNode("")))
	fe.subscribe(resource.EndpointType, backendCluster)
	fe.next(resource.EndpointType, 5*time.Second)

	be := dialADS(t, addr, node(id, backendNode("127.0.0.1:17006")))
	be.subscribe(resource.ClusterType)
	be.subscribe(resource.ListenerType)
	be.subscribe(resource.EndpointType, backendCluster, "outbound|80||frontend.default.svc.cluster.local")
	be.next(resource.EndpointType, 5*time.Second)
	fe.none(resource.EndpointType, 200*time.Millisecond)

	be.subscribe(resource.SecretType, translate.SecretCertificate, translate.SecretRootCA)
	want := []string{backendCluster + "=127.0.0.1:17006"}
	if diff := cmp.Diff(want, endpoints(t, fe.next(resource.EndpointType, 5*time.Second))); diff != "" {
		t.Fatalf("endpoints after the backend ACKed its secrets (-want +got):\n%s", diff)
	}
}
