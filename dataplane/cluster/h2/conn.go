package h2

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/tinymesh/tinymesh/dataplane/internal/h2wire"
	"github.com/tinymesh/tinymesh/dataplane/internal/reqctx"
)

// conn is one HTTP/2 connection.
type conn struct {
	t    *Transport
	addr string
	nc   net.Conn

	// wmu serialises frame writes, the header encoder and stream ID order
	// (IDs must appear on the wire in increasing order).
	wmu sync.Mutex
	bw  *bufio.Writer
	fr  *http2.Framer // its reading side is the reader goroutine's only
	hw  h2wire.HeaderWriter
	hr  h2wire.HeaderReader // used by readLoop only

	mu           sync.Mutex
	cond         *sync.Cond // send windows grew, or the connection failed
	streams      map[uint32]*stream
	nextID       uint32
	reserved     int    // streams open or being opened
	maxStreams   uint32 // the server's MAX_CONCURRENT_STREAMS
	sendWin      int32  // connection send window
	peerInitWin  int32
	peerMaxFrame uint32
	goAway       bool
	err          error     // set once the connection failed
	recvUnacked  int       // connection-level bytes received, not yet credited
	idleSince    time.Time // when reserved last fell to 0
}

// reserve takes a stream slot, or reports that the connection cannot take
// another stream.
func (c *conn) reserve() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nextID >= 1<<31-1-2*uint32(c.reserved) {
		c.goAway = true // stream IDs run out: drain it like a shut-down one
	}
	if c.err != nil || c.goAway || uint32(c.reserved) >= c.maxStreams {
		return false
	}
	c.reserved++
	return true
}

// release ends a stream's reservation.
func (c *conn) release() {
	c.mu.Lock()
	c.reserved--
	if c.reserved == 0 {
		c.idleSince = time.Now()
	}
	c.mu.Unlock()
}

// close fails the connection and every stream on it.
func (c *conn) close(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	streams := c.streams
	c.streams = map[uint32]*stream{}
	c.cond.Broadcast()
	c.mu.Unlock()
	c.nc.Close()
	c.t.remove(c)
	for _, s := range streams {
		s.fail(fmt.Errorf("h2: connection to %s lost: %w", c.addr, err))
	}
}

// roundTrip writes req on c, whose stream slot the caller reserved, and
// waits for the response head.
func (c *conn) roundTrip(req *http.Request) (*http.Response, error) {
	body := hasBody(req)
	s := &stream{c: c, req: req, respc: make(chan struct{}), notify: make(chan struct{}, 1), sentEnd: !body}

	c.wmu.Lock()
	c.mu.Lock()
	if c.err != nil || c.goAway {
		c.mu.Unlock()
		c.wmu.Unlock()
		c.release()
		return nil, errConnUnusable
	}
	s.id = c.nextID
	c.nextID += 2
	s.sendWin = c.peerInitWin
	c.streams[s.id] = s
	maxFrame := c.peerMaxFrame
	c.mu.Unlock()
	err := c.writeHeaders(s.id, !body, maxFrame, func(enc func(k, v string)) { encodeRequest(req, body, enc) })
	if err == nil {
		err = c.bw.Flush()
	}
	c.wmu.Unlock()
	if err != nil {
		c.close(err)
		return nil, err
	}
	if body {
		go s.writeBody(req.Body, req.Trailer)
	}
	// A done request resets the stream: the wait below and the body's
	// reads return. The reset writes a frame, which may wait for the
	// connection: not on the goroutine that cancels.
	s.stop = reqctx.OnCancel(req.Context(), func() { go s.reset(http2.ErrCodeCancel, req.Context().Err()) })
	<-s.respc
	if s.respErr != nil {
		s.stop.Stop()
		return nil, s.respErr
	}
	return s.resp, nil
}

// writeHeaders writes a header block as HEADERS and CONTINUATION frames.
// Caller holds wmu.
func (c *conn) writeHeaders(id uint32, endStream bool, maxFrame uint32, fields func(enc func(k, v string))) error {
	return c.hw.Write(c.fr, id, endStream, maxFrame, fields)
}

