// Package lb holds the data plane's pickers: lock-free, allocation-free choosers
// built once per config snapshot and read by any number of request goroutines.
//
// Concurrency: a picker is immutable except for one atomic counter, so Pick may be
// called from any goroutine without locks. Pickers never block and never allocate;
// anything slow (dials, health probes) happens elsewhere and shows up as a new
// picker in the next snapshot.
package lb

import (
	"slices"
	"sort"
	"sync/atomic"
)

// RoundRobin cycles through a fixed list of endpoint addresses.
type RoundRobin struct {
	addrs []string       // set in NewRoundRobin, read-only after
	next  *atomic.Uint64 // accessed atomically; own, or shared (NewRoundRobinShared)
	own   atomic.Uint64
}

// NewRoundRobin returns a picker over addrs, which it keeps; the caller must not
// modify the slice afterwards. Endpoint weights are not honoured: the config
// contract only promises ROUND_ROBIN, which Envoy also treats as unweighted when
// all weights are equal, the only case the control plane produces.
func NewRoundRobin(addrs []string) *RoundRobin {
	p := &RoundRobin{addrs: addrs}
	p.next = &p.own
	return p
}

// NewRoundRobinShared is NewRoundRobin with a position counter shared with
// other pickers: a cluster whose healthy endpoints change gets a new picker
// each time, and sharing the counter keeps the rotation going across them
// rather than restarting at the first endpoint.
func NewRoundRobinShared(addrs []string, next *atomic.Uint64) *RoundRobin {
	return &RoundRobin{addrs: addrs, next: next}
}

// Pick returns the next address, or false when there are no endpoints.
func (p *RoundRobin) Pick() (string, bool) {
	n := uint64(len(p.addrs))
	if n == 0 {
		return "", false
	}
	i := (p.next.Add(1) - 1) % n
	return p.addrs[i], true
}

// PickExcept returns the next address unless it is in skip, else the first
// address after it (in list order, wrapping) that is not, for retrying a failed
// connect on another endpoint. It advances the round robin once, like Pick, and
// finds an untried endpoint whenever one exists, even while other goroutines
// pick concurrently. When every endpoint is in skip it returns the picked one:
// retrying an endpoint beats giving up (Envoy does the same with one endpoint).
// It does not retain skip, so a slice of the caller's stack array stays there.
func (p *RoundRobin) PickExcept(skip []string) (string, bool) {
	n := uint64(len(p.addrs))
	if n == 0 {
		return "", false
	}
	i := (p.next.Add(1) - 1) % n
	for k := range n {
		if a := p.addrs[(i+k)%n]; !slices.Contains(skip, a) {
			return a, true
		}
	}
	return p.addrs[i], true
}

// Len reports how many endpoints the picker chooses from.
func (p *RoundRobin) Len() int { return len(p.addrs) }

// Addrs returns the addresses in pick order; the slice is the picker's and must
// not be modified.
func (p *RoundRobin) Addrs() []string { return p.addrs }

// Peek returns the address the next Pick would return, without advancing the
// round robin (for the admin route explainer; concurrent picks may take it first).
func (p *RoundRobin) Peek() (string, bool) {
	n := uint64(len(p.addrs))
	if n == 0 {
		return "", false
	}
	return p.addrs[p.next.Load()%n], true
}

// Weighted chooses an index in proportion to fixed weights. Pick n maps to the
// point (n*stride) mod total on the cumulative weights, with stride coprime to
// total: every window of total consecutive picks visits each point exactly once,
// so each index gets exactly its share per window (random choice only approaches
// that statistically), and a stride near total/phi interleaves the indices instead
// of sending long runs to one of them, so any subsequence of picks (one client's
// among many) also sees the split.
type Weighted struct {
	cum    []uint64      // prefix sums of the weights; set in NewWeighted, read-only after
	total  uint64        // cum[len-1]
	stride uint64        // coprime with total
	next   atomic.Uint64 // accessed atomically
}

// NewWeighted returns a chooser over len(weights) indices. Zero weights are never
// chosen; if all are zero (or there are none) Pick returns -1.
func NewWeighted(weights []uint32) *Weighted {
	w := &Weighted{cum: make([]uint64, len(weights))}
	var sum uint64
	for i, x := range weights {
		sum += uint64(x)
		w.cum[i] = sum
	}
	w.total = sum
	if sum > 0 {
		w.stride = uint64(float64(sum)*0.6180339887) | 1
		for gcd(w.stride, sum) != 1 {
			w.stride++
		}
	}
	return w
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// Pick returns the chosen index, or -1 when no index has weight.
func (w *Weighted) Pick() int {
	if w.total == 0 {
		return -1
	}
	if len(w.cum) == 1 {
		return 0
	}
	// Both factors are below 2^32, so the product cannot overflow.
	x := ((w.next.Add(1) - 1) % w.total) * w.stride % w.total
	// Smallest i with cum[i] > x; sort.Search does not allocate.
	return sort.Search(len(w.cum), func(i int) bool { return w.cum[i] > x })
}
