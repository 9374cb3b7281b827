package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/tinymesh/tinymesh/xds/mesh"
	"github.com/tinymesh/tinymesh/xds/source/file"
	"github.com/tinymesh/tinymesh/xds/translate"
)

// validateCommand is `controlplane validate DIR`: it checks a model directory
// offline with the server's own code, file.Validate (decode, normalize,
// validate), then translates the model for a synthetic sidecar of every
// meshed Service and checks each snapshot's consistency, as the server does
// before it sets one. It prints every problem on its own line and exits 1 if
// there is any, else prints "N resources OK" and exits 0; 2 is bad usage.
func validateCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("controlplane validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: controlplane validate [--trust-domain T] DIR")
		fs.PrintDefaults()
	}
	trustDomain := fs.String("trust-domain", defaultTrustDomain, "the control plane's --trust-domain")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	td, err := spiffeid.TrustDomainFromString(*trustDomain)
	if err != nil {
		fmt.Fprintf(stderr, "controlplane validate: --trust-domain %q: %v\n", *trustDomain, err)
		return 2
	}
	dir := fs.Arg(0)
	m, problems := file.Validate(dir, td.Name())
	if len(problems) == 0 {
		problems = translateProblems(m, td.Name())
	}
	for _, p := range problems {
		fmt.Fprintln(stdout, p)
	}
	if len(problems) > 0 {
		fmt.Fprintf(stderr, "controlplane validate: %s: %d problem(s)\n", dir, len(problems))
		return 1
	}
	n := len(m.Services) + len(m.EndpointSlices) + len(m.HTTPRoutes) + len(m.PeerAuthentications) + len(m.AuthorizationPolicies) +
		len(m.Telemetries) + len(m.DestinationRules)
	fmt.Fprintf(stdout, "%d resources OK\n", n)
	return 0
}

// translateProblems translates m for one synthetic sidecar per meshed Service
// (labelled with its selector, in its namespace, with inbound and outbound
// listeners on loopback), all registered at once, and returns each distinct
// translation or consistency error, naming the Service it was found for.
func translateProblems(m *mesh.Model, trustDomain string) []error {
	var nodes []mesh.Workload
	for i, svc := range m.Services {
		if !mesh.Meshed(svc) {
			continue
		}
		ip := net.IPv4(127, 1, byte(i/250), byte(i%250+1)).String()
		nodes = append(nodes, mesh.Workload{
			NodeID:           "validate~" + svc.Name + "." + svc.Namespace,
			Name:             svc.Name,
			Namespace:        svc.Namespace,
			ServiceAccount:   svc.Name,
			Labels:           svc.Spec.Selector,
			InboundAddr:      net.JoinHostPort(ip, "15006"),
			AppAddr:          net.JoinHostPort(ip, "8080"),
			OutboundHTTPAddr: net.JoinHostPort(ip, strconv.Itoa(15001)),
			OutboundIP:       ip,
			Sidecar:          true,
		})
	}
	var out []error
	seen := map[string]bool{}
	for i := range nodes {
		res, err := translate.Translate(m, nodes, &nodes[i], translate.Options{TrustDomain: trustDomain})
		if err == nil {
			err = translate.Consistent(res)
		}
		if err != nil && !seen[err.Error()] {
			seen[err.Error()] = true
			out = append(out, fmt.Errorf("translating for a sidecar of Service %s/%s: %w", nodes[i].Namespace, nodes[i].Name, err))
		}
	}
	return out
}
