package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	demov1 "github.com/tinymesh/tinymesh/proto/demo/v1"
)

// shutdownTimeout bounds graceful shutdown; in-flight requests and gRPC streams
// longer than this are cut so that SIGTERM always ends the process promptly.
const shutdownTimeout = 5 * time.Second

// server owns the listeners and the HTTP and gRPC servers of one demoapp.
type server struct {
	// set in newServer, read-only after
	log      *slog.Logger
	httpLis  net.Listener
	grpcLis  net.Listener // nil without --grpc
	httpSrv  *http.Server
	grpcSrv  *grpc.Server
	health   *health.Server
	identity identity
	upstream *upstream // nil without --upstream-url

	closeOnce sync.Once
}

// identity is what every reply reports about this process.
type identity struct {
	Service  string
	Version  string
	Hostname string
	PID      int
}

// newServer binds the listeners so that callers (and tests using port 0) know the
// addresses before Serve.
func newServer(o options, log *slog.Logger) (*server, error) {
	host, _ := os.Hostname()
	s := &server{
		log:      log,
		identity: identity{Service: o.service, Version: o.version, Hostname: host, PID: os.Getpid()},
	}
	if o.upstreamURL != "" {
		up, err := newUpstream(o.upstreamURL, o.upstreamHost)
		if err != nil {
			return nil, err
		}
		s.upstream = up
	}

	s.grpcSrv = grpc.NewServer()
	demov1.RegisterDemoServiceServer(s.grpcSrv, &demoService{id: s.identity})
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpcSrv, s.health)
	reflection.Register(s.grpcSrv)

	var err error
	if s.httpLis, err = net.Listen("tcp", o.httpAddr); err != nil {
		return nil, fmt.Errorf("listen --http: %w", err)
	}
	if o.grpcAddr != "" {
		if s.grpcLis, err = net.Listen("tcp", o.grpcAddr); err != nil {
			s.httpLis.Close()
			return nil, fmt.Errorf("listen --grpc: %w", err)
		}
	}

	// HTTP/1.1 and h2c on one port: a sidecar may forward either, depending on
	// the Service's appProtocol (docs/xds-conventions.md, "Protocols").
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	s.httpSrv = &http.Server{
		Handler:           s.routeGRPC(s.httpHandler()),
		Protocols:         &protos,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// HTTPAddr is the bound HTTP address.
func (s *server) HTTPAddr() string { return s.httpLis.Addr().String() }

// GRPCAddr is the bound gRPC address, or "" without --grpc.
func (s *server) GRPCAddr() string {
	if s.grpcLis == nil {
		return ""
	}
	return s.grpcLis.Addr().String()
}

// Serve serves until Close and returns the first serving error; after Close it
// returns nil.
func (s *server) Serve() error {
	attrs := []any{"service", s.identity.Service, "version", s.identity.Version, "http", s.HTTPAddr()}
	if s.grpcLis != nil {
		attrs = append(attrs, "grpc", s.GRPCAddr())
	}
	if s.upstream != nil {
		attrs = append(attrs, "upstream", s.upstream.base.String(), "upstreamHost", s.upstream.host)
	}
	s.log.Info("demoapp serving", attrs...)

	errc := make(chan error, 2)
	n := 1
	go func() {
		err := s.httpSrv.Serve(s.httpLis)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- err
	}()
	if s.grpcLis != nil {
		n++
		go func() {
			err := s.grpcSrv.Serve(s.grpcLis)
			if errors.Is(err, grpc.ErrServerStopped) {
				err = nil // Close ran before Serve started
			}
			errc <- err
		}()
	}
	var first error
	for range n {
		if err := <-errc; err != nil && first == nil {
			first = err
			// One server failing stops the other, so Serve returns.
			go s.Close()
		}
	}
	return first
}

// Close stops both servers gracefully, bounded by shutdownTimeout, and closes the
// upstream client's idle connections. It may be called more than once.
func (s *server) Close() {
	s.closeOnce.Do(func() {
		s.health.Shutdown()
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()

		done := make(chan struct{})
		go func() {
			s.grpcSrv.GracefulStop()
			close(done)
		}()
		if err := s.httpSrv.Shutdown(ctx); err != nil {
			s.httpSrv.Close()
		}
		select {
		case <-done:
		case <-ctx.Done():
			s.grpcSrv.Stop() // cuts long-lived streams; GracefulStop then returns
			<-done
		}
		if s.upstream != nil {
			s.upstream.client.CloseIdleConnections()
		}
	})
}

// routeGRPC sends HTTP/2 requests with a gRPC content type to the gRPC server,
// everything else to next. gRPC that arrives over HTTP/1.1 (a sidecar whose
// Service port says appProtocol: http) gets a gRPC error saying so, rather
// than a JSON reply the client cannot parse.
func (s *server) routeGRPC(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			next.ServeHTTP(w, r)
			return
		}
		if r.ProtoMajor == 2 {
			s.grpcSrv.ServeHTTP(w, r)
			return
		}
		// The status goes in trailers (chunked HTTP/1.1), where a proxy that
		// relays trailers puts it for the HTTP/2 client; grpc-status in the
		// headers is honoured only if they end the stream, which a proxy may
		// not preserve.
		h := w.Header()
		h.Set("Content-Type", "application/grpc")
		h.Set("Trailer", "Grpc-Status, Grpc-Message")
		w.WriteHeader(http.StatusOK)
		h.Set("Grpc-Status", strconv.Itoa(int(codes.Internal)))
		h.Set("Grpc-Message", errGRPCOverHTTP1)
	})
}

// errGRPCOverHTTP1 is the grpc-message for gRPC requests received over HTTP/1.1.
const errGRPCOverHTTP1 = "demoapp received gRPC over HTTP/1.1: gRPC needs HTTP/2; set appProtocol h2c or grpc on the Service port"

// upstream is the frontend role's client for the service behind the sidecar.
type upstream struct {
	base   *url.URL
	host   string
	client *http.Client
}

func newUpstream(rawURL, host string) (*upstream, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("--upstream-url: %w", err)
	}
	if u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("--upstream-url: want http://host:port, got %q", rawURL)
	}
	if host == "" {
		host = u.Host
	}
	// One client with keep-alive for all requests: the sidecar's outbound
	// listener is local, so connection reuse matters more than anything else for
	// throughput. Proxy is nil because the sidecar already is the proxy, whatever
	// HTTP_PROXY says.
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	return &upstream{
		base:   u,
		host:   host,
		client: &http.Client{Transport: tr, Timeout: 10 * time.Second},
	}, nil
}
