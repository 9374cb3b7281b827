package server_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/goleak"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tinymesh/tinymesh/xds/mesh"
	"github.com/tinymesh/tinymesh/xds/server"
	"github.com/tinymesh/tinymesh/xds/source/file"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// model decodes, normalizes and validates YAML into a model.
func model(t testing.TB, docs string) *mesh.Model {
	t.Helper()
	m := &mesh.Model{}
	if err := file.Decode("test.yaml", []byte(docs), m); err != nil {
		t.Fatalf("decode: %v", err)
	}
	m.Normalize()
	if err := m.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	return m
}

// startServer runs a server on a loopback port and stops it when the test ends.
func startServer(t testing.TB, opts server.Options) (*server.Server, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := server.New(opts)
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(lis) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-errc; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, lis.Addr().String()
}

func node(id string, md map[string]any) *corev3.Node {
	st, err := structpb.NewStruct(md)
	if err != nil {
		panic(err)
	}
	return &corev3.Node{Id: id, Metadata: st}
}

// adsClient is a minimal SotW ADS client: it subscribes, ACKs every response and
// hands responses to the test on a channel.
type adsClient struct {
	t      testing.TB
	conn   *grpc.ClientConn
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	cancel context.CancelFunc
	node   *corev3.Node
	resp   chan *discoveryv3.DiscoveryResponse
	done   chan struct{}

	mu    sync.Mutex // serializes Send and guards names, reject and good
	names map[string][]string
	sent  bool
	// reject maps a type URL to the error detail its responses are NACKed
	// with; good is the version last ACKed per type, which a NACK repeats.
	reject map[string]string
	good   map[string]string
}

func dialADS(t testing.TB, addr string, n *corev3.Node) *adsClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &adsClient{t: t, conn: conn, stream: stream, cancel: cancel, node: n,
		resp: make(chan *discoveryv3.DiscoveryResponse, 64), done: make(chan struct{}), names: map[string][]string{},
		reject: map[string]string{}, good: map[string]string{}}
	go c.read()
	t.Cleanup(c.close)
	return c
}

func (c *adsClient) close() {
	c.cancel()
	<-c.done
	c.conn.Close()
}

func (c *adsClient) read() {
	defer close(c.done)
	for {
		r, err := c.stream.Recv()
		if err != nil {
			return
		}
		c.mu.Lock()
		req := &discoveryv3.DiscoveryRequest{
			TypeUrl: r.TypeUrl, ResourceNames: c.names[r.TypeUrl], VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce,
		}
		if msg, ok := c.reject[r.TypeUrl]; ok {
			req.VersionInfo = c.good[r.TypeUrl]
			req.ErrorDetail = &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: msg}
		} else {
			c.good[r.TypeUrl] = r.VersionInfo
		}
		err = c.sendLocked(req)
		c.mu.Unlock()
		c.resp <- r
		if err != nil {
			return
		}
	}
}

func (c *adsClient) sendLocked(req *discoveryv3.DiscoveryRequest) error {
	if !c.sent {
		req.Node = c.node // only the first request carries the node
		c.sent = true
	}
	return c.stream.Send(req)
}

// setReject makes the client NACK every later response of typeURL with msg;
// an empty msg makes it ACK again.
func (c *adsClient) setReject(typeURL, msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if msg == "" {
		delete(c.reject, typeURL)
	} else {
		c.reject[typeURL] = msg
	}
}

// subscribe asks for resources of typeURL (all when names is empty).
func (c *adsClient) subscribe(typeURL string, names ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.names[typeURL] = names
	if err := c.sendLocked(&discoveryv3.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names}); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// next waits for the next response of typeURL, skipping others.
func (c *adsClient) next(typeURL string, within time.Duration) *discoveryv3.DiscoveryResponse {
	c.t.Helper()
	deadline := time.After(within)
	for {
		select {
		case r := <-c.resp:
			if r.TypeUrl == typeURL {
				return r
			}
		case <-deadline:
			c.t.Fatalf("no %s response within %v", typeURL, within)
			return nil
		}
	}
}

// none asserts that no response of typeURL arrives within d.
func (c *adsClient) none(typeURL string, d time.Duration) {
	c.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case r := <-c.resp:
			if r.TypeUrl == typeURL {
				c.t.Fatalf("unexpected %s response version %s with %d resources", typeURL, r.VersionInfo, len(r.Resources))
			}
		case <-deadline:
			return
		}
	}
}

// subscribeVersion subscribes like a proxy that reconnects holding version v.
func (c *adsClient) subscribeVersion(typeURL, v string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.sendLocked(&discoveryv3.DiscoveryRequest{TypeUrl: typeURL, VersionInfo: v}); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// closeSend half-closes the stream, as a proxy leaving on purpose does.
func (c *adsClient) closeSend() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.stream.CloseSend(); err != nil {
		c.t.Fatalf("CloseSend: %v", err)
	}
}
