package httpserver

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// checkReadHead reads raw, the bytes a client sent, with readHead and with
// http.ReadRequest, each from a fresh reader primed as the server primes
// it (Peek(1)). When readHead declines it must have consumed nothing; when
// it accepts, the request and what the reader holds after it must be what
// ReadRequest gives. It reports whether readHead accepted.
func checkReadHead(t testing.TB, raw []byte) bool {
	t.Helper()
	br := bufio.NewReaderSize(bytes.NewReader(raw), 4096)
	if _, err := br.Peek(1); err != nil {
		return false
	}
	buffered := br.Buffered()
	got := readHead(br)
	if got == nil {
		if br.Buffered() != buffered {
			t.Fatalf("readHead declined %q but consumed %d bytes", raw, buffered-br.Buffered())
		}
		return false
	}
	wantRest := bufio.NewReaderSize(bytes.NewReader(raw), 4096)
	want, err := http.ReadRequest(wantRest)
	if err != nil {
		t.Fatalf("readHead accepted %q, which ReadRequest refuses: %v", raw, err)
	}
	type view struct {
		Method, URL, Path, RawPath, RawQuery, Host, RequestURI string
		Proto                                                  string
		ProtoMajor, ProtoMinor                                 int
		Header, Trailer                                        http.Header
		ContentLength                                          int64
		TransferEncoding                                       []string
		Close, NoBody                                          bool
		Rest                                                   string
	}
	see := func(r *http.Request, rest *bufio.Reader) view {
		after, _ := io.ReadAll(rest)
		return view{r.Method, r.URL.String(), r.URL.Path, r.URL.RawPath, r.URL.RawQuery, r.Host, r.RequestURI, r.Proto,
			r.ProtoMajor, r.ProtoMinor, r.Header, r.Trailer, r.ContentLength, r.TransferEncoding, r.Close,
			r.Body == http.NoBody, string(after)}
	}
	if d := cmp.Diff(see(want, wantRest), see(got, br)); d != "" {
		t.Fatalf("%q (-ReadRequest +readHead):\n%s", raw, d)
	}
	return true
}

func TestReadHeadMatchesReadRequest(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		fast      bool
	}{
		{"wrk", "GET / HTTP/1.1\r\nHost: bench:8080\r\n\r\n", true},
		{"curl", "GET /api/items?id=1&x=%20y HTTP/1.1\r\nHost: backend\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\n\r\n", true},
		{"browser-like", "GET /a/b%2Fc HTTP/1.1\r\nhost: x\r\naccept-encoding: gzip, br\r\nCookie: a=1\r\nCookie: b=2\r\nX-Empty:\r\nX-Pad:  \tv\t \r\n\r\n", true},
		{"pipelined", "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n", true},
		{"no Host", "DELETE /x HTTP/1.1\r\nX-A: 1\r\n\r\n", true},
		{"expect", "GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n", true},
		{"upgrade", "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n", true},

		{"body by length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok", false},
		{"chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false},
		{"both", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"connection", "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false},
		{"connection upgrade", "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", false},
		{"pragma", "GET / HTTP/1.1\r\nHost: x\r\nPragma: no-cache\r\n\r\n", false},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", false},
		{"HTTP/1.0", "GET / HTTP/1.0\r\nHost: x\r\n\r\n", false},
		{"absolute form", "GET http://a/b HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"CONNECT", "CONNECT /x HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false},
		{"bad method", "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"space in target", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"control in target", "GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"folded line", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n", false},
		{"bare LF", "GET / HTTP/1.1\nHost: x\n\n", false},
		{"space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", false},
		{"control in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", false},
		{"head not yet whole", "GET / HTTP/1.1\r\nHost: x\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkReadHead(t, []byte(tc.raw)); got != tc.fast {
				t.Errorf("readHead accepted = %v, want %v", got, tc.fast)
			}
		})
	}
}

func FuzzReadHeadMatchesReadRequest(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: bench:8080\r\n\r\n"))
	f.Add([]byte("GET /a%2Fb?q=1 HTTP/1.1\r\nhost: x\r\nX-A: 1\r\nX-A: 2\r\n\r\nGET"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		checkReadHead(t, raw)
	})
}
