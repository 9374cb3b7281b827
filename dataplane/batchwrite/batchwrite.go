// Package batchwrite coalesces the writes of one connection into fewer
// syscalls, for the sidecar-to-sidecar HTTP/2 connections.
//
// net/http's HTTP/2 server and client flush their buffered writer whenever
// their write queue runs empty: a response is a HEADERS flush and then a DATA
// flush, a request one flush, each a write(2) of its own, although the frames
// of the streams in flight are all ready within the same few microseconds. An
// event-loop proxy writes once per loop iteration instead. Conn does the
// same for Go: Write copies into a buffer and schedules a flush that first
// yields the processor (runtime.Gosched), so the goroutines that are already
// runnable (the handler about to send its DATA frame, other streams'
// handlers) add their frames before the one write(2).
//
// Nothing waits on a timer, so an idle connection sends at once: the flush
// goroutine runs as soon as no other goroutine is ready. Write errors of a
// flush are returned by the next Write (as the kernel's send buffer defers
// them anyway), and a batch is written by Write itself once it would pass
// maxBatch, so a peer that stops reading still blocks the writer.
//
// maxBatch is small (1 KiB, a dozen or two small requests or responses) on
// purpose. Unbounded, a batch held every stream that became ready in a
// scheduling round, and the two sidecars of a chain took turns: one worked
// through a whole batch while the other waited for it, and both cores idled
// half the time. Smaller batches let the peer start on the first requests
// while the rest are still being written: 13 % more requests/s through the
// chain at the same CPU per request (docs/benchmarks.md).
//
// A connection accepted by Listener writes through until Enable turns
// batching on: the listener cannot know yet whether it will speak HTTP/2, and
// an HTTP/1.1 connection has one response in flight at a time, nothing to
// coalesce, so batching there would only delay each response until the
// processor is idle and cost a goroutine per write.
//
// Concurrency: Write, Close and CloseWrite may be called from any goroutine;
// bytes reach the connection in the order the Write calls returned.
package batchwrite

