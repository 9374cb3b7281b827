package xdstest_test

import (
	"context"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tinymesh/tinymesh/xds/xdstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sotwFetch opens a SotW stream, asks for all listeners, ACKs the answer and
// waits for the server to record the ACK (before the stream is closed).
func sotwFetch(t *testing.T, srv *xdstest.Server) *discoveryv3.DiscoveryResponse {
	t.Helper()
	from := srv.Mark()
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "n1"}, TypeUrl: xdstest.ListenerType}); err != nil {
		t.Fatal(err)
	}
	resp, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&discoveryv3.DiscoveryRequest{TypeUrl: xdstest.ListenerType,
		VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	ack, err := srv.WaitACK(ctx, from, xdstest.ListenerType, resp.GetVersionInfo())
	if err != nil {
		t.Fatalf("WaitACK: %v; requests %+v", err, srv.Requests())
	}
	if ack.VersionInfo != resp.GetVersionInfo() || ack.ResponseNonce != resp.GetNonce() || ack.IsNACK() {
		t.Errorf("ACK = %+v, want version %q nonce %q", ack, resp.GetVersionInfo(), resp.GetNonce())
	}
	return resp
}

func TestServerRecordsAndRestarts(t *testing.T) {
	srv, err := xdstest.New()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	err = srv.SetResources(xdstest.AllNodes, "v1", xdstest.Resources{
		xdstest.ListenerType: {xdstest.TCPListener("l", "127.0.0.1", 1, "c")},
	})
	if err != nil {
		t.Fatal(err)
	}
	resp := sotwFetch(t, srv)
	if got, want := resp.GetVersionInfo(), "v1"; got != want || len(resp.GetResources()) != 1 {
		t.Fatalf("response version %q with %d resources, want %q with 1", got, len(resp.GetResources()), want)
	}
	if got := srv.Responses(); len(got) != 1 || got[0].Resources[0] != "l" {
		t.Errorf("Responses = %+v, want one naming listener l", got)
	}

	addr := srv.Addr()
	srv.Stop()
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if srv.Addr() != addr {
		t.Errorf("address after restart = %s, want %s", srv.Addr(), addr)
	}
	if resp := sotwFetch(t, srv); resp.GetVersionInfo() != "v1" {
		t.Errorf("after restart: version %q, want v1 (resources survive restarts)", resp.GetVersionInfo())
	}
}
