// Package config holds the sidecar's configuration snapshot: plain, validated values
// decoded from xDS by xds/resource and compiled into the traffic path by dataplane.
//
// A Snapshot is immutable once published: nothing may modify it, or anything it
// points to, after it has been handed to dataplane.Proxy.Apply. Readers on any
// goroutine may use it without locks. This package imports nothing of ours and no
// protos, so the data plane never sees Envoy or Kubernetes types.
package config

import "time"

// Snapshot is one complete, consistent configuration: every route configuration
// named by an HTTP listener is present, and every cluster a route or TCP proxy names
// is present with its endpoints (possibly none).
type Snapshot struct {
	// Version identifies the xDS versions this snapshot was built from; it is for
	// logs and the admin config dump only.
	Version string
	// Listeners sorted by Name; names are unique.
	Listeners []*Listener
	// Routes by RouteConfig.Name; holds RDS configs and listeners' inline ones.
	Routes map[string]*RouteConfig
	// Clusters by Cluster.Name.
	Clusters map[string]*Cluster
}

// Direction says which side of the workload a listener serves. It changes header
// handling (x-request-id generation, x-forwarded-for) and stats labels.
type Direction uint8

const (
	// Outbound listeners take the local app's requests to other services.
	Outbound Direction = iota
	// Inbound listeners take mesh traffic for the local app.
	Inbound
)

func (d Direction) String() string {
	if d == Inbound {
		return "inbound"
	}
	return "outbound"
}

// Listener is a socket the proxy binds and what it does with connections.
// Exactly one of HTTP and TCP is set.
type Listener struct {
	Name      string
	Address   string // host:port, as net.Listen takes it
	Direction Direction
	HTTP      *HTTPConnectionManager
	TCP       *TCPProxy
	// TLS, when set, terminates TLS on every accepted connection before HTTP
	// or TCP handling (the filter chain's DownstreamTlsContext). An HTTP
	// listener serves HTTP/2 when ALPN selects "h2" and HTTP/1.1 otherwise.
	TLS *DownstreamTLS
	// TLSOptional (PeerAuthentication PERMISSIVE: a tls_inspector and two
	// filter chains, "tls" and "raw_buffer", with the same filters) serves
	// plaintext connections too: the first byte of a connection decides
	// (0x16, a TLS handshake record, means TLS). Only with TLS set.
	TLSOptional bool
}

// ForwardClientCert is what an HTTP listener does with x-forwarded-client-cert
// (XFCC), the HCM's forward_client_cert_details.
type ForwardClientCert uint8

const (
	// Sanitize removes XFCC from every request (Envoy's default).
	Sanitize ForwardClientCert = iota
	// SanitizeSet removes the XFCC a request came with and, when the
	// connection has a verified client certificate, sets it to describe that
	// certificate: By=<own SPIFFE ID>;Hash=<hex SHA-256 of the peer's leaf
	// DER>[;URI=<peer SPIFFE ID>].
	SanitizeSet
)

func (f ForwardClientCert) String() string {
	if f == SanitizeSet {
		return "SANITIZE_SET"
	}
	return "SANITIZE"
}

// HTTPConnectionManager serves HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on
// one socket (Envoy's codec_type AUTO) and routes each request.
type HTTPConnectionManager struct {
	StatPrefix string
	// RouteConfigName names the entry in Snapshot.Routes, whether it came from RDS
	// or inline (inline configs are stored under the listener's own name).
	RouteConfigName string
	// UpgradeTypes lists the Upgrade protocols passed through, lower case
	// ("websocket"). Other upgrade requests are refused.
	UpgradeTypes []string
	// GenerateRequestID sets x-request-id when the request has none.
	GenerateRequestID bool
	// UseRemoteAddress appends the downstream peer address to x-forwarded-for.
	UseRemoteAddress bool
	// MaxRequestHeadersBytes bounds the request header block; larger gets 431.
	MaxRequestHeadersBytes int
	// StreamIdleTimeout closes streams with no activity for this long; 0 disables.
	StreamIdleTimeout time.Duration
	// DrainTimeout bounds how long a removed listener waits for its requests.
	DrainTimeout time.Duration
	// ForwardClientCert and SetCurrentClientCertURI are the HCM's
	// forward_client_cert_details and set_current_client_cert_details.uri:
	// with SanitizeSet, XFCC carries URI=<peer SPIFFE ID> when the latter is set.
	ForwardClientCert       ForwardClientCert
	SetCurrentClientCertURI bool
	// AccessLogs are the HCM's access_log entries: one line per request each.
	AccessLogs []AccessLog
	// Tracing is the HCM's tracing config; nil: the proxy's default tracer
	// (meshproxy --tracing-endpoint), if any.
	Tracing *Tracing
	// RBAC is the envoy.filters.http.rbac filter; nil when the HCM has none.
	// VirtualHost.RBAC and Route.RBAC override it, and only when it is set.
	RBAC *RBACFilter
}

