// Package httpproxy is the HTTP stage of the data plane: it serves HTTP/1.1 and
// prior-knowledge HTTP/2 (h2c) on one socket, matches each request against the
// listener's compiled route table, checks the listener's RBAC filter with the
// route's overrides (rbac.go: 403, or gRPC PERMISSION_DENIED), chooses a weighted cluster and an endpoint, and
// forwards the request over the cluster's pooled upstream transport, streaming the
// body both ways and forwarding trailers. Upgrade requests (WebSocket) get a
// dedicated HTTP/1.1 upstream connection spliced to the downstream one.
//
// Connect failures are retried (retry.go): when the upstream transport reports
// that the request never reached the endpoint (the dial was refused or timed
// out, the TLS handshake failed, or an HTTP/2 upstream refused the stream), the
// request goes to another endpoint of the same cluster, preferring ones this
// request has not tried, up to maxAttempts in all and within the route
// timeout, whatever the method, since nothing was sent. A request body is
// wrapped per attempt to see whether the transport read from it: once it did,
// the body may be partly gone and the request is not retried. Only when every
// attempt fails does the client get the usual error (503
// upstream_connect_failure, or gRPC UNAVAILABLE). A failure after the request
// reached the upstream is never retried. Upgrades retry their dial the same
// way. The tried-endpoints record lives on the stack; the only cost on the
// success path is the body wrapper, one allocation for requests with a body.
//
// Tracing (tracing.go): on a listener whose State has a Tracer, each request
// gets a span (dataplane/tracing) that is the child of the trace context it
// arrived with, the outbound request's traceparent names that span, and the
// span ends with the finished stream's record. Without a Tracer the request
// path does no tracing work and allocates nothing for it.
//
// Concurrency: Handler.Store publishes a State atomically; ServeHTTP loads it once
// per request and uses that value until the response ends, so a request in flight
// finishes on the config it started with. The State and everything it points to is
// immutable. Handler starts no goroutines of its own except one per upgraded
// connection's second copy direction, which CloseUpgraded waits for.
package httpproxy
