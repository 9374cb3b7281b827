package http1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strconv"

	"github.com/tinymesh/tinymesh/dataplane/internal/h1wire"
)

// readHead reads the response to req from br as http.ReadResponse would
// (TestReadHeadMatchesReadResponse and FuzzReadHeadMatchesReadResponse hold
// it to that) when the response is of the plain kind apps send most: an
// HTTP/1.1 head already whole in br's buffer, with CRLF line ends and no
// continuation lines, a Content-Length, and none of Transfer-Encoding,
// Connection, Trailer or Pragma, which need net/http's rules. For any
// other it reads nothing and returns nil; the caller then uses
// http.ReadResponse.
//
// Why: on the server sidecar, ReadResponse was 8-10 % of the CPU and a
// quarter of the allocations: a textproto reader, a string and a
// canonicalization per header line, a transfer reader.
func readHead(br *bufio.Reader, req *http.Request) *http.Response {
	if req.Method == http.MethodHead || req.Method == http.MethodConnect {
		return nil // no body whatever the head says
	}
	buf, _ := br.Peek(br.Buffered())
	if !bytes.HasPrefix(buf, []byte("HTTP/1.1 ")) {
		return nil
	}
	head, n, ok := h1wire.Head(buf)
	if !ok {
		return nil
	}
	line, lines := h1wire.CutLine(head)
	status := line[len("HTTP/1.1 "):]
	code, ok := statusCode(status)
	if !ok || code < 200 || code == http.StatusNoContent || code == http.StatusNotModified {
		return nil // 1xx, 204 and 304 have no body, by rule rather than by length
	}
	length := int64(-1)
	h, ok := h1wire.Header(lines, func(k, v string) bool {
		switch k {
		case "Transfer-Encoding", "Connection", "Trailer", "Pragma":
			return false
		case "Content-Length":
			n, err := strconv.ParseUint(v, 10, 63)
			if length >= 0 || err != nil {
				return false // repeated or malformed: net/http's rules decide
			}
			length = int64(n)
		}
		return true
	})
	if !ok || length < 0 {
		return nil
	}
	br.Discard(n)
	resp := &http.Response{
		Status:        status,
		StatusCode:    code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		ContentLength: length,
		Body:          http.NoBody,
		Request:       req,
	}
	if length > 0 {
		resp.Body = &sizedBody{r: br, left: length}
	}
	return resp
}

// statusCode parses "200 OK" (or "200", or "200 "): three digits, then a
// reason without control characters, which net/http takes as it is.
func statusCode(status string) (int, bool) {
	if len(status) < 3 || len(status) > 3 && status[3] != ' ' {
		return 0, false
	}
	code := 0
	for _, c := range []byte(status[:3]) {
		if c < '0' || c > '9' {
			return 0, false
		}
		code = code*10 + int(c-'0')
	}
	return code, h1wire.Printable(status[3:])
}

// sizedBody reads a body of a known length as net/http's does: io.EOF with
// its last bytes, io.ErrUnexpectedEOF if the connection ends first.
type sizedBody struct {
	r    *bufio.Reader
	left int64
	err  error
}

func (b *sizedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	switch {
	case b.left == 0:
		err = io.EOF
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	b.err = err
	return n, err
}

func (b *sizedBody) Close() error { return nil }
