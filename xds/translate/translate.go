// Package translate turns the mesh model and the registered workloads into the
// Envoy v3 xDS resources for one node, following docs/xds-conventions.md: sidecars
// get socket listeners (outbound_http, outbound_tcp|..., inbound), proxyless gRPC
// clients get API listeners; both get EDS clusters and their load assignments.
// Following docs/identity.md, sidecars also get mTLS on the sidecar hop (the
// inbound listener per PeerAuthentication, an UpstreamTlsContext on clusters to
// meshed workloads), RBAC from AuthorizationPolicies on their inbound listener, and
// the SDS secrets default and ROOTCA when the server has them, and the
// access_log of their listeners from the Telemetry that applies to them.
//
// Translate is pure and deterministic: it reads its inputs without modifying them,
// holds no state, and the same inputs give the same resources in the same order,
// so the server can hash them into versions. It is safe to call concurrently.
package translate

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	corev1 "k8s.io/api/core/v1"

	"github.com/tinymesh/tinymesh/identity"
	"github.com/tinymesh/tinymesh/xds/mesh"
	"github.com/tinymesh/tinymesh/xds/mesh/v1alpha1"
)

// Resource names fixed by docs/xds-conventions.md.
const (
	OutboundHTTPName = "outbound_http"
	InboundName      = "inbound"
)

// OutboundClusterName is the outbound cluster (and EDS service name) of a Service
// port.
func OutboundClusterName(svc, ns string, port int32) string {
	return "outbound|" + strconv.Itoa(int(port)) + "||" + mesh.FQDN(svc, ns)
}

// InboundClusterName is the inbound cluster to the local app on port.
func InboundClusterName(port uint16) string { return "inbound|" + strconv.Itoa(int(port)) + "||" }

// OutboundTCPListenerName is the outbound TCP listener of a Service port.
func OutboundTCPListenerName(svc, ns string, port int32) string {
	return "outbound_tcp|" + strconv.Itoa(int(port)) + "||" + mesh.FQDN(svc, ns)
}

// Resources are one node's xDS resources, each list sorted by name.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	Secrets   []*tlsv3.Secret
}

// Options are the translation inputs beyond the model and the workloads.
type Options struct {
	// TrustDomain is the mesh's SPIFFE trust domain; empty means
	// identity.DefaultTrustDomain.
	TrustDomain string
	// RootNamespace holds the mesh-wide PeerAuthentication; empty means
	// mesh.DefaultRootNamespace.
	RootNamespace string
	// TrustBundle (PEM, every root in force) is served as the ROOTCA secret when
	// set.
	TrustBundle []byte
	// Certificate (PEM chain, leaf first) last issued to this node is served as
	// its default secret when set.
	Certificate []byte
	// Registered are all registered workloads, ready or not. Their SPIFFE IDs
	// are the SAN matchers of outbound clusters, so a new workload is trusted
	// before its endpoint is published; nil means the workloads argument.
	Registered []mesh.Workload
}

// ByType returns the resources keyed by type URL, as go-control-plane's snapshot
// constructors want them.
func (r *Resources) ByType() map[resource.Type][]types.Resource {
	out := map[resource.Type][]types.Resource{
		resource.ListenerType: nil, resource.RouteType: nil, resource.ClusterType: nil, resource.EndpointType: nil,
		resource.SecretType: nil,
	}
	for _, l := range r.Listeners {
		out[resource.ListenerType] = append(out[resource.ListenerType], l)
	}
	for _, x := range r.Routes {
		out[resource.RouteType] = append(out[resource.RouteType], x)
	}
	for _, c := range r.Clusters {
		out[resource.ClusterType] = append(out[resource.ClusterType], c)
	}
	for _, e := range r.Endpoints {
		out[resource.EndpointType] = append(out[resource.EndpointType], e)
	}
	for _, x := range r.Secrets {
		out[resource.SecretType] = append(out[resource.SecretType], x)
	}
	return out
}

