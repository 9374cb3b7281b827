package client

import (
	_ "embed" // envoy.binpb
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// envoyDescriptors is a FileDescriptorSet of the Envoy protos meshproxy
// decodes, written by xds/internal/wiregen. Embedded data costs no memory
// until read.
//
//go:embed envoy.binpb
var envoyDescriptors []byte

// envoyTypes builds resolvable (dynamic) types for every message in
// envoyDescriptors, for printing received resources whole, fields the
// proto/envoywire mirrors carry as bytes included. It is built per config dump
// and dropped after: the descriptors take about as much memory as an idle
// sidecar's whole heap, for an occasional debugging request.
func envoyTypes() (*protoregistry.Types, error) {
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(envoyDescriptors, &set); err != nil {
		return nil, fmt.Errorf("envoy descriptors: %w", err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		return nil, fmt.Errorf("envoy descriptors: %w", err)
	}
	types := new(protoregistry.Types)
	var register func(protoreflect.MessageDescriptors) error
	register = func(mds protoreflect.MessageDescriptors) error {
		for i := 0; i < mds.Len(); i++ {
			md := mds.Get(i)
			if md.IsMapEntry() {
				continue
			}
			if err := types.RegisterMessage(dynamicpb.NewMessageType(md)); err != nil {
				return err
			}
			if err := register(md.Messages()); err != nil {
				return err
			}
		}
		return nil
	}
	files.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		err = register(f.Messages())
		return err == nil
	})
	if err != nil {
		return nil, fmt.Errorf("envoy descriptors: %w", err)
	}
	return types, nil
}
