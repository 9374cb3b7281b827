package http1

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"testing"
)

// checkWriteHead renders req with writeHead and with Request.Write, and fails
// t when writeHead wrote anything but what Request.Write writes, or wrote
// anything at all when it declined. It reports whether writeHead took req.
func checkWriteHead(t testing.TB, req *http.Request) (took bool) {
	t.Helper()
	var b bytes.Buffer
	bw := bufio.NewWriter(&b)
	took = writeHead(bw, req)
	bw.Flush()
	fast := b.String()
	if !took {
		if fast != "" {
			t.Fatalf("writeHead declined but wrote %q", fast)
		}
		return false
	}
	var w bytes.Buffer
	if err := req.Write(&w); err != nil {
		t.Fatalf("writeHead wrote %q, Request.Write fails: %v", fast, err)
	}
	if fast != w.String() {
		t.Fatalf("writeHead wrote\n%q\nRequest.Write writes\n%q", fast, w.String())
	}
	return true
}

// edited returns a GET of target from host, changed by edit.
func edited(t testing.TB, target, host string, edit func(r *http.Request)) *http.Request {
	r := newHeadRequest(t, "GET", target, host, nil)
	edit(r)
	return r
}

func newHeadRequest(t testing.TB, method, target, host string, h http.Header) *http.Request {
	t.Helper()
	u, err := url.ParseRequestURI(target)
	if err != nil {
		t.Fatal(err)
	}
	return (&http.Request{Method: method, URL: u, Host: host, Header: h, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}).
		WithContext(context.Background())
}

func TestWriteHeadMatchesRequestWrite(t *testing.T) {
	tests := []struct {
		name string
		req  *http.Request
		fast bool // writeHead takes it
	}{
		{"plain GET", newHeadRequest(t, "GET", "/", "svc:8080", http.Header{}), true},
		{"no method means GET", newHeadRequest(t, "", "/a", "svc", nil), true},
		{"HEAD with query and headers", newHeadRequest(t, "HEAD", "/p/q?x=1&y=%20", "svc.ns", http.Header{
			"X-Request-Id": {"abc"}, "Accept": {"*/*", "text/plain"}, "X-Forwarded-For": {"127.0.0.1"},
			"Te": {"trailers"}, "Empty": {}, "Spaced": {"  v  "},
		}), true},
		{"forced empty query", edited(t, "/x", "svc", func(r *http.Request) { r.URL.ForceQuery = true }), true},
		{"escaped path kept as sent", newHeadRequest(t, "GET", "/a%2Fb/c%20d", "svc", nil), true},
		{"path that needs escaping", edited(t, "/", "svc", func(r *http.Request) { r.URL.Path, r.URL.RawPath = "/a b", "" }), true},
		{"host from the URL", edited(t, "/", "", func(r *http.Request) { r.URL.Host = "up:9090" }), true},
		{"own User-Agent", newHeadRequest(t, "GET", "/", "svc", http.Header{"User-Agent": {" curl/8 ", "second"}}), true},
		{"empty User-Agent suppresses it", newHeadRequest(t, "GET", "/", "svc", http.Header{"User-Agent": {""}}), true},
		{"User-Agent with no values", newHeadRequest(t, "GET", "/", "svc", http.Header{"User-Agent": nil}), true},
		{"excluded keys", newHeadRequest(t, "GET", "/", "svc", http.Header{
			"Host": {"other"}, "Content-Length": {"5"}, "Transfer-Encoding": {"chunked"}, "Trailer": {"X"},
		}), true},
		{"non-canonical keys are written as they are", newHeadRequest(t, "GET", "/", "svc", http.Header{
			"host": {"other"}, "x-lower": {"1"},
		}), true},
		{"invalid key dropped", newHeadRequest(t, "GET", "/", "svc", http.Header{"Bad Key": {"1"}, "Ok": {"2"}}), true},
		{"many keys sorted", func() *http.Request {
			h := http.Header{}
			for _, k := range strings.Fields("Z Y X W V U T S R Q P O N M L K J I H G F E D C B A") {
				h[k] = []string{k}
			}
			return newHeadRequest(t, "GET", "/", "svc", h)
		}(), true},

		{"POST", newHeadRequest(t, "POST", "/", "svc", nil), false},
		{"DELETE sends Content-Length: 0", newHeadRequest(t, "DELETE", "/", "svc", nil), false},
		{"body", edited(t, "/", "svc", func(r *http.Request) { r.Body, r.ContentLength = readCloser{strings.NewReader("x")}, 1 }), false},
		{"trailer", edited(t, "/", "svc", func(r *http.Request) { r.Trailer = http.Header{} }), false},
		{"close", edited(t, "/", "svc", func(r *http.Request) { r.Close = true }), false},
		{"newline in a value", newHeadRequest(t, "GET", "/", "svc", http.Header{"X": {"a\r\nInjected: 1"}}), false},
		{"newline in User-Agent", newHeadRequest(t, "GET", "/", "svc", http.Header{"User-Agent": {"a\nb"}}), false},
		{"non-ASCII host", newHeadRequest(t, "GET", "/", "bücher.example", nil), false},
		{"IPv6 zone", newHeadRequest(t, "GET", "/", "[fe80::1%25eth0]:80", nil), false},
		{"invalid host", newHeadRequest(t, "GET", "/", "a b", nil), false},
		{"control byte in the query", edited(t, "/", "svc", func(r *http.Request) { r.URL.RawQuery = "a=\x01" }), false},
		{"opaque URL", edited(t, "/", "svc", func(r *http.Request) { r.URL.Opaque = "//other/x" }), false},
		{"too many keys", func() *http.Request {
			h := http.Header{}
			for i := range maxFastHeaderKeys + 1 {
				h["K"+strings.Repeat("x", i)] = []string{"v"}
			}
			return newHeadRequest(t, "GET", "/", "svc", h)
		}(), false},
		{"client trace", func() *http.Request {
			r := newHeadRequest(t, "GET", "/", "svc", nil)
			return r.WithContext(httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{}))
		}(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if took := checkWriteHead(t, tt.req); took != tt.fast {
				t.Errorf("writeHead took it: %v, want %v", took, tt.fast)
			}
		})
	}
}

