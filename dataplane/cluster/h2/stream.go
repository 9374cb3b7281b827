package h2

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/tinymesh/tinymesh/dataplane/internal/h2wire"
	"github.com/tinymesh/tinymesh/dataplane/internal/reqctx"
)

// stream is one request and its response.
type stream struct {
	c     *conn
	id    uint32
	req   *http.Request
	stop  reqctx.Watch // stops the context's reset
	respc chan struct{}

	// Set before respc is closed, read after.
	resp    *http.Response
	respErr error

	mu        sync.Mutex
	delivered bool         // respc is closed
	in        h2wire.Inbox // received body bytes
	ended     bool         // END_STREAM received
	err       error        // reset or connection failure; reads return it
	sentEnd   bool         // our END_STREAM is out (or no body is coming)
	removed   bool         // out of the connection's map, reservation released
	// trailers holds the trailers as they arrive; Read copies them into
	// resp.Trailer at the end of the body, on the reader's goroutine, since
	// the caller may look at resp.Trailer's declared keys meanwhile.
	trailers http.Header
	notify   chan struct{}
	sendWin  int32 // guarded by c.mu
}

func (s *stream) onHeaders(f *http2.MetaHeadersFrame) {
	s.mu.Lock()
	if s.delivered {
		// Trailers.
		s.trailers = make(http.Header, len(f.Fields))
		for _, hf := range f.RegularFields() {
			k := http.CanonicalHeaderKey(hf.Name)
			s.trailers[k] = append(s.trailers[k], hf.Value)
		}
		s.ended = true
		s.mu.Unlock()
		s.maybeDone() // before the reader can see the end
		s.wake()
		return
	}
	status, err := strconv.Atoi(f.PseudoValue("status"))
	if err != nil || status < 100 || status > 999 {
		s.mu.Unlock()
		s.reset(http2.ErrCodeProtocol, fmt.Errorf("h2: malformed response status %q", f.PseudoValue("status")))
		return
	}
	if status < 200 {
		s.mu.Unlock()
		return // informational: net/http's transport hands these to httptrace only
	}
	fields := f.RegularFields()
	h := make(http.Header, len(fields))
	// One array for the values, as net/http does: a field's first value is
	// a one-element slice of it, not an allocation of its own.
	vals := make([]string, len(fields))
	for i, hf := range fields {
		k, ok := h2wire.Canonical(hf.Name)
		if !ok {
			k = http.CanonicalHeaderKey(hf.Name)
		}
		vals[i] = hf.Value
		if vs, ok := h[k]; ok {
			h[k] = append(vs, hf.Value)
		} else {
			h[k] = vals[i : i+1 : i+1]
		}
	}
	var trailer http.Header // declared trailers; Read adds the ones that arrive
	for _, v := range h["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				if trailer == nil {
					trailer = http.Header{}
				}
				trailer[http.CanonicalHeaderKey(k)] = nil
			}
		}
	}
	delete(h, "Trailer")
	cl := int64(-1)
	if v := h.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			cl = n
		}
	}
	resp := &http.Response{
		Status:        statusLine(status),
		StatusCode:    status,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        h,
		Trailer:       trailer,
		ContentLength: cl,
		Request:       s.req,
		Body:          s,
	}
	if f.StreamEnded() {
		s.ended = true
		if cl < 0 {
			resp.ContentLength = 0
		}
	}
	s.resp = resp
	s.delivered = true
	s.mu.Unlock()
	s.maybeDone() // before the caller can see the end
	close(s.respc)
}

func (s *stream) onData(data []byte, padding int, end bool) {
	s.mu.Lock()
	if s.err == nil && !s.removed {
		s.in.Add(data, padding)
	}
	s.ended = s.ended || end
	s.mu.Unlock()
	if end {
		s.maybeDone() // before the reader can see the end
	}
	s.wake()
}

func (s *stream) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// fail ends the stream with err (a reset, GOAWAY or connection failure).
func (s *stream) fail(err error) {
	s.mu.Lock()
	if s.err == nil && !s.ended {
		s.err = err // a complete response stays readable
	}
	first := !s.delivered
	if first {
		s.delivered = true
		s.respErr = err
	}
	s.mu.Unlock()
	if first {
		close(s.respc)
	}
	s.wake()
	s.c.mu.Lock()
	s.c.cond.Broadcast()
	s.c.mu.Unlock()
	s.remove()
}

// reset sends RST_STREAM and fails the stream with err.
func (s *stream) reset(code http2.ErrCode, err error) {
	s.mu.Lock()
	done := s.removed
	s.mu.Unlock()
	if !done {
		s.c.writeFrame(func() error { return s.c.fr.WriteRSTStream(s.id, code) })
	}
	s.fail(err)
}

// maybeDone removes the stream once both directions have ended.
func (s *stream) maybeDone() {
	s.mu.Lock()
	done := s.ended && s.sentEnd
	s.mu.Unlock()
	if done {
		s.remove()
	}
}

