package httpproxy

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/cluster"
	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/httpproxy/httpserver"
	"github.com/tinymesh/tinymesh/dataplane/rbac"
	"github.com/tinymesh/tinymesh/dataplane/route"
	"github.com/tinymesh/tinymesh/dataplane/stream"
	"github.com/tinymesh/tinymesh/dataplane/tracing"
)

// State is what one HTTP listener serves for one snapshot.
type State struct {
	HCM       *config.HTTPConnectionManager
	Direction config.Direction
	Routes    *route.Table   // nil if the snapshot lacks the route config: every request gets 404
	Clusters  *cluster.Table // the snapshot's compiled clusters
	RBAC      *rbac.HTTP     // the HCM's RBAC filter; nil: none (rbac.go)
	Listener  string         // the listener's name, for stream.Info
	// Observe receives every finished request (stats, access log); nil:
	// nothing is recorded and the request path does no telemetry work.
	Observe stream.Observer
	// Tracer starts a span per request and forwards its traceparent
	// (tracing.go); nil: tracing off, no header work.
	Tracer *tracing.Tracer
}

func (s *State) allowsUpgrade(proto string) bool {
	for _, u := range s.HCM.UpgradeTypes {
		if strings.EqualFold(u, proto) {
			return true
		}
	}
	return false
}

// Handler is the http.Handler of one HTTP listener.
type Handler struct {
	log     *slog.Logger          // set in NewHandler, read-only after
	state   atomic.Pointer[State] // written by the config goroutine
	denials rbac.DenyLog          // bounds RBAC denial logs; safe for concurrent use

	upgrades sync.WaitGroup // handlers splicing upgraded connections; Add under mu
	mu       sync.Mutex
	upConns  map[net.Conn]struct{} // upgraded downstream and upstream conns, guarded by mu
	closing  bool                  // no new upgrades; guarded by mu
	forced   bool                  // upgraded conns are being cut; guarded by mu
}

// NewHandler returns a Handler serving st until Store replaces it.
func NewHandler(log *slog.Logger, st *State) *Handler {
	h := &Handler{log: log, upConns: make(map[net.Conn]struct{})}
	h.state.Store(st)
	return h
}

// Store publishes new state; requests that start afterwards use it.
func (h *Handler) Store(st *State) { h.state.Store(st) }

// Load returns the state in force (for the admin route explainer).
func (h *Handler) Load() *State { return h.state.Load() }

