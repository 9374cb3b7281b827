package tcpproxy

import (
	"net"
	"testing"

	"github.com/tinymesh/tinymesh/dataplane/cluster"
	"github.com/tinymesh/tinymesh/dataplane/stream"
)

// tracingOff runs a connection's tracing hooks as handle and endStream do,
// on a listener without a Tracer.
func tracingOff(st *State, si *stream.Info, up net.Conn) {
	sp := startSpan(st, si)
	upstreamPeer(sp, up)
	sp.End(si)
}

// TestTracingOffAllocs: without a Tracer a connection's tracing costs no
// allocation and leaves the stream record alone.
func TestTracingOffAllocs(t *testing.T) {
	st := &State{Cluster: &cluster.Cluster{Name: "c"}, Listener: "l"}
	si := &stream.Info{}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if n := testing.AllocsPerRun(100, func() { tracingOff(st, si, a) }); n != 0 {
		t.Errorf("tracing off: %v allocs per connection, want 0", n)
	}
	if si.TraceID != "" {
		t.Errorf("tracing off set trace id %q", si.TraceID)
	}
}

func BenchmarkTracingOff(b *testing.B) {
	st := &State{Cluster: &cluster.Cluster{Name: "c"}, Listener: "l"}
	si := &stream.Info{}
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	b.ReportAllocs()
	for b.Loop() {
		tracingOff(st, si, c1)
	}
}
