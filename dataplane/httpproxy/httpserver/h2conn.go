package httpserver

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/tinymesh/tinymesh/dataplane/internal/h2wire"
)

// The HTTP/2 server's settings.
const (
	// h2MaxStreams is SETTINGS_MAX_CONCURRENT_STREAMS, net/http's default. A
	// stream counts until its handler returns, so resetting streams does not
	// let a client run more handlers than this.
	h2MaxStreams = 250
	// h2StreamWindow is SETTINGS_INITIAL_WINDOW_SIZE: how much request body a
	// client may send ahead of the handler's reading (net/http's default).
	h2StreamWindow = 1 << 20
	// h2ConnWindow is the connection's receive window; streams bound what is
	// buffered, so it is credited as data arrives.
	h2ConnWindow = 1 << 30
	// h2CreditEvery batches WINDOW_UPDATEs.
	h2CreditEvery = 64 << 10
	// h2MaxRefused is how many streams over the limit a connection may
	// open before it is closed with ENHANCE_YOUR_CALM.
	h2MaxRefused = 4 * h2MaxStreams
	// h2MaxFrame is the largest frame read (SETTINGS_MAX_FRAME_SIZE left at
	// its default) and the largest DATA frame written.
	h2MaxFrame = 16 << 10
	// h2CloseDelay is how long a connection shut down by GOAWAY stays open
	// for the client to read it and close first.
	h2CloseDelay = time.Second
)

var (
	errH2Closed   = errors.New("httpserver: HTTP/2 connection closed")
	errStreamGone = errors.New("httpserver: HTTP/2 stream reset")
)

// h2conn is one HTTP/2 connection. Its goroutine reads frames and hands
// each new stream to a worker goroutine (Server.runStream) that runs the
// handler and writes the response's frames itself.
type h2conn struct {
	srv        *Server
	nc         net.Conn
	ctx        context.Context
	remoteAddr string
	br         *bufio.Reader

	// wmu serialises frame writes and the header encoder. The reading
	// goroutine never waits for it (see control).
	wmu sync.Mutex
	bw  *bufio.Writer
	fr  *http2.Framer // its reading side is the reading goroutine's only
	hw  h2wire.HeaderWriter
	hr  h2wire.HeaderReader // used by the serve goroutine only

	ctlMu  sync.Mutex
	ctl    []ctlFrame // control frames to write; guarded by ctlMu
	hasCtl atomic.Bool

	mu           sync.Mutex
	cond         *sync.Cond // send windows grew, a stream ended, or the connection failed
	streams      map[uint32]*h2stream
	active       int    // streams whose handler runs
	maxSeen      uint32 // highest stream ID the client opened
	sendWin      int32
	peerInitWin  int32
	peerMaxFrame uint32
	goAway       bool  // GOAWAY sent: no new streams
	err          error // set once the connection failed
	recvUnacked  int   // connection-level bytes received, not yet credited
	refused      int
	idle         *time.Timer // IdleTimeout with no stream; nil if none

	canon map[string]string // header name cache; the reading goroutine's
}

// ctlFrame is a small frame the reading goroutine asks to be written.
type ctlFrame struct {
	kind http2.FrameType
	id   uint32
	val  uint32
	ping [8]byte
}

func newH2Conn(s *Server, nc net.Conn, br *bufio.Reader, ctx context.Context, remoteAddr string) *h2conn {
	c := &h2conn{
		srv:          s,
		nc:           nc,
		ctx:          ctx,
		remoteAddr:   remoteAddr,
		br:           br,
		bw:           bufio.NewWriterSize(nc, 16<<10),
		streams:      make(map[uint32]*h2stream),
		sendWin:      65535,
		peerInitWin:  65535,
		peerMaxFrame: h2MaxFrame,
	}
	c.cond = sync.NewCond(&c.mu)
	c.fr = http2.NewFramer(c.bw, br)
	c.hr.Init(uint32(s.maxHeaderBytes()))
	c.fr.SetMaxReadFrameSize(h2MaxFrame)
	c.fr.SetReuseFrames()
	c.hw.Init()
	return c
}

