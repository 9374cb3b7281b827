package resource

import (
	"net"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tinymesh/tinymesh/dataplane/config"
	corev3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/core/v3"
	listenerv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/listener/v3"
	routerv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/extensions/filters/network/tcp_proxy/v3"
)

const (
	typeHCM      = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	typeTCPProxy = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
	typeRouter   = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
)

// Envoy's defaults for fields left unset.
const (
	defaultMaxRequestHeadersKB = 60
	defaultStreamIdleTimeout   = 5 * time.Minute
	defaultDrainTimeout        = 5 * time.Second
	defaultTCPIdleTimeout      = time.Hour
	defaultRouteTimeout        = 15 * time.Second
	defaultConnectTimeout      = 5 * time.Second
)

// Listener is a decoded Listener resource.
type Listener struct {
	Config *config.Listener
	// RDSName is the route configuration the listener's HCM fetches over RDS;
	// empty for TCP listeners and inline route configs.
	RDSName string
	// InlineRoute is the HCM's inline route_config, already renamed to the
	// listener's name; nil otherwise.
	InlineRoute *config.RouteConfig
}

// DecodeListener validates m and converts it. m is the proto/envoywire mirror or
// go-control-plane's message. Errors are *Error.
func DecodeListener(m proto.Message) (*Listener, error) {
	l, err := FromEnvoy[*listenerv3.Listener](m)
	if err != nil {
		return nil, &Error{Type: KindListener, Reason: err.Error()}
	}
	p := path{kind: KindListener, name: l.GetName()}
	if l.GetName() == "" {
		return nil, p.at("name").errorf("must not be empty")
	}
	if l.GetApiListener() != nil {
		return nil, p.at("api_listener").errorf("API listeners are not supported")
	}
	addr, err := decodeSocketAddress(p.at("address"), l.GetAddress(), true)
	if err != nil {
		return nil, err
	}
	tlsInspector := false
	for i, lf := range l.GetListenerFilters() {
		// The HTTP inspector only feeds filter_chain_match fields we reject,
		// so it changes nothing and is accepted; the TLS inspector enables a
		// PERMISSIVE pair of filter chains (below).
		switch lf.GetName() {
		case "envoy.filters.listener.http_inspector":
			continue
		case "envoy.filters.listener.tls_inspector":
			tlsInspector = true
			continue
		}
		return nil, p.idx("listener_filters", i).errorf("unsupported listener filter %q", lf.GetName())
	}
	if l.GetUseOriginalDst().GetValue() {
		return nil, p.at("use_original_dst").errorf("original destination is not supported")
	}

	chain, cp, plainChain, err := selectFilterChains(p, l, tlsInspector)
	if err != nil {
		return nil, err
	}
	// A network RBAC filter may come first (rbac.go); first skips it.
	netRBAC, first, err := leadingNetworkRBAC(cp, chain.GetFilters())
	if err != nil {
		return nil, err
	}
	if len(chain.GetFilters()) != first+1 {
		return nil, cp.at("filters").errorf("exactly one network filter is supported, got %d", len(chain.GetFilters()))
	}
	fp := cp.idx("filters", first)
	tc := chain.GetFilters()[first].GetTypedConfig()
	if tc == nil {
		return nil, fp.at("typed_config").errorf("must be set")
	}

	out := &Listener{Config: &config.Listener{Name: l.GetName(), Address: addr}}
	if l.GetTrafficDirection() == corev3.TrafficDirection_INBOUND {
		out.Config.Direction = config.Inbound
	}
	switch tc.GetTypeUrl() {
	case typeHCM:
		var hcm hcmv3.HttpConnectionManager
		if err := Unpack(tc, &hcm); err != nil {
			return nil, fp.at("typed_config").errorf("%v", err)
		}
		if err := decodeHCM(fp.at("typed_config"), &hcm, out); err != nil {
			return nil, err
		}
	case typeTCPProxy:
		var tp tcpv3.TcpProxy
		if err := Unpack(tc, &tp); err != nil {
			return nil, fp.at("typed_config").errorf("%v", err)
		}
		tcp, err := decodeTCPProxy(fp.at("typed_config"), &tp)
		if err != nil {
			return nil, err
		}
		if tcp.Tracing, err = decodeTCPTracing(p, l.GetMetadata()); err != nil { // tracing.go
			return nil, err
		}
		out.Config.TCP = tcp
	default:
		return nil, fp.at("typed_config").errorf("unsupported filter %s", tc.GetTypeUrl())
	}
	if err := attachNetworkRBAC(cp, first, netRBAC, out.Config); err != nil {
		return nil, err
	}
	if out.Config.TLS, err = decodeDownstreamTLS(cp.at("transport_socket"), chain.GetTransportSocket(), out.Config.HTTP != nil); err != nil {
		return nil, err
	}
	if plainChain >= 0 {
		if out.Config.TLS == nil {
			return nil, cp.at("transport_socket").errorf("the filter chain matching transport_protocol \"tls\" must have a TLS transport socket")
		}
		out.Config.TLSOptional = true
	}
	return out, nil
}

