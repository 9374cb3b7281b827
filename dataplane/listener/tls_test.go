package listener

import (
	"crypto/tls"
	"testing"

	"github.com/tinymesh/tinymesh/dataplane/config"
)

func TestVersions(t *testing.T) {
	tests := []struct {
		name           string
		lo, hi         config.TLSVersion
		wantLo, wantHi uint16
		wantErr        bool
	}{
		{"defaults", config.TLSAuto, config.TLSAuto, tls.VersionTLS12, tls.VersionTLS13, false},
		{"1.3 only", config.TLS13, config.TLSAuto, tls.VersionTLS13, tls.VersionTLS13, false},
		{"1.0 to 1.2", config.TLS10, config.TLS12, tls.VersionTLS10, tls.VersionTLS12, false},
		{"max below default min", config.TLSAuto, config.TLS11, 0, 0, true},
		{"unknown", config.TLSVersion(9), config.TLSAuto, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lo, hi, err := Versions(tt.lo, tt.hi)
			if (err != nil) != tt.wantErr || lo != tt.wantLo || hi != tt.wantHi {
				t.Errorf("Versions(%s, %s) = %#x, %#x, %v; want %#x, %#x, error %v", tt.lo, tt.hi, lo, hi, err, tt.wantLo, tt.wantHi, tt.wantErr)
			}
		})
	}
}

func TestServerConfigRequiresCAForClientCerts(t *testing.T) {
	if _, err := ServerConfig(&config.DownstreamTLS{Certificates: []config.CertificateKeyPair{{}}}); err == nil {
		t.Errorf("ServerConfig(empty PEM) error = nil, want a parse error")
	}
	if _, err := ServerConfig(&config.DownstreamTLS{}); err == nil {
		t.Errorf("ServerConfig(no certificate) error = nil, want an error")
	}
	if c, err := ServerConfig(nil); c != nil || err != nil {
		t.Errorf("ServerConfig(nil) = %v, %v; want nil, nil", c, err)
	}
}
