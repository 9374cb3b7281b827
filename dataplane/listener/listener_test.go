package listener

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// blockingServer accepts connections and holds them until Shutdown's deadline.
type blockingServer struct {
	ln      net.Listener
	stopped chan struct{}
}

func (s *blockingServer) Serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		c.Close()
	}
}

func (s *blockingServer) Shutdown(ctx context.Context) error {
	<-ctx.Done() // pretend a connection never finishes
	return ctx.Err()
}

func (s *blockingServer) Close() error { close(s.stopped); return nil }

func TestBindErrorNamesListenerAndAddress(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, err = Bind("inbound", taken.Addr().String())
	if err == nil || !strings.Contains(err.Error(), `"inbound"`) || !strings.Contains(err.Error(), taken.Addr().String()) {
		t.Errorf("Bind on a taken address: err = %v, want one naming the listener and %s", err, taken.Addr())
	}
}

func TestDrainIsBounded(t *testing.T) {
	ln, err := Bind("l", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &blockingServer{stopped: make(chan struct{})}
	l := Start("l", "127.0.0.1:0", ln, srv)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = l.Drain(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Drain = %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Drain took %v, want about 50ms", d)
	}
	select {
	case <-srv.stopped:
	default:
		t.Error("Drain did not Close the server after the timeout")
	}
}
