package tcpproxy

import (
	"crypto/tls"
	"net"

	"github.com/tinymesh/tinymesh/dataplane/stream"
	"github.com/tinymesh/tinymesh/dataplane/tracing"
)

// Tracing: when a listener's State has a Tracer, each connection gets one
// span (SERVER on inbound listeners, CLIENT on outbound ones), named after
// the cluster it is proxied to. TCP carries no trace context, so the span is
// the root of a new trace on every sidecar (dataplane/tracing, tcp.go). It
// ends with the connection, from the same stream.Info that metrics and
// access logs get. Without a Tracer nothing here runs beyond a nil check.

// startSpan starts the span of the connection described by si, and records
// its trace id in si for access logs (%TRACE_ID%). nil when tracing is off.
func startSpan(st *State, si *stream.Info) *tracing.Span {
	if st.Tracer == nil {
		return nil
	}
	name := "tcp_proxy"
	if st.Cluster != nil {
		name = st.Cluster.Name
	}
	sp := st.Tracer.StartTCP(name, st.Inbound)
	si.TraceID = sp.TraceID()
	return sp
}

// upstreamPeer records the upstream's SPIFFE ID on sp when up is an mTLS
// connection. The cluster's transport checked the server's certificate
// against the cluster's SAN matchers during the handshake (dataplane/cluster
// verifies in VerifyConnection), so a connection that exists is verified.
func upstreamPeer(sp *tracing.Span, up net.Conn) {
	if sp == nil {
		return
	}
	for {
		if tc, ok := up.(*tls.Conn); ok {
			cs := tc.ConnectionState()
			if len(cs.PeerCertificates) > 0 {
				for _, u := range cs.PeerCertificates[0].URIs {
					if u.Scheme == "spiffe" && u.Host != "" {
						sp.SetUpstreamPeer(u.String())
						return
					}
				}
			}
			return
		}
		w, ok := up.(interface{ NetConn() net.Conn })
		if !ok {
			return
		}
		up = w.NetConn()
	}
}