// Translate computes the resources for node from the model m (nil means empty),
// the workloads whose endpoints are published (the node itself included if it is
// one), and opts. An error
// means a resource failed its protoc-gen-validate rules, which is a bug here or an
// input the model validation let through; the caller keeps the node's last
// resources.
func Translate(m *mesh.Model, workloads []mesh.Workload, node *mesh.Workload, opts Options) (*Resources, error) {
	if m == nil {
		m = &mesh.Model{}
	}
	t := &translator{m: m, workloads: workloads, node: node, out: &Resources{}, opts: opts,
		trustDomain:   cmp.Or(opts.TrustDomain, identity.DefaultTrustDomain),
		rootNamespace: cmp.Or(opts.RootNamespace, mesh.DefaultRootNamespace),
		registered:    opts.Registered, dests: map[string]destination{}}
	if t.registered == nil {
		t.registered = workloads
	}
	t.clusters()
	if node.Proxyless() {
		t.proxyless()
	} else {
		t.sidecar()
		t.secrets()
	}
	r := t.out
	slices.SortFunc(r.Listeners, func(a, b *listenerv3.Listener) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Routes, func(a, b *routev3.RouteConfiguration) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Clusters, func(a, b *clusterv3.Cluster) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Endpoints, func(a, b *endpointv3.ClusterLoadAssignment) int {
		return cmp.Compare(a.ClusterName, b.ClusterName)
	})
	slices.SortFunc(r.Secrets, func(a, b *tlsv3.Secret) int { return cmp.Compare(a.Name, b.Name) })
	if err := validate(r); err != nil {
		return nil, fmt.Errorf("translate for node %q: %w", node.NodeID, err)
	}
	return r, nil
}

type validator interface{ ValidateAll() error }

func validate(r *Resources) error {
	check := func(kind, name string, v validator) error {
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("%s %q: %w", kind, name, err)
		}
		return nil
	}
	for _, x := range r.Listeners {
		if err := check("Listener", x.Name, x); err != nil {
			return err
		}
	}
	for _, x := range r.Routes {
		if err := check("RouteConfiguration", x.Name, x); err != nil {
			return err
		}
	}
	for _, x := range r.Clusters {
		if err := check("Cluster", x.Name, x); err != nil {
			return err
		}
	}
	for _, x := range r.Endpoints {
		if err := check("ClusterLoadAssignment", x.ClusterName, x); err != nil {
			return err
		}
	}
	for _, x := range r.Secrets {
		if err := check("Secret", x.Name, x); err != nil {
			return err
		}
	}
	return nil
}

type translator struct {
	m             *mesh.Model
	workloads     []mesh.Workload // published endpoints
	registered    []mesh.Workload // every registered workload: identities
	node          *mesh.Workload
	opts          Options
	trustDomain   string
	rootNamespace string
	out           *Resources
	dests         map[string]destination // by "namespace/name", memoized
}

// servicePorts calls fn for every Service port in model order, with whether it is
// the first HTTP port of its Service (which also gets the port-less domains).
func (t *translator) servicePorts(fn func(svc *corev1.Service, port *corev1.ServicePort, proto mesh.Protocol, firstHTTP bool)) {
	for _, svc := range t.m.Services {
		first := true
		for i := range svc.Spec.Ports {
			p := &svc.Spec.Ports[i]
			proto, ok := mesh.PortProtocol(p)
			if !ok {
				continue // rejected by validation; never translate what we cannot name
			}
			fn(svc, p, proto, first && proto != mesh.TCP)
			if proto != mesh.TCP {
				first = false
			}
		}
	}
}

// clusters adds an outbound EDS cluster and its load assignment per Service port.
func (t *translator) clusters() {
	proxyless := t.node.Proxyless()
	t.servicePorts(func(svc *corev1.Service, port *corev1.ServicePort, proto mesh.Protocol, _ bool) {
		if proxyless && proto == mesh.TCP {
			return // gRPC cannot use a TCP service
		}
		name := OutboundClusterName(svc.Name, svc.Namespace, port.Port)
		c := &clusterv3.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: name},
			ConnectTimeout:       connectTimeout,
			LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		}
		// gRPC always speaks HTTP/2 and ignores these options; sidecars to meshed
		// workloads multiplex over h2c whatever the app speaks (the peer sidecar's
		// inbound HCM is codec AUTO), while endpoints outside the mesh get the
		// Service's own protocol.
		if !proxyless && proto != mesh.TCP {
			c.TypedExtensionProtocolOptions = protocolOptions(mesh.Meshed(svc) || proto.IsHTTP2())
		}
		// Proxyless clients have no identity: they reach meshed Services in
		// plaintext, which needs the target in PERMISSIVE or DISABLE.
		if d := t.destination(svc); !proxyless && d.tls {
			c.TransportSocket = upstreamTLS(proto != mesh.TCP, d.sans)
		}
		if !proxyless { // DestinationRule: sidecars only (resilience.go)
			t.trafficPolicy(c, svc, port.Port, proto != mesh.TCP && (mesh.Meshed(svc) || proto.IsHTTP2()))
		}
		t.out.Clusters = append(t.out.Clusters, c)
		t.out.Endpoints = append(t.out.Endpoints, loadAssignment(name, t.m.Endpoints(svc, port, t.workloads)))
	})
}

