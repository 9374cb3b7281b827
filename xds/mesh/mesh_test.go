package mesh_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tinymesh/tinymesh/xds/mesh"
	"github.com/tinymesh/tinymesh/xds/mesh/v1alpha1"
)

func service(name string, selector map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec:       corev1.ServiceSpec{Selector: selector, Ports: ports},
	}
}

func TestEndpoints(t *testing.T) {
	backend := service("backend", map[string]string{"app": "backend"}, corev1.ServicePort{Name: "http", Port: 8080})
	legacy := service("legacy", nil, corev1.ServicePort{Name: "http", Port: 80})
	m := &mesh.Model{
		Services: []*corev1.Service{backend, legacy},
		EndpointSlices: []*discoveryv1.EndpointSlice{{
			ObjectMeta: metav1.ObjectMeta{Name: "legacy-1", Namespace: "default",
				Labels: map[string]string{mesh.ServiceNameLabel: "legacy"}},
			Ports: []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8000)}},
			Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{"10.0.0.2", "10.0.0.1"}},
				{Addresses: []string{"10.0.0.3"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}},
			},
		}},
	}
	ws := []mesh.Workload{
		{NodeID: "b", Name: "backend-v1", Namespace: "default", Labels: map[string]string{"app": "backend", "version": "v1"}, InboundAddr: "127.0.0.2:15006"},
		{NodeID: "a", Name: "backend", Namespace: "default", Labels: map[string]string{"app": "backend"}, InboundAddr: "127.0.0.1:15006"},
		{NodeID: "c", Namespace: "other", Labels: map[string]string{"app": "backend"}, InboundAddr: "127.0.0.3:15006"},
		{NodeID: "d", Namespace: "default", Labels: map[string]string{"app": "frontend"}, InboundAddr: "127.0.0.4:15006"},
		{NodeID: "e", Namespace: "default", Labels: map[string]string{"app": "backend"}}, // no inbound: a client only
	}
	for _, tc := range []struct {
		name string
		svc  *corev1.Service
		want []mesh.Endpoint
	}{
		{"selector", backend, []mesh.Endpoint{
			{IP: "127.0.0.1", Port: 15006, Workload: "backend", Namespace: "default"},
			{IP: "127.0.0.2", Port: 15006, Workload: "backend-v1", Namespace: "default", Version: "v1"},
		}},
		{"endpoint slice", legacy, []mesh.Endpoint{{IP: "10.0.0.1", Port: 8000}, {IP: "10.0.0.2", Port: 8000}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := m.Endpoints(tc.svc, &tc.svc.Spec.Ports[0], ws)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Endpoints (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	backend := func() *corev1.Service {
		return service("backend", map[string]string{"app": "backend"}, corev1.ServicePort{Name: "http", Port: 8080})
	}
	route := func(mut func(*gwv1.HTTPRoute)) *gwv1.HTTPRoute {
		r := &gwv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "default"},
			Spec: gwv1.HTTPRouteSpec{
				CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{
					Group: ptr.To[gwv1.Group](""), Kind: ptr.To[gwv1.Kind]("Service"), Name: "backend", Port: ptr.To[gwv1.PortNumber](8080),
				}}},
				Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{
					BackendObjectReference: gwv1.BackendObjectReference{Name: "backend", Port: ptr.To[gwv1.PortNumber](8080)},
					Weight:                 ptr.To[int32](1),
				}}}}},
			},
		}
		if mut != nil {
			mut(r)
		}
		return r
	}
	for _, tc := range []struct {
		name string
		m    *mesh.Model
		want []string
	}{
		{"valid", &mesh.Model{Services: []*corev1.Service{backend()}, HTTPRoutes: []*gwv1.HTTPRoute{route(nil)}}, nil},
		{"dotted service name", &mesh.Model{Services: []*corev1.Service{service("a.b", nil, corev1.ServicePort{Port: 1})}},
			[]string{`Service default/a.b: metadata.name: invalid name "a.b": `}},
		{"no name", &mesh.Model{Services: []*corev1.Service{service("", nil, corev1.ServicePort{Port: 1})}},
			[]string{"Service default/: metadata.name: required"}},
		{"h2c alias and default protocol", &mesh.Model{Services: []*corev1.Service{
			service("a", nil, corev1.ServicePort{Name: "a", Port: 1, AppProtocol: ptr.To("kubernetes.io/h2c")}, corev1.ServicePort{Name: "b", Port: 2}),
		}}, nil},
		{"duplicate port", &mesh.Model{Services: []*corev1.Service{
			service("a", nil, corev1.ServicePort{Name: "a", Port: 1}, corev1.ServicePort{Name: "b", Port: 1}),
		}}, []string{"Service default/a: spec.ports[1].port: duplicate port 1"}},
		{"weight", &mesh.Model{Services: []*corev1.Service{backend()}, HTTPRoutes: []*gwv1.HTTPRoute{route(func(r *gwv1.HTTPRoute) {
			r.Spec.Rules[0].BackendRefs[0].Weight = ptr.To[int32](-1)
		})}, Files: map[mesh.Key]string{{Kind: "HTTPRoute", Namespace: "default", Name: "r"}: "mesh/routes.yaml"}},
			[]string{"mesh/routes.yaml: HTTPRoute default/r: spec.rules[0].backendRefs[0].weight: must be >= 0"}},
		{"parent port", &mesh.Model{Services: []*corev1.Service{backend()}, HTTPRoutes: []*gwv1.HTTPRoute{route(func(r *gwv1.HTTPRoute) {
			r.Spec.ParentRefs[0].Port = ptr.To[gwv1.PortNumber](9)
		})}}, []string{"HTTPRoute default/r: spec.parentRefs[0].port: Service default/backend has no port 9"}},
		{"backend port", &mesh.Model{Services: []*corev1.Service{backend()}, HTTPRoutes: []*gwv1.HTTPRoute{route(func(r *gwv1.HTTPRoute) {
			r.Spec.Rules[0].BackendRefs[0].Port = ptr.To[gwv1.PortNumber](9)
		})}}, []string{"HTTPRoute default/r: spec.rules[0].backendRefs[0].port: Service default/backend has no port 9"}},
		{"header regex", &mesh.Model{Services: []*corev1.Service{backend()}, HTTPRoutes: []*gwv1.HTTPRoute{route(func(r *gwv1.HTTPRoute) {
			r.Spec.Rules[0].Matches = []gwv1.HTTPRouteMatch{{Headers: []gwv1.HTTPHeaderMatch{{
				Type: ptr.To(gwv1.HeaderMatchRegularExpression), Name: "x", Value: "(?<!x)",
			}}}}
		})}}, []string{"HTTPRoute default/r: spec.rules[0].matches[0].headers[0].value: invalid RE2 regular expression: "}},
		{"timeout", &mesh.Model{Services: []*corev1.Service{backend()}, HTTPRoutes: []*gwv1.HTTPRoute{route(func(r *gwv1.HTTPRoute) {
			r.Spec.Rules[0].Timeouts = &gwv1.HTTPRouteTimeouts{Request: ptr.To[gwv1.Duration]("soon")}
		})}}, []string{`HTTPRoute default/r: spec.rules[0].timeouts.request: invalid duration "soon"`}},
		{"slice without service", &mesh.Model{EndpointSlices: []*discoveryv1.EndpointSlice{{
			ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "default", Labels: map[string]string{mesh.ServiceNameLabel: "gone"}},
			Endpoints:  []discoveryv1.Endpoint{{Addresses: []string{"host.example"}}},
		}}}, []string{
			"EndpointSlice default/s: metadata.labels[kubernetes.io/service-name]: Service default/gone not found",
			`EndpointSlice default/s: endpoints[0].addresses[0]: "host.example" is not an IP address`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkValidate(t, tc.m, tc.want)
		})
	}
}

