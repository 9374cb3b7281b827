package translate_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tinymesh/tinymesh/xds/mesh"
	"github.com/tinymesh/tinymesh/xds/source/file"
	"github.com/tinymesh/tinymesh/xds/translate"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func loadModel(t testing.TB) *mesh.Model {
	t.Helper()
	m, err := file.Load("testdata/mesh")
	if err != nil {
		t.Fatalf("load testdata/mesh: %v", err)
	}
	return m
}

var (
	frontend = mesh.Workload{
		NodeID: "frontend.default~1", Name: "frontend", Namespace: "default", ServiceAccount: "frontend",
		Labels:      map[string]string{"app": "frontend"},
		InboundAddr: "127.0.0.1:15006", AppAddr: "127.0.0.1:8080",
		OutboundHTTPAddr: "127.0.0.1:15001",
	}
	backendV1 = mesh.Workload{
		NodeID: "backend-v1.default~1", Name: "backend-v1", Namespace: "default", ServiceAccount: "backend",
		Labels:      map[string]string{"app": "backend", "version": "v1"},
		InboundAddr: "127.0.0.2:15006", AppAddr: "127.0.0.2:9090",
	}
	backendV2 = mesh.Workload{
		NodeID: "backend-v2.default~1", Name: "backend-v2", Namespace: "default", ServiceAccount: "backend-v2",
		Labels:      map[string]string{"app": "backend", "version": "v2"},
		InboundAddr: "127.0.0.3:15006", AppAddr: "127.0.0.3:8080",
	}
	db = mesh.Workload{
		NodeID: "db.data~1", Name: "db", Namespace: "data", ServiceAccount: "db",
		Labels:      map[string]string{"app": "db"},
		InboundAddr: "127.0.0.4:15006", AppAddr: "127.0.0.4:5432",
	}
	client = mesh.Workload{NodeID: "client~1", Name: "client", Namespace: "default"}
)

// marshal renders resources as indented protojson; protojson's whitespace is
// deliberately unstable, so it is normalised through encoding/json.
func marshal(t testing.TB, r *translate.Resources) []byte {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteString("{\n")
	section := func(name string, msgs []proto.Message, last bool) {
		buf.WriteString("\"" + name + "\": [")
		for i, m := range msgs {
			b, err := protojson.Marshal(m)
			if err != nil {
				t.Fatalf("protojson: %v", err)
			}
			if i > 0 {
				buf.WriteString(",")
			}
			buf.Write(b)
		}
		buf.WriteString("]")
		if !last {
			buf.WriteString(",")
		}
	}
	var ls, rs, cs, es, ss []proto.Message
	for _, x := range r.Listeners {
		ls = append(ls, x)
	}
	for _, x := range r.Routes {
		rs = append(rs, x)
	}
	for _, x := range r.Clusters {
		cs = append(cs, x)
	}
	for _, x := range r.Endpoints {
		es = append(es, x)
	}
	for _, x := range r.Secrets {
		ss = append(ss, x)
	}
	section("listeners", ls, false)
	section("routes", rs, false)
	section("clusters", cs, false)
	section("endpoints", es, false)
	section("secrets", ss, true)
	buf.WriteString("}")
	var out bytes.Buffer
	if err := json.Indent(&out, bytes.TrimSpace(compact(t, buf.Bytes())), "", "  "); err != nil {
		t.Fatalf("indent: %v", err)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

func compact(t testing.TB, b []byte) []byte {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		t.Fatalf("compact: %v\n%s", err, b)
	}
	return out.Bytes()
}

func consistent(t testing.TB, r *translate.Resources) {
	t.Helper()
	if _, err := cachev3.NewSnapshot("1", r.ByType()); err != nil {
		t.Fatalf("NewSnapshot: %v", err)
	}
	if err := translate.Consistent(r); err != nil {
		t.Fatalf("snapshot not consistent: %v", err)
	}
}

// Fake PEM for the goldens: translation copies it and never parses it.
const (
	bundlePEM = "-----BEGIN CERTIFICATE-----\nUk9PVA==\n-----END CERTIFICATE-----\n"
	chainPEM  = "-----BEGIN CERTIFICATE-----\nTEVBRg==\n-----END CERTIFICATE-----\n"
)

// goldenOptions gives every node the trust bundle and every node but db its
// certificate, so that db shows a node still waiting for its identity.
func goldenOptions(node mesh.Workload) translate.Options {
	o := translate.Options{TrustBundle: []byte(bundlePEM)}
	if node.NodeID != db.NodeID {
		o.Certificate = []byte(chainPEM)
	}
	return o
}

func TestGolden(t *testing.T) {
	m := loadModel(t)
	all := []mesh.Workload{frontend, backendV1, backendV2, db, client}
	for _, tc := range []struct {
		name string
		node mesh.Workload
	}{
		{"frontend", frontend},
		{"backend-v1", backendV1},
		{"backend-v2", backendV2},
		{"db", db},
		{"proxyless", client},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := translate.Translate(m, all, &tc.node, goldenOptions(tc.node))
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			consistent(t, r)
			got := marshal(t, r)
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden (run with -update to create): %v", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
			}
		})
	}
}
