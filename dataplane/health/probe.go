package health

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tinymesh/tinymesh/dataplane/config"
)

// DialFunc dials an endpoint the way the cluster does (TLS included), so a
// probe of an mTLS cluster presents the proxy's certificate and checks the
// peer's like traffic would.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Prober makes single health-check attempts. It keeps its connections between
// probes (Envoy's reuse_connection default); Close drops them.
type Prober struct {
	cfg       *config.HealthCheck
	authority string
	dial      DialFunc
	tr        *http.Transport // HTTP and gRPC checks only
}

// NewProber returns a prober for cfg against endpoints of cluster, dialled
// with dial; h2 says the cluster speaks HTTP/2 (required for gRPC checks).
func NewProber(cfg *config.HealthCheck, cluster string, h2 bool, dial DialFunc) *Prober {
	p := &Prober{cfg: cfg, dial: dial, authority: defaultAuthority(cluster)}
	switch cfg.Kind {
	case config.HealthCheckHTTP:
		if cfg.Host != "" {
			p.authority = cfg.Host
		}
	case config.HealthCheckGRPC:
		if cfg.GRPCAuthority != "" {
			p.authority = cfg.GRPCAuthority
		}
		h2 = true
	default:
		return p
	}
	protos := new(http.Protocols)
	if h2 {
		protos.SetUnencryptedHTTP2(true) // over TLS too: dial does the handshake with ALPN h2
	} else {
		protos.SetHTTP1(true)
	}
	p.tr = &http.Transport{
		DialContext:         dial,
		Protocols:           protos,
		DisableCompression:  true,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     2*cfg.Interval + cfg.IntervalJitter + time.Second,
	}
	return p
}

// defaultAuthority is the Host of a probe that does not set one. Envoy sends
// the cluster name, which for the mesh's outbound|<port>||<host> clusters is
// not a valid host; there it is <host>:<port>, the authority the peer
// sidecar routes by. An empty result means the endpoint address.
func defaultAuthority(cluster string) string {
	if parts := strings.Split(cluster, "|"); len(parts) == 4 && parts[3] != "" && parts[1] != "" {
		return parts[3] + ":" + parts[1]
	}
	if strings.ContainsAny(cluster, "|/ ") {
		return ""
	}
	return cluster
}

// Close closes the prober's idle connections.
func (p *Prober) Close() {
	if p.tr != nil {
		p.tr.CloseIdleConnections()
	}
}

// ErrUnhealthy is wrapped by probe failures that got an answer.
var ErrUnhealthy = errors.New("health check failed")

// Probe makes one attempt against addr; nil means healthy.
func (p *Prober) Probe(ctx context.Context, addr string) error {
	switch p.cfg.Kind {
	case config.HealthCheckHTTP:
		return p.probeHTTP(ctx, addr)
	case config.HealthCheckGRPC:
		return p.probeGRPC(ctx, addr)
	}
	c, err := p.dial(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

func (p *Prober) probeHTTP(ctx context.Context, addr string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+p.cfg.Path, nil)
	if err != nil {
		return err
	}
	req.Host = p.authority // empty: the endpoint address
	req.Header.Set("User-Agent", "meshproxy-health-check")
	resp, err := p.tr.RoundTrip(req)
	if err != nil {
		return err
	}
	// Drain a little so the connection can be reused.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if !expected(p.cfg.ExpectedStatuses, resp.StatusCode) {
		return fmt.Errorf("%w: status %d", ErrUnhealthy, resp.StatusCode)
	}
	return nil
}

func expected(rs []config.StatusRange, code int) bool {
	if len(rs) == 0 {
		return code == http.StatusOK
	}
	for _, r := range rs {
		if code >= r.Start && code < r.End {
			return true
		}
	}
	return false
}

// probeGRPC calls grpc.health.v1.Health/Check over the cluster's HTTP/2
// transport. The request and response have one field each
// (HealthCheckRequest{service = 1}, HealthCheckResponse{status = 1},
// SERVING = 1), written and read with protowire, so the data plane needs no
// gRPC client nor generated code for them.
func (p *Prober) probeGRPC(ctx context.Context, addr string) error {
	svc := p.cfg.GRPCService
	msg := make([]byte, 5, 5+2+len(svc)+5) // gRPC frame prefix: uncompressed, length below
	if svc != "" {
		msg = protowire.AppendTag(msg, 1, protowire.BytesType)
		msg = protowire.AppendString(msg, svc)
	}
	binary.BigEndian.PutUint32(msg[1:5], uint32(len(msg)-5))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/grpc.health.v1.Health/Check", bytes.NewReader(msg))
	if err != nil {
		return err
	}
	req.Host = p.authority
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	req.Header.Set("User-Agent", "meshproxy-health-check")
	resp, err := p.tr.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: HTTP status %d", ErrUnhealthy, resp.StatusCode)
	}
	st := resp.Trailer.Get("Grpc-Status")
	if st == "" {
		st = resp.Header.Get("Grpc-Status") // trailers-only
	}
	if st != "0" {
		return fmt.Errorf("%w: grpc-status %q: %s", ErrUnhealthy, st, resp.Trailer.Get("Grpc-Message"))
	}
	if len(body) < 5 || body[0] != 0 || int(binary.BigEndian.Uint32(body[1:5])) != len(body)-5 {
		return fmt.Errorf("%w: malformed gRPC response", ErrUnhealthy)
	}
	if s := servingStatus(body[5:]); s != 1 {
		return fmt.Errorf("%w: serving status %d", ErrUnhealthy, s)
	}
	return nil
}

// servingStatus returns field 1 (a varint) of a HealthCheckResponse, skipping
// unknown fields; 0 (UNKNOWN) when absent or malformed.
func servingStatus(b []byte) uint64 {
	var status uint64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0
		}
		b = b[n:]
		if num == 1 && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0
			}
			status, b = v, b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0
		}
		b = b[n:]
	}
	return status
}

// String names the check, for logs.
func (p *Prober) String() string {
	switch p.cfg.Kind {
	case config.HealthCheckHTTP:
		return "http " + strconv.Quote(p.cfg.Path)
	case config.HealthCheckGRPC:
		return "grpc " + strconv.Quote(p.cfg.GRPCService)
	}
	return "tcp"
}