// serve runs the connection on the calling goroutine until it ends.
func (c *h2conn) serve() {
	c.wmu.Lock()
	c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: h2MaxStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2StreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: uint32(c.srv.maxHeaderBytes())},
	)
	c.fr.WriteWindowUpdate(0, h2ConnWindow-65535)
	if c.unlockWrite(true) != nil {
		return
	}
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(c.br, preface[:]); err != nil || string(preface[:]) != http2.ClientPreface {
		c.fail(errors.New("httpserver: bad HTTP/2 client preface"))
		return
	}
	c.startIdle()
	first := true
	for {
		f, err := c.fr.ReadFrame()
		if hf, ok := f.(*http2.HeadersFrame); ok && err == nil {
			f, err = c.hr.Read(c.fr, hf)
		}
		if err == nil && first {
			if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
				err = http2.ConnectionError(http2.ErrCodeProtocol)
			}
			first = false
		}
		if err == nil {
			err = c.handle(f)
		}
		if err == nil {
			continue
		}
		// Declared here, not per frame: errors.As moves it to the heap.
		var se http2.StreamError
		if errors.As(err, &se) {
			c.resetStream(se.StreamID, se.Code)
			continue
		}
		var ce http2.ConnectionError
		if errors.As(err, &ce) {
			c.goAwayAndClose(http2.ErrCode(ce))
		} else if errors.Is(err, http2.ErrFrameTooLarge) {
			c.goAwayAndClose(http2.ErrCodeFrameSize)
		}
		c.fail(err)
		return
	}
}

func (c *h2conn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if err := c.applySettings(f); err != nil {
			return err
		}
		c.control(ctlFrame{kind: http2.FrameSettings})
	case *http2.MetaHeadersFrame:
		return c.onHeaders(f)
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		s, idle := c.streams[f.StreamID], f.StreamID > c.maxSeen
		c.mu.Unlock()
		if idle {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if s != nil {
			s.abort(errStreamGone)
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			c.control(ctlFrame{kind: http2.FramePing, ping: f.Data})
		}
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol}
		}
	case *http2.GoAwayFrame:
		// The client opens no more streams; those in flight finish.
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	return nil
}

func (c *h2conn) applySettings(f *http2.SettingsFrame) error {
	return f.ForeachSetting(func(st http2.Setting) error {
		if err := st.Valid(); err != nil {
			return err
		}
		switch st.ID {
		case http2.SettingInitialWindowSize:
			c.mu.Lock()
			defer c.mu.Unlock()
			delta := int32(st.Val) - c.peerInitWin
			for _, s := range c.streams {
				if int64(s.sendWin)+int64(delta) > 1<<31-1 {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
			c.peerInitWin = int32(st.Val)
			for _, s := range c.streams {
				s.sendWin += delta
			}
			c.cond.Broadcast()
		case http2.SettingMaxFrameSize:
			c.mu.Lock()
			c.peerMaxFrame = min(st.Val, h2MaxFrame)
			c.mu.Unlock()
		case http2.SettingHeaderTableSize:
			c.wmu.Lock()
			c.hw.Encoder.SetMaxDynamicTableSizeLimit(st.Val)
			c.wmu.Unlock()
		}
		return nil
	})
}

func (c *h2conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		if int64(c.sendWin)+int64(f.Increment) > 1<<31-1 {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		c.sendWin += int32(f.Increment)
		c.cond.Broadcast()
		return nil
	}
	s := c.streams[f.StreamID]
	if s == nil {
		if f.StreamID > c.maxSeen {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil // a closed stream: frames in flight are ignored
	}
	if int64(s.sendWin)+int64(f.Increment) > 1<<31-1 {
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl}
	}
	s.sendWin += int32(f.Increment)
	c.cond.Broadcast()
	return nil
}

func (c *h2conn) onHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.mu.Lock()
	if s := c.streams[id]; s != nil {
		c.mu.Unlock()
		return s.onTrailers(f)
	}
	if id <= c.maxSeen {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeProtocol) // a closed stream, or out of order
	}
	c.maxSeen = id
	if c.goAway {
		c.mu.Unlock()
		return nil // above the GOAWAY's last stream: the client retries it elsewhere
	}
	if c.active >= h2MaxStreams {
		c.refused++
		refused := c.refused
		c.mu.Unlock()
		if refused > h2MaxRefused {
			return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
		}
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeRefusedStream}
	}
	c.mu.Unlock()
	if f.HasPriority() && f.Priority.StreamDep == id {
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	s := &h2stream{c: c, id: id, declLen: -1, recvWin: h2StreamWindow, notify: make(chan struct{}, 1)}
	s.ctx.Init(c.ctx)
	s.handler = c.srv.Handler
	if f.Truncated {
		s.handler = http.HandlerFunc(tooLarge)
	}
	req, err := c.newRequest(s, f)
	if err != nil {
		s.ctx.Cancel(nil)
		return err
	}
	s.req = req
	s.remoteEnded = f.StreamEnded()
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		s.ctx.Cancel(nil)
		return nil
	}
	s.sendWin = c.peerInitWin
	c.streams[id] = s
	c.active++
	if c.idle != nil {
		c.idle.Stop()
	}
	c.mu.Unlock()
	c.srv.runStream(s)
	return nil
}

