package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// helperEnv makes the test binary act as a child process (see TestMain).
const helperEnv = "QUICKSTART_TEST_HELPER"

// helperProcess is the body of a child process:
//
//	serve:        print two lines, then run until SIGTERM and exit 0
//	stubborn:     print a line, then ignore SIGTERM (needs SIGKILL)
//	crash:        print a partial line and exit 3 at once
func helperProcess(mode string) {
	switch mode {
	case "serve":
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		fmt.Println("line one")
		fmt.Fprintln(os.Stderr, "line two")
		<-term
		os.Exit(0)
	case "stubborn":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ignoring SIGTERM")
		select {}
	case "crash":
		fmt.Print("no newline")
		os.Exit(3)
	}
	os.Exit(99)
}

// startHelper starts the test binary as a child in the given mode.
func startHelper(t *testing.T, s *supervisor, role, mode string) *child {
	t.Helper()
	t.Setenv(helperEnv, mode)
	c, err := s.start(role, os.Args[0], "-test.run=^$")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitOutput waits until out holds want, failing after a deadline.
func waitOutput(t *testing.T, out *syncBuffer, want string) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for !strings.Contains(out.String(), want) {
		select {
		case <-out.changed:
		case <-deadline.C:
			t.Fatalf("output %q does not contain %q after 10s", out.String(), want)
		}
	}
}

func TestSupervisorStopsGracefully(t *testing.T) {
	out := newSyncBuffer()
	s := newSupervisor(out, "")
	cp := startHelper(t, s, "controlplane", "serve")
	app := startHelper(t, s, "app", "serve")
	waitOutput(t, out, "app               | line two")

	if err := s.stopAll(10 * time.Second); err != nil {
		t.Fatalf("stopAll = %v, want nil", err)
	}
	for _, c := range []*child{cp, app} {
		if c.err != nil {
			t.Errorf("%s exit = %v, want status 0 after SIGTERM", c.role, c.err)
		}
		select {
		case <-c.done: // Wait returned: the process was reaped
		default:
			t.Errorf("%s (pid %d) not reaped after stopAll", c.role, c.pid())
		}
	}
	for _, want := range []string{"controlplane      | line one\n", "app               | line two\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output %q lacks %q", out.String(), want)
		}
	}
}

func TestSupervisorKillsStubborn(t *testing.T) {
	out := newSyncBuffer()
	s := newSupervisor(out, "")
	c := startHelper(t, s, "stubborn", "stubborn")
	waitOutput(t, out, "ignoring SIGTERM")

	start := time.Now()
	err := s.stopAll(300 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("stopAll = %v, want an error saying stubborn was killed", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("stopAll took %v, want about the 300ms timeout", elapsed)
	}
	if c.err == nil || !strings.Contains(c.err.Error(), "killed") {
		t.Errorf("stubborn exit = %v, want signal: killed", c.err)
	}
}

func TestSupervisorReportsEarlyExit(t *testing.T) {
	logDir := t.TempDir()
	s := newSupervisor(io.Discard, logDir)
	startHelper(t, s, "crasher", "crash")
	select {
	case c := <-s.exited():
		err := c.exitError()
		if err == nil || !strings.Contains(err.Error(), "crasher (pid ") || !strings.Contains(err.Error(), "exit status 3") {
			t.Errorf("exitError = %v, want one naming crasher, its pid and exit status 3", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit reported within 10s")
	}
	if err := s.stopAll(time.Second); err != nil {
		t.Errorf("stopAll after exit = %v, want nil", err)
	}
	b, err := os.ReadFile(filepath.Join(logDir, "crasher.log"))
	if err != nil || string(b) != "no newline" {
		t.Errorf("crasher.log = %q, %v; want %q", b, err, "no newline")
	}
}

func TestPrefixWriter(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   string
	}{
		{"whole lines", []string{"a\nb\n"}, "r| a\nr| b\n"},
		{"split line", []string{"he", "llo\nwor", "ld\n"}, "r| hello\nr| world\n"},
		{"partial tail flushed", []string{"x\ny"}, "r| x\nr| y\n"},
		{"empty lines", []string{"\n\n"}, "r| \nr| \n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			p := &prefixWriter{prefix: []byte("r| "), out: &out}
			for _, w := range tt.writes {
				if n, err := p.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write(%q) = %d, %v; want %d, nil", w, n, err, len(w))
				}
			}
			p.flush()
			if diff := cmp.Diff(tt.want, out.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLayout(t *testing.T) {
	l := layoutAt(15100)
	seen := map[string]string{l.XDS: "xds"}
	for _, w := range l.Workloads {
		for what, a := range map[string]string{"inbound": w.Inbound, "app": w.AppAddr, "outbound": w.Outbound, "admin": w.Admin} {
			if prev, dup := seen[a]; dup {
				t.Errorf("%s %s %s reuses the address of %s", w.Name, what, a, prev)
			}
			seen[a] = w.Name + " " + what
		}
	}
	got := []string{l.XDS, l.EntryURL(), l.Workloads[1].Labels(), l.Workloads[2].Admin}
	want := []string{"127.0.0.1:15100", "http://127.0.0.1:15110/", "app=backend,version=v1", "127.0.0.1:15133"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("layout (-want +got):\n%s", diff)
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"--base-port", "80"}, "--base-port 80"},
		{[]string{"--base-port", "65530"}, "--base-port 65530"},
		{[]string{"--xds-mode", "rest"}, "--xds-mode"},
		{[]string{"--duration", "-1s"}, "--duration"},
		{[]string{"stray"}, "unexpected arguments"},
		{[]string{"--base-port", "20000", "--duration", "1s"}, ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := parseFlags(tt.args, io.Discard)
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("err = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestRepoRoot(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "examples", "quickstart", "mesh", "backend-route.yaml")); err != nil {
		t.Errorf("repoRoot() = %s, which has no examples/quickstart/mesh/backend-route.yaml: %v", root, err)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers and readers that
// signals changed after each write.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // capacity 1: a pending "something was written"
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{}, 1)} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case b.changed <- struct{}{}:
	default:
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
