package translate

import (
	"math"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tinymesh/tinymesh/xds/mesh/v1alpha1"
)

// Access logger names (Envoy's extension names).
const (
	fileAccessLogName   = "envoy.access_loggers.file"
	stdoutAccessLogName = "envoy.access_loggers.stdout"
	stderrAccessLogName = "envoy.access_loggers.stderr"
	// samplingRuntimeKey names the runtime_filter; meshproxy has no runtime, so
	// only percent_sampled counts.
	samplingRuntimeKey = "tinymesh.access_log.sampling"
)

// accessLogJSON is the JSON line of a Telemetry with format json: the fields
// docs/observability.md lists, with Envoy's command operators (those
// dataplane/accesslog supports).
var accessLogJSON = map[string]string{
	"start_time":                "%START_TIME%",
	"method":                    "%REQ(:METHOD)%",
	"authority":                 "%REQ(:AUTHORITY)%",
	"path":                      "%REQ(:PATH)%",
	"protocol":                  "%PROTOCOL%",
	"response_code":             "%RESPONSE_CODE%",
	"grpc_status":               "%GRPC_STATUS%",
	"response_flags":            "%RESPONSE_FLAGS%",
	"duration":                  "%DURATION%",
	"bytes_received":            "%BYTES_RECEIVED%",
	"bytes_sent":                "%BYTES_SENT%",
	"upstream_host":             "%UPSTREAM_HOST%",
	"upstream_cluster":          "%UPSTREAM_CLUSTER%",
	"route_name":                "%ROUTE_NAME%",
	"downstream_peer_uri_san":   "%DOWNSTREAM_PEER_URI_SAN%",
	"downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
	"request_id":                "%REQ(X-REQUEST-ID)%",
	"trace_id":                  "%TRACE_ID%",
}

// accessLogText is the line of a Telemetry with format text: Envoy's default
// format's order, with the mesh's fields added.
const accessLogText = `[%START_TIME%] "%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL%" %RESPONSE_CODE% ` +
	`%GRPC_STATUS% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "%REQ(:AUTHORITY)%" ` +
	`"%REQ(X-REQUEST-ID)%" "%TRACE_ID%" "%UPSTREAM_HOST%" "%UPSTREAM_CLUSTER%" "%ROUTE_NAME%" ` +
	`"%DOWNSTREAM_PEER_URI_SAN%" "%DOWNSTREAM_REMOTE_ADDRESS%"` + "\n"

// accessLogs returns the access_log of every listener of the node (HCM and
// TcpProxy alike) from the Telemetry that applies to it, or nil.
func (t *translator) accessLogs() []*accesslogv3.AccessLog {
	a := t.m.AccessLogging(t.node.Namespace, t.node.Labels, t.rootNamespace)
	if a == nil {
		return nil
	}
	format := &corev3.SubstitutionFormatString{}
	if a.Format == v1alpha1.AccessLogText {
		format.Format = &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
			Specifier: &corev3.DataSource_InlineString{InlineString: accessLogText},
		}}
	} else {
		fields := make(map[string]*structpb.Value, len(accessLogJSON))
		for k, v := range accessLogJSON {
			fields[k] = structpb.NewStringValue(v)
		}
		format.Format = &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: &structpb.Struct{Fields: fields}}
	}
	var (
		name   string
		config proto.Message
	)
	switch a.Path {
	case "", v1alpha1.AccessLogStdout:
		name, config = stdoutAccessLogName, &streamv3.StdoutAccessLog{
			AccessLogFormat: &streamv3.StdoutAccessLog_LogFormat{LogFormat: format}}
	case v1alpha1.AccessLogStderr:
		name, config = stderrAccessLogName, &streamv3.StderrAccessLog{
			AccessLogFormat: &streamv3.StderrAccessLog_LogFormat{LogFormat: format}}
	default:
		name, config = fileAccessLogName, &filev3.FileAccessLog{Path: a.Path,
			AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: format}}
	}
	l := &accesslogv3.AccessLog{Name: name, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(config)}}
	if p := a.SamplingPercent; p != nil && *p < 100 {
		// Parts per million: validation allows four decimals of a percent.
		l.Filter = &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_RuntimeFilter{
			RuntimeFilter: &accesslogv3.RuntimeFilter{
				RuntimeKey: samplingRuntimeKey,
				PercentSampled: &typev3.FractionalPercent{
					Numerator:   uint32(math.Round(*p * 10_000)),
					Denominator: typev3.FractionalPercent_MILLION,
				},
			},
		}}
	}
	return []*accesslogv3.AccessLog{l}
}
