package health

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/config"
)

// Outlier is one cluster upstream's outlier detector (Envoy's consecutive_5xx
// and consecutive_gateway_failure detectors). Ejection happens inline, on the
// request goroutine whose result crosses a threshold; un-ejection happens in
// Sweep, which the owner calls every Interval.
type Outlier struct {
	// Set in NewOutlier, read-only after.
	changed func() // called under mu after any ejection or un-ejection
	now     func() time.Time
	roll    func() uint32 // 0..99, for the enforcing_* percentages

	cfg atomic.Pointer[config.OutlierDetection] // nil: detection off

	// EjectionsEnforced counts ejections (Envoy's
	// outlier_detection.ejections_enforced_total). Accessed atomically.
	EjectionsEnforced atomic.Uint64

	mu    sync.Mutex
	hosts []*Host // the cluster's endpoints, for max_ejection_percent; guarded by mu
}

// OutlierOptions configure an Outlier; zero fields take real-world defaults.
type OutlierOptions struct {
	// Changed is called, with the detector's lock held, after a host was
	// ejected or returned; it must not call back into the Outlier.
	Changed func()
	Now     func() time.Time // default time.Now
	Roll    func() uint32    // default: uniform 0..99
}

// NewOutlier returns a detector that is off until Configure.
func NewOutlier(opts OutlierOptions) *Outlier {
	o := &Outlier{changed: opts.Changed, now: opts.Now, roll: opts.Roll}
	if o.changed == nil {
		o.changed = func() {}
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.roll == nil {
		o.roll = func() uint32 { return rand.Uint32N(100) }
	}
	return o
}

// Configure puts cfg in force over hosts (the cluster's endpoints). With a nil
// cfg detection is off and every ejected host returns at once.
func (o *Outlier) Configure(cfg *config.OutlierDetection, hosts []*Host) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.hosts = hosts
	o.cfg.Store(cfg)
	if cfg != nil {
		return
	}
	changed := false
	for _, h := range hosts {
		h.cons5xx.Store(0)
		h.consGW.Store(0)
		h.multiplier = 0
		if h.ejected.Swap(false) {
			changed = true
		}
	}
	if changed {
		o.changed()
	}
}

// Enabled reports whether detection is on.
func (o *Outlier) Enabled() bool { return o.cfg.Load() != nil }

// Response records an upstream HTTP response status from h: 5xx counts as an
// error (502, 503 and 504 also as gateway failures), anything else resets the
// host's consecutive counters.
func (o *Outlier) Response(h *Host, status int) {
	switch {
	case status == 502 || status == 503 || status == 504:
		o.GatewayFailure(h)
	case status >= 500 && status < 600:
		o.serverError(h)
	default:
		o.Success(h)
	}
}

// Success records a successful result from h (also a TCP connect).
func (o *Outlier) Success(h *Host) {
	// Load before Store: the common case writes nothing, so hosts that are
	// fine do not bounce a cache line between request goroutines.
	if h.cons5xx.Load() != 0 {
		h.cons5xx.Store(0)
	}
	if h.consGW.Load() != 0 {
		h.consGW.Store(0)
	}
}

func (o *Outlier) serverError(h *Host) {
	cfg := o.cfg.Load()
	if cfg == nil {
		return
	}
	if h.consGW.Load() != 0 {
		h.consGW.Store(0)
	}
	if n := h.cons5xx.Add(1); cfg.Consecutive5xx > 0 && n == cfg.Consecutive5xx {
		o.detected(h, cfg.EnforcingConsecutive5xx)
	}
}

// GatewayFailure records a 502, 503 or 504 from h, or a locally originated
// failure (connect failure, timeout or reset before a response), which Envoy
// maps to a gateway failure unless split_external_local_origin_errors is
// set. It counts towards both detectors.
func (o *Outlier) GatewayFailure(h *Host) {
	cfg := o.cfg.Load()
	if cfg == nil {
		return
	}
	gw := h.consGW.Add(1)
	n := h.cons5xx.Add(1)
	if cfg.ConsecutiveGatewayFailure > 0 && gw == cfg.ConsecutiveGatewayFailure &&
		o.detected(h, cfg.EnforcingConsecutiveGatewayFailure) {
		return
	}
	if cfg.Consecutive5xx > 0 && n == cfg.Consecutive5xx {
		o.detected(h, cfg.EnforcingConsecutive5xx)
	}
}

// detected handles a host found to be an outlier: it is ejected with
// probability enforcing percent, unless it is ejected already or the
// cluster's max_ejection_percent is reached. It reports whether it ejected.
func (o *Outlier) detected(h *Host, enforcing uint32) bool {
	if enforcing == 0 || (enforcing < 100 && o.roll() >= enforcing) {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	cfg := o.cfg.Load()
	if cfg == nil || h.ejected.Load() {
		return false
	}
	// Envoy: with no host ejected the outlier is ejected whatever the
	// percentage; otherwise only while the ejected share is below it.
	ejected := 0
	for _, x := range o.hosts {
		if x.ejected.Load() {
			ejected++
		}
	}
	if ejected > 0 && uint64(ejected)*100 >= uint64(cfg.MaxEjectionPercent)*uint64(len(o.hosts)) {
		return false
	}
	h.multiplier++
	d := cfg.BaseEjectionTime * time.Duration(h.multiplier)
	if limit := max(cfg.BaseEjectionTime, cfg.MaxEjectionTime); d > limit || d <= 0 {
		d = limit
	}
	h.ejectedUntil.Store(o.now().Add(d).UnixNano())
	h.ejected.Store(true)
	h.ejections.Add(1)
	h.cons5xx.Store(0)
	h.consGW.Store(0)
	o.EjectionsEnforced.Add(1)
	o.changed()
	return true
}

// Sweep returns the hosts whose ejection time is over and, as Envoy does,
// lowers by one the ejection multiplier of each host in service.
func (o *Outlier) Sweep() {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now().UnixNano()
	changed := false
	for _, h := range o.hosts {
		switch {
		case h.ejected.Load():
			if now >= h.ejectedUntil.Load() {
				h.ejected.Store(false)
				changed = true
			}
		case h.multiplier > 0:
			h.multiplier--
		}
	}
	if changed {
		o.changed()
	}
}

// Active returns how many hosts are ejected.
func (o *Outlier) Active() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, h := range o.hosts {
		if h.ejected.Load() {
			n++
		}
	}
	return n
}