func (s *stream) remove() {
	s.mu.Lock()
	if s.removed {
		s.mu.Unlock()
		return
	}
	s.removed = true
	s.mu.Unlock()
	c := s.c
	c.mu.Lock()
	if c.streams[s.id] == s {
		delete(c.streams, s.id)
	}
	c.reserved--
	if c.reserved == 0 {
		c.idleSince = time.Now()
	}
	drained := c.goAway && c.reserved == 0
	c.mu.Unlock()
	if drained {
		c.close(errIdle) // the server is shutting it down; nothing left on it
	}
}

// Read reads the response body.
func (s *stream) Read(p []byte) (int, error) {
	for {
		s.mu.Lock()
		if s.in.Pending() {
			n, credit := s.in.Take(p, creditEvery, !s.ended)
			s.mu.Unlock()
			if credit > 0 {
				s.c.writeFrame(func() error { return s.c.fr.WriteWindowUpdate(s.id, uint32(credit)) })
			}
			return n, nil
		}
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return 0, err
		}
		if s.ended {
			trailers := s.trailers
			s.trailers = nil
			s.mu.Unlock()
			s.stop.Stop()
			h2wire.MoveTrailers(&s.resp.Trailer, trailers)
			return 0, io.EOF
		}
		s.mu.Unlock()
		<-s.notify
	}
}

// Close ends the body; before the end of the response it resets the
// stream.
func (s *stream) Close() error {
	s.mu.Lock()
	complete := s.ended && s.err == nil && !s.in.Pending()
	s.mu.Unlock()
	s.stop.Stop()
	if !complete {
		s.reset(http2.ErrCodeCancel, errBodyClosed)
	}
	return nil
}

// writeBody sends the request body as DATA frames within the send windows,
// then END_STREAM (with trailers, if any).
func (s *stream) writeBody(body io.ReadCloser, trailer http.Header) {
	defer body.Close()
	c := s.c
	bp := bodyBufs.Get().(*[]byte)
	defer bodyBufs.Put(bp)
	buf := *bp
	for {
		n, rerr := body.Read(buf)
		for data := buf[:n]; len(data) > 0; {
			allowed := s.awaitWindow(len(data))
			if allowed == 0 {
				return // the stream or connection ended
			}
			chunk := data[:allowed]
			c.wmu.Lock()
			err := c.fr.WriteData(s.id, false, chunk)
			if err == nil {
				err = c.bw.Flush()
			}
			c.wmu.Unlock()
			if err != nil {
				c.close(err)
				return
			}
			data = data[allowed:]
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			s.reset(http2.ErrCodeCancel, rerr)
			return
		}
	}
	c.wmu.Lock()
	var err error
	if len(trailer) > 0 {
		c.mu.Lock()
		maxFrame := c.peerMaxFrame
		c.mu.Unlock()
		err = c.writeHeaders(s.id, true, maxFrame, func(enc func(k, v string)) {
			for k, vs := range trailer {
				for _, v := range vs {
					enc(h2wire.Lower(k), v)
				}
			}
		})
	} else {
		err = c.fr.WriteData(s.id, true, nil)
	}
	if err == nil {
		err = c.bw.Flush()
	}
	c.wmu.Unlock()
	if err != nil {
		c.close(err)
		return
	}
	s.mu.Lock()
	s.sentEnd = true
	s.mu.Unlock()
	s.maybeDone()
}

// bodyBufs holds writeBody's buffers: one per request with a body (every
// gRPC call), 16 KiB, a maximum-size DATA frame; allocated per request, they
// were two thirds of a client sidecar's allocated bytes under gRPC load.
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// awaitWindow waits until the stream may send, and takes up to n bytes of
// both windows; 0 means the stream is over.
func (s *stream) awaitWindow(n int) int {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		s.mu.Lock()
		over := s.err != nil || s.removed
		s.mu.Unlock()
		if over || c.err != nil {
			return 0
		}
		if c.sendWin > 0 && s.sendWin > 0 {
			break
		}
		c.cond.Wait()
	}
	allowed := min(int32(n), c.sendWin, s.sendWin, int32(c.peerMaxFrame))
	c.sendWin -= allowed
	s.sendWin -= allowed
	return int(allowed)
}

// statusLines holds Response.Status for the common codes, so that building
// a response does not format it.
var statusLines = func() map[int]string {
	m := map[int]string{}
	for _, code := range []int{200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 408, 409,
		413, 429, 431, 500, 501, 502, 503, 504} {
		m[code] = strconv.Itoa(code) + " " + http.StatusText(code)
	}
	return m
}()

func statusLine(code int) string {
	if l, ok := statusLines[code]; ok {
		return l
	}
	return strconv.Itoa(code) + " " + http.StatusText(code)
}
