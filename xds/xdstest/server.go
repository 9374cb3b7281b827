// Package xdstest runs a real ADS management server (go-control-plane's server
// and SnapshotCache in ADS mode) on 127.0.0.1 for tests of xDS clients, and
// records every request it receives so tests can wait for ACKs and NACKs.
//
// Server methods may be called from any goroutine. A Server owns the goroutine
// serving gRPC; Close (or Stop) waits for it. Resources set with SetResources
// survive Stop and Restart, like a control plane that restarts with its model.
package xdstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	snapcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
)

// AllNodes as the node of SetResources serves every node that has no resources
// of its own.
const AllNodes = ""

// Request is one DiscoveryRequest or DeltaDiscoveryRequest as received.
type Request struct {
	Delta         bool
	StreamID      int64
	NodeID        string // only the first request of a stream carries the node
	TypeURL       string
	VersionInfo   string // SotW only
	ResponseNonce string
	ErrorDetail   *status.Status
	ResourceNames []string // SotW
	// Delta only.
	Subscribe       []string
	Unsubscribe     []string
	InitialVersions map[string]string
}

// IsACK reports whether r acknowledges a response (a nonce and no error).
func (r Request) IsACK() bool { return r.ResponseNonce != "" && r.ErrorDetail == nil }

// IsNACK reports whether r rejects a response.
func (r Request) IsNACK() bool { return r.ResponseNonce != "" && r.ErrorDetail != nil }

// Response is one response the server sent.
type Response struct {
	Delta    bool
	StreamID int64
	TypeURL  string
	Nonce    string
	// Version is version_info (SotW) or system_version_info (delta), which
	// go-control-plane sets to the snapshot version.
	Version   string
	Resources []string // names sent
	Removed   []string // delta only
}

// Server is a management server on 127.0.0.1.
type Server struct {
	cache snapcache.SnapshotCache
	xds   serverv3.Server
	addr  string

	mu       sync.Mutex // guards the fields below
	grpc     *grpc.Server
	served   chan struct{} // closed when the current Serve returns
	perNode  map[string]bool
	reqs     []Request
	resps    []Response
	changed  chan struct{} // closed and replaced on every recorded request
	cancelFn context.CancelFunc
}

type nodeHash struct{ s *Server }

// ID maps nodes without their own resources to AllNodes.
func (h nodeHash) ID(n *corev3.Node) string {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	if h.s.perNode[n.GetId()] {
		return n.GetId()
	}
	return AllNodes
}

