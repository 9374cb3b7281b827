// Command wiregen writes proto/envoywire: wire-compatible subsets of the Envoy
// xDS protos that meshproxy decodes its config into.
//
// Why: decoding into go-control-plane's generated types links the whole Envoy
// type graph into the sidecar and, on the first Unmarshal, makes the protobuf
// runtime build full descriptors for every message reachable from a Cluster or
// a Listener: about 2 MB of heap that stays for the life of the process, plus
// the descriptors' init and binary pages (docs/benchmarks.md, "Idle memory").
//
// Each mirror message keeps every field of its Envoy original, with the same
// name, number and wire type, so NACKs still name the exact field a server set.
// A field whose message type meshproxy never looks into becomes bytes (optional
// bytes when singular, so an empty message that was set still counts as set);
// the bytes are the field's encoded message, which is the same on the wire.
// Enums nested in messages that are not mirrored become int32, also the same
// on the wire. google.protobuf types are used as they are.
//
// Run from the repository root, then `buf generate`:
//
//	go run ./xds/internal/wiregen && buf generate
//
// It also writes DescriptorsFile, the Envoy descriptors for the config dump.
// The test in this directory fails when either is not what this command
// writes for the go-control-plane version in go.mod.
package main

import (
	"bytes"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	// Registers the Envoy messages to mirror in protoregistry.GlobalFiles.
	_ "github.com/tinymesh/tinymesh/xds/internal/envoyprotos"
)

// Prefix is prepended to each mirrored proto package, so the mirrors and the
// Envoy originals can be linked into one binary (the tests do).
const Prefix = "tinymesh.envoywire."

// GoImportBase is the Go import path of proto/envoywire.
const GoImportBase = "github.com/tinymesh/tinymesh/proto/envoywire/"

// OutDir is where the .proto files go, relative to the repository root.
const OutDir = "proto/envoywire"

// DescriptorsFile gets the Envoy protos' descriptors (Descriptors):
// meshproxy's config dump loads them on demand to print what the control
// plane sent, fields the mirrors carry as bytes included.
const DescriptorsFile = "xds/client/envoy.binpb"

