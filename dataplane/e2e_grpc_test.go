package dataplane_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/proxytest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func grpcClient(t *testing.T, addr, authority string) testgrpc.TestServiceClient {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(authority))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testgrpc.NewTestServiceClient(cc)
}

func TestGRPCThroughTwoProxies(t *testing.T) {
	app := proxytest.StartGRPCApp(t)
	m := proxytest.TwoHop(t, app.Addr, config.ProtocolH2C)
	client := grpcClient(t, m.OutboundAddr, "backend.default.svc.cluster.local:8080")

	t.Run("unary with metadata", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "x-echo", "hello")
		var hdr, tr metadata.MD
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("ping")}},
			grpc.Header(&hdr), grpc.Trailer(&tr))
		if err != nil {
			t.Fatalf("UnaryCall: %v", err)
		}
		if got := string(resp.GetPayload().GetBody()); got != "ping" {
			t.Errorf("payload = %q, want ping", got)
		}
		if got := hdr.Get("x-header"); len(got) != 1 || got[0] != "hello" {
			t.Errorf("header x-header = %q, want [hello]", got)
		}
		if got := tr.Get("x-trailer"); len(got) != 1 || got[0] != "hello" {
			t.Errorf("trailer x-trailer = %q, want [hello]", got)
		}
	})

	t.Run("status code", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.NotFound), Message: "no such thing"}})
		if s := status.Convert(err); s.Code() != codes.NotFound || s.Message() != "no such thing" {
			t.Errorf("status = %v %q, want NotFound %q", s.Code(), s.Message(), "no such thing")
		}
	})

	t.Run("deadline exceeded reaches the server", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "x-block", "1")
		_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		if got := status.Code(err); got != codes.DeadlineExceeded {
			t.Errorf("code = %v, want DeadlineExceeded", got)
		}
		select {
		case err := <-app.Cancelled:
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				t.Errorf("server saw %v, want a context error", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("server never saw the call end")
		}
	})

	t.Run("cancellation reaches the server", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		ctx = metadata.AppendToOutgoingContext(ctx, "x-block", "1")
		errc := make(chan error, 1)
		go func() {
			_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
			errc <- err
		}()
		// Cancel once the call is surely in flight: give it time to reach the
		// server, since nothing observable happens before.
		time.AfterFunc(100*time.Millisecond, cancel)
		if got := status.Code(<-errc); got != codes.Canceled {
			t.Errorf("code = %v, want Canceled", got)
		}
		select {
		case err := <-app.Cancelled:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("server saw %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("server never saw the cancellation")
		}
	})

	t.Run("bidi streaming", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "x-echo", "bidi")
		stream, err := client.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Ping-pong: each reply must arrive before the next send, which only
		// works if the proxies flush every message and stream both ways.
		for i, msg := range []string{"one", "two", "three"} {
			if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte(msg)}}); err != nil {
				t.Fatalf("Send %d: %v", i, err)
			}
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("Recv %d: %v", i, err)
			}
			if got := string(resp.GetPayload().GetBody()); got != msg {
				t.Errorf("reply %d = %q, want %q", i, got, msg)
			}
		}
		hdr, err := stream.Header()
		if err != nil || len(hdr.Get("x-header")) != 1 || hdr.Get("x-header")[0] != "bidi" {
			t.Errorf("header x-header = %q (err %v), want [bidi]", hdr.Get("x-header"), err)
		}
		stream.CloseSend()
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			t.Errorf("final Recv = %v, want io.EOF", err)
		}
		if got := stream.Trailer().Get("x-trailer"); len(got) != 1 || got[0] != "bidi" {
			t.Errorf("trailer x-trailer = %q, want [bidi]", got)
		}
	})

	t.Run("bidi status mid-stream", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stream, err := client.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("x")}})
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("Recv: %v", err)
		}
		stream.Send(&testgrpc.StreamingOutputCallRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.ResourceExhausted), Message: "enough"}})
		_, err = stream.Recv()
		if s := status.Convert(err); s.Code() != codes.ResourceExhausted || s.Message() != "enough" {
			t.Errorf("status = %v %q, want ResourceExhausted enough", s.Code(), s.Message())
		}
	})
}

func TestGRPCToRefusedUpstreamIsUnavailable(t *testing.T) {
	dead := proxytest.FreeAddr(t) // nothing listens here
	m := proxytest.TwoHop(t, dead, config.ProtocolH2C)
	client := grpcClient(t, m.OutboundAddr, "backend")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A trailers-only response: grpc-go reports its headers as trailer metadata.
	var tr metadata.MD
	_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Trailer(&tr))
	if got := status.Code(err); got != codes.Unavailable {
		t.Errorf("code = %v (%v), want Unavailable", got, err)
	}
	if got := tr.Get("x-meshproxy-error"); len(got) != 1 || got[0] != "upstream_connect_failure" {
		t.Errorf("x-meshproxy-error = %q, want [upstream_connect_failure]", got)
	}
}