// CloseUpgraded waits for upgraded connections to end until ctx is done, then
// closes those still open and waits for their handlers to return.
// Upgrades that start afterwards are refused.
func (h *Handler) CloseUpgraded(ctx context.Context) {
	h.mu.Lock()
	h.closing = true // orders every upgrades.Add before the Wait below
	h.mu.Unlock()
	done := make(chan struct{})
	go func() { h.upgrades.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	h.mu.Lock()
	h.forced = true
	for c := range h.upConns {
		c.Close()
	}
	h.mu.Unlock()
	<-done
}

// NewServer returns the server for an HTTP listener: HTTP/1.1 and h2c with
// prior knowledge on one socket (Envoy's codec_type AUTO). Serve it with Serve,
// which installs the request-smuggling guard.
func NewServer(h *Handler, hcm *config.HTTPConnectionManager, log *slog.Logger) *httpserver.Server {
	maxHdr := hcm.MaxRequestHeadersBytes
	if maxHdr <= 0 {
		maxHdr = 60 << 10 // Envoy's default max_request_headers_kb
	}
	return &httpserver.Server{
		Handler:     h,
		ConnContext: connContext,
		// The server answers 431 beyond this plus 4 KiB of slack and closes
		// the connection; the smuggling guard enforces the exact limit on
		// HTTP/1.1 (sniff.go). HTTP/2 advertises it as
		// SETTINGS_MAX_HEADER_LIST_SIZE.
		MaxHeaderBytes: maxHdr,
		// TODO(dataplane): StreamIdleTimeout bounds idle keep-alive
		// connections only; a per-stream idle timer for HTTP/2 is not done.
		IdleTimeout:       hcm.StreamIdleTimeout,
		ReadHeaderTimeout: 30 * time.Second,
		Log:               log,
	}
}

// Serve serves srv on ln with every connection wrapped by the smuggling guard.
func Serve(srv *httpserver.Server, ln net.Listener) error {
	return srv.Serve(sniffListener{Listener: ln, maxHeader: srv.MaxHeaderBytes})
}

// hopHeaders are connection-specific (RFC 9110 section 7.6.1) and never forwarded.
var hopHeaders = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// stripHop removes hop-by-hop headers from h, keeping "TE: trailers" (gRPC needs
// it end to end) and, for upgrades, Upgrade and Connection: upgrade. It runs twice
// per request (request and response) and does not allocate unless a Connection
// header names a non-hop-by-hop header in non-canonical case.
func stripHop(h http.Header, upgrade bool) {
	for _, v := range h["Connection"] {
		for f := range tokens(v) {
			if upgrade && strings.EqualFold(f, "upgrade") {
				continue
			}
			if isHopOrClose(f) {
				continue // deleted below anyway; Del would allocate to canonicalize "keep-alive"
			}
			h.Del(f)
		}
	}
	te := false
	for _, v := range h["Te"] {
		if containsFold(v, "trailers") {
			te = true
		}
	}
	up := h["Upgrade"]
	// One pass over the request's few keys rather than a map delete for
	// each of the nine hop-by-hop names.
	for k := range h {
		if strings.HasPrefix(k, "Proxy-") || slices.Contains(hopHeaders, k) {
			delete(h, k)
		}
	}
	if te {
		h["Te"] = teTrailers[:1:1]
	}
	if upgrade {
		h["Connection"] = connUpgrade[:1:1]
		h["Upgrade"] = up
	}
}

// isHopOrClose reports whether a Connection token is "close" or names one of
// hopHeaders, the tokens clients actually send.
func isHopOrClose(f string) bool {
	if strings.EqualFold(f, "close") {
		return true
	}
	for _, k := range hopHeaders {
		if strings.EqualFold(f, k) {
			return true
		}
	}
	return false
}

// Shared header values; the full slice expressions at the use sites cap them at
// their length so an append by a later stage (Header.Add) copies instead of
// writing into the shared array. Nothing in the proxy or net/http writes a header
// value slice in place.
var (
	teTrailers  = []string{"trailers"}
	connUpgrade = []string{"Upgrade"}
)

// tokens yields the non-empty, trimmed elements of a comma-separated header
// value without allocating (strings.Split would, on every request carrying a
// Connection header).
func tokens(v string) func(yield func(string) bool) {
	return func(yield func(string) bool) {
		for v != "" {
			var f string
			f, v, _ = strings.Cut(v, ",")
			if f = textproto.TrimString(f); f != "" && !yield(f) {
				return
			}
		}
	}
}

// containsFold reports whether s contains sub, ignoring ASCII case; sub must be
// lower case. It replaces strings.Contains(strings.ToLower(s), sub), which
// allocates whenever s has an upper-case letter.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// upgradeType returns the lower-case protocol an HTTP/1.1 request asks to switch
// to, or "".
func upgradeType(r *http.Request) string {
	if r.ProtoMajor != 1 {
		return ""
	}
	up := r.Header.Get("Upgrade")
	if up == "" {
		return ""
	}
	for _, v := range r.Header["Connection"] {
		for f := range tokens(v) {
			if strings.EqualFold(f, "upgrade") {
				return strings.ToLower(up)
			}
		}
	}
	return ""
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st := h.state.Load() // one config version for the whole request
	grpcReq := route.IsGRPC(r.Header)
	var si *stream.Info // nil unless observed or traced; see telemetry.go
	if st.Observe != nil || st.Tracer != nil {
		si = beginStream(r, st)
		defer endStream(st.Observe, si)
	}
	sp := startSpan(r, st, si) // nil when tracing is off (tracing.go)
	if sp != nil {
		defer sp.End(si) // before endStream: si is complete, and still ours
	}
	if r.ProtoMajor == 1 {
		if sc := sniffFrom(r.Context()); sc != nil {
			if reject, why := sc.nextRequest(); reject {
				// Both Content-Length and Transfer-Encoding (RFC 9112
				// section 6.3), or a header block over the limit: refuse
				// and close (see sniff.go).
				w.Header().Set("Connection", "close")
				writeError(w, false, why, si)
				return
			}
		}
	}
	up := upgradeType(r)
	if up != "" && !st.allowsUpgrade(up) {
		writeError(w, grpcReq, UpgradeRefused, si)
		return
	}
	if st.Routes == nil {
		writeError(w, grpcReq, RouteNotFound, si)
		return
	}
	rq := route.Request{Authority: r.Host, Method: r.Method, Path: r.URL.Path, Header: r.Header}
	vh, rt := st.Routes.Match(&rq)
	if si != nil && rt != nil {
		si.VirtualHost, si.RouteName = vh.Config.Name, rt.Config.Name
	}
	if st.RBAC != nil && !h.authorize(w, r, st, vh, rt, grpcReq, si) {
		return
	}
	if rt == nil {
		writeError(w, grpcReq, RouteNotFound, si)
		return
	}
	if d := rt.Config.DirectResponse; d != nil {
		addResponseHeaders(w.Header(), st.Routes.Config, vh.Config, rt.Config)
		w.WriteHeader(d.Status)
		io.WriteString(w, d.Body)
		if si != nil {
			si.ResponseCode, si.BytesSent = d.Status, int64(len(d.Body))
		}
		return
	}
	wc := rt.PickCluster()
	if si != nil && wc != nil {
		si.Cluster = wc.Name
	}
	if wc == nil {
		writeError(w, grpcReq, ClusterNotFound, si)
		return
	}
	c, ok := st.Clusters.Get(wc.Name)
	if !ok {
		writeError(w, grpcReq, ClusterNotFound, si)
		return
	}
	addr, ok := c.Pick() // skips ejected and unhealthy endpoints
	if !ok {
		writeError(w, grpcReq, NoHealthyUpstream, si)
		return
	}

	ctx := r.Context()
	timeout := rt.Config.Action.Timeout
	if grpcReq {
		// gRPC over HTTP/2 spec: grpc-timeout bounds the call; honour the
		// tighter of it and the route timeout.
		if d, ok := parseGRPCTimeout(r.Header.Get("Grpc-Timeout")); ok && (timeout == 0 || d < timeout) {
			timeout = d
		}
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	out := h.outbound(ctx, r, st, vh, rt, wc, addr, up != "")
	if sp != nil {
		sp.Inject(out.Header) // this proxy's span is the next hop's parent
	}
	if si != nil {
		si.RequestID = out.Header.Get("X-Request-Id") // generated by outbound when missing
	}
	if up != "" {
		h.serveUpgrade(w, r, out, c, addr, si)
		return
	}
	h.forward(w, r, out, c, grpcReq, st, vh, rt, si)
}

// outbound builds the upstream request. It edits r's header map in place and
// hands it on, as Envoy's router edits the request it routes, rather than
// copying it (a map and an array a request, 8 % of the server sidecar's
// allocations): what reads the downstream headers (route match, RBAC, span,
// upgrade and gRPC detection) has run by then, and the server's keep-alive
// decision reads r.Close, not the Connection header stripped here.
func (h *Handler) outbound(ctx context.Context, r *http.Request, st *State, vh *route.VirtualHost, rt *route.Route, wc *config.WeightedCluster, addr string, upgrade bool) *http.Request {
	hdr := r.Header
	if hdr == nil {
		hdr = make(http.Header)
	}
	stripHop(hdr, upgrade)
	delete(hdr, "Host")
	setXFCC(hdr, r, st.HCM)
	rc := st.Routes.Config
	// Most specific level first, as Envoy does by default: a later level's
	// non-appending add overrides an earlier one.
	levels := [...]struct {
		remove []string
		add    []config.HeaderValueOption
	}{
		{wc.RequestHeadersToRemove, wc.RequestHeadersToAdd},
		{rt.Config.RequestHeadersToRemove, rt.Config.RequestHeadersToAdd},
		{vh.Config.RequestHeadersToRemove, vh.Config.RequestHeadersToAdd},
		{rc.RequestHeadersToRemove, rc.RequestHeadersToAdd},
	}
	for _, l := range levels {
		for _, k := range l.remove {
			hdr.Del(k)
		}
	}
	for _, l := range levels {
		applyAdds(hdr, l.add)
	}
	if st.HCM.UseRemoteAddress {
		if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			if prior := hdr.Values("X-Forwarded-For"); len(prior) > 0 {
				ip = strings.Join(prior, ", ") + ", " + ip
			}
			hdr.Set("X-Forwarded-For", ip)
		}
	}
	if st.HCM.GenerateRequestID && hdr.Get("X-Request-Id") == "" {
		hdr.Set("X-Request-Id", newRequestID())
	}
	host := r.Host
	if a := rt.Config.Action; a.HostRewrite != "" {
		host = a.HostRewrite
	}
	u := &url.URL{Scheme: "http", Host: addr, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	if p := rt.RewritePath(r.URL.Path); p != r.URL.Path {
		u.Path, u.RawPath = p, ""
	}
	// The literal does not escape (WithContext is inlined and copies it), so
	// this is one allocation, not two.
	out := (&http.Request{
		Method:     r.Method,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     hdr,
		Host:       host,
		Trailer:    r.Trailer,
	}).WithContext(ctx)
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		out.Body = r.Body
		out.ContentLength = r.ContentLength
	}
	return out
}

func applyAdds(h http.Header, adds []config.HeaderValueOption) {
	for _, a := range adds {
		if a.Append {
			h.Add(a.Name, a.Value)
		} else {
			h.Set(a.Name, a.Value)
		}
	}
}

func addResponseHeaders(h http.Header, rc *config.RouteConfig, vh *config.VirtualHost, rt *config.Route) {
	for _, rm := range [...][]string{rt.ResponseHeadersToRemove, vh.ResponseHeadersToRemove, rc.ResponseHeadersToRemove} {
		for _, k := range rm {
			h.Del(k)
		}
	}
	applyAdds(h, rt.ResponseHeadersToAdd)
	applyAdds(h, vh.ResponseHeadersToAdd)
	applyAdds(h, rc.ResponseHeadersToAdd)
}

// newRequestID returns a random UUID (version 4). An ID names a request for
// logs and traces and guards nothing, so math/rand/v2's generator (ChaCha8,
// seeded by the OS) serves, as OpenTelemetry's SDK uses math/rand for trace
// IDs; crypto/rand's getrandom was 1.7 % of the client sidecar's CPU.
func newRequestID() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	b[6] = b[6]&0x0f | 0x40 // UUID version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// headerAdopter is a ResponseWriter that can take the upstream response's
// header map as its own (httpserver's do): the copy into the writer's map,
// a map and its inserts a response, is then not needed. AdoptHeader returns
// the writer's header map: h, or the writer's own one with h's fields when
// it holds fields already.
type headerAdopter interface {
	AdoptHeader(h http.Header) http.Header
}

// bufPool holds the response copy buffers, one per in-flight request. 16 KiB is
// the upstream transport's read buffer and HTTP/2's default maximum frame, so a
// larger buffer is rarely filled by one Read and only adds resident memory under
// load (64 concurrent requests held 2 MiB at 32 KiB).
var bufPool = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// forward sends out upstream and streams the response back to w.
// It records the outcome in si when that is not nil.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, out *http.Request, c *cluster.Cluster, grpcReq bool, st *State, vh *route.VirtualHost, rt *route.Route, si *stream.Info) {
	c.Upstream.Acquire()
	defer c.Upstream.Release()
	if !c.Upstream.BeginRequest() { // circuit breaker: max_requests
		writeError(w, grpcReq, UpstreamOverflow, si)
		return
	}
	defer c.Upstream.EndRequest()
	var body *attemptBody
	if out.Body != nil {
		// The one allocation retries cost on the success path, and only for
		// requests with a body: without it a failed dial would close (and so
		// drain) the downstream body.
		body = &attemptBody{rc: out.Body}
		out.Body = body
	}
	var tr tried
	tr.add(out.URL.Host)
	// Active requests per endpoint, for the admin /clusters page: one atomic
	// add per attempt.
	ep := c.Upstream.Endpoint(out.URL.Host)
	ep.BeginRequest()
	defer func() { ep.EndRequest() }()
	resp, err := c.Upstream.RoundTrip(out)
	for err != nil && tr.n < maxAttempts && neverSent(err) && (body == nil || !body.touched()) &&
		out.Context().Err() == nil && r.Context().Err() == nil {
		addr, ok := c.PickExcept(tr.list())
		if !ok {
			break
		}
		if !c.Upstream.BeginRetry() { // circuit breaker: max_retries
			break
		}
		h.log.Debug("upstream connect failed, retrying on another endpoint", "cluster", c.Name, "endpoint", out.URL.Host, "next", addr, "attempt", tr.n, "err", err)
		var rb io.ReadCloser
		if body != nil {
			rb = body.rc
		}
		out, body = retryRequest(out, addr, rb)
		tr.add(addr)
		ep.EndRequest()
		ep = c.Upstream.Endpoint(addr)
		ep.BeginRequest()
		resp, err = c.Upstream.RoundTrip(out)
		c.Upstream.EndRetry()
	}
	if si != nil {
		si.Attempts, si.UpstreamHost = tr.n, out.URL.Host
		if body != nil {
			defer func() { si.BytesReceived = body.n.Load() }()
		}
	}
	if err != nil {
		reason, ok := classify(err, out.Context(), r.Context())
		if ok && (reason == UpstreamTimeout || reason == UpstreamReset) && !neverSent(err) {
			c.Upstream.ObserveFailure(ep) // outlier detection; dial failures are fed by the dialer
		}
		if ok {
			h.log.Debug("upstream request failed", "cluster", c.Name, "endpoint", out.URL.Host, "endpoints", strings.Join(tr.list(), ","), "attempts", tr.n, "reason", reason.String(), "err", err)
			writeError(w, grpcReq, reason, si)
			if si != nil && reason == UpstreamConnectFailure && tr.n == maxAttempts {
				si.Flags |= stream.UpstreamRetryLimitExceeded
			}
		} else if si != nil {
			si.Flags |= stream.DownstreamConnectionTermination
		}
		return
	}
	defer resp.Body.Close()
	c.Upstream.ObserveResponse(ep, resp.StatusCode) // outlier detection
	// The response streams back while the request body may still stream in:
	// httpserver reads and writes an HTTP/1.1 connection in full duplex.

	_, typed := resp.Header["Content-Type"]
	_, trailersOnly := resp.Header["Grpc-Status"]
	var hdr http.Header
	if a, ok := w.(headerAdopter); ok {
		hdr = a.AdoptHeader(resp.Header)
	} else {
		hdr = w.Header()
		for k, vs := range resp.Header {
			hdr[k] = vs
		}
	}
	stripHop(hdr, false)
	if !typed {
		hdr["Content-Type"] = nil // forward as is: no content sniffing
	}
	addResponseHeaders(hdr, st.Routes.Config, vh.Config, rt.Config)
	for k := range resp.Trailer {
		hdr.Add("Trailer", k)
	}
	w.WriteHeader(resp.StatusCode)
	var sent int64
	if si != nil {
		si.ResponseCode = resp.StatusCode
		defer func() { si.BytesSent = sent }()
	}

	// gRPC and responses of unknown length may be streams: deliver each chunk
	// as it arrives.
	flush := grpcReq || resp.ContentLength < 0
	fl, _ := w.(http.Flusher)
	// Send the headers at once so a streaming client sees the call start, but
	// not for a gRPC trailers-only response (status in the headers): that
	// must stay a single HEADERS frame with END_STREAM, which the server
	// only produces when nothing was flushed before the handler returns.
	if flush && fl != nil && !trailersOnly {
		fl.Flush()
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp) // used only within this call
	buf := *bp
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				if si != nil {
					si.Flags |= stream.DownstreamConnectionTermination
				}
				return // downstream gone; deferred Close cancels upstream
			}
			sent += int64(n)
			if flush && fl != nil {
				fl.Flush()
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			h.abortStream(w, r, out, grpcReq, resp, rerr, si)
			return
		}
	}
	for k, vs := range resp.Trailer {
		hdr[http.TrailerPrefix+k] = vs
	}
	if si != nil && grpcReq {
		si.GRPCStatus = grpcStatus(resp)
	}
}

