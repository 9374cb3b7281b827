package tracing

import (
	"encoding/hex"
	"net/http"
	"strings"
)

// Header names in canonical form, so that map lookups do not canonicalize.
const (
	hdrTraceparent = "Traceparent"
	hdrTracestate  = "Tracestate"
	hdrB3          = "B3"
	hdrB3TraceID   = "X-B3-Traceid"
	hdrB3SpanID    = "X-B3-Spanid"
	hdrB3ParentID  = "X-B3-Parentspanid"
	hdrB3Sampled   = "X-B3-Sampled"
	hdrB3Flags     = "X-B3-Flags"
)

// Sampling is what an incoming trace context says about sampling.
type Sampling uint8

const (
	// Deferred: the caller left the decision to this proxy (B3 without a
	// sampling state); the configured rate decides.
	Deferred Sampling = iota
	// Sampled: the caller sampled the trace (W3C flag 01, B3 1 or d).
	Sampled
	// NotSampled: the caller decided not to sample (W3C flag 00, B3 0).
	NotSampled
)

// Parent is the trace context a request arrived with: the caller's trace and
// span. TraceState is W3C tracestate, passed on as received.
type Parent struct {
	TraceID  [16]byte
	SpanID   [8]byte
	Sampling Sampling
	// TraceState is the request's tracestate header (W3C only), its field
	// values joined with ","; empty when absent.
	TraceState string
}

// Extract reads the trace context of a request from h: W3C traceparent (with
// tracestate) first, then B3 single-header (b3), then B3 multi-header
// (X-B3-TraceId, X-B3-SpanId, X-B3-Sampled, X-B3-Flags). A malformed or
// ambiguous header (repeated traceparent, a zero id, bad hex) is ignored as if
// absent, as W3C Trace Context section 4.3 asks of a vendor that cannot parse
// it: the request then starts a new trace. h is not modified.
func Extract(h http.Header) (Parent, bool) {
	if v, ok := h[hdrTraceparent]; ok {
		if len(v) == 1 {
			if p, ok := parseTraceparent(v[0]); ok {
				if ts := h[hdrTracestate]; len(ts) > 0 {
					p.TraceState = strings.Join(ts, ",")
				}
				return p, true
			}
		}
		// An invalid traceparent: W3C says to ignore tracestate too and
		// start over. B3 is not consulted: the caller meant W3C.
		return Parent{}, false
	}
	if v := h[hdrB3]; len(v) == 1 {
		return parseB3Single(v[0])
	}
	if t, s := h[hdrB3TraceID], h[hdrB3SpanID]; len(t) == 1 && len(s) == 1 {
		return parseB3Multi(t[0], s[0], h[hdrB3Sampled], h[hdrB3Flags])
	}
	return Parent{}, false
}

// parseTraceparent parses version-traceid-parentid-flags (W3C Trace Context
// section 3.2). Versions above 00 may append fields after a "-"; version ff
// is invalid.
func parseTraceparent(v string) (Parent, bool) {
	var p Parent
	if len(v) < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return p, false
	}
	var ver [1]byte
	if !decodeLowerHex(ver[:], v[0:2]) || ver[0] == 0xff {
		return p, false
	}
	if ver[0] == 0 && len(v) != 55 {
		return p, false
	}
	if len(v) > 55 && v[55] != '-' {
		return p, false
	}
	var flags [1]byte
	if !decodeLowerHex(p.TraceID[:], v[3:35]) || !decodeLowerHex(p.SpanID[:], v[36:52]) ||
		!decodeLowerHex(flags[:], v[53:55]) || isZero(p.TraceID[:]) || isZero(p.SpanID[:]) {
		return Parent{}, false
	}
	p.Sampling = NotSampled
	if flags[0]&1 != 0 {
		p.Sampling = Sampled
	}
	return p, true
}

