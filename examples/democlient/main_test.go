package main

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	demov1 "github.com/tinymesh/tinymesh/proto/demo/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeDemo answers as v1 for odd calls and v2 for even ones, and records the
// :authority of every call.
type fakeDemo struct {
	demov1.UnimplementedDemoServiceServer
	mu          sync.Mutex
	calls       int
	authorities map[string]int
}

func (f *fakeDemo) record(ctx context.Context) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	md, _ := metadata.FromIncomingContext(ctx)
	for _, a := range md.Get(":authority") {
		f.authorities[a]++
	}
	f.calls++
	return f.calls
}

func (f *fakeDemo) Hello(ctx context.Context, _ *demov1.HelloRequest) (*demov1.HelloResponse, error) {
	v := "v1"
	if f.record(ctx)%2 == 0 {
		v = "v2"
	}
	return &demov1.HelloResponse{Service: "backend", Version: v}, nil
}

func (f *fakeDemo) Chat(s demov1.DemoService_ChatServer) error {
	f.record(s.Context())
	var seq int64
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		seq++
		if err := s.Send(&demov1.ChatResponse{Text: m.GetText(), Service: "backend", Version: "v3", Sequence: seq}); err != nil {
			return err
		}
	}
}

func TestRun(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantOut  string
		wantAuth map[string]int
	}{
		{"hello", []string{"-n", "4", "--authority", "backend"}, "     2 backend v1\n     2 backend v2\n", map[string]int{"backend": 4}},
		{"chat", []string{"-rpc", "chat", "-n", "3", "--authority", "backend.default:8080"}, "     3 backend v3\n", map[string]int{"backend.default:8080": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			fake := &fakeDemo{authorities: map[string]int{}}
			srv := grpc.NewServer()
			demov1.RegisterDemoServiceServer(srv, fake)
			go srv.Serve(lis)
			defer srv.Stop()

			var out strings.Builder
			args := append([]string{"--addr", lis.Addr().String()}, tt.args...)
			if err := run(t.Context(), args, &out, io.Discard); err != nil {
				t.Fatalf("run(%q) = %v", args, err)
			}
			if diff := cmp.Diff(tt.wantOut, out.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
			fake.mu.Lock()
			defer fake.mu.Unlock()
			if diff := cmp.Diff(tt.wantAuth, fake.authorities); diff != "" {
				t.Errorf(":authority of calls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRunErrors(t *testing.T) {
	// A port nobody listens on.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	for _, args := range [][]string{
		{"-n", "0"},
		{"-rpc", "stream"},
		{"--addr", dead, "-n", "1", "-timeout", "2s"},
	} {
		if err := run(t.Context(), args, io.Discard, io.Discard); err == nil {
			t.Errorf("run(%q) = nil, want an error", args)
		}
	}
}