func TestMTLSMode(t *testing.T) {
	pa := func(ns, name string, sel map[string]string, mode v1alpha1.MTLSMode) *v1alpha1.PeerAuthentication {
		p := &v1alpha1.PeerAuthentication{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec:       v1alpha1.PeerAuthenticationSpec{MTLS: &v1alpha1.PeerAuthenticationMTLS{Mode: mode}},
		}
		if sel != nil {
			p.Spec.Selector = &v1alpha1.WorkloadSelector{MatchLabels: sel}
		}
		return p
	}
	backend := map[string]string{"app": "backend", "version": "v1"}
	for _, tc := range []struct {
		name   string
		pas    []*v1alpha1.PeerAuthentication
		ns     string
		labels map[string]string
		want   v1alpha1.MTLSMode
	}{
		{"default", nil, "default", backend, v1alpha1.ModeStrict},
		{"root", []*v1alpha1.PeerAuthentication{pa("tinymesh-system", "m", nil, v1alpha1.ModeDisable)}, "default", backend, v1alpha1.ModeDisable},
		{"root selector is for the root namespace only", []*v1alpha1.PeerAuthentication{
			pa("tinymesh-system", "m", map[string]string{"app": "backend"}, v1alpha1.ModeDisable),
		}, "default", backend, v1alpha1.ModeStrict},
		{"namespace over root", []*v1alpha1.PeerAuthentication{
			pa("default", "ns", nil, v1alpha1.ModePermissive), pa("tinymesh-system", "m", nil, v1alpha1.ModeDisable),
		}, "default", backend, v1alpha1.ModePermissive},
		{"other namespace ignored", []*v1alpha1.PeerAuthentication{pa("prod", "ns", nil, v1alpha1.ModeDisable)}, "default", backend, v1alpha1.ModeStrict},
		{"selector over namespace; first name wins", []*v1alpha1.PeerAuthentication{
			pa("default", "a", map[string]string{"app": "backend"}, v1alpha1.ModePermissive),
			pa("default", "b", map[string]string{"version": "v1"}, v1alpha1.ModeDisable),
			pa("default", "ns", nil, v1alpha1.ModeStrict),
		}, "default", backend, v1alpha1.ModePermissive},
		{"selector not matching", []*v1alpha1.PeerAuthentication{
			pa("default", "a", map[string]string{"app": "frontend"}, v1alpha1.ModeDisable),
		}, "default", backend, v1alpha1.ModeStrict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &mesh.Model{PeerAuthentications: tc.pas}
			if got := m.MTLSMode(tc.ns, tc.labels, mesh.DefaultRootNamespace); got != tc.want {
				t.Errorf("MTLSMode = %s, want %s", got, tc.want)
			}
		})
	}
}

// checkValidate checks that m.Validate reports exactly the errors want, in
// order, each a *mesh.FieldError whose text starts with the wanted one.
func checkValidate(t *testing.T, m *mesh.Model, want []string) {
	t.Helper()
	var got []string
	if err := m.Validate(); err != nil {
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			var fe *mesh.FieldError
			if !errors.As(e, &fe) {
				t.Errorf("error %v is not a *mesh.FieldError", e)
			}
			got = append(got, e.Error())
		}
	}
	if len(got) != len(want) {
		t.Fatalf("Validate errors:\n got %q\nwant %q", got, want)
	}
	for i := range got {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("error %d:\n got %q\nwant prefix %q", i, got[i], want[i])
		}
	}
}
