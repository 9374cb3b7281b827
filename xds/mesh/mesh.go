// Package mesh is the control plane's model of the mesh: Kubernetes-style Services,
// EndpointSlices and GAMMA HTTPRoutes (the upstream Go types, never redefined), the
// mesh's own PeerAuthentications and AuthorizationPolicies (xds/mesh/v1alpha1),
// plus the workloads that proxies register through their xDS node metadata.
//
// A Model is built by a source (xds/source/file), validated once with Validate, and
// then treated as immutable: the server and the translator read it from any
// goroutine without locks, so nothing may modify a Model after it has been handed
// on. This package holds no protos; xds/translate turns a Model into xDS.
package mesh

import (
	"cmp"
	"net"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tinymesh/tinymesh/xds/mesh/v1alpha1"
)

// DefaultNamespace is used for resources and workloads that do not name one.
const DefaultNamespace = "default"

// ServiceNameLabel is the EndpointSlice label naming the Service it belongs to.
const ServiceNameLabel = discoveryv1.LabelServiceName

// Model is one complete mesh configuration from a source.
type Model struct {
	Services       []*corev1.Service
	EndpointSlices []*discoveryv1.EndpointSlice
	HTTPRoutes     []*gwv1.HTTPRoute
	// PeerAuthentications and AuthorizationPolicies are the mesh's identity
	// policies (docs/identity.md).
	PeerAuthentications   []*v1alpha1.PeerAuthentication
	AuthorizationPolicies []*v1alpha1.AuthorizationPolicy
	// Telemetries set workloads' access logs (docs/observability.md).
	Telemetries []*v1alpha1.Telemetry
	// DestinationRules set clients' circuit breakers, outlier detection and
	// health checks per Service (docs/resilience.md).
	DestinationRules []*v1alpha1.DestinationRule
	// TrustDomain is the SPIFFE trust domain that SPIFFE IDs in policies must
	// belong to; empty means identity.DefaultTrustDomain. The source sets it
	// from its configuration before Validate.
	TrustDomain string
	// Files maps a resource to the file it was read from, for error messages;
	// it may be nil or incomplete.
	Files map[Key]string
}

// Key identifies a resource of the model.
type Key struct {
	Kind, Namespace, Name string
}

// String formats the key as "Kind namespace/name".
func (k Key) String() string { return k.Kind + " " + k.Namespace + "/" + k.Name }

// Workload is a proxy (or proxyless client) as it describes itself in its xDS node
// metadata; see docs/xds-conventions.md.
type Workload struct {
	NodeID         string
	Name           string
	Namespace      string
	ServiceAccount string
	Labels         map[string]string
	// InboundAddr is the sidecar's inbound listener (ip:port); it becomes the
	// workload's endpoint in every Service whose selector matches Labels. Empty for
	// clients that receive no traffic.
	InboundAddr string
	// AppAddr is the local app the inbound listener forwards to.
	AppAddr string
	// OutboundHTTPAddr is the outbound HTTP listener the local app sends to.
	OutboundHTTPAddr string
	// OutboundIP is where per-port outbound TCP listeners bind; defaults to the
	// host of OutboundHTTPAddr.
	OutboundIP string
	// Sidecar is set when the node says it is a proxy (its user_agent_name is
	// meshproxy or envoy), even one that has no listener addresses yet.
	Sidecar bool
}

// Proxyless reports whether the node is a proxyless client (gRPC's xDS resolver):
// not a proxy, and with neither an inbound nor an outbound HTTP listener.
func (w *Workload) Proxyless() bool {
	return !w.Sidecar && w.InboundAddr == "" && w.OutboundHTTPAddr == ""
}

// TCPBindIP is the IP for outbound TCP listeners, or "" when the node has none.
func (w *Workload) TCPBindIP() string {
	if w.OutboundIP != "" {
		return w.OutboundIP
	}
	if host, _, err := net.SplitHostPort(w.OutboundHTTPAddr); err == nil {
		return host
	}
	return ""
}

// Protocol is a Service port's application protocol.
type Protocol string

// The protocols a Service port may speak.
const (
	HTTP  Protocol = "http"
	H2C   Protocol = "h2c"
	HTTP2 Protocol = "http2"
	GRPC  Protocol = "grpc"
	TCP   Protocol = "tcp"
)

// IsHTTP2 reports whether the protocol is HTTP/2 with prior knowledge.
func (p Protocol) IsHTTP2() bool { return p == H2C || p == HTTP2 || p == GRPC }

// PortProtocol returns the protocol of a Service port: its appProtocol, http when
// missing. ok is false for a protocol the mesh does not know.
func PortProtocol(p *corev1.ServicePort) (proto Protocol, ok bool) {
	if p.AppProtocol == nil || *p.AppProtocol == "" {
		return HTTP, true
	}
	switch ap := *p.AppProtocol; ap {
	case "http", "h2c", "http2", "grpc", "tcp":
		return Protocol(ap), true
	case "kubernetes.io/h2c":
		return H2C, true
	default:
		return "", false
	}
}