// New starts a server on 127.0.0.1:0.
func New() (*Server, error) {
	s := &Server{perNode: map[string]bool{}, changed: make(chan struct{})}
	s.cache = snapcache.NewSnapshotCache(true, nodeHash{s}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	s.cancelFn = cancel
	s.xds = serverv3.NewServer(ctx, s.cache, serverv3.CallbackFuncs{
		StreamRequestFunc: func(id int64, r *discoveryv3.DiscoveryRequest) error {
			s.record(Request{StreamID: id, NodeID: r.GetNode().GetId(), TypeURL: r.GetTypeUrl(),
				VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetResponseNonce(),
				ErrorDetail: r.GetErrorDetail(), ResourceNames: r.GetResourceNames()})
			return nil
		},
		StreamDeltaRequestFunc: func(id int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			s.record(Request{Delta: true, StreamID: id, NodeID: r.GetNode().GetId(), TypeURL: r.GetTypeUrl(),
				ResponseNonce: r.GetResponseNonce(), ErrorDetail: r.GetErrorDetail(),
				Subscribe: r.GetResourceNamesSubscribe(), Unsubscribe: r.GetResourceNamesUnsubscribe(),
				InitialVersions: r.GetInitialResourceVersions()})
			return nil
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, r *discoveryv3.DiscoveryResponse) {
			resp := Response{StreamID: id, TypeURL: r.GetTypeUrl(), Nonce: r.GetNonce(), Version: r.GetVersionInfo()}
			for _, a := range r.GetResources() {
				resp.Resources = append(resp.Resources, nameOf(a.GetTypeUrl(), a.GetValue()))
			}
			s.recordResponse(resp)
		},
		StreamDeltaResponseFunc: func(id int64, _ *discoveryv3.DeltaDiscoveryRequest, r *discoveryv3.DeltaDiscoveryResponse) {
			resp := Response{Delta: true, StreamID: id, TypeURL: r.GetTypeUrl(), Nonce: r.GetNonce(),
				Version: r.GetSystemVersionInfo(), Removed: r.GetRemovedResources()}
			for _, res := range r.GetResources() {
				resp.Resources = append(resp.Resources, res.GetName())
			}
			s.recordResponse(resp)
		},
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		return nil, fmt.Errorf("xdstest: listen: %w", err)
	}
	s.addr = lis.Addr().String()
	s.serve(lis)
	return s, nil
}

func (s *Server) serve(lis net.Listener) {
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
	done := make(chan struct{})
	s.mu.Lock()
	s.grpc, s.served = g, done
	s.mu.Unlock()
	go func() {
		defer close(done)
		_ = g.Serve(lis) // returns when Stop is called
	}()
}

// Addr is the host:port the server listens on; it stays the same across Restart.
func (s *Server) Addr() string { return s.addr }

// Stop closes the listener and every stream, and waits for them. Recorded
// requests and resources are kept.
func (s *Server) Stop() {
	s.mu.Lock()
	g, done := s.grpc, s.served
	s.grpc, s.served = nil, nil
	s.mu.Unlock()
	if g == nil {
		return
	}
	g.Stop()
	<-done
}

// Restart listens again on the same address after Stop.
func (s *Server) Restart() error {
	s.mu.Lock()
	running := s.grpc != nil
	s.mu.Unlock()
	if running {
		return errors.New("xdstest: Restart without Stop")
	}
	lis, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("xdstest: listen again on %s: %w", s.addr, err)
	}
	s.serve(lis)
	return nil
}

// Close stops the server for good.
func (s *Server) Close() {
	s.Stop()
	s.cancelFn()
}

// SetResources replaces what node (or AllNodes) is served with resources by type
// URL, all under one version. Resources are not validated, so tests can push
// invalid ones. Once a node has resources of its own it no longer sees AllNodes'.
func (s *Server) SetResources(node, version string, resources map[string][]cachev3.Resource) error {
	snap, err := snapcache.NewSnapshot(version, resources)
	if err != nil {
		return fmt.Errorf("xdstest: snapshot: %w", err)
	}
	if node != AllNodes {
		s.mu.Lock()
		s.perNode[node] = true
		s.mu.Unlock()
	}
	return s.cache.SetSnapshot(context.Background(), node, snap)
}

func (s *Server) record(r Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, r)
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) recordResponse(r Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resps = append(s.resps, r)
}

// Requests returns a copy of every request received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// Responses returns a copy of every response sent so far, in order.
func (s *Server) Responses() []Response {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Response(nil), s.resps...)
}

// Mark returns the number of requests received so far, to pass as from to the
// Wait methods so that they only look at later requests.
func (s *Server) Mark() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reqs)
}

// WaitRequest waits until a request at index from or later satisfies match, or
// ctx is done.
func (s *Server) WaitRequest(ctx context.Context, from int, match func(Request, *Response) bool) (Request, error) {
	for {
		s.mu.Lock()
		for i := from; i < len(s.reqs); i++ {
			r := s.reqs[i]
			if match(r, s.responseLocked(r)) {
				s.mu.Unlock()
				return r, nil
			}
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return Request{}, fmt.Errorf("xdstest: no matching request: %w", ctx.Err())
		}
	}
}

// responseLocked finds the response r answers (by stream and nonce).
func (s *Server) responseLocked(r Request) *Response {
	if r.ResponseNonce == "" {
		return nil
	}
	for i := len(s.resps) - 1; i >= 0; i-- {
		p := &s.resps[i]
		if p.StreamID == r.StreamID && p.Nonce == r.ResponseNonce && p.Delta == r.Delta {
			c := *p
			return &c
		}
	}
	return nil
}

// WaitACK waits for an ACK of typeURL at index from or later whose nonce is that
// of a response carrying version. For SotW the ACK's version_info must equal it
// too.
func (s *Server) WaitACK(ctx context.Context, from int, typeURL, version string) (Request, error) {
	return s.WaitRequest(ctx, from, func(r Request, resp *Response) bool {
		return r.TypeURL == typeURL && r.IsACK() && resp != nil && resp.Version == version &&
			(r.Delta || r.VersionInfo == version)
	})
}

// WaitNACK waits for a NACK of typeURL at index from or later.
func (s *Server) WaitNACK(ctx context.Context, from int, typeURL string) (Request, error) {
	return s.WaitRequest(ctx, from, func(r Request, _ *Response) bool {
		return r.TypeURL == typeURL && r.IsNACK()
	})
}
