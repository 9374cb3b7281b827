//go:build !unix

package main

import "syscall"

// childSysProcAttr has nothing to set where process groups do not exist.
func childSysProcAttr() *syscall.SysProcAttr { return nil }
