package file

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/tinymesh/tinymesh/xds/mesh"
	"github.com/tinymesh/tinymesh/xds/mesh/v1alpha1"
)

// Decode parses one multi-document YAML file into m, decoding each document by
// apiVersion and kind, strictly (unknown fields are errors). name is the file name
// used in errors and recorded in m.Files. It decodes every document it can and
// returns the errors of the others, joined, each naming file and document.
func Decode(name string, data []byte, m *mesh.Model) error {
	var errs []error
	for i, doc := range splitDocuments(data) {
		if isBlank(doc) {
			continue
		}
		if err := decodeDocument(name, doc, m); err != nil {
			errs = append(errs, fmt.Errorf("%s: document %d: %w", name, i+1, err))
		}
	}
	return errors.Join(errs...)
}

func decodeDocument(file string, doc []byte, m *mesh.Model) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return fmt.Errorf("invalid YAML: %w", err)
	}
	var (
		key  mesh.Key
		meta *metav1.ObjectMeta
	)
	switch gvk := tm.APIVersion + "/" + tm.Kind; gvk {
	case "v1/Service":
		var s corev1.Service
		if err := yaml.UnmarshalStrict(doc, &s); err != nil {
			return fmt.Errorf("Service: %w", err)
		}
		m.Services = append(m.Services, &s)
		key, meta = mesh.Key{Kind: "Service"}, &s.ObjectMeta
	case "discovery.k8s.io/v1/EndpointSlice":
		var s discoveryv1.EndpointSlice
		if err := yaml.UnmarshalStrict(doc, &s); err != nil {
			return fmt.Errorf("EndpointSlice: %w", err)
		}
		m.EndpointSlices = append(m.EndpointSlices, &s)
		key, meta = mesh.Key{Kind: "EndpointSlice"}, &s.ObjectMeta
	case "gateway.networking.k8s.io/v1/HTTPRoute":
		var r gwv1.HTTPRoute
		if err := yaml.UnmarshalStrict(doc, &r); err != nil {
			return fmt.Errorf("HTTPRoute: %w", err)
		}
		m.HTTPRoutes = append(m.HTTPRoutes, &r)
		key, meta = mesh.Key{Kind: "HTTPRoute"}, &r.ObjectMeta
	case v1alpha1.GroupVersion + "/" + v1alpha1.KindPeerAuthentication:
		var p v1alpha1.PeerAuthentication
		if err := yaml.UnmarshalStrict(doc, &p); err != nil {
			return fmt.Errorf("PeerAuthentication: %w", err)
		}
		m.PeerAuthentications = append(m.PeerAuthentications, &p)
		key, meta = mesh.Key{Kind: v1alpha1.KindPeerAuthentication}, &p.ObjectMeta
	case v1alpha1.GroupVersion + "/" + v1alpha1.KindAuthorizationPolicy:
		var p v1alpha1.AuthorizationPolicy
		if err := yaml.UnmarshalStrict(doc, &p); err != nil {
			return fmt.Errorf("AuthorizationPolicy: %w", err)
		}
		m.AuthorizationPolicies = append(m.AuthorizationPolicies, &p)
		key, meta = mesh.Key{Kind: v1alpha1.KindAuthorizationPolicy}, &p.ObjectMeta
	case v1alpha1.GroupVersion + "/" + v1alpha1.KindTelemetry:
		var t v1alpha1.Telemetry
		if err := yaml.UnmarshalStrict(doc, &t); err != nil {
			return fmt.Errorf("Telemetry: %w", err)
		}
		m.Telemetries = append(m.Telemetries, &t)
		key, meta = mesh.Key{Kind: v1alpha1.KindTelemetry}, &t.ObjectMeta
	case v1alpha1.GroupVersion + "/" + v1alpha1.KindDestinationRule:
		var r v1alpha1.DestinationRule
		if err := yaml.UnmarshalStrict(doc, &r); err != nil {
			return fmt.Errorf("DestinationRule: %w", err)
		}
		m.DestinationRules = append(m.DestinationRules, &r)
		key, meta = mesh.Key{Kind: v1alpha1.KindDestinationRule}, &r.ObjectMeta
	default:
		return fmt.Errorf("unsupported apiVersion %q kind %q (want v1 Service, discovery.k8s.io/v1 EndpointSlice, "+
			"gateway.networking.k8s.io/v1 HTTPRoute, or %s PeerAuthentication, AuthorizationPolicy, Telemetry or DestinationRule)", tm.APIVersion, tm.Kind, v1alpha1.GroupVersion)
	}
	// Defaults go in here, before validation, so that errors and the file index
	// name the namespace the resource will live in.
	if meta.Namespace == "" {
		meta.Namespace = mesh.DefaultNamespace
	}
	key.Namespace, key.Name = meta.Namespace, meta.Name
	if m.Files == nil {
		m.Files = map[mesh.Key]string{}
	}
	if _, dup := m.Files[key]; !dup {
		m.Files[key] = file
	}
	return nil
}

// splitDocuments splits a YAML stream at "---" separator lines.
func splitDocuments(data []byte) [][]byte {
	var (
		docs [][]byte
		cur  bytes.Buffer
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "---") && strings.TrimSpace(strings.TrimPrefix(line, "---")) == "" {
			docs = append(docs, bytes.Clone(cur.Bytes()))
			cur.Reset()
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	return append(docs, cur.Bytes())
}

// isBlank reports whether a document holds only whitespace and comments.
func isBlank(doc []byte) bool {
	for line := range strings.SplitSeq(string(doc), "\n") {
		t := strings.TrimSpace(line)
		if t != "" && !strings.HasPrefix(t, "#") {
			return false
		}
	}
	return true
}
