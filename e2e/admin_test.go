package e2e

import (
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestAdminListensOnLocalhostByDefault starts a proxy without --admin and checks,
// from the kernel's socket table, that the only socket it listens on is the
// documented default 127.0.0.1:15000 (not 0.0.0.0 or ::).
func TestAdminListensOnLocalhostByDefault(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:15000")
	if err != nil {
		t.Skipf("127.0.0.1:15000 is taken by another process, cannot test the default admin address: %v", err)
	}
	ln.Close()
	cp := startControlPlane(t, controlPlaneOptions{model: map[string]string{
		"services.yaml": serviceYAML("backend", "app=backend", 8080, "http"),
	}})
	p := startProxy(t, cp, proxyOptions{workload: "lonely", labels: "app=lonely", noAdmin: true})

	got := listeningAddrs(t, p.proc.pid())
	want := []string{"127.0.0.1:15000"}
	if !slices.Equal(got, want) {
		t.Errorf("meshproxy without --admin (and no inbound/outbound) listens on %v, want %v", got, want)
	}
}

// listeningAddrs returns the sorted local addresses of the TCP sockets in LISTEN
// state that process pid holds, read from /proc.
func listeningAddrs(t *testing.T, pid int) []string {
	t.Helper()
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		t.Fatalf("listing the proxy's sockets: %v", err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if inode, ok := strings.CutPrefix(target, "socket:["); ok {
			inodes[strings.TrimSuffix(inode, "]")] = true
		}
	}
	var addrs []string
	for _, table := range []string{"tcp", "tcp6"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] { // 0A: TCP_LISTEN
				continue
			}
			addr, err := parseProcAddr(f[1])
			if err != nil {
				t.Fatalf("/proc/net/%s: %v", table, err)
			}
			addrs = append(addrs, addr)
		}
	}
	slices.Sort(addrs)
	return addrs
}

// parseProcAddr decodes /proc/net/tcp's "0100007F:3A98": the IP as 32-bit words
// in host (little-endian) order, the port big-endian, both in hex.
func parseProcAddr(s string) (string, error) {
	ipHex, portHex, ok := strings.Cut(s, ":")
	if !ok {
		return "", fmt.Errorf("address %q: no port", s)
	}
	raw, err := hex.DecodeString(ipHex)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return "", fmt.Errorf("address %q: bad IP", s)
	}
	for i := 0; i < len(raw); i += 4 {
		slices.Reverse(raw[i : i+4])
	}
	port, err := strconv.ParseUint(portHex, 16, 16)
	if err != nil {
		return "", fmt.Errorf("address %q: bad port", s)
	}
	return net.JoinHostPort(net.IP(raw).String(), strconv.Itoa(int(port))), nil
}

func TestParseProcAddr(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"0100007F:3A98", "127.0.0.1:15000"},
		{"00000000:1F90", "0.0.0.0:8080"},
		{"00000000000000000000000000000000:0050", "[::]:80"},
		{"00000000000000000000000001000000:3A98", "[::1]:15000"},
	} {
		got, err := parseProcAddr(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseProcAddr(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
