package tracing

import (
	"encoding/hex"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const (
	tidHex = "4bf92f3577b34da6a3ce929d0e0e4736"
	sidHex = "00f067aa0ba902b7"
)

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parent(t *testing.T, tid, sid string, s Sampling, ts string) Parent {
	var p Parent
	copy(p.TraceID[16-len(tid)/2:], mustHex(t, tid))
	copy(p.SpanID[:], mustHex(t, sid))
	p.Sampling, p.TraceState = s, ts
	return p
}

func TestExtract(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    http.Header
		want Parent
		ok   bool
	}{
		{name: "none", h: http.Header{"Accept": {"*/*"}}},
		{name: "w3c sampled", h: http.Header{"Traceparent": {"00-" + tidHex + "-" + sidHex + "-01"}},
			want: parent(t, tidHex, sidHex, Sampled, ""), ok: true},
		{name: "w3c not sampled, tracestate joined", h: http.Header{
			"Traceparent": {"00-" + tidHex + "-" + sidHex + "-00"}, "Tracestate": {"a=1", "b=2"}},
			want: parent(t, tidHex, sidHex, NotSampled, "a=1,b=2"), ok: true},
		{name: "w3c other flag bits", h: http.Header{"Traceparent": {"00-" + tidHex + "-" + sidHex + "-03"}},
			want: parent(t, tidHex, sidHex, Sampled, ""), ok: true},
		{name: "w3c future version with extra field", h: http.Header{"Traceparent": {"cc-" + tidHex + "-" + sidHex + "-01-what"}},
			want: parent(t, tidHex, sidHex, Sampled, ""), ok: true},
		{name: "w3c version ff", h: http.Header{"Traceparent": {"ff-" + tidHex + "-" + sidHex + "-01"}}},
		{name: "w3c version 00 too long", h: http.Header{"Traceparent": {"00-" + tidHex + "-" + sidHex + "-01-x"}}},
		{name: "w3c future version, no dash after flags", h: http.Header{"Traceparent": {"01-" + tidHex + "-" + sidHex + "-01x"}}},
		{name: "w3c upper case", h: http.Header{"Traceparent": {"00-4BF92F3577B34DA6A3CE929D0E0E4736-" + sidHex + "-01"}}},
		{name: "w3c zero trace id", h: http.Header{"Traceparent": {"00-00000000000000000000000000000000-" + sidHex + "-01"}}},
		{name: "w3c zero span id", h: http.Header{"Traceparent": {"00-" + tidHex + "-0000000000000000-01"}}},
		{name: "w3c short", h: http.Header{"Traceparent": {"00-" + tidHex + "-" + sidHex}}},
		{name: "w3c not hex", h: http.Header{"Traceparent": {"00-" + tidHex[:31] + "g-" + sidHex + "-01"}}},
		{name: "w3c empty", h: http.Header{"Traceparent": {""}}},
		{name: "w3c repeated", h: http.Header{"Traceparent": {"00-" + tidHex + "-" + sidHex + "-01", "00-" + tidHex + "-" + sidHex + "-01"}}},
		{name: "invalid w3c hides b3", h: http.Header{"Traceparent": {"garbage"}, "B3": {tidHex + "-" + sidHex + "-1"}}},
		{name: "w3c wins over b3", h: http.Header{"Traceparent": {"00-" + tidHex + "-" + sidHex + "-00"}, "B3": {"463ac35c9f6413ad48485a3953bb6124-" + sidHex + "-1"}},
			want: parent(t, tidHex, sidHex, NotSampled, ""), ok: true},

		{name: "b3 single sampled", h: http.Header{"B3": {tidHex + "-" + sidHex + "-1"}},
			want: parent(t, tidHex, sidHex, Sampled, ""), ok: true},
		{name: "b3 single debug with parent", h: http.Header{"B3": {tidHex + "-" + sidHex + "-d-05e3ac9a4f6e3b90"}},
			want: parent(t, tidHex, sidHex, Sampled, ""), ok: true},
		{name: "b3 single denied", h: http.Header{"B3": {tidHex + "-" + sidHex + "-0"}},
			want: parent(t, tidHex, sidHex, NotSampled, ""), ok: true},
		{name: "b3 single deferred, 64-bit trace id", h: http.Header{"B3": {"a3ce929d0e0e4736-" + sidHex}},
			want: parent(t, "a3ce929d0e0e4736", sidHex, Deferred, ""), ok: true},
		{name: "b3 single sampling only", h: http.Header{"B3": {"1"}}},
		{name: "b3 single bad state", h: http.Header{"B3": {tidHex + "-" + sidHex + "-x"}}},
		{name: "b3 single bad parent", h: http.Header{"B3": {tidHex + "-" + sidHex + "-1-zz"}}},
		{name: "b3 single bad trace id length", h: http.Header{"B3": {tidHex[:20] + "-" + sidHex + "-1"}}},

		{name: "b3 multi sampled", h: http.Header{"X-B3-Traceid": {tidHex}, "X-B3-Spanid": {sidHex}, "X-B3-Sampled": {"1"}},
			want: parent(t, tidHex, sidHex, Sampled, ""), ok: true},
		{name: "b3 multi false", h: http.Header{"X-B3-Traceid": {tidHex}, "X-B3-Spanid": {sidHex}, "X-B3-Sampled": {"false"}},
			want: parent(t, tidHex, sidHex, NotSampled, ""), ok: true},
		{name: "b3 multi debug flag", h: http.Header{"X-B3-Traceid": {tidHex}, "X-B3-Spanid": {sidHex}, "X-B3-Sampled": {"0"}, "X-B3-Flags": {"1"}},
			want: parent(t, tidHex, sidHex, Sampled, ""), ok: true},
		{name: "b3 multi deferred", h: http.Header{"X-B3-Traceid": {tidHex}, "X-B3-Spanid": {sidHex}},
			want: parent(t, tidHex, sidHex, Deferred, ""), ok: true},
		{name: "b3 multi bad sampled", h: http.Header{"X-B3-Traceid": {tidHex}, "X-B3-Spanid": {sidHex}, "X-B3-Sampled": {"yes"}}},
		{name: "b3 multi no span id", h: http.Header{"X-B3-Traceid": {tidHex}}},
		{name: "b3 multi zero trace id", h: http.Header{"X-B3-Traceid": {"0000000000000000"}, "X-B3-Spanid": {sidHex}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.h.Clone()
			got, ok := Extract(tc.h)
			if ok != tc.ok {
				t.Fatalf("Extract(%v) ok = %v, want %v", tc.h, ok, tc.ok)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("Extract(%v) (-want +got):\n%s", tc.h, d)
			}
			if d := cmp.Diff(before, tc.h); d != "" {
				t.Errorf("Extract modified the headers (-before +after):\n%s", d)
			}
		})
	}
}

