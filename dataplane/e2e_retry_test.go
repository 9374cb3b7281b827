package dataplane_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/proxytest"
	"golang.org/x/net/websocket"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// These tests put a dead endpoint (a closed port: connects are refused) next to
// a live one in a cluster and check that no request or connection through the
// proxy fails: a connect failure is retried on another endpoint.

// retryProxy starts a proxy whose outbound HTTP listener routes the backend
// service to one cluster of proto over addrs, and returns the listener address.
func retryProxy(t *testing.T, proto config.Protocol, addrs ...string) string {
	t.Helper()
	addr := proxytest.FreeAddr(t)
	snap := proxytest.OutboundSnapshot("r1", addr, config.WeightedCluster{Name: proxytest.OutboundCluster, Weight: 1})
	snap.Clusters[proxytest.OutboundCluster] = proxytest.Cluster(proxytest.OutboundCluster, proto, addrs...)
	proxytest.StartProxy(t, "P", snap)
	return addr
}

// parallel runs fn(i) for i in [0, n) on workers goroutines and waits.
func parallel(n, workers int, fn func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				fn(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

func TestConnectFailureRetriedHTTP(t *testing.T) {
	for _, tc := range []struct {
		name   string
		proto  config.Protocol
		client func(testing.TB) *http.Client
	}{
		{"http1", config.ProtocolHTTP1, proxytest.Client},
		{"h2c", config.ProtocolH2C, proxytest.H2CClient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := proxytest.StartApp(t, "backend-v1", nil)
			// Two dead endpoints around the live one: a request that starts
			// on the second dead one needs all three attempts, and only
			// succeeds if the retry prefers endpoints not tried yet.
			addr := retryProxy(t, tc.proto, proxytest.FreeAddr(t), app.Addr, proxytest.FreeAddr(t))
			c := tc.client(t)
			const seq, conc = 12, 24
			check := func(i int) error {
				// A POST whose body the app echoes: a retried request must
				// carry the whole body, exactly once.
				want := fmt.Sprintf("req-%d-", i) + strings.Repeat("x", 20000+i)
				req, err := http.NewRequest("POST", "http://"+addr+"/echo", strings.NewReader(want))
				if err != nil {
					return err
				}
				req.Host = "backend"
				resp, err := c.Do(req)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				got, err := io.ReadAll(resp.Body)
				if err != nil {
					return err
				}
				if resp.StatusCode != 200 || string(got) != want {
					return fmt.Errorf("got %d %q (%d bytes), want 200 and the %d bytes sent back", resp.StatusCode, resp.Header.Get("X-Meshproxy-Error"), len(got), len(want))
				}
				return nil
			}
			for i := range seq {
				if err := check(i); err != nil {
					t.Fatalf("sequential request %d: %v", i, err)
				}
			}
			errs := make(chan error, conc)
			parallel(conc, 8, func(i int) {
				if err := check(seq + i); err != nil {
					errs <- fmt.Errorf("concurrent request %d: %w", i, err)
				}
			})
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if n := app.Requests.Load(); n != seq+conc {
				t.Errorf("app saw %d requests, want %d (each exactly once)", n, seq+conc)
			}
		})
	}
}

func TestConnectFailureAllEndpointsDown(t *testing.T) {
	addr := retryProxy(t, config.ProtocolHTTP1, proxytest.FreeAddr(t), proxytest.FreeAddr(t))
	c := proxytest.Client(t)
	for _, method := range []string{"GET", "POST"} {
		start := time.Now()
		resp, _ := do(t, c, newReq(t, method, addr, "backend", "/", strings.NewReader("body")))
		got := [2]string{resp.Status, resp.Header.Get("X-Meshproxy-Error")}
		if want := [2]string{"503 Service Unavailable", "upstream_connect_failure"}; got != want {
			t.Errorf("%s: got %q, want %q", method, got, want)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: answered after %v, want promptly (refused connects)", method, d)
		}
	}
}

func TestConnectFailureRetriedGRPC(t *testing.T) {
	g := proxytest.StartGRPCApp(t)
	addr := retryProxy(t, config.ProtocolH2C, proxytest.FreeAddr(t), g.Addr, proxytest.FreeAddr(t))
	client := grpcClient(t, addr, "backend")
	call := func(i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		want := fmt.Sprintf("ping-%d", i)
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte(want)}})
		if err != nil {
			return err
		}
		if got := string(resp.GetPayload().GetBody()); got != want {
			return fmt.Errorf("payload %q, want %q", got, want)
		}
		return nil
	}
	for i := range 12 {
		if err := call(i); err != nil {
			t.Fatalf("sequential call %d: %v", i, err)
		}
	}
	errs := make(chan error, 24)
	parallel(24, 8, func(i int) {
		if err := call(100 + i); err != nil {
			errs <- fmt.Errorf("concurrent call %d: %w", i, err)
		}
	})
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestConnectFailureAllEndpointsDownGRPC(t *testing.T) {
	addr := retryProxy(t, config.ProtocolH2C, proxytest.FreeAddr(t), proxytest.FreeAddr(t))
	client := grpcClient(t, addr, "backend")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
	if code := status.Code(err); code != codes.Unavailable || !strings.Contains(err.Error(), "upstream_connect_failure") {
		t.Errorf("got %v, want Unavailable upstream_connect_failure", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("answered after %v, want promptly", d)
	}
}

func TestConnectFailureRetriedWebSocket(t *testing.T) {
	app := proxytest.StartWebSocketApp(t)
	addr := retryProxy(t, config.ProtocolHTTP1, proxytest.FreeAddr(t), app, proxytest.FreeAddr(t))
	for i := range 6 {
		ws, err := dialWebSocket(addr)
		if err != nil {
			t.Fatalf("websocket %d: %v", i, err)
		}
		msg := fmt.Sprintf("hello %d", i)
		var got string
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Errorf("websocket %d: send: %v", i, err)
		} else if err := websocket.Message.Receive(ws, &got); err != nil || got != msg {
			t.Errorf("websocket %d: got %q (err %v), want %q", i, got, err, msg)
		}
		ws.Close()
	}

	// With every endpoint down the upgrade is answered with the usual error.
	dead := retryProxy(t, config.ProtocolHTTP1, proxytest.FreeAddr(t), proxytest.FreeAddr(t))
	req := newReq(t, "GET", dead, "backend", "/ws", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	resp, _ := do(t, proxytest.Client(t), req)
	if got := [2]string{resp.Status, resp.Header.Get("X-Meshproxy-Error")}; got != [2]string{"503 Service Unavailable", "upstream_connect_failure"} {
		t.Errorf("upgrade with all endpoints down: got %q, want 503 upstream_connect_failure", got)
	}
}

// tcpRetryProxy starts a proxy with one TCP listener forwarding to addrs.
func tcpRetryProxy(t *testing.T, addrs ...string) string {
	t.Helper()
	addr := proxytest.FreeAddr(t)
	const cl = "outbound|9000||echo.default.svc.cluster.local"
	proxytest.StartProxy(t, "P", &config.Snapshot{
		Version:   "t1",
		Listeners: []*config.Listener{{Name: "outbound_tcp|9000||echo.default.svc.cluster.local", Address: addr, TCP: &config.TCPProxy{Cluster: cl, IdleTimeout: 10 * time.Second}}},
		Clusters:  map[string]*config.Cluster{cl: proxytest.Cluster(cl, config.ProtocolTCP, addrs...)},
	})
	return addr
}

// tcpEcho sends msg on a new connection to addr, half-closes, and returns
// everything read until EOF.
func tcpEcho(addr, msg string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, msg); err != nil {
		return "", err
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		return "", err
	}
	var b bytes.Buffer
	_, err = io.Copy(&b, conn)
	return b.String(), err
}

