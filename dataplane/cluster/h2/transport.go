// Package h2 is the proxy's HTTP/2 client transport to upstream endpoints
// (the sidecar-to-sidecar hop, and h2c or gRPC apps): one multiplexed
// connection per endpoint, framed with golang.org/x/net/http2's Framer and
// hpack.
//
// net/http's HTTP/2 transport starts a goroutine per request to write it and
// hands every response from its reader goroutine to that goroutine and on to
// the caller. Here the caller writes its request's frames itself and waits
// for the connection's reader to deliver the response head: one goroutine
// hand-off per request, plus a body writer only for requests with a body.
//
// Concurrency: RoundTrip, the response bodies and CloseIdleConnections may
// be used from any goroutine.
package h2

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/tinymesh/tinymesh/dataplane/cluster/internal/reaper"
)

const (
	// streamWindow is the receive window each stream gets (SETTINGS
	// INITIAL_WINDOW_SIZE): what an upstream may send ahead of the
	// downstream's reading. net/http's transport uses the same.
	streamWindow = 4 << 20
	// connWindow is the connection's receive window; streams bound what is
	// buffered, so it is credited as data arrives.
	connWindow = 1 << 30
	// creditEvery batches WINDOW_UPDATEs.
	creditEvery = 64 << 10
	// maxHeaderList is the response header block we accept
	// (SETTINGS_MAX_HEADER_LIST_SIZE).
	maxHeaderList = 1 << 20
)

// The errors for requests the upstream never processed (see Unprocessed).
var (
	// errConnUnusable: the connection failed or was shut down before the
	// request's HEADERS were written.
	errConnUnusable = errors.New("h2: client conn not usable")
	// errGoAwayRefused: the stream was above the last one a GOAWAY said the
	// server would process.
	errGoAwayRefused = errors.New("h2: stream not processed: server sent graceful shutdown GOAWAY")
	errBodyClosed    = errors.New("h2: response body closed")
	errIdle          = errors.New("h2: idle connection closed")
)

// Transport is an http.RoundTripper speaking prior-knowledge HTTP/2 on
// connections from Dial (TLS with ALPN h2, when the cluster has it, is Dial's
// business).
type Transport struct {
	Dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	IdleTimeout time.Duration

	mu      sync.Mutex
	conns   map[string][]*conn
	dialing map[string]*dialCall
	reaper  reaper.Timer // runs reap while connections exist
}

type dialCall struct {
	done chan struct{}
	c    *conn
	err  error
}

// RoundTrip sends req on a connection to req.URL.Host and returns the
// response once its head has arrived.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 1; ; attempt++ {
		c, err := t.getConn(req.Context(), req.URL.Host)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, err := c.roundTrip(req)
		if err == nil {
			return resp, nil
		}
		if attempt < maxAttempts && req.Context().Err() == nil && neverProcessed(err, hasBody(req)) {
			continue // again, on another stream or connection, as net/http does
		}
		closeBody(req)
		return nil, err
	}
}

// maxAttempts bounds the tries of a request the upstream did not process.
const maxAttempts = 3

// neverProcessed reports whether a request that failed with err may be sent
// again on this transport: nothing was written, or the server refused the
// stream and the request has no body (which the writer may have started).
func neverProcessed(err error, body bool) bool {
	return errors.Is(err, errConnUnusable) || Unprocessed(err) && !body
}

// Unprocessed reports whether err says the upstream did not process the
// request at all (RFC 9113 section 8.7): the connection could not take it,
// the server refused the stream (REFUSED_STREAM) or it was above the last
// stream a GOAWAY let through. Such a request may go to another endpoint,
// whatever its method, if its body was not read.
func Unprocessed(err error) bool {
	var se http2.StreamError
	return errors.Is(err, errConnUnusable) || errors.Is(err, errGoAwayRefused) ||
		errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream
}

// CloseIdleConnections closes the connections without streams.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	var idle []*conn
	for addr, list := range t.conns {
		keep := list[:0]
		for _, c := range list {
			c.mu.Lock()
			busy := c.reserved > 0
			c.mu.Unlock()
			if busy {
				keep = append(keep, c)
			} else {
				idle = append(idle, c)
			}
		}
		if len(keep) == 0 {
			delete(t.conns, addr)
		} else {
			t.conns[addr] = keep
		}
	}
	t.mu.Unlock()
	for _, c := range idle {
		c.close(errIdle)
	}
}

