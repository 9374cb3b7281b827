package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// reply is what every HTTP backend answers on GET: who it is and what it saw.
type reply struct {
	Service  string `json:"service"`
	Version  string `json:"version"`
	Instance string `json:"instance"`
	Proto    string `json:"proto"` // the protocol the backend received (from its sidecar)
	Host     string `json:"host"`
	Canary   string `json:"canary,omitempty"` // the x-canary request header, if any
	// XFCC is the x-forwarded-client-cert header the backend's sidecar set:
	// who called, as the mTLS handshake proved it.
	XFCC string `json:"xfcc,omitempty"`
}

// backendID names one backend instance.
type backendID struct {
	service, version, instance string
}

// httpBackend is a real net/http server on a loopback address.
type httpBackend struct {
	addr string
	srv  *http.Server
	done chan struct{} // closed when Serve returned
}

// startHTTPBackend serves id on a fresh port of ip. With h2cOnly it speaks only
// HTTP/2 with prior knowledge, so a sidecar that sends it HTTP/1.1 fails loudly;
// otherwise only HTTP/1.1. GET any path answers a reply; POST /echo echoes the
// body.
func startHTTPBackend(t *testing.T, ip string, id backendID, h2cOnly bool) *httpBackend {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-backend-instance", id.instance)
		w.Header().Set("x-backend-proto", r.Proto)
		_, _ = io.Copy(w, r.Body)
	})
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(reply{
			Service: id.service, Version: id.version, Instance: id.instance,
			Proto: r.Proto, Host: r.Host, Canary: r.Header.Get("x-canary"),
			XFCC: r.Header.Get("x-forwarded-client-cert"),
		})
	})
	b := &httpBackend{addr: ln.Addr().String(), done: make(chan struct{})}
	b.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	b.srv.Protocols = new(http.Protocols)
	if h2cOnly {
		b.srv.Protocols.SetUnencryptedHTTP2(true)
	} else {
		b.srv.Protocols.SetHTTP1(true)
	}
	go func() {
		defer close(b.done)
		if err := b.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("backend %s: %v", id.instance, err)
		}
	}()
	t.Cleanup(b.close)
	return b
}

// close shuts the server down gracefully and waits for it.
func (b *httpBackend) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.srv.Shutdown(ctx); err != nil {
		_ = b.srv.Close()
	}
	<-b.done
}

// grpcBackend is a grpc-go server implementing the interop TestService.
type grpcBackend struct {
	testgrpc.UnimplementedTestServiceServer
	addr string
	id   backendID
	srv  *grpc.Server
	done chan struct{}
}

func startGRPCBackend(t *testing.T, ip string, id backendID) *grpcBackend {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	b := &grpcBackend{addr: ln.Addr().String(), id: id, srv: grpc.NewServer(), done: make(chan struct{})}
	testgrpc.RegisterTestServiceServer(b.srv, b)
	go func() {
		defer close(b.done)
		if err := b.srv.Serve(ln); err != nil {
			t.Errorf("grpc backend %s: %v", id.instance, err)
		}
	}()
	t.Cleanup(func() {
		b.srv.Stop()
		<-b.done
	})
	return b
}

// UnaryCall answers with the backend's version as server_id and instance as
// hostname, and echoes the request payload.
func (b *grpcBackend) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if st := req.GetResponseStatus(); st != nil && st.GetCode() != 0 {
		return nil, status.Error(codes.Code(st.GetCode()), st.GetMessage())
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-backend-version", b.id.version))
	return &testgrpc.SimpleResponse{
		Payload:  req.GetPayload(),
		ServerId: b.id.version,
		Hostname: b.id.instance,
	}, nil
}

// StreamingOutputCall sends one message per response parameter, each with a
// payload of the asked size.
func (b *grpcBackend) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	for _, p := range req.GetResponseParameters() {
		body := make([]byte, p.GetSize())
		for i := range body {
			body[i] = byte(i)
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: body}}); err != nil {
			return err
		}
	}
	return nil
}

// FullDuplexCall echoes each request's payload, so the client can interleave
// sends and receives over one stream.
func (b *grpcBackend) FullDuplexCall(stream grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

// echoServer is a TCP server that writes a greeting line naming itself, then
// echoes everything it reads.
type echoServer struct {
	addr string
	ln   net.Listener
	wg   sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{} // guarded by mu; closed by close
}

func startEchoServer(t *testing.T, ip, greeting string) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{addr: ln.Addr().String(), ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
					c.Close()
				}()
				if _, err := fmt.Fprintf(c, "%s\n", greeting); err != nil {
					return
				}
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *echoServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}
