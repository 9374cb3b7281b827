package mesh

import (
	"cmp"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tinymesh/tinymesh/xds/mesh/v1alpha1"
)

// FieldError is one validation failure, naming where it is: file (when known),
// resource and field path.
type FieldError struct {
	File  string
	Key   Key
	Field string
	Msg   string
}

// Error formats the error as "file: Kind ns/name: field: msg".
func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File + ": ")
	}
	b.WriteString(e.Key.String())
	if e.Field != "" {
		b.WriteString(": " + e.Field)
	}
	b.WriteString(": " + e.Msg)
	return b.String()
}

// Normalize fills defaults (the default namespace) and sorts every list by
// namespace and name, so that translation is deterministic. Call it before
// Validate, while the model is still private to its builder.
func (m *Model) Normalize() {
	normalize(m.Services)
	normalize(m.EndpointSlices)
	normalize(m.HTTPRoutes)
	normalize(m.PeerAuthentications)
	normalize(m.AuthorizationPolicies)
	normalize(m.Telemetries)
	normalize(m.DestinationRules)
}

// normalize gives every resource without a namespace the default one and sorts
// them by namespace, then name.
func normalize[T metav1.Object](items []T) {
	for _, it := range items {
		if it.GetNamespace() == "" {
			it.SetNamespace(DefaultNamespace)
		}
	}
	slices.SortStableFunc(items, func(a, b T) int {
		return cmp.Or(cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName()))
	})
}

// Validate checks the model as a whole and returns every problem found, joined
// (each a *FieldError), or nil.
func (m *Model) Validate() error {
	v := validator{m: m}
	seen := map[Key]bool{}
	dup := func(k Key) {
		if seen[k] {
			v.add(k, "metadata.name", "duplicate resource")
		}
		seen[k] = true
	}
	for _, s := range m.Services {
		k := Key{"Service", s.Namespace, s.Name}
		dup(k)
		v.service(k, s)
	}
	for _, s := range m.EndpointSlices {
		k := Key{"EndpointSlice", s.Namespace, s.Name}
		dup(k)
		v.slice(k, s)
	}
	for _, r := range m.HTTPRoutes {
		k := Key{"HTTPRoute", r.Namespace, r.Name}
		dup(k)
		v.route(k, r)
	}
	wide := map[string]string{} // namespace -> its namespace-wide PeerAuthentication
	for _, p := range m.PeerAuthentications {
		k := Key{v1alpha1.KindPeerAuthentication, p.Namespace, p.Name}
		dup(k)
		v.peerAuthentication(k, p)
		if p.Spec.Selector == nil {
			if other, ok := wide[p.Namespace]; ok {
				v.add(k, "spec.selector", "PeerAuthentication %s/%s already applies to the whole namespace; set a selector or remove one", p.Namespace, other)
			} else {
				wide[p.Namespace] = p.Name
			}
		}
	}
	for _, p := range m.AuthorizationPolicies {
		k := Key{v1alpha1.KindAuthorizationPolicy, p.Namespace, p.Name}
		dup(k)
		v.authorizationPolicy(k, p)
	}
	wide = map[string]string{} // namespace -> its namespace-wide Telemetry
	for _, t := range m.Telemetries {
		k := Key{v1alpha1.KindTelemetry, t.Namespace, t.Name}
		dup(k)
		v.telemetry(k, t)
		if t.Spec.Selector == nil {
			if other, ok := wide[t.Namespace]; ok {
				v.add(k, "spec.selector", "Telemetry %s/%s already applies to the whole namespace; set a selector or remove one", t.Namespace, other)
			} else {
				wide[t.Namespace] = t.Name
			}
		}
	}
	owner := map[string]string{} // "namespace/service" -> the DestinationRule for it
	for _, r := range m.DestinationRules {
		k := Key{v1alpha1.KindDestinationRule, r.Namespace, r.Name}
		dup(k)
		v.destinationRule(k, r, owner) // destinationrule.go
	}
	return errors.Join(v.errs...)
}

type validator struct {
	m    *Model
	errs []error
}

