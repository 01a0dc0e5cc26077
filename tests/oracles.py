"""Brute-force reference implementations (plain Python loops) of the layout, mask and RoPE rules.

They follow the written rules in docs/POSITION_ENCODING.md literally and share no code with
parallel/, so a test comparing the two checks the vectorised code against the specification.
"""

from __future__ import annotations

import math
import struct


def f32(x: float) -> float:
    """Round to float32: the product of two float32 values is exact in float64, so f32(a * b) is the
    float32 product, as torch computes it."""
    return struct.unpack("f", struct.pack("f", x))[0]


def brute_layout(samples, stride, align="left", offsets=None, cap=None, pad_id=0):
    """samples: [{"main": [ids] or None, "branches": [([ids], answer_offset), ...]}]; offsets: per sample,
    per branch extra start offsets. Returns per-sample dicts of lists (one entry per flat position)."""
    out = []
    for s, smp in enumerate(samples):
        main = smp.get("main") or []
        branches = smp["branches"]
        tokens = []  # (time, bid, order, token, coord)
        for j, t in enumerate(main):
            tokens.append((j, 0, j, t, 0))
        m = len(main)
        longest = max(len(b[0]) for b in branches)
        for k, (ids, _ans) in enumerate(branches):
            bid = k + 1
            coord = (bid if main else bid - 1) * stride
            start = m + (longest - len(ids) if align == "right" else 0)
            if offsets is not None:
                start += offsets[s][k]
            for j, t in enumerate(ids):
                tokens.append((start + j, bid, j, t, coord))
        tokens.sort(key=lambda x: (x[0], x[1]))
        dropped = 0
        if cap is not None and len(tokens) > cap:
            dropped = len(tokens) - cap
            tokens = tokens[:cap]
        kept = {}
        for (_, bid, order, _, _) in tokens:
            kept[bid] = max(kept.get(bid, 0), order + 1)
        seq = {"input_ids": [], "time": [], "branch": [], "coord": [], "labels": [], "dropped": dropped}
        lookup = {(bid, order): tok for (_, bid, order, tok, _) in tokens}
        for (time, bid, order, tok, coord) in tokens:
            seq["input_ids"].append(tok)
            seq["time"].append(time)
            seq["branch"].append(bid)
            seq["coord"].append(coord)
            label = -100
            if bid > 0:
                ans = branches[bid - 1][1]
                nxt = order + 1
                if nxt < kept[bid] and nxt >= ans:
                    label = lookup[(bid, nxt)]
            seq["labels"].append(label)
        out.append(seq)
    return out


def brute_mask(time, branch, mode):
    """time, branch: lists for one row (time -1 = pad). Returns a list of lists of bools."""
    T = len(time)
    rows = []
    for i in range(T):
        row = []
        for j in range(T):
            if i == j:
                row.append(True)
                continue
            ok = time[j] >= 0 and time[i] >= 0 and time[j] < time[i]
            if mode == "isolated":
                ok = ok and (branch[j] == branch[i] or branch[j] == 0)
            row.append(ok)
        rows.append(row)
    return rows


def brute_reference_rope(b, t, n, inv_freq, pairs_1based, scaling=1.0):
    """The original ParallelMind release's formula, per token and per pair: angle_i = n*f_i by default; for the
    k-th selected pair, b*f_i if k is even, t*f_i if k is odd. Returns (cos, sin) lists of length 2F."""
    F = len(inv_freq)
    ang = [f32(n * inv_freq[i]) for i in range(F)]
    for k, p in enumerate(pairs_1based):
        i = p - 1
        ang[i] = f32((b if k % 2 == 0 else t) * inv_freq[i])
    full = ang + ang
    return [math.cos(a) * scaling for a in full], [math.sin(a) * scaling for a in full]


def brute_additive_rope(b, t, inv_freq, pairs_1based):
    F = len(inv_freq)
    sel = {p - 1 for p in pairs_1based}
    ang = [f32(f32(t * inv_freq[i]) + (f32(b * inv_freq[i]) if i in sel else 0.0)) for i in range(F)]
    full = ang + ang
    return [math.cos(a) for a in full], [math.sin(a) for a in full]
