package translate

import (
	"fmt"
	"strings"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetworkv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"

	"github.com/tinymesh/tinymesh/xds/mesh"
	"github.com/tinymesh/tinymesh/xds/mesh/v1alpha1"
)

// AuthorizationPolicies become RBAC with action ALLOW on the inbound side of the
// workloads their target Service selects (docs/identity.md). A policy applies to
// the workload, not to one of its names: a caller cannot dodge it by sending
// another Service's authority. Rule ports are Service ports of the target
// Service; the control plane resolves them to the app port (target port) they
// reach, and a rule with ports applies to the virtual hosts routing to one of
// those app ports. So no destination_port is emitted: the inbound listener's
// own port is the sidecar's, not the Service's.

// authorizer holds the policies that govern one node's inbound listener.
type authorizer struct {
	t        *translator
	policies []*v1alpha1.AuthorizationPolicy
}

// policyName is the RBAC policy name of rule i: "<namespace>/<policy>[<i>]".
func policyName(p *v1alpha1.AuthorizationPolicy, i int) string {
	return fmt.Sprintf("%s/%s[%d]", p.Namespace, p.Name, i)
}

// rules returns the RBAC rules for traffic reaching the given app ports (target
// ports); http selects whether HTTP-only conditions (paths, methods) can apply.
// A rule with paths or methods can never match a TCP connection, so it is left
// out there, as is a rule whose ports reach none of appPorts. An empty policy
// map denies everything, as ALLOW with no policy matches nothing.
func (a *authorizer) rules(appPorts map[int32]bool, http bool) *rbacconfigv3.RBAC {
	out := &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_ALLOW, Policies: map[string]*rbacconfigv3.Policy{}}
	for _, p := range a.policies {
		svc := a.t.m.Service(p.Namespace, p.Spec.TargetRef.Name)
		for i := range p.Spec.Rules {
			r := &p.Spec.Rules[i]
			if svc == nil || !reaches(svc, r.To, appPorts) {
				continue
			}
			perm := permission(r.To)
			if perm != nil && !http {
				continue // paths and methods never match a TCP connection
			}
			if perm == nil {
				perm = &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Any{Any: true}}
			}
			out.Policies[policyName(p, i)] = &rbacconfigv3.Policy{
				Permissions: []*rbacconfigv3.Permission{perm},
				Principals:  a.principals(p, r.From),
			}
		}
	}
	return out
}

// reaches reports whether a rule's ports (none: all) reach one of appPorts; svc
// is the policy's target Service.
func reaches(svc *corev1.Service, to *v1alpha1.RuleTo, appPorts map[int32]bool) bool {
	if to == nil || len(to.Ports) == 0 {
		return true
	}
	for _, port := range to.Ports {
		if sp := mesh.ServicePort(svc, port); sp != nil && appPorts[mesh.TargetPort(sp)] {
			return true
		}
	}
	return false
}

// principals are the callers of a rule: any caller without from; otherwise
// authenticated principals, exact for SPIFFE IDs and service accounts and by
// prefix for namespaces.
func (a *authorizer) principals(p *v1alpha1.AuthorizationPolicy, from *v1alpha1.RuleFrom) []*rbacconfigv3.Principal {
	if from == nil {
		return []*rbacconfigv3.Principal{{Identifier: &rbacconfigv3.Principal_Any{Any: true}}}
	}
	var out []*rbacconfigv3.Principal
	add := func(m *matcherv3.StringMatcher) {
		out = append(out, &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Authenticated_{
			Authenticated: &rbacconfigv3.Principal_Authenticated{PrincipalName: m},
		}})
	}
	for _, id := range from.SPIFFEIDs {
		add(exact(id))
	}
	for _, sa := range from.ServiceAccounts {
		add(exact(mesh.ServiceAccountID(a.t.trustDomain, p.Namespace, sa)))
	}
	for _, ns := range from.Namespaces {
		add(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{
			Prefix: mesh.NamespaceIDPrefix(a.t.trustDomain, ns),
		}})
	}
	return out
}

// permission is what a rule allows to be requested: every condition of to
// (paths, methods) must hold, any of each list's entries; nil when to sets no
// HTTP condition.
func permission(to *v1alpha1.RuleTo) *rbacconfigv3.Permission {
	if to == nil {
		return nil
	}
	var conds []*rbacconfigv3.Permission
	var paths []*rbacconfigv3.Permission
	for _, p := range to.Paths {
		m := exact(p)
		if strings.HasSuffix(p, "*") || strings.HasSuffix(p, "/") {
			m = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: strings.TrimSuffix(p, "*")}}
		}
		paths = append(paths, &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_UrlPath{
			UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: m}},
		}})
	}
	if c := anyOf(paths); c != nil {
		conds = append(conds, c)
	}
	var methods []*rbacconfigv3.Permission
	for _, m := range to.Methods {
		methods = append(methods, &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Header{
			Header: &routev3.HeaderMatcher{
				Name:                 ":method",
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact(m)},
			},
		}})
	}
	if c := anyOf(methods); c != nil {
		conds = append(conds, c)
	}
	if len(conds) == 0 {
		return nil
	}
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_AndRules{
		AndRules: &rbacconfigv3.Permission_Set{Rules: conds},
	}}
}

// anyOf is the one permission, or or_rules over several; nil for none.
func anyOf(ps []*rbacconfigv3.Permission) *rbacconfigv3.Permission {
	switch len(ps) {
	case 0:
		return nil
	case 1:
		return ps[0]
	}
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_OrRules{OrRules: &rbacconfigv3.Permission_Set{Rules: ps}}}
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

// httpRBACFilter is the HCM filter; its own rules deny everything, so that a
// virtual host without per-route rules fails closed.
func httpRBACFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{
		Name: wellknown.HTTPRoleBasedAccessControl,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&rbachttpv3.RBAC{
			Rules: &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_ALLOW},
		})},
	}
}

// perRoute is a virtual host's typed_per_filter_config for the RBAC filter.
func perRoute(rules *rbacconfigv3.RBAC) map[string]*anypb.Any {
	return map[string]*anypb.Any{wellknown.HTTPRoleBasedAccessControl: mustAny(&rbachttpv3.RBACPerRoute{
		Rbac: &rbachttpv3.RBAC{Rules: rules},
	})}
}

// networkRBACFilter is the network filter that goes before tcp_proxy.
func networkRBACFilter(statPrefix string, rules *rbacconfigv3.RBAC) *listenerv3.Filter {
	return &listenerv3.Filter{
		Name: wellknown.RoleBasedAccessControl,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&rbacnetworkv3.RBAC{
			StatPrefix: statPrefix, Rules: rules,
		})},
	}
}
