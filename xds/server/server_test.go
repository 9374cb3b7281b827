package server_test

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/tinymesh/tinymesh/xds/server"
)

const meshYAML = `
apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: frontend}
spec:
  selector: {app: frontend}
  ports: [{name: http, port: 80}]
`

const backendCluster = "outbound|8080||backend.default.svc.cluster.local"

func frontendNode(id string) map[string]any {
	return map[string]any{
		"NAMESPACE": "default", "WORKLOAD_NAME": "frontend",
		"LABELS":             map[string]any{"app": "frontend"},
		"INBOUND_ADDR":       "127.0.0.1:16006",
		"APP_ADDR":           "127.0.0.1:18080",
		"OUTBOUND_HTTP_ADDR": "127.0.0.1:16001",
	}
}

func backendNode(inbound string) map[string]any {
	return map[string]any{
		"NAMESPACE": "default", "WORKLOAD_NAME": "backend-v1",
		"LABELS":       map[string]any{"app": "backend", "version": "v1"},
		"INBOUND_ADDR": inbound,
		"APP_ADDR":     "127.0.0.1:18081",
	}
}

func names(t *testing.T, r *discoveryv3.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range r.Resources {
		switch a.TypeUrl {
		case resource.ClusterType:
			var c clusterv3.Cluster
			mustUnmarshal(t, a, &c)
			out = append(out, c.Name)
		case resource.ListenerType:
			var l listenerv3.Listener
			mustUnmarshal(t, a, &l)
			out = append(out, l.Name)
		}
	}
	slices.Sort(out)
	return out
}

func endpoints(t *testing.T, r *discoveryv3.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range r.Resources {
		var cla endpointv3.ClusterLoadAssignment
		mustUnmarshal(t, a, &cla)
		for _, l := range cla.Endpoints {
			for _, e := range l.LbEndpoints {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				out = append(out, cla.ClusterName+"="+sa.GetAddress()+":"+itoa(sa.GetPortValue()))
			}
		}
	}
	slices.Sort(out)
	return out
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

func mustUnmarshal(t *testing.T, a *anypb.Any, m proto.Message) {
	t.Helper()
	if err := a.UnmarshalTo(m); err != nil {
		t.Fatalf("unmarshal %s: %v", a.TypeUrl, err)
	}
}

func TestSotWResourcesForNode(t *testing.T) {
	s, addr := startServer(t, server.Options{Debounce: 10 * time.Millisecond})
	s.SetModel(model(t, meshYAML))
	c := dialADS(t, addr, node("frontend.default~1", frontendNode("")))
	c.subscribe(resource.ClusterType)
	got := names(t, c.next(resource.ClusterType, 5*time.Second))
	want := []string{"inbound|18080||", backendCluster, "outbound|80||frontend.default.svc.cluster.local"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("clusters (-want +got):\n%s", diff)
	}
	c.subscribe(resource.ListenerType)
	got = names(t, c.next(resource.ListenerType, 5*time.Second))
	want = []string{"inbound", "outbound_http"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("listeners (-want +got):\n%s", diff)
	}
}

// TestWorkloadRegistration: a workload's INBOUND_ADDR appears in the endpoints of
// the Services selecting it when it connects, survives a reconnect within the
// grace period, and disappears once the grace period after its last stream ends.
func TestWorkloadRegistration(t *testing.T) {
	const grace = 300 * time.Millisecond
	s, addr := startServer(t, server.Options{Debounce: 10 * time.Millisecond, EndpointGrace: grace})
	s.SetModel(model(t, meshYAML))

	fe := dialADS(t, addr, node("frontend.default~1", frontendNode("")))
	fe.subscribe(resource.EndpointType, backendCluster)
	if got := endpoints(t, fe.next(resource.EndpointType, 5*time.Second)); len(got) != 0 {
		t.Fatalf("endpoints before any backend: got %v, want none", got)
	}

	// Registered but not ready (it has not ACKed its listeners and endpoints):
	// not published yet.
	be := dialADS(t, addr, node("backend-v1.default~1", backendNode("127.0.0.1:17006")))
	be.subscribe(resource.ClusterType)
	be.next(resource.ClusterType, 5*time.Second)
	fe.none(resource.EndpointType, 200*time.Millisecond)

	// Ready once it has ACKed every type of its snapshot.
	be.subscribe(resource.ListenerType)
	be.subscribe(resource.EndpointType, backendCluster, "outbound|80||frontend.default.svc.cluster.local")
	want := []string{backendCluster + "=127.0.0.1:17006"}
	if diff := cmp.Diff(want, endpoints(t, fe.next(resource.EndpointType, 5*time.Second))); diff != "" {
		t.Fatalf("endpoints after backend connected (-want +got):\n%s", diff)
	}

	// Reconnect within the grace: the endpoint stays, nothing is pushed.
	be.close()
	be = dialADS(t, addr, node("backend-v1.default~1", backendNode("127.0.0.1:17006")))
	be.subscribe(resource.ClusterType)
	be.next(resource.ClusterType, 5*time.Second)
	fe.none(resource.EndpointType, 2*grace)

	// Disconnect for good: removed after the grace.
	start := time.Now()
	be.close()
	got := endpoints(t, fe.next(resource.EndpointType, 5*time.Second))
	if len(got) != 0 {
		t.Fatalf("endpoints after backend left: got %v, want none", got)
	}
	if el := time.Since(start); el < grace {
		t.Errorf("endpoint removed after %v, want >= grace %v", el, grace)
	}
	if ws := s.Workloads(); len(ws) != 1 || ws[0].NodeID != "frontend.default~1" {
		t.Errorf("Workloads() = %+v, want only frontend.default~1", ws)
	}
}

// TestUnchangedModelPushesNothing: versions are content hashes, so setting an
// equal model sends nothing, while a real change sends a new version.
func TestUnchangedModelPushesNothing(t *testing.T) {
	s, addr := startServer(t, server.Options{Debounce: 10 * time.Millisecond})
	s.SetModel(model(t, meshYAML))
	c := dialADS(t, addr, node("frontend.default~1", frontendNode("")))
	c.subscribe(resource.ClusterType)
	first := c.next(resource.ClusterType, 5*time.Second)

	s.SetModel(model(t, meshYAML))
	c.none(resource.ClusterType, 300*time.Millisecond)

	s.SetModel(model(t, meshYAML+`---
apiVersion: v1
kind: Service
metadata: {name: extra}
spec:
  ports: [{name: http, port: 9000}]
`))
	second := c.next(resource.ClusterType, 5*time.Second)
	if second.VersionInfo == first.VersionInfo {
		t.Errorf("version after change = %q, same as before", second.VersionInfo)
	}
	if got := names(t, second); !slices.Contains(got, "outbound|9000||extra.default.svc.cluster.local") {
		t.Errorf("clusters after change = %v, want the extra service's cluster", got)
	}
}

// TestDelta: the incremental variant serves the same resources.
func TestDelta(t *testing.T) {
	s, addr := startServer(t, server.Options{Debounce: 10 * time.Millisecond})
	s.SetModel(model(t, meshYAML))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node: node("frontend.default~2", frontendNode("")), TypeUrl: resource.ClusterType,
	}); err != nil {
		t.Fatal(err)
	}
	r, err := stream.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	var got []string
	for _, res := range r.Resources {
		got = append(got, res.Name)
	}
	slices.Sort(got)
	want := []string{"inbound|18080||", backendCluster, "outbound|80||frontend.default.svc.cluster.local"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("delta clusters (-want +got):\n%s", diff)
	}

	// A half-close ends the stream and removes the node without the grace.
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := stream.Recv(); err != nil {
			break
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(s.Workloads()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("Workloads() = %+v 5s after a half-close, want none", s.Workloads())
		}
		time.Sleep(10 * time.Millisecond) // polling a getter: there is no event to wait on
	}
}

