// Package h2wire holds what meshproxy's HTTP/2 client (dataplane/cluster/h2)
// and server (dataplane/httpproxy/httpserver) both need on top of
// golang.org/x/net/http2: header blocks encoded and split into HEADERS and
// CONTINUATION frames, and decoded into a reused frame (headerreader.go),
// a stream's received body with its flow-control
// credit, and header names converted between net/http's canonical form and
// HTTP/2's lower case without allocating for the frequent ones.
package h2wire

import (
	"bytes"
	"net/http"
	"strings"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// HeaderWriter encodes header blocks for one connection. The caller
// serialises its use with the connection's writes; the zero value is not
// usable: call Init.
type HeaderWriter struct {
	Encoder *hpack.Encoder // for the peer's SETTINGS_HEADER_TABLE_SIZE
	buf     bytes.Buffer
	field   func(k, v string) // made once: a closure per block would allocate
}

// Init readies w; w must not move afterwards.
func (w *HeaderWriter) Init() {
	w.Encoder = hpack.NewEncoder(&w.buf)
	w.field = func(k, v string) {
		w.Encoder.WriteField(hpack.HeaderField{Name: k, Value: v, Sensitive: uniquePerRequest(k)})
	}
}

// uniquePerRequest reports whether a field's value is new on every request:
// IDs of requests and spans. Indexed, each would take a place in both
// ends' dynamic tables only to push out an entry that could be reused (one
// insert and one eviction a request on each side, a tenth of the client
// sidecar's HPACK work). x/net's encoder leaves a field out of the table only
// when it is marked Sensitive, which it sends as "never indexed" (RFC 7541
// section 6.2.3): right for a value no later hop could reuse either.
func uniquePerRequest(name string) bool {
	switch name {
	case "x-request-id", "traceparent", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "b3":
		return true
	}
	return false
}

// Write encodes the fields that fields emits and writes them as one header
// block (WriteHeaderBlock).
func (w *HeaderWriter) Write(fr *http2.Framer, id uint32, endStream bool, maxFrame uint32, fields func(enc func(k, v string))) error {
	w.buf.Reset()
	fields(w.field)
	return WriteHeaderBlock(fr, id, endStream, maxFrame, w.buf.Bytes())
}

// Inbox is a stream's received DATA waiting for its reader, and the count
// of bytes read back since the stream's window was last credited. Its owner
// guards it with the stream's lock.
type Inbox struct {
	buf     []byte // buf[off:] not read yet
	off     int
	unacked int
}

// Add appends a DATA frame's payload; its padding counts as read at once.
func (b *Inbox) Add(data []byte, padding int) {
	b.buf = append(b.buf, data...)
	b.unacked += padding
}

// Pending reports whether bytes are waiting.
func (b *Inbox) Pending() bool { return b.off < len(b.buf) }

// Take copies waiting bytes into p. credit is the window update now due:
// what has been read since the last one, once it reaches every, while more
// may come.
func (b *Inbox) Take(p []byte, every int, more bool) (n, credit int) {
	n = copy(p, b.buf[b.off:])
	b.off += n
	if b.off == len(b.buf) {
		b.buf, b.off = b.buf[:0], 0 // the next DATA reuses the array
	}
	b.unacked += n
	if b.unacked >= every && more {
		credit, b.unacked = b.unacked, 0
	}
	return n, credit
}

// Drop discards what is waiting and frees the array.
func (b *Inbox) Drop() { b.buf, b.off = nil, 0 }

// MoveTrailers copies trailers that arrived into the Trailer map the caller
// of a body sees (resp.Trailer, req.Trailer), making it if need be. It runs
// on the body reader's goroutine at EOF: the map's declared keys may be read
// by that goroutine's owner meanwhile, so the frame reader must not write it.
func MoveTrailers(dst *http.Header, trailers http.Header) {
	if len(trailers) > 0 && *dst == nil {
		*dst = make(http.Header, len(trailers))
	}
	for k, vs := range trailers {
		(*dst)[k] = vs
	}
}

// WriteHeaderBlock writes an encoded header block as a HEADERS frame and as
// many CONTINUATION frames as maxFrame (the peer's SETTINGS_MAX_FRAME_SIZE)
// requires. The caller serialises writes to fr.
func WriteHeaderBlock(fr *http2.Framer, id uint32, endStream bool, maxFrame uint32, block []byte) error {
	first := true
	for first || len(block) > 0 {
		chunk := block
		if uint32(len(chunk)) > maxFrame {
			chunk = chunk[:maxFrame]
		}
		block = block[len(chunk):]
		var err error
		if first {
			err = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: chunk, EndStream: endStream, EndHeaders: len(block) == 0})
			first = false
		} else {
			err = fr.WriteContinuation(id, len(block) == 0, chunk)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// common lists frequent header names in canonical form.
var common = []string{"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control",
	"Content-Encoding", "Content-Length", "Content-Type", "Cookie", "Date", "Etag", "Grpc-Accept-Encoding",
	"Grpc-Encoding", "Grpc-Message", "Grpc-Status", "Grpc-Timeout", "If-Modified-Since", "If-None-Match",
	"Location", "Origin", "Referer", "Server", "Set-Cookie", "Te", "Trailer", "Traceparent", "Tracestate",
	"User-Agent", "X-B3-Sampled", "X-B3-Spanid", "X-B3-Traceid", "X-Envoy-Attempt-Count",
	"X-Envoy-Expected-Rq-Timeout-Ms", "X-Forwarded-Client-Cert", "X-Forwarded-For", "X-Forwarded-Proto",
	"X-Meshproxy-Error", "X-Request-Id"}

var canonical, lower = func() (map[string]string, map[string]string) {
	c, l := make(map[string]string, len(common)), make(map[string]string, len(common))
	for _, k := range common {
		lk := strings.ToLower(k)
		c[lk], l[k] = k, lk
	}
	return c, l
}()

// Lower returns the HTTP/2 (lower-case) form of a canonical header name.
func Lower(k string) string {
	if l, ok := lower[k]; ok {
		return l
	}
	return strings.ToLower(k)
}

// Canonical returns the canonical form of a frequent lower-case header name;
// ok is false for any other (the caller converts it, and may cache it).
func Canonical(name string) (k string, ok bool) {
	k, ok = canonical[name]
	return k, ok
}
