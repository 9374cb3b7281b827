package workloadapi

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	spiffewl "github.com/spiffe/go-spiffe/v2/workloadapi"
)

// TestConvertRejects checks the updates convert refuses (the Source then keeps
// its previous secrets) and that it names what is wrong.
func TestConvertRejects(t *testing.T) {
	svid, root := testSVID(t, "spiffe://cluster.local/ns/default/sa/a")
	other := spiffeid.RequireTrustDomainFromString("example.org")
	for _, tc := range []struct {
		name string
		c    *spiffewl.X509Context
		want string
	}{
		{"no SVID", &spiffewl.X509Context{Bundles: x509bundle.NewSet()}, "without an X.509-SVID"},
		{"no bundle for the SVID's trust domain", &spiffewl.X509Context{
			SVIDs:   []*x509svid.SVID{svid},
			Bundles: x509bundle.NewSet(x509bundle.FromX509Authorities(other, []*x509.Certificate{root})),
		}, `no X.509 bundle for trust domain "cluster.local"`},
		{"empty bundle", &spiffewl.X509Context{
			SVIDs:   []*x509svid.SVID{svid},
			Bundles: x509bundle.NewSet(x509bundle.New(spiffeid.RequireTrustDomainFromString("cluster.local"))),
		}, `bundle of trust domain "cluster.local" is empty`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := convert(tc.c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("convert = %+v, %v; want an error containing %q", got, err, tc.want)
			}
		})
	}
}

// TestConvertSame checks that an update carrying the same material is seen
// as such (it then signals nobody), and a new SVID is not.
func TestConvertSame(t *testing.T) {
	svid, root := testSVID(t, "spiffe://cluster.local/ns/default/sa/a")
	svid2, _ := testSVID(t, "spiffe://cluster.local/ns/default/sa/a")
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	ctx := func(s *x509svid.SVID) *spiffewl.X509Context {
		return &spiffewl.X509Context{
			SVIDs:   []*x509svid.SVID{s},
			Bundles: x509bundle.NewSet(x509bundle.FromX509Authorities(td, []*x509.Certificate{root})),
		}
	}
	a, err := convert(ctx(svid))
	if err != nil {
		t.Fatal(err)
	}
	b, err := convert(ctx(svid))
	if err != nil {
		t.Fatal(err)
	}
	c, err := convert(ctx(svid2))
	if err != nil {
		t.Fatal(err)
	}
	if !a.same(b) {
		t.Error("two conversions of one update: same = false, want true")
	}
	if a.same(c) {
		t.Error("updates with different SVIDs: same = true, want false")
	}
	if a.id.String() != "spiffe://cluster.local/ns/default/sa/a" || a.cert.Name != "default" || a.rootCA.Name != "ROOTCA" {
		t.Errorf("convert: id %s, names %q %q", a.id, a.cert.Name, a.rootCA.Name)
	}
}

// testSVID makes a root and an SVID for id signed by it.
func testSVID(t *testing.T, id string) (*x509svid.SVID, *x509.Certificate) {
	t.Helper()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	td, _ := url.Parse("spiffe://cluster.local")
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs: []*url.URL{td},
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(rootDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id)
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{u},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, root, &key.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := x509svid.ParseRaw(leafDER, keyDER)
	if err != nil {
		t.Fatal(err)
	}
	return svid, root
}
