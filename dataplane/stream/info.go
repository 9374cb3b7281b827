// Package stream describes one finished HTTP request or TCP connection, as the
// proxy saw it: what the stats, access-log and tracing stages record when it
// ends. httpproxy and tcpproxy fill an Info on the request's goroutine and
// hand it to the listener's Observer once the stream is done; an Observer must
// not keep the *Info after it returns (Infos are pooled).
package stream

import "time"

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

	RouteName    string
	Cluster      string
	UpstreamHost string // ip:port of the endpoint that served it

	ResponseCode int // HTTP status; 0 for TCP and for streams that got none
	GRPCStatus   int // grpc-status; -1 when not gRPC or none was sent
	Flags        Flags

	BytesReceived int64 // request body (HTTP) or bytes from downstream (TCP)
	BytesSent     int64 // response body (HTTP) or bytes to downstream (TCP)

	// PeerID is the downstream's verified SPIFFE ID; empty for plaintext.
	PeerID string
	// MTLS says the downstream connection was mutual TLS (Istio's
	// connection_security_policy="mutual_tls").
	MTLS bool
}

// Flags are Envoy's response flags: why the proxy, not the upstream, decided
// how a stream ended.
type Flags uint32

// Observer receives every finished stream of a listener. It is called on the
// stream's goroutine and must not block or keep info.
type Observer func(info *Info)
