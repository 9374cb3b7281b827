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

// nginxConfig renders an nginx.conf for one hop: one worker, no logs, keep-alive
// upstreams. HTTP/2 listeners use "listen ... http2" because Debian 12's nginx
// 1.22 predates the "http2 on" directive (1.25.1). nginx cannot proxy_pass over HTTP/2, so the h2c and gRPC listeners
// use grpc_pass, nginx's only HTTP/2 upstream, which forwards any HTTP/2 request.
// keepalive_requests is raised because its default (1000) makes nginx close
// client and upstream connections every 1000 requests, which would measure
// reconnects rather than proxying. dir is the prefix for pid and temp files.
func nginxConfig(dir string, listen, up addrs) string {
	var b strings.Builder
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
    upstream up_h1 {
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
        listen %[5]s;
        location / {
            proxy_pass http://up_h1;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
        }
    }
    server {
        listen %[6]s http2;
        location / {
            grpc_pass grpc://up_h2c;
            grpc_set_header Host $http_host;
        }
    }
    server {
        listen %[7]s http2;
        location / {
            grpc_pass grpc://up_grpc;
            grpc_set_header Host $http_host;
        }
    }
}
`, dir, up.H1, up.H2C, up.GRPC, listen.H1, listen.H2C, listen.GRPC)
	return b.String()
}

// haproxyConfig renders an haproxy.cfg for one hop: one thread, HTTP mode,
// keep-alive and connection reuse towards the next hop; the h2c and gRPC
// frontends and servers speak HTTP/2 prior knowledge ("proto h2").
func haproxyConfig(listen, up addrs) string {
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
    bind %[1]s
    default_backend be_h1
backend be_h1
    server s1 %[4]s
frontend fe_h2c
    bind %[2]s proto h2
    default_backend be_h2c
backend be_h2c
    server s1 %[5]s proto h2
frontend fe_grpc
    bind %[3]s proto h2
    default_backend be_grpc
backend be_grpc
    server s1 %[6]s proto h2
`, listen.H1, listen.H2C, listen.GRPC, up.H1, up.H2C, up.GRPC)
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