// parseB3Single parses b3: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]
// (openzipkin/b3-propagation, "Single header"). A header with only a
// sampling state carries no ids and is ignored.
func parseB3Single(v string) (Parent, bool) {
	var p Parent
	tid, rest, ok := strings.Cut(v, "-")
	if !ok || !parseB3TraceID(&p, tid) {
		return Parent{}, false
	}
	sid, rest, more := strings.Cut(rest, "-")
	if !parseB3SpanID(&p, sid) {
		return Parent{}, false
	}
	if !more {
		return p, true // Deferred
	}
	state, parent, _ := strings.Cut(rest, "-")
	switch state {
	case "1", "d":
		p.Sampling = Sampled
	case "0":
		p.Sampling = NotSampled
	default:
		return Parent{}, false
	}
	var pid [8]byte
	if parent != "" && !decodeLowerHex(pid[:], parent) {
		return Parent{}, false
	}
	return p, true
}

// parseB3Multi parses the X-B3-* headers. X-B3-Flags: 1 (debug) implies
// sampled; X-B3-Sampled accepts 1/0 and, from older tracers, true/false.
func parseB3Multi(tid, sid string, sampled, flags []string) (Parent, bool) {
	var p Parent
	if !parseB3TraceID(&p, tid) || !parseB3SpanID(&p, sid) {
		return Parent{}, false
	}
	if len(flags) == 1 && flags[0] == "1" {
		p.Sampling = Sampled
		return p, true
	}
	if len(sampled) == 1 {
		switch sampled[0] {
		case "1", "true":
			p.Sampling = Sampled
		case "0", "false":
			p.Sampling = NotSampled
		default:
			return Parent{}, false
		}
	}
	return p, true
}

// parseB3TraceID takes a 64- or 128-bit B3 trace id; a 64-bit one fills the
// low half, as B3 and W3C interop expects.
func parseB3TraceID(p *Parent, s string) bool {
	switch len(s) {
	case 32:
		if !decodeLowerHex(p.TraceID[:], s) {
			return false
		}
	case 16:
		if !decodeLowerHex(p.TraceID[8:], s) {
			return false
		}
	default:
		return false
	}
	return !isZero(p.TraceID[:])
}

func parseB3SpanID(p *Parent, s string) bool {
	return len(s) == 16 && decodeLowerHex(p.SpanID[:], s) && !isZero(p.SpanID[:])
}

// decodeLowerHex decodes exactly len(dst)*2 lower-case hex digits: W3C
// forbids upper case, and B3 ids are lower-case hex too.
func decodeLowerHex(dst []byte, s string) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	_, err := hex.Decode(dst, []byte(s)) // does not escape: no allocation
	return err == nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Traceparent formats a version-00 traceparent for trace tid, span sid.
func Traceparent(tid [16]byte, sid [8]byte, sampled bool) string {
	var b [55]byte
	b[0], b[1], b[2] = '0', '0', '-'
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	b[52], b[53], b[54] = '-', '0', '0'
	if sampled {
		b[54] = '1'
	}
	return string(b[:])
}

// inject writes the context of this proxy's span (trace tid, span sid) into
// the outbound headers hdr: traceparent always; when the request carried B3,
// its B3 headers too, so that an application reading B3 sees this proxy's span
// as its parent rather than the caller's. tracestate is forwarded as received
// (hdr is a copy of the inbound headers).
func inject(hdr http.Header, tid [16]byte, sid [8]byte, sampled bool) {
	hdr[hdrTraceparent] = []string{Traceparent(tid, sid, sampled)}
	_, single := hdr[hdrB3]
	_, multi := hdr[hdrB3TraceID]
	if !single && !multi {
		return
	}
	var t [32]byte
	hex.Encode(t[:], tid[:])
	var s [16]byte
	hex.Encode(s[:], sid[:])
	flag := "0"
	if sampled {
		flag = "1"
	}
	if single {
		hdr[hdrB3] = []string{string(t[:]) + "-" + string(s[:]) + "-" + flag}
	}
	if multi {
		hdr[hdrB3TraceID] = []string{string(t[:])}
		hdr[hdrB3SpanID] = []string{string(s[:])}
		hdr[hdrB3Sampled] = []string{flag}
		delete(hdr, hdrB3ParentID)
		delete(hdr, hdrB3Flags)
	}
}
