package batchwrite

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// countingConn counts the writes that reach it and can fail them.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
	data   bytes.Buffer
	fail   error
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return 0, c.fail
	}
	c.writes++
	c.data.Write(p)
	return len(p), nil
}

func (c *countingConn) Close() error { return nil }

func (c *countingConn) SetWriteDeadline(time.Time) error { return nil }

func (c *countingConn) snapshot() (int, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes, c.data.String()
}

// TestBytesArriveInOrder: writes of every size, small ones buffered and large
// ones written through, reach the peer complete and in order.
func TestBytesArriveInOrder(t *testing.T) {
	client, server := tcpPair(t)
	c := New(client)
	var want bytes.Buffer
	var chunks [][]byte
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		n := rng.IntN(300)
		if i%100 == 0 {
			n = maxBatch + rng.IntN(64<<10) // through the buffer
		}
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		want.Write(p)
		chunks = append(chunks, p)
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(server)
		got <- b
	}()
	for i, p := range chunks {
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
		if i%7 == 0 {
			runtime.Gosched() // let some flushes happen in between
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, want.Bytes()) {
			t.Fatalf("peer got %d bytes, want %d (or the order differs)", len(b), want.Len())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("peer did not read everything")
	}
}

// TestWritesCoalesce: writes made before the writer yields go out in one
// write(2); one made later goes out on its own.
func TestWritesCoalesce(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // one P, as a meshproxy worker
	under := &countingConn{}
	c := New(under)
	for i := range 10 {
		if _, err := c.Write([]byte{byte('a' + i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { n, _ := under.snapshot(); return n > 0 })
	if n, data := under.snapshot(); n != 1 || data != "abcdefghij" {
		t.Fatalf("after 10 writes: %d writes of %q, want 1 of %q", n, data, "abcdefghij")
	}
	c.Write([]byte("k"))
	waitFor(t, func() bool { n, _ := under.snapshot(); return n > 1 })
	if n, data := under.snapshot(); n != 2 || data != "abcdefghijk" {
		t.Fatalf("after the 11th write: %d writes of %q, want 2 of %q", n, data, "abcdefghijk")
	}
}

// TestBatchIsBounded: a batch is written by the Write that takes it past
// 1 KiB (a dozen small HTTP/2 requests), without waiting for the writer to
// yield, so that the peer can start on them (see the package comment).
func TestBatchIsBounded(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	under := &countingConn{}
	c := New(under)
	chunk := bytes.Repeat([]byte("x"), 513)
	c.Write(chunk)
	if n, _ := under.snapshot(); n != 0 {
		t.Fatalf("after 513 bytes: %d writes, want 0 (buffered)", n)
	}
	c.Write(chunk)
	if n, data := under.snapshot(); n != 1 || len(data) != 2*len(chunk) {
		t.Fatalf("after 1026 bytes: %d writes of %d bytes, want 1 of %d, before any yield", n, len(data), 2*len(chunk))
	}
}

// TestFlushErrorSurfaces: a failed flush makes the next Write fail, and for
// good.
func TestFlushErrorSurfaces(t *testing.T) {
	boom := errors.New("connection reset")
	under := &countingConn{fail: boom}
	c := New(under)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatalf("buffered Write = %v, want nil", err)
	}
	waitFor(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.err != nil
	})
	for range 2 {
		if _, err := c.Write([]byte("y")); !errors.Is(err, boom) {
			t.Fatalf("Write after a failed flush = %v, want %v", err, boom)
		}
	}
}

// TestCloseAndCloseWriteFlush: what is buffered is written before a close or
// a half-close, and nothing is accepted after Close.
func TestCloseAndCloseWriteFlush(t *testing.T) {
	client, server := tcpPair(t)
	c := New(client)
	c.Write([]byte("before half-close"))
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(server)
	if err != nil || string(b) != "before half-close" {
		t.Fatalf("peer read %q, %v; want the data then EOF", b, err)
	}
	// The other direction still works after the half-close.
	server.Write([]byte("reply"))
	buf := make([]byte, 5)
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "reply" {
		t.Fatalf("read after CloseWrite: %q, %v", buf, err)
	}

	client2, server2 := tcpPair(t)
	c2 := New(client2)
	c2.Write([]byte("last words"))
	if err := c2.Close(); err != nil {
		t.Fatal(err)
	}
	server2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(server2); err != nil || string(b) != "last words" {
		t.Fatalf("peer read %q, %v; want the buffered data before the close", b, err)
	}
	if _, err := c2.Write([]byte("more")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close = %v, want net.ErrClosed", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestListenerConnsWriteThroughUntilEnabled: an accepted connection writes
// at once (an HTTP/1.1 response must not wait for the processor to go idle)
// until Enable, found through a wrapper's NetConn as for *tls.Conn, turns
// batching on.
func TestListenerConnsWriteThroughUntilEnabled(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	under := &countingConn{}
	ln := Listener(oneConnListener{under})
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"a", "b", "c"} {
		c.Write([]byte(b))
	}
	// Written through: each Write is a write of its own, done when it returns.
	if n, data := under.snapshot(); n != 3 || data != "abc" {
		t.Fatalf("before Enable: %d writes of %q, want 3 of %q", n, data, "abc")
	}
	if Enable(plainConn{}) {
		t.Fatal("Enable found a batching connection in one that has none")
	}
	if !Enable(wrapper{c}) {
		t.Fatal("Enable did not find the connection beneath a NetConn wrapper")
	}
	for _, b := range []string{"d", "e", "f"} {
		c.Write([]byte(b))
	}
	waitFor(t, func() bool { n, _ := under.snapshot(); return n > 3 })
	if n, data := under.snapshot(); n != 4 || data != "abcdef" {
		t.Fatalf("after Enable: %d writes of %q, want 4 of %q", n, data, "abcdef")
	}
}

type oneConnListener struct{ c net.Conn }

func (l oneConnListener) Accept() (net.Conn, error) { return l.c, nil }
func (l oneConnListener) Close() error              { return nil }
func (l oneConnListener) Addr() net.Addr            { return nil }

// wrapper exposes the connection beneath it as *tls.Conn does.
type wrapper struct{ net.Conn }

func (w wrapper) NetConn() net.Conn { return w.Conn }

type plainConn struct{ net.Conn }