// TCPProxy forwards whole connections to one cluster's endpoints.
type TCPProxy struct {
	StatPrefix  string
	Cluster     string
	IdleTimeout time.Duration // 0 disables
	// AccessLogs are the TCP proxy's access_log entries: one line per connection each.
	AccessLogs []AccessLog
	// RBAC is the envoy.filters.network.rbac filter before the TCP proxy,
	// checked once per connection after the TLS handshake; nil allows all.
	RBAC *RBAC
	// Tracing traces each connection (one root span per connection, see
	// docs/observability.md); nil: the proxy's default tracer. Envoy's
	// tcp_proxy has no tracing field: it comes from the listener's metadata
	// (xds/resource, typed_filter_metadata "tinymesh.io/tracing").
	Tracing *Tracing
}

// AccessLog is one access_log entry (envoy.access_loggers.file, stdout or
// stderr). Exactly one of Text and JSON is set; dataplane/accesslog compiles
// the command operators, which xds/resource has checked.
type AccessLog struct {
	// Path is the file lines are appended to; "/dev/stdout" and
	// "/dev/stderr" are the process's own streams.
	Path string
	// Text is a text format with command operators (%RESPONSE_CODE%); a
	// trailing newline is added when it has none.
	Text string
	// JSON is a json_format: one object per line, keys in this order.
	JSON []AccessLogField
	// SamplePerMillion logs that many streams in a million (runtime_filter
	// percent_sampled); 1000000 logs all.
	SamplePerMillion uint32
}

// AccessLogField is one key of a JSON access log and its format string.
type AccessLogField struct {
	Key    string
	Format string
}

// RouteConfig is a routing table: virtual hosts chosen by authority, then routes
// matched in order.
type RouteConfig struct {
	Name                    string
	VirtualHosts            []*VirtualHost
	RequestHeadersToAdd     []HeaderValueOption
	RequestHeadersToRemove  []string
	ResponseHeadersToAdd    []HeaderValueOption
	ResponseHeadersToRemove []string
}

// VirtualHost groups routes under the authorities it answers for.
type VirtualHost struct {
	Name string
	// Domains as Envoy has them: exact host, host:port, "*.suffix", "prefix*" or "*".
	Domains                 []string
	Routes                  []*Route
	RequestHeadersToAdd     []HeaderValueOption
	RequestHeadersToRemove  []string
	ResponseHeadersToAdd    []HeaderValueOption
	ResponseHeadersToRemove []string
	// RBAC overrides the HCM's RBAC filter for this virtual host's routes;
	// nil inherits it.
	RBAC *RBACFilter
}

// Route is one match and what to do with a request that meets it. Exactly one of
// Action and DirectResponse is set.
type Route struct {
	Name                    string
	Match                   RouteMatch
	Action                  *RouteAction
	DirectResponse          *DirectResponse
	RequestHeadersToAdd     []HeaderValueOption
	RequestHeadersToRemove  []string
	ResponseHeadersToAdd    []HeaderValueOption
	ResponseHeadersToRemove []string
	// RBAC overrides the virtual host's and the HCM's RBAC configuration for
	// this route (most specific wins, as in Envoy); nil inherits.
	RBAC *RBACFilter
}

// PathMatchKind says how RouteMatch.Path is compared with the request path (the
// part before '?').
type PathMatchKind uint8

const (
	PathPrefix PathMatchKind = iota
	PathExact
	PathRegex // RE2, whole path must match
	// PathSeparatedPrefix matches the prefix followed by '/' or the end of path.
	PathSeparatedPrefix
)

// RouteMatch is the conjunction of a path condition and header conditions.
// Methods are matched as the ":method" pseudo-header, as in Envoy.
type RouteMatch struct {
	PathKind      PathMatchKind
	Path          string
	CaseSensitive bool
	Headers       []HeaderMatcher
	// GRPCOnly matches only requests with content-type application/grpc*.
	GRPCOnly bool
}

// HeaderMatchKind says how HeaderMatcher.Value is compared.
type HeaderMatchKind uint8

