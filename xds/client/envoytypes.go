package client

import (
	_ "embed" // envoy.binpb
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/runtime/protoimpl"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// envoyDescriptors holds the Envoy protos' file descriptors, written by
// xds/internal/wiregen (its Descriptors says how). Embedded data costs no
// memory until read.
//
//go:embed envoy.binpb
var envoyDescriptors []byte

// envoyTypes builds resolvable (dynamic) types for every message in
// envoyDescriptors, for printing received resources whole, fields the
// proto/envoywire mirrors carry as bytes included. It is built per config dump
// and dropped after: the descriptors take about as much memory as an idle
// sidecar's whole heap, for an occasional debugging request. It builds them
// with protoimpl.DescBuilder, as generated code does, because protodesc and
// descriptorpb would cost every sidecar 0.45 MB of resident memory from start.
func envoyTypes() (dumpTypes, error) {
	files := new(protoregistry.Files)
	for b := envoyDescriptors; len(b) > 0; {
		var n [5]uint64
		for i := range n {
			v, l := protowire.ConsumeVarint(b)
			if l < 0 {
				return dumpTypes{}, errors.New("envoy descriptors: truncated")
			}
			n[i], b = v, b[l:]
		}
		if n[4] > uint64(len(b)) {
			return dumpTypes{}, errors.New("envoy descriptors: truncated")
		}
		protoimpl.DescBuilder{
			RawDescriptor: b[:n[4]],
			NumEnums:      int32(n[0]),
			NumMessages:   int32(n[1]),
			NumExtensions: int32(n[2]),
			NumServices:   int32(n[3]),
			FileRegistry:  files,
		}.Build()
		b = b[n[4]:]
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
	var err error
	files.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		err = register(f.Messages())
		return err == nil
	})
	if err != nil {
		return dumpTypes{}, fmt.Errorf("envoy descriptors: %w", err)
	}
	return dumpTypes{types}, nil
}

// dumpTypes resolves the types in envoyDescriptors, and any other type URL as
// an empty message: an Any that meshproxy accepted without looking inside, of
// a type it does not know (in typed_filter_metadata, say), prints as its
// "@type" alone instead of failing the whole dump.
type dumpTypes struct{ *protoregistry.Types }

func (d dumpTypes) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	mt, err := d.Types.FindMessageByURL(url)
	if errors.Is(err, protoregistry.NotFound) {
		return (*emptypb.Empty)(nil).ProtoReflect().Type(), nil
	}
	return mt, err
}
