package client

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	corev3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/core/v3"
	discoveryv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/service/discovery/v3"
	status "github.com/tinymesh/tinymesh/proto/envoywire/google/rpc"
)

// errorDetail is the google.rpc.Status a NACK carries: INVALID_ARGUMENT with the
// validation errors verbatim.
func errorDetail(err error) *status.Status {
	if err == nil {
		return nil
	}
	return &status.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
}

// The two ADS methods (envoy.service.discovery.v3.AggregatedDiscoveryService),
// called with proto/envoywire's mirrors of their messages.
const (
	methodSotW  = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
	methodDelta = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
)

var adsStream = grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

func openADS[Req, Resp any](ctx context.Context, conn *grpc.ClientConn, method string) (grpc.BidiStreamingClient[Req, Resp], error) {
	s, err := conn.NewStream(ctx, &adsStream, method)
	if err != nil {
		return nil, err
	}
	return &grpc.GenericClientStream[Req, Resp]{ClientStream: s}, nil
}

type sotwStream struct {
	s    grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	node *corev3.Node
}

func newSotWStream(ctx context.Context, conn *grpc.ClientConn, node *corev3.Node) (*sotwStream, error) {
	s, err := openADS[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse](ctx, conn, methodSotW)
	if err != nil {
		return nil, fmt.Errorf("open ADS stream: %w", err)
	}
	return &sotwStream{s: s, node: node}, nil
}

// send builds a SotW request. It always lists the whole subscription of its
// type. As Envoy does, the first request of a type on a new stream carries the
// last accepted version (and no nonce): a restarted control plane that serves the
// same content under the same content-hash version sends nothing new, and one
// that sees a version knows the proxy is reconnecting with config in hand rather
// than starting empty (xds/server keeps such proxies' endpoints during warm-up).
func (s *sotwStream) send(typeURL string, ts *typeState, first bool, nack error, _, _ []string) error {
	req := &discoveryv3.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: ts.names, VersionInfo: ts.version}
	if ts.sent {
		req.ResponseNonce = ts.nonce
	}
	if nack != nil {
		req.ErrorDetail = errorDetail(nack)
	}
	if first {
		req.Node = s.node
	}
	if err := s.s.Send(req); err != nil {
		return fmt.Errorf("send %s request: %w", kind(typeURL), err)
	}
	return nil
}

func (s *sotwStream) closeSend() error { return s.s.CloseSend() }

func (s *sotwStream) recv() (*update, error) {
	r, err := s.s.Recv()
	if err != nil {
		return nil, err
	}
	u := &update{typeURL: r.GetTypeUrl(), version: r.GetVersionInfo(), nonce: r.GetNonce(), full: true}
	for _, a := range r.GetResources() {
		u.resources = append(u.resources, named{any: a})
	}
	return u, nil
}

type deltaStream struct {
	s    grpc.BidiStreamingClient[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]
	node *corev3.Node
}

func newDeltaStream(ctx context.Context, conn *grpc.ClientConn, node *corev3.Node) (*deltaStream, error) {
	s, err := openADS[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse](ctx, conn, methodDelta)
	if err != nil {
		return nil, fmt.Errorf("open delta ADS stream: %w", err)
	}
	return &deltaStream{s: s, node: node}, nil
}

// send builds a delta request: subscription changes in sub/unsub, the response
// nonce for ACK and NACK, and on the first request of a type on a stream the
// versions the client already holds, so the server sends only what changed.
func (s *deltaStream) send(typeURL string, ts *typeState, first bool, nack error, sub, unsub []string) error {
	req := &discoveryv3.DeltaDiscoveryRequest{
		TypeUrl:                  typeURL,
		ResourceNamesSubscribe:   sub,
		ResourceNamesUnsubscribe: unsub,
	}
	if !ts.sent {
		if len(ts.versions) > 0 {
			req.InitialResourceVersions = make(map[string]string, len(ts.versions))
			for n, v := range ts.versions {
				req.InitialResourceVersions[n] = v
			}
		}
	} else if sub == nil && unsub == nil {
		req.ResponseNonce = ts.nonce
	}
	if nack != nil {
		req.ErrorDetail = errorDetail(nack)
	}
	if first {
		req.Node = s.node
	}
	if err := s.s.Send(req); err != nil {
		return fmt.Errorf("send %s delta request: %w", kind(typeURL), err)
	}
	return nil
}

func (s *deltaStream) closeSend() error { return s.s.CloseSend() }

func (s *deltaStream) recv() (*update, error) {
	r, err := s.s.Recv()
	if err != nil {
		return nil, err
	}
	u := &update{typeURL: r.GetTypeUrl(), version: r.GetSystemVersionInfo(), nonce: r.GetNonce(), removed: r.GetRemovedResources()}
	for _, res := range r.GetResources() {
		u.resources = append(u.resources, named{name: res.GetName(), version: res.GetVersion(), any: res.GetResource()})
	}
	return u, nil
}