// mirrored lists the messages meshproxy looks into. A message not listed here
// is carried as bytes wherever a mirrored message refers to it.
var mirrored = []string{
	"envoy.service.discovery.v3.DiscoveryRequest",
	"envoy.service.discovery.v3.DiscoveryResponse",
	"envoy.service.discovery.v3.DeltaDiscoveryRequest",
	"envoy.service.discovery.v3.DeltaDiscoveryResponse",
	"envoy.service.discovery.v3.Resource",
	"google.rpc.Status",

	"envoy.config.core.v3.Node",
	"envoy.config.core.v3.Address",
	"envoy.config.core.v3.SocketAddress",
	"envoy.config.core.v3.ConfigSource",
	"envoy.config.core.v3.AggregatedConfigSource",
	"envoy.config.core.v3.DataSource",
	"envoy.config.core.v3.CidrRange",
	"envoy.config.core.v3.GrpcService",
	"envoy.config.core.v3.GrpcService.EnvoyGrpc",
	"envoy.config.core.v3.GrpcService.GoogleGrpc",
	"envoy.config.core.v3.GrpcService.GoogleGrpc.ChannelCredentials",
	"envoy.config.core.v3.GrpcService.GoogleGrpc.SslCredentials",
	"envoy.config.core.v3.HeaderValue",
	"envoy.config.core.v3.HeaderValueOption",
	"envoy.config.core.v3.HealthCheck",
	"envoy.config.core.v3.HealthCheck.HttpHealthCheck",
	"envoy.config.core.v3.HealthCheck.TcpHealthCheck",
	"envoy.config.core.v3.HealthCheck.GrpcHealthCheck",
	"envoy.config.core.v3.Metadata",
	"envoy.config.core.v3.SubstitutionFormatString",
	"envoy.config.core.v3.TransportSocket",

	"envoy.config.cluster.v3.Cluster",
	"envoy.config.cluster.v3.Cluster.CommonLbConfig",
	"envoy.config.cluster.v3.Cluster.EdsClusterConfig",
	"envoy.config.cluster.v3.Cluster.RoundRobinLbConfig",
	"envoy.config.cluster.v3.CircuitBreakers",
	"envoy.config.cluster.v3.CircuitBreakers.Thresholds",
	"envoy.config.cluster.v3.OutlierDetection",
	"envoy.config.endpoint.v3.ClusterLoadAssignment",
	"envoy.config.endpoint.v3.LocalityLbEndpoints",
	"envoy.config.endpoint.v3.LbEndpoint",
	"envoy.config.endpoint.v3.ClusterLoadAssignment.Policy",
	"envoy.config.endpoint.v3.Endpoint",
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig",
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.UseDownstreamHttpConfig",
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.AutoHttpConfig",

	"envoy.config.listener.v3.Listener",
	"envoy.config.listener.v3.FilterChain",
	"envoy.config.listener.v3.FilterChainMatch",
	"envoy.config.listener.v3.Filter",
	"envoy.config.listener.v3.ListenerFilter",
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.Tracing",
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig",
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.SetCurrentClientCertDetails",
	"envoy.extensions.filters.network.http_connection_manager.v3.Rds",
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter",
	"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
	"envoy.extensions.filters.http.router.v3.Router",

	"envoy.config.route.v3.RouteConfiguration",
	"envoy.config.route.v3.VirtualHost",
	"envoy.config.route.v3.Route",
	"envoy.config.route.v3.RouteMatch",
	"envoy.config.route.v3.RouteAction",
	"envoy.config.route.v3.WeightedCluster",
	"envoy.config.route.v3.WeightedCluster.ClusterWeight",
	"envoy.config.route.v3.RetryPolicy",
	"envoy.config.route.v3.HeaderMatcher",
	"envoy.config.route.v3.FilterConfig",
	"envoy.config.route.v3.DirectResponseAction",
	"envoy.type.matcher.v3.StringMatcher",
	"envoy.type.matcher.v3.RegexMatcher",
	"envoy.type.matcher.v3.PathMatcher",
	"envoy.type.v3.FractionalPercent",
	"envoy.type.v3.Percent",
	"envoy.type.v3.Int64Range",

	"envoy.config.rbac.v3.RBAC",
	"envoy.config.rbac.v3.Policy",
	"envoy.config.rbac.v3.Permission",
	"envoy.config.rbac.v3.Permission.Set",
	"envoy.config.rbac.v3.Principal",
	"envoy.config.rbac.v3.Principal.Set",
	"envoy.config.rbac.v3.Principal.Authenticated",
	"envoy.extensions.filters.http.rbac.v3.RBAC",
	"envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
	"envoy.extensions.filters.network.rbac.v3.RBAC",
	"envoy.type.v3.Int32Range",

	"envoy.config.accesslog.v3.AccessLog",
	"envoy.config.accesslog.v3.AccessLogFilter",
	"envoy.config.accesslog.v3.RuntimeFilter",
	"envoy.extensions.access_loggers.file.v3.FileAccessLog",
	"envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
	"envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
	"envoy.config.trace.v3.OpenTelemetryConfig",
	"envoy.config.trace.v3.Tracing.Http",
	"envoy.config.trace.v3.Tracing",
	"envoy.config.core.v3.HttpService",
	"envoy.config.core.v3.HttpUri",

	"envoy.extensions.transport_sockets.tls.v3.Secret",
	"envoy.extensions.transport_sockets.tls.v3.GenericSecret",
	"envoy.extensions.transport_sockets.tls.v3.TlsSessionTicketKeys",
	"envoy.extensions.transport_sockets.tls.v3.TlsCertificate",
	"envoy.extensions.transport_sockets.tls.v3.PrivateKeyProvider",
	"envoy.extensions.transport_sockets.tls.v3.TlsParameters",
	"envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext",
	"envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher",
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext",
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext",
	"envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig",
	"envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
	"envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
}

