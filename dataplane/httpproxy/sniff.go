package httpproxy

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
)

// net/http accepts a request carrying both Content-Length and Transfer-Encoding:
// it drops Content-Length and reads the chunked body, as RFC 9112 section 6.3
// allows. The same section says such a message "ought to be handled as an error"
// because it is the classic request-smuggling vector, and the mesh rejects it. The
// handler cannot see the dropped header, so sniffConn watches the raw bytes of an
// HTTP/1.1 connection with a small framing parser (request line, header names,
// chunked and sized bodies) and records the index of the first request that has
// both headers; the handler answers that request 400 and closes the connection.
//
// The same parser counts each header block against MaxRequestHeadersBytes:
// net/http only enforces its MaxHeaderBytes with 4 KiB of slack, so blocks in
// between would otherwise be forwarded. Those get 431 and a closed connection.

type sniffState uint8

const (
	stStart       sniffState = iota // at the start of a request
	stLine                          // in the request line
	stHeaders                       // at the start of a header line
	stHeaderLine                    // inside a header line
	stBody                          // in a sized body
	stChunkSize                     // in a chunk-size line
	stChunkData                     // in chunk data
	stChunkEnd                      // in the CRLF after chunk data
	stTrailers                      // at the start of a trailer line
	stTrailerLine                   // inside a trailer line
	stOff                           // not HTTP/1.1 framing (h2c, upgraded) or gave up
)

const h2Preface = "PRI * HTTP/2.0"

// sniffConn wraps a downstream connection and parses HTTP/1.1 framing as the
// server reads it. Read is called on one goroutine at a time (the server's, a
// body reader's, or the server's watch for a client going away); the parser
// state is only touched there. badAt is read by handlers on other goroutines.
type sniffConn struct {
	net.Conn

	// Parser state, touched only inside Read.
	mu       sync.Mutex // successive Reads may run on different goroutines
	st       sniffState
	index    int64 // index of the request being parsed
	pos      int   // bytes seen of the request line or current header name
	name     [20]byte
	nameLen  int
	inValue  bool
	value    [24]byte
	valueLen int
	sawCL    bool
	sawTE    bool
	chunked  bool
	remain   int64

	maxHeader int // header block limit (MaxRequestHeadersBytes); 0: none
	hdrBytes  int // bytes of the current request's header block so far

	badAt  atomic.Int64 // index of the first request to reject, -1 if none
	badWhy Reason       // why; written before badAt is published, read after
	seen   atomic.Int64 // requests handed to the handler so far

	xfcc xfccCache // the connection's XFCC values (xfcc.go)
}

func newSniffConn(c net.Conn, maxHeader int) *sniffConn {
	s := &sniffConn{Conn: c, maxHeader: maxHeader}
	s.badAt.Store(-1)
	return s
}

// NetConn returns the wrapped connection, as tls.Conn.NetConn does
// (dataplane/batchwrite finds its connection through it).
func (s *sniffConn) NetConn() net.Conn { return s.Conn }

// CloseWrite half-closes the underlying connection for upgraded splices.
func (s *sniffConn) CloseWrite() error {
	if cw, ok := s.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return s.Conn.Close()
}

func (s *sniffConn) Read(p []byte) (int, error) {
	n, err := s.Conn.Read(p)
	if n > 0 {
		s.mu.Lock()
		s.scan(p[:n])
		s.mu.Unlock()
	}
	return n, err
}

// stop turns the parser off, before the connection carries non-HTTP bytes.
func (s *sniffConn) stop() {
	s.mu.Lock()
	s.st = stOff
	s.mu.Unlock()
}

// nextRequest is called by the handler once per HTTP/1.x request, in order, and
// reports whether that request must be rejected, and why.
func (s *sniffConn) nextRequest() (reject bool, why Reason) {
	i := s.seen.Add(1) - 1
	bad := s.badAt.Load()
	if bad >= 0 && i >= bad {
		return true, s.badWhy
	}
	return false, 0
}

// reject marks the request being parsed and stops parsing: the connection is
// closed after its error response.
func (s *sniffConn) reject(why Reason) {
	if s.badAt.Load() < 0 {
		s.badWhy = why
		s.badAt.Store(s.index)
	}
	s.st = stOff
}