const (
	HeaderExact HeaderMatchKind = iota
	HeaderPrefix
	HeaderSuffix
	HeaderContains
	HeaderRegex // RE2, whole value must match
	HeaderPresent
)

// HeaderMatcher tests one request header. Name is lower case; pseudo-headers
// ":method", ":authority", ":path" and ":scheme" are matched against the request.
type HeaderMatcher struct {
	Name   string
	Kind   HeaderMatchKind
	Value  string
	Invert bool
}

// HeaderValueOption adds a header; with Append false it replaces existing values.
type HeaderValueOption struct {
	Name   string
	Value  string
	Append bool
}

// RouteAction forwards to one cluster chosen by weight.
type RouteAction struct {
	// Clusters has one entry for a plain route, more for a weighted split. Weights
	// are positive; their sum is below 2^32.
	Clusters []WeightedCluster
	// Timeout bounds the whole exchange (until the response ends); 0 disables.
	// Envoy's default when the field is unset is 15s; xds/resource applies it.
	Timeout time.Duration
	// PrefixRewrite replaces the matched path prefix when not empty.
	PrefixRewrite string
	// HostRewrite replaces the authority when not empty.
	HostRewrite string
}

// WeightedCluster is one side of a weighted split.
type WeightedCluster struct {
	Name                   string
	Weight                 uint32
	RequestHeadersToAdd    []HeaderValueOption
	RequestHeadersToRemove []string
}

// DirectResponse answers from the proxy itself.
type DirectResponse struct {
	Status int
	Body   string
}

// Protocol is what the proxy speaks to a cluster's endpoints.
type Protocol uint8

const (
	// ProtocolHTTP1 is HTTP/1.1 with keep-alive, the default of an Envoy cluster.
	ProtocolHTTP1 Protocol = iota
	// ProtocolH2C is HTTP/2 with prior knowledge over plain TCP.
	ProtocolH2C
	// ProtocolTCP marks a cluster used only by TCP proxies.
	ProtocolTCP
)

func (p Protocol) String() string {
	switch p {
	case ProtocolH2C:
		return "h2c"
	case ProtocolTCP:
		return "tcp"
	}
	return "http/1.1"
}

// ALPN is the protocol ID an HTTP cluster negotiates over TLS (RFC 7301
// registry); empty for TCP.
func (p Protocol) ALPN() string {
	switch p {
	case ProtocolH2C:
		return "h2"
	case ProtocolHTTP1:
		return "http/1.1"
	}
	return ""
}

// LBPolicy chooses an endpoint per request or connection.
type LBPolicy uint8

const (
	RoundRobin LBPolicy = iota
)

// Cluster is a named group of upstream endpoints and how to reach them.
type Cluster struct {
	Name           string
	ConnectTimeout time.Duration
	Protocol       Protocol
	LBPolicy       LBPolicy
	// Endpoints are the healthy (or health-unknown) endpoints only, in the order
	// the control plane sent them.
	Endpoints []Endpoint
	// TLS, when set, originates TLS on every upstream connection (the
	// cluster's UpstreamTlsContext). ProtocolH2C then means HTTP/2 over TLS
	// negotiated with ALPN "h2", ProtocolHTTP1 means HTTP/1.1 ("http/1.1").
	TLS *UpstreamTLS
	// Resilience (resilience.go): circuit-breaker thresholds (nil: the
	// defaults, DefaultCircuitBreakers), passive outlier detection and one
	// active health check (nil: off), and the panic threshold in percent
	// (Envoy's common_lb_config.healthy_panic_threshold, default 50; used
	// only with outlier detection or a health check, and 0 otherwise).
	CircuitBreakers       *CircuitBreakers
	OutlierDetection      *OutlierDetection
	HealthCheck           *HealthCheck
	HealthyPanicThreshold float64
}

// Endpoint is one upstream address.
type Endpoint struct {
	Address string // host:port
	Weight  uint32 // load-balancing weight, >= 1
	// Workload, Namespace and Version name the workload behind the endpoint
	// (EDS metadata filter_metadata["tinymesh"]), for the outbound side's
	// destination_* stats labels; empty when the control plane did not say.
	Workload  string
	Namespace string
	Version   string
}

// TLSVersion is a TLS protocol version bound; TLSAuto leaves the choice to the
// data plane's default (TLS 1.2 minimum, TLS 1.3 maximum, as Envoy).
type TLSVersion uint8

const (
	TLSAuto TLSVersion = iota
	TLS10
	TLS11
	TLS12
	TLS13
)

