package httpproxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/tinymesh/tinymesh/dataplane/cluster"
	"github.com/tinymesh/tinymesh/dataplane/stream"
	"github.com/tinymesh/tinymesh/dataplane/tcpproxy"
)

// serveUpgrade passes an Upgrade request (WebSocket) through: it always opens a
// dedicated HTTP/1.1 connection, since an upgrade cannot ride an HTTP/2 stream to
// an h2c cluster, relays the upstream's 101 and then splices the two connections.
// Any other upstream answer is relayed as a normal response.
func (h *Handler) serveUpgrade(w http.ResponseWriter, r *http.Request, out *http.Request, c *cluster.Cluster, addr string, si *stream.Info) {
	if !h.beginUpgrade() {
		writeError(w, false, UpgradeRefused, si)
		return
	}
	defer h.upgrades.Done()
	c.Upstream.Acquire()
	defer c.Upstream.Release()
	if !c.Upstream.BeginRequest() { // circuit breaker: max_requests
		writeError(w, false, UpstreamOverflow, si)
		return
	}
	defer c.Upstream.EndRequest()

	// TLS when the cluster has it. A failed dial sent nothing, so it is
	// retried on another endpoint like any request (see forward).
	var tr tried
	tr.add(addr)
	up, err := c.Upstream.DialHTTP1(out.Context(), "tcp", addr)
	for err != nil && tr.n < maxAttempts && neverSent(err) && out.Context().Err() == nil && r.Context().Err() == nil {
		next, ok := c.PickExcept(tr.list())
		if !ok {
			break
		}
		h.log.Debug("upstream connect failed, retrying upgrade on another endpoint", "cluster", c.Name, "endpoint", addr, "next", next, "attempt", tr.n, "err", err)
		addr = next
		tr.add(addr)
		up, err = c.Upstream.DialHTTP1(out.Context(), "tcp", addr)
	}
	if si != nil {
		si.Attempts, si.UpstreamHost = tr.n, addr
	}
	if err != nil {
		if reason, ok := classify(err, out.Context(), r.Context()); ok {
			h.log.Debug("upstream upgrade failed", "cluster", c.Name, "endpoints", strings.Join(tr.list(), ","), "attempts", tr.n, "reason", reason.String(), "err", err)
			writeError(w, false, reason, si)
		}
		return
	}
	if !h.trackUpgraded(up) {
		up.Close()
		return
	}
	defer h.untrackUpgraded(up)
	if err := out.Write(up); err != nil {
		up.Close()
		writeError(w, false, UpstreamReset, si)
		return
	}
	br := bufio.NewReader(up)
	resp, err := http.ReadResponse(br, out)
	if err != nil {
		up.Close()
		if reason, ok := classify(err, out.Context(), r.Context()); ok {
			writeError(w, false, reason, si)
		}
		return
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer up.Close()
		defer resp.Body.Close()
		hdr := w.Header()
		for k, vs := range resp.Header {
			hdr[k] = vs
		}
		stripHop(hdr, false)
		w.WriteHeader(resp.StatusCode)
		n, _ := io.Copy(w, resp.Body)
		if si != nil {
			si.ResponseCode, si.BytesSent = resp.StatusCode, n
		}
		return
	}

	if sc := sniffFrom(r.Context()); sc != nil {
		sc.stop() // what follows on this connection is not HTTP
	}
	down, dbuf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		writeError(w, false, UpstreamReset, si)
		return
	}
	if !h.trackUpgraded(down) {
		down.Close()
		up.Close()
		return
	}
	defer h.untrackUpgraded(down)
	hdr := resp.Header.Clone()
	stripHop(hdr, true)
	dbuf.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	hdr.Write(dbuf)
	dbuf.WriteString("\r\n")
	// Bytes either side sent right behind the handshake sit in the readers.
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		dbuf.Write(b)
	}
	if err := dbuf.Flush(); err != nil {
		down.Close()
		up.Close()
		return
	}
	if n := dbuf.Reader.Buffered(); n > 0 {
		b, _ := dbuf.Reader.Peek(n)
		if _, err := up.Write(b); err != nil {
			down.Close()
			up.Close()
			return
		}
	}
	if si != nil {
		si.ResponseCode = http.StatusSwitchingProtocols
	}
	tcpproxy.Splice(down, up, 0)
}

// beginUpgrade counts an upgrade in, unless the listener is closing.
func (h *Handler) beginUpgrade() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return false
	}
	h.upgrades.Add(1)
	return true
}

// trackUpgraded registers c to be cut by CloseUpgraded; false means that is
// already under way and the caller must close c itself.
func (h *Handler) trackUpgraded(c net.Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.forced {
		return false
	}
	h.upConns[c] = struct{}{}
	return true
}

func (h *Handler) untrackUpgraded(c net.Conn) {
	h.mu.Lock()
	delete(h.upConns, c)
	h.mu.Unlock()
}