// selectFilterChains picks the filter chain a listener serves. Supported are
// one chain without filter_chain_match (or only a default_filter_chain), and,
// with the TLS inspector, PERMISSIVE mTLS (docs/identity.md): exactly two
// chains matching transport_protocol "tls" and "raw_buffer", the raw_buffer
// one without a transport socket, with proto.Equal filters. It returns the
// chain to decode, its path, and the index of the plaintext chain of a
// PERMISSIVE pair (-1 otherwise).
func selectFilterChains(p path, l *listenerv3.Listener, tlsInspector bool) (*listenerv3.FilterChain, path, int, error) {
	chains := l.GetFilterChains()
	hasMatch := func(fc *listenerv3.FilterChain) bool {
		m := fc.GetFilterChainMatch()
		return m != nil && proto.Size(m) > 0
	}
	if len(chains) == 2 && l.GetDefaultFilterChain() == nil && (hasMatch(chains[0]) || hasMatch(chains[1])) {
		if !tlsInspector {
			return nil, p, -1, p.at("listener_filters").errorf("filter chains matching transport_protocol need envoy.filters.listener.tls_inspector")
		}
		tlsIdx, plainIdx := -1, -1
		for i, fc := range chains {
			mp := p.idx("filter_chains", i).at("filter_chain_match")
			m := fc.GetFilterChainMatch()
			if m != nil && !proto.Equal(m, &listenerv3.FilterChainMatch{TransportProtocol: m.GetTransportProtocol()}) {
				return nil, p, -1, mp.errorf("only transport_protocol is supported in filter_chain_match")
			}
			switch m.GetTransportProtocol() {
			case "tls":
				if tlsIdx >= 0 {
					return nil, p, -1, mp.at("transport_protocol").errorf("two filter chains match \"tls\"")
				}
				tlsIdx = i
			case "raw_buffer":
				if plainIdx >= 0 {
					return nil, p, -1, mp.at("transport_protocol").errorf("two filter chains match \"raw_buffer\"")
				}
				plainIdx = i
			default:
				return nil, p, -1, mp.at("transport_protocol").errorf("want \"tls\" or \"raw_buffer\", got %q", m.GetTransportProtocol())
			}
		}
		pp := p.idx("filter_chains", plainIdx)
		if ts := chains[plainIdx].GetTransportSocket(); ts != nil {
			if a, err := transportSocketConfig(pp.at("transport_socket"), ts, typeDownstreamTLS); err != nil || a != nil {
				return nil, p, -1, pp.at("transport_socket").errorf("the raw_buffer filter chain must not have a TLS transport socket")
			}
		}
		if !filtersEqual(chains[tlsIdx].GetFilters(), chains[plainIdx].GetFilters()) {
			return nil, p, -1, pp.at("filters").errorf("must equal the filters of filter_chains[%d] (PERMISSIVE serves the same filters with and without TLS)", tlsIdx)
		}
		return chains[tlsIdx], p.idx("filter_chains", tlsIdx), plainIdx, nil
	}
	var chain *listenerv3.FilterChain
	var cp path
	switch n := len(chains); {
	case n == 1 && l.GetDefaultFilterChain() == nil:
		chain, cp = chains[0], p.idx("filter_chains", 0)
	case n == 0 && l.GetDefaultFilterChain() != nil:
		chain, cp = l.GetDefaultFilterChain(), p.at("default_filter_chain")
	case n == 2:
		return nil, p, -1, p.at("filter_chains").errorf("two filter chains are supported only as a PERMISSIVE pair matching transport_protocol \"tls\" and \"raw_buffer\"")
	default:
		return nil, p, -1, p.at("filter_chains").errorf("exactly one filter chain is supported, got %d", n+btoi(l.GetDefaultFilterChain() != nil))
	}
	if hasMatch(chain) {
		return nil, p, -1, cp.at("filter_chain_match").errorf("filter chain matching is not supported")
	}
	return chain, cp, -1, nil
}

