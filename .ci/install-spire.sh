#!/usr/bin/env bash
# install-spire.sh builds spire-server and spire-agent at a pinned version and caches
# them by version, so a machine builds them once (about 6 minutes cold). The SPIRE
# module's version list is not served by the module proxy here, so `go install
# ...@v1.13.3` is refused; building from a throwaway module that requires the exact
# version works. Nothing of SPIRE is committed to this repository.
#
# Prints the directory holding both binaries; the identity e2e tests find it through
# TINYMESH_SPIRE_DIR or this same default path.
set -euo pipefail

SPIRE_VERSION=v1.13.3
dest="${TINYMESH_SPIRE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tinymesh/spire-$SPIRE_VERSION}"

if [ -x "$dest/spire-server" ] && [ -x "$dest/spire-agent" ]; then
	echo "$dest"
	exit 0
fi

mkdir -p "$dest"
work="$(mktemp -d)"
# Built next to $dest (same file system), so the moves below are renames.
out="$(mktemp -d "$dest/.build.XXXXXX")"
trap 'rm -rf "$work" "$out"' EXIT
(
	cd "$work"
	go mod init spirebuild >/dev/null 2>&1
	go get "github.com/spiffe/spire/cmd/spire-server@$SPIRE_VERSION" "github.com/spiffe/spire/cmd/spire-agent@$SPIRE_VERSION" >&2
	# sqlite3 (the datastore the tests use) needs cgo.
	CGO_ENABLED=1 go build -o "$out/" github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent >&2
)
# Move both in only once both are built, so an interrupted build is redone
# rather than half-cached.
mv -f "$out/spire-server" "$out/spire-agent" "$dest/"
echo "$dest"
