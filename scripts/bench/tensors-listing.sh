#!/bin/bash
# Lists .tensors of a safetensors file with N tensors (default 1,000,000) on
# a fresh mount: time against a cold cat of the file, the daemon's peak
# RSS, and a listing killed midway. Usage (as root, from the repository root):
#   scripts/bench/tensors-listing.sh [BIN] [N]
set -u
HERE=$(dirname "$0")
BIN=${1:-bin/ipfrs-mount}; N=${2:-1000000}
SRC=$(mktemp /tmp/big.XXXX.safetensors); python3 $HERE/gen_safetensors.py $SRC $N
export IPFRS_PATH=$(mktemp -d /tmp/t1m-repo.XXXX); MNT=$(mktemp -d /tmp/t1m-mnt.XXXX)
$BIN mount --daemon --hot-cache 0 $MNT >/dev/null
cp $SRC $MNT/big.safetensors && sync
$BIN unmount $MNT >/dev/null; $BIN mount --daemon --hot-cache 0 $MNT >/dev/null
PID=$(pgrep -n -f "mount --daemon --hot-cache 0 $MNT")
D=$MNT/.tensors/big.safetensors
t() { local s=$(date +%s.%N); "$@" >/dev/null; echo "$(echo "$(date +%s.%N) - $s" | bc)"; }
echo "baseline: cat of the file through the mount (cold): $(t cat $MNT/big.safetensors) s"
$BIN unmount $MNT >/dev/null; $BIN mount --daemon --hot-cache 0 $MNT >/dev/null
PID=$(pgrep -n -f "mount --daemon --hot-cache 0 $MNT")
echo "ls -f | wc -l (first listing, builds the index): $(t sh -c "ls -f $D | wc -l") s, entries $(ls -f $D | wc -l)"
echo "ls -f again: $(t sh -c "ls -f $D | wc -l") s"
echo "daemon VmHWM after ls -f: $(grep VmHWM /proc/$PID/status)"
echo "ls -l (stat of every entry): $(t sh -c "ls -l $D | wc -l") s"
echo "stat of one tensor: $(t stat $D/t.0000000.npy) s"
echo "daemon VmHWM: $(grep VmHWM /proc/$PID/status)"
$BIN unmount $MNT >/dev/null; $BIN mount --daemon --hot-cache 0 $MNT >/dev/null
PID=$(pgrep -n -f "mount --daemon --hot-cache 0 $MNT")
ls -l $D > /dev/null & LS=$!  # a cold listing: reads and parses the header
sleep 1.5
s=$(date +%s.%N); kill -9 $LS; wait $LS 2>/dev/null
echo "interrupted ls -l: exited $(echo "$(date +%s.%N) - $s" | bc) s after SIGKILL"
s=$(date +%s.%N); $BIN unmount $MNT >/dev/null; echo "unmount after it: rc $? in $(echo "$(date +%s.%N) - $s" | bc) s"
rm -rf $IPFRS_PATH $MNT $SRC
