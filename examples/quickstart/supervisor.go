package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// supervisor starts child processes, relays their output, notices when one
// exits and stops them all by PID.
//
// Its methods are called from run's goroutine only; each child has one waiter
// goroutine (and exec's output copier), which end when the child has exited.
type supervisor struct {
	// set in newSupervisor, read-only after
	out    *lockedWriter // role-prefixed output when logDir is ""
	logDir string
	// dead receives each child that exits, in order of exit. Its capacity
	// covers every child, so waiters never block.
	dead chan *child

	procs []*child // in start order
}

// maxChildren bounds how many processes one supervisor starts (dead's capacity).
const maxChildren = 16

// child is one started process.
type child struct {
	role string
	cmd  *exec.Cmd
	logs io.Closer // the log file, if any
	done chan struct{}
	// err is cmd.Wait's result; written before done is closed.
	err error
}

func newSupervisor(stderr io.Writer, logDir string) *supervisor {
	return &supervisor{
		out:    &lockedWriter{w: stderr},
		logDir: logDir,
		dead:   make(chan *child, maxChildren),
	}
}

// exited delivers children as they exit; before stopAll, that is unexpected.
func (s *supervisor) exited() <-chan *child { return s.dead }

// start runs path with args as role. Its output goes to <logDir>/<role>.log, or
// to the supervisor's writer with each line prefixed by the role.
func (s *supervisor) start(role, path string, args ...string) (*child, error) {
	if len(s.procs) == maxChildren {
		return nil, fmt.Errorf("start %s: more than %d processes", role, maxChildren)
	}
	cmd := exec.Command(path, args...)
	cmd.SysProcAttr = childSysProcAttr()
	// Bound how long Wait waits for output after exit, in case the child left a
	// grandchild holding the pipe.
	cmd.WaitDelay = 2 * time.Second
	c := &child{role: role, cmd: cmd, done: make(chan struct{})}
	var pw *prefixWriter
	if s.logDir != "" {
		f, err := os.Create(filepath.Join(s.logDir, role+".log"))
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", role, err)
		}
		cmd.Stdout, cmd.Stderr, c.logs = f, f, f
	} else {
		pw = &prefixWriter{prefix: []byte(fmt.Sprintf("%-18s| ", role)), out: s.out}
		// The same comparable writer for both: exec then uses one pipe and one
		// copier, so lines are not interleaved within a child.
		cmd.Stdout, cmd.Stderr = pw, pw
	}
	if err := cmd.Start(); err != nil {
		if c.logs != nil {
			c.logs.Close()
		}
		return nil, fmt.Errorf("start %s (%s): %w", role, path, err)
	}
	s.procs = append(s.procs, c)
	go func() {
		c.err = cmd.Wait()
		if pw != nil {
			pw.flush()
		}
		if c.logs != nil {
			c.logs.Close()
		}
		close(c.done)
		s.dead <- c
	}()
	return c, nil
}

// pid is the child's process ID.
func (c *child) pid() int { return c.cmd.Process.Pid }

// exitError describes an exit nobody asked for.
func (c *child) exitError() error {
	<-c.done
	if c.err == nil {
		return fmt.Errorf("%s (pid %d) exited early with status 0", c.role, c.pid())
	}
	return fmt.Errorf("%s (pid %d) exited early: %w", c.role, c.pid(), c.err)
}

// stopAll stops every child still running: the workloads first, then the
// control plane (the first child), so that sidecars do not log reconnect errors
// on the way down. Each gets SIGTERM, then SIGKILL after timeout. It returns an
// error naming children that had to be killed.
func (s *supervisor) stopAll(timeout time.Duration) error {
	if len(s.procs) == 0 {
		return nil
	}
	var errs []error
	if len(s.procs) > 1 {
		errs = append(errs, stopGroup(s.procs[1:], timeout)...)
	}
	errs = append(errs, stopGroup(s.procs[:1], timeout)...)
	return errors.Join(errs...)
}

// stopGroup signals every child in cs at once and waits for all of them.
func stopGroup(cs []*child, timeout time.Duration) []error {
	for _, c := range cs {
		select {
		case <-c.done:
		default:
			// An error here means the process is already gone; Wait reports it.
			_ = c.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var errs []error
	for _, c := range cs {
		select {
		case <-c.done:
		case <-deadline.C:
			// The timer fired once; everything still running is killed now.
			deadline.Reset(0)
			_ = c.cmd.Process.Kill()
			<-c.done
			errs = append(errs, fmt.Errorf("%s (pid %d) did not exit within %s of SIGTERM; killed", c.role, c.pid(), timeout))
		}
	}
	return errs
}

// lockedWriter serialises whole writes from several children.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// prefixWriter writes each complete line with a prefix. It is used by one
// exec copier goroutine, then flushed by the waiter after that goroutine ended.
type prefixWriter struct {
	prefix []byte
	out    io.Writer
	buf    []byte // incomplete last line
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			p.buf = append(p.buf, b...)
			break
		}
		line := make([]byte, 0, len(p.prefix)+len(p.buf)+i+1)
		line = append(append(append(line, p.prefix...), p.buf...), b[:i+1]...)
		p.buf = p.buf[:0]
		b = b[i+1:]
		if _, err := p.out.Write(line); err != nil {
			return n - len(b), err
		}
	}
	return n, nil
}

func (p *prefixWriter) flush() {
	if len(p.buf) > 0 {
		p.Write([]byte{'\n'})
	}
}
