package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/tinymesh/tinymesh/identity/workloadapi"
	"github.com/tinymesh/tinymesh/xds/client"
)

// Values of --identity-source (docs/identity.md, Delivery).
const (
	identityControlPlane = "controlplane"
	workloadAPIPrefix    = "workload-api:"
)

// maxSocketPath is the longest unix socket path Linux accepts (sun_path holds
// 108 bytes with the terminating NUL).
const maxSocketPath = 107

// identitySourceUsage documents --identity-source.
const identitySourceUsage = `where the proxy's certificate and trust bundle come from: "controlplane" (SDS from the control plane's CA) or "workload-api:unix:///path/to/agent.sock" (a SPIFFE Workload API such as a SPIRE agent's; the control plane's default and ROOTCA secrets are then not used)`

// parseIdentitySource checks --identity-source and returns the Workload API
// address it names, or "" for the control plane.
func parseIdentitySource(v string) (string, error) {
	if v == identityControlPlane {
		return "", nil
	}
	addr, ok := strings.CutPrefix(v, workloadAPIPrefix)
	if !ok {
		return "", fmt.Errorf("--identity-source %q: want %q or %q", v, identityControlPlane, workloadAPIPrefix+"unix:///path/to/agent.sock")
	}
	u, err := url.Parse(addr)
	if err != nil {
		return "", fmt.Errorf("--identity-source %q: address: %w", v, err)
	}
	switch u.Scheme {
	case "unix":
		if u.Host != "" || !strings.HasPrefix(u.Path, "/") {
			return "", fmt.Errorf("--identity-source %q: want an absolute socket path, unix:///path/to/agent.sock", v)
		}
		if len(u.Path) > maxSocketPath {
			return "", fmt.Errorf("--identity-source %q: socket path is %d bytes, unix sockets allow at most %d", v, len(u.Path), maxSocketPath)
		}
	case "tcp":
	default:
		return "", fmt.Errorf("--identity-source %q: address: want a unix:// (or tcp://) URI", v)
	}
	return addr, nil
}

// The Workload API source is the xDS client's provider of local secrets.
var _ client.LocalSecrets = (*workloadapi.Source)(nil)

// openIdentitySource opens what --identity-source names. For the control
// plane it returns nil secrets (the proxy takes them over SDS); for a
// Workload API, a source that already has the proxy's SVID. The returned
// close function is never nil.
func openIdentitySource(ctx context.Context, o options, logger *slog.Logger) (client.LocalSecrets, func(), error) {
	addr, err := parseIdentitySource(o.identitySource)
	if err != nil || addr == "" {
		return nil, func() {}, err
	}
	// Checked here too (startIdentity does), so that the mistake shows before
	// the wait for an SVID rather than after it.
	if o.joinToken != "" || o.joinTokenFile != "" {
		return nil, func() {}, fmt.Errorf("--join-token is for --identity-source %s, not %s", identityControlPlane, o.identitySource)
	}
	want, err := workloadSPIFFEID(o)
	if err != nil {
		return nil, func() {}, err
	}
	src, err := workloadapi.New(ctx, workloadapi.Options{Addr: addr, Logger: logger})
	if err != nil {
		return nil, func() {}, fmt.Errorf("--identity-source %s: %w", o.identitySource, err)
	}
	// Callers of this workload expect the SPIFFE ID the control plane derives
	// from its namespace and service account (docs/identity.md: their SAN
	// matchers), and authorization policies name it. Another ID is only a
	// warning: the site's SPIRE entries may be about to change, and this
	// proxy's own outbound traffic works regardless.
	if got := src.ID(); got != want.String() {
		logger.Warn("the Workload API's SVID does not name this workload; its callers will refuse it",
			"spiffe_id", got, "want", want.String())
	}
	return src, func() { _ = src.Close() }, nil
}
