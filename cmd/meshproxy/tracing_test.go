package main

import (
	"flag"
	"log/slog"
	"strings"
	"testing"
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
