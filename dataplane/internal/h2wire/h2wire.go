// Package h2wire holds what meshproxy's HTTP/2 client (dataplane/cluster/h2)
// and server (dataplane/httpproxy/httpserver) both need on top of
// golang.org/x/net/http2: a header block split into HEADERS and CONTINUATION
// frames, and header names converted between net/http's canonical form and
// HTTP/2's lower case without allocating for the frequent ones.
package h2wire

import (
	"strings"

	"golang.org/x/net/http2"
)

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
