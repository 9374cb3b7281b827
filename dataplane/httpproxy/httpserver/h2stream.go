package httpserver

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"

	"github.com/tinymesh/tinymesh/dataplane/internal/h2wire"
	"github.com/tinymesh/tinymesh/dataplane/internal/reqctx"
)

// h2stream is one HTTP/2 request: its body as the handler reads it (Read,
// Close) and its response as the handler writes it (w).
type h2stream struct {
	c       *h2conn
	id      uint32
	ctx     reqctx.Context // the request's, cancelled when the stream ends or is reset
	req     *http.Request  // as the handler has it
	handler http.Handler
	declLen int64 // the request's Content-Length; -1: none

	mu          sync.Mutex
	in          h2wire.Inbox // received body bytes
	remoteEnded bool         // END_STREAM received
	bodyErr     error        // the stream was reset or the connection failed
	bodyClosed  bool         // the handler closed the body or returned
	recvWin     int32        // what the client may still send
	gotLen      int64
	trailers    http.Header // arrived; Read hands them over at EOF
	notify      chan struct{}

	sendWin int32 // guarded by c.mu
	reset   bool  // reset by either side, or the connection failed; guarded by c.mu

	w h2response // the handler goroutine's
}

func (s *h2stream) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func (s *h2stream) onData(data []byte, n int, end bool) error {
	s.mu.Lock()
	if s.remoteEnded || s.bodyErr != nil {
		s.mu.Unlock()
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeStreamClosed}
	}
	s.recvWin -= int32(n)
	s.gotLen += int64(len(data))
	var code http2.ErrCode
	switch {
	case s.recvWin < 0:
		code = http2.ErrCodeFlowControl
	case s.declLen >= 0 && (s.gotLen > s.declLen || end && s.gotLen != s.declLen):
		code = http2.ErrCodeProtocol // RFC 9113 section 8.1.1
	}
	if code != http2.ErrCodeNo {
		s.mu.Unlock()
		return http2.StreamError{StreamID: s.id, Code: code}
	}
	if !s.bodyClosed && s.bodyErr == nil {
		s.in.Add(data, n-len(data)) // padding goes back with the next credit
	}
	s.remoteEnded = end
	s.mu.Unlock()
	s.wake()
	return nil
}

func (s *h2stream) onTrailers(f *http2.MetaHeadersFrame) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.remoteEnded || s.bodyErr != nil {
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeStreamClosed}
	}
	if !f.StreamEnded() || len(f.PseudoFields()) > 0 || s.declLen >= 0 && s.gotLen != s.declLen {
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeProtocol}
	}
	s.trailers = make(http.Header, len(f.Fields))
	for _, hf := range f.RegularFields() {
		k := s.c.canonical(hf.Name)
		s.trailers[k] = append(s.trailers[k], hf.Value)
	}
	s.remoteEnded = true
	s.wake()
	return nil
}

// abort ends the stream for good: its context is cancelled, its body reads
// and response writes fail.
func (s *h2stream) abort(err error) {
	c := s.c
	c.mu.Lock()
	s.reset = true
	c.cond.Broadcast()
	c.mu.Unlock()
	s.mu.Lock()
	if s.bodyErr == nil {
		s.bodyErr = err
	}
	s.mu.Unlock()
	s.ctx.Cancel(nil)
	s.wake()
}

// Read reads the request body.
func (s *h2stream) Read(p []byte) (int, error) {
	for {
		s.mu.Lock()
		if s.bodyClosed {
			s.mu.Unlock()
			return 0, http.ErrBodyReadAfterClose
		}
		if s.in.Pending() {
			n, credit := s.in.Take(p, h2CreditEvery, !s.remoteEnded)
			s.recvWin += int32(credit)
			s.mu.Unlock()
			if credit > 0 {
				s.c.control(ctlFrame{kind: http2.FrameWindowUpdate, id: s.id, val: uint32(credit)})
			}
			return n, nil
		}
		if s.bodyErr != nil {
			err := s.bodyErr
			s.mu.Unlock()
			return 0, err
		}
		if s.remoteEnded {
			trailers := s.trailers
			s.trailers = nil
			s.mu.Unlock()
			h2wire.MoveTrailers(&s.req.Trailer, trailers)
			return 0, io.EOF
		}
		s.mu.Unlock()
		<-s.notify
	}
}

