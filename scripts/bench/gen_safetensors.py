#!/usr/bin/env python3
"""Writes a safetensors file of N one-element F32 tensors: gen_safetensors.py FILE N"""
import json, struct, sys
n = int(sys.argv[2])
hdr = {}
for i in range(n):
    hdr["t.%07d" % i] = {"dtype": "F32", "shape": [1], "data_offsets": [4*i, 4*i+4]}
h = json.dumps(hdr, separators=(",", ":")).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)))
    f.write(h)
    f.write(b"\x00\x00\x80\x3f" * n)
