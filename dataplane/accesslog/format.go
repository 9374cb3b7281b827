// Package accesslog writes one line per finished stream (stream.Info) in a
// format compiled from Envoy's command operators (%RESPONSE_CODE%, ...), as
// text or JSON, to a file or the process's stdout/stderr. It is the last stage
// of the request pipeline, next to stats.
//
// Lines are formatted on the stream's goroutine into a pooled buffer and
// queued to one writer goroutine per file (bounded queue); when the queue is
// full the line is dropped and counted, so a slow disk never blocks a request.
//
// Concurrency: a Formatter is immutable. Set, Writer and Logger methods are
// safe for concurrent use; Set.Close flushes and stops every writer.
package accesslog

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/stream"
)

// Operators lists the command operators supported; xds/resource refuses
// formats with others.
var Operators = []string{
	"START_TIME", "REQ(:METHOD)", "REQ(:AUTHORITY)", "REQ(:PATH)", "PROTOCOL",
	"RESPONSE_CODE", "GRPC_STATUS", "RESPONSE_FLAGS", "DURATION", "BYTES_RECEIVED",
	"BYTES_SENT", "UPSTREAM_HOST", "UPSTREAM_CLUSTER", "ROUTE_NAME",
	"DOWNSTREAM_PEER_URI_SAN", "REQ(X-REQUEST-ID)", "TRACE_ID", "DOWNSTREAM_REMOTE_ADDRESS",
}

type op uint8

const (
	opLiteral op = iota
	opStartTime
	opMethod
	opAuthority
	opPath
	opProtocol
	opResponseCode
	opGRPCStatus
	opResponseFlags
	opDuration
	opBytesReceived
	opBytesSent
	opUpstreamHost
	opUpstreamCluster
	opRouteName
	opPeerURISAN
	opRequestID
	opTraceID
	opRemoteAddress
)

var opNames = map[string]op{
	"START_TIME": opStartTime, "REQ(:METHOD)": opMethod, "REQ(:AUTHORITY)": opAuthority,
	"REQ(:PATH)": opPath, "PROTOCOL": opProtocol, "RESPONSE_CODE": opResponseCode,
	"GRPC_STATUS": opGRPCStatus, "RESPONSE_FLAGS": opResponseFlags, "DURATION": opDuration,
	"BYTES_RECEIVED": opBytesReceived, "BYTES_SENT": opBytesSent, "UPSTREAM_HOST": opUpstreamHost,
	"UPSTREAM_CLUSTER": opUpstreamCluster, "ROUTE_NAME": opRouteName,
	"DOWNSTREAM_PEER_URI_SAN": opPeerURISAN, "REQ(X-REQUEST-ID)": opRequestID,
	"TRACE_ID": opTraceID, "DOWNSTREAM_REMOTE_ADDRESS": opRemoteAddress,
}

func (o op) numeric() bool {
	switch o {
	case opResponseCode, opGRPCStatus, opDuration, opBytesReceived, opBytesSent:
		return true
	}
	return false
}

type piece struct {
	op  op
	lit string
}

// template is a compiled format string.
type template []piece

// DefaultText is the text format when an access log names none (Envoy's
// default, with the operators this proxy has).
const DefaultText = `[%START_TIME%] "%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% ` +
	`%BYTES_RECEIVED% %BYTES_SENT% %DURATION% "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" ` +
	`%UPSTREAM_CLUSTER% %ROUTE_NAME% %DOWNSTREAM_PEER_URI_SAN% %TRACE_ID%` + "\n"

// ErrOperator is wrapped by compile errors for unsupported operators.
var ErrOperator = fmt.Errorf("unsupported command operator")

// compile parses a format string: literal text and %OPERATOR% (case as
// Envoy's; header names in REQ() are case-insensitive), "%%" for '%'.
func compile(s string) (template, error) {
	var t template
	var lit strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			lit.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '%' {
			lit.WriteByte('%')
			i++
			continue
		}
		j := strings.IndexByte(s[i+1:], '%')
		if j < 0 {
			return nil, fmt.Errorf("unterminated command operator at offset %d", i)
		}
		name := s[i+1 : i+1+j]
		key := name
		if strings.HasPrefix(key, "REQ(") {
			key = strings.ToUpper(key)
		}
		o, ok := opNames[key]
		if !ok {
			return nil, fmt.Errorf("%%%s%%: %w (supported: %s)", name, ErrOperator, strings.Join(Operators, ", "))
		}
		if lit.Len() > 0 {
			t = append(t, piece{lit: lit.String()})
			lit.Reset()
		}
		t = append(t, piece{op: o})
		i += j + 1
	}
	if lit.Len() > 0 {
		t = append(t, piece{lit: lit.String()})
	}
	return t, nil
}

