#!/usr/bin/env bash
# Measures what compression and tensor deltas (issue 14) store and cost, in
# one run: `scripts/bench-deltas.sh MODELS_DIR [BASELINE_BIN]`, where
# MODELS_DIR comes from `/usr/bin/python3 ../shared/bench/gen_models.py
# MODELS_DIR 1.0`. For the defaults and for --compress=false (and, given a
# binary built from an earlier commit, for its defaults): add the family in
# order (base, finetune, step2, reordered) into a fresh repo, timing each
# add; the stored bytes; a cold read (a new process: `cat`) of step2, which
# the defaults store as deltas against base; then a mount with the defaults
# and `cp` of step2 into it, sampling the daemon's RssAnon.
set -euo pipefail
cd "$(dirname "$0")/.."
models=${1:?usage: scripts/bench-deltas.sh MODELS_DIR [BASELINE_BIN]}
baseline=${2:-}
go build -o bin/ipfrs-mount ./cmd/ipfrs-mount
bin=$PWD/bin/ipfrs-mount
work=$(mktemp -d "${TMPDIR:-/tmp}/ipfrs-deltas.XXXXXX")
trap 'fusermount3 -u "$work/mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
cat "$models"/*.safetensors >/dev/null

now() { date +%s.%N; }
family() { # NAME BIN [FLAGS]
  local name=$1 b=$2 repo=$work/repo-$1 t0 t total=0; shift 2
  printf '%-10s add:' "$name"
  for f in base finetune step2 reordered; do
    t0=$(now)
    "$b" --repo "$repo" add -Q "$@" "$models/$f.safetensors" >"$work/$name-$f.cid"
    t=$(echo "$(now) - $t0" | bc -l); total=$(echo "$total + $t" | bc -l)
    printf ' %s %.2f s' "$f" "$t"
  done
  printf ' | total %.2f s | stored %s MiB' "$total" \
    "$("$b" --repo "$repo" stat --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["stored_bytes"] >> 20)')"
  local cid; cid=$(cat "$work/$name-step2.cid")
  printf ' | cold cat step2:'
  for _ in 1 2 3; do
    t0=$(now); "$b" --repo "$repo" cat "$cid" >/dev/null
    printf ' %.2f s' "$(echo "$(now) - $t0" | bc -l)"
  done
  echo
}
family plain "$bin" --compress=false
family default "$bin"
[ -n "$baseline" ] && family baseline "$baseline"

# The daemon's anonymous memory while a model is written into the mount.
mkdir -p "$work/mnt"
"$bin" --repo "$work/repo-mount" mount "$work/mnt" &
pid=$!
for _ in $(seq 100); do mountpoint -q "$work/mnt" && break; sleep 0.1; done
cp "$models/base.safetensors" "$work/mnt/" # a base for step2's deltas
peak=0
( cp "$models/step2.safetensors" "$work/mnt/model.safetensors" && sync "$work/mnt/model.safetensors" ) &
cpid=$!
while kill -0 $cpid 2>/dev/null; do
  v=$(awk '/RssAnon/ {print $2}' /proc/$pid/status); [ "$v" -gt "$peak" ] && peak=$v
  sleep 0.1
done
cmp "$models/step2.safetensors" "$work/mnt/model.safetensors"
echo "mount: peak daemon RssAnon during cp of step2: $((peak / 1024)) MiB"
kill $pid; wait $pid || true