func filtersEqual(a, b []*listenerv3.Filter) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func decodeHCM(p path, h *hcmv3.HttpConnectionManager, out *Listener) error {
	c := &config.HTTPConnectionManager{
		StatPrefix:             h.GetStatPrefix(),
		GenerateRequestID:      true,
		UseRemoteAddress:       h.GetUseRemoteAddress().GetValue(),
		MaxRequestHeadersBytes: defaultMaxRequestHeadersKB * 1024,
		StreamIdleTimeout:      defaultStreamIdleTimeout,
		DrainTimeout:           defaultDrainTimeout,
	}
	logs, lerr := decodeAccessLogs(p, h.GetAccessLog())
	if lerr != nil {
		return lerr
	}
	c.AccessLogs = logs
	tr, terr := decodeTracing(p.at("tracing"), h.GetTracing())
	if terr != nil {
		return terr
	}
	c.Tracing = tr
	switch h.GetCodecType() {
	case hcmv3.HttpConnectionManager_AUTO, hcmv3.HttpConnectionManager_HTTP1, hcmv3.HttpConnectionManager_HTTP2:
	default:
		return p.at("codec_type").errorf("unsupported codec %s", h.GetCodecType())
	}
	switch rs := h.GetRouteSpecifier().(type) {
	case *hcmv3.HttpConnectionManager_Rds:
		rp := p.at("rds")
		if rs.Rds.GetRouteConfigName() == "" {
			return rp.at("route_config_name").errorf("must not be empty")
		}
		if err := checkConfigSource(rp.at("config_source"), rs.Rds.GetConfigSource()); err != nil {
			return err
		}
		c.RouteConfigName = rs.Rds.GetRouteConfigName()
		out.RDSName = c.RouteConfigName
	case *hcmv3.HttpConnectionManager_RouteConfig:
		// Inline configs live in Snapshot.Routes under the listener's own name, so
		// they can never collide with another listener's inline config.
		rc, err := decodeRouteConfig(p.at("route_config"), rs.RouteConfig)
		if err != nil {
			return err
		}
		rc.Name = out.Config.Name
		c.RouteConfigName = rc.Name
		out.InlineRoute = rc
	case nil:
		return p.errorf("one of rds or route_config must be set")
	default:
		return p.errorf("only rds and route_config are supported (scoped routes are not)")
	}
	filters := h.GetHttpFilters()
	if len(filters) == 0 {
		return p.at("http_filters").errorf("must end with envoy.filters.http.router")
	}
	for i, f := range filters {
		fp := p.idx("http_filters", i)
		if i == len(filters)-1 {
			if tc := f.GetTypedConfig(); tc != nil {
				if tc.GetTypeUrl() != typeRouter {
					return fp.errorf("the last HTTP filter must be envoy.filters.http.router, got %s", tc.GetTypeUrl())
				}
				var r routerv3.Router
				if err := Unpack(tc, &r); err != nil {
					return fp.at("typed_config").errorf("%v", err)
				}
			} else if f.GetName() != "envoy.filters.http.router" {
				return fp.errorf("the last HTTP filter must be envoy.filters.http.router, got %q", f.GetName())
			}
			continue
		}
		what := f.GetName()
		if tc := f.GetTypedConfig(); tc != nil {
			what = tc.GetTypeUrl()
		}
		if what == typeRouter || what == "envoy.filters.http.router" {
			return fp.errorf("envoy.filters.http.router must be the last HTTP filter")
		}
		if isHTTPRBAC(f) {
			if c.RBAC != nil {
				return fp.errorf("only one RBAC filter is supported")
			}
			var err error
			if c.RBAC, err = decodeHTTPRBACFilter(fp, f); err != nil {
				return err
			}
			continue
		}
		if f.GetIsOptional() {
			continue // Envoy skips optional filters it does not know, and so do we.
		}
		return fp.errorf("unsupported HTTP filter %s", what)
	}
	for i, u := range h.GetUpgradeConfigs() {
		up := p.idx("upgrade_configs", i)
		if len(u.GetFilters()) > 0 {
			return up.at("filters").errorf("upgrade filters are not supported")
		}
		if e := u.GetEnabled(); e != nil && !e.GetValue() {
			continue
		}
		t := strings.ToLower(u.GetUpgradeType())
		if t == "" {
			return up.at("upgrade_type").errorf("must not be empty")
		}
		c.UpgradeTypes = append(c.UpgradeTypes, t)
	}
	if g := h.GetGenerateRequestId(); g != nil {
		c.GenerateRequestID = g.GetValue()
	}
	if kb := h.GetMaxRequestHeadersKb(); kb != nil {
		if kb.GetValue() == 0 || kb.GetValue() > 8192 {
			return p.at("max_request_headers_kb").errorf("must be in 1..8192, got %d", kb.GetValue())
		}
		c.MaxRequestHeadersBytes = int(kb.GetValue()) * 1024
	}
	var err error
	if c.StreamIdleTimeout, err = duration(p.at("stream_idle_timeout"), h.GetStreamIdleTimeout(), defaultStreamIdleTimeout); err != nil {
		return err
	}
	if c.DrainTimeout, err = duration(p.at("drain_timeout"), h.GetDrainTimeout(), defaultDrainTimeout); err != nil {
		return err
	}
	if err := decodeXFCC(p, h, c); err != nil {
		return err
	}
	out.Config.HTTP = c
	return nil
}

