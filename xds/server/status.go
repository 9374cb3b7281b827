package server

import (
	"slices"
	"strings"
	"time"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/genproto/googleapis/rpc/status"

	"github.com/tinymesh/tinymesh/xds/mesh"
)

// The server's view of every connected proxy (docs/observability.md, "Control
// plane"), like istioctl proxy-status: per resource type, the version last sent
// on its stream and the version it last ACKed. The response callbacks record
// what is sent, just before it is sent; the request callback matches ACKs and
// NACKs to it by nonce, which both xDS variants echo (a delta response has no
// version of its own, so its system_version_info, the snapshot's version of the
// type, stands in). Everything here is guarded by Server.mu.

// Type states in a ProxyStatus, as istioctl proxy-status prints them.
const (
	StateSynced  = "SYNCED"   // the version last sent is ACKed
	StateStale   = "STALE"    // sent, not yet ACKed nor NACKed
	StateNACKed  = "NACKED"   // the version last sent was NACKed
	StateNotSent = "NOT SENT" // nothing of this type was sent on its stream
)

// ShortTypes are the resource types by their short names, in the order status
// tables print them.
var ShortTypes = []string{"CDS", "LDS", "EDS", "RDS", "SDS"}

var shortType = map[string]string{
	typeCluster: "CDS", typeListener: "LDS", typeEndpoint: "EDS", typeRoute: "RDS", typeSecret: "SDS",
}

// shortTypeName returns the short name of a type URL, or the URL for types a
// snapshot does not hold.
func shortTypeName(typeURL string) string {
	if s, ok := shortType[typeURL]; ok {
		return s
	}
	return typeURL
}

// ProxyStatus is one connected node as the server sees it; it is the JSON of
// /debug/status (a list of them, sorted by node ID).
type ProxyStatus struct {
	NodeID    string `json:"node_id"`
	Workload  string `json:"workload"`
	Namespace string `json:"namespace"`
	// Services the node is an endpoint of, as name.namespace (a node with an
	// inbound address whose labels a Service selects).
	Services []string `json:"services,omitempty"`
	// Variant is the xDS variant of its latest stream: "sotw" or "delta".
	Variant   string `json:"variant"`
	Proxyless bool   `json:"proxyless,omitempty"`
	// Types holds one entry per short type name (ShortTypes), always all five.
	Types map[string]TypeStatus `json:"types"`
	// LastNACK is the latest NACK from this node, even if a later version was
	// ACKed since.
	LastNACK *NACK `json:"last_nack,omitempty"`
	// InSync: something was sent and every type sent is ACKed at the version
	// last sent.
	InSync bool `json:"in_sync"`
}

// TypeStatus is one resource type of a ProxyStatus.
type TypeStatus struct {
	State string `json:"state"`
	Sent  string `json:"sent,omitempty"`  // version last sent
	Acked string `json:"acked,omitempty"` // version last ACKed
}

// NACK is a rejected response.
type NACK struct {
	Type    string    `json:"type"`    // short type name
	Version string    `json:"version"` // the version rejected; empty if unknown
	Message string    `json:"message"` // the proxy's error_detail
	Time    time.Time `json:"time"`
}

// typeState is what was sent and ACKed of one type on a node's streams.
type typeState struct {
	sent   string
	nonce  string    // of the response that sent it
	stream streamKey // that the response went out on
	acked  string
	nacked bool // the version last sent was NACKed
}

// pendingChange is a snapshot set for a node after a change, waiting for the
// node's ACKs; versions are per type URL. need are the types with resources
// (but Secrets, which a proxy with a Workload API identity never asks for):
// the change is in force only once each of them was sent, so that a proxy
// that has so far subscribed to clusters alone is not yet counted.
type pendingChange struct {
	at       time.Time
	versions map[string]string
	need     []string
}

// maxPending bounds a node's unACKed changes; older ones are dropped unobserved.
const maxPending = 32

// reply is what a request says about the response it answers.
type reply struct {
	typeURL string
	nonce   string         // empty on a stream's first request of a type
	detail  *status.Status // set on a NACK
	// version is a SotW request's version_info: the version the proxy has
	// (after a NACK, the one before the rejected one). Delta has none.
	version string
}

// responded records a response about to be sent on key's stream.
func (s *Server) responded(key streamKey, typeURL, version, nonce string) {
	s.metrics.pushes.WithLabelValues(shortTypeName(typeURL)).Inc()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodes[s.streams[key]]
	if n == nil {
		return
	}
	ts := n.typeLocked(typeURL)
	ts.sent, ts.nonce, ts.stream, ts.nacked = version, nonce, key, false
}

