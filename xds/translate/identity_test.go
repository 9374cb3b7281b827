package translate_test

import (
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetworkv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/tinymesh/tinymesh/xds/mesh"
	"github.com/tinymesh/tinymesh/xds/translate"
)

// identityMesh: api (http 8080 and grpc 9090) and legacy (tcp) in default, with
// two api versions under different service accounts.
const identityMesh = `apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  selector: {app: api}
  ports:
  - {name: http, port: 8080}
  - {name: grpc, port: 9090, appProtocol: grpc}
---
apiVersion: v1
kind: Service
metadata: {name: legacy}
spec:
  selector: {app: legacy}
  ports: [{name: tcp, port: 5432, appProtocol: tcp}]
---
`

var (
	apiV1 = mesh.Workload{NodeID: "api-v1~1", Name: "api-v1", Namespace: "default", ServiceAccount: "api",
		Labels: map[string]string{"app": "api", "version": "v1"}, InboundAddr: "127.0.0.2:15006", AppAddr: "127.0.0.2:8080", Sidecar: true}
	apiV2 = mesh.Workload{NodeID: "api-v2~1", Name: "api-v2", Namespace: "default", ServiceAccount: "api-canary",
		Labels: map[string]string{"app": "api", "version": "v2"}, InboundAddr: "127.0.0.3:15006", AppAddr: "127.0.0.3:8080", Sidecar: true}
	legacyW = mesh.Workload{NodeID: "legacy~1", Name: "legacy", Namespace: "default",
		Labels: map[string]string{"app": "legacy"}, InboundAddr: "127.0.0.4:15006", AppAddr: "127.0.0.4:5432", Sidecar: true}
	caller = mesh.Workload{NodeID: "caller~1", Name: "caller", Namespace: "default", OutboundHTTPAddr: "127.0.0.1:15001", Sidecar: true}
)

func translateFor(t *testing.T, docs string, node mesh.Workload, opts translate.Options) *translate.Resources {
	t.Helper()
	all := []mesh.Workload{apiV1, apiV2, legacyW, caller}
	r, err := translate.Translate(mustModel(t, identityMesh+docs), all, &node, opts)
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	if err := translate.Consistent(r); err != nil {
		t.Fatalf("Consistent: %v", err)
	}
	return r
}

func inboundListener(t *testing.T, r *translate.Resources) *listenerv3.Listener {
	t.Helper()
	for _, l := range r.Listeners {
		if l.Name == translate.InboundName {
			return l
		}
	}
	t.Fatal("no inbound listener")
	return nil
}

func hcmOf(t *testing.T, fc *listenerv3.FilterChain) *hcmv3.HttpConnectionManager {
	t.Helper()
	h := &hcmv3.HttpConnectionManager{}
	if err := fc.Filters[len(fc.Filters)-1].GetTypedConfig().UnmarshalTo(h); err != nil {
		t.Fatalf("filter chain's last filter is not an HCM: %v", err)
	}
	return h
}

// inboundMode describes the inbound listener: "plaintext", "strict" or
// "permissive", checking each form's shape on the way.
func inboundMode(t *testing.T, l *listenerv3.Listener) string {
	t.Helper()
	fcs := l.FilterChains
	switch {
	case len(fcs) == 1 && fcs[0].TransportSocket == nil && len(l.ListenerFilters) == 0:
		return "plaintext"
	case len(fcs) == 1 && fcs[0].TransportSocket != nil:
		checkDownstreamTLS(t, fcs[0])
		return "strict"
	case len(fcs) == 2:
		if got := l.ListenerFilters; len(got) != 1 || got[0].Name != "envoy.filters.listener.tls_inspector" {
			t.Errorf("permissive listener filters = %v, want tls_inspector", got)
		}
		if fcs[0].GetFilterChainMatch().GetTransportProtocol() != "tls" || fcs[1].GetFilterChainMatch().GetTransportProtocol() != "raw_buffer" {
			t.Errorf("permissive chain matches = %v, %v; want tls, raw_buffer", fcs[0].FilterChainMatch, fcs[1].FilterChainMatch)
		}
		if fcs[1].TransportSocket != nil {
			t.Errorf("raw_buffer chain has a transport socket")
		}
		checkDownstreamTLS(t, fcs[0])
		if len(fcs[0].Filters) != len(fcs[1].Filters) {
			t.Fatalf("permissive chains differ in filters")
		}
		for i := range fcs[0].Filters {
			if !proto.Equal(fcs[0].Filters[i], fcs[1].Filters[i]) {
				t.Errorf("permissive chains differ in filter %d", i)
			}
		}
		return "permissive"
	}
	t.Fatalf("unexpected inbound listener shape: %v", l)
	return ""
}

