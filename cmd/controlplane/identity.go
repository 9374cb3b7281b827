package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/tinymesh/tinymesh/identity/ca"
	"github.com/tinymesh/tinymesh/identity/jointoken"
	identityv1 "github.com/tinymesh/tinymesh/proto/identity/v1"
	"github.com/tinymesh/tinymesh/xds/server"
)

// identitySettings are the checked identity settings of the server.
type identitySettings struct {
	trustDomain spiffeid.TrustDomain
	svidTTL     time.Duration
	ca          ca.Options
}

// identityConfig checks the identity settings.
func identityConfig(s settings) (identitySettings, error) {
	td, err := spiffeid.TrustDomainFromString(s.TrustDomain)
	if err != nil {
		return identitySettings{}, fmt.Errorf("invalid trust domain %q: %w", s.TrustDomain, err)
	}
	ttl, err := time.ParseDuration(s.SVIDTTL)
	if err != nil || ttl < ca.MinSVIDTTL {
		return identitySettings{}, fmt.Errorf("invalid SVID TTL %q: want a duration of at least %s", s.SVIDTTL, ca.MinSVIDTTL)
	}
	if s.DataDir == "" {
		return identitySettings{}, errors.New("a data directory is required (--data-dir)")
	}
	if (s.CACert == "") != (s.CAKey == "") {
		return identitySettings{}, errors.New("--ca-cert and --ca-key go together")
	}
	if s.CABundle != "" && s.CACert == "" {
		return identitySettings{}, errors.New("--ca-bundle needs --ca-cert and --ca-key")
	}
	return identitySettings{trustDomain: td, svidTTL: ttl, ca: ca.Options{
		TrustDomain: td,
		DataDir:     s.DataDir,
		CertFile:    s.CACert,
		KeyFile:     s.CAKey,
		BundleFile:  s.CABundle,
	}}, nil
}

// startCA loads (or creates) the CA and the join-token store, registers the
// CertificateService on srv and gives srv the trust bundle; the returned CA's
// Run keeps the bundle current. Call before srv.Serve.
func startCA(idc identitySettings, srv *server.Server, mon *monitoring, log *slog.Logger) (*ca.CA, error) {
	opts := idc.ca
	opts.Logger = log
	opts.OnBundleChange = srv.SetTrustBundle
	authority, err := ca.New(opts)
	if err != nil {
		return nil, err
	}
	tokens, err := jointoken.Open(opts.DataDir)
	if err != nil {
		return nil, err
	}
	svc, err := ca.NewService(ca.ServiceOptions{
		CA:  authority,
		TTL: idc.svidTTL,
		Authenticators: []ca.Authenticator{
			ca.JoinTokens{Store: tokens},
			ca.SVIDs{Bundle: authority},
		},
		OnIssued: srv.SetCertificate,
		OnResult: mon.signed,
		Logger:   log,
	})
	if err != nil {
		return nil, err
	}
	srv.RegisterService(&identityv1.CertificateService_ServiceDesc, svc)
	srv.SetTrustBundle(authority.BundlePEM())
	return authority, nil
}

// tokenCommand is `controlplane token create`: it mints a join token for one
// workload identity and prints it, alone, on stdout.
func tokenCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "create" {
		fmt.Fprintln(stderr, "usage: controlplane token create --namespace N --service-account S [--ttl 1h] [--data-dir D] [--trust-domain T]")
		return 2
	}
	fs := flag.NewFlagSet("controlplane token create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	namespace := fs.String("namespace", "", "namespace of the workload (required)")
	serviceAccount := fs.String("service-account", "", "service account of the workload (required; meshproxy's default is the workload name)")
	ttl := fs.Duration("ttl", jointoken.DefaultTTL, "how long the token may be redeemed")
	dataDir := fs.String("data-dir", defaultDataDir, "the control plane's --data-dir")
	trustDomain := fs.String("trust-domain", defaultTrustDomain, "the control plane's --trust-domain")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "controlplane token create: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *namespace == "" || *serviceAccount == "" {
		fmt.Fprintln(stderr, "controlplane token create: --namespace and --service-account are required")
		return 2
	}
	td, err := spiffeid.TrustDomainFromString(*trustDomain)
	if err != nil {
		fmt.Fprintf(stderr, "controlplane token create: --trust-domain %q: %v\n", *trustDomain, err)
		return 2
	}
	id, err := spiffeid.FromSegments(td, "ns", *namespace, "sa", *serviceAccount)
	if err != nil {
		fmt.Fprintf(stderr, "controlplane token create: --namespace %q --service-account %q: %v\n", *namespace, *serviceAccount, err)
		return 2
	}
	token, err := jointoken.Mint(*dataDir, id, *ttl)
	if err != nil {
		fmt.Fprintln(stderr, "controlplane token create:", err)
		return 1
	}
	fmt.Fprintln(stdout, token)
	return 0
}

// caCommand is `controlplane ca rotate`.
func caCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "rotate" {
		fmt.Fprintln(stderr, "usage: controlplane ca rotate [--data-dir D] [--overlap 24h]")
		return 2
	}
	fs := flag.NewFlagSet("controlplane ca rotate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", defaultDataDir, "the control plane's --data-dir")
	overlap := fs.Duration("overlap", 24*time.Hour, "how long the old root stays trusted (longer than --svid-ttl, so every proxy renews meanwhile)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "controlplane ca rotate: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *overlap < 0 {
		fmt.Fprintf(stderr, "controlplane ca rotate: --overlap %s: must not be negative\n", *overlap)
		return 2
	}
	r, err := ca.Rotate(*dataDir, *overlap)
	if err != nil {
		fmt.Fprintln(stderr, "controlplane ca rotate:", err)
		return 1
	}
	if r.TrustedUntil.IsZero() {
		fmt.Fprintf(stdout, "rotated the CA root in %s; the old root is no longer trusted\n", *dataDir)
	} else {
		fmt.Fprintf(stdout, "rotated the CA root in %s; the old root stays trusted until %s\n", *dataDir,
			r.TrustedUntil.UTC().Format(time.RFC3339))
	}
	return 0
}
