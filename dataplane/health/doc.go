// Package health keeps the health of a cluster's endpoints: passive outlier
// detection (Outlier, fed by the request path with each response or failure)
// and active health checks (Checker, probing endpoints over HTTP, gRPC or
// TCP). It decides, per endpoint (Host), whether it may take traffic; the
// cluster stage turns those decisions into a new picker, so pickers never
// wait on a probe or a lock.
//
// Concurrency: a Host's state is read with atomic loads by anyone (pickers
// are rebuilt from it, the admin page shows it). Outlier's result methods are
// called on request goroutines and take a mutex only when a host crosses an
// ejection threshold; Sweep is called by the owner's interval loop. A
// Checker's Run is one goroutine per endpoint, owned by the cluster upstream,
// and returns when its context is cancelled.
package health