import (
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// maxBatch bounds what Write buffers; a Write that would pass it writes the
// buffer and itself at once.
const maxBatch = 1 << 10

// maxSpare bounds the buffer kept for the next batch.
const maxSpare = 16 << 10

// closeFlushTimeout bounds the write of what is buffered when the connection
// is closed (a GOAWAY, the last DATA frame): a peer that stopped reading must
// not hold Close.
const closeFlushTimeout = time.Second

// Conn is a net.Conn whose writes are coalesced (see the package comment).
type Conn struct {
	net.Conn

	// wmu serialises writes to Conn: flushes and direct writes keep the order
	// of the bytes because each takes the buffer under mu while holding wmu.
	wmu sync.Mutex

	batching atomic.Bool // false: Write writes through (see Enable); set once, never cleared

	mu      sync.Mutex
	buf     []byte // bytes accepted by Write, not yet written; guarded by mu
	spare   []byte // the buffer of the last write, for reuse; guarded by mu
	pending bool   // a flush goroutine is scheduled; guarded by mu
	err     error  // the first write error; guarded by mu
	closed  bool   // guarded by mu
}

// New wraps c, batching from the first write.
func New(c net.Conn) *Conn {
	bc := &Conn{Conn: c}
	bc.batching.Store(true)
	return bc
}

// Enable turns batching on for the Conn that c is or wraps (through
// NetConn, as a *tls.Conn or another wrapper exposes it). It reports whether
// it found one. Call it before the connection's first batched write, once
// the protocol is known to be HTTP/2.
func Enable(c net.Conn) bool {
	for c != nil {
		if bc, ok := c.(*Conn); ok {
			bc.batching.Store(true)
			return true
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return false
		}
		c = u.NetConn()
	}
	return false
}

// Write buffers p and makes sure a flush is scheduled; it writes at once when
// the buffer would pass maxBatch. An error of an earlier flush is returned
// instead, and the connection is then broken for good.
func (c *Conn) Write(p []byte) (int, error) {
	if !c.batching.Load() {
		return c.writeDirect(p)
	}
	c.mu.Lock()
	if err := c.errLocked(); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	if len(c.buf)+len(p) > maxBatch {
		c.mu.Unlock()
		if err := c.writeThrough(p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	c.buf = append(c.buf, p...)
	start := !c.pending
	c.pending = true
	c.mu.Unlock()
	if start {
		go c.flush()
	}
	return len(p), nil
}

func (c *Conn) errLocked() error {
	if c.err != nil {
		return c.err
	}
	if c.closed {
		return net.ErrClosed
	}
	return nil
}

// writeDirect writes p at once; nothing is buffered before batching is on.
func (c *Conn) writeDirect(p []byte) (int, error) {
	c.mu.Lock()
	err := c.errLocked()
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	n, err := c.Conn.Write(p)
	if err != nil {
		c.keepErr(err)
	}
	return n, err
}

// writeThrough writes what is buffered and then p, in one write.
func (c *Conn) writeThrough(p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	data := append(c.take(), p...)
	c.mu.Unlock()
	return c.write(data)
}

// take returns the buffer and starts the next one in the spare, if the last
// write has given it back. Caller holds mu and wmu (so no other taken buffer
// is being written).
func (c *Conn) take() []byte {
	data := c.buf
	c.buf, c.spare = c.spare, nil
	return data
}

// flush runs once the goroutines that are ready now have run, and writes
// whatever they buffered.
func (c *Conn) flush() {
	runtime.Gosched()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	data := c.take()
	c.pending = false
	c.mu.Unlock()
	if len(data) > 0 {
		c.write(data) // the error is kept for the next Write
	}
}

// write writes data to the connection, keeping the first error. Caller
// holds wmu.
func (c *Conn) write(data []byte) error {
	_, err := c.Conn.Write(data)
	c.mu.Lock()
	if err != nil && c.err == nil {
		c.err = err
	}
	if c.spare == nil && cap(data) <= maxSpare {
		c.spare = data[:0]
	}
	c.mu.Unlock()
	return err
}

func (c *Conn) keepErr(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

// Flush writes what is buffered now.
func (c *Conn) Flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	data := c.take()
	err := c.err
	c.mu.Unlock()
	if err != nil || len(data) == 0 {
		return err
	}
	return c.write(data)
}

// Close writes what is buffered (for at most closeFlushTimeout) and closes
// the connection. Later Writes fail with net.ErrClosed.
func (c *Conn) Close() error {
	c.mu.Lock()
	c.closed = true
	hasData := len(c.buf) > 0 && c.err == nil
	c.mu.Unlock()
	if hasData {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
		_ = c.Flush()
	}
	return c.Conn.Close()
}

// CloseWrite writes what is buffered and half-closes the connection when the
// underlying one can (TCP can).
func (c *Conn) CloseWrite() error {
	if err := c.Flush(); err != nil {
		return err
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// SetWriteDeadline applies t to writes from now on. What Write has already
// accepted is written first: crypto/tls sends close_notify and then sets a
// deadline of now to stop all writing, and the bytes buffered before (the
// last response, the alert itself) must not be dropped by it. A deadline in
// the past gives them closeFlushTimeout.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.flushBefore(t)
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline is SetWriteDeadline for both directions.
func (c *Conn) SetDeadline(t time.Time) error {
	c.flushBefore(t)
	return c.Conn.SetDeadline(t)
}

func (c *Conn) flushBefore(t time.Time) {
	c.mu.Lock()
	hasData := len(c.buf) > 0 && c.err == nil
	c.mu.Unlock()
	if !hasData {
		return
	}
	if !t.IsZero() && !t.After(time.Now()) {
		t = time.Now().Add(closeFlushTimeout)
	}
	_ = c.Conn.SetWriteDeadline(t)
	_ = c.Flush()
}

// NetConn returns the wrapped connection, as tls.Conn.NetConn does.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// Listener wraps every connection ln accepts in a Conn that writes through
// until Enable.
func Listener(ln net.Listener) net.Listener { return listener{ln} }

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: c}, nil
}