// decodeXFCC decodes forward_client_cert_details and
// set_current_client_cert_details: SANITIZE (the default) and SANITIZE_SET
// with By, Hash and URI, which is what the mesh's inbound listeners send
// (docs/identity.md).
func decodeXFCC(p path, h *hcmv3.HttpConnectionManager, c *config.HTTPConnectionManager) error {
	switch f := h.GetForwardClientCertDetails(); f {
	case hcmv3.HttpConnectionManager_SANITIZE:
		c.ForwardClientCert = config.Sanitize
	case hcmv3.HttpConnectionManager_SANITIZE_SET:
		c.ForwardClientCert = config.SanitizeSet
	default:
		return p.at("forward_client_cert_details").errorf("unsupported %s (only SANITIZE and SANITIZE_SET; a mesh sidecar never trusts the XFCC a caller sends)", f)
	}
	d := h.GetSetCurrentClientCertDetails()
	if d == nil {
		return nil
	}
	dp := p.at("set_current_client_cert_details")
	if err := rejectUnset(dp, d, "uri", "subject"); err != nil {
		return err
	}
	if d.GetSubject().GetValue() {
		return dp.at("subject").errorf("not supported (only uri; By and Hash are always set)")
	}
	c.SetCurrentClientCertURI = d.GetUri()
	return nil
}

func decodeTCPProxy(p path, t *tcpv3.TcpProxy) (*config.TCPProxy, error) {
	cs, ok := t.GetClusterSpecifier().(*tcpv3.TcpProxy_Cluster)
	if !ok {
		return nil, p.at("cluster").errorf("a single cluster is required (weighted_clusters is not supported)")
	}
	if cs.Cluster == "" {
		return nil, p.at("cluster").errorf("must not be empty")
	}
	idle, err := duration(p.at("idle_timeout"), t.GetIdleTimeout(), defaultTCPIdleTimeout)
	if err != nil {
		return nil, err
	}
	logs, err := decodeAccessLogs(p, t.GetAccessLog())
	if err != nil {
		return nil, err
	}
	return &config.TCPProxy{StatPrefix: t.GetStatPrefix(), Cluster: cs.Cluster, IdleTimeout: idle, AccessLogs: logs}, nil
}

// checkConfigSource accepts only sources that point back at this ADS stream.
func checkConfigSource(p path, cs *corev3.ConfigSource) error {
	if cs.GetAds() != nil || cs.GetSelf() != nil {
		return nil
	}
	return p.errorf("only ads or self config sources are supported")
}

// duration converts d, returning def when unset; 0 stays 0 (disabled).
func duration(p path, d *durationpb.Duration, def time.Duration) (time.Duration, error) {
	if d == nil {
		return def, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, p.errorf("%v", err)
	}
	v := d.AsDuration()
	if v < 0 {
		return 0, p.errorf("must not be negative, got %s", v)
	}
	return v, nil
}

// decodeSocketAddress returns host:port. With needIP the host must be an IP
// literal (listeners, EDS endpoints); otherwise a DNS name is accepted.
func decodeSocketAddress(p path, a *corev3.Address, needIP bool) (string, error) {
	sa := a.GetSocketAddress()
	if sa == nil {
		return "", p.at("socket_address").errorf("must be set")
	}
	sp := p.at("socket_address")
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return "", sp.at("protocol").errorf("only TCP is supported")
	}
	if sa.GetResolverName() != "" {
		return "", sp.at("resolver_name").errorf("custom resolvers are not supported")
	}
	port, ok := sa.GetPortSpecifier().(*corev3.SocketAddress_PortValue)
	if !ok {
		return "", sp.at("port_value").errorf("must be set (named ports are not supported)")
	}
	if port.PortValue > 65535 {
		return "", sp.at("port_value").errorf("out of range: %d", port.PortValue)
	}
	host := sa.GetAddress()
	if host == "" {
		return "", sp.at("address").errorf("must not be empty")
	}
	if needIP && net.ParseIP(host) == nil {
		return "", sp.at("address").errorf("not an IP address: %q", host)
	}
	return net.JoinHostPort(host, strconv.FormatUint(uint64(port.PortValue), 10)), nil
}
