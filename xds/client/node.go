package client

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"google.golang.org/protobuf/types/known/structpb"

	corev3 "github.com/tinymesh/tinymesh/proto/envoywire/envoy/config/core/v3"
)

// NodeInfo describes a sidecar for NewNode; see docs/xds-conventions.md.
type NodeInfo struct {
	Namespace        string
	Workload         string
	ServiceAccount   string // optional
	Labels           map[string]string
	InboundAddr      string // ip:port, empty when there is no inbound listener
	AppAddr          string // ip:port
	OutboundHTTPAddr string // ip:port, empty when there is no outbound listener
	OutboundIP       string // defaults (on the control plane) to the host of OutboundHTTPAddr
	// Suffix makes node.id unique per process; random when empty.
	Suffix string
}

// NewNode builds the xDS node identifying a sidecar, with the metadata keys
// the control plane reads (docs/xds-conventions.md, "Node").
func NewNode(info NodeInfo) (*corev3.Node, error) {
	if info.Workload == "" || info.Namespace == "" {
		return nil, fmt.Errorf("xds client: node needs a workload and a namespace, got %q and %q", info.Workload, info.Namespace)
	}
	suffix := info.Suffix
	if suffix == "" {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("xds client: node id suffix: %w", err)
		}
		suffix = hex.EncodeToString(b[:])
	}
	labels := make(map[string]any, len(info.Labels))
	for k, v := range info.Labels {
		labels[k] = v
	}
	md := map[string]any{
		"NAMESPACE":     info.Namespace,
		"WORKLOAD_NAME": info.Workload,
		"LABELS":        labels,
	}
	for k, v := range map[string]string{
		"SERVICE_ACCOUNT":    info.ServiceAccount,
		"INBOUND_ADDR":       info.InboundAddr,
		"APP_ADDR":           info.AppAddr,
		"OUTBOUND_HTTP_ADDR": info.OutboundHTTPAddr,
		"OUTBOUND_IP":        info.OutboundIP,
	} {
		if v != "" {
			md[k] = v
		}
	}
	s, err := structpb.NewStruct(md)
	if err != nil {
		return nil, fmt.Errorf("xds client: node metadata: %w", err)
	}
	base := info.Workload + "." + info.Namespace
	return &corev3.Node{Id: base + "~" + suffix, Cluster: base, Metadata: s}, nil
}
