// Package stream describes one finished HTTP request or TCP connection, as the
// proxy saw it: what the stats, access-log and tracing stages record when it
// ends. httpproxy and tcpproxy fill an Info on the request's goroutine and
// hand it to the listener's Observer once the stream is done; an Observer must
// not keep the *Info after it returns (Infos are pooled: Get and Put).
package stream

import (
	"sync"
	"time"
)

// Info is one finished stream. String fields that the proxy does not know
// are empty; numbers it does not know are zero (GRPCStatus: -1).
type Info struct {
	Start    time.Time
	Duration time.Duration // from the first request byte to the last response byte

	Listener  string
	Inbound   bool   // reporter: destination (inbound) or source (outbound)
	Protocol  string // "HTTP/1.1", "HTTP/2" or "tcp"
	Method    string
	Authority string
	Path      string
	RequestID string // x-request-id
	TraceID   string // W3C trace id (32 hex digits), when the request is traced

	VirtualHost  string // name of the virtual host the request matched
	RouteName    string
	Cluster      string
	UpstreamHost string // ip:port of the endpoint that served it (or was tried last)
	// Attempts counts upstream tries: 1 for a plain request, more after
	// connect-failure retries (Envoy's upstream_rq_retry counts Attempts-1),
	// 0 when the stream never got to an upstream.
	Attempts int

	ResponseCode int // HTTP status; 0 for TCP and for streams that got none
	GRPCStatus   int // grpc-status; -1 when not gRPC or none was sent
	Flags        Flags

	BytesReceived int64 // request body (HTTP) or bytes from downstream (TCP)
	BytesSent     int64 // response body (HTTP) or bytes to downstream (TCP)

	// DownstreamRemote is the downstream's ip:port.
	DownstreamRemote string
	// PeerID is the downstream's verified SPIFFE ID; empty for plaintext.
	PeerID string
	// MTLS says the downstream connection was mutual TLS (Istio's
	// connection_security_policy="mutual_tls").
	MTLS bool
}

// Flags are Envoy's response flags: why the proxy, not the upstream, decided
// how a stream ended. Several may be set (UF and URX after failed retries).
type Flags uint32

// The response flags the proxy sets, with Envoy's short codes
// (Envoy docs: access log "Command operators", %RESPONSE_FLAGS%).
const (
	NoRoute                         Flags = 1 << iota // NR: no route, or no cluster for the route
	NoHealthyUpstream                                 // UH
	UpstreamConnectionFailure                         // UF
	UpstreamRequestTimeout                            // UT
	UpstreamConnectionTermination                     // UC
	DownstreamConnectionTermination                   // DC
	UpstreamRetryLimitExceeded                        // URX
	RBACDenied                                        // RBAC: the RBAC filter denied it (Envoy: "RBAC")
	DownstreamProtocolError                           // DPE
	UpstreamOverflow                                  // UO
	numFlags                        = iota
)

// flagCodes are in Envoy's print order for the flags the proxy has.
var flagCodes = [numFlags]string{"NR", "UH", "UF", "UT", "UC", "DC", "URX", "RBAC", "DPE", "UO"}

// String returns the flags as Envoy prints them: comma-separated short codes,
// or "-" when none is set. The common cases (none, one flag) do not allocate.
func (f Flags) String() string {
	if f == 0 {
		return "-"
	}
	if f&(f-1) == 0 { // exactly one
		for i := range flagCodes {
			if f == 1<<i {
				return flagCodes[i]
			}
		}
	}
	var b []byte
	for i := range flagCodes {
		if f&(1<<i) != 0 {
			if len(b) > 0 {
				b = append(b, ',')
			}
			b = append(b, flagCodes[i]...)
		}
	}
	return string(b)
}

// Observer receives every finished stream of a listener. It is called on the
// stream's goroutine and must not block or keep info.
type Observer func(info *Info)

// Observers calls each non-nil observer in order; nil when none is non-nil.
func Observers(obs ...Observer) Observer {
	var live []Observer
	for _, o := range obs {
		if o != nil {
			live = append(live, o)
		}
	}
	switch len(live) {
	case 0:
		return nil
	case 1:
		return live[0]
	}
	return func(info *Info) {
		for _, o := range live {
			o(info)
		}
	}
}

var pool = sync.Pool{New: func() any { return new(Info) }}

// Get returns a zeroed Info (GRPCStatus -1) from the pool.
func Get() *Info {
	i := pool.Get().(*Info)
	*i = Info{GRPCStatus: -1}
	return i
}

// Put returns info to the pool; the caller must not use it afterwards.
func Put(info *Info) { pool.Put(info) }
