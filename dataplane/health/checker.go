package health

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/config"
)

// CheckStats count one cluster's health-check probes (Envoy's
// health_check.attempt, success, failure). Accessed atomically.
type CheckStats struct {
	Attempts  atomic.Uint64
	Successes atomic.Uint64
	Failures  atomic.Uint64
}

// Checker runs one cluster's active health check against its hosts.
type Checker struct {
	// Set in NewChecker, read-only after.
	cfg     *config.HealthCheck
	probe   func(ctx context.Context, addr string) error
	changed func() // called after a host turned healthy or unhealthy
	stats   *CheckStats
}

// NewChecker returns a checker for cfg. probe makes one attempt against an
// address and must return once ctx is done; changed is called (on a Run
// goroutine) whenever a host's availability changed; stats may be shared.
func NewChecker(cfg *config.HealthCheck, probe func(ctx context.Context, addr string) error, changed func(), stats *CheckStats) *Checker {
	if changed == nil {
		changed = func() {}
	}
	return &Checker{cfg: cfg, probe: probe, changed: changed, stats: stats}
}

// Start marks h as not yet checked: unhealthy until its first probe passes,
// as Envoy treats hosts of a health-checked cluster. Call it for a host new to
// health checking, before its Run starts.
func Start(h *Host) {
	h.hcOK, h.hcFail = 0, 0
	h.pendingHC.Store(true)
	h.failedHC.Store(true)
}

// Stop clears h's active health-check state (health checking was turned off);
// its Run must have returned. It reports whether h became available.
func Stop(h *Host) bool {
	h.hcOK, h.hcFail = 0, 0
	h.pendingHC.Store(false)
	return h.failedHC.Swap(false) && !h.ejected.Load()
}

// Run probes addr every interval (plus jitter) and records each result in h
// until ctx is done. The first probe is immediate.
func (c *Checker) Run(ctx context.Context, h *Host, addr string) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		err := c.probe(pctx, addr)
		cancel()
		if ctx.Err() != nil {
			return // stopped mid-probe: the result says nothing about the host
		}
		c.Record(h, err == nil)
		wait := c.cfg.Interval
		if j := c.cfg.IntervalJitter; j > 0 {
			wait += rand.N(j)
		}
		t.Reset(wait)
	}
}

// Record applies one probe result to h: UnhealthyThreshold failures in a row
// make a healthy host unhealthy, HealthyThreshold successes an unhealthy one
// healthy, and a host that was never probed needs a single success.
func (c *Checker) Record(h *Host, ok bool) {
	if c.stats != nil {
		c.stats.Attempts.Add(1)
		if ok {
			c.stats.Successes.Add(1)
		} else {
			c.stats.Failures.Add(1)
		}
	}
	first := h.pendingHC.Swap(false)
	if ok {
		h.hcFail = 0
		h.hcOK++
		if h.failedHC.Load() && (first || h.hcOK >= c.cfg.HealthyThreshold) {
			h.failedHC.Store(false)
			c.changed()
		} else if first {
			c.changed() // the pending flag went
		}
		return
	}
	h.hcOK = 0
	h.hcFail++
	if !h.failedHC.Load() && h.hcFail >= c.cfg.UnhealthyThreshold {
		h.failedHC.Store(true)
		c.changed()
	}
}