func (s *sniffConn) scan(b []byte) {
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch s.st {
		case stOff:
			return
		case stStart, stLine:
			if s.st == stStart {
				if c == '\r' || c == '\n' {
					continue // RFC 9112 2.2: ignore empty lines before a request
				}
				s.st, s.pos, s.hdrBytes = stLine, 0, 0
			}
			if s.pos < len(h2Preface) {
				if c != h2Preface[s.pos] {
					s.pos = len(h2Preface) + 1 // not the preface
				} else if s.pos++; s.pos == len(h2Preface) {
					s.st = stOff // prior-knowledge HTTP/2: not ours to parse
					return
				}
			}
			if c == '\n' {
				s.st = stHeaders
				s.sawCL, s.sawTE, s.chunked = false, false, false
				s.remain = 0
			}
		case stHeaders, stHeaderLine:
			if s.hdrBytes++; s.maxHeader > 0 && s.hdrBytes > s.maxHeader {
				s.reject(HeadersTooLarge)
				return
			}
			if s.st == stHeaders {
				if c == '\r' {
					continue
				}
				if c == '\n' {
					s.endHeaders()
					continue
				}
				s.st, s.nameLen, s.valueLen, s.inValue = stHeaderLine, 0, 0, false
			}
			switch {
			case c == '\n':
				s.endHeaderLine()
				s.st = stHeaders
			case !s.inValue && c == ':':
				s.inValue = true
			case !s.inValue:
				if s.nameLen < len(s.name) {
					s.name[s.nameLen] = lowerASCII(c)
				}
				s.nameLen++
			default:
				if c != ' ' && c != '\t' && c != '\r' && s.valueLen < len(s.value) {
					s.value[s.valueLen] = lowerASCII(c)
					s.valueLen++
				}
			}
		case stBody:
			skip := int64(len(b) - i)
			if skip > s.remain {
				skip = s.remain
			}
			s.remain -= skip
			i += int(skip) - 1
			if s.remain == 0 {
				s.st = stStart
			}
		case stChunkSize:
			switch {
			case c == '\n':
				if s.remain == 0 {
					s.st = stTrailers
				} else {
					s.st = stChunkData
				}
			case s.pos < 0: // in a chunk extension
			case c == ';':
				s.pos = -1
			default:
				if v, ok := hexVal(c); ok && s.remain < 1<<56 {
					s.remain = s.remain<<4 | int64(v)
				}
			}
		case stChunkData:
			skip := int64(len(b) - i)
			if skip > s.remain {
				skip = s.remain
			}
			s.remain -= skip
			i += int(skip) - 1
			if s.remain == 0 {
				s.st = stChunkEnd
			}
		case stChunkEnd:
			if c == '\n' {
				s.st, s.remain, s.pos = stChunkSize, 0, 0
			}
		case stTrailers, stTrailerLine:
			if c == '\n' {
				if s.st == stTrailers {
					s.st = stStart
				} else {
					s.st = stTrailers
				}
			} else if c != '\r' {
				s.st = stTrailerLine
			}
		}
	}
}

func (s *sniffConn) endHeaderLine() {
	name := s.name[:min(s.nameLen, len(s.name))]
	switch {
	case s.nameLen == len("content-length") && string(name) == "content-length":
		s.sawCL = true
		var n int64
		for _, c := range s.value[:s.valueLen] {
			if c >= '0' && c <= '9' && n < 1<<56 {
				n = n*10 + int64(c-'0')
			}
		}
		s.remain = n
	case s.nameLen == len("transfer-encoding") && string(name) == "transfer-encoding":
		s.sawTE = true
		v := string(s.value[:s.valueLen])
		s.chunked = len(v) >= 7 && v[len(v)-7:] == "chunked"
	}
}

func (s *sniffConn) endHeaders() {
	if s.sawCL && s.sawTE {
		s.reject(BadRequest)
		return
	}
	// Requests are counted when their header block ends; that is all
	// nextRequest compares against.
	s.index++
	switch {
	case s.chunked:
		s.st, s.remain, s.pos = stChunkSize, 0, 0
	case s.sawCL && s.remain > 0:
		s.st = stBody
	default:
		s.st = stStart
	}
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func hexVal(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// sniffListener wraps accepted connections in sniffConn.
type sniffListener struct {
	net.Listener
	maxHeader int
}

func (l sniffListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newSniffConn(c, l.maxHeader), nil
}

type sniffKey struct{}

// connContext is http.Server.ConnContext: it lets handlers find their sniffConn.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if s, ok := c.(*sniffConn); ok {
		return context.WithValue(ctx, sniffKey{}, s)
	}
	return ctx
}

func sniffFrom(ctx context.Context) *sniffConn {
	s, _ := ctx.Value(sniffKey{}).(*sniffConn)
	return s
}