func main() {
	files, err := Generate()
	if err != nil {
		log.Fatal(err)
	}
	if err := os.RemoveAll(OutDir); err != nil {
		log.Fatal(err)
	}
	set, err := Descriptors()
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(DescriptorsFile, set, 0o644); err != nil {
		log.Fatal(err)
	}
	for name, b := range files {
		p := filepath.Join(OutDir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			log.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

// Generate returns the mirror .proto files by path under OutDir.
func Generate() (map[string][]byte, error) {
	g := &generator{keep: map[protoreflect.FullName]protoreflect.MessageDescriptor{}, pkgs: map[protoreflect.FullName]*pkgFile{}}
	for _, n := range mirrored {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(n))
		if err != nil {
			return nil, fmt.Errorf("mirrored message %s: %w", n, err)
		}
		md, ok := d.(protoreflect.MessageDescriptor)
		if !ok {
			return nil, fmt.Errorf("%s is not a message", n)
		}
		g.keep[md.FullName()] = md
	}
	// A nested message is written inside its parent, which must be listed too.
	for _, md := range g.keep {
		for p := md.Parent(); ; p = p.Parent() {
			pm, ok := p.(protoreflect.MessageDescriptor)
			if !ok {
				break
			}
			if _, kept := g.keep[pm.FullName()]; !kept {
				return nil, fmt.Errorf("%s is listed but its parent %s is not", md.FullName(), pm.FullName())
			}
		}
	}
	var top []protoreflect.MessageDescriptor
	for _, md := range g.keep {
		if _, nested := md.Parent().(protoreflect.MessageDescriptor); !nested {
			top = append(top, md)
		}
	}
	sort.Slice(top, func(i, j int) bool { return top[i].FullName() < top[j].FullName() })
	for _, md := range top {
		f := g.file(md.ParentFile().Package())
		g.message(f, md, 0)
	}
	// Top-level enums the mirrored fields refer to.
	for len(g.enums) > 0 {
		ed := g.enums[0]
		g.enums = g.enums[1:]
		f := g.file(ed.ParentFile().Package())
		if f.enumDone[ed.FullName()] {
			continue
		}
		f.enumDone[ed.FullName()] = true
		g.enum(&f.enumBody, ed, 0)
	}
	out := map[string][]byte{}
	for _, f := range g.pkgs {
		out[f.path()] = f.render()
	}
	return out, nil
}

// Descriptors returns DescriptorsFile's content: every file the mirrored
// messages come from and every file those import, imports first. Each is
// five uvarints, the number of enums, messages (map entries included),
// extensions and services it declares at any depth and the length of what
// follows, then its FileDescriptorProto: what protoimpl.DescBuilder takes,
// so the reader needs neither protodesc nor descriptorpb.
func Descriptors() ([]byte, error) {
	var files []protoreflect.FileDescriptor
	protoregistry.GlobalFiles.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		files = append(files, f)
		return true
	})
	sort.Slice(files, func(i, j int) bool { return files[i].Path() < files[j].Path() })
	var out []byte
	done := map[string]bool{}
	var add func(f protoreflect.FileDescriptor) error
	add = func(f protoreflect.FileDescriptor) error {
		if done[f.Path()] {
			return nil
		}
		done[f.Path()] = true
		for i := 0; i < f.Imports().Len(); i++ {
			if err := add(f.Imports().Get(i).FileDescriptor); err != nil {
				return err
			}
		}
		raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(protodesc.ToFileDescriptorProto(f))
		if err != nil {
			return fmt.Errorf("%s: %w", f.Path(), err)
		}
		var c declCounts
		c.add(f.Enums(), f.Messages(), f.Extensions())
		for _, n := range []int{c.enums, c.messages, c.extensions, f.Services().Len(), len(raw)} {
			out = protowire.AppendVarint(out, uint64(n))
		}
		out = append(out, raw...)
		return nil
	}
	for _, f := range files {
		if err := add(f); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// declCounts counts declarations the way protoimpl.DescBuilder wants them.
type declCounts struct{ enums, messages, extensions int }

func (c *declCounts) add(es protoreflect.EnumDescriptors, ms protoreflect.MessageDescriptors, xs protoreflect.ExtensionDescriptors) {
	c.enums += es.Len()
	c.messages += ms.Len()
	c.extensions += xs.Len()
	for i := 0; i < ms.Len(); i++ {
		m := ms.Get(i)
		c.add(m.Enums(), m.Messages(), m.Extensions())
	}
}

type generator struct {
	keep  map[protoreflect.FullName]protoreflect.MessageDescriptor
	pkgs  map[protoreflect.FullName]*pkgFile
	enums []protoreflect.EnumDescriptor // top-level enums still to write
}

// pkgFile is the one mirror .proto file of an Envoy proto package.
type pkgFile struct {
	pkg      protoreflect.FullName
	imports  map[string]bool
	body     bytes.Buffer
	enumBody bytes.Buffer
	enumDone map[protoreflect.FullName]bool
}

func (g *generator) file(pkg protoreflect.FullName) *pkgFile {
	f := g.pkgs[pkg]
	if f == nil {
		f = &pkgFile{pkg: pkg, imports: map[string]bool{}, enumDone: map[protoreflect.FullName]bool{}}
		g.pkgs[pkg] = f
	}
	return f
}

func (f *pkgFile) dir() string { return strings.ReplaceAll(string(f.pkg), ".", "/") }

// path is the file's name under OutDir.
func (f *pkgFile) path() string { return f.dir() + "/wire.proto" }

// importPath is the file's name in imports: buf's module root is proto/.
func (f *pkgFile) importPath() string { return "envoywire/" + f.path() }

// goName is go-control-plane's package name for pkg: the last element, with
// the one before it when the last is a version ("clusterv3").
func goName(pkg protoreflect.FullName) string {
	parts := strings.Split(string(pkg), ".")
	last := parts[len(parts)-1]
	if len(parts) > 1 && len(last) > 1 && last[0] == 'v' && strings.Trim(last[1:], "0123456789") == "" {
		return strings.ReplaceAll(parts[len(parts)-2], "_", "") + last
	}
	return last
}

func (f *pkgFile) render() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "// Code generated by xds/internal/wiregen from the Envoy protos in go-control-plane. DO NOT EDIT.\n\n")
	fmt.Fprintf(&b, "// A wire-compatible subset of %s for meshproxy (xds/internal/wiregen).\n", f.pkg)
	fmt.Fprintf(&b, "syntax = \"proto3\";\n\npackage %s%s;\n\n", Prefix, f.pkg)
	imps := make([]string, 0, len(f.imports))
	for i := range f.imports {
		if i != f.importPath() {
			imps = append(imps, i)
		}
	}
	sort.Strings(imps)
	for _, i := range imps {
		fmt.Fprintf(&b, "import %q;\n", i)
	}
	if len(imps) > 0 {
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "option go_package = %q;\n", GoImportBase+f.dir()+";"+goName(f.pkg))
	b.Write(f.body.Bytes())
	b.Write(f.enumBody.Bytes())
	return b.Bytes()
}

