package main

import (
	"strings"
	"testing"
)

func TestParseIdentitySource(t *testing.T) {
	// unix:// + a path of n bytes: /ddd.../agent.sock
	socketPath := func(n int) string { return "unix:///" + strings.Repeat("d", n-len("//agent.sock")) + "/agent.sock" }
	for _, tc := range []struct {
		name, in, want, wantErr string
	}{
		{name: "control plane", in: "controlplane", want: ""},
		{name: "unix socket", in: "workload-api:unix:///run/spire/agent.sock", want: "unix:///run/spire/agent.sock"},
		{name: "tcp", in: "workload-api:tcp://127.0.0.1:8081", want: "tcp://127.0.0.1:8081"},
		{name: "empty", in: "", wantErr: `want "controlplane" or "workload-api:unix:///path/to/agent.sock"`},
		{name: "unknown", in: "spire", wantErr: `want "controlplane"`},
		{name: "no address", in: "workload-api:", wantErr: "want a unix:// (or tcp://) URI"},
		{name: "relative path", in: "workload-api:unix://run/agent.sock", wantErr: "absolute socket path"},
		{name: "longest path", in: "workload-api:" + socketPath(107), want: socketPath(107)},
		{name: "path too long", in: "workload-api:" + socketPath(108), wantErr: "socket path is 108 bytes, unix sockets allow at most 107"},
		{name: "http", in: "workload-api:http://127.0.0.1:1", wantErr: "want a unix://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseIdentitySource(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "--identity-source") {
					t.Fatalf("parseIdentitySource(%q) = %q, %v; want an error naming --identity-source and saying %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseIdentitySource(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}
