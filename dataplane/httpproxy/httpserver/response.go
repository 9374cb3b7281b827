package httpserver

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// response is the http.ResponseWriter of one HTTP/1.1 request. The status
// line and header go out with the first Write or Flush, or when the handler
// returns, so that a handler that writes nothing gets a Content-Length: 0.
// Header keys with http.TrailerPrefix, and keys declared in "Trailer", are
// sent as trailers of a chunked response.
type response struct {
	c      *conn
	req    *http.Request
	body   *requestBody // req's body as the server wrapped it; nil: none
	header http.Header

	status      int
	wroteHeader bool // the final status is set
	headerSent  bool // the status line and header are in the write buffer
	chunked     bool
	noBody      bool  // HEAD, 204, 304: the body is dropped
	bodyErr     bool  // 204, 304: and Write says so
	length      int64 // the declared Content-Length; -1: none
	written     int64
	closeAfter  bool     // the connection ends with this response
	declared    []string // the "Trailer" header when the header went out
	err         error    // the first write error; later writes return it
	scratch     [32]byte
}

func (w *response) reset(c *conn, req *http.Request) {
	h := w.header
	if h == nil {
		h = make(http.Header)
	} else {
		clear(h)
	}
	*w = response{c: c, req: req, header: h, length: -1}
}

func (w *response) Header() http.Header { return w.header }

// AdoptHeader makes h the response's header, instead of copying it in,
// while the response has no header fields and has not started; otherwise
// it adds h's fields to the header. It returns the header, which the
// caller edits on through it or Header. h is the response's from then on.
func (w *response) AdoptHeader(h http.Header) http.Header {
	w.header = adoptHeader(w.header, h, w.wroteHeader)
	return w.header
}

// adoptHeader returns h in place of own when own is empty and nothing was
// written, else own with h's fields added.
func adoptHeader(own, h http.Header, started bool) http.Header {
	if len(own) == 0 && !started && h != nil {
		return h
	}
	for k, vs := range h {
		own[k] = vs
	}
	return own
}

func (w *response) WriteHeader(code int) {
	if w.c.hijacked || w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic("httpserver: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.writeInformational(code)
		return
	}
	w.wroteHeader, w.status = true, code
}

// writeInformational sends a 1xx response at once, with the header as it is.
func (w *response) writeInformational(code int) {
	if w.headerSent {
		return
	}
	bw := w.c.bw
	bw.WriteString(statusLine(code, true))
	writeFields(bw, w.header)
	bw.WriteString("\r\n")
	if err := bw.Flush(); err != nil {
		w.err = err
	}
}

func (w *response) Write(p []byte) (int, error) {
	if w.c.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headerSent {
		w.sendHeader()
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.noBody {
		if w.bodyErr {
			return 0, http.ErrBodyNotAllowed
		}
		return len(p), nil
	}
	if len(p) == 0 {
		return 0, nil
	}
	var over bool
	if w.length >= 0 && w.written+int64(len(p)) > w.length {
		p, over = p[:w.length-w.written], true
	}
	bw := w.c.bw
	if w.chunked {
		bw.Write(strconv.AppendInt(w.scratch[:0], int64(len(p)), 16))
		bw.WriteString("\r\n")
	}
	n, err := bw.Write(p)
	if w.chunked && err == nil {
		_, err = bw.WriteString("\r\n")
	}
	w.written += int64(n)
	if err != nil {
		w.err = err
		return n, err
	}
	if over {
		// The handler's body and length disagree: end the connection
		// with this response, as net/http's server does.
		w.closeAfter = true
		return n, http.ErrContentLength
	}
	return n, nil
}

// Flush sends what is buffered, the header included.
func (w *response) Flush() { w.FlushError() }

// FlushError is Flush for http.ResponseController.
func (w *response) FlushError() error {
	if w.c.hijacked {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headerSent {
		w.sendHeader()
	}
	if w.err == nil {
		w.err = w.c.bw.Flush()
	}
	return w.err
}

// EnableFullDuplex is for http.ResponseController: the request body can
// always be read while the response is written.
func (w *response) EnableFullDuplex() error { return nil }

// Hijack hands the connection to the handler, with its buffers: bytes the
// client sent after the request are in the reader.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c := w.c
	if c.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.headerSent {
		if err := c.bw.Flush(); err != nil {
			return nil, nil, err
		}
	}
	c.watchStop()
	c.setReadDeadline(time.Time{}) // the hijacker owns the connection's deadlines
	c.hijacked = true
	c.srv.forget(c)
	var nc net.Conn = c.rwc
	if c.cr.hasSaved {
		// The watch read a byte; it goes first.
		// The returned reader reads through the same conn, so the byte is
		// there for a hijacker reading either.
		nc = &savedByteConn{Conn: c.rwc, b: c.cr.saved, has: true}
		c.cr.hasSaved = false
		c.cr.conn = nc
	}
	return nc, bufio.NewReadWriter(c.br, c.bw), nil
}

// sendHeader writes the status line and header to the buffer, deciding the
// framing of the body.
func (w *response) sendHeader() {
	w.headerSent = true
	c, h, code := w.c, w.header, w.status
	is11 := w.req.ProtoAtLeast(1, 1)
	// A sized body left unread beyond what drain reads: say now that the
	// connection ends, or a client that finishes sending may reuse it.
	if w.req.Close || c.srv.closing.Load() || httpguts.HeaderValuesContainsToken(h["Connection"], "close") || w.body.tooLargeToDrain() {
		w.closeAfter = true
	}
	length := int64(-1)
	if v := h["Content-Length"]; len(v) == 1 {
		if n, err := strconv.ParseInt(v[0], 10, 64); err == nil && n >= 0 {
			length = n
		}
	}
	switch {
	case code == http.StatusNoContent || code == http.StatusNotModified || code < 200:
		w.noBody, w.bodyErr = true, true
		if code != http.StatusNotModified {
			length = -1 // a 304's is the representation's; these have none
		}
	case w.req.Method == http.MethodHead:
		w.noBody = true
	case length >= 0:
		w.length = length
	case is11:
		w.chunked = true
		w.declared = h["Trailer"]
	default:
		w.closeAfter = true // HTTP/1.0: the body ends with the connection
	}
	bw := c.bw
	bw.WriteString(statusLine(code, is11))
	writeFields(bw, h)
	if _, ok := h["Date"]; !ok {
		bw.WriteString("Date: ")
		bw.Write(date())
		bw.WriteString("\r\n")
	}
	if length >= 0 {
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(w.scratch[:0], length, 10))
		bw.WriteString("\r\n")
	}
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if w.closeAfter {
		bw.WriteString("Connection: close\r\n")
	} else if !is11 {
		bw.WriteString("Connection: keep-alive\r\n")
	}
	bw.WriteString("\r\n")
}

