package dataplane_test

import (
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/proxytest"
)

// TestSidecarHopIsMultiplexed checks that many HTTP/1.1 client connections to the
// outbound sidecar share one HTTP/2 connection to the peer sidecar: the hop
// between sidecars is multiplexed whatever the app speaks.
func TestSidecarHopIsMultiplexed(t *testing.T) {
	app := proxytest.StartApp(t, "app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(5 * time.Millisecond) // keep requests overlapping
		io.WriteString(w, "ok")
	}))
	_, _, inbound := proxytest.Inbound(t, "B", app.Addr, config.ProtocolHTTP1)
	relay := startCountingRelay(t, inbound)

	outbound := proxytest.FreeAddr(t)
	snap := proxytest.OutboundSnapshot("a1", outbound, config.WeightedCluster{Name: proxytest.OutboundCluster, Weight: 1})
	snap.Clusters[proxytest.OutboundCluster] = proxytest.Cluster(proxytest.OutboundCluster, config.ProtocolH2C, relay.addr)
	proxytest.StartProxy(t, "A", snap)

	const clients, perClient = 32, 10
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range clients {
		c := proxytest.Client(t) // its own connection to the outbound sidecar
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perClient {
				req, _ := http.NewRequest("GET", "http://"+outbound+"/", nil)
				req.Host = "backend"
				resp, err := c.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed", n, clients*perClient)
	}
	if got := app.Requests.Load(); got != clients*perClient {
		t.Errorf("app saw %d requests, want %d", got, clients*perClient)
	}
	if got := relay.accepted.Load(); got != 1 {
		t.Errorf("sidecar-to-sidecar connections = %d for %d concurrent client connections, want 1 (multiplexed)", got, clients)
	}
}

// countingRelay forwards TCP connections to a target and counts them.
type countingRelay struct {
	addr     string
	accepted atomic.Int64
}

func startCountingRelay(t *testing.T, target string) *countingRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &countingRelay{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			r.accepted.Add(1)
			up, err := net.Dial("tcp", target)
			if err != nil {
				down.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, down, up)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(up, down); up.Close() }()
			go func() { defer wg.Done(); io.Copy(down, up); down.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return r
}
