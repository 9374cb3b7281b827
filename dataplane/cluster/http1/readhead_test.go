package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// checkReadHead reads raw, the bytes an upstream sent in answer to a
// request of method, with readHead and with http.ReadResponse, each from
// a fresh reader primed as readResponse primes it (Peek(1)). When readHead
// declines it must have consumed nothing; when it accepts, the response,
// its body (bytes and ending) and what the reader holds after it must be
// what ReadResponse gives. It reports whether readHead accepted.
func checkReadHead(t testing.TB, method string, raw []byte) bool {
	t.Helper()
	req := &http.Request{Method: method}
	br := bufio.NewReaderSize(bytes.NewReader(raw), 4096)
	if _, err := br.Peek(1); err != nil {
		return false
	}
	buffered := br.Buffered()
	got := readHead(br, req)
	if got == nil {
		if br.Buffered() != buffered {
			t.Fatalf("readHead declined %q but consumed %d bytes", raw, buffered-br.Buffered())
		}
		return false
	}
	wantRest := bufio.NewReaderSize(bytes.NewReader(raw), 4096)
	want, err := http.ReadResponse(wantRest, req)
	if err != nil {
		t.Fatalf("readHead accepted %q, which ReadResponse refuses: %v", raw, err)
	}
	type view struct {
		Status                 string
		StatusCode             int
		Proto                  string
		ProtoMajor, ProtoMinor int
		Header, Trailer        http.Header
		ContentLength          int64
		TransferEncoding       []string
		Close, Uncompressed    bool
		NoBody                 bool
		Body                   string
		BodyErr                string
		Rest                   string
	}
	see := func(r *http.Response, rest *bufio.Reader) view {
		b, err := io.ReadAll(r.Body)
		after, _ := io.ReadAll(rest)
		v := view{r.Status, r.StatusCode, r.Proto, r.ProtoMajor, r.ProtoMinor, r.Header, r.Trailer, r.ContentLength,
			r.TransferEncoding, r.Close, r.Uncompressed, r.Body == http.NoBody, string(b), "", string(after)}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			v.BodyErr = "unexpected EOF"
		} else if err != nil {
			v.BodyErr = err.Error()
		}
		return v
	}
	if d := cmp.Diff(see(want, wantRest), see(got, br)); d != "" {
		t.Fatalf("%q (-ReadResponse +readHead):\n%s", raw, d)
	}
	if got.Request != req {
		t.Fatalf("%q: response not tied to its request", raw)
	}
	return true
}

func TestReadHeadMatchesReadResponse(t *testing.T) {
	const date = "Date: Thu, 26 Nov 2026 08:00:00 GMT\r\n"
	for _, tc := range []struct {
		name, method, raw string
		fast              bool
	}{
		{"go backend", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain; charset=utf-8\r\n" + date + "\r\nok", true},
		{"lower-case names", "GET", "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-custom-thing: 1\r\nserver: envoy\r\n\r\nok", true},
		{"repeated name", "POST", "HTTP/1.1 201 Created\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n", true},
		{"blanks around values", "GET", "HTTP/1.1 404 Not Found\r\nContent-Length:  3 \r\nX-A:\t v \t\r\nX-Empty:\r\n\r\nnah", true},
		{"no reason", "GET", "HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nx", true},
		{"empty reason", "GET", "HTTP/1.1 503 \r\nContent-Length: 1\r\n\r\nx", true},
		{"odd reason", "GET", "HTTP/1.1 200 Okay\tthen \xff\r\nContent-Length: 1\r\n\r\nx", true},
		{"next response buffered", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n", true},
		{"short body", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true},
		{"large length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775807\r\n\r\nabc", true},

		{"chunked", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", false},
		{"connection close", "GET", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", false},
		{"HTTP/1.0", "GET", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false},
		{"no length", "GET", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nok", false},
		{"two lengths", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", false},
		{"bad length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok", false},
		{"signed length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", false},
		{"length too large", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775808\r\n\r\nok", false},
		{"no content", "DELETE", "HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\n", false},
		{"not modified", "GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 2\r\n\r\n", false},
		{"informational", "GET", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false},
		{"HEAD", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", false},
		{"folded line", "GET", "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 0\r\n\r\n", false},
		{"bare LF", "GET", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", false},
		{"space before colon", "GET", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", false},
		{"control in value", "GET", "HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 0\r\n\r\n", false},
		{"pragma", "GET", "HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 0\r\n\r\n", false},
		{"trailer", "GET", "HTTP/1.1 200 OK\r\nTrailer: X-T\r\nContent-Length: 0\r\n\r\n", false},
		{"four-digit status", "GET", "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", false},
		{"signed status", "GET", "HTTP/1.1 +20 OK\r\nContent-Length: 0\r\n\r\n", false},
		{"head not yet whole", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkReadHead(t, tc.method, []byte(tc.raw)); got != tc.fast {
				t.Errorf("readHead accepted = %v, want %v", got, tc.fast)
			}
		})
	}
}

func FuzzReadHeadMatchesReadResponse(f *testing.F) {
	f.Add("GET", []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"))
	f.Add("GET", []byte("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nX-A: 1\r\nX-A: 2\r\n\r\nokHTTP"))
	f.Add("POST", []byte("HTTP/1.1 404\r\nContent-Length: 10\r\nX:\t\r\n\r\nabc"))
	f.Add("GET", []byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, method string, raw []byte) {
		checkReadHead(t, method, raw)
	})
}
