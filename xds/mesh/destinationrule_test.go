package mesh_test

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tinymesh/tinymesh/xds/mesh"
	"github.com/tinymesh/tinymesh/xds/mesh/v1alpha1"
)

func ruleModel(rules ...*v1alpha1.DestinationRule) *mesh.Model {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "backend", Namespace: "default"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "backend"}, Ports: []corev1.ServicePort{{Name: "http", Port: 8080}}}}
	m := &mesh.Model{Services: []*corev1.Service{svc}, DestinationRules: rules,
		Files: map[mesh.Key]string{}}
	for _, r := range rules {
		m.Files[mesh.Key{Kind: v1alpha1.KindDestinationRule, Namespace: r.Namespace, Name: r.Name}] = "rule.yaml"
	}
	return m
}

func rule(name, host string, tp *v1alpha1.TrafficPolicy) *v1alpha1.DestinationRule {
	return &v1alpha1.DestinationRule{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: v1alpha1.DestinationRuleSpec{Host: host, TrafficPolicy: tp}}
}

func TestDestinationRuleLookup(t *testing.T) {
	tp := &v1alpha1.TrafficPolicy{OutlierDetection: &v1alpha1.OutlierDetection{}}
	for _, host := range []string{"backend", "backend.default.svc.cluster.local"} {
		m := ruleModel(rule("r", host, tp))
		if err := m.Validate(); err != nil {
			t.Fatalf("host %q: %v", host, err)
		}
		if got := m.DestinationRule(m.Services[0]); got != tp {
			t.Errorf("host %q: DestinationRule = %v, want the rule's policy", host, got)
		}
	}
	if got := ruleModel().DestinationRule(ruleModel().Services[0]); got != nil {
		t.Errorf("no rule: got %v", got)
	}
}

func TestValidateDestinationRule(t *testing.T) {
	d := func(v time.Duration) *metav1.Duration { return &metav1.Duration{Duration: v} }
	for _, tc := range []struct {
		name  string
		rules []*v1alpha1.DestinationRule
		want  string
	}{
		{"unknown host", []*v1alpha1.DestinationRule{rule("r", "backend.other.svc.cluster.local", &v1alpha1.TrafficPolicy{})},
			`rule.yaml: DestinationRule default/r: spec.host: no Service "backend.other.svc.cluster.local" in namespace default`},
		{"no host", []*v1alpha1.DestinationRule{rule("r", "", &v1alpha1.TrafficPolicy{})}, "DestinationRule default/r: spec.host: required"},
		{"two rules", []*v1alpha1.DestinationRule{rule("a", "backend", &v1alpha1.TrafficPolicy{}), rule("b", "backend.default.svc.cluster.local", &v1alpha1.TrafficPolicy{})},
			"DestinationRule default/b: spec.host: Service default/backend already has DestinationRule a"},
		{"no policy", []*v1alpha1.DestinationRule{rule("r", "backend", nil)}, "spec.trafficPolicy: required"},
		{"zero max requests", []*v1alpha1.DestinationRule{rule("r", "backend", &v1alpha1.TrafficPolicy{ConnectionPool: &v1alpha1.ConnectionPool{
			HTTP: &v1alpha1.HTTPPool{HTTP2MaxRequests: ptr.To[int32](0)}}})}, "spec.trafficPolicy.connectionPool.http.http2MaxRequests: must be at least 1, got 0"},
		{"percent", []*v1alpha1.DestinationRule{rule("r", "backend", &v1alpha1.TrafficPolicy{OutlierDetection: &v1alpha1.OutlierDetection{
			MaxEjectionPercent: ptr.To[int32](101)}})}, "spec.trafficPolicy.outlierDetection.maxEjectionPercent: must be in 0..100, got 101"},
		{"negative interval", []*v1alpha1.DestinationRule{rule("r", "backend", &v1alpha1.TrafficPolicy{OutlierDetection: &v1alpha1.OutlierDetection{
			Interval: d(-time.Second)}})}, "spec.trafficPolicy.outlierDetection.interval: must be a positive duration"},
		{"two checks", []*v1alpha1.DestinationRule{rule("r", "backend", &v1alpha1.TrafficPolicy{HealthCheck: &v1alpha1.HealthCheck{
			HTTP: &v1alpha1.HTTPHealthCheck{Path: "/h"}, TCP: &v1alpha1.TCPHealthCheck{}}})}, "spec.trafficPolicy.healthCheck: exactly one of http, grpc and tcp must be set"},
		{"relative path", []*v1alpha1.DestinationRule{rule("r", "backend", &v1alpha1.TrafficPolicy{HealthCheck: &v1alpha1.HealthCheck{
			HTTP: &v1alpha1.HTTPHealthCheck{Path: "h"}}})}, `spec.trafficPolicy.healthCheck.http.path: must be an absolute path, got "h"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ruleModel(tc.rules...).Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