func hasBody(req *http.Request) bool { return req.Body != nil && req.Body != http.NoBody }

func closeBody(req *http.Request) {
	if hasBody(req) {
		req.Body.Close()
	}
}

// getConn returns a connection to addr with a stream reserved on it.
func (t *Transport) getConn(ctx context.Context, addr string) (*conn, error) {
	for {
		t.mu.Lock()
		for _, c := range t.conns[addr] {
			if c.reserve() {
				t.mu.Unlock()
				return c, nil
			}
		}
		if t.dialing == nil {
			t.dialing = make(map[string]*dialCall)
		}
		if d, ok := t.dialing[addr]; ok {
			t.mu.Unlock()
			select {
			case <-d.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if d.err != nil {
				if ctx.Err() == nil && (errors.Is(d.err, context.Canceled) || errors.Is(d.err, context.DeadlineExceeded)) {
					continue // the request that dialled gave up; this one has not: dial again
				}
				return nil, d.err
			}
			continue
		}
		d := &dialCall{done: make(chan struct{})}
		t.dialing[addr] = d
		t.mu.Unlock()

		d.c, d.err = t.dial(ctx, addr)
		t.mu.Lock()
		delete(t.dialing, addr)
		if d.err == nil {
			if t.conns == nil {
				t.conns = make(map[string][]*conn)
			}
			t.conns[addr] = append(t.conns[addr], d.c)
			t.armReaperLocked()
		}
		t.mu.Unlock()
		close(d.done)
		if d.err != nil {
			return nil, d.err
		}
	}
}

// armReaperLocked makes sure reap runs within half an IdleTimeout while
// there are connections. Caller holds t.mu.
func (t *Transport) armReaperLocked() {
	if !t.reaper.Armed() {
		t.reaper.Arm(t.IdleTimeout/2, t.reap)
	}
}

// reap closes connections that have had no stream for IdleTimeout, as
// net/http's IdleConnTimeout does (an endpoint gone from the cluster would
// otherwise keep its connection for as long as the peer does).
func (t *Transport) reap() {
	deadline := time.Now().Add(-t.IdleTimeout)
	var stale []*conn
	t.mu.Lock()
	for _, list := range t.conns {
		for _, c := range list {
			c.mu.Lock()
			if c.reserved == 0 && c.idleSince.Before(deadline) {
				stale = append(stale, c)
			}
			c.mu.Unlock()
		}
	}
	t.reaper.Fired()
	if len(t.conns) > len(stale) || len(t.dialing) > 0 {
		t.armReaperLocked()
	}
	t.mu.Unlock()
	for _, c := range stale {
		c.close(errIdle) // a stream reserved since is failed as never sent
	}
}

func (t *Transport) remove(c *conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	list := t.conns[c.addr]
	for i, x := range list {
		if x == c {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(t.conns, c.addr)
	} else {
		t.conns[c.addr] = list
	}
}

// dial opens a connection and sends the client preface and settings.
func (t *Transport) dial(ctx context.Context, addr string) (*conn, error) {
	nc, err := t.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &conn{
		t:            t,
		addr:         addr,
		nc:           nc,
		bw:           bufio.NewWriterSize(nc, 16<<10),
		streams:      make(map[uint32]*stream),
		nextID:       1,
		maxStreams:   100, // until the server's SETTINGS say otherwise
		sendWin:      65535,
		peerInitWin:  65535,
		peerMaxFrame: 16 << 10,
		idleSince:    time.Now(),
	}
	c.cond = sync.NewCond(&c.mu)
	c.fr = http2.NewFramer(c.bw, bufio.NewReaderSize(nc, 16<<10))
	c.fr.SetReuseFrames()
	c.hr.Init(maxHeaderList)
	c.hw.Init()
	c.bw.WriteString(http2.ClientPreface)
	c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderList},
	)
	c.fr.WriteWindowUpdate(0, connWindow-65535)
	if err := c.bw.Flush(); err != nil {
		nc.Close()
		return nil, err
	}
	go c.readLoop()
	return c, nil
}
