#!/usr/bin/env bash
# Measures the mount next to baselines taken in the same run:
# `scripts/bench-mount.sh MODEL_FILE [REPS]` (as root: it drops caches and
# mounts). Baselines: bench/memfs (an in-memory go-fuse filesystem mounted
# with the same options through fusefs.MountNode) and native ext4.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: scripts/bench-mount.sh MODEL_FILE [REPS]}
reps=${2:-3}
go=$(./scripts/setup.sh)
"$go" build -o bin/memfs ./bench/memfs
bin=$PWD/bin/ipfrs-mount
work=$(mktemp -d "${TMPDIR:-/tmp}/ipfrs-bench-mount.XXXXXX")
mnt=$work/mnt base=$work/base native=$work/native
mkdir -p "$mnt" "$base" "$native"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for m in "$mnt" "$base"; do mountpoint -q "$m" && umount -l "$m"; done
  rm -rf "$work"
}
trap cleanup EXIT
size=$(stat -c %s "$model")

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
timeit() { local s e; s=$(now); "$@" >/dev/null; e=$(now); echo "$e - $s" | bc -l; }
waitmount() { for _ in $(seq 100); do mountpoint -q "$1" && return; sleep 0.1; done; echo "no mount at $1" >&2; exit 1; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }

start_ipfrs() {
  "$bin" --repo "$work/repo" mount "$mnt" 2>>"$work/daemon.log" & pid=$!; pids+=("$pid"); waitmount "$mnt"
}
stop_pid() { kill "$1"; while kill -0 "$1" 2>/dev/null; do sleep 0.1; done; }
start_memfs() { bin/memfs "$base" & mpid=$!; pids+=("$mpid"); waitmount "$base"; }

# peak RssAnon/RssFile of pid while a command runs (shell builtins only)
peak_rss() {
  local pid=$1; shift
  "$@" >/dev/null & local job=$! anon=0 file=0 k v _
  while kill -0 "$job" 2>/dev/null; do
    while read -r k v _; do
      case $k in RssAnon:) [ "$v" -gt "$anon" ] && anon=$v ;; RssFile:) [ "$v" -gt "$file" ] && file=$v ;; esac
    done <"/proc/$pid/status"
    sleep 0.05
  done
  wait "$job"
  echo "$anon $file"
}

small_files() { # create+write+close of 10,000 4 KiB files in $1
  /usr/bin/python3 - "$1" <<'PY'
import os, sys
d = sys.argv[1]; os.makedirs(d, exist_ok=True); b = os.urandom(4096)
for i in range(10000):
    with open(os.path.join(d, "f%05d" % i), "wb") as f: f.write(b)
PY
}

cat "$model" >/dev/null
: >"$work/r"
for i in $(seq "$reps"); do
  rm -rf "$work/repo"; start_ipfrs; start_memfs
  c_nat=$(timeit cp "$model" "$native/m")
  c_base=$(timeit cp "$model" "$base/m")
  s=$(now); read -r anon file < <(peak_rss "$pid" cp "$model" "$mnt/m"); e=$(now)
  c_ipfrs=$(echo "$e - $s" | bc -l) # includes up to 50 ms of sampling latency
  s_base=$(timeit small_files "$base/small")
  s_ipfrs=$(timeit small_files "$mnt/small")
  stop_pid "$pid"; start_ipfrs
  drop; r_cold=$(timeit cat "$mnt/m")
  r_warm=$(timeit cat "$mnt/m")
  drop; b_cold=$(timeit cat "$base/m")
  b_warm=$(timeit cat "$base/m")
  cat "$native/m" >/dev/null; n_warm=$(timeit cat "$native/m")
  echo "$c_nat $c_base $c_ipfrs $s_base $s_ipfrs $r_cold $b_cold $r_warm $b_warm $n_warm $anon $file" >>"$work/r"
  stop_pid "$pid"; stop_pid "$mpid"; rm -f "$native/m"
done
col() { awk -v c="$1" '{print $c}' "$work/r" | median; }
mbs() { echo "$size / $1 / 1000000" | bc -l; }
r() { echo "$1 / $2" | bc -l; }
printf 'model %s (%d bytes), %d runs, medians; ratios are baseline time / ipfrs time (1.0 = as fast)\n' "$model" "$size" "$reps"
printf '  cp into the mount          %6.3f s  | memfs %6.3f s (ratio %.2f) | ext4 %6.3f s\n' "$(col 3)" "$(col 2)" "$(r "$(col 2)" "$(col 3)")" "$(col 1)"
printf '  10,000 x 4 KiB files       %6.3f s  | memfs %6.3f s (ratio %.2f)\n' "$(col 5)" "$(col 4)" "$(r "$(col 4)" "$(col 5)")"
printf '  cold read after remount    %6.3f s %5.0f MB/s | memfs cold %6.3f s (ratio %.2f)\n' "$(col 6)" "$(mbs "$(col 6)")" "$(col 7)" "$(r "$(col 7)" "$(col 6)")"
printf '  warm re-read               %6.3f s %5.0f MB/s | memfs %6.3f s (ratio %.2f) | ext4 page cache %6.3f s (ratio %.2f)\n' "$(col 8)" "$(mbs "$(col 8)")" "$(col 9)" "$(r "$(col 9)" "$(col 8)")" "$(col 10)" "$(r "$(col 10)" "$(col 8)")"
printf '  daemon peak RSS during cp  anon %.0f MiB, file-backed %.0f MiB\n' "$(col 11 | awk '{print $1/1024}')" "$(col 12 | awk '{print $1/1024}')"
