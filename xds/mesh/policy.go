package mesh

import (
	"cmp"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tinymesh/tinymesh/identity"
	"github.com/tinymesh/tinymesh/xds/mesh/v1alpha1"
)

// DefaultRootNamespace is the namespace whose selector-less PeerAuthentication
// applies mesh-wide, unless configured otherwise (--root-namespace).
const DefaultRootNamespace = "tinymesh-system"

// DefaultMTLSMode applies where no PeerAuthentication does.
const DefaultMTLSMode = v1alpha1.ModeStrict

// SPIFFEID is the workload's SPIFFE ID in trustDomain
// (spiffe://<td>/ns/<namespace>/sa/<service account>). An empty service account
// is the workload name, as in the node metadata (docs/identity.md), or "default"
// without one.
func (w *Workload) SPIFFEID(trustDomain string) string {
	sa := cmp.Or(w.ServiceAccount, w.Name, "default")
	return identity.WorkloadID{TrustDomain: trustDomain, Namespace: w.Namespace, ServiceAccount: sa}.String()
}

// MTLSMode returns the mode of the inbound listener of a workload in namespace
// with labels, following docs/identity.md: a PeerAuthentication with a selector
// matching it in its namespace, then one without a selector there, then one
// without a selector in rootNamespace, then STRICT. Among several matching
// selectors the first in name order wins (the model is sorted by Normalize).
func (m *Model) MTLSMode(namespace string, labels map[string]string, rootNamespace string) v1alpha1.MTLSMode {
	p, ok := scoped(m.PeerAuthentications, func(p *v1alpha1.PeerAuthentication) (string, *v1alpha1.WorkloadSelector, bool) {
		return p.Namespace, p.Spec.Selector, p.Spec.MTLS != nil // nil: rejected by validation
	}, namespace, labels, rootNamespace)
	if !ok {
		return DefaultMTLSMode
	}
	return p.Spec.MTLS.Mode
}

// scoped picks the item of a workload-scoped kind (PeerAuthentication,
// Telemetry) that applies to a workload in namespace with labels: the first
// one in its namespace whose selector matches, else the first one of its
// namespace without a selector, else the first selector-less one in
// rootNamespace (mesh-wide). scope tells an item's namespace and selector,
// and whether it takes part at all.
func scoped[T any](items []T, scope func(T) (string, *v1alpha1.WorkloadSelector, bool),
	namespace string, labels map[string]string, rootNamespace string) (T, bool) {
	var nsWide, root T
	var haveNS, haveRoot bool
	for _, it := range items {
		ns, sel, ok := scope(it)
		switch {
		case !ok:
		case ns == namespace && sel != nil:
			if SelectsLabels(sel.MatchLabels, labels) {
				return it, true
			}
		case ns == namespace && !haveNS:
			nsWide, haveNS = it, true
		case ns == rootNamespace && sel == nil && !haveRoot:
			root, haveRoot = it, true
		}
	}
	if haveNS {
		return nsWide, true
	}
	return root, haveRoot
}

// AuthorizationTargets returns the AuthorizationPolicies whose target Service
// selects the workload, in model order.
func (m *Model) AuthorizationTargets(w *Workload) []*v1alpha1.AuthorizationPolicy {
	var out []*v1alpha1.AuthorizationPolicy
	for _, p := range m.AuthorizationPolicies {
		if svc := m.Service(p.Namespace, p.Spec.TargetRef.Name); svc != nil && Selects(svc, w) {
			out = append(out, p)
		}
	}
	return out
}

// ServiceAccountID resolves a RuleFrom service account ("name", in the policy's
// namespace, or "namespace/name") to its SPIFFE ID.
func ServiceAccountID(trustDomain, policyNamespace, sa string) string {
	ns, name, ok := strings.Cut(sa, "/")
	if !ok {
		ns, name = policyNamespace, sa
	}
	return identity.WorkloadID{TrustDomain: trustDomain, Namespace: ns, ServiceAccount: name}.String()
}

// NamespaceIDPrefix is the prefix of the SPIFFE IDs of every service account of
// a namespace.
func NamespaceIDPrefix(trustDomain, namespace string) string {
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/"
}

func (v *validator) trustDomain() string {
	if v.m.TrustDomain != "" {
		return v.m.TrustDomain
	}
	return identity.DefaultTrustDomain
}

func (v *validator) peerAuthentication(k Key, p *v1alpha1.PeerAuthentication) {
	v.name(k, "metadata.name", p.Name)
	v.label(k, "metadata.namespace", p.Namespace)
	if p.Spec.Selector != nil {
		v.labels(k, "spec.selector.matchLabels", p.Spec.Selector.MatchLabels)
	}
	if p.Spec.MTLS == nil {
		v.add(k, "spec.mtls", "required")
		return
	}
	switch p.Spec.MTLS.Mode {
	case v1alpha1.ModeStrict, v1alpha1.ModePermissive, v1alpha1.ModeDisable:
	case "":
		v.add(k, "spec.mtls.mode", "required (STRICT, PERMISSIVE or DISABLE)")
	default:
		v.add(k, "spec.mtls.mode", "unsupported %q (want STRICT, PERMISSIVE or DISABLE)", p.Spec.MTLS.Mode)
	}
}