func checkDownstreamTLS(t *testing.T, fc *listenerv3.FilterChain) {
	t.Helper()
	if fc.TransportSocket.GetName() != "envoy.transport_sockets.tls" {
		t.Errorf("transport socket %q", fc.TransportSocket.GetName())
	}
	d := &tlsv3.DownstreamTlsContext{}
	if err := fc.TransportSocket.GetTypedConfig().UnmarshalTo(d); err != nil {
		t.Fatal(err)
	}
	c := d.GetCommonTlsContext()
	if !d.GetRequireClientCertificate().GetValue() {
		t.Errorf("require_client_certificate not set")
	}
	if p := c.GetTlsParams(); p.GetTlsMinimumProtocolVersion() != tlsv3.TlsParameters_TLSv1_3 || p.GetTlsMaximumProtocolVersion() != tlsv3.TlsParameters_TLSv1_3 {
		t.Errorf("tls_params = %v, want TLS 1.3 only", p)
	}
	if s := c.GetTlsCertificateSdsSecretConfigs(); len(s) != 1 || s[0].Name != "default" || s[0].GetSdsConfig().GetAds() == nil {
		t.Errorf("tls_certificate_sds_secret_configs = %v, want default over ADS", s)
	}
	cv := c.GetCombinedValidationContext()
	sans := cv.GetDefaultValidationContext().GetMatchTypedSubjectAltNames()
	if cv.GetValidationContextSdsSecretConfig().GetName() != "ROOTCA" || len(sans) != 1 ||
		sans[0].GetSanType() != tlsv3.SubjectAltNameMatcher_URI || sans[0].GetMatcher().GetPrefix() != "spiffe://cluster.local/" {
		t.Errorf("combined_validation_context = %v, want ROOTCA and a URI SAN prefix spiffe://cluster.local/", cv)
	}
}

func TestInboundModes(t *testing.T) {
	const root = `apiVersion: mesh.tinymesh.io/v1alpha1
kind: PeerAuthentication
metadata: {name: mesh, namespace: tinymesh-system}
spec: {mtls: {mode: PERMISSIVE}}
---
`
	const ns = `apiVersion: mesh.tinymesh.io/v1alpha1
kind: PeerAuthentication
metadata: {name: ns}
spec: {mtls: {mode: DISABLE}}
---
`
	const v2 = `apiVersion: mesh.tinymesh.io/v1alpha1
kind: PeerAuthentication
metadata: {name: v2}
spec: {selector: {matchLabels: {version: v2}}, mtls: {mode: STRICT}}
---
`
	for _, tc := range []struct {
		name, docs string
		opts       translate.Options
		node       mesh.Workload
		want       string
	}{
		{"default is strict", "", translate.Options{}, apiV1, "strict"},
		{"root namespace", root, translate.Options{}, apiV1, "permissive"},
		{"other root namespace ignores it", root, translate.Options{RootNamespace: "mesh-root"}, apiV1, "strict"},
		{"namespace over root", root + ns, translate.Options{}, apiV1, "plaintext"},
		{"selector over namespace", root + ns + v2, translate.Options{}, apiV2, "strict"},
		{"selector not matching", root + ns + v2, translate.Options{}, apiV1, "plaintext"},
		{"tcp strict", "", translate.Options{}, legacyW, "strict"},
		{"tcp permissive", root, translate.Options{}, legacyW, "permissive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := translateFor(t, tc.docs, tc.node, tc.opts)
			l := inboundListener(t, r)
			if got := inboundMode(t, l); got != tc.want {
				t.Fatalf("inbound mode = %s, want %s", got, tc.want)
			}
			fc := l.FilterChains[0]
			d := &tlsv3.DownstreamTlsContext{}
			if fc.TransportSocket != nil {
				if err := fc.TransportSocket.GetTypedConfig().UnmarshalTo(d); err != nil {
					t.Fatal(err)
				}
			}
			alpn := d.GetCommonTlsContext().GetAlpnProtocols()
			if tc.node.NodeID == legacyW.NodeID {
				if len(alpn) != 0 {
					t.Errorf("tcp inbound ALPN = %v, want none", alpn)
				}
				return
			}
			if tc.want != "plaintext" && !slices.Equal(alpn, []string{"h2", "http/1.1"}) {
				t.Errorf("http inbound ALPN = %v, want [h2 http/1.1]", alpn)
			}
			h := hcmOf(t, fc)
			wantFwd := hcmv3.HttpConnectionManager_SANITIZE_SET
			if tc.want == "plaintext" {
				wantFwd = hcmv3.HttpConnectionManager_SANITIZE
			}
			if h.ForwardClientCertDetails != wantFwd || (tc.want != "plaintext") != h.GetSetCurrentClientCertDetails().GetUri() {
				t.Errorf("XFCC: forward %v, set %v; want %v, uri %v", h.ForwardClientCertDetails, h.SetCurrentClientCertDetails, wantFwd, tc.want != "plaintext")
			}
		})
	}
}

