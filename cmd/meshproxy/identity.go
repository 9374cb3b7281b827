package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/tinymesh/tinymesh/identity/svid"
	"github.com/tinymesh/tinymesh/xds/resource"
)

// joinToken returns the token of --join-token or --join-token-file (read
// once), "" when neither is set.
func joinToken(o options) (string, error) {
	switch {
	case o.joinToken != "" && o.joinTokenFile != "":
		return "", errors.New("--join-token and --join-token-file: give one")
	case o.joinTokenFile != "":
		data, err := os.ReadFile(o.joinTokenFile)
		if err != nil {
			return "", fmt.Errorf("--join-token-file: %w", err)
		}
		token := strings.TrimSpace(string(data))
		if token == "" {
			return "", fmt.Errorf("--join-token-file %s: empty", o.joinTokenFile)
		}
		return token, nil
	}
	return strings.TrimSpace(o.joinToken), nil
}

// workloadSPIFFEID is the ID this proxy asks for (docs/identity.md,
// "Identities"); the service account defaults to the workload name as in
// buildNode.
func workloadSPIFFEID(o options) (spiffeid.ID, error) {
	td, err := spiffeid.TrustDomainFromString(o.trustDomain)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("--trust-domain %q: %w", o.trustDomain, err)
	}
	sa := o.serviceAccount
	if sa == "" {
		sa = o.workload
	}
	id, err := spiffeid.FromSegments(td, "ns", o.namespace, "sa", sa)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("SPIFFE ID of --namespace %q and service account %q: %w", o.namespace, sa, err)
	}
	return id, nil
}

// controlPlaneIdentity is the proxy's SVID from the control plane's CA: the
// client that renews it in the background and the keys it generated. A nil
// *controlPlaneIdentity means the proxy runs without an identity, and all its
// methods are no-ops.
type controlPlaneIdentity struct {
	client *svid.Client
	cancel context.CancelFunc
	done   chan struct{} // closed when the renewal loop returned
	failed chan error    // receives the renewal loop's error, if it fails

	connectOnce sync.Once
}

// startIdentity obtains the first SVID with the join token, if one is given,
// and starts renewing it. nodeID must be the node.id the xDS client sends,
// since the control plane serves the certificate to that node. Without a token
// it returns nil, nil. A refused token is an error naming the SPIFFE ID and the
// control plane's reason.
func startIdentity(ctx context.Context, o options, nodeID string, logger *slog.Logger) (*controlPlaneIdentity, error) {
	token, err := joinToken(o)
	if err != nil || token == "" {
		return nil, err
	}
	if o.identitySource != "" && o.identitySource != identityControlPlane {
		return nil, fmt.Errorf("--join-token is for --identity-source %s, not %s", identityControlPlane, o.identitySource)
	}
	id, err := workloadSPIFFEID(o)
	if err != nil {
		return nil, err
	}
	c, err := svid.New(svid.Options{ServerAddr: o.xdsAddr, ID: id, NodeID: nodeID, JoinToken: token, Logger: logger})
	if err != nil {
		return nil, err
	}
	if _, err := c.Fetch(ctx); err != nil {
		c.Close()
		if refused, ok := errors.AsType[*svid.RefusedError](err); ok {
			return nil, fmt.Errorf("join token refused for %s: %s", id, refused.Message)
		}
		return nil, fmt.Errorf("first SVID for %s: %w", id, err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	ci := &controlPlaneIdentity{client: c, cancel: cancel, done: make(chan struct{}), failed: make(chan error, 1)}
	go func() {
		defer close(ci.done)
		if err := c.Run(runCtx); err != nil {
			ci.failed <- err
		}
	}()
	return ci, nil
}

// keys is what the xDS client pairs the "default" secret's chain with; nil
// without an identity.
func (ci *controlPlaneIdentity) keys() resource.KeyFinder {
	if ci == nil {
		return nil
	}
	return ci.client.Keys()
}

// onConnect renews on every ADS stream after the first: a control plane that
// restarted serves this proxy's certificate again only once it issues a new
// one. The first stream needs none, the SVID was just fetched.
func (ci *controlPlaneIdentity) onConnect() func() {
	if ci == nil {
		return nil
	}
	return func() {
		first := false
		ci.connectOnce.Do(func() { first = true })
		if !first {
			ci.client.RenewNow()
		}
	}
}

// renewalFailed receives an error when the SVID expired without renewal; nil
// (never ready) without an identity.
func (ci *controlPlaneIdentity) renewalFailed() <-chan error {
	if ci == nil {
		return nil
	}
	return ci.failed
}

// close stops the renewal loop and waits for it.
func (ci *controlPlaneIdentity) close() {
	if ci == nil {
		return
	}
	ci.cancel()
	<-ci.done
	ci.client.Close()
}
