#!/usr/bin/env bash
# Stored size of a real training run's checkpoints (issue 14):
# `scripts/bench-checkpoints.sh [CHECKPOINTS] [STEPS_BETWEEN] [HIDDEN]` trains
# a small model with torch (CPU, AdamW; integration/testdata/train_checkpoints.py),
# saving bf16 model.safetensors and torch.save optimizer.pt per checkpoint,
# then adds the checkpoints in order into fresh repos (weights only,
# optimizer only, both) with the defaults and with --compress=false, and
# prints stored/raw for each.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-6} every=${2:-5} hidden=${3:-256}
go build -o bin/ipfrs-mount ./cmd/ipfrs-mount
bin=$PWD/bin/ipfrs-mount
work=$(mktemp -d "${TMPDIR:-/tmp}/ipfrs-ckpt.XXXXXX")
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 integration/testdata/train_checkpoints.py "$work/out" "$work/ref" "$n" "$every" "$hidden" >/dev/null
rm -rf "$work/out"
for mode in default plain; do
  flags=(); [ $mode = plain ] && flags=(--compress=false)
  for part in model.safetensors optimizer.pt both; do
    repo=$work/repo-$mode-$part; raw=0
    for d in $(ls "$work/ref" | sort -t- -k2 -n); do
      for f in model.safetensors optimizer.pt; do
        [ $part = both ] || [ $part = $f ] || continue
        "$bin" --repo "$repo" add -Q "${flags[@]}" "$work/ref/$d/$f" >/dev/null
        raw=$((raw + $(stat -c %s "$work/ref/$d/$f")))
      done
    done
    st=$("$bin" --repo "$repo" stat --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["stored_bytes"])')
    echo "$mode $part: raw $raw stored $st ratio $(python3 -c "print(round($st/$raw, 3))")"
  done
done
