// Package reaper schedules an upstream transport's sweep of idle
// connections: a timer armed while the transport holds connections, not a
// goroutine, so nothing runs while there is nothing to reap.
//
// Concurrency: a Timer is guarded by its transport's lock; Arm, Fired and
// Stop are called with that lock held, and the sweep takes it.
package reaper

import "time"

// Timer runs a sweep once per arming. The zero value is ready.
type Timer struct {
	t     *time.Timer
	armed bool
}

// Arm makes sure sweep runs within after, unless it is already due or after
// is not positive.
func (r *Timer) Arm(after time.Duration, sweep func()) {
	if after <= 0 || r.armed {
		return
	}
	r.armed = true
	if r.t == nil {
		r.t = time.AfterFunc(after, sweep)
		return
	}
	r.t.Reset(after)
}

// Armed reports whether a sweep is due. Callers check it before Arm, whose
// sweep argument, a method value, would otherwise be allocated on every call.
func (r *Timer) Armed() bool { return r.armed }

// Fired is the sweep's first step: the timer is no longer due, and the
// sweep re-arms it if connections remain.
func (r *Timer) Fired() { r.armed = false }

// Stop cancels a sweep that is due.
func (r *Timer) Stop() {
	if r.armed {
		r.t.Stop()
		r.armed = false
	}
}
