package main

import (
	"flag"
	"log/slog"
	"strings"
	"testing"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/tracing"
)

func TestTracingFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string // "" : no error
		wantOn  bool
	}{
		{name: "off by default", args: nil},
		{name: "on", args: []string{"--tracing-endpoint", "127.0.0.1:4318", "--tracing-sampling", "10"}, wantOn: true},
		{name: "url endpoint", args: []string{"--tracing-endpoint", "https://collector.example:4318/v1/traces"}, wantOn: true},
		{name: "sampling without endpoint", args: []string{"--tracing-sampling", "5"}, wantErr: "--tracing-sampling needs --tracing-endpoint"},
		{name: "sampling over 100", args: []string{"--tracing-endpoint", "127.0.0.1:4318", "--tracing-sampling", "150"}, wantErr: "want 0 to 100"},
		{name: "grpc scheme", args: []string{"--tracing-endpoint", "grpc://127.0.0.1:4317"}, wantOn: true},
		{name: "grpc protocol", args: []string{"--tracing-endpoint", "https://collector.example:4317", "--tracing-protocol", "grpc"}, wantOn: true},
		{name: "grpc scheme with http protocol", args: []string{"--tracing-endpoint", "grpc://127.0.0.1:4317", "--tracing-protocol", "http"}, wantErr: "needs --tracing-protocol grpc"},
		{name: "grpc with a path", args: []string{"--tracing-endpoint", "http://127.0.0.1:4317/v1/traces", "--tracing-protocol", "grpc"}, wantErr: "want host:port, grpc://host:port or http(s)://host:port"},
		{name: "unknown protocol", args: []string{"--tracing-endpoint", "127.0.0.1:4317", "--tracing-protocol", "thrift"}, wantErr: `--tracing-protocol "thrift": want http/protobuf or grpc`},
		{name: "protocol without endpoint", args: []string{"--tracing-protocol", "grpc"}, wantErr: "--tracing-protocol needs --tracing-endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("meshproxy", flag.ContinueOnError)
			o := options{workload: "web", namespace: "shop"}
			o.tracing.register(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			tr, closeTracer, err := startTracing(o, "sidecar~web", slog.New(slog.DiscardHandler))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("startTracing(%v) error %v, want one containing %q", tc.args, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("startTracing(%v): %v", tc.args, err)
			}
			defer closeTracer()
			if got := tr != nil; got != tc.wantOn {
				t.Errorf("startTracing(%v): tracer on = %v, want %v", tc.args, got, tc.wantOn)
			}
		})
	}
}

func TestTracingExportOptions(t *testing.T) {
	for _, tc := range []struct {
		endpoint, protocol string
		want               tracing.Options
	}{
		{endpoint: "127.0.0.1:4318", want: tracing.Options{Endpoint: "127.0.0.1:4318"}},
		{endpoint: "https://c:4318/v1/traces", protocol: "http/protobuf", want: tracing.Options{Endpoint: "https://c:4318/v1/traces"}},
		{endpoint: "grpc://c:4317", want: tracing.Options{Protocol: config.TracingGRPC, Endpoint: "c:4317"}},
		{endpoint: "c:4317", protocol: "grpc", want: tracing.Options{Protocol: config.TracingGRPC, Endpoint: "c:4317"}},
		{endpoint: "http://c:4317", protocol: "grpc", want: tracing.Options{Protocol: config.TracingGRPC, Endpoint: "c:4317"}},
		{endpoint: "https://c:4317/", protocol: "grpc", want: tracing.Options{Protocol: config.TracingGRPC, Endpoint: "c:4317", TLS: true}},
	} {
		f := tracingFlags{endpoint: tc.endpoint, protocol: tc.protocol}
		var got tracing.Options
		if err := f.exportOptions(&got); err != nil {
			t.Errorf("exportOptions(%q, %q): %v", tc.endpoint, tc.protocol, err)
			continue
		}
		if got.Protocol != tc.want.Protocol || got.Endpoint != tc.want.Endpoint || got.TLS != tc.want.TLS {
			t.Errorf("exportOptions(%q, %q) = %v %q TLS %v, want %v %q TLS %v", tc.endpoint, tc.protocol,
				got.Protocol, got.Endpoint, got.TLS, tc.want.Protocol, tc.want.Endpoint, tc.want.TLS)
		}
	}
}
