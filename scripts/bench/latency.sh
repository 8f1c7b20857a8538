#!/bin/bash
# p50/p99 latency of stat, lookup and readdir of unrelated paths on a fresh
# mount while a big file is written and fsynced, a tree of many files is
# committed, and gc sweeps. Usage (as root, from the repository root):
#   scripts/bench/latency.sh [BIN] [BIG_MIB] [NFILES]
# (defaults: bin/ipfrs-mount, 2048, 100000). Needs python3.
set -u
HERE=$(dirname "$0")
BIN=${1:-bin/ipfrs-mount}; BIGMB=${2:-2048}; NFILES=${3:-100000}
export IPFRS_PATH=$(mktemp -d /tmp/lat-repo.XXXX); MNT=$(mktemp -d /tmp/lat-mnt.XXXX)
$BIN mount --daemon --hot-cache 0 $MNT >/dev/null
mkdir -p $MNT/probe && for i in $(seq 0 99); do echo $i > $MNT/probe/f$i; done
python3 $HERE/latency_probe.py $MNT "idle (baseline)" --
SRC=$(mktemp /tmp/lat-src.XXXX); head -c ${BIGMB}M /dev/urandom > $SRC
python3 $HERE/latency_probe.py $MNT "write+fsync ${BIGMB} MiB file" -- sh -c "cp $SRC $MNT/big && sync $MNT/big"
mkdir $MNT/many && python3 -c "
import os
for d in range($NFILES//1000):
    os.mkdir('$MNT/many/%d' % d)
    for i in range(1000):
        open('$MNT/many/%d/%d' % (d, i), 'w').write(str(i))
"
python3 $HERE/latency_probe.py $MNT "commit of $NFILES-file tree" -- $BIN commit -m many
rm -f $MNT/big && $BIN commit -m nobig >/dev/null
python3 $HERE/latency_probe.py $MNT "gc (sweeps ${BIGMB} MiB)" -- $BIN gc --min-age 0s --prune-commits-older-than 0s
$BIN unmount $MNT >/dev/null
rm -rf $IPFRS_PATH $MNT $SRC
