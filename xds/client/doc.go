// Package client is the proxy's ADS client: it keeps one aggregated xDS stream to
// the control plane (incremental "delta" or state-of-the-world), subscribes to
// listeners and clusters (wildcard) and to the route configurations, endpoint
// assignments and SDS secrets they name (less the secrets Options.LocalSecrets
// provides), validates every response with xds/resource, ACKs or NACKs it, and
// hands each complete snapshot to Options.Apply, with the secrets' certificates
// and trust bundles resolved into the listeners' and clusters' TLS settings.
//
// Concurrency: Run owns all client state and runs the stream on its own
// goroutine plus one receive goroutine per stream, which it waits for before
// returning. Apply is called only from Run's goroutine, one call at a time.
// Run must not be called concurrently with itself; Close is called after Run
// returns. Synced and ConfigDump (the accepted resources in Envoy's admin
// format, for the admin endpoint) may be called from any goroutine. While the control plane is unreachable nothing is applied: the data
// plane keeps serving the last good snapshot, and Run reconnects with jittered
// exponential backoff and re-syncs.
package client
