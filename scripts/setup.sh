#!/usr/bin/env bash
# Installs what ipfrs-mount needs on Debian (as root, or with sudo), fetches
# the Go toolchain go.mod names if none is installed, and builds
# bin/ipfrs-mount. Safe to run again. Prints the go binary it used last.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
pkgs="ca-certificates curl unzip git fuse3 time rsync sqlite3 fio stress-ng dbench attr python3-numpy python3-torch"
missing=""
for p in $pkgs; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing$missing" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# Go: the version go.mod asks for, from PATH, /usr/local/go, or the module
# proxy's toolchain archive (the one registry every Go install can reach).
want=$(awk '/^go /{print $2}' go.mod)
version_ok() {
  local v
  v=$(GOTOOLCHAIN=local "$1" env GOVERSION 2>/dev/null) || return 1
  [ "$(printf '%s\n%s\n' "$want" "${v#go}" | sort -V | head -1)" = "$want" ]
}
go=""
for cand in "$(command -v go || true)" /usr/local/go/bin/go "$HOME/.cache/ipfrs-go/go$want/bin/go"; do
  if [ -n "$cand" ] && [ -x "$cand" ] && version_ok "$cand"; then go=$cand; break; fi
done
if [ -z "$go" ]; then
  dir="$HOME/.cache/ipfrs-go"
  zip="$dir/go$want.zip"
  mkdir -p "$dir"
  echo "setup: fetching Go $want from proxy.golang.org" >&2
  curl -sSfL -o "$zip" "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go$want.linux-amd64.zip"
  rm -rf "$dir/unpack" && mkdir -p "$dir/unpack"
  unzip -q "$zip" -d "$dir/unpack"
  rm -rf "$dir/go$want"
  mv "$dir/unpack/golang.org/toolchain@v0.0.1-go$want.linux-amd64" "$dir/go$want"
  chmod +x "$dir/go$want/bin/"* "$dir/go$want/pkg/tool/"*/* 2>/dev/null || true
  rm -rf "$dir/unpack" "$zip"
  go="$dir/go$want/bin/go"
fi

GOFLAGS=-buildvcs=false "$go" build -o bin/ipfrs-mount ./cmd/ipfrs-mount

# VersityGW, the real S3 server (POSIX backend) that the S3-tier tests start
# on 127.0.0.1 (s3tier/s3test finds it in bin/), from the Go module proxy.
vgw=v1.8.0
if ! { [ -x bin/versitygw ] && "$go" version -m bin/versitygw 2>/dev/null | grep -q "versitygw[[:space:]]*$vgw"; }; then
  echo "setup: installing versitygw $vgw" >&2
  GOBIN="$PWD/bin" GOFLAGS=-buildvcs=false "$go" install "github.com/versity/versitygw/cmd/versitygw@$vgw" >&2
fi
echo "$go"