// replyLocked records an ACK or NACK from n; for a NACK of the latest
// response of its type it returns the version rejected.
func (s *Server) replyLocked(n *nodeState, key streamKey, r reply) (rejected string) {
	if r.nonce == "" {
		return "" // a subscription, not a reply
	}
	ts := n.types[r.typeURL]
	current := ts != nil && ts.nonce == r.nonce && ts.stream == key
	if r.detail != nil {
		s.metrics.nacks.WithLabelValues(shortTypeName(r.typeURL)).Inc()
		nack := &NACK{Type: shortTypeName(r.typeURL), Message: r.detail.GetMessage(), Time: time.Now()}
		if current {
			nack.Version = ts.sent
			ts.nacked = true
			if !key.delta {
				// A SotW NACK's version_info is the version the proxy kept.
				ts.acked = r.version
			}
		}
		n.lastNACK = nack
		s.log.Warn("xDS NACK", "node", n.w.NodeID, "type", nack.Type, "version", nack.Version, "detail", nack.Message)
		return nack.Version
	}
	if !current {
		return "" // an ACK of an older response; a newer one is on its way
	}
	if key.delta || r.version == ts.sent {
		ts.acked, ts.nacked = ts.sent, false
		s.observeLocked(n)
		return ""
	}
	// A SotW request with the latest nonce but an older version and no
	// error_detail (a proxy changing its subscription after a NACK): it still
	// has that version, and the NACK stands.
	ts.acked = r.version
	return ""
}

func (n *nodeState) typeLocked(typeURL string) *typeState {
	if n.types == nil {
		n.types = map[string]*typeState{}
	}
	ts := n.types[typeURL]
	if ts == nil {
		ts = &typeState{}
		n.types[typeURL] = ts
	}
	return ts
}

// setPending records, before the snapshot is set, that a change at `at`
// produced snap for node id.
func (s *Server) setPending(id string, at time.Time, snap *cachev3.Snapshot) {
	p := pendingChange{at: at, versions: map[string]string{}}
	for _, typ := range []string{typeListener, typeRoute, typeCluster, typeEndpoint, typeSecret} {
		p.versions[typ] = snap.GetVersion(typ)
		if typ != typeSecret && len(snap.GetResources(typ)) > 0 {
			p.need = append(p.need, typ)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodes[id]
	if n == nil {
		return
	}
	if len(n.pending) == maxPending {
		n.pending = slices.Delete(n.pending, 0, 1)
	}
	n.pending = append(n.pending, p)
}

// observeLocked records the push latency of every pending change of n that its
// ACKs now cover: the newest change whose versions n has ACKed for every type
// it was sent, and all changes before it (whose effect that snapshot includes).
func (s *Server) observeLocked(n *nodeState) {
	covered := -1
	for i := len(n.pending) - 1; i >= 0 && covered < 0; i-- {
		if n.ackedAllLocked(n.pending[i]) {
			covered = i
		}
	}
	if covered < 0 {
		return
	}
	now := time.Now()
	for _, p := range n.pending[:covered+1] {
		s.metrics.latency.Observe(now.Sub(p.at).Seconds())
	}
	n.pending = slices.Delete(n.pending, 0, covered+1)
}

// ackedAllLocked reports whether n has ACKed p's version of every type it was
// sent, and was sent every type p needs.
func (n *nodeState) ackedAllLocked(p pendingChange) bool {
	for _, typ := range p.need {
		if ts := n.types[typ]; ts == nil || ts.sent == "" {
			return false
		}
	}
	any := false
	for typ, ts := range n.types {
		if ts.sent == "" {
			continue
		}
		if ts.acked != p.versions[typ] {
			return false
		}
		any = true
	}
	return any
}

// Status returns every connected node's status, sorted by node ID.
func (s *Server) Status() []ProxyStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []ProxyStatus{}
	for _, w := range s.workloadsLocked() {
		n := s.nodes[w.NodeID]
		if n.streams == 0 {
			continue // within its grace, not connected
		}
		ps := ProxyStatus{
			NodeID:    w.NodeID,
			Workload:  w.Name,
			Namespace: w.Namespace,
			Services:  s.servicesLocked(&w),
			Variant:   "sotw",
			Proxyless: w.Proxyless(),
			Types:     map[string]TypeStatus{},
			InSync:    true,
		}
		if n.delta {
			ps.Variant = "delta"
		}
		if n.lastNACK != nil {
			nack := *n.lastNACK
			ps.LastNACK = &nack
		}
		sent := false
		for typ, short := range shortType {
			ts := n.types[typ]
			st := TypeStatus{State: StateNotSent}
			if ts != nil && ts.sent != "" {
				sent = true
				st = TypeStatus{State: StateStale, Sent: ts.sent, Acked: ts.acked}
				switch {
				case ts.nacked:
					st.State = StateNACKed
				case ts.acked == ts.sent:
					st.State = StateSynced
				}
				if st.State != StateSynced {
					ps.InSync = false
				}
			}
			ps.Types[short] = st
		}
		ps.InSync = ps.InSync && sent
		out = append(out, ps)
	}
	return out
}

// servicesLocked lists the Services w is an endpoint of, as name.namespace.
func (s *Server) servicesLocked(w *mesh.Workload) []string {
	if s.model == nil || w.InboundAddr == "" {
		return nil
	}
	var out []string
	for _, svc := range s.model.Services {
		if mesh.Meshed(svc) && mesh.Selects(svc, w) {
			out = append(out, svc.Name+"."+svc.Namespace)
		}
	}
	slices.SortFunc(out, strings.Compare)
	return out
}
