#!/usr/bin/env python3
"""p50/p99 of stat and readdir of unrelated paths on a mount while a
background command runs; usage: latency.py MNT LABEL -- CMD..."""
import os, subprocess, sys, time
mnt, label = sys.argv[1], sys.argv[2]
cmd = sys.argv[4:]
probe_dir = os.path.join(mnt, "probe")
probe_file = os.path.join(probe_dir, "f0")
st, rd = [], []
p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) if cmd else None
t_end = time.time() + 5
while (p and p.poll() is None) or (not p and time.time() < t_end):
    t0 = time.perf_counter(); os.stat(probe_file); t1 = time.perf_counter()
    os.listdir(probe_dir); t2 = time.perf_counter()
    # a fresh name each time: a lookup that reaches the daemon
    try:
        os.stat(os.path.join(probe_dir, "missing-%d" % len(st)))
    except FileNotFoundError:
        pass
    t3 = time.perf_counter()
    st.append(max(t1 - t0, t3 - t2)); rd.append(t2 - t1)
    time.sleep(0.002)
def q(a, f):
    a = sorted(a); return a[min(len(a) - 1, int(f * len(a)))] * 1000
rc = p.returncode if p else 0
print("%-28s n=%6d stat/lookup p50 %7.2f ms p99 %8.2f ms | readdir p50 %7.2f ms p99 %8.2f ms | rc %s" % (label, len(st), q(st, .5), q(st, .99), q(rd, .5), q(rd, .99), rc))
