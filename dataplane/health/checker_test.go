package health

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tinymesh/tinymesh/dataplane/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRecordThresholds(t *testing.T) {
	cfg := &config.HealthCheck{UnhealthyThreshold: 2, HealthyThreshold: 3}
	changes := 0
	var st CheckStats
	c := NewChecker(cfg, nil, func() { changes++ }, &st)
	h := new(Host)
	Start(h)
	if h.Available() || h.Flags() != "/failed_active_hc/pending_active_hc" {
		t.Fatalf("new host: available=%v flags=%q, want unavailable, failed and pending", h.Available(), h.Flags())
	}
	c.Record(h, true) // a new host needs one success
	if !h.Available() || h.Flags() != "healthy" {
		t.Fatalf("after the first success: available=%v flags=%q", h.Available(), h.Flags())
	}
	c.Record(h, false)
	if !h.Available() {
		t.Fatal("unhealthy after 1 failure, want unhealthy_threshold=2")
	}
	c.Record(h, false)
	if h.Available() || h.Flags() != "/failed_active_hc" {
		t.Fatalf("after 2 failures: available=%v flags=%q", h.Available(), h.Flags())
	}
	c.Record(h, true)
	c.Record(h, true)
	if h.Available() {
		t.Fatal("healthy after 2 successes, want healthy_threshold=3")
	}
	c.Record(h, true)
	if !h.Available() {
		t.Fatal("unhealthy after 3 successes")
	}
	if changes != 3 {
		t.Errorf("changed %d times, want 3", changes)
	}
	if a, s, f := st.Attempts.Load(), st.Successes.Load(), st.Failures.Load(); a != 6 || s != 4 || f != 2 {
		t.Errorf("stats attempt=%d success=%d failure=%d, want 6 4 2", a, s, f)
	}
	c.Record(h, false)
	c.Record(h, false)
	if !Stop(h) || !h.Available() || h.Flags() != "healthy" {
		t.Errorf("Stop of an unhealthy host: available=%v flags=%q, want available and healthy", h.Available(), h.Flags())
	}
}

func TestFirstFailureNeedsHealthyThreshold(t *testing.T) {
	c := NewChecker(&config.HealthCheck{UnhealthyThreshold: 1, HealthyThreshold: 2}, nil, nil, nil)
	h := new(Host)
	Start(h)
	c.Record(h, false)
	c.Record(h, true)
	if h.Available() {
		t.Error("available after fail, success; want healthy_threshold=2 once the first probe is done")
	}
	c.Record(h, true)
	if !h.Available() {
		t.Error("not available after 2 successes")
	}
}

func dialer() DialFunc {
	var d net.Dialer
	return d.DialContext
}

func TestHTTPProbe(t *testing.T) {
	var status atomic.Int64
	status.Store(204)
	var host atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host.Store(r.Host)
		if r.URL.Path != "/healthz" {
			w.WriteHeader(404)
			return
		}
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	cfg := &config.HealthCheck{Kind: config.HealthCheckHTTP, Path: "/healthz", Interval: time.Second,
		ExpectedStatuses: []config.StatusRange{{Start: 200, End: 300}}}
	p := NewProber(cfg, "outbound|80||svc.ns.svc.cluster.local", false, dialer())
	defer p.Close()
	if err := p.Probe(context.Background(), addr); err != nil {
		t.Errorf("204 within [200,300): %v", err)
	}
	if got := host.Load(); got != "svc.ns.svc.cluster.local:80" {
		t.Errorf("Host = %v, want the service host and port of the cluster name", got)
	}
	status.Store(503)
	if err := p.Probe(context.Background(), addr); !errors.Is(err, ErrUnhealthy) {
		t.Errorf("503: err = %v, want ErrUnhealthy", err)
	}
	cfg2 := *cfg
	cfg2.ExpectedStatuses = nil
	cfg2.Host = "backend"
	p2 := NewProber(&cfg2, "c", false, dialer())
	defer p2.Close()
	status.Store(204)
	if err := p2.Probe(context.Background(), addr); err == nil {
		t.Error("204 passed with the default expected status (200 only)")
	}
	if got := host.Load(); got != "backend" {
		t.Errorf("Host = %v, want backend", got)
	}
}

func TestTCPProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	p := NewProber(&config.HealthCheck{Kind: config.HealthCheckTCP}, "c", false, dialer())
	if err := p.Probe(context.Background(), addr); err != nil {
		t.Errorf("listening port: %v", err)
	}
	ln.Close()
	<-done
	if err := p.Probe(context.Background(), addr); err == nil {
		t.Error("closed port passed")
	}
}

// grpcHealthServer answers grpc.health.v1.Health/Check over h2c with status
// for the service named in the request, as a real gRPC server would encode it.
func grpcHealthServer(t *testing.T, status func(svc string) (serving uint64, grpcStatus string)) string {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/grpc.health.v1.Health/Check" || r.Header.Get("Content-Type") != "application/grpc" {
			w.WriteHeader(400)
			return
		}
		var b [256]byte
		n, _ := r.Body.Read(b[:])
		svc := ""
		if n > 7 && b[5] == 0x0a {
			svc = string(b[7 : 7+int(b[6])])
		}
		serving, gs := status(svc)
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		msg := binary.AppendUvarint([]byte{0x08}, serving)
		frame := append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...)
		w.Write(frame)
		w.Header().Set("Grpc-Status", gs)
	}))
	srv.Config.Protocols = p
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func TestGRPCProbe(t *testing.T) {
	addr := grpcHealthServer(t, func(svc string) (uint64, string) {
		switch svc {
		case "ok":
			return 1, "0" // SERVING
		case "down":
			return 2, "0" // NOT_SERVING
		}
		return 0, "5" // NOT_FOUND
	})
	for _, tc := range []struct {
		svc  string
		want bool
	}{{"ok", true}, {"down", false}, {"missing", false}} {
		p := NewProber(&config.HealthCheck{Kind: config.HealthCheckGRPC, GRPCService: tc.svc, Interval: time.Second}, "c", true, dialer())
		err := p.Probe(context.Background(), addr)
		p.Close()
		if (err == nil) != tc.want {
			t.Errorf("service %q: err = %v, want healthy %v", tc.svc, err, tc.want)
		}
	}
}

func TestServingStatusSkipsUnknownFields(t *testing.T) {
	msg := []byte{0x12, 0x02, 'h', 'i', 0x08, 0x01, 0x1d, 1, 2, 3, 4}
	if got := servingStatus(msg); got != 1 {
		t.Errorf("servingStatus = %d, want 1", got)
	}
	if got := servingStatus([]byte{0x12, 0x09}); got != 0 {
		t.Errorf("truncated: servingStatus = %d, want 0", got)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	var probes atomic.Int64
	c := NewChecker(&config.HealthCheck{Timeout: time.Second, Interval: 5 * time.Millisecond, UnhealthyThreshold: 1, HealthyThreshold: 1},
		func(ctx context.Context, addr string) error { probes.Add(1); return nil }, nil, nil)
	h := new(Host)
	Start(h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx, h, "x") }()
	deadline := time.Now().Add(5 * time.Second)
	for probes.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if probes.Load() < 3 || !h.Available() {
		t.Errorf("probes=%d available=%v, want >= 3 and available", probes.Load(), h.Available())
	}
}
