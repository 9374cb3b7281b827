package gcpace

import (
	"context"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"
)

const mib = 1 << 20

// fakeRuntime is a runtime whose allocation counter, live heap and clock the
// test moves, and which records what the pacer sets.
type fakeRuntime struct {
	mu      sync.Mutex
	allocs  uint64
	live    uint64
	gogc    int64
	now     time.Time
	freed   int
	applied chan int64 // every SetGCPercent, in order
	ticked  chan struct{}
}

func newFake(gogc int64) *fakeRuntime {
	return &fakeRuntime{live: 4 * mib, gogc: gogc, now: time.Unix(1000, 0), applied: make(chan int64, 100), ticked: make(chan struct{}, 100)}
}

func (f *fakeRuntime) hooks() runtimeHooks {
	return runtimeHooks{
		read: func() (uint64, uint64, int64) {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.allocs, f.live, f.gogc
		},
		setGCPercent: func(p int) int {
			f.mu.Lock()
			old := f.gogc
			f.gogc = int64(p)
			f.mu.Unlock()
			f.applied <- int64(p)
			return int(old)
		},
		freeOSMemory: func() { f.mu.Lock(); f.freed++; f.mu.Unlock() },
		now:          func() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now },
		ticked:       func() { f.ticked <- struct{}{} },
	}
}

// second advances the clock by one second during which rate bytes were
// allocated.
func (f *fakeRuntime) second(rate uint64) {
	f.mu.Lock()
	f.allocs += rate
	f.now = f.now.Add(time.Second)
	f.mu.Unlock()
}

func TestNextFollowsTheAllocationRate(t *testing.T) {
	start := time.Unix(1000, 0)
	p := pacer{o: Options{Budget: 16 * mib, Period: time.Second}, base: 100, current: 100, prevAt: start}
	var allocs uint64
	at := start
	for i, tc := range []struct {
		rate uint64 // bytes allocated in the one-second sample
		live uint64
		want int64
		why  string
	}{
		{2 * mib, 4 * mib, 100, "GOGC=100 already lets a 4 MiB heap grow by two seconds' worth"},
		{20 * mib, 4 * mib, 500, "one second's 20 MiB within 4 MiB (GOGC=100) + 16 MiB of budget"},
		{21 * mib, 4 * mib, 500, "525 is within 10% of 500: left alone"},
		{100 * mib, 4 * mib, 500, "capped at the budget: (4+16)/4"},
		{12 * mib, 4 * mib, 300, "12 MiB a second over a 4 MiB heap"},
		{12 * mib, 8 * mib, 150, "the same rate over a larger live heap"},
		{0, 8 * mib, 100, "idle: the base"},
		{20 * mib, 0, 100, "no cycle has measured the live heap yet: unchanged"},
		{20 * mib, 1 * mib, 450, "a 1 MiB heap: the runtime's 4 MiB minimum goal, scaled by GOGC, would pass the budget at 1700; 450 puts the goal at 1+17 MiB"},
	} {
		allocs += tc.rate
		at = at.Add(time.Second)
		got := p.next(allocs, tc.live, at)
		if got != tc.want {
			t.Fatalf("sample %d (%d MiB/s, live %d MiB): GOGC %d, want %d: %s", i, tc.rate/mib, tc.live/mib, got, tc.want, tc.why)
		}
		p.current = got
	}
	// Half the rate over half a second is the same rate.
	allocs += 10 * mib
	at = at.Add(500 * time.Millisecond)
	if got := p.next(allocs, 4*mib, at); got != 500 {
		t.Fatalf("20 MiB/s sampled over 0.5 s: GOGC %d, want 500", got)
	}
}

