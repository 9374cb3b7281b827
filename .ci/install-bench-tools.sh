#!/usr/bin/env bash
# install-bench-tools.sh installs the load generators and reference proxies that
# `go run ./bench` drives. It is idempotent: each tool is installed only when its
# binary is missing, so CI can run it on every job. It never starts or enables the
# system services the Debian packages ship (the bench starts its own processes with
# its own configs and stops them by PID).
set -euo pipefail

GHZ_VERSION=v0.120.0
FORTIO_VERSION=v1.68.2
# h2spec is not a bench tool: e2e's TestH2Spec runs it against meshproxy and
# fails without it. Its expected failures are this version's.
H2SPEC_VERSION=v2.2.1+incompatible

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	SUDO="sudo"
fi

# Map each binary to the Debian package that provides it.
declare -A apt_pkg=(
	[wrk]=wrk
	[h2load]=nghttp2-client
	[nginx]=nginx
	[haproxy]=haproxy
	[caddy]=caddy
)

missing=()
for bin in wrk h2load nginx haproxy caddy; do
	if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ]; then
		missing+=("${apt_pkg[$bin]}")
	fi
done

if [ "${#missing[@]}" -gt 0 ]; then
	echo "install-bench-tools: apt-get install ${missing[*]}"
	# policy-rc.d exit code 101 tells invoke-rc.d not to start the services that
	# nginx/haproxy/caddy postinst scripts would otherwise start (we want no daemons).
	policy=/usr/sbin/policy-rc.d
	created_policy=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
		$SUDO chmod +x "$policy"
		created_policy=1
		trap '$SUDO rm -f "$policy"' EXIT
	fi
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
	if [ "$created_policy" -eq 1 ]; then
		$SUDO rm -f "$policy"
	fi
else
	echo "install-bench-tools: wrk, h2load, nginx, haproxy, caddy already present"
fi

# go install path@version builds in module mode outside our module, so go.mod is not touched.
gobin="$(go env GOBIN)"
if [ -z "$gobin" ]; then
	gobin="$(go env GOPATH)/bin"
fi

if ! command -v ghz >/dev/null 2>&1 && [ ! -x "$gobin/ghz" ]; then
	echo "install-bench-tools: go install ghz@$GHZ_VERSION"
	(cd / && go install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION")
else
	echo "install-bench-tools: ghz already present"
fi

if ! command -v fortio >/dev/null 2>&1 && [ ! -x "$gobin/fortio" ]; then
	echo "install-bench-tools: go install fortio@$FORTIO_VERSION"
	(cd / && go install "fortio.org/fortio@$FORTIO_VERSION")
else
	echo "install-bench-tools: fortio already present"
fi

if ! command -v h2spec >/dev/null 2>&1 && [ ! -x "$gobin/h2spec" ]; then
	echo "install-bench-tools: go install h2spec@$H2SPEC_VERSION"
	(cd / && go install "github.com/summerwind/h2spec/cmd/h2spec@$H2SPEC_VERSION")
else
	echo "install-bench-tools: h2spec already present"
fi

echo "install-bench-tools: done (Go tools in $gobin)"