func (v *validator) add(k Key, field, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{File: v.m.Files[k], Key: k, Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) name(k Key, field, name string) {
	v.nameWith(k, field, name, validation.IsDNS1123Subdomain)
}

// label checks names that become one DNS label (Service names, namespaces): a
// dot in them would make Service domains ambiguous.
func (v *validator) label(k Key, field, name string) {
	v.nameWith(k, field, name, validation.IsDNS1035Label)
}

func (v *validator) nameWith(k Key, field, name string, check func(string) []string) {
	if name == "" {
		v.add(k, field, "required")
		return
	}
	if errs := check(name); len(errs) > 0 {
		v.add(k, field, "invalid name %q: %s", name, errs[0])
	}
}

func (v *validator) service(k Key, s *corev1.Service) {
	v.label(k, "metadata.name", s.Name)
	v.label(k, "metadata.namespace", s.Namespace)
	if len(s.Spec.Ports) == 0 {
		v.add(k, "spec.ports", "at least one port is required")
	}
	ports := map[int32]bool{}
	names := map[string]bool{}
	for i := range s.Spec.Ports {
		p := &s.Spec.Ports[i]
		f := fmt.Sprintf("spec.ports[%d]", i)
		if p.Port < 1 || p.Port > 65535 {
			v.add(k, f+".port", "must be in 1..65535, got %d", p.Port)
		}
		if ports[p.Port] {
			v.add(k, f+".port", "duplicate port %d", p.Port)
		}
		ports[p.Port] = true
		if len(s.Spec.Ports) > 1 && p.Name == "" {
			v.add(k, f+".name", "required when a Service has more than one port")
		}
		if p.Name != "" && names[p.Name] {
			v.add(k, f+".name", "duplicate port name %q", p.Name)
		}
		names[p.Name] = true
		if p.TargetPort.IntVal < 0 || p.TargetPort.IntVal > 65535 {
			v.add(k, f+".targetPort", "must be in 1..65535, got %d", p.TargetPort.IntVal)
		}
		if _, ok := PortProtocol(p); !ok {
			v.add(k, f+".appProtocol", "unsupported %q (want http, h2c, http2, grpc or tcp)", *p.AppProtocol)
		}
	}
}

func (v *validator) slice(k Key, s *discoveryv1.EndpointSlice) {
	v.name(k, "metadata.name", s.Name)
	v.name(k, "metadata.namespace", s.Namespace)
	svc := s.Labels[ServiceNameLabel]
	if svc == "" {
		v.add(k, "metadata.labels", "label %s is required", ServiceNameLabel)
	} else if v.m.Service(s.Namespace, svc) == nil {
		v.add(k, "metadata.labels["+ServiceNameLabel+"]", "Service %s/%s not found", s.Namespace, svc)
	}
	if s.AddressType != "" && s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
		v.add(k, "addressType", "unsupported %q (want IPv4 or IPv6)", s.AddressType)
	}
	for i, p := range s.Ports {
		if p.Port == nil || *p.Port < 1 || *p.Port > 65535 {
			v.add(k, fmt.Sprintf("ports[%d].port", i), "must be in 1..65535")
		}
	}
	for i, e := range s.Endpoints {
		if len(e.Addresses) == 0 {
			v.add(k, fmt.Sprintf("endpoints[%d].addresses", i), "at least one address is required")
		}
		for j, a := range e.Addresses {
			if !isIP(a) {
				v.add(k, fmt.Sprintf("endpoints[%d].addresses[%d]", i, j), "%q is not an IP address", a)
			}
		}
	}
}

func (v *validator) route(k Key, r *gwv1.HTTPRoute) {
	v.name(k, "metadata.name", r.Name)
	v.name(k, "metadata.namespace", r.Namespace)
	if len(r.Spec.ParentRefs) == 0 {
		v.add(k, "spec.parentRefs", "at least one parent Service is required (GAMMA)")
	}
	for i, p := range r.Spec.ParentRefs {
		f := fmt.Sprintf("spec.parentRefs[%d]", i)
		if p.Group != nil && *p.Group != "" && *p.Group != "core" {
			v.add(k, f+".group", "must be \"\" (core), got %q", *p.Group)
		}
		if p.Kind == nil || *p.Kind != "Service" {
			v.add(k, f+".kind", "must be Service (GAMMA)")
			continue
		}
		ns := r.Namespace
		if p.Namespace != nil && *p.Namespace != "" {
			ns = string(*p.Namespace)
		}
		svc := v.m.Service(ns, string(p.Name))
		if svc == nil {
			v.add(k, f+".name", "Service %s/%s not found", ns, p.Name)
			continue
		}
		if p.Port != nil && ServicePort(svc, *p.Port) == nil {
			v.add(k, f+".port", "Service %s/%s has no port %d", ns, p.Name, *p.Port)
		}
	}
	if len(r.Spec.Hostnames) > 0 {
		v.add(k, "spec.hostnames", "not supported for Service parents (GAMMA)")
	}
	for i := range r.Spec.Rules {
		v.rule(k, r, fmt.Sprintf("spec.rules[%d]", i), &r.Spec.Rules[i])
	}
}

