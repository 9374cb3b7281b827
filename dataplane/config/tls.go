package config

import (
	"crypto/tls"
	"fmt"
)

// VersionRange maps TLS version bounds to crypto/tls ones for listeners and
// clusters alike. TLSAuto gives TLS 1.2 as the minimum and TLS 1.3 as the
// maximum, Envoy's defaults.
func VersionRange(lo, hi TLSVersion) (minVersion, maxVersion uint16, err error) {
	std := func(v TLSVersion) (uint16, bool) {
		switch v {
		case TLSAuto:
			return 0, true
		case TLS10:
			return tls.VersionTLS10, true
		case TLS11:
			return tls.VersionTLS11, true
		case TLS12:
			return tls.VersionTLS12, true
		case TLS13:
			return tls.VersionTLS13, true
		}
		return 0, false
	}
	minVersion, ok1 := std(lo)
	maxVersion, ok2 := std(hi)
	if !ok1 || !ok2 {
		return 0, 0, fmt.Errorf("tls: unknown version bound %d..%d", lo, hi)
	}
	if minVersion == 0 {
		minVersion = tls.VersionTLS12
	}
	if maxVersion == 0 {
		maxVersion = tls.VersionTLS13
	}
	if minVersion > maxVersion {
		return 0, 0, fmt.Errorf("tls: minimum version %s above maximum %s", lo, hi)
	}
	return minVersion, maxVersion, nil
}
