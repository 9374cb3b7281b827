package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tinymesh/tinymesh/identity"
	identityv1 "github.com/tinymesh/tinymesh/proto/identity/v1"
)

// SVID lifetimes (docs/identity.md, "Identities"). The Service takes any
// positive TTL; the controlplane flag enforces MinSVIDTTL.
const (
	DefaultSVIDTTL = time.Hour
	MinSVIDTTL     = time.Minute
)

// ServiceOptions configure NewService. CA and at least one Authenticator are
// required.
type ServiceOptions struct {
	CA *CA
	// TTL is the lifetime of issued SVIDs; default DefaultSVIDTTL.
	TTL time.Duration
	// Authenticators are asked in order; the first that finds its kind of
	// credential in the request decides.
	Authenticators []Authenticator
	// OnIssued, if set, is called on the handler's goroutine with the node ID and
	// the issued chain (PEM, leaf first) before the response is sent, so the SDS
	// "default" secret may reach the proxy before the Sign response does.
	OnIssued func(nodeID string, chainPEM []byte)
	// OnResult, if set, is called on the handler's goroutine once per Sign
	// with the kind of credential presented (join_token, svid or none) and
	// the outcome: codes.OK for an issued SVID, else the code it was refused
	// with. The control plane counts issuances and refusals with it.
	OnResult func(credential string, code codes.Code)
	// Logger defaults to slog.Default(). Every issuance is logged at INFO, every
	// refusal at WARN; credentials never are.
	Logger *slog.Logger
}

// Service implements tinymesh.identity.v1.CertificateService. It is safe for
// concurrent use.
type Service struct {
	identityv1.UnimplementedCertificateServiceServer

	// set in NewService, read-only after
	opts ServiceOptions
	log  *slog.Logger
}

