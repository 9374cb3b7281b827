package identity

import (
	"errors"
	"testing"
)

func TestWorkloadIDRoundTrip(t *testing.T) {
	want := WorkloadID{TrustDomain: DefaultTrustDomain, Namespace: "default", ServiceAccount: "backend"}
	uri := want.String()
	if uri != "spiffe://cluster.local/ns/default/sa/backend" {
		t.Fatalf("String() = %q", uri)
	}
	got, err := ParseWorkloadID(uri)
	if err != nil || got != want {
		t.Fatalf("ParseWorkloadID(%q) = %+v, %v; want %+v", uri, got, err, want)
	}
}

func TestParseWorkloadIDRejects(t *testing.T) {
	for _, uri := range []string{
		"", "https://cluster.local/ns/a/sa/b", "spiffe://cluster.local/ns/a", "spiffe:///ns/a/sa/b",
		"spiffe://td/ns//sa/b", "spiffe://td/namespace/a/sa/b", "spiffe://td/ns/a/sa/b/extra",
	} {
		if _, err := ParseWorkloadID(uri); !errors.Is(err, ErrNotWorkloadID) {
			t.Errorf("ParseWorkloadID(%q) error = %v, want ErrNotWorkloadID", uri, err)
		}
	}
}
