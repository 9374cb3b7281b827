// Package reqctx is the context of a request that one of meshproxy's
// servers serves: a context.Context its server cancels (the stream was
// reset, the handler returned), which an upstream transport can watch
// without allocating.
//
// Why: on the server sidecar, a context.WithCancel per HTTP/2 stream and
// the context.AfterFunc with which the HTTP/1.1 transport watches it took
// about ten of the thirty allocations of a proxied request (the
// cancelCtx, its Done channel, its map of children, the AfterFunc's
// context and closures) and the locks around them. A Context lives inside
// the stream that owns it, makes its Done channel only for a caller that
// asks for it, and has one watch slot (OnCancel) for the transport.
//
// Concurrency: all methods may be called from any goroutine.
package reqctx

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Context is a request's context; the zero value is not usable: call Init.
// It must not be copied after Init.
type Context struct {
	parent context.Context // values and deadline; cancels this one if it ends

	ended atomic.Bool // Cancel has begun; Err is set

	mu         sync.Mutex
	err        error
	done       chan struct{} // made by the first Done, or closedchan
	watch      func()        // OnCancel's slot
	watchGen   uint64        // counts OnCancel registrations, so a stale Watch stops nothing
	children   []*afterFunc  // registered through AfterFunc
	stopParent func() bool
}

// afterFunc is one AfterFunc registration.
type afterFunc struct{ f func() }

var closedchan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Init readies c as a child of parent: it has parent's values and deadline
// and ends when parent does, or when Cancel is called.
func (c *Context) Init(parent context.Context) {
	c.parent = parent
	if parent.Done() != nil {
		c.stopParent = context.AfterFunc(parent, func() { c.Cancel(parent.Err()) })
	}
}

// Cancel ends c with err (context.Canceled if nil): Done is closed, the
// watch and the AfterFunc registrations run on the calling goroutine, in
// that order. Later calls do nothing.
func (c *Context) Cancel(err error) {
	if err == nil {
		err = context.Canceled
	}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	c.ended.Store(true)
	if c.done == nil {
		c.done = closedchan
	} else {
		close(c.done)
	}
	watch, children, stopParent := c.watch, c.children, c.stopParent
	c.watch, c.children, c.stopParent = nil, nil, nil
	c.mu.Unlock()
	if watch != nil {
		watch()
	}
	for _, a := range children {
		a.f()
	}
	if stopParent != nil {
		stopParent()
	}
}

func (c *Context) Deadline() (time.Time, bool) { return c.parent.Deadline() }

func (c *Context) Value(key any) any { return c.parent.Value(key) }

func (c *Context) Err() error {
	if !c.ended.Load() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Done returns a channel closed when c ends; it is made by the first call.
func (c *Context) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
	}
	return c.done
}

// AfterFunc registers f to run when c ends, and is what the context package
// uses for c's children (context.WithCancel, WithTimeout and AfterFunc on
// c): f runs on the goroutine that cancels c, as a cancelCtx cancels its
// children. On an ended c, f runs at once on a goroutine of its own. stop
// removes f and reports whether it did so before f was started.
func (c *Context) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	a := &afterFunc{f: f}
	c.children = append(c.children, a)
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, b := range c.children {
			if b == a {
				c.children = append(c.children[:i], c.children[i+1:]...)
				return true
			}
		}
		return false
	}
}

func (c *Context) String() string { return "reqctx.Context" }

// Watch is a function set to run when a context ends; Stop undoes it.
type Watch struct {
	c    *Context
	gen  uint64
	stop func() bool
}

// OnCancel arranges for f to run once ctx ends. When ctx is a *Context with
// its watch slot free, f takes the slot, which allocates nothing, and runs
// on the goroutine that cancels ctx: f must be quick and must not block.
// Otherwise, and for a ctx that has ended, context.AfterFunc runs f.
func OnCancel(ctx context.Context, f func()) Watch {
	if c, ok := ctx.(*Context); ok {
		c.mu.Lock()
		if c.err == nil && c.watch == nil {
			c.watch = f
			c.watchGen++
			gen := c.watchGen
			c.mu.Unlock()
			return Watch{c: c, gen: gen}
		}
		c.mu.Unlock()
	}
	return Watch{stop: context.AfterFunc(ctx, f)}
}

// Stop keeps f from running and reports whether it did so before f was
// started, as the stop function of context.AfterFunc does.
func (w Watch) Stop() bool {
	if w.c == nil {
		return w.stop()
	}
	c := w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.watch == nil || c.watchGen != w.gen {
		return false
	}
	c.watch = nil
	return true
}