// NewService returns the CertificateService for opts.CA.
func NewService(opts ServiceOptions) (*Service, error) {
	if opts.CA == nil {
		return nil, errors.New("ca service: a CA is required")
	}
	if len(opts.Authenticators) == 0 {
		return nil, errors.New("ca service: at least one authenticator is required")
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultSVIDTTL
	}
	if opts.TTL < 0 {
		return nil, fmt.Errorf("ca service: SVID TTL %s: must be positive", opts.TTL)
	}
	s := &Service{opts: opts, log: opts.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s, nil
}

// Sign implements CertificateServiceServer: it checks the CSR, authenticates
// the credential, issues the SVID and reports it to OnIssued.
func (s *Service) Sign(ctx context.Context, req *identityv1.SignRequest) (resp *identityv1.SignResponse, err error) {
	if s.opts.OnResult != nil {
		defer func() { s.opts.OnResult(credentialKind(req), status.Code(err)) }()
	}
	log := s.log.With("node", req.GetNodeId(), "credential", credentialKind(req))
	csr, id, err := s.checkCSR(req)
	if err != nil {
		log.Warn("SVID refused", "code", codes.InvalidArgument.String(), "err", err)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	log = log.With("spiffe_id", id.String())
	if code, err := s.authenticate(ctx, req, csr, id); err != nil {
		log.Warn("SVID refused", "code", code.String(), "err", err)
		return nil, status.Error(code, err.Error())
	}
	chain, err := s.opts.CA.Sign(csr.PublicKey, id, s.opts.TTL)
	if err != nil {
		log.Error("SVID signing failed", "err", err)
		return nil, status.Error(codes.Internal, err.Error())
	}
	leaf := chain[0]
	if s.opts.OnIssued != nil {
		s.opts.OnIssued(req.GetNodeId(), EncodeCertificates(chain))
	}
	log.Info("SVID issued", "serial", leaf.SerialNumber.Text(16),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	resp = &identityv1.SignResponse{ExpiresAt: timestamppb.New(leaf.NotAfter)}
	for _, c := range chain {
		resp.CertificateChain = append(resp.CertificateChain, c.Raw)
	}
	for _, r := range s.opts.CA.Bundle() {
		resp.TrustBundle = append(resp.TrustBundle, r.Raw)
	}
	return resp, nil
}

// checkCSR parses and checks the request's CSR and node ID; errors name the
// field.
func (s *Service) checkCSR(req *identityv1.SignRequest) (*x509.CertificateRequest, spiffeid.ID, error) {
	var none spiffeid.ID
	if req.GetNodeId() == "" {
		return nil, none, errors.New("node_id: empty")
	}
	if len(req.GetCsr()) == 0 {
		return nil, none, errors.New("csr: empty")
	}
	csr, err := x509.ParseCertificateRequest(req.GetCsr())
	if err != nil {
		return nil, none, fmt.Errorf("csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, none, fmt.Errorf("csr: signature: %w", err)
	}
	if pub, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		return nil, none, fmt.Errorf("csr: public key: want ECDSA P-256, got %s", keyKind(csr.PublicKey))
	}
	if len(csr.URIs) != 1 {
		return nil, none, fmt.Errorf("csr: want exactly one URI SAN (the SPIFFE ID), got %d", len(csr.URIs))
	}
	id, err := spiffeid.FromURI(csr.URIs[0])
	if err != nil {
		return nil, none, fmt.Errorf("csr: URI SAN %q: %w", csr.URIs[0], err)
	}
	if td := s.opts.CA.TrustDomain(); !id.MemberOf(td) {
		return nil, none, fmt.Errorf("csr: URI SAN %s: not in trust domain %s", id, td)
	}
	return csr, id, nil
}

// authenticate runs the authenticators and returns the gRPC code to refuse
// with.
func (s *Service) authenticate(ctx context.Context, req *identityv1.SignRequest, csr *x509.CertificateRequest, id spiffeid.ID) (codes.Code, error) {
	if req.GetCredential() == nil {
		return codes.Unauthenticated, errors.New("no credential: set join_token or svid")
	}
	for _, a := range s.opts.Authenticators {
		got, err := a.Authenticate(ctx, req, csr)
		if errors.Is(err, ErrNoCredential) {
			continue
		}
		if errors.Is(err, ErrPermissionDenied) {
			return codes.PermissionDenied, err
		}
		if err != nil {
			return codes.Unauthenticated, err // jointoken and SVIDs errors name their credential
		}
		if got != id {
			return codes.PermissionDenied, fmt.Errorf("%s is for %s, the CSR asks for %s", credentialKind(req), got, id)
		}
		// A proxy's node ID is <workload>.<namespace>~<suffix>
		// (docs/xds-conventions.md): one namespace's credentials cannot
		// replace the certificate served to another namespace's proxies.
		if ns, ok := nodeNamespace(req.GetNodeId()); ok {
			if wid, err := identity.ParseWorkloadID(id.String()); err == nil && wid.Namespace != ns {
				return codes.PermissionDenied, fmt.Errorf("node_id %q is in namespace %q, the SPIFFE ID %s in %q",
					req.GetNodeId(), ns, id, wid.Namespace)
			}
		}
		return codes.OK, nil
	}
	return codes.Unauthenticated, fmt.Errorf("%s credentials are not accepted", credentialKind(req))
}

// nodeNamespace returns the namespace of a node ID of the meshproxy form.
func nodeNamespace(nodeID string) (string, bool) {
	base, _, ok := strings.Cut(nodeID, "~")
	if !ok {
		return "", false
	}
	i := strings.LastIndexByte(base, '.')
	if i <= 0 || i == len(base)-1 {
		return "", false
	}
	return base[i+1:], true
}

func credentialKind(req *identityv1.SignRequest) string {
	switch req.GetCredential().(type) {
	case *identityv1.SignRequest_JoinToken:
		return "join_token"
	case *identityv1.SignRequest_Svid:
		return "svid"
	case nil:
		return "none"
	default:
		return fmt.Sprintf("%T", req.GetCredential())
	}
}

func keyKind(pub any) string {
	if k, ok := pub.(*ecdsa.PublicKey); ok {
		return "ECDSA " + k.Curve.Params().Name
	}
	return fmt.Sprintf("%T", pub)
}