func (v TLSVersion) String() string {
	switch v {
	case TLS10:
		return "TLSv1_0"
	case TLS11:
		return "TLSv1_1"
	case TLS12:
		return "TLSv1_2"
	case TLS13:
		return "TLSv1_3"
	}
	return "TLS_AUTO"
}

// CertificateKeyPair is a PEM certificate chain (leaf first) and its PEM
// private key. xds/resource has already checked that they parse and match.
type CertificateKeyPair struct {
	CertificateChain []byte
	PrivateKey       Secret
}

// Secret is sensitive bytes such as a PEM private key. It formats and
// marshals to JSON as "[redacted]", so the admin config dump and logs of a
// snapshot never reveal it (Envoy redacts secrets in its config dump too).
type Secret []byte

const redacted = "[redacted]"

func (Secret) String() string   { return redacted }
func (Secret) GoString() string { return redacted }

// MarshalJSON hides the secret from JSON config dumps.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// SANType says which subject alternative names a SANMatcher looks at.
type SANType uint8

const (
	// SANAny matches DNS, URI, email and IP SANs alike (Envoy's deprecated
	// match_subject_alt_names).
	SANAny SANType = iota
	SANDNS
	SANURI
)

func (t SANType) String() string {
	switch t {
	case SANDNS:
		return "DNS"
	case SANURI:
		return "URI"
	}
	return "any"
}

// SANMatcher matches one subject alternative name of the peer's leaf
// certificate, case-sensitively as Envoy's StringMatcher: equal to Exact, or,
// when Prefix is set instead, starting with Prefix.
type SANMatcher struct {
	Type   SANType
	Exact  string
	Prefix string
}

// DownstreamTLS is how a listener terminates TLS.
type DownstreamTLS struct {
	// Certificates has at least one entry; the handshake picks one by SNI and
	// the client's capabilities.
	Certificates []CertificateKeyPair
	// ALPN lists the protocols offered, in server preference order. For HTTP
	// listeners xds/resource defaults it to ["h2", "http/1.1"].
	ALPN       []string
	MinVersion TLSVersion
	MaxVersion TLSVersion
	// TrustedCA is a PEM bundle client certificates are verified against;
	// empty means client certificates are neither requested nor checked.
	TrustedCA []byte
	// RequireClientCertificate refuses clients without a valid certificate;
	// TrustedCA is then set.
	RequireClientCertificate bool
	// SessionTicketsDisabled turns off stateless session resumption.
	SessionTicketsDisabled bool
	// MatchSANs, when not empty, requires a client certificate's leaf to have
	// a SAN matching at least one entry (the mesh: a SPIFFE ID of the trust
	// domain, as a URI prefix).
	MatchSANs []SANMatcher
	// CertificateSecret and ValidationSecret name the SDS secrets that
	// supplied Certificates and TrustedCA (empty when those were inline).
	// Snapshots handed to the data plane always carry the material itself;
	// the names are kept for the config dump and for xds/resource, which
	// fills in the material when it assembles a snapshot.
	CertificateSecret string
	ValidationSecret  string
}

// UpstreamTLS is how a cluster originates TLS.
type UpstreamTLS struct {
	// SNI is the server name sent; empty sends none.
	SNI string
	// ALPN lists the protocols offered. Empty means the cluster protocol's own
	// ("h2" or "http/1.1"; none for TCP clusters). For HTTP clusters it
	// includes the protocol the cluster speaks.
	ALPN       []string
	MinVersion TLSVersion
	MaxVersion TLSVersion
	// TrustedCA is a PEM bundle the server's chain must verify against; empty
	// means the server certificate is not verified (Envoy's behaviour without
	// a validation context), and then MatchSANs is empty too.
	TrustedCA []byte
	// MatchSANs, when not empty, requires the server's leaf certificate to have
	// a SAN matching at least one entry.
	MatchSANs []SANMatcher
	// ClientCertificate is presented when the server asks for one.
	ClientCertificate *CertificateKeyPair
	// CertificateSecret and ValidationSecret name the SDS secrets that
	// supplied ClientCertificate and TrustedCA, as in DownstreamTLS.
	CertificateSecret string
	ValidationSecret  string
}

// TLSSecret is one SDS Secret as the data plane uses it: either a certificate
// with its private key (tls_certificate) or a trust bundle
// (validation_context.trusted_ca). Listeners and clusters name secrets; the
// xDS client resolves the names into their TLS settings.
type TLSSecret struct {
	Name        string
	Certificate *CertificateKeyPair // set for a tls_certificate secret
	TrustedCA   []byte              // PEM; set for a validation_context secret
}
