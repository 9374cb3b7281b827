package rbac

import "github.com/tinymesh/tinymesh/dataplane/config"

// HTTP is one HTTP listener's RBAC filter with the per-route overrides of its
// route configuration compiled: the most specific configuration wins (route,
// then virtual host, then the filter), as in Envoy. A nil *HTTP (a listener
// without the filter) allows everything.
type HTTP struct {
	base *Engine
	// Overrides by the config value they belong to; a nil Engine in an entry
	// means the filter is disabled there. Read-only after NewHTTP.
	vhosts map[*config.VirtualHost]*Engine
	routes map[*config.Route]*Engine
}

// NewHTTP compiles the filter f of an HCM whose routes are rc (nil when the
// snapshot lacks them). It returns nil when f is nil: without the filter, per
// route overrides do nothing.
func NewHTTP(f *config.RBACFilter, rc *config.RouteConfig) *HTTP {
	if f == nil {
		return nil
	}
	h := &HTTP{base: Compile(f.Rules)}
	if rc == nil {
		return h
	}
	for _, vh := range rc.VirtualHosts {
		if vh.RBAC != nil {
			if h.vhosts == nil {
				h.vhosts = make(map[*config.VirtualHost]*Engine)
			}
			h.vhosts[vh] = Compile(vh.RBAC.Rules)
		}
		for _, rt := range vh.Routes {
			if rt.RBAC != nil {
				if h.routes == nil {
					h.routes = make(map[*config.Route]*Engine)
				}
				h.routes[rt] = Compile(rt.RBAC.Rules)
			}
		}
	}
	return h
}

// Engine returns the engine for a request routed to vh and rt; either may be
// nil when routing found nothing, and then the less specific levels apply (a
// request without a route is checked against the filter's own rules before
// it gets its 404, as the filter runs before Envoy's router). A nil result
// allows everything.
func (h *HTTP) Engine(vh *config.VirtualHost, rt *config.Route) *Engine {
	if h == nil {
		return nil
	}
	if rt != nil {
		if e, ok := h.routes[rt]; ok {
			return e
		}
	}
	if vh != nil {
		if e, ok := h.vhosts[vh]; ok {
			return e
		}
	}
	return h.base
}
