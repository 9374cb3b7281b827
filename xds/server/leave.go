package server

import (
	"context"
	"errors"
	"io"
	"sync/atomic"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// A proxy that leaves on purpose (SIGTERM) half-closes its ADS stream
// (CloseSend) before it drains; the server then sees io.EOF from Recv and drops
// its endpoint at once instead of after EndpointGrace, which is for proxies that
// vanish without saying so (crash, network). The ADS wrappers below record the
// EOF in a leave flag reachable from the stream's context, which is the context
// go-control-plane hands to the OnStreamOpen callbacks.

type leaveKey struct{}

// leave is set when the client half-closed its stream.
type leave struct{ eof atomic.Bool }

func leaveOf(ctx context.Context) *leave {
	l, _ := ctx.Value(leaveKey{}).(*leave)
	return l
}

// adsServer wraps go-control-plane's ADS server to observe half-closes.
type adsServer struct {
	discoveryv3.AggregatedDiscoveryServiceServer
}

func (a adsServer) StreamAggregatedResources(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	l := &leave{}
	return a.AggregatedDiscoveryServiceServer.StreamAggregatedResources(&sotwStream{st, context.WithValue(st.Context(), leaveKey{}, l), l})
}

func (a adsServer) DeltaAggregatedResources(st discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	l := &leave{}
	return a.AggregatedDiscoveryServiceServer.DeltaAggregatedResources(&deltaStream{st, context.WithValue(st.Context(), leaveKey{}, l), l})
}

type sotwStream struct {
	discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer
	ctx context.Context
	l   *leave
}

func (s *sotwStream) Context() context.Context { return s.ctx }

func (s *sotwStream) Recv() (*discoveryv3.DiscoveryRequest, error) {
	r, err := s.AggregatedDiscoveryService_StreamAggregatedResourcesServer.Recv()
	if errors.Is(err, io.EOF) {
		s.l.eof.Store(true)
	}
	return r, err
}

type deltaStream struct {
	discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer
	ctx context.Context
	l   *leave
}

func (s *deltaStream) Context() context.Context { return s.ctx }

func (s *deltaStream) Recv() (*discoveryv3.DeltaDiscoveryRequest, error) {
	r, err := s.AggregatedDiscoveryService_DeltaAggregatedResourcesServer.Recv()
	if errors.Is(err, io.EOF) {
		s.l.eof.Store(true)
	}
	return r, err
}
