package tracing

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/config"
)

// closeTimeout bounds the flush of a tracer that config no longer uses.
const closeTimeout = 5 * time.Second

// Set keeps the tracers of the HCM tracing configs in force, one per
// distinct config.Tracing, so that listeners with the same settings share an
// exporter and a config push that keeps a setting keeps its tracer (and its
// queued spans).
//
// Concurrency: Use and Close are called from the proxy's config goroutine
// (they are serialised by a mutex anyway); a tracer dropped by Use is flushed
// and closed on a goroutine of the Set, which Close waits for.
type Set struct {
	base Options // set in NewSet, read-only after

	mu      sync.Mutex
	tracers map[config.Tracing]*Tracer // guarded by mu
	closing sync.WaitGroup             // tracers being closed
}

// NewSet returns an empty Set whose tracers take their resource attributes
// (ServiceName, Namespace, NodeID), BatchTimeout and DialCluster from base;
// protocol, endpoint or cluster, timeout and sampling come from each config,
// and a config's ServiceName overrides base's.
func NewSet(base Options) *Set {
	return &Set{base: base, tracers: make(map[config.Tracing]*Tracer)}
}

// Use returns the tracer of every config in cfgs, creating the missing ones,
// and closes in the background those no longer in cfgs: requests still in
// flight on them end their spans on a closed tracer, which drops them. A
// config whose tracer cannot be created is left out of the map, with an
// error naming it.
func (s *Set) Use(cfgs []config.Tracing) (map[config.Tracing]*Tracer, []error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[config.Tracing]*Tracer, len(cfgs))
	var errs []error
	for _, c := range cfgs {
		if _, ok := out[c]; ok {
			continue
		}
		if t, ok := s.tracers[c]; ok {
			out[c] = t
			continue
		}
		o := s.base
		o.Protocol, o.Endpoint, o.TLS, o.Cluster, o.Authority = c.Protocol, c.Endpoint, c.TLS, c.Cluster, c.Authority
		o.Timeout, o.SamplingPercent = c.Timeout, c.SamplingPercent
		if c.ServiceName != "" {
			o.ServiceName = c.ServiceName
		}
		t, err := New(o)
		if err != nil {
			errs = append(errs, fmt.Errorf("tracing to %s: %w", describe(c), err))
			continue
		}
		out[c] = t
	}
	for c, t := range s.tracers {
		if _, ok := out[c]; !ok {
			s.closing.Add(1)
			go func() {
				defer s.closing.Done()
				ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
				defer cancel()
				t.Close(ctx)
			}()
		}
	}
	s.tracers = out
	return out, errs
}

// Close flushes and closes every tracer until ctx is done, and waits for
// those Use dropped.
func (s *Set) Close(ctx context.Context) error {
	s.mu.Lock()
	ts := s.tracers
	s.tracers = map[config.Tracing]*Tracer{}
	s.mu.Unlock()
	var first error
	for _, t := range ts {
		if err := t.Close(ctx); err != nil && first == nil {
			first = err
		}
	}
	s.closing.Wait()
	return first
}

// describe names where c exports to, for errors.
func describe(c config.Tracing) string {
	if c.Cluster != "" {
		return c.Protocol.String() + " cluster " + c.Cluster
	}
	return c.Protocol.String() + " " + c.Endpoint
}