// encodeRequest emits req's header fields.
func encodeRequest(req *http.Request, body bool, enc func(k, v string)) {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	enc(":authority", host)
	enc(":method", method)
	enc(":path", req.URL.RequestURI())
	enc(":scheme", "http")
	for k, vs := range req.Header {
		lk := h2wire.Lower(k)
		switch lk {
		case "host", "connection", "proxy-connection", "transfer-encoding", "upgrade", "keep-alive", "content-length":
			continue // connection-specific, or set from the request below
		case "te":
			if len(vs) > 0 && vs[0] == "trailers" {
				enc("te", "trailers")
			}
			continue
		}
		for _, v := range vs {
			enc(lk, v)
		}
	}
	if body && req.ContentLength > 0 {
		enc("content-length", strconv.FormatInt(req.ContentLength, 10))
	}
	if len(req.Trailer) > 0 {
		keys := make([]string, 0, len(req.Trailer))
		for k := range req.Trailer {
			keys = append(keys, h2wire.Lower(k))
		}
		enc("trailer", strings.Join(keys, ","))
	}
}

// readLoop reads frames until the connection fails.
func (c *conn) readLoop() {
	var err error
	for {
		var f http2.Frame
		f, err = c.fr.ReadFrame()
		if hf, ok := f.(*http2.HeadersFrame); ok && err == nil {
			f, err = c.hr.Read(c.fr, hf)
		}
		if err != nil {
			// Declared here, not per frame: errors.As moves it to the heap.
			var se http2.StreamError
			if !errors.As(err, &se) {
				break
			}
			// A malformed header block on one stream fails that stream.
			if s := c.stream(se.StreamID); s != nil {
				s.reset(se.Code, se)
			}
			continue
		}
		if err = c.handle(f); err != nil {
			break
		}
	}
	c.close(err)
}

func (c *conn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		if s := c.stream(f.StreamID); s != nil {
			s.onHeaders(f)
		}
	case *http2.DataFrame:
		n := int(f.Length)
		c.mu.Lock()
		c.recvUnacked += n
		credit := 0
		if c.recvUnacked >= creditEvery {
			credit, c.recvUnacked = c.recvUnacked, 0
		}
		s := c.streams[f.StreamID]
		c.mu.Unlock()
		if credit > 0 {
			c.writeFrame(func() error { return c.fr.WriteWindowUpdate(0, uint32(credit)) })
		}
		if s != nil {
			s.onData(f.Data(), n-len(f.Data()), f.StreamEnded())
		}
	case *http2.RSTStreamFrame:
		if s := c.stream(f.StreamID); s != nil {
			s.fail(http2.StreamError{StreamID: f.StreamID, Code: f.ErrCode})
		}
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if err := c.applySettings(f); err != nil {
			return err
		}
		c.writeFrame(func() error { return c.fr.WriteSettingsAck() })
	case *http2.PingFrame:
		if !f.IsAck() {
			c.writeFrame(func() error { return c.fr.WritePing(true, f.Data) })
		}
	case *http2.GoAwayFrame:
		c.mu.Lock()
		c.goAway = true
		var refused []*stream
		for id, s := range c.streams {
			if id > f.LastStreamID {
				refused = append(refused, s)
				delete(c.streams, id)
			}
		}
		c.mu.Unlock()
		for _, s := range refused {
			s.fail(errGoAwayRefused)
		}
	case *http2.WindowUpdateFrame:
		c.mu.Lock()
		if f.StreamID == 0 {
			c.sendWin += int32(f.Increment)
		} else if s := c.streams[f.StreamID]; s != nil {
			s.sendWin += int32(f.Increment)
		}
		c.cond.Broadcast()
		c.mu.Unlock()
	case *http2.PushPromiseFrame:
		return errors.New("h2: PUSH_PROMISE although push is disabled")
	}
	return nil
}

func (c *conn) stream(id uint32) *stream {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams[id]
}

func (c *conn) applySettings(f *http2.SettingsFrame) error {
	var tableSize uint32
	var hasTable bool
	err := f.ForeachSetting(func(st http2.Setting) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		switch st.ID {
		case http2.SettingMaxConcurrentStreams:
			c.maxStreams = max(st.Val, 1)
		case http2.SettingInitialWindowSize:
			delta := int32(st.Val) - c.peerInitWin
			c.peerInitWin = int32(st.Val)
			for _, s := range c.streams {
				s.sendWin += delta
			}
			c.cond.Broadcast()
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = st.Val
		case http2.SettingHeaderTableSize:
			tableSize, hasTable = st.Val, true
		}
		return nil
	})
	if hasTable {
		c.wmu.Lock()
		c.hw.Encoder.SetMaxDynamicTableSize(tableSize)
		c.wmu.Unlock()
	}
	return err
}

// writeFrame writes one frame (and flushes) for the reader or a stream; a
// failure fails the connection.
func (c *conn) writeFrame(write func() error) {
	c.wmu.Lock()
	err := write()
	if err == nil {
		err = c.bw.Flush()
	}
	c.wmu.Unlock()
	if err != nil {
		c.close(err)
	}
}