// sidecar adds the socket listeners of a sidecar and their route configuration.
func (t *translator) sidecar() {
	used := map[string]bool{} // listener addresses already taken
	logs := t.accessLogs()
	if t.node.OutboundHTTPAddr != "" {
		rc := &routev3.RouteConfiguration{Name: OutboundHTTPName}
		t.servicePorts(func(svc *corev1.Service, port *corev1.ServicePort, proto mesh.Protocol, firstHTTP bool) {
			if proto == mesh.TCP {
				return
			}
			rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
				Name:    mesh.FQDN(svc.Name, svc.Namespace) + ":" + strconv.Itoa(int(port.Port)),
				Domains: domains(svc, port.Port, t.node.Namespace, firstHTTP),
				Routes:  t.routes(svc, port, false),
			})
		})
		ap := netip.MustParseAddrPort(t.node.OutboundHTTPAddr) // checked by WorkloadFromNode
		t.out.Routes = append(t.out.Routes, rc)
		h := hcmRDS(OutboundHTTPName, OutboundHTTPName, false)
		h.AccessLog = logs
		h.Tracing = t.tracing()
		t.out.Listeners = append(t.out.Listeners, httpListener(OutboundHTTPName, ap, corev3.TrafficDirection_OUTBOUND, h))
		used[ap.String()] = true
	}
	if ip := t.node.TCPBindIP(); ip != "" {
		if addr, err := netip.ParseAddr(ip); err == nil {
			t.servicePorts(func(svc *corev1.Service, port *corev1.ServicePort, proto mesh.Protocol, _ bool) {
				ap := netip.AddrPortFrom(addr, uint16(port.Port))
				if proto != mesh.TCP || used[ap.String()] {
					return // first Service on a port wins; later ones would clash
				}
				used[ap.String()] = true
				name := OutboundTCPListenerName(svc.Name, svc.Namespace, port.Port)
				t.out.Listeners = append(t.out.Listeners, tcpListener(name, ap, corev3.TrafficDirection_OUTBOUND,
					OutboundClusterName(svc.Name, svc.Namespace, port.Port), logs))
			})
		}
	}
	t.inbound(used, logs)
	t.traceTCPListeners() // tracing.go
}

