package rbac

import (
	"sync/atomic"
	"time"
)

// DenialsPerSecond bounds the denial log lines a DenyLog lets through per
// second, so that a misbehaving caller cannot flood the log.
const DenialsPerSecond = 20

// DenyLog rate-limits denial log lines without locks: at most
// DenialsPerSecond per wall-clock second; lines over the limit are counted and
// the count is reported by the next line let through. The zero value is ready
// to use; it is safe for concurrent use. The limit is approximate under
// contention at a second boundary, which is fine for logs.
type DenyLog struct {
	window     atomic.Int64 // unix second the count is for
	count      atomic.Int64 // lines let through or suppressed in window
	suppressed atomic.Int64 // lines suppressed since the last one let through
}

// Allow reports whether a denial at now may be logged and, if so, how many
// were suppressed before it.
func (d *DenyLog) Allow(now time.Time) (ok bool, suppressed int64) {
	sec := now.Unix()
	if w := d.window.Load(); w != sec && d.window.CompareAndSwap(w, sec) {
		d.count.Store(0)
	}
	if d.count.Add(1) > DenialsPerSecond {
		d.suppressed.Add(1)
		return false, 0
	}
	return true, d.suppressed.Swap(0)
}
