package file_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tinymesh/tinymesh/xds/mesh"
	"github.com/tinymesh/tinymesh/xds/mesh/v1alpha1"
	"github.com/tinymesh/tinymesh/xds/source/file"
)

// TestLoadTelemetry: Telemetry decodes strictly and validates with the file,
// resource and field in errors.
func TestLoadTelemetry(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "telemetry.yaml", `
apiVersion: mesh.tinymesh.io/v1alpha1
kind: Telemetry
metadata: {name: mesh, namespace: tinymesh-system}
spec:
  accessLogging: {format: text, path: /dev/stderr, samplingPercent: 12.5}
---
apiVersion: mesh.tinymesh.io/v1alpha1
kind: Telemetry
metadata: {name: quiet}
spec:
  selector: {matchLabels: {app: backend}}
  accessLogging: {disabled: true}
`)
	m, err := file.Load(dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(m.Telemetries) != 2 {
		t.Fatalf("got %d Telemetries, want 2", len(m.Telemetries))
	}
	// Sorted by namespace: default/quiet first.
	if got := m.Telemetries[0]; got.Namespace != "default" || got.Name != "quiet" || !got.Spec.AccessLogging.Disabled {
		t.Errorf("first Telemetry = %s/%s %+v", got.Namespace, got.Name, got.Spec.AccessLogging)
	}
	a := m.Telemetries[1].Spec.AccessLogging
	if a.Format != v1alpha1.AccessLogText || a.Path != "/dev/stderr" || a.SamplingPercent == nil || *a.SamplingPercent != 12.5 {
		t.Errorf("mesh-wide accessLogging = %+v", a)
	}
	if got, want := m.Files[mesh.Key{Kind: "Telemetry", Namespace: "default", Name: "quiet"}], filepath.Join(dir, "telemetry.yaml"); got != want {
		t.Errorf("file of the Telemetry: got %q, want %q", got, want)
	}

	write(t, dir, "telemetry.yaml", `
apiVersion: mesh.tinymesh.io/v1alpha1
kind: Telemetry
metadata: {name: bad}
spec:
  accessLogging: {format: xml}
`)
	_, err = file.Load(dir)
	var fe *mesh.FieldError
	if !errors.As(err, &fe) || fe.Field != "spec.accessLogging.format" || !strings.HasSuffix(fe.File, "telemetry.yaml") {
		t.Errorf("Load of a bad format: got %v, want a FieldError on spec.accessLogging.format in telemetry.yaml", err)
	}

	write(t, dir, "telemetry.yaml", `
apiVersion: mesh.tinymesh.io/v1alpha1
kind: Telemetry
metadata: {name: typo}
spec:
  accessLoging: {format: json}
`)
	if _, err := file.Load(dir); err == nil || !strings.Contains(err.Error(), "Telemetry") || !strings.Contains(err.Error(), "accessLoging") {
		t.Errorf("Load of an unknown field: got %v, want a strict decode error naming it", err)
	}
}