func (v *validator) rule(k Key, r *gwv1.HTTPRoute, f string, rule *gwv1.HTTPRouteRule) {
	for i, m := range rule.Matches {
		mf := fmt.Sprintf("%s.matches[%d]", f, i)
		if m.Path != nil {
			typ := gwv1.PathMatchPathPrefix
			if m.Path.Type != nil {
				typ = *m.Path.Type
			}
			val := "/"
			if m.Path.Value != nil {
				val = *m.Path.Value
			}
			switch typ {
			case gwv1.PathMatchExact, gwv1.PathMatchPathPrefix:
				if !strings.HasPrefix(val, "/") || strings.ContainsAny(val, "?#") {
					v.add(k, mf+".path.value", "must start with / and contain no ? or #, got %q", val)
				}
			case gwv1.PathMatchRegularExpression:
				if _, err := regexp.Compile(val); err != nil {
					v.add(k, mf+".path.value", "invalid RE2 regular expression: %v", err)
				}
			default:
				v.add(k, mf+".path.type", "unsupported %q", typ)
			}
		}
		for j, h := range m.Headers {
			hf := fmt.Sprintf("%s.headers[%d]", mf, j)
			if h.Name == "" {
				v.add(k, hf+".name", "required")
			}
			if h.Type != nil && *h.Type == gwv1.HeaderMatchRegularExpression {
				if _, err := regexp.Compile(h.Value); err != nil {
					v.add(k, hf+".value", "invalid RE2 regular expression: %v", err)
				}
			} else if h.Type != nil && *h.Type != gwv1.HeaderMatchExact {
				v.add(k, hf+".type", "unsupported %q", *h.Type)
			}
		}
		for j, q := range m.QueryParams {
			qf := fmt.Sprintf("%s.queryParams[%d]", mf, j)
			if q.Name == "" {
				v.add(k, qf+".name", "required")
			}
			if q.Type != nil && *q.Type == gwv1.QueryParamMatchRegularExpression {
				if _, err := regexp.Compile(q.Value); err != nil {
					v.add(k, qf+".value", "invalid RE2 regular expression: %v", err)
				}
			} else if q.Type != nil && *q.Type != gwv1.QueryParamMatchExact {
				v.add(k, qf+".type", "unsupported %q", *q.Type)
			}
		}
		if m.Method != nil && *m.Method == "" {
			v.add(k, mf+".method", "must not be empty")
		}
	}
	for i, fl := range rule.Filters {
		ff := fmt.Sprintf("%s.filters[%d]", f, i)
		switch fl.Type {
		case gwv1.HTTPRouteFilterRequestHeaderModifier:
			if fl.RequestHeaderModifier == nil {
				v.add(k, ff+".requestHeaderModifier", "required for type RequestHeaderModifier")
				continue
			}
			for j, h := range fl.RequestHeaderModifier.Set {
				if h.Name == "" {
					v.add(k, fmt.Sprintf("%s.requestHeaderModifier.set[%d].name", ff, j), "required")
				}
			}
			for j, h := range fl.RequestHeaderModifier.Add {
				if h.Name == "" {
					v.add(k, fmt.Sprintf("%s.requestHeaderModifier.add[%d].name", ff, j), "required")
				}
			}
			for j, h := range fl.RequestHeaderModifier.Remove {
				if h == "" {
					v.add(k, fmt.Sprintf("%s.requestHeaderModifier.remove[%d]", ff, j), "required")
				}
			}
		default:
			v.add(k, ff+".type", "unsupported filter %q (only RequestHeaderModifier)", fl.Type)
		}
	}
	for i, b := range rule.BackendRefs {
		bf := fmt.Sprintf("%s.backendRefs[%d]", f, i)
		if b.Weight != nil && *b.Weight < 0 {
			v.add(k, bf+".weight", "must be >= 0")
		}
		if b.Weight != nil && *b.Weight > 1000000 {
			v.add(k, bf+".weight", "must be <= 1000000")
		}
		if b.Group != nil && *b.Group != "" && *b.Group != "core" {
			v.add(k, bf+".group", "must be \"\" (core), got %q", *b.Group)
		}
		if b.Kind != nil && *b.Kind != "Service" {
			v.add(k, bf+".kind", "must be Service, got %q", *b.Kind)
		}
		if len(b.Filters) > 0 {
			v.add(k, bf+".filters", "not supported")
		}
		if b.Port == nil {
			v.add(k, bf+".port", "required for Service backends")
			continue
		}
		ns := r.Namespace
		if b.Namespace != nil && *b.Namespace != "" {
			ns = string(*b.Namespace)
		}
		svc := v.m.Service(ns, string(b.Name))
		if svc == nil {
			v.add(k, bf+".name", "Service %s/%s not found", ns, b.Name)
			continue
		}
		sp := ServicePort(svc, *b.Port)
		if sp == nil {
			v.add(k, bf+".port", "Service %s/%s has no port %d", ns, b.Name, *b.Port)
		} else if p, _ := PortProtocol(sp); p == TCP {
			v.add(k, bf+".port", "Service %s/%s port %d is tcp; an HTTPRoute needs an HTTP port", ns, b.Name, *b.Port)
		}
	}
	if rule.Timeouts != nil && rule.Timeouts.Request != nil {
		if _, err := ParseDuration(*rule.Timeouts.Request); err != nil {
			v.add(k, f+".timeouts.request", "%v", err)
		}
	}
	if rule.Timeouts != nil && rule.Timeouts.BackendRequest != nil {
		v.add(k, f+".timeouts.backendRequest", "not supported")
	}
	if rule.Retry != nil {
		v.add(k, f+".retry", "not supported")
	}
	if rule.SessionPersistence != nil {
		v.add(k, f+".sessionPersistence", "not supported")
	}
}

// ParseDuration parses a Gateway API duration ("10s", "1h30m", "500ms").
func ParseDuration(d gwv1.Duration) (time.Duration, error) {
	t, err := time.ParseDuration(string(d))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: %w", d, err)
	}
	if t < 0 {
		return 0, fmt.Errorf("invalid duration %q: must be >= 0", d)
	}
	return t, nil
}
