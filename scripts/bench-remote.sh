#!/usr/bin/env bash
# Remote cold read over loopback against local cold read, both through
# .ipfs/<cid> of a fresh mount: repo A holds a file of SIZE_MIB random MiB
# (default 512) and serves it (serve, in A's mount daemon); repo B, empty,
# mounts with --remote and reads it. Prints both throughputs and the ratio.
# Usage: scripts/bench-remote.sh [SIZE_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-512}
go=$(./scripts/setup.sh)
tmp=$(mktemp -d)
bin=$tmp/ipfrs-mount
cleanup() {
  for m in "$tmp/ma" "$tmp/mb"; do
    mountpoint -q "$m" 2>/dev/null && { "$bin" unmount "$m" >/dev/null 2>&1 || fusermount3 -u "$m"; }
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
"$go" build -o "$bin" ./cmd/ipfrs-mount
mkdir "$tmp/ma" "$tmp/mb"
head -c "${size}M" /dev/urandom >"$tmp/f.bin"
cid=$("$bin" --repo "$tmp/a" add -Q "$tmp/f.bin")
rm "$tmp/f.bin"
"$bin" --repo "$tmp/a" mount "$tmp/ma" --daemon 2>/dev/null
url=$("$bin" --repo "$tmp/a" serve --gateway 127.0.0.1:0 2>/dev/null)
"$bin" --repo "$tmp/b" mount "$tmp/mb" --daemon --remote "$url" 2>/dev/null
read_mbs() { # path -> MB/s of one sequential read
  local t0 t1
  t0=$(date +%s.%N)
  dd if="$1" of=/dev/null bs=4M status=none
  t1=$(date +%s.%N)
  awk -v s="$size" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", s * 1.048576 / (b - a) }'
}
local_mbs=$(read_mbs "$tmp/ma/.ipfs/$cid")
remote_mbs=$(read_mbs "$tmp/mb/.ipfs/$cid")
again_mbs=$(read_mbs "$tmp/mb/.ipfs/$cid")
echo "file: $size MiB, $cid"
echo "local cold read (A's .ipfs):          $local_mbs MB/s"
echo "remote cold read (B --remote A):      $remote_mbs MB/s"
echo "B second read (kernel page cache):    $again_mbs MB/s"
awk -v r="$remote_mbs" -v l="$local_mbs" 'BEGIN { printf "remote / local: %.2f\n", r / l }'
