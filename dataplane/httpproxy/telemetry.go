package httpproxy

import (
	"net/http"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/stream"
)

// Telemetry: when a listener's State has an Observer, ServeHTTP takes a
// stream.Info from the pool, the stages fill in what they decide (route,
// cluster, endpoint, status, response flags from the reasons table in
// errors.go, bytes) and endStream hands it to the Observer when the handler
// returns, also after an aborted stream. Without an Observer nothing here runs.

// beginStream returns a pooled Info describing r as it arrived.
func beginStream(r *http.Request, st *State) *stream.Info {
	si := stream.Get()
	si.Start = time.Now()
	si.Listener = st.Listener
	si.Inbound = st.Direction == config.Inbound
	si.Protocol = r.Proto
	if r.ProtoMajor == 2 {
		si.Protocol = "HTTP/2" // as Envoy's %PROTOCOL% prints it
	}
	si.Method = r.Method
	si.Authority = r.Host
	si.Path = r.RequestURI // with the query, as Envoy's :path
	si.RequestID = r.Header.Get("X-Request-Id")
	si.DownstreamRemote = r.RemoteAddr
	if p := peerOf(r); p != nil {
		si.PeerID = p.PeerID
		si.MTLS = p.PeerCertSHA256 != "" // a verified client certificate
	}
	return si
}

// endStream completes si, hands it to obs and returns it to the pool.
func endStream(obs stream.Observer, si *stream.Info) {
	si.Duration = time.Since(si.Start)
	if obs != nil { // nil when the Info exists only for tracing
		obs(si)
	}
	stream.Put(si)
}

// grpcStatus is resp's grpc-status from its trailers or, for a trailers-only
// response, its headers; -1 when it has none or it is not a number.
func grpcStatus(resp *http.Response) int {
	v := resp.Trailer.Get("Grpc-Status")
	if v == "" {
		v = resp.Header.Get("Grpc-Status")
	}
	if v == "" || len(v) > 3 {
		return -1
	}
	n := 0
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return -1
		}
		n = n*10 + int(v[i]-'0')
	}
	return n
}
