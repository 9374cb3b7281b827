package httpproxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/tinymesh/tinymesh/dataplane/cluster"
	"github.com/tinymesh/tinymesh/dataplane/cluster/h2"
)

// maxAttempts bounds the tries per request or upgrade: the first plus two
// retries, Envoy's retry_on connect-failure with num_retries 2.
const maxAttempts = 3

// tried records the endpoints one request has tried. It lives on the request
// goroutine's stack, so the success path pays nothing for it.
type tried struct {
	addrs [maxAttempts]string
	n     int
}

func (t *tried) add(a string) {
	if t.n < len(t.addrs) {
		t.addrs[t.n] = a
		t.n++
	}
}

func (t *tried) list() []string { return t.addrs[:t.n] }

// attemptBody wraps the downstream request body for one upstream attempt. It
// records whether the transport read from it (then the body may have been
// partly sent and a retry could send a truncated body, so none happens) and
// absorbs a Close that comes before any Read: a transport closes the request
// body when a dial fails (http.RoundTripper's contract), which would otherwise
// make the body unusable for the retry. The check is sound because the
// upstream transports (cluster/http1, cluster/h2) close the body of a failed
// attempt before RoundTrip returns, even when its body writer has not run yet:
// a late Read of the old attempt then fails instead of taking bytes from the
// retry.
type attemptBody struct {
	rc    io.ReadCloser
	state atomic.Uint32 // bodyRead | bodyClosed
	n     atomic.Int64  // bytes read: the request bytes sent upstream (stream.Info)
}

const (
	bodyRead uint32 = 1 << iota
	bodyClosed
)

func (b *attemptBody) Read(p []byte) (int, error) {
	if b.state.Or(bodyRead)&bodyClosed != 0 {
		// This attempt was abandoned before it read: its reader must not
		// take bytes that belong to the next attempt.
		return 0, http.ErrBodyReadAfterClose
	}
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (b *attemptBody) Close() error {
	if b.state.Or(bodyClosed)&bodyRead != 0 {
		// Read began: pass Close on so a Read blocked on the downstream is
		// released, as net/http expects when it abandons a request.
		return b.rc.Close()
	}
	return nil // the server closes the real body when the handler returns
}

func (b *attemptBody) touched() bool { return b.state.Load()&bodyRead != 0 }

// neverSent reports whether err says the request did not reach the upstream
// at all, so another endpoint may be tried whatever the method: the dial (TCP
// connect, connect timeout or TLS handshake, see cluster.Upstream.DialContext)
// failed, or an HTTP/2 upstream did not process the stream (REFUSED_STREAM,
// or GOAWAY for a stream above its last-stream-id). The HTTP/2 transport
// retries those itself on the same endpoint when the request has no body,
// and surfaces them when it gives up.
func neverSent(err error) bool {
	if errors.Is(err, cluster.ErrOverflow) {
		return false // the circuit breaker said no: another endpoint would too
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return h2.Unprocessed(err)
}

// retryRequest returns a copy of out addressed to addr, with a fresh body
// wrapper over the downstream body when out has one.
func retryRequest(out *http.Request, addr string, body io.ReadCloser) (*http.Request, *attemptBody) {
	o := out.WithContext(out.Context()) // a shallow copy: the failed attempt keeps its own
	u := *out.URL
	u.Host = addr
	o.URL = &u
	var ab *attemptBody
	if body != nil {
		ab = &attemptBody{rc: body}
		o.Body = ab
	}
	return o, ab
}
