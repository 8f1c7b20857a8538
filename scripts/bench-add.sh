#!/usr/bin/env bash
# Measures add and cat of a model family next to native reads of the same
# files, in one run: `scripts/bench-add.sh MODELS_DIR [REPS]`, where
# MODELS_DIR comes from `/usr/bin/python3 ../shared/bench/gen_models.py MODELS_DIR 1.0`.
# Every add goes into a fresh repo under $TMPDIR (or /tmp). Page cache is warm
# for the source files (the same for the native baseline).
set -euo pipefail
cd "$(dirname "$0")/.."
models=${1:?usage: scripts/bench-add.sh MODELS_DIR [REPS]}
reps=${2:-5}
./scripts/setup.sh >/dev/null
bin=$PWD/bin/ipfrs-mount
base=$models/base.safetensors
size=$(stat -c %s "$base")
work=$(mktemp -d "${TMPDIR:-/tmp}/ipfrs-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
cat "$models"/*.safetensors >/dev/null

now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
range() { sort -g "$1" | awk 'NR==1{lo=$1} {hi=$1} END {printf "runs %.2f-%.2f s", lo, hi}'; }

# peak RssAnon and RssFile (KiB) of a running process, sampled every 100 ms
# with shell builtins only, so that sampling costs no CPU the add could use
watch_rss() {
  local pid=$1 anon=0 file=0 k v _
  while kill -0 "$pid" 2>/dev/null; do
    while read -r k v _; do
      case $k in
        RssAnon:) [ "$v" -gt "$anon" ] && anon=$v ;;
        RssFile:) [ "$v" -gt "$file" ] && file=$v ;;
      esac
    done <"/proc/$pid/status" 2>/dev/null || true
    sleep 0.1
  done
  echo "$anon $file"
}

: >"$work/native" >"$work/copy" >"$work/add" >"$work/cat" >"$work/anon" >"$work/file"
for i in $(seq "$reps"); do
  s=$(now); cat "$base" >/dev/null; e=$(now); secs "$s" "$e" >>"$work/native"
  # the durable-write floor: a copy on the same filesystem, fsynced (add syncs too)
  s=$(now); dd if="$base" of="$work/copy.bin" bs=4M conv=fsync status=none; e=$(now); secs "$s" "$e" >>"$work/copy"
  rm -f "$work/copy.bin"; sync
  repo=$work/repo-$i
  s=$(now)
  "$bin" --repo "$repo" add -Q "$base" >"$work/cid" & pid=$!
  read -r anon file < <(watch_rss $pid)
  wait $pid; e=$(now)
  secs "$s" "$e" >>"$work/add"; echo "$anon" >>"$work/anon"; echo "$file" >>"$work/file"
  s=$(now); "$bin" --repo "$repo" cat "$(cat "$work/cid")" >/dev/null; e=$(now); secs "$s" "$e" >>"$work/cat"
  rm -rf "$repo"; sync
done
nat=$(median <"$work/native"); cp_s=$(median <"$work/copy"); add=$(median <"$work/add"); cat_s=$(median <"$work/cat")
mb() { echo "$size / $1 / 1000000" | bc -l; }
printf 'file: %s (%d bytes), %d runs, medians\n' "$base" "$size" "$reps"
printf '  native cat > /dev/null   %6.3f s  %7.0f MB/s  %s\n' "$nat" "$(mb "$nat")" "$(range "$work/native")"
printf '  native copy + fsync      %6.3f s  %7.0f MB/s  %s\n' "$cp_s" "$(mb "$cp_s")" "$(range "$work/copy")"
printf '  add                      %6.3f s  %7.0f MB/s  %s  (%.2fx the copy + fsync)\n' "$add" "$(mb "$add")" "$(range "$work/add")" "$(echo "$add / $cp_s" | bc -l)"
printf '  cat > /dev/null          %6.3f s  %7.0f MB/s  %s  (%.2f of native MB/s)\n' "$cat_s" "$(mb "$cat_s")" "$(range "$work/cat")" "$(echo "$nat / $cat_s" | bc -l)"
printf '  add peak RssAnon         %6.0f MiB (max of runs)\n' "$(sort -g "$work/anon" | tail -1 | awk '{print $1/1024}')"
printf '  add peak RssFile         %6.0f MiB (value-log pages mapped while writing)\n' "$(sort -g "$work/file" | tail -1 | awk '{print $1/1024}')"

repo=$work/family
for f in base finetune step2 reordered; do
  s=$(now); "$bin" --repo "$repo" add -Q "$models/$f.safetensors" >/dev/null; e=$(now)
  printf '  add %-10s %6.3f s\n' "$f" "$(secs "$s" "$e")"
done
"$bin" --repo "$repo" stat --json | awk -F'[:,]' '
  /"logical_bytes"/ {l=$2} /"stored_bytes"/ {s=$2} /"disk_bytes"/ {d=$2}
  END {printf "  family: raw %.0f MiB, stored %.0f MiB (blocks), %.0f MiB on disk\n", l/1048576, s/1048576, d/1048576}'
