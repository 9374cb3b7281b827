package cluster

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/tinymesh/tinymesh/dataplane/config"
)

func TestEndpointCounters(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	// A port nothing listens on, for a failed connect.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()

	addr := ln.Addr().String()
	s := NewSet()
	defer s.Close()
	tbl := s.Build(snap(&config.Cluster{Name: "c", Protocol: config.ProtocolTCP, Endpoints: []config.Endpoint{{Address: addr, Weight: 1}, {Address: deadAddr, Weight: 1}}}))
	s.Prune(tbl)
	c, _ := tbl.Get("c")
	st, ok := c.Upstream.EndpointStats(addr)
	if !ok {
		t.Fatalf("no counters for configured endpoint %s", addr)
	}

	conn, err := c.Upstream.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.ActiveConnections.Load(); got != 1 {
		t.Errorf("cx_active after a dial = %d, want 1", got)
	}
	// Half-close still reaches the peer through the counting wrapper.
	if err := conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Errorf("CloseWrite: %v", err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	defer peer.Close()
	if n, err := peer.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("peer read after CloseWrite = %d, %v; want EOF", n, err)
	}
	if got := st.ActiveConnections.Load(); got != 1 {
		t.Errorf("cx_active after CloseWrite = %d, want 1 (still open)", got)
	}
	conn.Close()
	conn.Close()
	if got := st.ActiveConnections.Load(); got != 0 {
		t.Errorf("cx_active after Close twice = %d, want 0", got)
	}

	if _, err := c.Upstream.DialContext(context.Background(), "tcp", deadAddr); err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	dst, _ := c.Upstream.EndpointStats(deadAddr)
	if got := dst.ConnectFailures.Load(); got != 1 || dst.ActiveConnections.Load() != 0 {
		t.Errorf("after a failed connect: cx_connect_fail = %d, cx_active = %d; want 1, 0", got, dst.ActiveConnections.Load())
	}

	st.BeginRequest()
	if st.ActiveRequests.Load() != 1 || st.TotalRequests.Load() != 1 {
		t.Errorf("after BeginRequest: rq_active %d rq_total %d, want 1 1", st.ActiveRequests.Load(), st.TotalRequests.Load())
	}
	// An endpoint that leaves the cluster keeps its counters while a
	// request is in flight, and loses them after.
	tbl2 := s.Build(snap(&config.Cluster{Name: "c", Protocol: config.ProtocolTCP, Endpoints: []config.Endpoint{{Address: deadAddr, Weight: 1}}}))
	s.Prune(tbl2)
	if got, ok := c.Upstream.EndpointStats(addr); !ok || got != st {
		t.Errorf("counters of a removed endpoint with a request in flight were dropped")
	}
	st.EndRequest()
	s.Prune(tbl2)
	if _, ok := c.Upstream.EndpointStats(addr); ok {
		t.Errorf("counters of a removed idle endpoint kept after Prune")
	}
	if allocs := testing.AllocsPerRun(100, func() {
		e := c.Upstream.Endpoint(deadAddr)
		e.BeginRequest()
		e.EndRequest()
	}); allocs != 0 {
		t.Errorf("Endpoint+BeginRequest+EndRequest allocate %v times, want 0", allocs)
	}
}
