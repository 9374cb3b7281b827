package lb

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRoundRobin(t *testing.T) {
	p := NewRoundRobin([]string{"a", "b", "c"})
	var got []string
	for range 7 {
		a, ok := p.Pick()
		if !ok {
			t.Fatal("Pick() ok = false, want true")
		}
		got = append(got, a)
	}
	want := []string{"a", "b", "c", "a", "b", "c", "a"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("picks (-want +got):\n%s", diff)
	}
	if _, ok := NewRoundRobin(nil).Pick(); ok {
		t.Error("empty picker: ok = true, want false")
	}
}

func TestWeighted(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
		n       int
		want    []int
	}{
		{name: "90/10", weights: []uint32{90, 10}, n: 5000, want: []int{4500, 500}},
		{name: "single", weights: []uint32{7}, n: 10, want: []int{10}},
		{name: "zero weight never chosen", weights: []uint32{0, 3, 1}, n: 8, want: []int{0, 6, 2}},
		{name: "thirds", weights: []uint32{1, 1, 1}, n: 9, want: []int{3, 3, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWeighted(tt.weights)
			got := make([]int, len(tt.weights))
			for range tt.n {
				got[w.Pick()]++
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("counts (-want +got):\n%s", diff)
			}
		})
	}
	// Every other pick (one client among two) still sees the split.
	w := NewWeighted([]uint32{50, 50})
	got := make([]int, 2)
	for i := range 2000 {
		if p := w.Pick(); i%2 == 0 {
			got[p]++
		}
	}
	if got[0] < 480 || got[0] > 520 {
		t.Errorf("50/50 split, even picks only: counts %v, want about 500 each", got)
	}
	if got := NewWeighted(nil).Pick(); got != -1 {
		t.Errorf("empty Pick() = %d, want -1", got)
	}
}

func TestPickersDoNotAllocate(t *testing.T) {
	rr := NewRoundRobin([]string{"a", "b"})
	w := NewWeighted([]uint32{90, 10})
	if n := testing.AllocsPerRun(1000, func() { rr.Pick(); w.Pick() }); n != 0 {
		t.Errorf("allocs per pick = %v, want 0", n)
	}
}

func BenchmarkRoundRobin(b *testing.B) {
	rr := NewRoundRobin([]string{"a", "b", "c"})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rr.Pick()
		}
	})
}

func BenchmarkWeighted(b *testing.B) {
	w := NewWeighted([]uint32{50, 30, 15, 5})
	b.ReportAllocs()
	for b.Loop() {
		w.Pick()
	}
}

func TestPickExcept(t *testing.T) {
	for _, tc := range []struct {
		name  string
		addrs []string
		skip  []string
		want  string
		ok    bool
	}{
		{"none", nil, nil, "", false},
		{"no skip", []string{"a", "b"}, nil, "a", true},
		{"skips tried", []string{"a", "b", "c"}, []string{"a", "b"}, "c", true},
		{"next after skipped", []string{"a", "b", "c"}, []string{"a"}, "b", true},
		{"all tried falls back", []string{"a", "b"}, []string{"a", "b"}, "a", true},
		{"single endpoint", []string{"a"}, []string{"a"}, "a", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := NewRoundRobin(tc.addrs)
			got, ok := p.PickExcept(tc.skip)
			if got != tc.want || ok != tc.ok {
				t.Errorf("PickExcept(%q) = %q, %v; want %q, %v", tc.skip, got, ok, tc.want, tc.ok)
			}
		})
	}
	p := NewRoundRobin([]string{"a", "b", "c"})
	skip := []string{"b"}
	if n := testing.AllocsPerRun(100, func() { p.PickExcept(skip) }); n != 0 {
		t.Errorf("PickExcept: %v allocs per run, want 0", n)
	}
}

func TestPeekDoesNotAdvance(t *testing.T) {
	p := NewRoundRobin([]string{"a", "b", "c"})
	p.Pick()
	for range 3 {
		if got, ok := p.Peek(); !ok || got != "b" {
			t.Fatalf("Peek = %q, %v; want b", got, ok)
		}
	}
	if got, _ := p.Pick(); got != "b" {
		t.Errorf("Pick after Peek = %q, want b", got)
	}
	if _, ok := NewRoundRobin(nil).Peek(); ok {
		t.Errorf("Peek on no endpoints = ok, want false")
	}
}