// FQDN is the cluster-local DNS name of a Service.
func FQDN(name, namespace string) string { return name + "." + namespace + ".svc.cluster.local" }

// Service returns the Service namespace/name, or nil.
func (m *Model) Service(namespace, name string) *corev1.Service {
	for _, s := range m.Services {
		if s.Namespace == namespace && s.Name == name {
			return s
		}
	}
	return nil
}

// ServicePort returns the port numbered port of svc, or nil.
func ServicePort(svc *corev1.Service, port int32) *corev1.ServicePort {
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Port == port {
			return &svc.Spec.Ports[i]
		}
	}
	return nil
}

// Meshed reports whether a Service's endpoints are mesh workloads (it has a
// selector) rather than EndpointSlice entries outside the mesh.
func Meshed(svc *corev1.Service) bool { return len(svc.Spec.Selector) > 0 }

// Selects reports whether svc's selector matches the workload: same namespace, and
// every selector label present with the same value. An empty selector selects
// nothing, as in Kubernetes.
func Selects(svc *corev1.Service, w *Workload) bool {
	if len(svc.Spec.Selector) == 0 || svc.Namespace != w.Namespace {
		return false
	}
	for k, v := range svc.Spec.Selector {
		if got, ok := w.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// SelectsLabels reports whether labels include every entry of matchLabels (an
// empty matchLabels matches everything).
func SelectsLabels(matchLabels, labels map[string]string) bool {
	for k, v := range matchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Endpoint is one backend address of a Service port.
type Endpoint struct {
	IP   string
	Port uint32
	// Workload, Namespace and Version (its "version" label) name the meshed
	// workload serving the address; empty for EndpointSlice addresses.
	Workload, Namespace, Version string
}

// Endpoints returns the sorted, deduplicated endpoints of svc's port: the
// inbound addresses of the workloads it selects, plus the addresses of its
// EndpointSlices (those not ready are left out).
func (m *Model) Endpoints(svc *corev1.Service, port *corev1.ServicePort, workloads []Workload) []Endpoint {
	var eps []Endpoint
	for i := range workloads {
		w := &workloads[i]
		if w.InboundAddr == "" || !Selects(svc, w) {
			continue
		}
		host, p, err := net.SplitHostPort(w.InboundAddr)
		if err != nil {
			continue
		}
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			continue
		}
		eps = append(eps, Endpoint{IP: host, Port: uint32(n),
			Workload: w.Name, Namespace: w.Namespace, Version: w.Labels["version"]})
	}
	for _, es := range m.EndpointSlices {
		if es.Namespace != svc.Namespace || es.Labels[ServiceNameLabel] != svc.Name {
			continue
		}
		target, ok := slicePort(es, port)
		if !ok {
			continue
		}
		for _, e := range es.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, a := range e.Addresses {
				eps = append(eps, Endpoint{IP: a, Port: target})
			}
		}
	}
	// Stable, so a workload's address is kept over an EndpointSlice entry with
	// the same address (workloads come first).
	slices.SortStableFunc(eps, func(a, b Endpoint) int {
		return cmp.Or(cmp.Compare(a.IP, b.IP), cmp.Compare(a.Port, b.Port))
	})
	return slices.CompactFunc(eps, func(a, b Endpoint) bool { return a.IP == b.IP && a.Port == b.Port })
}

// slicePort finds the EndpointSlice port for a Service port: the one with the same
// name (Kubernetes matches them by name), else the only one.
func slicePort(es *discoveryv1.EndpointSlice, port *corev1.ServicePort) (uint32, bool) {
	for _, p := range es.Ports {
		if p.Port != nil && ptrString(p.Name) == port.Name {
			return uint32(*p.Port), true
		}
	}
	if len(es.Ports) == 1 && es.Ports[0].Port != nil {
		return uint32(*es.Ports[0].Port), true
	}
	if len(es.Ports) == 0 {
		// No ports listed: the endpoints serve the Service's target port.
		return uint32(TargetPort(port)), true
	}
	return 0, false
}

func ptrString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// TargetPort is the port the Service's endpoints serve a Service port on: its
// numeric targetPort, defaulting to the port itself as in Kubernetes. A named
// targetPort ("grpc-port") would need the Pod's container ports, which the mesh
// does not have, so it is taken as the port itself too (docs/xds-conventions.md).
func TargetPort(p *corev1.ServicePort) int32 {
	if p.TargetPort.IntVal > 0 {
		return p.TargetPort.IntVal
	}
	return p.Port
}
