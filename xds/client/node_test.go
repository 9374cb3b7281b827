package client_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tinymesh/tinymesh/xds/client"
)

func TestNewNode(t *testing.T) {
	n, err := client.NewNode(client.NodeInfo{
		Namespace: "default", Workload: "backend-v1", Labels: map[string]string{"app": "backend", "version": "v1"},
		InboundAddr: "127.0.0.1:15006", AppAddr: "127.0.0.1:8080",
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(n.GetId(), "backend-v1.default~") || len(n.GetId()) <= len("backend-v1.default~") {
		t.Errorf("node id = %q, want backend-v1.default~<suffix>", n.GetId())
	}
	if n.GetCluster() != "backend-v1.default" {
		t.Errorf("node cluster = %q, want %q", n.GetCluster(), "backend-v1.default")
	}
	want := map[string]any{
		"NAMESPACE": "default", "WORKLOAD_NAME": "backend-v1",
		"LABELS":       map[string]any{"app": "backend", "version": "v1"},
		"INBOUND_ADDR": "127.0.0.1:15006", "APP_ADDR": "127.0.0.1:8080",
	}
	if diff := cmp.Diff(want, n.GetMetadata().AsMap()); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}
	if _, err := client.NewNode(client.NodeInfo{Namespace: "default"}); err == nil {
		t.Error("NewNode without workload: got nil error, want one")
	}
}
