// Package h1wire reads the plain HTTP/1.1 heads most peers send without
// net/http's general machinery, for meshproxy's HTTP/1.1 server (request
// heads) and upstream transport (response heads): a head whole in a read
// buffer becomes one string, and its lines, names and values are slices of
// it. Each caller accepts only what it can show net/http would read the
// same way (its tests compare the two) and hands anything else to net/http.
package h1wire

import (
	"bytes"
	"net/http"
	"net/textproto"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// Head returns the head at the start of buf: its lines, each with its
// CRLF, as one string, and the bytes it takes in buf with the empty line
// that ends it. ok is false when buf holds no whole head.
func Head(buf []byte) (head string, n int, ok bool) {
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		return "", 0, false
	}
	return string(buf[:end+2]), end + 4, true
}

// CutLine splits s, whole lines, after its first line's CRLF.
func CutLine(s string) (line, rest string) {
	if i := strings.Index(s, "\r\n"); i >= 0 {
		return s[:i], s[i+2:]
	}
	return s, ""
}

// Header parses header lines into a header map, calling visit with each
// canonical name and value; it fails when visit returns false or a line is
// one net/http might read otherwise: a continuation, a name that is not a
// token, control characters in a value. All values share one array, so a
// name's first value is not an allocation of its own.
func Header(lines string, visit func(k, v string) bool) (http.Header, bool) {
	n := strings.Count(lines, "\r\n")
	h := make(http.Header, n)
	vals := make([]string, n)
	for i := 0; lines != ""; i++ {
		var line string
		line, lines = CutLine(lines)
		k, v, ok := field(line)
		if !ok || !visit(k, v) {
			return nil, false
		}
		vals[i] = v
		if vs, ok := h[k]; ok {
			h[k] = append(vs, v)
		} else {
			h[k] = vals[i : i+1 : i+1]
		}
	}
	return h, true
}

// field splits "Name: value" into the canonical name (a slice of line when
// it is canonical already) and the value without surrounding blanks.
func field(line string) (k, v string, ok bool) {
	colon := strings.IndexByte(line, ':')
	if colon <= 0 || !httpguts.ValidHeaderFieldName(line[:colon]) {
		return "", "", false
	}
	k = textproto.CanonicalMIMEHeaderKey(line[:colon])
	v = line[colon+1:]
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	if !Printable(v) {
		return "", "", false
	}
	return k, v, true
}

// Printable reports whether s has no control characters but HTAB.
func Printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