// Close stops the body; what arrives later is dropped.
func (s *h2stream) Close() error {
	s.mu.Lock()
	s.bodyClosed = true
	s.in.Drop()
	s.mu.Unlock()
	s.wake()
	return nil
}

// run serves the stream on its own goroutine and ends it.
func (s *h2stream) run() {
	c := s.c
	w := &s.w
	*w = h2response{s: s, header: make(http.Header), length: -1}
	panicked := c.srv.callHandler(s.handler, w, s.req, c.remoteAddr)
	s.ctx.Cancel(nil)
	c.mu.Lock()
	reset := s.reset
	c.mu.Unlock()
	s.mu.Lock()
	remoteOpen := !s.remoteEnded && s.bodyErr == nil
	s.bodyClosed = true
	s.in.Drop()
	s.mu.Unlock()
	s.wake() // a body reader the handler left behind
	switch {
	case reset:
	case panicked:
		s.write(true, func() error { return c.fr.WriteRSTStream(s.id, http2.ErrCodeInternal) })
	default:
		// RFC 9113 section 8.1: a complete response while the request
		// still streams in is followed by RST_STREAM(NO_ERROR).
		w.finish(remoteOpen)
	}
	c.streamDone(s)
}

// write writes frames of the stream with fn, as c.write does, unless the
// stream has been reset: then it writes nothing and returns errStreamGone.
// reset is checked with wmu held, and an RST_STREAM the server sends is
// queued only after reset is set, so no frame of the stream follows it.
func (s *h2stream) write(flush bool, fn func() error) error {
	c := s.c
	c.wmu.Lock()
	c.mu.Lock()
	reset := s.reset
	c.mu.Unlock()
	if reset {
		if err := c.unlockWrite(false); err != nil {
			return err
		}
		return errStreamGone
	}
	if err := fn(); err != nil {
		c.wmu.Unlock()
		c.fail(err)
		return err
	}
	return c.unlockWrite(flush)
}

// awaitWindow waits until the stream may send, and takes up to n bytes of
// both send windows; 0 means the stream is over.
func (s *h2stream) awaitWindow(n int) int {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	flushed := false
	for {
		if s.reset || c.err != nil {
			return 0
		}
		if c.sendWin > 0 && s.sendWin > 0 {
			break
		}
		if !flushed {
			// What is written so far must reach the client before the
			// wait, or it may never send the WINDOW_UPDATE.
			c.mu.Unlock()
			c.write(true, func() error { return nil })
			c.mu.Lock()
			flushed = true
			continue
		}
		c.cond.Wait()
	}
	allowed := min(int32(n), c.sendWin, s.sendWin, int32(c.peerMaxFrame))
	c.sendWin -= allowed
	s.sendWin -= allowed
	return int(allowed)
}

// h2response is the http.ResponseWriter of one HTTP/2 stream. The HEADERS
// frame goes out with the first Write or Flush, or when the handler returns
// (then with END_STREAM, if there are no trailers: a gRPC trailers-only
// response stays one frame).
type h2response struct {
	s      *h2stream
	header http.Header

	status      int
	wroteHeader bool // the final status is set
	headerSent  bool
	ended       bool  // END_STREAM sent
	noBody      bool  // HEAD, 204, 304: the body is dropped
	bodyErr     bool  // 204, 304: and Write says so
	length      int64 // the declared Content-Length; -1: none
	written     int64
	err         error
}

func (w *h2response) Header() http.Header { return w.header }

// AdoptHeader is response.AdoptHeader for a stream.
func (w *h2response) AdoptHeader(h http.Header) http.Header {
	w.header = adoptHeader(w.header, h, w.wroteHeader)
	return w.header
}

func (w *h2response) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic("httpserver: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 200 {
		if !w.headerSent && w.err == nil {
			c := w.s.c
			w.err = w.s.write(true, func() error {
				return c.writeHeaders(w.s.id, false, func(enc func(k, v string)) { encodeResponse(enc, code, w.header, true) })
			})
		}
		return
	}
	w.wroteHeader, w.status = true, code
}

