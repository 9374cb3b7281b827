package proxytest

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// App is an HTTP backend serving HTTP/1.1 and h2c on one port.
type App struct {
	Name     string
	Addr     string
	Requests atomic.Int64 // requests the handler has seen
}

// StartApp starts an App; a nil handler uses the default one (see ServeHTTP).
func StartApp(t testing.TB, name string, h http.Handler) *App {
	t.Helper()
	a := &App{Name: name}
	if h == nil {
		h = http.HandlerFunc(a.serveDefault)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("app %s: %v", name, err)
	}
	a.Addr = ln.Addr().String()
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: p, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.Requests.Add(1)
		h.ServeHTTP(w, r)
	})}
	serveUntilCleanup(t, srv, ln)
	return a
}

func serveUntilCleanup(t testing.TB, srv *http.Server, ln net.Listener) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
}

// serveDefault reports what arrived in X-Got-* response headers and answers with
// the app's name. Paths: /slow?ms=N waits N ms (or until the request is
// cancelled); /echo streams the request body back; /stream writes ?n= chunks,
// flushing each, and a trailer.
func (a *App) serveDefault(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-App", a.Name)
	h.Set("X-Got-Proto", r.Proto)
	h.Set("X-Got-Host", r.Host)
	h.Set("X-Got-Path", r.URL.RequestURI())
	h.Set("X-Got-Request-Id", r.Header.Get("X-Request-Id"))
	h.Set("X-Got-Forwarded-For", r.Header.Get("X-Forwarded-For"))
	h.Set("X-Got-Connection", r.Header.Get("Connection")+r.Header.Get("X-Hop"))
	switch r.URL.Path {
	case "/slow":
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	case "/echo":
		http.NewResponseController(w).EnableFullDuplex()
		h.Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		buf := make([]byte, 1024)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				http.NewResponseController(w).Flush()
			}
			if err != nil {
				return
			}
		}
	case "/stream":
		h.Set("Trailer", "X-Checksum")
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		for i := range n {
			io.WriteString(w, "chunk"+strconv.Itoa(i)+"\n")
			http.NewResponseController(w).Flush()
		}
		h.Set("X-Checksum", "n="+strconv.Itoa(n))
		return
	}
	io.WriteString(w, a.Name)
}

// GRPCApp is a gRPC TestService backend.
type GRPCApp struct {
	testgrpc.UnimplementedTestServiceServer
	Addr string
	// Cancelled receives the context error of every call the server saw end
	// because its client went away or its deadline passed.
	Cancelled chan error
}

// StartGRPCApp starts a GRPCApp (h2c, as gRPC is).
func StartGRPCApp(t testing.TB) *GRPCApp {
	t.Helper()
	return startGRPCApp(t)
}

// startGRPCApp serves a GRPCApp on a fresh loopback port with opts until cleanup.
func startGRPCApp(t testing.TB, opts ...grpc.ServerOption) *GRPCApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("grpc app: %v", err)
	}
	g := &GRPCApp{Addr: ln.Addr().String(), Cancelled: make(chan error, 16)}
	s := grpc.NewServer(opts...)
	testgrpc.RegisterTestServiceServer(s, g)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(ln)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return g
}

// echoMetadata returns the incoming x-echo metadata as header and trailer.
func echoMetadata(ctx context.Context) (header, trailer metadata.MD) {
	md, _ := metadata.FromIncomingContext(ctx)
	return metadata.Pairs("x-header", firstMD(md, "x-echo")), metadata.Pairs("x-trailer", firstMD(md, "x-echo"))
}

func firstMD(md metadata.MD, k string) string {
	if v := md.Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}

// UnaryCall echoes the payload; metadata x-echo comes back as header x-header and
// trailer x-trailer; ResponseStatus is returned as the call's status; metadata
// x-block makes it wait for the call to be cancelled.
func (g *GRPCApp) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	hdr, tr := echoMetadata(ctx)
	grpc.SetHeader(ctx, hdr)
	grpc.SetTrailer(ctx, tr)
	md, _ := metadata.FromIncomingContext(ctx)
	if len(md.Get("x-block")) > 0 {
		<-ctx.Done()
		g.Cancelled <- ctx.Err()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if s := req.GetResponseStatus(); s != nil && s.Code != 0 {
		return nil, status.Error(codes.Code(s.Code), s.Message)
	}
	return &testgrpc.SimpleResponse{Payload: req.GetPayload()}, nil
}

// FullDuplexCall echoes each message's payload as it arrives.
func (g *GRPCApp) FullDuplexCall(stream grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	ctx := stream.Context()
	hdr, tr := echoMetadata(ctx)
	stream.SetHeader(hdr)
	stream.SetTrailer(tr)
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				g.Cancelled <- ctx.Err()
			}
			return err
		}
		if s := req.GetResponseStatus(); s != nil && s.Code != 0 {
			return status.Error(codes.Code(s.Code), s.Message)
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

// StartWebSocketApp starts a WebSocket echo server and returns its address.
func StartWebSocketApp(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("websocket app: %v", err)
	}
	srv := &http.Server{Handler: websocket.Handler(func(ws *websocket.Conn) {
		for {
			var msg string
			if err := websocket.Message.Receive(ws, &msg); err != nil {
				return
			}
			if err := websocket.Message.Send(ws, msg); err != nil {
				return
			}
		}
	})}
	serveUntilCleanup(t, srv, ln)
	return ln.Addr().String()
}

// TCPEcho is a TCP server that reads until EOF, then writes "echo:" and what it
// read, and closes: it only answers after the client's half-close.
type TCPEcho struct {
	Addr     string
	Accepted chan struct{} // receives once per accepted connection (buffered)
}

// StartTCPEcho starts a TCPEcho.
func StartTCPEcho(t testing.TB) *TCPEcho {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("tcp echo: %v", err)
	}
	e := &TCPEcho{Addr: ln.Addr().String(), Accepted: make(chan struct{}, 64)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			select {
			case e.Accepted <- struct{}{}:
			default:
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				b, err := io.ReadAll(c)
				if err != nil {
					return
				}
				c.Write(append([]byte("echo:"), b...))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return e
}
