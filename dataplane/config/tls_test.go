package config

import (
	"crypto/tls"
	"testing"
)

func TestVersionRange(t *testing.T) {
	tests := []struct {
		name           string
		lo, hi         TLSVersion
		wantLo, wantHi uint16
		wantErr        bool
	}{
		{"defaults", TLSAuto, TLSAuto, tls.VersionTLS12, tls.VersionTLS13, false},
		{"1.3 only", TLS13, TLSAuto, tls.VersionTLS13, tls.VersionTLS13, false},
		{"1.0 to 1.2", TLS10, TLS12, tls.VersionTLS10, tls.VersionTLS12, false},
		{"max below default min", TLSAuto, TLS11, 0, 0, true},
		{"unknown", TLSVersion(9), TLSAuto, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lo, hi, err := VersionRange(tt.lo, tt.hi)
			if (err != nil) != tt.wantErr || lo != tt.wantLo || hi != tt.wantHi {
				t.Errorf("VersionRange(%s, %s) = %#x, %#x, %v; want %#x, %#x, error %v", tt.lo, tt.hi, lo, hi, err, tt.wantLo, tt.wantHi, tt.wantErr)
			}
		})
	}
}
