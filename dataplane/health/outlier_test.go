package health

import (
	"testing"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/config"
)

// fakeClock is the only fake here: ejection times are checked exactly.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func newTestOutlier(cfg *config.OutlierDetection, n int) (*Outlier, []*Host, *fakeClock, *int) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	changes := new(int)
	o := NewOutlier(OutlierOptions{Changed: func() { *changes++ }, Now: clk.now, Roll: func() uint32 { return 50 }})
	hosts := make([]*Host, n)
	for i := range hosts {
		hosts[i] = new(Host)
	}
	o.Configure(cfg, hosts)
	return o, hosts, clk, changes
}

func odConfig() *config.OutlierDetection {
	return &config.OutlierDetection{Consecutive5xx: 3, EnforcingConsecutive5xx: 100,
		ConsecutiveGatewayFailure: 2, EnforcingConsecutiveGatewayFailure: 100,
		Interval: time.Second, BaseEjectionTime: 10 * time.Second, MaxEjectionTime: 25 * time.Second, MaxEjectionPercent: 50}
}

func TestConsecutive5xxEjectsAndSuccessResets(t *testing.T) {
	o, hs, _, changes := newTestOutlier(odConfig(), 4)
	h := hs[0]
	o.Response(h, 500)
	o.Response(h, 500)
	o.Response(h, 200) // resets
	o.Response(h, 500)
	o.Response(h, 500)
	if h.Ejected() {
		t.Fatal("ejected after 2 consecutive 5xx, want 3")
	}
	o.Response(h, 500)
	if !h.Ejected() || h.Ejections() != 1 || *changes != 1 || o.EjectionsEnforced.Load() != 1 {
		t.Fatalf("after 3 consecutive 500s: ejected=%v ejections=%d changes=%d enforced=%d, want true 1 1 1",
			h.Ejected(), h.Ejections(), *changes, o.EjectionsEnforced.Load())
	}
	if h.Available() {
		t.Error("ejected host is available")
	}
}

func TestGatewayFailureDetector(t *testing.T) {
	o, hs, _, _ := newTestOutlier(odConfig(), 4)
	o.Response(hs[0], 503)
	o.GatewayFailure(hs[0]) // a connect failure is a gateway failure too
	if !hs[0].Ejected() {
		t.Fatal("not ejected after consecutive_gateway_failure=2")
	}
	// A 500 between gateway failures breaks the gateway run but not the 5xx run.
	o.Response(hs[1], 503)
	o.Response(hs[1], 500)
	o.Response(hs[1], 503)
	if !hs[1].Ejected() {
		t.Error("not ejected after three 5xx in a row (consecutive_5xx=3)")
	}
}

func TestEnforcingPercent(t *testing.T) {
	cfg := odConfig()
	cfg.EnforcingConsecutive5xx = 50 // the roll is 50: not below, so not enforced
	cfg.EnforcingConsecutiveGatewayFailure = 0
	o, hs, _, _ := newTestOutlier(cfg, 4)
	for range 6 {
		o.Response(hs[0], 500)
	}
	if hs[0].Ejected() {
		t.Error("ejected although the enforcement roll failed")
	}
	cfg.EnforcingConsecutive5xx = 51
	o.Configure(cfg, hs)
	for range 3 {
		o.Response(hs[1], 500)
	}
	if !hs[1].Ejected() {
		t.Error("not ejected although the enforcement roll passed")
	}
}

func TestMaxEjectionPercentAllowsOne(t *testing.T) {
	cfg := odConfig()
	cfg.MaxEjectionPercent = 10 // of 2 hosts: 0.2, yet one may be ejected
	o, hs, _, _ := newTestOutlier(cfg, 2)
	for range 3 {
		o.Response(hs[0], 500)
		o.Response(hs[1], 500)
	}
	if !hs[0].Ejected() || hs[1].Ejected() {
		t.Errorf("ejected = %v, %v; want the first only (max_ejection_percent, at least one)", hs[0].Ejected(), hs[1].Ejected())
	}
	if got := o.Active(); got != 1 {
		t.Errorf("Active() = %d, want 1", got)
	}
}

func TestEjectionTimeGrowsAndIsCapped(t *testing.T) {
	o, hs, clk, _ := newTestOutlier(odConfig(), 4)
	h := hs[0]
	eject := func() {
		t.Helper()
		for range 3 {
			o.Response(h, 500)
		}
		if !h.Ejected() {
			t.Fatal("not ejected")
		}
	}
	for i, want := range []time.Duration{10 * time.Second, 20 * time.Second, 25 * time.Second, 25 * time.Second} {
		eject()
		if got := h.EjectedFor(clk.t); got != want {
			t.Errorf("ejection %d lasts %v, want %v (base 10s times %d, max 25s)", i+1, got, want, i+1)
		}
		clk.t = clk.t.Add(want - time.Millisecond)
		o.Sweep()
		if !h.Ejected() {
			t.Fatalf("ejection %d: returned %v early", i+1, time.Millisecond)
		}
		clk.t = clk.t.Add(time.Millisecond)
		o.Sweep()
		if h.Ejected() {
			t.Fatalf("ejection %d: not returned when its time was up", i+1)
		}
	}
	// Each sweep in service lowers the multiplier (4 now) by one.
	for range 3 {
		o.Sweep()
	}
	eject()
	if got := h.EjectedFor(clk.t); got != 20*time.Second {
		t.Errorf("after 3 sweeps in service: ejection lasts %v, want 20s (multiplier 4-3+1)", got)
	}
}

func TestConfigureNilReturnsEjectedHosts(t *testing.T) {
	o, hs, _, changes := newTestOutlier(odConfig(), 2)
	for range 3 {
		o.Response(hs[0], 500)
	}
	o.Configure(nil, hs)
	if hs[0].Ejected() || *changes != 2 || o.Enabled() {
		t.Errorf("after turning detection off: ejected=%v changes=%d enabled=%v, want false 2 false", hs[0].Ejected(), *changes, o.Enabled())
	}
	for range 5 {
		o.Response(hs[1], 500)
	}
	if hs[1].Ejected() {
		t.Error("ejected with detection off")
	}
}

func TestResultsDoNotAllocate(t *testing.T) {
	o, hs, _, _ := newTestOutlier(odConfig(), 2)
	if n := testing.AllocsPerRun(100, func() { o.Response(hs[0], 200); o.Response(hs[1], 404) }); n != 0 {
		t.Errorf("Response allocates %v times, want 0", n)
	}
}
