#!/usr/bin/env python3
"""Writes a synthetic "photo" as binary PPM (stdlib only): gradients, a texture, hard
edges and per-pixel noise. Usage: image-gen.py WIDTH HEIGHT NOISE OUT.ppm
(NOISE 0-64: higher makes the JPEG harder to entropy-decode). Deterministic."""
import math
import random
import sys

w, h, noise, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rnd = random.Random(9)
rows = []
for y in range(h):
    row = bytearray(w * 3)
    fy = y / h
    for x in range(w):
        fx = x / w
        r = 90 + 120 * fx + 30 * math.sin(x / 23.0) * math.cos(y / 31.0)
        g = 60 + 150 * fy + 25 * math.sin((x + y) / 17.0)
        b = 170 - 110 * fx * fy + 20 * math.cos(x / 7.0 + y / 11.0)
        # Hard-edged shapes: a disc and a band.
        if (x - w * 0.3) ** 2 + (y - h * 0.4) ** 2 < (h * 0.18) ** 2:
            r, g, b = 230, 200 - 60 * fy, 40
        if abs(x - y * w / h * 0.8 - w * 0.45) < w * 0.02:
            r, g, b = 30, 30, 40
        n = rnd.randint(-noise, noise) if noise else 0
        i = 3 * x
        row[i] = max(0, min(255, int(r) + n))
        row[i + 1] = max(0, min(255, int(g) + n))
        row[i + 2] = max(0, min(255, int(b) + n))
    rows.append(bytes(row))
with open(out, "wb") as f:
    f.write(b"P6\n%d %d\n255\n" % (w, h))
    for r in rows:
        f.write(r)
