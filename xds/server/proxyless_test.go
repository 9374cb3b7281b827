package server_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/xds"

	"github.com/tinymesh/tinymesh/xds/server"
)

// testServer is a grpc_testing TestService answering UnaryCall with its name.
type testServer struct {
	testpb.UnimplementedTestServiceServer
	name string
}

func (s *testServer) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{ServerId: s.name}, nil
}

func startBackend(t *testing.T, name string) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	testpb.RegisterTestServiceServer(g, &testServer{name: name})
	done := make(chan struct{})
	go func() { defer close(done); g.Serve(lis) }()
	t.Cleanup(func() { g.Stop(); <-done })
	return lis.Addr().(*net.TCPAddr).Port
}

// TestProxylessGRPC: a grpc-go client with an xds:/// target, bootstrapped to our
// server (SotW), resolves a mesh Service and follows its HTTPRoute: an 80/20 split
// between two backends outside the mesh (EndpointSlices), and a header match that
// pins calls to v2.
func TestProxylessGRPC(t *testing.T) {
	v1, v2 := startBackend(t, "v1"), startBackend(t, "v2")
	s, addr := startServer(t, server.Options{Debounce: 10 * time.Millisecond})
	svc := func(name string) string {
		return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: %s, namespace: default}
spec:
  ports: [{name: grpc, port: 8080, appProtocol: grpc}]
---
`, name)
	}
	slice := func(name string, port int) string {
		return fmt.Sprintf(`apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: %s-1
  labels: {kubernetes.io/service-name: %s}
addressType: IPv4
ports: [{name: grpc, port: %d, appProtocol: grpc}]
endpoints: [{addresses: [127.0.0.1]}]
---
`, name, name, port)
	}
	s.SetModel(model(t, svc("backend")+svc("backend-v1")+svc("backend-v2")+
		slice("backend-v1", v1)+slice("backend-v2", v2)+`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend}
spec:
  parentRefs: [{group: "", kind: Service, name: backend, port: 8080}]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /grpc.testing.TestService/}
      headers: [{name: x-version, value: v2}]
    backendRefs: [{name: backend-v2, port: 8080}]
  - backendRefs:
    - {name: backend-v1, port: 8080, weight: 80}
    - {name: backend-v2, port: 8080, weight: 20}
`))

	bootstrap := fmt.Sprintf(`{
  "xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
  "node": {"id": "client.default~proxyless", "cluster": "client.default", "metadata": {"NAMESPACE": "default"}}
}`, addr)
	resolver, err := xds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatalf("xDS resolver: %v", err)
	}
	conn, err := grpc.NewClient("xds:///backend.default.svc.cluster.local:8080",
		grpc.WithResolvers(resolver), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := testpb.NewTestServiceClient(conn)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	call := func(ctx context.Context) string {
		t.Helper()
		r, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.WaitForReady(true))
		if err != nil {
			t.Fatalf("UnaryCall: %v", err)
		}
		return r.ServerId
	}

	const n = 2000
	counts := map[string]int{}
	for range n {
		counts[call(ctx)]++
	}
	share := float64(counts["v1"]) / n
	t.Logf("split over %d calls: %v (v1 %.1f%%)", n, counts, 100*share)
	if share < 0.75 || share > 0.85 || counts["v1"]+counts["v2"] != n {
		t.Errorf("v1 share = %.3f (%v), want 0.80 +- 0.05", share, counts)
	}

	pinned := metadata.AppendToOutgoingContext(ctx, "x-version", "v2")
	for i := range 50 {
		if got := call(pinned); got != "v2" {
			t.Fatalf("call %d with x-version: v2 went to %q, want v2", i, got)
		}
	}
}
