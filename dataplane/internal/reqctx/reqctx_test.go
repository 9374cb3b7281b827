package reqctx

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type key struct{}

func newContext(parent context.Context) *Context {
	c := new(Context)
	c.Init(parent)
	return c
}

// waitFor polls cond for up to a second.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("%s: not within a second", what)
}

func TestCancel(t *testing.T) {
	deadline := time.Now().Add(time.Hour)
	parent, cancelParent := context.WithDeadline(context.WithValue(context.Background(), key{}, "v"), deadline)
	defer cancelParent()
	c := newContext(parent)
	if c.Value(key{}) != "v" {
		t.Error("the parent's value is missing")
	}
	if d, ok := c.Deadline(); !ok || !d.Equal(deadline) {
		t.Errorf("Deadline() = %v, %v; want the parent's", d, ok)
	}
	done := c.Done()
	if c.Err() != nil {
		t.Fatalf("Err() = %v before Cancel", c.Err())
	}
	select {
	case <-done:
		t.Fatal("Done closed before Cancel")
	default:
	}
	c.Cancel(nil)
	c.Cancel(errors.New("second")) // no effect
	<-done
	if !errors.Is(c.Err(), context.Canceled) {
		t.Errorf("Err() = %v, want context.Canceled", c.Err())
	}
	// Done asked for only after the end is closed too.
	c2 := newContext(context.Background())
	c2.Cancel(nil)
	<-c2.Done()
}

func TestParentEndsIt(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	c := newContext(parent)
	cancel()
	waitFor(t, "the parent's cancel reaching the child", func() bool { return c.Err() != nil })
	<-c.Done()
}

func TestOnCancel(t *testing.T) {
	c := newContext(context.Background())
	var ran atomic.Int32
	w := OnCancel(c, func() { ran.Add(1) })
	if w.c == nil {
		t.Fatal("OnCancel on a *Context did not take its slot")
	}
	// The slot is taken: a second watch goes through context.AfterFunc.
	var second atomic.Int32
	w2 := OnCancel(c, func() { second.Add(1) })
	if w2.c != nil {
		t.Fatal("a second watch took the busy slot")
	}
	c.Cancel(nil)
	if ran.Load() != 1 {
		t.Fatalf("the watch ran %d times by the end of Cancel, want 1 (on the cancelling goroutine)", ran.Load())
	}
	waitFor(t, "the AfterFunc watch", func() bool { return second.Load() == 1 })
	if w.Stop() || w2.Stop() {
		t.Error("Stop after the watch ran reported true")
	}
	// On an ended context, f still runs.
	var late atomic.Int32
	OnCancel(c, func() { late.Add(1) })
	waitFor(t, "a watch on an ended context", func() bool { return late.Load() == 1 })
}

func TestWatchStop(t *testing.T) {
	c := newContext(context.Background())
	var ran atomic.Int32
	old := OnCancel(c, func() { ran.Add(1) })
	if !old.Stop() {
		t.Fatal("Stop before Cancel reported false")
	}
	if old.Stop() {
		t.Fatal("a second Stop reported true")
	}
	cur := OnCancel(c, func() { ran.Add(10) })
	if old.Stop() {
		t.Fatal("a stale Watch stopped the slot's next one")
	}
	c.Cancel(nil)
	if ran.Load() != 10 || cur.Stop() {
		t.Errorf("ran %d, want only the current watch (10)", ran.Load())
	}
}

// TestOnCancelAllocates nothing with the slot free: the point of the package.
func TestOnCancelAllocatesNothing(t *testing.T) {
	c := newContext(context.Background())
	f := func() {}
	if n := testing.AllocsPerRun(100, func() { OnCancel(c, f).Stop() }); n != 0 {
		t.Errorf("OnCancel and Stop: %v allocations, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { c.Err() }); n != 0 {
		t.Errorf("Err: %v allocations, want 0", n)
	}
}

// TestChildren: contexts derived from a Context end with it, through its
// AfterFunc method rather than a goroutine each, and a stopped
// context.AfterFunc never runs.
func TestChildren(t *testing.T) {
	c := newContext(context.Background())
	before := runtime.NumGoroutine()
	child, cancelChild := context.WithCancel(c)
	defer cancelChild()
	timed, cancelTimed := context.WithTimeout(c, time.Hour)
	defer cancelTimed()
	var ran, stopped atomic.Int32
	context.AfterFunc(c, func() { ran.Add(1) })
	stop := context.AfterFunc(c, func() { stopped.Add(1) })
	gone, cancelGone := context.WithCancel(c)
	cancelGone() // removes itself from c's children
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines started to watch the context", n-before)
	}
	if !stop() {
		t.Error("stop of a pending AfterFunc reported false")
	}
	c.Cancel(nil)
	for _, ctx := range []context.Context{child, timed} {
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Errorf("%v: Err() = %v after the parent's Cancel", ctx, ctx.Err())
		}
	}
	if gone.Err() == nil {
		t.Error("a cancelled child lost its error")
	}
	waitFor(t, "context.AfterFunc", func() bool { return ran.Load() == 1 })
	time.Sleep(10 * time.Millisecond)
	if stopped.Load() != 0 {
		t.Error("a stopped AfterFunc ran")
	}
	// A child of an ended Context ends at once.
	late, cancelLate := context.WithCancel(c)
	defer cancelLate()
	waitFor(t, "a child of an ended context", func() bool { return late.Err() != nil })
}

// TestConcurrent runs watches, children and readers against a Cancel, for
// the race detector; every watch either is stopped or runs, never both.
func TestConcurrent(t *testing.T) {
	for range 200 {
		c := newContext(context.Background())
		var wg sync.WaitGroup
		var ran, stoppedRan atomic.Int32
		for range 4 {
			wg.Go(func() {
				var mine atomic.Bool
				w := OnCancel(c, func() { mine.Store(true); ran.Add(1) })
				if w.Stop() && mine.Load() {
					stoppedRan.Add(1)
				}
			})
		}
		wg.Go(func() {
			child, cancel := context.WithCancel(c)
			defer cancel()
			_ = child.Err()
		})
		wg.Go(func() { _ = c.Err(); _ = c.Done() })
		wg.Go(func() { c.Cancel(nil) })
		wg.Wait()
		if stoppedRan.Load() != 0 {
			t.Fatal("a watch both ran and was stopped")
		}
	}
}
