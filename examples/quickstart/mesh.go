package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"time"
)

// joinToken mints a join token with the controlplane CLI, as an operator would.
func joinToken(ctx context.Context, controlplane, dataDir, namespace, serviceAccount string) (string, error) {
	out, err := exec.CommandContext(ctx, controlplane, "token", "create", "--data-dir", dataDir,
		"--namespace", namespace, "--service-account", serviceAccount).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("controlplane token create: %w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return "", fmt.Errorf("controlplane token create: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// pollInterval is how often readiness probes retry. Probing is how we wait for
// another process's event; there is no notification to wait on instead.
const pollInterval = 100 * time.Millisecond

// mesh starts the processes of one layout and waits until it serves.
type mesh struct {
	l    layout
	opts options
	// client probes readiness; keep-alive off so that every probe sees the
	// current listeners, not a connection from before a restart.
	client *http.Client
}

func newMesh(l layout, opts options) *mesh {
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	return &mesh{l: l, opts: opts, client: &http.Client{Transport: tr, Timeout: 2 * time.Second}}
}

// start launches the control plane, then every app and sidecar, prints what it
// started, and returns the entry URL once a request through the whole mesh
// succeeds. It fails when the ready timeout passes, ctx ends or a process exits.
func (m *mesh) start(ctx context.Context, sup *supervisor, stdout io.Writer) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, m.opts.readyTimeout)
	defer cancel()
	bin := func(name string) string { return binPath(m.opts.binDir, name) }

	cp, err := sup.start("controlplane", bin("controlplane"),
		"--xds-addr", m.l.XDS,
		"--monitoring-addr", m.l.Monitoring,
		"--model-dir", m.opts.modelDir,
		"--data-dir", m.opts.dataDir,
		"--log-level", m.opts.logLevel,
	)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(stdout, "started %-18s pid %-7d xds %s  model %s  data %s\n", "controlplane", cp.pid(), m.l.XDS, m.opts.modelDir, m.opts.dataDir)
	// Sidecars would retry, but starting them once xDS listens keeps their logs
	// free of connection errors and readiness fast.
	if err := m.wait(ctx, sup, "controlplane xDS on "+m.l.XDS, func(ctx context.Context) error { return dialOnce(ctx, m.l.XDS) }); err != nil {
		return "", err
	}

	for _, w := range m.l.Workloads {
		appArgs := []string{"--service", w.App, "--version", w.Version, "--http", w.AppAddr, "--log-level", m.opts.logLevel}
		if w.UpstreamHost != "" {
			appArgs = append(appArgs, "--upstream-url", "http://"+w.Outbound, "--upstream-host", w.UpstreamHost)
		}
		app, err := sup.start(w.Name, bin("demoapp"), appArgs...)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(stdout, "started %-18s pid %-7d app %s", w.Name, app.pid(), w.AppAddr)
		if w.UpstreamHost != "" {
			fmt.Fprintf(stdout, "  calls %s via %s", w.UpstreamHost, w.Outbound)
		}
		fmt.Fprintln(stdout)

		// Each sidecar proves who it is once, with a join token minted for its
		// service account, and gets its SVID from the control plane's CA.
		token, err := joinToken(ctx, bin("controlplane"), m.opts.dataDir, "default", w.Name)
		if err != nil {
			return "", err
		}
		proxy, err := sup.start(w.Name+"-proxy", bin("meshproxy"),
			"--join-token", token,
			"--xds", m.l.XDS,
			"--xds-mode", m.opts.xdsMode,
			"--namespace", "default",
			"--workload", w.Name,
			"--labels", w.Labels(),
			"--inbound", w.Inbound,
			"--app", w.AppAddr,
			"--outbound", w.Outbound,
			"--admin", w.Admin,
			"--log-level", m.opts.logLevel,
		)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(stdout, "started %-18s pid %-7d inbound %s -> app %s  outbound %s  admin %s\n",
			w.Name+"-proxy", proxy.pid(), w.Inbound, w.AppAddr, w.Outbound, w.Admin)
	}

	for _, w := range m.l.Workloads {
		if err := m.wait(ctx, sup, w.Name+" app /healthz", m.probeJSON("http://"+w.AppAddr+"/healthz", "", w.App, w.Version)); err != nil {
			return "", err
		}
		if err := m.wait(ctx, sup, w.Name+"-proxy /ready", m.probeStatus("http://"+w.Admin+"/ready")); err != nil {
			return "", err
		}
	}
	// A sidecar is ready once it has a complete config, which may predate the
	// other workloads' endpoints. So check that the entry sidecar can reach
	// every workload of the route's backends by its own Service, then one
	// request through every hop.
	front := m.l.Workloads[0]
	for _, w := range m.l.Workloads[1:] {
		desc := fmt.Sprintf("%s reachable through %s-proxy", w.Name, front.Name)
		if err := m.wait(ctx, sup, desc, m.probeJSON("http://"+front.Outbound+"/healthz", w.Name, w.App, w.Version)); err != nil {
			return "", err
		}
	}
	url := m.l.EntryURL()
	if err := m.wait(ctx, sup, "a request through the mesh to "+url, m.probeEndToEnd(url)); err != nil {
		return "", err
	}
	return url, nil
}

// wait retries probe every pollInterval until it succeeds, ctx ends or a
// process exits; the error then names what was awaited and the last failure.
func (m *mesh) wait(ctx context.Context, sup *supervisor, what string, probe func(context.Context) error) error {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		err := probe(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last error: %v)", what, context.Cause(ctx), err)
		case c := <-sup.exited():
			return fmt.Errorf("waiting for %s: %w", what, c.exitError())
		case <-tick.C:
		}
	}
}

func dialOnce(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

// probeStatus succeeds when GET url answers 200.
func (m *mesh) probeStatus(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		resp, _, err := m.get(ctx, url, "")
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
		}
		return nil
	}
}

// demoReply is the part of demoapp's JSON reply the quickstart looks at.
type demoReply struct {
	Service       string          `json:"service"`
	Version       string          `json:"version"`
	Upstream      json.RawMessage `json:"upstream"`
	UpstreamError string          `json:"upstreamError"`
}

// probeJSON succeeds when GET url (with Host host, if set) answers 200 from the
// demoapp with the given service and version.
func (m *mesh) probeJSON(url, host, service, version string) func(context.Context) error {
	return func(ctx context.Context) error {
		resp, body, err := m.get(ctx, url, host)
		if err != nil {
			return err
		}
		var r demoReply
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &r) != nil || r.Service != service || r.Version != version {
			return fmt.Errorf("GET %s (Host %q): status %d %s, want 200 from %s %s",
				url, host, resp.StatusCode, meshError(resp), service, version)
		}
		return nil
	}
}

// probeEndToEnd succeeds when the entry URL answers 200 with an upstream reply.
func (m *mesh) probeEndToEnd(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		resp, body, err := m.get(ctx, url, "")
		if err != nil {
			return err
		}
		var r demoReply
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &r) != nil || len(r.Upstream) == 0 {
			return fmt.Errorf("GET %s: status %d %s %s", url, resp.StatusCode, meshError(resp), r.UpstreamError)
		}
		return nil
	}
}

func meshError(resp *http.Response) string {
	if reason := resp.Header.Get("X-Meshproxy-Error"); reason != "" {
		return "x-meshproxy-error: " + reason
	}
	return ""
}

func (m *mesh) get(ctx context.Context, url, host string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	if host != "" {
		req.Host = host
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, body, err
}
