package main

import (
	"fmt"
	"strings"
)

// addrs are the three host:port addresses of one hop: where it listens (or, for
// the backend, serves) HTTP/1.1, h2c and gRPC.
type addrs struct {
	H1, H2C, GRPC string
}

// Hosts sent by the load generators. The meshproxy chain routes on them (one mesh
// Service per protocol, see meshModel); the other proxies ignore them.
const (
	hostH1   = "bench"
	hostH2C  = "bench-h2c"
	hostGRPC = "bench-grpc"
)

// hopTLS says which side of the mTLS middle hop a proxy is on. The zero value
// is a plaintext hop (the nginx, haproxy and caddy chains).
type hopTLS struct {
	// role is "" (plaintext), roleClient (the client-side proxy: plaintext from
	// the load generator, originates mTLS to the next hop) or roleServer (the
	// server-side proxy: terminates mTLS, plaintext to the backend).
	role  string
	certs certFiles
}

const (
	roleClient = "client"
	roleServer = "server"
)

// nginxConfig renders an nginx.conf for one plaintext hop; see nginxHop.
func nginxConfig(dir string, listen, up addrs) string {
	return nginxHop(dir, listen, up, hopTLS{})
}

// nginxHop renders an nginx.conf for one hop: one worker, no logs, keep-alive
// upstreams. HTTP/2 listeners use "listen ... http2" because Debian 12's nginx
// 1.22 predates the "http2 on" directive (1.25.1). nginx cannot proxy_pass over
// HTTP/2, so the h2c and gRPC listeners use grpc_pass, nginx's only HTTP/2
// upstream, which forwards any HTTP/2 request (over TLS, grpcs://, it offers
// ALPN h2). keepalive_requests is raised because its default (1000) makes nginx
// close client and upstream connections every 1000 requests, which would
// measure reconnects rather than proxying. dir is the prefix for pid and temp
// files.
//
// With t.role set the middle hop is mutual TLS 1.3: the server side requires a
// client certificate signed by the bench CA (nginx cannot match a URI SAN, so
// any bench certificate passes); the client side presents its certificate and
// verifies the server's against the CA and the name serverName. Upstream TLS
// sessions are reused (proxy_ssl_session_reuse, on by default) but with
// keep-alive upstreams handshakes are rare anyway.
func nginxHop(dir string, listen, up addrs, t hopTLS) string {
	var b strings.Builder
	listenH1, listenH2, scheme, grpcScheme := "", " http2", "http", "grpc"
	var tlsHTTP, tlsH1, tlsGRPC string
	switch t.role {
	case roleServer:
		listenH1, listenH2 = " ssl", " ssl http2"
		tlsHTTP = fmt.Sprintf(`    ssl_certificate %s;
    ssl_certificate_key %s;
    ssl_protocols TLSv1.3;
    ssl_client_certificate %s;
    ssl_verify_client on;
`, t.certs.Cert[certServer], t.certs.Key[certServer], t.certs.CA)
	case roleClient:
		scheme, grpcScheme = "https", "grpcs"
		upTLS := func(module string) string {
			return fmt.Sprintf(`            %[1]s_ssl_certificate %[2]s;
            %[1]s_ssl_certificate_key %[3]s;
            %[1]s_ssl_trusted_certificate %[4]s;
            %[1]s_ssl_verify on;
            %[1]s_ssl_name %[5]s;
            %[1]s_ssl_protocols TLSv1.3;
`, module, t.certs.Cert[certClient], t.certs.Key[certClient], t.certs.CA, serverName)
		}
		tlsH1, tlsGRPC = upTLS("proxy"), upTLS("grpc")
	}
	fmt.Fprintf(&b, `worker_processes 1;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
worker_rlimit_nofile 65536;
events {
    worker_connections 16384;
}
http {
    access_log off;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
%[8]s    upstream up_h1 {
        server %[2]s;
        keepalive 256;
        keepalive_requests 100000000;
    }
    upstream up_h2c {
        server %[3]s;
        keepalive 256;
        keepalive_requests 100000000;
    }
    upstream up_grpc {
        server %[4]s;
        keepalive 256;
        keepalive_requests 100000000;
    }
    server {
        listen %[5]s%[9]s;
        location / {
            proxy_pass %[11]s://up_h1;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
%[13]s        }
    }
    server {
        listen %[6]s%[10]s;
        location / {
            grpc_pass %[12]s://up_h2c;
            grpc_set_header Host $http_host;
%[14]s        }
    }
    server {
        listen %[7]s%[10]s;
        location / {
            grpc_pass %[12]s://up_grpc;
            grpc_set_header Host $http_host;
%[14]s        }
    }
}
`, dir, up.H1, up.H2C, up.GRPC, listen.H1, listen.H2C, listen.GRPC,
		tlsHTTP, listenH1, listenH2, scheme, grpcScheme, tlsH1, tlsGRPC)
	return b.String()
}