func indent(n int) string { return strings.Repeat("  ", n) }

func (g *generator) message(f *pkgFile, md protoreflect.MessageDescriptor, depth int) {
	b := &f.body
	in := indent(depth)
	fmt.Fprintf(b, "\n%smessage %s {\n", in, md.Name())
	msgs := md.Messages()
	for i := 0; i < msgs.Len(); i++ {
		if _, kept := g.keep[msgs.Get(i).FullName()]; kept {
			g.message(f, msgs.Get(i), depth+1)
		}
	}
	enums := md.Enums()
	for i := 0; i < enums.Len(); i++ {
		g.enum(b, enums.Get(i), depth+1)
	}
	fields := md.Fields()
	oneofDone := map[protoreflect.Name]bool{}
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		od := fd.ContainingOneof()
		if od == nil || od.IsSynthetic() {
			g.field(f, b, fd, depth+1, false)
			continue
		}
		if oneofDone[od.Name()] {
			continue
		}
		oneofDone[od.Name()] = true
		fmt.Fprintf(b, "%soneof %s {\n", indent(depth+1), od.Name())
		for j := 0; j < od.Fields().Len(); j++ {
			g.field(f, b, od.Fields().Get(j), depth+2, true)
		}
		fmt.Fprintf(b, "%s}\n", indent(depth+1))
	}
	fmt.Fprintf(b, "%s}\n", in)
}

