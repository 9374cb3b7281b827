package listener

import (
	"testing"

	"github.com/tinymesh/tinymesh/dataplane/config"
)

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
