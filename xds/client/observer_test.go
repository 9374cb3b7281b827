package client_test

import (
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/tinymesh/tinymesh/xds/client"
	"github.com/tinymesh/tinymesh/xds/xdstest"
)

// fakeObserver records what the client tells its Observer.
type fakeObserver struct {
	conn chan bool // every Connected call, in order

	mu      sync.Mutex
	updates map[string]int // "type ack|nack" -> count; guarded by mu
}

func (o *fakeObserver) Connected(up bool) { o.conn <- up }

func (o *fakeObserver) Update(typeURL string, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	r := "nack"
	if ok {
		r = "ack"
	}
	o.updates[typeURL+" "+r]++
}

func (o *fakeObserver) count(typeURL, result string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.updates[typeURL+" "+result]
}

func (o *fakeObserver) waitConnected(t *testing.T, want bool) {
	t.Helper()
	select {
	case got := <-o.conn:
		if got != want {
			t.Fatalf("Connected(%v), want Connected(%v)", got, want)
		}
	case <-time.After(wait):
		t.Fatalf("no Connected(%v) within %v", want, wait)
	}
}

// TestObserver: the Observer sees the stream come and go, one ack per response
// ACKed and one nack per response NACKed, by type. The client tells the
// Observer before it sends the ACK or NACK, so counts are final once the
// server has the request.
func TestObserver(t *testing.T) {
	forModes(t, func(t *testing.T, mode client.Mode) {
		o := &fakeObserver{conn: make(chan bool, 10), updates: map[string]int{}}
		h := start(t, mode, func(opts *client.Options) { opts.Observer = o })
		o.waitConnected(t, true)
		res := world()
		h.set("1", res)
		h.waitApply()
		h.waitAllACK(0, "1", res)
		sent := map[string]int{}
		for _, r := range h.srv.Responses() {
			sent[r.TypeURL]++
		}
		for typ := range res {
			if got, want := o.count(typ, "ack"), sent[typ]; got != want || got == 0 {
				t.Errorf("%s: %d acks observed, want %d (the responses sent)", typ, got, want)
			}
			if got := o.count(typ, "nack"); got != 0 {
				t.Errorf("%s: %d nacks observed, want 0", typ, got)
			}
		}

		bad := world()
		c := xdstest.EDSCluster(cName)
		c.LbPolicy = clusterv3.Cluster_RING_HASH // refused by the decoder
		bad[xdstest.ClusterType] = []cachetypes.Resource{c}
		m := h.srv.Mark()
		h.set("2", bad)
		h.waitNACK(m, xdstest.ClusterType)
		// A state-of-the-world server may send the rejected version again
		// (go-control-plane answers a NACK, whose version_info is the last
		// good one, with the newer snapshot), and each copy is NACKed. So
		// the observer counts one nack per NACK the server got, give or
		// take the one the client may be sending now.
		observed := o.count(xdstest.ClusterType, "nack")
		received := 0
		for _, r := range h.srv.Requests()[m:] {
			if r.TypeURL == xdstest.ClusterType && r.IsNACK() {
				received++
			}
		}
		if observed < 1 || observed > received+1 {
			t.Errorf("cluster nacks observed: got %d, want between 1 and %d (NACKs the server received, plus one)", observed, received+1)
		}

		h.srv.Stop()
		o.waitConnected(t, false)
		if err := h.srv.Restart(); err != nil {
			t.Fatal(err)
		}
		o.waitConnected(t, true)
	})
}
