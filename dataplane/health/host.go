package health

import (
	"sync/atomic"
	"time"
)

// Host is the health state of one endpoint of one cluster upstream. It lives
// as long as the endpoint stays in the upstream, across config snapshots. The
// zero value is a healthy host.
type Host struct {
	// Accessed atomically.
	cons5xx      atomic.Uint32 // consecutive 5xx (gateway failures included)
	consGW       atomic.Uint32 // consecutive gateway failures (502, 503, 504, local-origin errors)
	ejected      atomic.Bool   // failed_outlier_check
	failedHC     atomic.Bool   // failed_active_hc
	pendingHC    atomic.Bool   // pending_active_hc: not probed yet
	ejections    atomic.Uint32 // times ejected, for the admin page
	ejectedUntil atomic.Int64  // unix nanos; meaningful while ejected

	// multiplier scales the next ejection time (Envoy: base_ejection_time
	// times the number of ejections, decremented by each sweep the host
	// spends in service). Guarded by Outlier.mu.
	multiplier uint32

	// Consecutive probe results; written only by the host's Checker goroutine.
	hcOK, hcFail uint32
}

// Available reports whether the host may take traffic: neither ejected nor
// failing its active health check.
func (h *Host) Available() bool { return !h.ejected.Load() && !h.failedHC.Load() }

// Ejected reports whether outlier detection has ejected the host.
func (h *Host) Ejected() bool { return h.ejected.Load() }

// FailedActiveHC reports whether the host fails its active health check
// (or has not passed one yet).
func (h *Host) FailedActiveHC() bool { return h.failedHC.Load() }

// PendingActiveHC reports whether the host has not been probed yet.
func (h *Host) PendingActiveHC() bool { return h.pendingHC.Load() }

// Ejections returns how many times the host has been ejected.
func (h *Host) Ejections() uint32 { return h.ejections.Load() }

// EjectedFor returns how long the host's ejection has left at now (0 when it
// is not ejected or is due to return at the next sweep).
func (h *Host) EjectedFor(now time.Time) time.Duration {
	if !h.ejected.Load() {
		return 0
	}
	return max(0, time.Unix(0, h.ejectedUntil.Load()).Sub(now))
}

// Flags returns the host's health as Envoy's admin /clusters prints
// health_flags: "healthy", or "/"-prefixed flags such as
// "/failed_active_hc/pending_active_hc" or "/failed_outlier_check".
func (h *Host) Flags() string {
	var s string
	if h.failedHC.Load() {
		s += "/failed_active_hc"
	}
	if h.pendingHC.Load() {
		s += "/pending_active_hc"
	}
	if h.ejected.Load() {
		s += "/failed_outlier_check"
	}
	if s == "" {
		return "healthy"
	}
	return s
}
