package main

import (
	"net"
	"strconv"
)

// portSpan is how many ports above --base-port the layout uses.
const portSpan = 40

// layout is every address the quickstart uses. All are on 127.0.0.1 at fixed
// offsets from --base-port, so they can be documented and typed by hand:
//
//	base+0             controlplane xDS (ADS)
//	base+1             controlplane monitoring: /metrics, /debug/status
//	base+10 .. base+13 frontend:   sidecar inbound, app, sidecar outbound, sidecar admin
//	base+20 .. base+23 backend-v1: same order
//	base+30 .. base+33 backend-v2: same order
type layout struct {
	XDS        string
	Monitoring string
	Workloads  []workload
}

// workload is one demo app and its sidecar.
type workload struct {
	Name    string // workload name, also the meshproxy --workload flag
	App     string // app label (the Service selector), demoapp --service
	Version string // version label, demoapp --version
	// UpstreamHost is the Service the app calls through its sidecar; empty for
	// workloads that call nothing.
	UpstreamHost string

	Inbound  string // sidecar inbound listener: the workload's endpoint in the mesh
	AppAddr  string // demoapp HTTP (also h2c and gRPC)
	Outbound string // sidecar outbound HTTP listener the app sends to
	Admin    string // sidecar admin: /ready, /config_dump
}

// Labels is the meshproxy --labels value.
func (w workload) Labels() string { return "app=" + w.App + ",version=" + w.Version }

func layoutAt(base int) layout {
	addr := func(off int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(base+off)) }
	wl := func(block int, name, app, version, upstream string) workload {
		off := block * 10
		return workload{
			Name: name, App: app, Version: version, UpstreamHost: upstream,
			Inbound: addr(off), AppAddr: addr(off + 1), Outbound: addr(off + 2), Admin: addr(off + 3),
		}
	}
	return layout{
		XDS:        addr(0),
		Monitoring: addr(1),
		Workloads: []workload{
			wl(1, "frontend", "frontend", "v1", "backend"),
			wl(2, "backend-v1", "backend", "v1", ""),
			wl(3, "backend-v2", "backend", "v2", ""),
		},
	}
}

// EntryURL is where users send requests: the frontend sidecar's inbound
// listener, so that every hop goes through the mesh.
func (l layout) EntryURL() string { return "http://" + l.Workloads[0].Inbound + "/" }
