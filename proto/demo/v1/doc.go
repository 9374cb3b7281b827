// Package demov1 is the Go code buf generates from demo.proto (package demo.v1):
// messages and the DemoService client and server that examples/demoapp serves.
// Regenerate with `buf generate` from the repository root; do not edit the
// *.pb.go files. Generated clients and servers are safe for concurrent use;
// messages are not once shared.
package demov1
