package resource

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// The decoders work on proto/envoywire's mirrors of the Envoy messages
// (xds/internal/wiregen says why). A mirror's full name is its Envoy name
// behind wirePrefix; on the wire, and in every type URL, it is the Envoy
// message.
const (
	wirePrefix    = "tinymesh.envoywire."
	typeURLPrefix = "type.googleapis.com/"
)

// TypeURL is the Envoy type URL of a mirror message, or of any other message.
func TypeURL(m proto.Message) string {
	return typeURLPrefix + strings.TrimPrefix(string(m.ProtoReflect().Descriptor().FullName()), wirePrefix)
}

// Unpack decodes an Any holding the Envoy message that m mirrors. As with
// anypb, only the part of the type URL after its last slash counts.
func Unpack(a *anypb.Any, m proto.Message) error {
	url := a.GetTypeUrl()
	want := TypeURL(m)
	if url[strings.LastIndexByte(url, '/')+1:] != want[len(typeURLPrefix):] {
		return fmt.Errorf("type URL %q, want %q", url, want)
	}
	return proto.Unmarshal(a.GetValue(), m)
}

// Pack wraps a mirror message in an Any under its Envoy type URL.
func Pack(m proto.Message) (*anypb.Any, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &anypb.Any{TypeUrl: TypeURL(m), Value: b}, nil
}

// FromEnvoy returns m as its mirror type T: m itself when it is one, else a
// copy through the wire, for callers holding go-control-plane's messages.
func FromEnvoy[T proto.Message](m proto.Message) (T, error) {
	if t, ok := m.(T); ok {
		return t, nil
	}
	var t T
	t = t.ProtoReflect().New().Interface().(T)
	if got, want := TypeURL(m), TypeURL(t); got != want {
		return t, fmt.Errorf("message %s, want %s", got, want)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return t, err
	}
	return t, proto.Unmarshal(b, t)
}