type readCloser struct{ *strings.Reader }

func (readCloser) Close() error { return nil }

// FuzzWriteHeadMatchesRequestWrite: whatever writeHead takes, it writes as
// Request.Write does; whatever it declines, it leaves unwritten.
func FuzzWriteHeadMatchesRequestWrite(f *testing.F) {
	f.Add("GET", "/p", "q=1", "svc:80", "X-A", "v", "User-Agent", "ua")
	f.Add("HEAD", "/a b", "", "svc", "Bad Key", " x ", "user-agent", "")
	f.Add("", "", "%", "[::1]:1", "Host", "h", "Trailer", "t")
	f.Fuzz(func(t *testing.T, method, path, rawQuery, host, k1, v1, k2, v2 string) {
		req := (&http.Request{
			Method: method,
			URL:    &url.URL{Path: path, RawQuery: rawQuery},
			Host:   host,
			Header: http.Header{k1: {v1}, k2: {v2, v1}},
		}).WithContext(context.Background())
		checkWriteHead(t, req)
	})
}

// BenchmarkWriteHead compares writeHead with Request.Write on the request
// a server sidecar sends its app.
func BenchmarkWriteHead(b *testing.B) {
	req := newHeadRequest(b, "GET", "/", "bench:8080", http.Header{
		"X-Request-Id":      {"6f1f2c1e-9a43-4f0b-8f7e-2a6f43d6c0b1"},
		"X-Forwarded-Proto": {"http"},
		"Accept":            {"*/*"},
		"User-Agent":        {"wrk"},
	})
	bw := bufio.NewWriter(discard{})
	b.Run("writeHead", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !writeHead(bw, req) {
				b.Fatal("declined")
			}
		}
	})
	b.Run("Request.Write", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := req.Write(bw); err != nil {
				b.Fatal(err)
			}
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