// finish completes the response once the handler has returned and reports
// whether the connection can carry another request.
func (w *response) finish() bool {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headerSent {
		// Nothing was written: the body is empty, unless trailers follow
		// (declared, or set with http.TrailerPrefix). A status without a
		// body gets no length: a 304's would be the representation's.
		if _, ok := w.header["Content-Length"]; !ok && w.req.Method != http.MethodHead && bodyAllowed(w.status) && !hasTrailers(w.header) {
			w.header["Content-Length"] = zeroLength[:1:1]
		}
		w.sendHeader()
	}
	bw := w.c.bw
	if w.chunked && w.err == nil {
		bw.WriteString("0\r\n")
		eachTrailer(w.header, w.declared, func(k, v string) { writeField(bw, k, v) })
		bw.WriteString("\r\n")
	}
	if w.length >= 0 && w.written < w.length {
		w.closeAfter = true // the client would wait for the rest
	}
	if w.err == nil {
		w.err = bw.Flush()
	}
	return w.err == nil && !w.closeAfter
}

var zeroLength = []string{"0"}

func bodyAllowed(code int) bool {
	return code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
}

// hasTrailers reports whether h declares trailers or has http.TrailerPrefix
// keys.
func hasTrailers(h http.Header) bool {
	if len(h["Trailer"]) > 0 {
		return true
	}
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// writeFields writes h's fields but those the server writes itself and the
// trailers.
func writeFields(bw *bufio.Writer, h http.Header) {
	for k, vs := range h {
		switch k {
		case "Content-Length", "Transfer-Encoding", "Connection":
			continue
		}
		if strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vs {
			writeField(bw, k, v)
		}
	}
}

// writeField writes one field line; line breaks in the value become spaces,
// as net/http does, so a value cannot add fields of its own.
func writeField(bw *bufio.Writer, k, v string) {
	bw.WriteString(k)
	bw.WriteString(": ")
	if strings.ContainsAny(v, "\r\n") {
		v = strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ").Replace(v)
	}
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

// statusLine returns the status line for code, constant for the common ones.
func statusLine(code int, is11 bool) string {
	if is11 {
		switch code {
		case 200:
			return "HTTP/1.1 200 OK\r\n"
		case 204:
			return "HTTP/1.1 204 No Content\r\n"
		case 304:
			return "HTTP/1.1 304 Not Modified\r\n"
		case 404:
			return "HTTP/1.1 404 Not Found\r\n"
		case 503:
			return "HTTP/1.1 503 Service Unavailable\r\n"
		}
	}
	proto := "HTTP/1.0 "
	if is11 {
		proto = "HTTP/1.1 "
	}
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	return proto + strconv.Itoa(code) + " " + text + "\r\n"
}

// date returns the Date header value for now, formatted once a second.
func date() []byte { return dateNow().value }

// dateString is date as a string, for HTTP/2's encoder.
func dateString() string { return dateNow().str }

func dateNow() *dateValue {
	now := time.Now()
	sec := now.Unix()
	if d := dateCache.Load(); d != nil && d.sec == sec {
		return d
	}
	b := now.UTC().AppendFormat(make([]byte, 0, len(http.TimeFormat)), http.TimeFormat)
	d := &dateValue{sec: sec, value: b, str: string(b)}
	dateCache.Store(d)
	return d
}

type dateValue struct {
	sec   int64
	value []byte
	str   string
}

var dateCache atomic.Pointer[dateValue]

// savedByteConn is a hijacked connection with a byte already read from it.
type savedByteConn struct {
	net.Conn
	b   byte
	has bool
}

func (c *savedByteConn) Read(p []byte) (int, error) {
	if c.has && len(p) > 0 {
		p[0], c.has = c.b, false
		return 1, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes, for splices.
func (c *savedByteConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