func tooLarge(w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusRequestHeaderFieldsTooLarge)
}

// newRequest builds the request of a new stream; an error is the stream's
// (a malformed request, RFC 9113 section 8.1.1).
func (c *h2conn) newRequest(s *h2stream, f *http2.MetaHeadersFrame) (*http.Request, error) {
	malformed := http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol}
	method, path := f.PseudoValue("method"), f.PseudoValue("path")
	scheme, authority := f.PseudoValue("scheme"), f.PseudoValue("authority")
	if f.PseudoValue("status") != "" || method == "" {
		return nil, malformed
	}
	var u *url.URL
	if method == http.MethodConnect {
		if path != "" || scheme != "" || authority == "" {
			return nil, malformed
		}
		u = &url.URL{Host: authority}
	} else {
		if path == "" || scheme == "" {
			return nil, malformed
		}
		var err error
		if path == "*" && method == http.MethodOptions {
			u = &url.URL{Path: "*"}
		} else if u, err = url.ParseRequestURI(path); err != nil {
			return nil, malformed
		}
	}
	fields := f.RegularFields()
	h := make(http.Header, len(fields))
	// One array for the values: a field's first value is a one-element
	// slice of it, not an allocation of its own.
	vals := make([]string, len(fields))
	var cookies []string
	for i, hf := range fields {
		switch hf.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			return nil, malformed // connection-specific (RFC 9113 section 8.2.2)
		case "te":
			if hf.Value != "trailers" {
				return nil, malformed
			}
		case "cookie":
			cookies = append(cookies, hf.Value)
			continue
		}
		k := c.canonical(hf.Name)
		vals[i] = hf.Value
		if vs, ok := h[k]; ok {
			h[k] = append(vs, hf.Value)
		} else {
			h[k] = vals[i : i+1 : i+1]
		}
	}
	if len(cookies) > 0 {
		// RFC 9113 section 8.2.3: one field again for HTTP/1.1.
		h["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	if authority == "" {
		authority = h.Get("Host")
	}
	delete(h, "Host")
	var trailer http.Header
	for _, v := range h["Trailer"] {
		for k := range strings.SplitSeq(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				if trailer == nil {
					trailer = make(http.Header)
				}
				trailer[http.CanonicalHeaderKey(k)] = nil
			}
		}
	}
	if v, ok := h["Content-Length"]; ok {
		n, err := strconv.ParseInt(v[0], 10, 64)
		if len(v) != 1 || err != nil || n < 0 {
			return nil, malformed
		}
		s.declLen = n
	}
	var body io.ReadCloser = http.NoBody
	length := int64(0)
	if !f.StreamEnded() {
		body, length = s, s.declLen
	} else if s.declLen > 0 {
		return nil, malformed
	}
	// The literal does not escape (WithContext is inlined and copies it):
	// one allocation.
	return (&http.Request{
		Method:        method,
		URL:           u,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        h,
		Host:          authority,
		RemoteAddr:    c.remoteAddr,
		RequestURI:    path,
		Trailer:       trailer,
		Body:          body,
		ContentLength: length,
	}).WithContext(&s.ctx), nil
}