func TestTraceparentRoundTrip(t *testing.T) {
	p := parent(t, tidHex, sidHex, Sampled, "")
	got := Traceparent(p.TraceID, p.SpanID, true)
	if want := "00-" + tidHex + "-" + sidHex + "-01"; got != want {
		t.Fatalf("Traceparent = %q, want %q", got, want)
	}
	back, ok := parseTraceparent(got)
	if !ok {
		t.Fatalf("parseTraceparent(%q) failed", got)
	}
	if d := cmp.Diff(p, back); d != "" {
		t.Errorf("round trip (-want +got):\n%s", d)
	}
	if got := Traceparent(p.TraceID, p.SpanID, false); got[53:] != "00" {
		t.Errorf("unsampled traceparent %q, want flags 00", got)
	}
}

func TestInject(t *testing.T) {
	var tid [16]byte
	var sid [8]byte
	copy(tid[:], mustHex(t, tidHex))
	copy(sid[:], mustHex(t, "1111111111111111"))
	for _, tc := range []struct {
		name string
		in   http.Header
		want http.Header
	}{
		{name: "w3c only", in: http.Header{"Tracestate": {"a=1"}, "Traceparent": {"00-" + tidHex + "-" + sidHex + "-01"}},
			want: http.Header{"Tracestate": {"a=1"}, "Traceparent": {"00-" + tidHex + "-1111111111111111-01"}}},
		{name: "b3 single rewritten", in: http.Header{"B3": {"a3ce929d0e0e4736-" + sidHex}},
			want: http.Header{"B3": {tidHex + "-1111111111111111-1"}, "Traceparent": {"00-" + tidHex + "-1111111111111111-01"}}},
		{name: "b3 multi rewritten", in: http.Header{"X-B3-Traceid": {tidHex}, "X-B3-Spanid": {sidHex}, "X-B3-Parentspanid": {"2222222222222222"}, "X-B3-Flags": {"1"}},
			want: http.Header{"X-B3-Traceid": {tidHex}, "X-B3-Spanid": {"1111111111111111"}, "X-B3-Sampled": {"1"}, "Traceparent": {"00-" + tidHex + "-1111111111111111-01"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inject(tc.in, tid, sid, true)
			if d := cmp.Diff(tc.want, tc.in); d != "" {
				t.Errorf("headers after inject (-want +got):\n%s", d)
			}
		})
	}
}

// TestExtractAllocs: extracting runs on every request when tracing is on;
// parsing allocates nothing (only a multi-value tracestate is joined).
func TestExtractAllocs(t *testing.T) {
	h := http.Header{"Traceparent": {"00-" + tidHex + "-" + sidHex + "-01"}, "Tracestate": {"a=1"}}
	if n := testing.AllocsPerRun(100, func() { Extract(h) }); n != 0 {
		t.Errorf("Extract: %v allocs per run, want 0", n)
	}
}

func FuzzExtract(f *testing.F) {
	f.Add("00-"+tidHex+"-"+sidHex+"-01", tidHex+"-"+sidHex+"-1", tidHex, sidHex, "1")
	f.Add("", "a3ce929d0e0e4736-"+sidHex+"-d-"+sidHex, "", "", "")
	f.Fuzz(func(t *testing.T, tp, b3, tid, sid, sampled string) {
		h := http.Header{}
		for k, v := range map[string]string{"Traceparent": tp, "B3": b3, "X-B3-Traceid": tid, "X-B3-Spanid": sid, "X-B3-Sampled": sampled} {
			if v != "" {
				h[k] = []string{v}
			}
		}
		p, ok := Extract(h)
		if !ok {
			return
		}
		if isZero(p.TraceID[:]) || isZero(p.SpanID[:]) {
			t.Fatalf("Extract(%v) = %+v: zero id accepted", h, p)
		}
		if back, ok := parseTraceparent(Traceparent(p.TraceID, p.SpanID, p.Sampling == Sampled)); !ok || back.TraceID != p.TraceID || back.SpanID != p.SpanID {
			t.Fatalf("Extract(%v) = %+v does not round-trip through traceparent", h, p)
		}
	})
}