// abortStream ends a response whose upstream failed after the headers were sent.
func (h *Handler) abortStream(w http.ResponseWriter, r *http.Request, out *http.Request, grpcReq bool, resp *http.Response, err error, si *stream.Info) {
	if r.Context().Err() != nil {
		if si != nil {
			si.Flags |= stream.DownstreamConnectionTermination
		}
		return
	}
	reason := UpstreamReset
	if out.Context().Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		reason = UpstreamTimeout
	}
	if si != nil {
		si.Flags |= reasons[reason].flag
		if grpcReq && resp.Trailer.Get("Grpc-Status") == "" {
			si.GRPCStatus = reasons[reason].grpc
		}
	}
	h.log.Debug("upstream stream failed", "endpoint", out.URL.Host, "reason", reason.String(), "err", err)
	if grpcReq && resp.Trailer.Get("Grpc-Status") == "" {
		// A gRPC client reads the status from trailers; give it one.
		hdr := w.Header()
		info := reasons[reason]
		hdr.Set(http.TrailerPrefix+"Grpc-Status", strconv.Itoa(info.grpc))
		hdr.Set(http.TrailerPrefix+"Grpc-Message", "meshproxy: "+info.name)
		hdr.Set(http.TrailerPrefix+ErrorHeader, info.name)
		return
	}
	// The status line is gone; the only honest signal left is to reset the
	// stream (HTTP/2) or close the connection (HTTP/1.1) so the client does not
	// take a truncated body for a complete one. net/http documents
	// ErrAbortHandler as the way to do exactly that without logging a stack.
	panic(http.ErrAbortHandler)
}

// parseGRPCTimeout parses the grpc-timeout header: up to 8 digits and a unit
// (H, M, S, m, u, n), per the gRPC over HTTP/2 spec.
func parseGRPCTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	var n int64
	for _, c := range v[:len(v)-1] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	return time.Duration(n) * unit, true
}
