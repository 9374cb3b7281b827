package translate

import (
	"fmt"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// Consistent checks that r is a complete, closed set: every EDS cluster has its
// load assignment and every route configuration a listener names is present, with
// nothing left over. It runs go-control-plane's Snapshot.Consistent, which does not
// look inside API listeners (proxyless gRPC), so their RDS references are checked
// here as well.
func Consistent(r *Resources) error {
	byType := r.ByType()
	apiRoutes := map[string]bool{}
	for _, l := range r.Listeners {
		if l.GetApiListener() == nil {
			continue
		}
		h := &hcmv3.HttpConnectionManager{}
		if err := l.GetApiListener().GetApiListener().UnmarshalTo(h); err != nil {
			return fmt.Errorf("Listener %q: api_listener: %w", l.Name, err)
		}
		if rds := h.GetRds(); rds != nil {
			apiRoutes[rds.GetRouteConfigName()] = true
		}
	}
	if len(apiRoutes) > 0 {
		// Check the API listeners' routes here and the rest with go-control-plane.
		have := map[string]bool{}
		keep := byType[resource.RouteType][:0:0]
		for _, rc := range r.Routes {
			if apiRoutes[rc.Name] {
				have[rc.Name] = true
				continue
			}
			keep = append(keep, rc)
		}
		for name := range apiRoutes {
			if !have[name] {
				return fmt.Errorf("API listener route configuration %q missing", name)
			}
		}
		byType[resource.RouteType] = keep
	}
	snap, err := cachev3.NewSnapshot("", byType)
	if err != nil {
		return err
	}
	if err := snap.Consistent(); err != nil {
		return err
	}
	return nil
}
