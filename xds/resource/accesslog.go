package resource

import (
	"sort"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tinymesh/tinymesh/dataplane/accesslog"
	"github.com/tinymesh/tinymesh/dataplane/config"
	accesslogv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/accesslog/v3"
	corev3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/core/v3"
	filev3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/extensions/access_loggers/stream/v3"
	typev3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/type/v3"
)

const (
	typeFileAccessLog   = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
	typeStdoutAccessLog = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
	typeStderrAccessLog = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog"
)

// decodeAccessLogs decodes the access_log of an HCM or a TcpProxy:
// envoy.access_loggers.file, .stdout and .stderr with a log_format (text
// from text_format_source.inline_string, or json_format whose values are
// strings), and at most a runtime_filter with percent_sampled as filter.
// Command operators outside accesslog.Operators are refused.
func decodeAccessLogs(p path, logs []*accesslogv3.AccessLog) ([]config.AccessLog, error) {
	var out []config.AccessLog
	for i, l := range logs {
		lp := p.idx("access_log", i)
		c := config.AccessLog{SamplePerMillion: 1_000_000}
		if f := l.GetFilter(); f != nil {
			rf, ok := f.GetFilterSpecifier().(*accesslogv3.AccessLogFilter_RuntimeFilter)
			if !ok {
				return nil, lp.at("filter").errorf("only runtime_filter (percent_sampled) is supported")
			}
			n, err := perMillion(lp.at("filter.runtime_filter.percent_sampled"), rf.RuntimeFilter.GetPercentSampled())
			if err != nil {
				return nil, err
			}
			c.SamplePerMillion = n
		}
		tc := l.GetTypedConfig()
		if tc == nil {
			return nil, lp.at("typed_config").errorf("must be set")
		}
		cp := lp.at("typed_config")
		var format *corev3.SubstitutionFormatString
		switch tc.GetTypeUrl() {
		case typeFileAccessLog:
			var fl filev3.FileAccessLog
			if err := Unpack(tc, &fl); err != nil {
				return nil, cp.errorf("%v", err)
			}
			if fl.GetPath() == "" {
				return nil, cp.at("path").errorf("must not be empty")
			}
			c.Path = fl.GetPath()
			switch lf := fl.GetAccessLogFormat().(type) {
			case nil:
			case *filev3.FileAccessLog_LogFormat:
				format = lf.LogFormat
			default:
				return nil, cp.errorf("only log_format is supported (not the deprecated format, json_format, typed_json_format)")
			}
		case typeStdoutAccessLog, typeStderrAccessLog:
			c.Path = "/dev/stdout"
			if tc.GetTypeUrl() == typeStderrAccessLog {
				c.Path = "/dev/stderr"
				var sl streamv3.StderrAccessLog
				if err := Unpack(tc, &sl); err != nil {
					return nil, cp.errorf("%v", err)
				}
				format = sl.GetLogFormat()
			} else {
				var sl streamv3.StdoutAccessLog
				if err := Unpack(tc, &sl); err != nil {
					return nil, cp.errorf("%v", err)
				}
				format = sl.GetLogFormat()
			}
		default:
			return nil, cp.errorf("unsupported access logger %s", tc.GetTypeUrl())
		}
		if format != nil {
			if err := decodeLogFormat(cp.at("log_format"), format, &c); err != nil {
				return nil, err
			}
		}
		out = append(out, c)
	}
	return out, nil
}

func decodeLogFormat(p path, f *corev3.SubstitutionFormatString, c *config.AccessLog) error {
	if len(f.GetFormatters()) > 0 {
		return p.at("formatters").errorf("formatter extensions are not supported")
	}
	switch v := f.GetFormat().(type) {
	case *corev3.SubstitutionFormatString_TextFormatSource:
		s, ok := v.TextFormatSource.GetSpecifier().(*corev3.DataSource_InlineString)
		if !ok {
			return p.at("text_format_source").errorf("only inline_string is supported")
		}
		if err := accesslog.Check(s.InlineString); err != nil {
			return p.at("text_format_source.inline_string").errorf("%v", err)
		}
		c.Text = s.InlineString
	case *corev3.SubstitutionFormatString_TextFormat:
		if err := accesslog.Check(v.TextFormat); err != nil {
			return p.at("text_format").errorf("%v", err)
		}
		c.Text = v.TextFormat
	case *corev3.SubstitutionFormatString_JsonFormat:
		fields := v.JsonFormat.GetFields()
		keys := make([]string, 0, len(fields))
		for k := range fields {
			keys = append(keys, k)
		}
		sort.Strings(keys) // a Struct has no order; sorted keys make lines deterministic
		for _, k := range keys {
			sv, ok := fields[k].GetKind().(*structpb.Value_StringValue)
			if !ok {
				return p.at("json_format." + k).errorf("must be a string (nested objects and other values are not supported)")
			}
			if err := accesslog.Check(sv.StringValue); err != nil {
				return p.at("json_format."+k).errorf("%v", err)
			}
			c.JSON = append(c.JSON, config.AccessLogField{Key: k, Format: sv.StringValue})
		}
		if len(c.JSON) == 0 {
			return p.at("json_format").errorf("must have at least one key")
		}
	default:
		return p.errorf("one of text_format_source and json_format is required")
	}
	return nil
}

// perMillion converts a FractionalPercent to parts per million.
func perMillion(p path, f *typev3.FractionalPercent) (uint32, error) {
	if f == nil {
		return 0, p.errorf("must be set")
	}
	n := uint64(f.GetNumerator())
	switch f.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		n *= 10_000
	case typev3.FractionalPercent_TEN_THOUSAND:
		n *= 100
	case typev3.FractionalPercent_MILLION:
	default:
		return 0, p.at("denominator").errorf("unknown denominator %v", f.GetDenominator())
	}
	return uint32(min(n, 1_000_000)), nil
}