// TestRejectsBadNode: a node with malformed metadata gets an error, not config.
func TestRejectsBadNode(t *testing.T) {
	_, addr := startServer(t, server.Options{Debounce: 10 * time.Millisecond})
	c := dialADS(t, addr, node("bad~1", map[string]any{"INBOUND_ADDR": "not-an-address"}))
	c.subscribe(resource.ClusterType)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		t.Fatal("stream with bad node metadata not closed")
	}
}

// TestWarmUp: after a (re)start, a proxy that reconnects with a configuration is
// left alone for the warm-up (EndpointGrace), so that it keeps the endpoints of
// peers that have not reconnected yet; a fresh proxy is served at once.
func TestWarmUp(t *testing.T) {
	const grace = 500 * time.Millisecond
	start := time.Now()
	s, addr := startServer(t, server.Options{Debounce: 10 * time.Millisecond, EndpointGrace: grace})
	s.SetModel(model(t, meshYAML))

	fresh := dialADS(t, addr, node("frontend.default~fresh", frontendNode("")))
	fresh.subscribe(resource.ClusterType)
	fresh.next(resource.ClusterType, grace/2)

	back := dialADS(t, addr, node("frontend.default~back", frontendNode("")))
	back.subscribeVersion(resource.ClusterType, "version-from-before-the-restart")
	back.none(resource.ClusterType, time.Until(start.Add(grace))-50*time.Millisecond)
	back.next(resource.ClusterType, 5*time.Second)
	if el := time.Since(start); el < grace {
		t.Errorf("reconnected proxy served after %v, want >= warm-up %v", el, grace)
	}
}

// TestLeaveOnHalfClose: a proxy that half-closes its stream (leaving on
// purpose) is removed at once, without waiting for the grace.
func TestLeaveOnHalfClose(t *testing.T) {
	s, addr := startServer(t, server.Options{Debounce: 10 * time.Millisecond, EndpointGrace: time.Minute})
	s.SetModel(model(t, meshYAML))
	fe := dialADS(t, addr, node("frontend.default~1", frontendNode("")))
	fe.subscribe(resource.EndpointType, backendCluster)
	fe.next(resource.EndpointType, 5*time.Second)

	be := dialADS(t, addr, node("backend-v1.default~1", backendNode("127.0.0.1:17006")))
	be.subscribe(resource.ClusterType)
	be.subscribe(resource.ListenerType)
	be.subscribe(resource.EndpointType, backendCluster, "outbound|80||frontend.default.svc.cluster.local")
	want := []string{backendCluster + "=127.0.0.1:17006"}
	if diff := cmp.Diff(want, endpoints(t, fe.next(resource.EndpointType, 5*time.Second))); diff != "" {
		t.Fatalf("endpoints after backend became ready (-want +got):\n%s", diff)
	}

	be.closeSend()
	if got := endpoints(t, fe.next(resource.EndpointType, 5*time.Second)); len(got) != 0 {
		t.Fatalf("endpoints after backend half-closed: got %v, want none", got)
	}
	if ws := s.Workloads(); len(ws) != 1 {
		t.Errorf("Workloads() = %+v, want only the frontend", ws)
	}
}
