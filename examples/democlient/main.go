// Command democlient calls demo.v1.DemoService (examples/demoapp's gRPC API) a
// number of times and counts which service and version answered, so that a
// traffic split can be watched over gRPC the way curl shows it over HTTP.
//
// Through the mesh, point it at a sidecar's outbound listener and name the
// Service in :authority, as an app behind that sidecar would:
//
//	go run ./examples/democlient --addr 127.0.0.1:15112 --authority backend -n 100
//
// Concurrency: one goroutine; the gRPC connection is closed before exit.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	demov1 "github.com/tinymesh/tinymesh/proto/demo/v1"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "democlient:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("democlient", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:15112", "address to dial: a sidecar's outbound listener, or a demoapp directly")
	authority := fs.String("authority", "backend", "gRPC :authority, i.e. the Service to call (empty: --addr)")
	n := fs.Int("n", 100, "number of calls")
	rpc := fs.String("rpc", "hello", "hello: n unary calls; chat: one stream with n messages")
	timeout := fs.Duration("timeout", 30*time.Second, "deadline for all calls")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 1 || (*rpc != "hello" && *rpc != "chat") || fs.NArg() > 0 {
		return errors.New("want -n >= 1, -rpc hello or chat, and no arguments")
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if *authority != "" {
		opts = append(opts, grpc.WithAuthority(*authority))
	}
	conn, err := grpc.NewClient(*addr, opts...)
	if err != nil {
		return fmt.Errorf("dial %s: %w", *addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	client := demov1.NewDemoServiceClient(conn)
	var counts map[string]int
	if *rpc == "hello" {
		counts, err = hello(ctx, client, *n)
	} else {
		counts, err = chat(ctx, client, *n)
	}
	printCounts(stdout, counts)
	return err
}

// hello makes n unary calls and counts "service version" of the replies.
func hello(ctx context.Context, c demov1.DemoServiceClient, n int) (map[string]int, error) {
	counts := map[string]int{}
	for i := range n {
		r, err := c.Hello(ctx, &demov1.HelloRequest{Name: "democlient"})
		if err != nil {
			return counts, fmt.Errorf("call %d of %d: %w", i+1, n, err)
		}
		counts[r.GetService()+" "+r.GetVersion()]++
	}
	return counts, nil
}

// chat sends n messages on one stream: every reply comes from the workload
// the stream was routed to when it opened.
func chat(ctx context.Context, c demov1.DemoServiceClient, n int) (map[string]int, error) {
	counts := map[string]int{}
	stream, err := c.Chat(ctx)
	if err != nil {
		return counts, fmt.Errorf("open chat: %w", err)
	}
	for i := range n {
		if err := stream.Send(&demov1.ChatRequest{Text: fmt.Sprint("message ", i+1)}); err != nil {
			return counts, fmt.Errorf("send %d: %w", i+1, err)
		}
		r, err := stream.Recv()
		if err != nil {
			return counts, fmt.Errorf("receive %d: %w", i+1, err)
		}
		if r.GetSequence() != int64(i+1) {
			return counts, fmt.Errorf("reply %d has sequence %d", i+1, r.GetSequence())
		}
		counts[r.GetService()+" "+r.GetVersion()]++
	}
	if err := stream.CloseSend(); err != nil {
		return counts, err
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		return counts, fmt.Errorf("end of chat: %v, want EOF", err)
	}
	return counts, nil
}

func printCounts(w io.Writer, counts map[string]int) {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "%6d %s\n", counts[k], strings.TrimSpace(k))
	}
}
