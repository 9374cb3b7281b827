package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestBuildNodeMetadata(t *testing.T) {
	node, err := buildNode(options{
		namespace: "shop", workload: "backend-v2", labels: "app=backend, version=v2",
		inbound: "127.0.0.3:15006", app: "127.0.0.3:8080", outbound: "127.0.0.3:15001",
	})
	if err != nil {
		t.Fatal(err)
	}
	got := node.GetMetadata().AsMap()
	want := map[string]any{
		"NAMESPACE":          "shop",
		"WORKLOAD_NAME":      "backend-v2",
		"SERVICE_ACCOUNT":    "backend-v2",
		"LABELS":             map[string]any{"app": "backend", "version": "v2"},
		"INBOUND_ADDR":       "127.0.0.3:15006",
		"APP_ADDR":           "127.0.0.3:8080",
		"OUTBOUND_HTTP_ADDR": "127.0.0.3:15001",
		"OUTBOUND_IP":        "127.0.0.3",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(node.GetId(), "backend-v2.shop~") || node.GetCluster() != "backend-v2.shop" {
		t.Errorf("id %q cluster %q", node.GetId(), node.GetCluster())
	}
}

func TestBuildNodeRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    options
		want string
	}{
		{"no workload", options{}, "--workload is required"},
		{"bad labels", options{workload: "w", labels: "app"}, "--labels"},
		{"bad address", options{workload: "w", inbound: "nope", app: "127.0.0.1:1"}, "--inbound"},
		{"inbound without app", options{workload: "w", inbound: "127.0.0.1:1"}, "--inbound needs --app"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := buildNode(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("buildNode error = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}