// canonical returns the canonical form of a lower-case header name, cached
// per connection so that common names are converted once.
func (c *h2conn) canonical(name string) string {
	if k, ok := h2wire.Canonical(name); ok {
		return k
	}
	if k, ok := c.canon[name]; ok {
		return k
	}
	k := http.CanonicalHeaderKey(name)
	if c.canon == nil {
		c.canon = make(map[string]string)
	}
	if len(c.canon) < 64 {
		c.canon[name] = k
	}
	return k
}

func (c *h2conn) onData(f *http2.DataFrame) error {
	n := int(f.Length)
	c.mu.Lock()
	s, idle := c.streams[f.StreamID], f.StreamID > c.maxSeen
	c.recvUnacked += n
	credit := 0
	if c.recvUnacked >= h2CreditEvery {
		credit, c.recvUnacked = c.recvUnacked, 0
	}
	c.mu.Unlock()
	if credit > 0 {
		c.control(ctlFrame{kind: http2.FrameWindowUpdate, val: uint32(credit)})
	}
	if idle {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if s == nil {
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeStreamClosed}
	}
	return s.onData(f.Data(), n, f.StreamEnded())
}

// resetStream sends RST_STREAM and ends the stream if it is open.
func (c *h2conn) resetStream(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	s := c.streams[id]
	c.mu.Unlock()
	if s != nil {
		s.abort(errStreamGone)
	}
	c.control(ctlFrame{kind: http2.FrameRSTStream, id: id, val: uint32(code)})
}

// control queues a frame for the next writer, or writes it now if no one is
// writing: the reading goroutine must not wait behind a handler whose write
// blocks on a peer that is itself waiting for us to read.
func (c *h2conn) control(f ctlFrame) {
	c.queue(f)
	if c.wmu.TryLock() {
		c.unlockWrite(true)
	}
}

// queue adds a frame for the next writer to write.
func (c *h2conn) queue(f ctlFrame) {
	c.ctlMu.Lock()
	c.ctl = append(c.ctl, f)
	c.hasCtl.Store(true)
	c.ctlMu.Unlock()
}

// unlockWrite writes the queued control frames, flushes if asked to (or if
// it wrote any), and releases wmu; then it takes wmu again if frames were
// queued meanwhile by a goroutine that could not. A write error fails the
// connection.
func (c *h2conn) unlockWrite(flush bool) error {
	for {
		var err error
		if c.hasCtl.Load() {
			c.ctlMu.Lock()
			frames := c.ctl
			c.ctl = nil
			c.hasCtl.Store(false)
			c.ctlMu.Unlock()
			for _, f := range frames {
				if err == nil {
					err = c.writeControl(f)
				}
			}
			flush = true
		}
		if flush && err == nil {
			err = c.bw.Flush()
		}
		c.wmu.Unlock()
		if err != nil {
			c.fail(err)
			return err
		}
		if !c.hasCtl.Load() || !c.wmu.TryLock() {
			return nil
		}
		flush = false
	}
}

func (c *h2conn) writeControl(f ctlFrame) error {
	switch f.kind {
	case http2.FrameSettings:
		return c.fr.WriteSettingsAck()
	case http2.FramePing:
		return c.fr.WritePing(true, f.ping)
	case http2.FrameWindowUpdate:
		return c.fr.WriteWindowUpdate(f.id, f.val)
	case http2.FrameRSTStream:
		return c.fr.WriteRSTStream(f.id, http2.ErrCode(f.val))
	case http2.FrameGoAway:
		c.mu.Lock()
		last := c.maxSeen
		c.mu.Unlock()
		return c.fr.WriteGoAway(last, http2.ErrCode(f.val), nil)
	}
	return nil
}