// Check reports whether format compiles, for decoders.
func Check(format string) error {
	_, err := compile(format)
	return err
}

// Formatter renders a stream as one access log line.
type Formatter struct {
	text   template
	keys   []string   // JSON: quoted keys with their ':' ("\"k\":")
	values []template // JSON: one per key
}

// NewText compiles a text format; a newline is added when it has none.
func NewText(format string) (*Formatter, error) {
	if format == "" {
		format = DefaultText
	}
	if !strings.HasSuffix(format, "\n") {
		format += "\n"
	}
	t, err := compile(format)
	if err != nil {
		return nil, err
	}
	return &Formatter{text: t}, nil
}

// NewJSON compiles a JSON format: keys in order, each with a format string.
func NewJSON(keys, formats []string) (*Formatter, error) {
	f := &Formatter{}
	for i, k := range keys {
		t, err := compile(formats[i])
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k, err)
		}
		f.keys = append(f.keys, strconv.Quote(k)+":")
		f.values = append(f.values, t)
	}
	return f, nil
}

// Append appends info's line (with its newline) to b.
func (f *Formatter) Append(b []byte, info *stream.Info) []byte {
	if f.keys == nil {
		for _, p := range f.text {
			b = appendPiece(b, p, info, false)
		}
		return b
	}
	b = append(b, '{')
	for i, k := range f.keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, k...)
		t := f.values[i]
		if len(t) == 1 && t[0].op != opLiteral {
			// A lone operator: a JSON number for numeric ones, null when unknown.
			p := t[0]
			if p.op.numeric() {
				if p.op == opGRPCStatus && info.GRPCStatus < 0 || p.op == opResponseCode && info.ResponseCode == 0 {
					b = append(b, "null"...)
				} else {
					b = appendPiece(b, p, info, false)
				}
				continue
			}
			if s := value(p.op, info); s == "" && p.op != opStartTime {
				b = append(b, "null"...)
				continue
			}
		}
		b = append(b, '"')
		for _, p := range t {
			b = appendPiece(b, p, info, true)
		}
		b = append(b, '"')
	}
	return append(b, '}', '\n')
}

// value is a string-valued operator's value; "" for numeric ones.
func value(o op, info *stream.Info) string {
	switch o {
	case opMethod:
		return info.Method
	case opAuthority:
		return info.Authority
	case opPath:
		return info.Path
	case opProtocol:
		return info.Protocol
	case opResponseFlags:
		return info.Flags.String()
	case opUpstreamHost:
		return info.UpstreamHost
	case opUpstreamCluster:
		return info.Cluster
	case opRouteName:
		return info.RouteName
	case opPeerURISAN:
		return info.PeerID
	case opRequestID:
		return info.RequestID
	case opTraceID:
		return info.TraceID
	case opRemoteAddress:
		return info.DownstreamRemote
	}
	return ""
}

func appendPiece(b []byte, p piece, info *stream.Info, quoted bool) []byte {
	switch p.op {
	case opLiteral:
		if quoted {
			return appendJSONString(b, p.lit)
		}
		return append(b, p.lit...)
	case opStartTime:
		return info.Start.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	case opResponseCode:
		return strconv.AppendInt(b, int64(info.ResponseCode), 10)
	case opGRPCStatus:
		if info.GRPCStatus < 0 {
			return append(b, '-')
		}
		return strconv.AppendInt(b, int64(info.GRPCStatus), 10)
	case opDuration:
		return strconv.AppendInt(b, int64(info.Duration/time.Millisecond), 10)
	case opBytesReceived:
		return strconv.AppendInt(b, info.BytesReceived, 10)
	case opBytesSent:
		return strconv.AppendInt(b, info.BytesSent, 10)
	}
	s := value(p.op, info)
	if s == "" {
		return append(b, '-')
	}
	if quoted {
		return appendJSONString(b, s)
	}
	return appendText(b, s)
}

// appendText appends s with control characters replaced, so a request
// field cannot forge a line.
func appendText(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f {
			c = '?'
		}
		b = append(b, c)
	}
	return b
}

// appendJSONString appends s escaped for the inside of a JSON string.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return b
}
