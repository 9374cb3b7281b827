package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// multiPortModel is a Service "backend" with an HTTP/1.1 port 8080 and a gRPC
// port 9090 whose targetPorts are the app's two real ports, and a GAMMA
// parent Service "api" (selecting no workload) whose HTTPRoutes send both of
// its ports to backend: requests to api keep their authority (api:9090), which
// no virtual host of backend's sidecar names, so they exercise the "*:<port>"
// fallback of the inbound route configuration.
func multiPortModel(httpPort, grpcPort string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: backend
  namespace: default
spec:
  selector: {app: backend}
  ports:
  - {name: http, port: 8080, targetPort: %s, appProtocol: http}
  - {name: grpc, port: 9090, targetPort: %s, appProtocol: grpc}
---
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: default
spec:
  selector: {app: api}
  ports:
  - {name: http, port: 8080, appProtocol: http}
  - {name: grpc, port: 9090, appProtocol: grpc}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: api-http
spec:
  parentRefs: [{group: "", kind: Service, name: api, port: 8080}]
  rules:
  - backendRefs: [{name: backend, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: api-grpc
spec:
  parentRefs: [{group: "", kind: Service, name: api, port: 9090}]
  rules:
  - backendRefs: [{name: backend, port: 9090}]
`, httpPort, grpcPort)
}

// TestMultiPort serves one workload's HTTP/1.1 and gRPC ports behind one
// sidecar whose --app is the HTTP port: the control plane must give its inbound
// listener a virtual host per Service port, each routing to a cluster for that
// target port speaking the port's protocol.
func TestMultiPort(t *testing.T) {
	ip := newIP(t)
	id := backendID{service: "backend", version: "backend-v1", instance: "backend-1"}
	web := startHTTPBackend(t, ip, id, false) // HTTP/1.1 only: h2c to it fails
	greeter := startGRPCBackend(t, ip, id)
	_, httpPort, _ := net.SplitHostPort(web.addr)
	_, grpcPort, _ := net.SplitHostPort(greeter.addr)

	cp := startControlPlane(t, controlPlaneOptions{model: map[string]string{
		"backend.yaml": multiPortModel(httpPort, grpcPort),
	}})
	backend := startProxy(t, cp, proxyOptions{workload: "backend-1", labels: "app=backend", app: web.addr, ip: ip})
	client := startProxy(t, cp, proxyOptions{workload: "client", labels: "app=client", outbound: true})
	dumpOnFailure(t, client, backend)

	t.Run("http", func(t *testing.T) {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
		defer c.CloseIdleConnections()
		for _, host := range []string{"backend", "backend:8080", "backend.default.svc.cluster.local:8080", "api"} {
			var rep reply
			retry(t, 20*time.Second, "GET with Host "+host+" through the client sidecar", func() error {
				req, _ := http.NewRequest(http.MethodGet, "http://"+client.outbound+"/", nil)
				req.Host = host
				var err error
				rep, err = doReply(c, req)
				return err
			})
			if rep.Instance != "backend-1" || rep.Proto != "HTTP/1.1" || rep.Host != host {
				t.Errorf("GET with Host %q: reached %q speaking %q with Host %q, want backend-1 speaking HTTP/1.1 with Host %q",
					host, rep.Instance, rep.Proto, rep.Host, host)
			}
		}
	})

	for _, authority := range []string{"backend:9090", "backend.default.svc.cluster.local:9090", "api:9090"} {
		t.Run("grpc "+authority, func(t *testing.T) {
			cc, err := grpc.NewClient("passthrough:///"+client.outbound,
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithAuthority(authority))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			tc := testgrpc.NewTestServiceClient(cc)
			var resp *testgrpc.SimpleResponse
			retry(t, 20*time.Second, "UnaryCall with authority "+authority, func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				resp, err = tc.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("multi")}})
				return err
			})
			if resp.GetServerId() != "backend-v1" || resp.GetHostname() != "backend-1" || string(resp.GetPayload().GetBody()) != "multi" {
				t.Errorf("UnaryCall with authority %q: got server_id %q hostname %q payload %q, want backend-v1, backend-1, multi",
					authority, resp.GetServerId(), resp.GetHostname(), resp.GetPayload().GetBody())
			}
		})
	}
}
