package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// procSet owns the child processes the bench starts. It is used from the main
// goroutine only. stopAll signals exactly the PIDs it started (never by name).
type procSet struct {
	logDir string
	procs  []*child
}

// child is one started process and the channel closed when it has been reaped.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // set before done is closed
}

// start runs argv pinned to cpu (taskset -c; taskset execs, so the PID is the
// program's own), with extra environment env, stdout and stderr to
// logDir/name.log. cpu < 0 means unpinned.
func (s *procSet) start(name string, cpu int, env []string, argv ...string) (*child, error) {
	if cpu >= 0 {
		argv = append([]string{"taskset", "-c", strconv.Itoa(cpu)}, argv...)
	}
	logf, err := os.Create(filepath.Join(s.logDir, name+".log"))
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// If the bench dies without cleaning up (SIGKILL), the kernel sends SIGTERM to
	// its children, so no proxy outlives the run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s (%v): %w", name, argv, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	s.procs = append(s.procs, c)
	return c, nil
}

// pid is the child's process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// exited reports whether the child has already exited (then with its error).
func (c *child) exited() (bool, error) {
	select {
	case <-c.done:
		return true, c.err
	default:
		return false, nil
	}
}

// stopAll sends SIGTERM to every started child still running, in reverse start
// order, waits up to 5 s for each, then SIGKILLs it.
func (s *procSet) stopAll() error {
	var errs []error
	for i := len(s.procs) - 1; i >= 0; i-- {
		c := s.procs[i]
		if done, _ := c.exited(); done {
			continue
		}
		c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			c.cmd.Process.Kill()
			<-c.done
			errs = append(errs, fmt.Errorf("%s (pid %d) ignored SIGTERM, killed", c.name, c.pid()))
		}
	}
	s.procs = nil
	return errors.Join(errs...)
}
