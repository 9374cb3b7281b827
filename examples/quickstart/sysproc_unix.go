//go:build unix && !linux

package main

import "syscall"

// childSysProcAttr puts each child in its own process group, so that Ctrl-C in
// the terminal reaches only the quickstart, which then stops the children in
// order.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
