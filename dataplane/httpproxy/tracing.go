package httpproxy

import (
	"net/http"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/stream"
	"github.com/tinymesh/tinymesh/dataplane/tracing"
)

// Tracing: when a listener's State has a Tracer, ServeHTTP starts one span per
// request (SERVER on inbound listeners, CLIENT on outbound ones) as the child
// of the trace context the request carries, writes the span's traceparent into
// the outbound headers (never into the inbound request), records the trace id
// in the stream.Info for access logs, and ends the span from that Info when the
// handler returns. Without a Tracer, startSpan returns nil and nothing else
// runs: no allocation, no header work.

// startSpan starts r's span on a traced listener and records its trace id in
// si, which is not nil when st.Tracer is set.
func startSpan(r *http.Request, st *State, si *stream.Info) *tracing.Span {
	if st.Tracer == nil {
		return nil
	}
	sp := st.Tracer.Start(r.Context(), r.Header, r.Method, st.Direction == config.Inbound)
	si.TraceID = sp.TraceID()
	return sp
}
