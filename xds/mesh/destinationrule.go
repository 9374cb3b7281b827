package mesh

import (
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tinymesh/tinymesh/xds/mesh/v1alpha1"
)

// DestinationRule returns the traffic policy of clients of svc, or nil. A
// rule applies to the Service its spec.host names in the rule's namespace;
// Validate allows one rule per Service.
func (m *Model) DestinationRule(svc *corev1.Service) *v1alpha1.TrafficPolicy {
	for _, r := range m.DestinationRules {
		if r.Namespace == svc.Namespace && ruleService(r) == svc.Name {
			return r.Spec.TrafficPolicy
		}
	}
	return nil
}

// ruleService is the Service name spec.host names: the name itself, or the
// first label of <name>.<namespace>.svc.cluster.local.
func ruleService(r *v1alpha1.DestinationRule) string {
	if name, ok := strings.CutSuffix(r.Spec.Host, "."+r.Namespace+".svc.cluster.local"); ok {
		return name
	}
	return r.Spec.Host
}

func (v *validator) destinationRule(k Key, r *v1alpha1.DestinationRule, owner map[string]string) {
	v.name(k, "metadata.name", r.Name)
	v.label(k, "metadata.namespace", r.Namespace)
	svc := ruleService(r)
	switch {
	case r.Spec.Host == "":
		v.add(k, "spec.host", "required: a Service name or FQDN in namespace %s", r.Namespace)
	case !v.hasService(r.Namespace, svc):
		v.add(k, "spec.host", "no Service %q in namespace %s (want its name or <name>.%s.svc.cluster.local)", r.Spec.Host, r.Namespace, r.Namespace)
	default:
		if other, ok := owner[r.Namespace+"/"+svc]; ok {
			v.add(k, "spec.host", "Service %s/%s already has DestinationRule %s", r.Namespace, svc, other)
		} else {
			owner[r.Namespace+"/"+svc] = r.Name
		}
	}
	tp := r.Spec.TrafficPolicy
	if tp == nil {
		v.add(k, "spec.trafficPolicy", "required")
		return
	}
	const f = "spec.trafficPolicy"
	nonNeg := func(field string, p *int32, min int32) {
		if p != nil && *p < min {
			v.add(k, field, "must be at least %d, got %d", min, *p)
		}
	}
	positive := func(field string, d *metav1.Duration) {
		if d != nil && d.Duration <= 0 {
			v.add(k, field, "must be a positive duration, got %v", d.Duration)
		}
	}
	if cp := tp.ConnectionPool; cp != nil {
		if t := cp.TCP; t != nil {
			nonNeg(f+".connectionPool.tcp.maxConnections", t.MaxConnections, 1)
			positive(f+".connectionPool.tcp.connectTimeout", t.ConnectTimeout)
		}
		if h := cp.HTTP; h != nil {
			nonNeg(f+".connectionPool.http.http1MaxPendingRequests", h.HTTP1MaxPendingRequests, 1)
			nonNeg(f+".connectionPool.http.http2MaxRequests", h.HTTP2MaxRequests, 1)
			nonNeg(f+".connectionPool.http.maxRetries", h.MaxRetries, 0)
		}
	}
	if od := tp.OutlierDetection; od != nil {
		const g = f + ".outlierDetection"
		nonNeg(g+".consecutive5xxErrors", od.Consecutive5xxErrors, 0)
		nonNeg(g+".consecutiveGatewayErrors", od.ConsecutiveGatewayErrors, 0)
		positive(g+".interval", od.Interval)
		positive(g+".baseEjectionTime", od.BaseEjectionTime)
		if p := od.MaxEjectionPercent; p != nil && (*p < 0 || *p > 100) {
			v.add(k, g+".maxEjectionPercent", "must be in 0..100, got %d", *p)
		}
	}
	if hc := tp.HealthCheck; hc != nil {
		const g = f + ".healthCheck"
		n := 0
		for _, set := range []bool{hc.HTTP != nil, hc.GRPC != nil, hc.TCP != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			v.add(k, g, "exactly one of http, grpc and tcp must be set")
		}
		if hc.HTTP != nil && !strings.HasPrefix(hc.HTTP.Path, "/") {
			v.add(k, g+".http.path", "must be an absolute path, got %q", hc.HTTP.Path)
		}
		positive(g+".interval", hc.Interval)
		positive(g+".timeout", hc.Timeout)
		nonNeg(g+".unhealthyThreshold", hc.UnhealthyThreshold, 1)
		nonNeg(g+".healthyThreshold", hc.HealthyThreshold, 1)
	}
}

func (v *validator) hasService(ns, name string) bool {
	for _, s := range v.m.Services {
		if s.Namespace == ns && s.Name == name {
			return true
		}
	}
	return false
}

// Durations or their defaults, for the translator.
func DurationOr(d *metav1.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.Duration
}
