package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat. It is 100
// on every Linux architecture Go supports (the kernel exports it as a constant to
// user space), so we avoid cgo's sysconf(_SC_CLK_TCK).
const clockTicks = 100

// procStat is the part of /proc/<pid>/stat the bench uses.
type procStat struct {
	PPID  int
	UTime uint64 // clock ticks
	STime uint64 // clock ticks
}

// parseStat parses the contents of /proc/<pid>/stat. The command name (field 2)
// is in parentheses and may itself contain spaces and parentheses, so fields are
// counted from the last ')' (see proc(5)).
func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("stat: no ')' after comm")
	}
	// After ")": state(3) ppid(4) pgrp(5) session(6) tty_nr(7) tpgid(8) flags(9)
	// minflt(10) cminflt(11) majflt(12) cmajflt(13) utime(14) stime(15).
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("stat: %d fields after comm, want >= 13", len(f))
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, fmt.Errorf("stat: ppid: %w", err)
	}
	ut, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("stat: utime: %w", err)
	}
	st, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("stat: stime: %w", err)
	}
	return procStat{PPID: ppid, UTime: ut, STime: st}, nil
}

// memStatus is resident memory from /proc/<pid>/status, in KiB.
type memStatus struct {
	RSSKiB int64 // VmRSS: resident now
	HWMKiB int64 // VmHWM: peak resident since start
}

// parseStatus extracts VmRSS and VmHWM from the contents of /proc/<pid>/status.
func parseStatus(b []byte) (memStatus, error) {
	var m memStatus
	var seen int
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		var dst *int64
		switch {
		case strings.HasPrefix(line, "VmRSS:"):
			dst = &m.RSSKiB
		case strings.HasPrefix(line, "VmHWM:"):
			dst = &m.HWMKiB
		default:
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return memStatus{}, fmt.Errorf("status: malformed %q", line)
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return memStatus{}, fmt.Errorf("status: %q: %w", line, err)
		}
		*dst = v
		seen++
	}
	if seen != 2 {
		return memStatus{}, errors.New("status: VmRSS or VmHWM missing")
	}
	return m, nil
}

// procTree returns pid and all its descendants. nginx runs a master and a worker,
// and both count as "the proxy".
func procTree(pid int) []int {
	children := map[int][]int{}
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue // the process exited meanwhile
		}
		st, err := parseStat(b)
		if err != nil {
			continue
		}
		child, err := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		if err != nil {
			continue
		}
		children[st.PPID] = append(children[st.PPID], child)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// cpuTicks is the summed utime+stime of pids and their descendants.
func cpuTicks(pids []int) (uint64, error) {
	var sum uint64
	for _, root := range pids {
		for _, pid := range procTree(root) {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil {
				if pid == root {
					return 0, fmt.Errorf("proxy pid %d: %w", pid, err)
				}
				continue
			}
			st, err := parseStat(b)
			if err != nil {
				return 0, fmt.Errorf("pid %d: %w", pid, err)
			}
			sum += st.UTime + st.STime
		}
	}
	return sum, nil
}

// memTree sums VmRSS and VmHWM over pid and its descendants.
func memTree(pid int) (memStatus, error) {
	var sum memStatus
	for _, p := range procTree(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			if p == pid {
				return memStatus{}, fmt.Errorf("pid %d: %w", p, err)
			}
			continue
		}
		m, err := parseStatus(b)
		if err != nil {
			return memStatus{}, fmt.Errorf("pid %d: %w", p, err)
		}
		sum.RSSKiB += m.RSSKiB
		sum.HWMKiB += m.HWMKiB
	}
	return sum, nil
}