func (g *generator) enum(b *bytes.Buffer, ed protoreflect.EnumDescriptor, depth int) {
	in := indent(depth)
	fmt.Fprintf(b, "\n%senum %s {\n", in, ed.Name())
	vals := ed.Values()
	seen := map[protoreflect.EnumNumber]bool{}
	alias := false
	for i := 0; i < vals.Len(); i++ {
		if seen[vals.Get(i).Number()] {
			alias = true
		}
		seen[vals.Get(i).Number()] = true
	}
	if alias {
		fmt.Fprintf(b, "%s  option allow_alias = true;\n", in)
	}
	for i := 0; i < vals.Len(); i++ {
		fmt.Fprintf(b, "%s  %s = %d;\n", in, vals.Get(i).Name(), vals.Get(i).Number())
	}
	fmt.Fprintf(b, "%s}\n", in)
}

func (g *generator) field(f *pkgFile, b *bytes.Buffer, fd protoreflect.FieldDescriptor, depth int, inOneof bool) {
	label := ""
	var typ string
	switch {
	case fd.IsMap():
		typ = fmt.Sprintf("map<%s, %s>", g.typeName(f, fd.MapKey()), g.typeName(f, fd.MapValue()))
	case fd.IsList():
		label = "repeated "
		typ = g.typeName(f, fd)
	default:
		typ = g.typeName(f, fd)
		if !inOneof && (fd.HasOptionalKeyword() || (typ == "bytes" && fd.Kind() == protoreflect.MessageKind)) {
			label = "optional "
		}
	}
	opts := ""
	if fd.JSONName() != jsonCamelCase(string(fd.Name())) {
		opts = fmt.Sprintf(" [json_name = %q]", fd.JSONName())
	}
	fmt.Fprintf(b, "%s%s%s %s = %d%s;\n", indent(depth), label, typ, fd.Name(), fd.Number(), opts)
}

// typeName is the mirror's type for fd's values.
func (g *generator) typeName(f *pkgFile, fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		md := fd.Message()
		if strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
			f.imports[md.ParentFile().Path()] = true
			return "." + string(md.FullName())
		}
		if _, kept := g.keep[md.FullName()]; !kept {
			return "bytes"
		}
		f.imports[g.file(md.ParentFile().Package()).importPath()] = true
		return "." + Prefix + string(md.FullName())
	case protoreflect.EnumKind:
		ed := fd.Enum()
		switch p := ed.Parent().(type) {
		case protoreflect.MessageDescriptor:
			if _, kept := g.keep[p.FullName()]; !kept {
				return "int32"
			}
		default:
			if !slices.Contains(g.enums, ed) {
				g.enums = append(g.enums, ed)
			}
		}
		f.imports[g.file(ed.ParentFile().Package()).importPath()] = true
		return "." + Prefix + string(ed.FullName())
	}
	return fd.Kind().String()
}

// jsonCamelCase is protoc's default json_name for a field name.
func jsonCamelCase(s string) string {
	var b strings.Builder
	up := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' {
			up = true
			continue
		}
		if up && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		up = false
		b.WriteByte(c)
	}
	return b.String()
}