func (w *h2response) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headerSent {
		w.sendHeader(false)
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
	var over bool
	if w.length >= 0 && w.written+int64(len(p)) > w.length {
		p, over = p[:w.length-w.written], true
	}
	s, c := w.s, w.s.c
	total := 0
	for len(p) > 0 {
		n := s.awaitWindow(len(p))
		if n == 0 {
			w.err = errStreamGone
			return total, w.err
		}
		chunk := p[:n]
		if err := s.write(false, func() error { return c.fr.WriteData(s.id, false, chunk) }); err != nil {
			w.err = err
			return total, err
		}
		p = p[n:]
		total += n
		w.written += int64(n)
	}
	if over {
		return total, http.ErrContentLength
	}
	return total, nil
}

// Flush sends what is written so far, the HEADERS frame included.
func (w *h2response) Flush() { w.FlushError() }

// FlushError is Flush for http.ResponseController.
func (w *h2response) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headerSent {
		w.sendHeader(false)
	}
	if w.err == nil {
		w.err = w.s.c.write(true, func() error { return nil })
	}
	return w.err
}

// sendHeader writes the HEADERS frame (with END_STREAM if end).
func (w *h2response) sendHeader(end bool) {
	w.headerSent = true
	code, h := w.status, w.header
	switch {
	case code == http.StatusNoContent || code == http.StatusNotModified:
		w.noBody, w.bodyErr = true, true
	case w.s.req.Method == http.MethodHead:
		w.noBody = true
	}
	if v := h["Content-Length"]; len(v) == 1 && !w.noBody {
		if n, err := strconv.ParseInt(v[0], 10, 64); err == nil && n >= 0 {
			w.length = n
		}
	}
	w.ended = end
	c := w.s.c
	if w.err == nil {
		w.err = w.s.write(end, func() error {
			return c.writeHeaders(w.s.id, end, func(enc func(k, v string)) {
				encodeResponse(enc, code, h, code == http.StatusNoContent)
			})
		})
	}
}

// finish ends the response once the handler has returned; resetAfter adds
// RST_STREAM(NO_ERROR) for a request body the client is still sending.
func (w *h2response) finish(resetAfter bool) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	trailers := w.hasTrailers()
	if !w.headerSent {
		if !trailers {
			// Nothing was written: the body is empty.
			if _, ok := w.header["Content-Length"]; !ok && w.s.req.Method != http.MethodHead && w.status != http.StatusNoContent && w.status != http.StatusNotModified {
				w.header["Content-Length"] = zeroLength[:1:1]
			}
		}
		w.sendHeader(!trailers)
	}
	if w.err != nil {
		return
	}
	s, c := w.s, w.s.c
	s.write(true, func() error {
		var err error
		switch {
		case w.ended:
		case trailers:
			err = c.writeHeaders(s.id, true, w.encodeTrailers)
		default:
			err = c.fr.WriteData(s.id, true, nil)
		}
		if err == nil && resetAfter {
			err = c.fr.WriteRSTStream(s.id, http2.ErrCodeNo)
		}
		return err
	})
}

// hasTrailers reports whether the handler set trailers: keys declared in
// "Trailer" with values now, or http.TrailerPrefix keys.
func (w *h2response) hasTrailers() bool {
	found := false
	w.eachTrailer(func(string, string) { found = true })
	return found
}

func (w *h2response) encodeTrailers(enc func(k, v string)) {
	w.eachTrailer(func(k, v string) { enc(h2wire.Lower(k), v) })
}

// eachTrailer calls f for the trailers whose values HTTP/2 can carry.
func (w *h2response) eachTrailer(f func(k, v string)) {
	eachTrailer(w.header, w.header["Trailer"], func(k, v string) {
		if httpguts.ValidHeaderFieldValue(v) {
			f(k, v)
		}
	})
}

// encodeResponse emits a response head's fields: connection-specific fields,
// trailers and invalid fields are left out (RFC 9113 section 8.2.2).
func encodeResponse(enc func(k, v string), code int, h http.Header, dropLength bool) {
	enc(":status", statusCode(code))
	for k, vs := range h {
		switch k {
		case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade":
			continue
		case "Content-Length":
			if dropLength || len(vs) != 1 {
				continue
			}
		}
		if strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		lk := h2wire.Lower(k)
		for _, v := range vs {
			if httpguts.ValidHeaderFieldValue(v) {
				enc(lk, v)
			}
		}
	}
	if _, ok := h["Date"]; !ok && code >= 200 {
		enc("date", dateString())
	}
}

func statusCode(code int) string {
	switch code {
	case 200:
		return "200"
	case 204:
		return "204"
	case 404:
		return "404"
	case 503:
		return "503"
	}
	return strconv.Itoa(code)
}