func TestRunSetsFreesAndRestores(t *testing.T) {
	f := newFake(100)
	tick := make(chan time.Time)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		run(ctx, Options{Budget: 16 * mib, Period: time.Second}, f.hooks(), tick)
	}()
	step := func(rate uint64) { f.second(rate); tick <- time.Time{} }
	expect := func(what string, want int64) {
		t.Helper()
		select {
		case got := <-f.applied:
			if got != want {
				t.Fatalf("%s: GOGC set to %d, want %d", what, got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: GOGC not set, want %d", what, want)
		}
	}
	freed := func() int { f.mu.Lock(); defer f.mu.Unlock(); return f.freed }

	tick <- time.Time{} // taken once run has read its starting point: a sample of nothing
	step(20 * mib)
	expect("20 MiB/s", 500)
	if n := freed(); n != 0 {
		t.Fatalf("FreeOSMemory called %d times under load, want 0", n)
	}
	step(0)
	expect("idle", 100)
	if n := freed(); n != 1 {
		t.Fatalf("FreeOSMemory called %d times on return to idle, want 1: the heap the load grew is given back", n)
	}
	step(20 * mib)
	expect("20 MiB/s again", 500)
	cancel()
	expect("stopped under load", 100)
	<-done
}

func TestPacerOffWithoutBudgetOrWithGCOff(t *testing.T) {
	for _, tc := range []struct {
		name   string
		budget uint64
		gogc   int64
	}{{"budget 0", 0, 100}, {"GOGC=off", 16 * mib, -1}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(tc.gogc)
			done := make(chan struct{})
			go func() {
				defer close(done)
				run(t.Context(), Options{Budget: tc.budget}, f.hooks(), make(chan time.Time))
			}()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("the pacer did not return at once")
			}
		})
	}
}

// TestPacerOnTheRealRuntime allocates at a steady rate in this process and
// checks that the real pacer raises GOGC and puts it back once allocation
// stops.
func TestPacerOnTheRealRuntime(t *testing.T) {
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	runtime.GC() // a live heap to pace against

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		run(ctx, Options{Budget: 64 * mib, Period: time.Second, Interval: 100 * time.Millisecond}, realRuntime, nil)
	}()

	stopAlloc := make(chan struct{})
	allocDone := make(chan struct{})
	go func() {
		defer close(allocDone)
		var sink []byte
		for {
			select {
			case <-stopAlloc:
				_ = sink
				return
			default:
			}
			for range 64 {
				sink = make([]byte, 4096) // ~ 256 kB per ms: hundreds of MiB/s
			}
			time.Sleep(time.Millisecond)
		}
	}()
	waitGOGC := func(what string, ok func(int64) bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; {
			_, _, gogc := readMetrics()
			if ok(gogc) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: GOGC is %d", what, gogc)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitGOGC("under allocation load, want it raised above 100", func(g int64) bool { return g > 100 })
	close(stopAlloc)
	<-allocDone
	waitGOGC("after the load, want it back at 100", func(g int64) bool { return g == 100 })
	cancel()
	<-done
}

// TestRunWaitsUntilServing: the allocations of start-up, before Serving and
// in the interval where it turns true, are not paced.
func TestRunWaitsUntilServing(t *testing.T) {
	f := newFake(100)
	h := f.hooks()
	servingFrom := f.now.Add(2 * time.Second) // on the fake clock, so the tick that sees it is known
	serving := func() bool { return !h.now().Before(servingFrom) }
	tick := make(chan time.Time)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		run(ctx, Options{Budget: 16 * mib, Period: time.Second, Serving: serving}, h, tick)
	}()
	// Each step waits until the tick is handled: the next one moves the
	// fake's clock and counter.
	step := func(rate uint64) { f.second(rate); tick <- time.Time{}; <-f.ticked }
	tick <- time.Time{} // taken once run has read its starting point
	<-f.ticked
	step(50 * mib) // start-up, not serving yet
	step(50 * mib) // the interval in which serving began: still start-up
	step(0)        // serving and idle: nothing to change
	select {
	case got := <-f.applied:
		t.Fatalf("GOGC set to %d by the allocations of start-up", got)
	default:
	}
	step(20 * mib)
	select {
	case got := <-f.applied:
		if got != 500 {
			t.Fatalf("serving at 20 MiB/s: GOGC set to %d, want 500", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serving at 20 MiB/s: GOGC not set, want 500")
	}
	cancel()
	<-done
}
