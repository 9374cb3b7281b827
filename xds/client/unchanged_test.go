package client_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/tinymesh/tinymesh/xds/client"
	"github.com/tinymesh/tinymesh/xds/xdstest"
)

// TestUnchangedResourcesAreNotReapplied: the client remembers a digest of each
// serialized resource, not the bytes; a response whose resources hash the same
// must still be recognised as no change (ACK, no Apply), and a real change must
// still be applied.
func TestUnchangedResourcesAreNotReapplied(t *testing.T) {
	forModes(t, func(t *testing.T, mode client.Mode) {
		h := start(t, mode, nil)
		h.set("1", world())
		h.waitApply()
		h.waitAllACK(0, "1", world())

		m := h.srv.Mark()
		h.set("2", world()) // same content, new version
		if mode == client.SotW {
			// SotW resends every type with the new version; delta sends
			// nothing for resources whose content did not change.
			h.waitAllACK(m, "2", world())
		}
		h.noApply()

		h.set("3", world("127.0.0.1:9005"))
		got := h.waitApply()
		if d := cmp.Diff(wantWorld("127.0.0.1:9005"), got, ignoreVersion); d != "" {
			t.Errorf("snapshot after an endpoint change (-want +got):\n%s", d)
		}
		h.waitACK(m, xdstest.EndpointType, "3")
	})
}
