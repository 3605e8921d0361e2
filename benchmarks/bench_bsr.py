"""Speed of the BSR weight ops vs dense ``F.linear`` (and the dense backward matmuls).

Run: ``PYTHONPATH=. python benchmarks/bench_bsr.py [--blocks 4 8 16 32] [--sparsity 0.9]``.
Problem: X 65536x256, W 256x256, float32, 2 threads; a random fraction (1 - sparsity) of the
b x b blocks is stored. Each op and its dense counterpart are timed interleaved (round-robin)
in one process; the medians of ``--repeats`` rounds and their ratios are printed.

Dense counterparts: forward ``F.linear(x, W)``, dX ``gy @ W``, dW ``gy.T @ x`` (the dense
weight gradient; the SDDMM computes only the stored blocks of it).
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time

import torch
import torch.nn.functional as F

from gnnsparse import _ext, formats

# Reuse freed memory for the 64 MiB outputs (no fresh pages / page faults for either side).
_libc = ctypes.CDLL("libc.so.6")
_libc.mallopt(-4, 0)        # M_MMAP_MAX = 0
_libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD = 1 GiB


def _time(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--n", type=int, default=65536)
    ap.add_argument("--features", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ops", nargs="+", default=["fwd", "dx", "sddmm"])
    args = ap.parse_args()
    _ext.load()
    torch.set_num_threads(args.threads)
    ops = torch.ops.gnnsparse
    N, Fdim = args.n, args.features
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, Fdim, generator=g)
    gy = torch.randn(N, Fdim, generator=g)
    w_full = torch.randn(Fdim, Fdim, generator=g) / Fdim ** 0.5
    print(f"N={N} in=out={Fdim} float32 threads={args.threads} block sparsity={args.sparsity}")
    print(f"{'b':>3} {'op':>6} {'bsr ms':>9} {'dense ms':>9} {'speedup':>8}")
    for b in args.blocks:
        nb = Fdim // b
        keep = max(1, round(nb * nb * (1 - args.sparsity)))
        perm = torch.randperm(nb * nb, generator=g)[:keep]
        bmask = torch.zeros(nb * nb, dtype=torch.bool)
        bmask[perm] = True
        crow, col, vals = formats.block_mask_to_bsr(bmask.view(nb, nb), w_full, b)
        w = formats.bsr_to_dense(crow, col, vals, (Fdim, Fdim))
        pairs = {
            "fwd": (lambda: ops.bsr_linear(x, crow, col, vals, None, Fdim),
                    lambda: F.linear(x, w)),
            "dx": (lambda: ops.bsr_linear_backward_input(gy, crow, col, vals, Fdim),
                   lambda: gy @ w),
            "sddmm": (lambda: ops.bsr_sddmm(gy, x, crow, col, b),
                      lambda: gy.t() @ x),
        }
        for name in args.ops:
            sp, dn = pairs[name]
            sp(), dn()  # warm-up
            ts, td = [], []
            for r in range(args.repeats):
                if r % 2:
                    ts.append(_time(sp)); td.append(_time(dn))
                else:
                    td.append(_time(dn)); ts.append(_time(sp))
            ms, md = statistics.median(ts) * 1e3, statistics.median(td) * 1e3
            print(f"{b:>3} {name:>6} {ms:9.2f} {md:9.2f} {md / ms:7.2f}x", flush=True)


if __name__ == "__main__":
    main()