func TestConnectFailureRetriedTCP(t *testing.T) {
	app := proxytest.StartTCPEcho(t)
	addr := tcpRetryProxy(t, proxytest.FreeAddr(t), app.Addr, proxytest.FreeAddr(t))
	check := func(i int) error {
		msg := fmt.Sprintf("hello %d", i)
		got, err := tcpEcho(addr, msg)
		if err != nil || got != "echo:"+msg {
			return fmt.Errorf("got %q (err %v), want %q", got, err, "echo:"+msg)
		}
		return nil
	}
	for i := range 9 {
		if err := check(i); err != nil {
			t.Fatalf("sequential connection %d: %v", i, err)
		}
	}
	errs := make(chan error, 18)
	parallel(18, 6, func(i int) {
		if err := check(100 + i); err != nil {
			errs <- fmt.Errorf("concurrent connection %d: %w", i, err)
		}
	})
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// With every endpoint down the downstream connection is closed, promptly.
	dead := tcpRetryProxy(t, proxytest.FreeAddr(t), proxytest.FreeAddr(t))
	start := time.Now()
	got, _ := tcpEcho(dead, "anyone?")
	if got != "" {
		t.Errorf("all endpoints down: got %q, want the connection closed with nothing", got)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("all endpoints down: closed after %v, want promptly", d)
	}
}
