package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
)

// backendBody is the response of the HTTP backend: small, so that the bench
// measures per-request proxy overhead rather than copying.
var backendBody = []byte("ok\n")

// xfccPath is the backend's probe path: it answers with the request's
// x-forwarded-client-cert header, which a server-side meshproxy sets when the
// caller presented a client certificate.
const xfccPath = "/.bench/xfcc"

// runBackend serves HTTP/1.1 and h2c (prior knowledge) on httpAddr and gRPC (the
// standard health service, whose Check is a unary call) on grpcAddr until SIGTERM
// or SIGINT. It is the bench binary re-executed with -backend, so that it can be
// pinned to its own CPU with taskset.
func runBackend(httpAddr, grpcAddr string) error {
	hl, err := net.Listen("tcp", httpAddr)
	if err != nil {
		return fmt.Errorf("backend http listen: %w", err)
	}
	gl, err := net.Listen("tcp", grpcAddr)
	if err != nil {
		hl.Close()
		return fmt.Errorf("backend grpc listen: %w", err)
	}

	hs, gs := newBackend()
	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(hl) }()
	go func() { errc <- gs.Serve(gl) }()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case err = <-errc:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	hs.Shutdown(ctx)
	gs.Stop()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// newBackend returns the backend's servers: HTTP/1.1 and h2c (prior knowledge)
// answering every request with backendBody, and gRPC with the standard health
// service reporting SERVING.
func newBackend() (*http.Server, *grpc.Server) {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			if r.URL.Path == xfccPath {
				io.WriteString(w, r.Header.Get("X-Forwarded-Client-Cert"))
				return
			}
			w.Write(backendBody)
		}),
		Protocols:         &protos,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
	}
	gs := grpc.NewServer(grpc.UnknownServiceHandler(xfccGRPC))
	hsrv := health.NewServer()
	hsrv.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hsrv)
	return hs, gs
}

// xfccGRPC answers any call of an unregistered service, as grpc-go would, with
// Unimplemented, but says in the status message which x-forwarded-client-cert
// the call carried (the gRPC form of xfccPath).
func xfccGRPC(_ any, stream grpc.ServerStream) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	return status.Error(codes.Unimplemented, xfccPrefix+strings.Join(md.Get("x-forwarded-client-cert"), ","))
}

// xfccPrefix starts the status message of xfccGRPC.
const xfccPrefix = "bench: x-forwarded-client-cert="

// healthProtoset returns a serialized FileDescriptorSet of grpc/health/v1, which
// ghz needs to build requests without server reflection (reflection would add a
// streaming call through each chain before every run).
func healthProtoset() ([]byte, error) {
	fd := protodesc.ToFileDescriptorProto(healthpb.File_grpc_health_v1_health_proto)
	return proto.Marshal(&descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{fd}})
}