func (v *validator) labels(k Key, field string, labels map[string]string) {
	for key, val := range labels {
		if errs := validation.IsQualifiedName(key); len(errs) > 0 {
			v.add(k, field, "invalid label key %q: %s", key, errs[0])
		}
		if errs := validation.IsValidLabelValue(val); len(errs) > 0 {
			v.add(k, field+"["+key+"]", "invalid label value %q: %s", val, errs[0])
		}
	}
}

func (v *validator) authorizationPolicy(k Key, p *v1alpha1.AuthorizationPolicy) {
	v.name(k, "metadata.name", p.Name)
	v.label(k, "metadata.namespace", p.Namespace)
	ref := p.Spec.TargetRef
	if ref.Group != "" && ref.Group != "core" {
		v.add(k, "spec.targetRef.group", "must be \"\" (core), got %q", ref.Group)
	}
	svc := v.m.Service(p.Namespace, ref.Name)
	switch {
	case ref.Kind != "Service":
		v.add(k, "spec.targetRef.kind", "must be Service, got %q", ref.Kind)
		svc = nil
	case ref.Name == "":
		v.add(k, "spec.targetRef.name", "required")
	case svc == nil:
		v.add(k, "spec.targetRef.name", "Service %s/%s not found", p.Namespace, ref.Name)
	}
	for i := range p.Spec.Rules {
		r := &p.Spec.Rules[i]
		f := fmt.Sprintf("spec.rules[%d]", i)
		if r.From != nil {
			v.ruleFrom(k, f+".from", r.From)
		}
		if r.To != nil {
			v.ruleTo(k, f+".to", r.To, svc)
		}
	}
}

func (v *validator) ruleFrom(k Key, f string, from *v1alpha1.RuleFrom) {
	if len(from.SPIFFEIDs)+len(from.ServiceAccounts)+len(from.Namespaces) == 0 {
		v.add(k, f, "at least one of spiffeIDs, serviceAccounts or namespaces is required (omit from to allow any caller)")
	}
	td := v.trustDomain()
	for i, s := range from.SPIFFEIDs {
		ff := fmt.Sprintf("%s.spiffeIDs[%d]", f, i)
		id, err := spiffeid.FromString(s)
		if err != nil {
			v.add(k, ff, "invalid SPIFFE ID %q: %v", s, err)
			continue
		}
		if id.TrustDomain().Name() != td {
			v.add(k, ff, "SPIFFE ID %q is not in the trust domain %q", s, td)
		}
	}
	for i, sa := range from.ServiceAccounts {
		ff := fmt.Sprintf("%s.serviceAccounts[%d]", f, i)
		ns, name, qualified := strings.Cut(sa, "/")
		if !qualified {
			ns, name = "", sa
		}
		if qualified {
			if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
				v.add(k, ff, "invalid namespace in %q: %s", sa, errs[0])
			}
		}
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			v.add(k, ff, "invalid service account %q (want name or namespace/name): %s", sa, errs[0])
		}
	}
	for i, ns := range from.Namespaces {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			v.add(k, fmt.Sprintf("%s.namespaces[%d]", f, i), "invalid namespace %q: %s", ns, errs[0])
		}
	}
}

// ruleTo checks a rule's to; svc is the target Service, nil when the target is
// already reported as invalid.
func (v *validator) ruleTo(k Key, f string, to *v1alpha1.RuleTo, svc *corev1.Service) {
	for i, path := range to.Paths {
		ff := fmt.Sprintf("%s.paths[%d]", f, i)
		switch {
		case !strings.HasPrefix(path, "/"):
			v.add(k, ff, "must start with /, got %q", path)
		case strings.ContainsAny(path, "?#"):
			v.add(k, ff, "must contain no ? or #, got %q", path)
		case strings.Contains(strings.TrimSuffix(path, "*"), "*"):
			v.add(k, ff, "* is only allowed at the end, got %q", path)
		}
	}
	for i, m := range to.Methods {
		if !isMethod(m) {
			v.add(k, fmt.Sprintf("%s.methods[%d]", f, i), "must be an upper-case HTTP method token (GET, POST, ...), got %q", m)
		}
	}
	for i, port := range to.Ports {
		ff := fmt.Sprintf("%s.ports[%d]", f, i)
		if port < 1 || port > 65535 {
			v.add(k, ff, "must be in 1..65535, got %d", port)
			continue
		}
		if svc != nil && ServicePort(svc, port) == nil {
			v.add(k, ff, "Service %s/%s has no port %d", svc.Namespace, svc.Name, port)
		}
	}
}

// isMethod reports whether m is a non-empty RFC 9110 token without lower-case
// letters, as methods are case-sensitive and conventionally upper case.
func isMethod(m string) bool {
	if m == "" {
		return false
	}
	for _, c := range m {
		switch {
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.ContainsRune("!#$%&'*+-.^_`|~", c):
		default:
			return false
		}
	}
	return true
}
