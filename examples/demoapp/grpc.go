package main

import (
	"context"
	"errors"
	"io"

	demov1 "github.com/tinymesh/tinymesh/proto/demo/v1"
)

// demoService implements demo.v1.DemoService. It holds no mutable state, so it
// is safe for concurrent use.
type demoService struct {
	demov1.UnimplementedDemoServiceServer
	id identity
}

// Hello answers with the identity of this workload.
func (d *demoService) Hello(_ context.Context, req *demov1.HelloRequest) (*demov1.HelloResponse, error) {
	name := req.GetName()
	if name == "" {
		name = "world"
	}
	return &demov1.HelloResponse{
		Message:  "hello, " + name,
		Service:  d.id.Service,
		Version:  d.id.Version,
		Hostname: d.id.Hostname,
	}, nil
}

// Chat echoes each message back, numbered, until the client half-closes.
func (d *demoService) Chat(stream demov1.DemoService_ChatServer) error {
	var seq int64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		seq++
		if err := stream.Send(&demov1.ChatResponse{
			Text:     msg.GetText(),
			Service:  d.id.Service,
			Version:  d.id.Version,
			Sequence: seq,
		}); err != nil {
			return err
		}
	}
}
