package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
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

// matches reports whether s satisfies m.
func (m SANMatcher) matches(s string) bool {
	if m.Prefix != "" {
		return strings.HasPrefix(s, m.Prefix)
	}
	return s == m.Exact
}

// String formats m as "URI:spiffe://td/ns/a/sa/b" or "URI:spiffe://td/*".
func (m SANMatcher) String() string {
	if m.Prefix != "" {
		return m.Type.String() + ":" + m.Prefix + "*"
	}
	return m.Type.String() + ":" + m.Exact
}

// MatchCert reports whether a SAN of c of m's type satisfies m.
func (m SANMatcher) MatchCert(c *x509.Certificate) bool {
	if m.Type == SANDNS || m.Type == SANAny {
		if slices.ContainsFunc(c.DNSNames, m.matches) {
			return true
		}
	}
	if m.Type == SANURI || m.Type == SANAny {
		if slices.ContainsFunc(c.URIs, func(u *url.URL) bool { return m.matches(u.String()) }) {
			return true
		}
	}
	if m.Type == SANAny {
		if slices.ContainsFunc(c.EmailAddresses, m.matches) ||
			slices.ContainsFunc(c.IPAddresses, func(ip net.IP) bool { return m.matches(ip.String()) }) {
			return true
		}
	}
	return false
}

// CheckSANs returns nil when sans is empty or a SAN of leaf satisfies one of
// them, and otherwise an error that says, in SPIFFE terms when the matchers
// are all URIs, what the peer (its role: "server" or "client") presented and
// what was expected.
func CheckSANs(leaf *x509.Certificate, sans []SANMatcher, role string) error {
	if len(sans) == 0 || slices.ContainsFunc(sans, func(m SANMatcher) bool { return m.MatchCert(leaf) }) {
		return nil
	}
	want := make([]string, len(sans))
	allURI := true
	for i, m := range sans {
		want[i] = m.String()
		allURI = allURI && m.Type == SANURI
	}
	expected := "[" + strings.Join(want, " ") + "]"
	if allURI {
		for _, u := range leaf.URIs {
			if u.Scheme == "spiffe" {
				return fmt.Errorf("peer SPIFFE ID %s not in %s", u, expected)
			}
		}
		return fmt.Errorf("peer has no SPIFFE ID (SANs %s), want one of %s", describeSANs(leaf), expected)
	}
	return fmt.Errorf("%s certificate SANs %s match none of %s", role, describeSANs(leaf), expected)
}

func describeSANs(c *x509.Certificate) string {
	var s []string
	for _, d := range c.DNSNames {
		s = append(s, "DNS:"+d)
	}
	for _, u := range c.URIs {
		s = append(s, "URI:"+u.String())
	}
	for _, e := range c.EmailAddresses {
		s = append(s, "email:"+e)
	}
	for _, ip := range c.IPAddresses {
		s = append(s, "IP:"+ip.String())
	}
	return "[" + strings.Join(s, " ") + "]"
}
