package httpproxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"

	"github.com/tinymesh/tinymesh/dataplane/cluster"
	"github.com/tinymesh/tinymesh/dataplane/stream"
)

// ErrorHeader carries the reason for every response the proxy generates itself.
const ErrorHeader = "X-Meshproxy-Error"

// Reason labels a failure; it is the value of ErrorHeader and a stats label.
type Reason uint8

// Failure reasons, mapped to HTTP and gRPC statuses in one table (reasons).
const (
	RouteNotFound Reason = iota
	ClusterNotFound
	NoHealthyUpstream
	UpstreamConnectFailure
	UpstreamTimeout
	UpstreamReset
	UpgradeRefused
	BadRequest
	HeadersTooLarge
	RBACDenied // the RBAC filter refused the request (rbac.go)
	// UpstreamOverflow: a circuit breaker of the cluster is open
	// (max_requests, max_connections).
	UpstreamOverflow
)

type reasonInfo struct {
	name   string
	status int
	grpc   int          // gRPC status code for application/grpc requests
	flag   stream.Flags // Envoy's response flag, for stats and access logs
}

// gRPC codes (google.golang.org/grpc/codes), spelled here so the proxy does not
// link grpc-go.
const (
	grpcDeadlineExceeded = 4
	grpcPermissionDenied = 7
	grpcUnimplemented    = 12
	grpcInternal         = 13
	grpcUnavailable      = 14
)

var reasons = [...]reasonInfo{
	RouteNotFound:          {"route_not_found", http.StatusNotFound, grpcUnimplemented, stream.NoRoute},
	ClusterNotFound:        {"cluster_not_found", http.StatusServiceUnavailable, grpcUnavailable, stream.NoRoute},
	NoHealthyUpstream:      {"no_healthy_upstream", http.StatusServiceUnavailable, grpcUnavailable, stream.NoHealthyUpstream},
	UpstreamConnectFailure: {"upstream_connect_failure", http.StatusServiceUnavailable, grpcUnavailable, stream.UpstreamConnectionFailure},
	UpstreamTimeout:        {"upstream_timeout", http.StatusGatewayTimeout, grpcDeadlineExceeded, stream.UpstreamRequestTimeout},
	UpstreamReset:          {"upstream_reset", http.StatusBadGateway, grpcUnavailable, stream.UpstreamConnectionTermination},
	// Envoy answers a refused upgrade with 403 and no flag; DPE says the
	// request, not the upstream, was the problem.
	UpgradeRefused:  {"upgrade_refused", http.StatusForbidden, grpcPermissionDenied, stream.DownstreamProtocolError},
	BadRequest:      {"bad_request", http.StatusBadRequest, grpcInternal, stream.DownstreamProtocolError},
	HeadersTooLarge: {"request_headers_too_large", http.StatusRequestHeaderFieldsTooLarge, grpcInternal, stream.DownstreamProtocolError},
	RBACDenied:      {"rbac_denied", http.StatusForbidden, grpcPermissionDenied, stream.RBACDenied},
	// Envoy answers a circuit-breaker overflow with 503 and flag UO.
	UpstreamOverflow: {"upstream_overflow", http.StatusServiceUnavailable, grpcUnavailable, stream.UpstreamOverflow},
}

// grpcMessages replace "meshproxy: <reason>" as grpc-message where set.
var grpcMessages = [...]string{
	RBACDenied: "RBAC: access denied", // what Envoy's RBAC filter sends
}

func (r Reason) String() string { return reasons[r].name }

// Status is the HTTP status the proxy answers with for r.
func (r Reason) Status() int { return reasons[r].status }

// Flag is the Envoy response flag recorded for r.
func (r Reason) Flag() stream.Flags { return reasons[r].flag }

// writeError answers a request the proxy could not forward: a trailers-only gRPC
// error (HTTP 200) for gRPC requests, a plain-text HTTP error otherwise. It must be
// called before anything else was written. It records the answer in si when
// the stream is observed (si not nil).
func writeError(w http.ResponseWriter, grpcReq bool, r Reason, si *stream.Info) {
	info := reasons[r]
	if si != nil {
		si.Flags |= info.flag
		if grpcReq {
			si.ResponseCode, si.GRPCStatus = http.StatusOK, info.grpc
		} else {
			si.ResponseCode = info.status
			si.BytesSent += int64(len(info.name) + 1)
		}
	}
	h := w.Header()
	h.Set(ErrorHeader, info.name)
	if grpcReq {
		// A trailers-only response: the status goes in the only HEADERS frame
		// (gRPC over HTTP/2 spec, "Responses").
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", strconv.Itoa(info.grpc))
		msg := "meshproxy: " + info.name
		if int(r) < len(grpcMessages) && grpcMessages[r] != "" {
			msg = grpcMessages[r]
		}
		h.Set("Grpc-Message", msg)
		w.WriteHeader(http.StatusOK)
		return
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(info.status)
	w.Write([]byte(info.name + "\n"))
}

// classify maps an upstream round-trip error to a reason. ok is false when the
// downstream went away first and nothing should be written.
func classify(err error, reqCtx, downstream context.Context) (r Reason, ok bool) {
	if downstream.Err() != nil {
		return 0, false
	}
	if errors.Is(err, cluster.ErrOverflow) {
		return UpstreamOverflow, true
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		if reqCtx.Err() != nil {
			return UpstreamTimeout, true
		}
		return UpstreamConnectFailure, true
	}
	if reqCtx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		return UpstreamTimeout, true
	}
	return UpstreamReset, true
}
