package resource_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"

	// The Envoy originals of the mirrors.
	_ "github.com/tinymesh/tinymesh/xds/internal/envoyprotos"
	// The mirror packages xds/resource does not link itself: all are checked.
	_ "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/accesslog/v3"
	wirerouterv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/extensions/filters/http/router/v3"
	_ "github.com/tinymesh/tinymesh/proto/envoywire/envoy/service/discovery/v3"
	_ "github.com/tinymesh/tinymesh/proto/envoywire/google/rpc"
	"github.com/tinymesh/tinymesh/xds/resource"
)

// TestMirrorsMatchEnvoy holds every proto/envoywire message to its Envoy
// original: the same fields under the same names and numbers, with the same
// wire encoding. Only then do NACKs name the field a server really set and do
// decoded values mean what the server meant.
func TestMirrorsMatchEnvoy(t *testing.T) {
	const prefix = "tinymesh.envoywire."
	checked := 0 // messages
	var check func(md protoreflect.MessageDescriptor)
	check = func(md protoreflect.MessageDescriptor) {
		envoyName := protoreflect.FullName(strings.TrimPrefix(string(md.FullName()), prefix))
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(envoyName)
		if err != nil {
			t.Errorf("%s mirrors nothing: %v", md.FullName(), err)
			return
		}
		orig := d.(protoreflect.MessageDescriptor)
		checked++
		if got, want := md.Fields().Len(), orig.Fields().Len(); got != want {
			t.Errorf("%s has %d fields, %s has %d", md.FullName(), got, envoyName, want)
		}
		for i := 0; i < orig.Fields().Len(); i++ {
			of := orig.Fields().Get(i)
			mf := md.Fields().ByNumber(of.Number())
			if mf == nil {
				t.Errorf("%s lacks field %d (%s)", md.FullName(), of.Number(), of.Name())
				continue
			}
			if mf.Name() != of.Name() || mf.JSONName() != of.JSONName() || mf.Cardinality() != of.Cardinality() || mf.IsMap() != of.IsMap() {
				t.Errorf("%s.%s does not match %s.%s", md.FullName(), mf.Name(), envoyName, of.Name())
			}
			if realOneof(mf) != realOneof(of) {
				t.Errorf("%s.%s: oneof differs", md.FullName(), mf.Name())
			}
			mv, ov := mf, of
			if of.IsMap() {
				mv, ov = mf.MapValue(), of.MapValue()
			}
			switch mk, ok := mv.Kind(), ov.Kind(); {
			case mk == ok && mk == protoreflect.MessageKind:
				if got, want := strings.TrimPrefix(string(mv.Message().FullName()), prefix), string(ov.Message().FullName()); got != want {
					t.Errorf("%s.%s is a %s, want %s", md.FullName(), mf.Name(), got, want)
				}
			case mk == ok && mk == protoreflect.EnumKind:
				if got, want := strings.TrimPrefix(string(mv.Enum().FullName()), prefix), string(ov.Enum().FullName()); got != want {
					t.Errorf("%s.%s is a %s, want %s", md.FullName(), mf.Name(), got, want)
				}
			case mk == ok:
			case mk == protoreflect.BytesKind && ok == protoreflect.MessageKind:
				// A message meshproxy does not look into; singular ones keep presence.
				if !of.IsList() && !of.IsMap() && !mf.HasPresence() {
					t.Errorf("%s.%s: bytes for a message must keep presence", md.FullName(), mf.Name())
				}
			case mk == protoreflect.Int32Kind && ok == protoreflect.EnumKind:
			default:
				t.Errorf("%s.%s is %s, %s.%s is %s", md.FullName(), mf.Name(), mk, envoyName, of.Name(), ok)
			}
		}
		for i := 0; i < md.Messages().Len(); i++ {
			if !md.Messages().Get(i).IsMapEntry() {
				check(md.Messages().Get(i))
			}
		}
	}
	protoregistry.GlobalFiles.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		if strings.HasPrefix(string(f.Package()), prefix) {
			for i := 0; i < f.Messages().Len(); i++ {
				check(f.Messages().Get(i))
			}
		}
		return true
	})
	if checked < 100 {
		t.Errorf("checked %d mirrored messages; are the proto/envoywire packages linked?", checked)
	}
}

// realOneof names the oneof fd is in; not the synthetic one of an optional field.
func realOneof(fd protoreflect.FieldDescriptor) protoreflect.Name {
	if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
		return od.Name()
	}
	return ""
}

func TestUnpackChecksTheMessageName(t *testing.T) {
	want := &wirerouterv3.Router{SuppressEnvoyHeaders: true}
	b, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	for url, ok := range map[string]bool{
		"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router":                    true,
		"example.com/y/envoy.extensions.filters.http.router.v3.Router":                          true,
		"envoy.extensions.filters.http.router.v3.Router":                                        true,
		"type.googleapis.com/tinymesh.envoywire.envoy.extensions.filters.http.router.v3.Router": false,
		"type.googleapis.com/envoy.extensions.filters.http.router.v3.Routerx":                   false,
		"": false,
	} {
		var got wirerouterv3.Router
		err := resource.Unpack(&anypb.Any{TypeUrl: url, Value: b}, &got)
		if (err == nil) != ok {
			t.Errorf("Unpack(%q) error = %v, want ok %v", url, err, ok)
		} else if ok && !proto.Equal(&got, want) {
			t.Errorf("Unpack(%q) = %v, want %v", url, &got, want)
		}
	}
}
