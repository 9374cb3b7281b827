// Package gcpace paces the sidecar's garbage collector by its allocation
// rate: under load the heap may grow by up to a fixed budget between
// cycles, so the collector runs a few times a second instead of dozens; at
// idle the process keeps its own GOGC and its small heap.
//
// Why: a sidecar's live heap is a few MiB, and at GOGC=100 Go starts a cycle
// after every few MiB allocated (never later than at a 4 MiB heap). Under
// load a proxy allocates a few kB per request, so at 15,000 requests/s that
// is 25 cycles a second, each about 2 ms of CPU, and with one worker
// (GOMAXPROCS=1) allocating requests assist every cycle's marking. Measured
// on the bench's HTTP/1.1 chain at a fixed 8,000 requests/s, the collector
// was about a fifth of each sidecar's CPU (docs/benchmarks.md). Raising GOGC
// for good would fix that but also keep start-up garbage resident and raise
// idle memory, the number a mesh pays on every pod. So the pacer raises
// GOGC only while the allocation rate calls for it, to let the heap grow by
// what one Period allocates, never by more than Budget beyond what the base
// GOGC allows; once the load is gone it puts GOGC back and returns the
// memory to the OS.
//
// A memory limit (GOMEMLIMIT) still applies: the runtime collects earlier
// when the limit comes near, whatever GOGC says.
//
// Concurrency: Run is one loop on its caller's goroutine; it alone sets
// GOGC while it runs.
package gcpace

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Options configure Run.
type Options struct {
	// Budget bounds how much more the heap may grow between cycles than
	// the base GOGC allows; 0 turns the pacer off.
	Budget uint64
	// Period is the time between cycles the pacer aims for under load.
	Period time.Duration
	// Interval is how often it samples the allocation rate.
	Interval time.Duration
	// Serving reports whether the process has started its real work; the
	// pacer samples from the first tick it does. Start-up (decoding the
	// first config, making keys) allocates fast for a moment, and pacing
	// that would only leave a larger heap behind. nil: from the start.
	Serving func() bool
}

// Defaults: about one cycle a second under load, within 4 MiB of extra heap,
// sampled every second. 8 MiB took another 2-4 % off the CPU per request
// for 4 MiB more peak memory per sidecar (docs/benchmarks.md); a mesh pays
// memory on every pod.
const (
	DefaultBudget   = 4 << 20
	DefaultPeriod   = time.Second
	DefaultInterval = time.Second
)

// heapMinimum is the runtime's smallest heap goal at GOGC=100; it scales
// with GOGC, so the pacer has to count it in (see pacer.next).
const heapMinimum = 4 << 20

// runtimeHooks is what the pacer reads from and sets on the runtime; tests
// replace it.
type runtimeHooks struct {
	read         func() (allocs, live uint64, gogc int64)
	setGCPercent func(int) int
	freeOSMemory func()
	now          func() time.Time
	ticked       func() // nil; tests learn here that a tick has been handled
}

var realRuntime = runtimeHooks{
	read:         readMetrics,
	setGCPercent: debug.SetGCPercent,
	freeOSMemory: debug.FreeOSMemory,
	now:          time.Now,
}

// Run paces the collector until ctx is done, then restores the GOGC it
// found. It returns at once when Budget is 0 or the collector is off
// (GOGC=off).
func Run(ctx context.Context, o Options) { run(ctx, o, realRuntime, nil) }

// run is Run with the runtime and the ticker's channel replaceable (tick nil:
// a real ticker of o.Interval).
func run(ctx context.Context, o Options, rt runtimeHooks, tick <-chan time.Time) {
	_, _, base := rt.read()
	if o.Budget == 0 || base <= 0 {
		return
	}
	if o.Period <= 0 {
		o.Period = DefaultPeriod
	}
	if tick == nil {
		if o.Interval <= 0 {
			o.Interval = DefaultInterval
		}
		t := time.NewTicker(o.Interval)
		defer t.Stop()
		tick = t.C
	}
	p := pacer{o: o, base: base, current: base, serving: o.Serving == nil}
	p.prevAllocs, _, _ = rt.read()
	p.prevAt = rt.now()
	defer func() {
		if p.current != p.base {
			rt.setGCPercent(int(p.base))
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		p.sample(rt)
		if rt.ticked != nil {
			rt.ticked()
		}
	}
}

// sample takes one sample and sets GOGC when it calls for a change.
func (p *pacer) sample(rt runtimeHooks) {
	allocs, live, _ := rt.read()
	if !p.serving {
		// Sample from here on, not from the start-up before.
		p.prevAllocs, p.prevAt = allocs, rt.now()
		p.serving = p.o.Serving()
		return
	}
	want := p.next(allocs, live, rt.now())
	if want == p.current {
		return
	}
	rt.setGCPercent(int(want))
	if want == p.base {
		// The load is gone: collect now and give back the heap that grew
		// under it, rather than wait for the scavenger.
		rt.freeOSMemory()
	}
	p.current = want
}

// pacer computes the GOGC for each sample.
type pacer struct {
	o          Options
	base       int64 // the process's GOGC: what idle runs at
	current    int64
	serving    bool // sampling has begun (Options.Serving)
	prevAllocs uint64
	prevAt     time.Time
}

// next returns the GOGC for a sample of the cumulative allocated bytes and
// the live heap taken at now.
func (p *pacer) next(allocs, live uint64, now time.Time) int64 {
	elapsed := now.Sub(p.prevAt)
	allocated := allocs - p.prevAllocs
	p.prevAllocs, p.prevAt = allocs, now
	if elapsed <= 0 || live == 0 {
		return p.current
	}
	// What one period allocates at this rate, within the budget.
	grow := uint64(float64(allocated) * float64(p.o.Period) / float64(elapsed))
	if most := live*uint64(p.base)/100 + p.o.Budget; grow > most {
		grow = most
	}
	// The runtime's goal is the larger of live*(1+GOGC/100) and
	// heapMinimum*GOGC/100; take the GOGC that puts the larger at
	// live+grow, so a small live heap does not stretch the goal past the
	// budget.
	want := min(int64(grow*100/live), int64((live+grow)*100/heapMinimum))
	if want <= p.base {
		return p.base
	}
	// Small moves are not worth a change: they would only make the pacer
	// follow the noise of one-second samples.
	if p.current != p.base && want*10 > p.current*9 && want*10 < p.current*11 {
		return p.current
	}
	return want
}

var samples = []metrics.Sample{
	{Name: "/gc/heap/allocs:bytes"},
	{Name: "/gc/heap/live:bytes"},
	{Name: "/gc/gogc:percent"},
}

// readMetrics reads the cumulative bytes allocated on the heap, the live
// heap marked by the last cycle and GOGC (negative when off).
func readMetrics() (allocs, live uint64, gogc int64) {
	s := make([]metrics.Sample, len(samples))
	copy(s, samples)
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64(), int64(s[2].Value.Uint64())
}