// write runs fn, which writes frames, holding wmu, and flushes if asked to;
// an error fails the connection.
func (c *h2conn) write(flush bool, fn func() error) error {
	c.wmu.Lock()
	if err := fn(); err != nil {
		c.wmu.Unlock()
		c.fail(err)
		return err
	}
	return c.unlockWrite(flush)
}

// writeHeaders writes a header block as HEADERS and CONTINUATION frames.
// Caller holds wmu.
func (c *h2conn) writeHeaders(id uint32, endStream bool, fields func(enc func(k, v string))) error {
	c.mu.Lock()
	maxFrame := c.peerMaxFrame
	c.mu.Unlock()
	return c.hw.Write(c.fr, id, endStream, maxFrame, fields)
}

// streamDone takes a stream whose handler has returned off the connection.
func (c *h2conn) streamDone(s *h2stream) {
	c.mu.Lock()
	delete(c.streams, s.id)
	c.active--
	drained := c.active == 0 && c.goAway
	if c.active == 0 && c.idle != nil && !c.goAway {
		c.idle.Reset(c.srv.IdleTimeout)
	}
	c.mu.Unlock()
	if drained {
		c.closeSoon()
	}
}

// startIdle arms IdleTimeout, which shuts the connection down gracefully
// when no stream has been open for that long.
func (c *h2conn) startIdle() {
	if d := c.srv.IdleTimeout; d > 0 {
		c.mu.Lock()
		c.idle = time.AfterFunc(d, func() {
			c.mu.Lock()
			idle := c.active == 0
			c.mu.Unlock()
			if idle {
				c.shutdown()
			}
		})
		c.mu.Unlock()
	}
}

// shutdown sends GOAWAY (NO_ERROR, the last stream opened so far): streams
// in flight finish, later ones are left for the client to retry, and the
// connection closes when the last one ends.
func (c *h2conn) shutdown() {
	c.mu.Lock()
	if c.goAway || c.err != nil {
		c.mu.Unlock()
		return
	}
	// Queued before goAway is seen: a stream ending now closes the
	// connection (closeSoon), whose write of the queue must include it.
	c.queue(ctlFrame{kind: http2.FrameGoAway, val: uint32(http2.ErrCodeNo)})
	c.goAway = true
	drained := c.active == 0
	c.mu.Unlock()
	if c.wmu.TryLock() {
		c.unlockWrite(true)
	}
	if drained {
		c.closeSoon()
	}
}

// closeSoon ends a connection that has said GOAWAY and has no streams left:
// it half-closes, so the client reads everything and closes, and closes
// after h2CloseDelay at the latest.
func (c *h2conn) closeSoon() {
	c.wmu.Lock()
	c.unlockWrite(true)
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	time.AfterFunc(h2CloseDelay, func() { c.fail(errH2Closed) })
}

// goAwayAndClose sends GOAWAY with an error code, before the connection is
// failed.
func (c *h2conn) goAwayAndClose(code http2.ErrCode) {
	c.nc.SetWriteDeadline(time.Now().Add(time.Second)) // also frees a writer stuck on the peer
	c.wmu.Lock()
	// goAway is set only with wmu held: a stream ending now takes it for a
	// drained shutdown, and its half-close (closeSoon) must wait for the
	// GOAWAY to be out.
	c.mu.Lock()
	c.goAway = true
	c.mu.Unlock()
	c.writeControl(ctlFrame{kind: http2.FrameGoAway, val: uint32(code)})
	c.unlockWrite(true)
}

// fail closes the connection and ends every stream on it.
func (c *h2conn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	streams := make([]*h2stream, 0, len(c.streams))
	for _, s := range c.streams {
		streams = append(streams, s)
	}
	if c.idle != nil {
		c.idle.Stop()
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	c.nc.Close()
	for _, s := range streams {
		s.abort(err)
	}
	c.srv.forgetH2(c)
}