// inbound adds the inbound listener and the static clusters to the local app.
//
// The listener is an HTTP connection manager (codec AUTO) unless the workload's
// primary port is tcp, in which case it is a TcpProxy to the primary cluster, as
// one socket cannot tell the two apart. Its inline route configuration has one
// virtual host per HTTP-family port of every Service that selects the workload,
// answering to that port's authorities and routing to the cluster of its target
// port, so a Service with http 8080 and grpc 9090 reaches the app's HTTP/1.1 and
// gRPC ports each in its own protocol. The peer sidecar keeps the client's
// authority (backend:9090), which is what selects the virtual host here. Then
// "*:<port>" virtual hosts catch other names with a known port (a GAMMA parent
// Service), and a final catch-all "*" routes to the primary cluster, so
// authorities nothing else claims (a bare IP, a port-less parent Service name)
// behave as before multi-port support.
func (t *translator) inbound(used map[string]bool, logs []*accesslogv3.AccessLog) {
	if t.node.InboundAddr == "" || t.node.AppAddr == "" {
		return
	}
	in := netip.MustParseAddrPort(t.node.InboundAddr)
	app := netip.MustParseAddrPort(t.node.AppAddr)
	if used[in.String()] {
		return
	}
	ports := t.inboundPorts()
	primary := primaryPort(ports, app.Port())
	proto := mesh.HTTP
	if primary != nil {
		proto = primary.proto
	}
	// The primary cluster keeps its historical name and APP_ADDR itself even when
	// the primary port's targetPort differs from APP_ADDR's port (the app's real
	// port is what the sidecar was told).
	primaryName := InboundClusterName(app.Port())
	t.out.Clusters = append(t.out.Clusters, inboundCluster(primaryName, app, proto))
	// Target port -> cluster. The primary port's target port is served by
	// APP_ADDR whatever its number, so it never gets a cluster of its own.
	clusters := map[int32]string{int32(app.Port()): primaryName}
	if primary != nil {
		clusters[mesh.TargetPort(primary.port)] = primaryName
	}
	mode := t.m.MTLSMode(t.node.Namespace, t.node.Labels, t.rootNamespace)
	var auth *authorizer
	if ps := t.m.AuthorizationTargets(t.node); len(ps) > 0 {
		auth = &authorizer{t: t, policies: ps}
	}
	if proto == mesh.TCP {
		l := tcpListener(InboundName, in, corev3.TrafficDirection_INBOUND, primaryName, logs)
		if auth != nil {
			fc := l.FilterChains[0]
			rbac := networkRBACFilter(InboundName, auth.rules(appPorts(clusters, primaryName), false))
			fc.Filters = append([]*listenerv3.Filter{rbac}, fc.Filters...)
		}
		secureInbound(l, mode, false, t.trustDomain)
		t.out.Listeners = append(t.out.Listeners, l)
		return
	}
	rc := &routev3.RouteConfiguration{Name: InboundName}
	byPort := map[int32]string{} // Service port number -> cluster, for "*:<port>"
	var portOrder []int32
	for _, p := range ports {
		if p.proto == mesh.TCP {
			continue // a tcp port that is not primary cannot share the HTTP listener
		}
		target := mesh.TargetPort(p.port)
		cname, ok := clusters[target]
		if !ok {
			// The first Service port to name a target port sets its protocol;
			// Services that disagree about one app port cannot both be right.
			cname = InboundClusterName(uint16(target))
			clusters[target] = cname
			t.out.Clusters = append(t.out.Clusters,
				inboundCluster(cname, netip.AddrPortFrom(app.Addr(), uint16(target)), p.proto))
		}
		if _, ok := byPort[p.port.Port]; !ok {
			byPort[p.port.Port] = cname // first Service port with a number wins
			portOrder = append(portOrder, p.port.Port)
		}
		// The workload shares the Service's namespace (selectors do not cross
		// namespaces), so the bare name is one of its authorities too.
		rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
			Name:    mesh.FQDN(p.svc.Name, p.svc.Namespace) + ":" + strconv.Itoa(int(p.port.Port)),
			Domains: domains(p.svc, p.port.Port, p.svc.Namespace, p.firstHTTP),
			Routes:  []*routev3.Route{defaultRoute(cname)},
		})
	}
	// After a GAMMA split the authority names the parent Service (backend:9090)
	// while the workload may be selected only by a per-version Service; the
	// authority's port still tells which app port is meant, so "*:<port>" (an
	// Envoy suffix wildcard, tried after exact domains) catches it.
	for _, port := range portOrder {
		ps := strconv.Itoa(int(port))
		rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
			Name:    InboundName + "|*:" + ps,
			Domains: []string{"*:" + ps},
			Routes:  []*routev3.Route{defaultRoute(byPort[port])},
		})
	}
	rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
		Name:    InboundName,
		Domains: []string{"*"},
		Routes:  []*routev3.Route{defaultRoute(primaryName)},
	})
	h := hcmInline(InboundName, rc)
	h.AccessLog = logs
	h.Tracing = t.tracing()
	if auth != nil {
		// Each virtual host gets the rules for the app port its cluster serves;
		// the filter's own rules (deny all) are never reached.
		for _, vh := range rc.VirtualHosts {
			cname := vh.Routes[0].GetRoute().GetCluster()
			vh.TypedPerFilterConfig = perRoute(auth.rules(appPorts(clusters, cname), true))
		}
		h.HttpFilters = append([]*hcmv3.HttpFilter{httpRBACFilter()}, h.HttpFilters...)
	}
	if mode != v1alpha1.ModeDisable {
		// The app learns the verified caller from x-forwarded-client-cert and
		// never sees a value the caller sent (docs/identity.md).
		h.ForwardClientCertDetails = hcmv3.HttpConnectionManager_SANITIZE_SET
		h.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Uri: true}
	}
	l := httpListener(InboundName, in, corev3.TrafficDirection_INBOUND, h)
	secureInbound(l, mode, true, t.trustDomain)
	t.out.Listeners = append(t.out.Listeners, l)
}

