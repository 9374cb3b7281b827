package translate

import (
	"fmt"
	"net/netip"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/tinymesh/tinymesh/xds/mesh"
)

// Node metadata keys, as fixed in docs/xds-conventions.md.
const (
	MetaNamespace        = "NAMESPACE"
	MetaWorkloadName     = "WORKLOAD_NAME"
	MetaServiceAccount   = "SERVICE_ACCOUNT"
	MetaLabels           = "LABELS"
	MetaInboundAddr      = "INBOUND_ADDR"
	MetaAppAddr          = "APP_ADDR"
	MetaOutboundHTTPAddr = "OUTBOUND_HTTP_ADDR"
	MetaOutboundIP       = "OUTBOUND_IP"
)

// WorkloadFromNode reads a workload from an xDS node's id, cluster and metadata.
// A missing NAMESPACE or WORKLOAD_NAME is taken from node.cluster
// ("<workload>.<namespace>"), then defaults to the default namespace; addresses
// must be literal ip:port (OUTBOUND_IP a literal IP).
func WorkloadFromNode(n *corev3.Node) (mesh.Workload, error) {
	if n.GetId() == "" {
		return mesh.Workload{}, fmt.Errorf("node: id is required")
	}
	md := n.GetMetadata().GetFields()
	str := func(k string) string { return md[k].GetStringValue() }
	w := mesh.Workload{
		NodeID:           n.GetId(),
		Name:             str(MetaWorkloadName),
		Namespace:        str(MetaNamespace),
		ServiceAccount:   str(MetaServiceAccount),
		InboundAddr:      str(MetaInboundAddr),
		AppAddr:          str(MetaAppAddr),
		OutboundHTTPAddr: str(MetaOutboundHTTPAddr),
		OutboundIP:       str(MetaOutboundIP),
		Sidecar:          n.GetUserAgentName() == "meshproxy" || n.GetUserAgentName() == "envoy",
	}
	if name, ns, ok := strings.Cut(n.GetCluster(), "."); ok {
		if w.Name == "" {
			w.Name = name
		}
		if w.Namespace == "" {
			w.Namespace = ns
		}
	}
	if w.Namespace == "" {
		w.Namespace = mesh.DefaultNamespace
	}
	if w.ServiceAccount == "" {
		w.ServiceAccount = w.Name
	}
	if ls := md[MetaLabels].GetStructValue().GetFields(); len(ls) > 0 {
		w.Labels = make(map[string]string, len(ls))
		for k, v := range ls {
			w.Labels[k] = v.GetStringValue()
		}
	}
	for _, a := range []struct{ key, val string }{
		{MetaInboundAddr, w.InboundAddr}, {MetaAppAddr, w.AppAddr}, {MetaOutboundHTTPAddr, w.OutboundHTTPAddr},
	} {
		if a.val == "" {
			continue
		}
		if _, err := netip.ParseAddrPort(a.val); err != nil {
			return mesh.Workload{}, fmt.Errorf("node %q: metadata.%s: %w", n.GetId(), a.key, err)
		}
	}
	if w.OutboundIP != "" {
		if _, err := netip.ParseAddr(w.OutboundIP); err != nil {
			return mesh.Workload{}, fmt.Errorf("node %q: metadata.%s: %w", n.GetId(), MetaOutboundIP, err)
		}
	}
	return w, nil
}
