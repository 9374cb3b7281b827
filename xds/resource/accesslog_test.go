package resource_test

import (
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/xds/resource"
)

func anyOf(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func fileLog(t *testing.T, format *corev3.SubstitutionFormatString, filter *accesslogv3.AccessLogFilter) *accesslogv3.AccessLog {
	fl := &filev3.FileAccessLog{Path: "/var/log/access.log"}
	if format != nil {
		fl.AccessLogFormat = &filev3.FileAccessLog_LogFormat{LogFormat: format}
	}
	return &accesslogv3.AccessLog{Name: "envoy.access_loggers.file", Filter: filter,
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: anyOf(t, fl)}}
}

func textFormat(s string) *corev3.SubstitutionFormatString {
	return &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormatSource{
		TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}}}
}

func TestDecodeAccessLog(t *testing.T) {
	jsonFmt, _ := structpb.NewStruct(map[string]any{"status": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%"})
	sampled := &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_RuntimeFilter{RuntimeFilter: &accesslogv3.RuntimeFilter{
		RuntimeKey: "k", PercentSampled: &typev3.FractionalPercent{Numerator: 25, Denominator: typev3.FractionalPercent_HUNDRED}}}}
	l := withHCM(func(h *hcmv3.HttpConnectionManager) {
		h.AccessLog = []*accesslogv3.AccessLog{
			fileLog(t, textFormat("%REQ(:METHOD)% %RESPONSE_CODE%\n"), sampled),
			{Name: "envoy.access_loggers.stdout", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: anyOf(t, &streamv3.StdoutAccessLog{
				AccessLogFormat: &streamv3.StdoutAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
					Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: jsonFmt}}}})}},
		}
	})
	got, err := resource.DecodeListener(l)
	if err != nil {
		t.Fatal(err)
	}
	want := []config.AccessLog{
		{Path: "/var/log/access.log", Text: "%REQ(:METHOD)% %RESPONSE_CODE%\n", SamplePerMillion: 250_000},
		{Path: "/dev/stdout", JSON: []config.AccessLogField{{Key: "flags", Format: "%RESPONSE_FLAGS%"}, {Key: "status", Format: "%RESPONSE_CODE%"}}, SamplePerMillion: 1_000_000},
	}
	if d := cmp.Diff(want, got.Config.HTTP.AccessLogs); d != "" {
		t.Errorf("access logs (-want +got):\n%s", d)
	}

	const q = `Listener "outbound_http": filter_chains[0].filters[0].typed_config.access_log[0]`
	nested, _ := structpb.NewStruct(map[string]any{"a": map[string]any{"b": "%DURATION%"}})
	for _, tc := range []struct {
		name string
		log  *accesslogv3.AccessLog
		want string
	}{
		{"unknown operator", fileLog(t, textFormat("%REQ(USER-AGENT)%"), nil),
			q + ".typed_config.log_format.text_format_source.inline_string: %REQ(USER-AGENT)%: unsupported command operator"},
		{"nested json", fileLog(t, &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: nested}}, nil),
			q + ".typed_config.log_format.json_format.a: must be a string (nested objects and other values are not supported)"},
		{"status filter", fileLog(t, nil, &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{}}),
			q + ".filter: only runtime_filter (percent_sampled) is supported"},
		{"other logger", &accesslogv3.AccessLog{ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: anyOf(t, &structpb.Struct{})}},
			q + ".typed_config: unsupported access logger type.googleapis.com/google.protobuf.Struct"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := withHCM(func(h *hcmv3.HttpConnectionManager) { h.AccessLog = []*accesslogv3.AccessLog{tc.log} })
			_, err := resource.DecodeListener(in)
			if err == nil || len(err.Error()) < len(tc.want) || err.Error()[:len(tc.want)] != tc.want {
				t.Errorf("error:\n got %v\nwant prefix %s", err, tc.want)
			}
		})
	}
}

func TestDecodeEndpointMetadata(t *testing.T) {
	md, _ := structpb.NewStruct(map[string]any{"workload": "backend-v2", "namespace": "default", "version": "v2"})
	le := lbEndpoint("10.0.0.1", 80, 0, 0)
	le.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"tinymesh": md}}
	got, err := resource.DecodeClusterLoadAssignment(&endpointv3.ClusterLoadAssignment{ClusterName: "c",
		Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{le}}}})
	if err != nil {
		t.Fatal(err)
	}
	want := []config.Endpoint{{Address: "10.0.0.1:80", Weight: 1, Workload: "backend-v2", Namespace: "default", Version: "v2"}}
	if d := cmp.Diff(want, got.Endpoints); d != "" {
		t.Errorf("endpoints (-want +got):\n%s", d)
	}
	bad, _ := structpb.NewStruct(map[string]any{"version": 2.0})
	le.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"tinymesh": bad}}
	checkDecodeError(t, "DecodeClusterLoadAssignment", resource.DecodeClusterLoadAssignment, &endpointv3.ClusterLoadAssignment{ClusterName: "c",
		Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{le}}}},
		`ClusterLoadAssignment "c": endpoints[0].lb_endpoints[0].metadata.filter_metadata["tinymesh"].version: must be a string`)
}
