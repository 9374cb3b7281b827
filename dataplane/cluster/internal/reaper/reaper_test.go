package reaper

import (
	"sync"
	"testing"
	"time"
)

func TestTimer(t *testing.T) {
	var mu sync.Mutex
	var r Timer
	runs := make(chan struct{}, 10)
	sweep := func() {
		mu.Lock()
		r.Fired()
		mu.Unlock()
		runs <- struct{}{}
	}
	mu.Lock()
	r.Arm(10*time.Millisecond, sweep)
	r.Arm(10*time.Millisecond, sweep) // already due: no second sweep
	mu.Unlock()
	<-runs
	select {
	case <-runs:
		t.Fatal("armed twice, swept twice")
	case <-time.After(50 * time.Millisecond):
	}
	mu.Lock()
	r.Arm(10*time.Millisecond, sweep) // after Fired it arms again
	mu.Unlock()
	<-runs
	mu.Lock()
	r.Arm(10*time.Millisecond, sweep)
	r.Stop()
	r.Arm(0, sweep) // not positive: nothing
	mu.Unlock()
	select {
	case <-runs:
		t.Fatal("swept after Stop")
	case <-time.After(50 * time.Millisecond):
	}
}
