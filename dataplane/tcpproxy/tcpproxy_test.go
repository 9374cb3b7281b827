package tcpproxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/cluster"
	"github.com/tinymesh/tinymesh/dataplane/config"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// upstream accepts one connection and runs fn on it.
func upstream(t *testing.T, fn func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		fn(c)
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

func start(t *testing.T, upAddr string, idle time.Duration) (*Server, string) {
	t.Helper()
	set := cluster.NewSet()
	t.Cleanup(set.Close)
	tbl := set.Build(&config.Snapshot{Clusters: map[string]*config.Cluster{"c": {
		Name: "c", Protocol: config.ProtocolTCP, ConnectTimeout: time.Second, Endpoints: []config.Endpoint{{Address: upAddr, Weight: 1}}}}})
	c, _ := tbl.Get("c")
	s := New(slog.New(slog.DiscardHandler), &State{Cluster: c, IdleTimeout: idle})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(ln)
	}()
	t.Cleanup(func() {
		s.Close()
		<-done
	})
	return s, ln.Addr().String()
}

func TestHalfClose(t *testing.T) {
	up := upstream(t, func(c net.Conn) {
		b, _ := io.ReadAll(c) // until the client's half-close arrives
		c.Write(append([]byte("got:"), b...))
	})
	_, addr := start(t, up, 0)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, "ping")
	conn.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != "got:ping" {
		t.Errorf("got %q (err %v), want %q", got, err, "got:ping")
	}
}

func TestIdleTimeoutClosesBothSides(t *testing.T) {
	upClosed := make(chan struct{})
	up := upstream(t, func(c net.Conn) {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c) // ends when the proxy closes the upstream side
		close(upClosed)
	})
	_, addr := start(t, up, 100*time.Millisecond)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("read: %v, want EOF from the idle timeout", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("closed after %v, want at least the idle timeout", d)
	}
	select {
	case <-upClosed:
	case <-time.After(5 * time.Second):
		t.Error("upstream side not closed")
	}
}

func TestShutdownWaitsForConnections(t *testing.T) {
	up := upstream(t, func(c net.Conn) { io.Copy(c, c) })
	s, addr := start(t, up, 0)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	// One round trip: the connection is accepted and spliced.
	io.WriteString(conn, "a")
	b := make([]byte, 1)
	if _, err := io.ReadFull(conn, b); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); err == nil {
		t.Error("Shutdown with an open connection: err = nil, want the deadline error")
	}
	if _, err := io.ReadAll(conn); err != nil {
		t.Errorf("after Shutdown cut it: read %v, want EOF", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("dial after Shutdown succeeded, want refused")
	}
}