// haproxyConfig renders an haproxy.cfg for one plaintext hop; see haproxyHop.
func haproxyConfig(listen, up addrs) string {
	return haproxyHop(listen, up, hopTLS{})
}

// haproxyHop renders an haproxy.cfg for one hop: one thread, HTTP mode,
// keep-alive and connection reuse towards the next hop; the h2c and gRPC
// frontends and servers speak HTTP/2 prior knowledge ("proto h2").
//
// With t.role set the middle hop is mutual TLS 1.3 and HTTP/2 is chosen by
// ALPN instead ("alpn h2" on the TLS binds and servers): the server side
// requires a client certificate signed by the bench CA ("verify required";
// HAProxy 2.6 cannot match a URI SAN either), the client side presents its
// certificate and verifies the server's against the CA and serverName
// ("verifyhost"). The HTTP/1.1 frontend and server offer no ALPN, so that hop
// stays HTTP/1.1 over TLS as in the plaintext chain.
func haproxyHop(listen, up addrs, t hopTLS) string {
	bindH1, bindH2 := "", " proto h2"
	srvH1, srvH2 := "", " proto h2"
	switch t.role {
	case roleServer:
		bindH1 = fmt.Sprintf(" ssl crt %s ca-file %s verify required ssl-min-ver TLSv1.3", t.certs.Both[certServer], t.certs.CA)
		bindH2 = bindH1 + " alpn h2"
	case roleClient:
		srvH1 = fmt.Sprintf(" ssl crt %s ca-file %s verify required verifyhost %s ssl-min-ver TLSv1.3", t.certs.Both[certClient], t.certs.CA, serverName)
		srvH2 = srvH1 + " alpn h2"
	}
	return fmt.Sprintf(`global
    nbthread 1
    maxconn 4000
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    option http-keep-alive
    http-reuse always
frontend fe_h1
    bind %[1]s%[7]s
    default_backend be_h1
backend be_h1
    server s1 %[4]s%[9]s
frontend fe_h2c
    bind %[2]s%[8]s
    default_backend be_h2c
backend be_h2c
    server s1 %[5]s%[10]s
frontend fe_grpc
    bind %[3]s%[8]s
    default_backend be_grpc
backend be_grpc
    server s1 %[6]s%[10]s
`, listen.H1, listen.H2C, listen.GRPC, up.H1, up.H2C, up.GRPC, bindH1, bindH2, srvH1, srvH2)
}

// caddyConfig renders a Caddyfile for one hop: no admin API, no automatic HTTPS,
// servers accept HTTP/1.1 and h2c, and reverse_proxy keeps idle upstream
// connections; h2c and gRPC go upstream over h2c. Sites are ":port" so that any
// Host matches; bind keeps them on loopback.
func caddyConfig(listen, up addrs) string {
	site := func(listenAddr, upstream string) string {
		_, port, _ := strings.Cut(listenAddr, ":")
		host, _, _ := strings.Cut(listenAddr, ":")
		return fmt.Sprintf(`http://:%s {
    bind %s
    reverse_proxy %s {
        transport http {
            keepalive 300s
            keepalive_idle_conns 1024
            keepalive_idle_conns_per_host 1024
        }
    }
}
`, port, host, upstream)
	}
	return `{
    admin off
    auto_https off
    servers {
        protocols h1 h2c
    }
}
` + site(listen.H1, up.H1) + site(listen.H2C, "h2c://"+up.H2C) + site(listen.GRPC, "h2c://"+up.GRPC)
}

// meshModel renders the controlplane model: one Service per protocol, each with
// its own selector, so that each server-side sidecar fronts exactly one app port
// with the matching appProtocol (a sidecar has one inbound listener and one app
// address).
func meshModel() string {
	svc := func(name, proto string) string {
		return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: %[1]s
  namespace: default
spec:
  selector:
    app: %[1]s
  ports:
  - name: %[2]s
    port: 8080
    appProtocol: %[2]s
`, name, proto)
	}
	return svc(hostH1, "http") + "---\n" + svc(hostH2C, "h2c") + "---\n" + svc(hostGRPC, "grpc")
}

// peerAuthDisable is the mesh-wide PeerAuthentication that turns mTLS off
// (docs/identity.md): the plaintext meshproxy chain keeps measuring h2c between
// the sidecars.
func peerAuthDisable() string {
	return `apiVersion: mesh.tinymesh.io/v1alpha1
kind: PeerAuthentication
metadata:
  name: default
  namespace: tinymesh-system
spec:
  mtls:
    mode: DISABLE
`
}
