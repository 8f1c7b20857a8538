#!/usr/bin/env bash
# The S3 tier over loopback, through FUSE: a file of SIZE_MIB random MiB
# (default 800) is pushed to a VersityGW bucket by `add --s3` from repo A;
# repo B, empty, mounts with --s3 and reads it cold through .ipfs/<cid>;
# A, mounted, reads it cold from its own store. Prints the push time, both
# read rates, their ratio, and the S3 requests per GB of B's status. The
# ratios against the same client's plain PUTs and ranged GETs are measured
# by `IPFRS_S3_BENCH_MB=800 go test -run TestBenchTier -v ./s3tier/`.
# Usage: scripts/bench-s3.sh [SIZE_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-800}
go=$(./scripts/setup.sh)
tmp=$(mktemp -d)
bin=$tmp/ipfrs-mount
vgw_pid=""
cleanup() {
  for m in "$tmp/ma" "$tmp/mb"; do
    mountpoint -q "$m" 2>/dev/null && { "$bin" unmount "$m" >/dev/null 2>&1 || fusermount3 -u "$m"; }
  done
  [ -n "$vgw_pid" ] && kill "$vgw_pid" 2>/dev/null && wait "$vgw_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
"$go" build -o "$bin" ./cmd/ipfrs-mount
mkdir "$tmp/ma" "$tmp/mb" "$tmp/vgw"
port=$((20000 + RANDOM % 20000))
bin/versitygw --quiet --port "127.0.0.1:$port" --access bench --secret bench-secret posix "$tmp/vgw" >"$tmp/vgw.log" 2>&1 &
vgw_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret
s3="s3://bench/m?endpoint=http://127.0.0.1:$port"
head -c "${size}M" /dev/urandom >"$tmp/f.bin"
cid=$("$bin" --repo "$tmp/a" add -Q "$tmp/f.bin")
t0=$(date +%s.%N)
"$bin" --repo "$tmp/a" add -Q --s3 "$s3" "$tmp/f.bin" >/dev/null # pushes and waits
t1=$(date +%s.%N)
rm "$tmp/f.bin"
"$bin" --repo "$tmp/a" mount "$tmp/ma" --daemon 2>/dev/null
"$bin" --repo "$tmp/b" mount "$tmp/mb" --daemon --s3 "$s3" 2>/dev/null
read_mbs() { # path -> MB/s of one sequential read
  local t0 t1
  t0=$(date +%s.%N)
  dd if="$1" of=/dev/null bs=4M status=none
  t1=$(date +%s.%N)
  awk -v s="$size" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", s * 1.048576 / (b - a) }'
}
local_mbs=$(read_mbs "$tmp/ma/.ipfs/$cid")
s3_mbs=$(read_mbs "$tmp/mb/.ipfs/$cid")
reqs=$("$bin" --repo "$tmp/b" status --json | sed -n 's/.*"get_requests": *\([0-9]*\).*/\1/p')
echo "file: $size MiB, $cid"
awk -v s="$size" -v a="$t0" -v b="$t1" 'BEGIN { printf "push (add --s3, A):                   %.0f MB/s\n", s * 1.048576 / (b - a) }'
echo "local cold read (A's .ipfs):          $local_mbs MB/s"
echo "S3 cold read (B --s3):                $s3_mbs MB/s"
awk -v r="$s3_mbs" -v l="$local_mbs" 'BEGIN { printf "S3 / local: %.2f\n", r / l }'
awk -v n="$reqs" -v s="$size" 'BEGIN { printf "B: %d S3 requests, %.0f per GB read\n", n, n / (s * 1.048576 / 1000) }'
