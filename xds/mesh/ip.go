package mesh

import "net/netip"

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}
