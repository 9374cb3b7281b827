package main

import "syscall"

// childSysProcAttr puts each child in its own process group, so that Ctrl-C in
// the terminal reaches only the quickstart, which then stops the children in
// order. Pdeathsig makes the kernel send SIGTERM to children if the quickstart
// itself dies without cleaning up (e.g. SIGKILL).
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