// appPorts are the app ports (target ports) whose traffic goes to cluster.
func appPorts(clusters map[int32]string, cluster string) map[int32]bool {
	out := map[int32]bool{}
	for port, c := range clusters {
		if c == cluster {
			out[port] = true
		}
	}
	return out
}

// inboundPort is a port of a Service that selects the node.
type inboundPort struct {
	svc       *corev1.Service
	port      *corev1.ServicePort
	proto     mesh.Protocol
	firstHTTP bool // the Service's first HTTP-family port: it also gets the bare domains
}

// inboundPorts lists the ports of the Services selecting the node, in model order.
func (t *translator) inboundPorts() []inboundPort {
	var out []inboundPort
	t.servicePorts(func(svc *corev1.Service, port *corev1.ServicePort, proto mesh.Protocol, firstHTTP bool) {
		if mesh.Selects(svc, t.node) {
			out = append(out, inboundPort{svc: svc, port: port, proto: proto, firstHTTP: firstHTTP})
		}
	})
	return out
}

// primaryPort is the port APP_ADDR serves: the first whose targetPort is
// appPort, else the first port of the first selecting Service; nil when no
// Service selects the workload.
func primaryPort(ports []inboundPort, appPort uint16) *inboundPort {
	for i := range ports {
		if mesh.TargetPort(ports[i].port) == int32(appPort) {
			return &ports[i]
		}
	}
	if len(ports) == 0 {
		return nil
	}
	return &ports[0]
}

// inboundCluster is a STATIC cluster to the local app at addr speaking proto.
func inboundCluster(name string, addr netip.AddrPort, proto mesh.Protocol) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       connectTimeout,
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		LoadAssignment:       loadAssignment(name, []mesh.Endpoint{{IP: addr.Addr().String(), Port: uint32(addr.Port())}}),
	}
	if proto != mesh.TCP {
		c.TypedExtensionProtocolOptions = protocolOptions(proto.IsHTTP2())
	}
	return c
}

// defaultRoute sends everything to cluster without a timeout: the app's own
// deadlines apply, and gRPC streams must not be cut.
func defaultRoute(cluster string) *routev3.Route {
	return &routev3.Route{
		Name:   "default",
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: clusterAction(cluster, 0),
	}
}

// proxyless adds, per HTTP Service port, the API listeners gRPC's xDS resolver
// looks up by target name, each with an RDS route configuration of the same name.
func (t *translator) proxyless() {
	t.servicePorts(func(svc *corev1.Service, port *corev1.ServicePort, proto mesh.Protocol, _ bool) {
		if proto == mesh.TCP {
			return
		}
		p := ":" + strconv.Itoa(int(port.Port))
		names := []string{mesh.FQDN(svc.Name, svc.Namespace) + p, svc.Name + "." + svc.Namespace + p}
		if svc.Namespace == t.node.Namespace {
			names = append(names, svc.Name+p)
		}
		routes := t.routes(svc, port, true)
		for _, n := range names {
			t.out.Listeners = append(t.out.Listeners, apiListener(n, hcmRDS(n, n, false)))
			t.out.Routes = append(t.out.Routes, &routev3.RouteConfiguration{
				Name: n,
				VirtualHosts: []*routev3.VirtualHost{{
					// gRPC matches domains against its target's authority; the
					// route configuration belongs to this one listener anyway.
					Name: n, Domains: []string{"*"}, Routes: routes,
				}},
			})
		}
	})
}

// domains are the authorities a Service port answers to on outbound_http. The bare
// service name only resolves in the node's own namespace, as with Kubernetes DNS,
// which also keeps domains unique across the route configuration.
func domains(svc *corev1.Service, port int32, nodeNS string, plain bool) []string {
	var hosts []string
	if svc.Namespace == nodeNS {
		hosts = append(hosts, svc.Name)
	}
	hosts = append(hosts, svc.Name+"."+svc.Namespace, svc.Name+"."+svc.Namespace+".svc", mesh.FQDN(svc.Name, svc.Namespace))
	var out []string
	if plain {
		out = append(out, hosts...)
	}
	for _, h := range hosts {
		out = append(out, h+":"+strconv.Itoa(int(port)))
	}
	return out
}
