// Package httpproxy is the HTTP stage of the data plane: it serves HTTP/1.1 and
// prior-knowledge HTTP/2 (h2c) on one socket, matches each request against the
// listener's compiled route table, chooses a weighted cluster and an endpoint, and
// forwards the request over the cluster's pooled upstream transport, streaming the
// body both ways and forwarding trailers. Upgrade requests (WebSocket) get a
// dedicated HTTP/1.1 upstream connection spliced to the downstream one.
//
// Concurrency: Handler.Store publishes a State atomically; ServeHTTP loads it once
// per request and uses that value until the response ends, so a request in flight
// finishes on the config it started with. The State and everything it points to is
// immutable. Handler starts no goroutines of its own except one per upgraded
// connection's second copy direction, which CloseUpgraded waits for.
package httpproxy
