package stats

import (
	"testing"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/stream"
)

func testInfo() *stream.Info {
	return &stream.Info{Duration: 3 * time.Millisecond, Cluster: "outbound|8080||backend.default.svc.cluster.local",
		UpstreamHost: "10.0.0.1:8080", Attempts: 1, ResponseCode: 200, GRPCStatus: -1, BytesReceived: 10, BytesSent: 100}
}

func testRecorder() *Recorder {
	r := New(Options{Workload: "frontend", Namespace: "default"})
	r.Update(&config.Snapshot{Clusters: map[string]*config.Cluster{"outbound|8080||backend.default.svc.cluster.local": {
		Name: "outbound|8080||backend.default.svc.cluster.local", Endpoints: []config.Endpoint{{Address: "10.0.0.1:8080", Weight: 1, Workload: "backend-v1", Namespace: "default", Version: "v1"}}}}})
	return r
}

// TestObserveAllocs: once a label combination has been seen, recording a
// stream neither allocates nor locks.
func TestObserveAllocs(t *testing.T) {
	r := testRecorder()
	info := testInfo()
	r.Observe(info)
	if n := testing.AllocsPerRun(200, func() { r.Observe(info) }); n != 0 {
		t.Errorf("Observe: %v allocs per run, want 0", n)
	}
}

func TestSPIFFENamespaceSA(t *testing.T) {
	for _, tc := range []struct {
		name, id, ns, sa string
		ok               bool
	}{
		{"mesh id", "spiffe://cluster.local/ns/default/sa/frontend", "default", "frontend", true},
		{"not spiffe", "https://x/ns/a/sa/b", "", "", false},
		{"other shape", "spiffe://td/workload/x", "", "", false},
		{"empty sa", "spiffe://td/ns/a/sa/", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns, sa, ok := spiffeNamespaceSA(tc.id)
			if ns != tc.ns || sa != tc.sa || ok != tc.ok {
				t.Errorf("got %q %q %v, want %q %q %v", ns, sa, ok, tc.ns, tc.sa, tc.ok)
			}
		})
	}
}

// BenchmarkObserve is the hot-path cost of metrics per request.
func BenchmarkObserve(b *testing.B) {
	r := testRecorder()
	info := testInfo()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.Observe(info)
		}
	})
}