// upstreamOf returns a cluster's UpstreamTlsContext, or nil for plaintext.
func upstreamOf(t *testing.T, r *translate.Resources, name string) *tlsv3.UpstreamTlsContext {
	t.Helper()
	for _, c := range r.Clusters {
		if c.Name != name {
			continue
		}
		if c.TransportSocket == nil {
			return nil
		}
		u := &tlsv3.UpstreamTlsContext{}
		if err := c.TransportSocket.GetTypedConfig().UnmarshalTo(u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	t.Fatalf("no cluster %s", name)
	return nil
}

func sansOf(u *tlsv3.UpstreamTlsContext) []string {
	var out []string
	for _, m := range u.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames() {
		out = append(out, m.GetMatcher().GetExact())
	}
	return out
}

func TestOutboundTLS(t *testing.T) {
	const (
		apiHTTP = "outbound|8080||api.default.svc.cluster.local"
		apiGRPC = "outbound|9090||api.default.svc.cluster.local"
		legacy  = "outbound|5432||legacy.default.svc.cluster.local"
	)
	const v1Plain = `apiVersion: mesh.tinymesh.io/v1alpha1
kind: PeerAuthentication
metadata: {name: v1}
spec: {selector: {matchLabels: {version: v1}}, mtls: {mode: DISABLE}}
---
`
	const allPlain = `apiVersion: mesh.tinymesh.io/v1alpha1
kind: PeerAuthentication
metadata: {name: all}
spec: {mtls: {mode: DISABLE}}
---
`
	sans := []string{"spiffe://cluster.local/ns/default/sa/api", "spiffe://cluster.local/ns/default/sa/api-canary"}

	r := translateFor(t, "", caller, translate.Options{})
	u := upstreamOf(t, r, apiHTTP)
	if u == nil {
		t.Fatal("cluster to a STRICT meshed Service is plaintext")
	}
	if diff := cmp.Diff(sans, sansOf(u)); diff != "" {
		t.Errorf("SANs (-want +got):\n%s", diff)
	}
	if got := u.GetCommonTlsContext().GetAlpnProtocols(); !slices.Equal(got, []string{"h2"}) {
		t.Errorf("HTTP cluster ALPN = %v, want [h2]", got)
	}
	if got := upstreamOf(t, r, apiGRPC).GetCommonTlsContext().GetAlpnProtocols(); !slices.Equal(got, []string{"h2"}) {
		t.Errorf("gRPC cluster ALPN = %v, want [h2]", got)
	}
	if got := upstreamOf(t, r, legacy); got == nil || len(got.GetCommonTlsContext().GetAlpnProtocols()) != 0 {
		t.Errorf("TCP cluster TLS = %v, want TLS without ALPN", got)
	}
	p := u.GetCommonTlsContext().GetTlsParams()
	if p.GetTlsMinimumProtocolVersion() != tlsv3.TlsParameters_TLSv1_3 || p.GetTlsMaximumProtocolVersion() != tlsv3.TlsParameters_TLSv1_3 {
		t.Errorf("tls_params = %v, want TLS 1.3 only", p)
	}

	// One workload DISABLE, the other STRICT: TLS (and both names; the
	// plaintext one cannot be reached, which its owner chose).
	r = translateFor(t, v1Plain, caller, translate.Options{})
	if u := upstreamOf(t, r, apiHTTP); u == nil || !slices.Equal(sansOf(u), sans) {
		t.Errorf("mixed modes: cluster TLS %v, want TLS with %v", u, sans)
	}
	// All DISABLE: plaintext.
	r = translateFor(t, allPlain, caller, translate.Options{})
	if u := upstreamOf(t, r, apiHTTP); u != nil {
		t.Errorf("all DISABLE: cluster has TLS %v", u)
	}

	// Identities come from Registered when given: a workload not yet ready is
	// already trusted.
	m := mustModel(t, identityMesh)
	r, err := translate.Translate(m, []mesh.Workload{apiV1}, &caller, translate.Options{Registered: []mesh.Workload{apiV1, apiV2}})
	if err != nil {
		t.Fatal(err)
	}
	if got := sansOf(upstreamOf(t, r, apiHTTP)); !slices.Equal(got, sans) {
		t.Errorf("SANs with a registered, unready workload = %v, want %v", got, sans)
	}
}

func TestProxylessHasNoTLS(t *testing.T) {
	client := mesh.Workload{NodeID: "grpc~1", Namespace: "default"}
	r := translateFor(t, "", client, translate.Options{TrustBundle: []byte(bundlePEM), Certificate: []byte(chainPEM)})
	for _, c := range r.Clusters {
		if c.TransportSocket != nil {
			t.Errorf("proxyless cluster %s has a transport socket", c.Name)
		}
	}
	if len(r.Secrets) != 0 {
		t.Errorf("proxyless node got %d secrets", len(r.Secrets))
	}
}

func TestSecrets(t *testing.T) {
	for _, tc := range []struct {
		name        string
		opts        translate.Options
		wantSecrets []string
		wantMissing []string
	}{
		{"none yet", translate.Options{}, nil, []string{"ROOTCA", "default"}},
		{"bundle only", translate.Options{TrustBundle: []byte(bundlePEM)}, []string{"ROOTCA"}, []string{"default"}},
		{"both", translate.Options{TrustBundle: []byte(bundlePEM), Certificate: []byte(chainPEM)}, []string{"ROOTCA", "default"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := translateFor(t, "", apiV1, tc.opts) // Consistent even while waiting
			var got []string
			for _, s := range r.Secrets {
				got = append(got, s.Name)
			}
			if diff := cmp.Diff(tc.wantSecrets, got); diff != "" {
				t.Errorf("secrets (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantMissing, translate.MissingSecrets(r)); diff != "" {
				t.Errorf("MissingSecrets (-want +got):\n%s", diff)
			}
		})
	}
}

// rbacByVHost returns, per inbound virtual host, the sorted policy names of its
// RBACPerRoute, and whether the HCM has the RBAC filter before the router.
func rbacByVHost(t *testing.T, r *translate.Resources) (map[string][]string, bool) {
	t.Helper()
	h := hcmOf(t, inboundListener(t, r).FilterChains[0])
	var filters []string
	for _, f := range h.HttpFilters {
		filters = append(filters, f.Name)
	}
	has := slices.Equal(filters, []string{"envoy.filters.http.rbac", "envoy.filters.http.router"})
	if !has && !slices.Equal(filters, []string{"envoy.filters.http.router"}) {
		t.Errorf("http filters = %v", filters)
	}
	out := map[string][]string{}
	for _, vh := range h.GetRouteConfig().GetVirtualHosts() {
		a, ok := vh.TypedPerFilterConfig["envoy.filters.http.rbac"]
		if !ok {
			continue
		}
		pr := &rbachttpv3.RBACPerRoute{}
		if err := a.UnmarshalTo(pr); err != nil {
			t.Fatal(err)
		}
		if pr.GetRbac().GetRules().GetAction() != rbacconfigv3.RBAC_ALLOW {
			t.Errorf("vhost %s: action %v", vh.Name, pr.GetRbac().GetRules().GetAction())
		}
		names := []string{}
		for n := range pr.GetRbac().GetRules().GetPolicies() {
			names = append(names, n)
		}
		slices.Sort(names)
		out[vh.Name] = names
	}
	return out, has
}

func TestHTTPRBAC(t *testing.T) {
	const policy = `apiVersion: mesh.tinymesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-callers}
spec:
  targetRef: {kind: Service, name: api}
  rules:
  - from: {serviceAccounts: [caller, ops/admin]}
    to: {ports: [8080], paths: [/api/, /healthz, /v1*], methods: [GET, POST]}
  - from: {namespaces: [ops]}
`
	r := translateFor(t, "", apiV1, translate.Options{})
	if got, has := rbacByVHost(t, r); has || len(got) != 0 {
		t.Errorf("no policy: RBAC filter %v, per-vhost %v; want none", has, got)
	}

	r = translateFor(t, policy, apiV1, translate.Options{})
	got, has := rbacByVHost(t, r)
	if !has {
		t.Fatal("no RBAC filter before the router")
	}
	want := map[string][]string{
		"api.default.svc.cluster.local:8080": {"default/api-callers[0]", "default/api-callers[1]"},
		"api.default.svc.cluster.local:9090": {"default/api-callers[1]"},
		"inbound|*:8080":                     {"default/api-callers[0]", "default/api-callers[1]"},
		"inbound|*:9090":                     {"default/api-callers[1]"},
		"inbound":                            {"default/api-callers[0]", "default/api-callers[1]"}, // primary: app port 8080
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("policies per virtual host (-want +got):\n%s", diff)
	}

	// The rule's principals and permission.
	h := hcmOf(t, inboundListener(t, r).FilterChains[0])
	pr := &rbachttpv3.RBACPerRoute{}
	if err := h.GetRouteConfig().GetVirtualHosts()[0].TypedPerFilterConfig["envoy.filters.http.rbac"].UnmarshalTo(pr); err != nil {
		t.Fatal(err)
	}
	p := pr.GetRbac().GetRules().GetPolicies()["default/api-callers[0]"]
	var principals []string
	for _, pp := range p.GetPrincipals() {
		principals = append(principals, pp.GetAuthenticated().GetPrincipalName().GetExact())
	}
	if diff := cmp.Diff([]string{"spiffe://cluster.local/ns/default/sa/caller", "spiffe://cluster.local/ns/ops/sa/admin"}, principals); diff != "" {
		t.Errorf("principals (-want +got):\n%s", diff)
	}
	and := p.GetPermissions()[0].GetAndRules().GetRules()
	if len(and) != 2 {
		t.Fatalf("permission and_rules = %v, want paths and methods", p.GetPermissions())
	}
	var paths []string
	for _, pp := range and[0].GetOrRules().GetRules() {
		m := pp.GetUrlPath().GetPath()
		paths = append(paths, "exact:"+m.GetExact()+" prefix:"+m.GetPrefix())
	}
	if diff := cmp.Diff([]string{"exact: prefix:/api/", "exact:/healthz prefix:", "exact: prefix:/v1"}, paths); diff != "" {
		t.Errorf("paths (-want +got):\n%s", diff)
	}
	var methods []string
	for _, pp := range and[1].GetOrRules().GetRules() {
		methods = append(methods, pp.GetHeader().GetName()+"="+pp.GetHeader().GetStringMatch().GetExact())
	}
	if diff := cmp.Diff([]string{":method=GET", ":method=POST"}, methods); diff != "" {
		t.Errorf("methods (-want +got):\n%s", diff)
	}
	ns := pr.GetRbac().GetRules().GetPolicies()["default/api-callers[1]"]
	if got := ns.GetPrincipals()[0].GetAuthenticated().GetPrincipalName().GetPrefix(); got != "spiffe://cluster.local/ns/ops/sa/" {
		t.Errorf("namespace principal prefix = %q", got)
	}
	if !ns.GetPermissions()[0].GetAny() {
		t.Errorf("rule without to: permission %v, want any", ns.GetPermissions())
	}

	// A port that no rule allows denies: the 9090 virtual hosts of a policy
	// with only port 8080 rules have an empty ALLOW policy set.
	only8080 := strings.Replace(policy, "  - from: {namespaces: [ops]}\n", "", 1)
	got, _ = rbacByVHost(t, translateFor(t, only8080, apiV1, translate.Options{}))
	if g, ok := got["api.default.svc.cluster.local:9090"]; !ok || len(g) != 0 {
		t.Errorf("9090 virtual host policies = %v (present %v), want an empty set (deny)", g, ok)
	}
}

func TestTCPRBAC(t *testing.T) {
	const policy = `apiVersion: mesh.tinymesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: legacy-clients}
spec:
  targetRef: {kind: Service, name: legacy}
  rules:
  - from: {spiffeIDs: [spiffe://cluster.local/ns/default/sa/api]}
    to: {ports: [5432]}
  - from: {namespaces: [ops]}
    to: {methods: [GET]}
  - {}
`
	r := translateFor(t, policy, legacyW, translate.Options{})
	fc := inboundListener(t, r).FilterChains[0]
	if len(fc.Filters) != 2 || fc.Filters[0].Name != "envoy.filters.network.rbac" || fc.Filters[1].Name != "envoy.filters.network.tcp_proxy" {
		t.Fatalf("tcp inbound filters = %v, want network rbac then tcp_proxy", fc.Filters)
	}
	rb := &rbacnetworkv3.RBAC{}
	if err := fc.Filters[0].GetTypedConfig().UnmarshalTo(rb); err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range rb.GetRules().GetPolicies() {
		names = append(names, n)
	}
	slices.Sort(names)
	// The methods rule can never match a connection; the empty rule allows all.
	if diff := cmp.Diff([]string{"default/legacy-clients[0]", "default/legacy-clients[2]"}, names); diff != "" {
		t.Errorf("policies (-want +got):\n%s", diff)
	}
	if !rb.GetRules().GetPolicies()["default/legacy-clients[2]"].GetPrincipals()[0].GetAny() {
		t.Errorf("rule without from: principals %v, want any", rb.GetRules().GetPolicies()["default/legacy-clients[2]"].GetPrincipals())
	}
}
