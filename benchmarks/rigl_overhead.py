"""Amortized cost of RigL mask updates relative to sparse training time.

A RigL update step does extra work on top of a normal sparse training step: it captures each
sparse layer's input and output gradient, computes the dense weight gradient ``dYᵀX`` with the
dense BLAS kernel, drops the smallest magnitudes, grows the largest gradients, rebuilds the CSR
structure, remaps the optimizer state and (on the next backward) the cached ``Wᵀ``. This script
measures, in one process and interleaved:

* ``step_s``: median seconds of a normal training step (forward, backward, Adam step);
* ``update_extra_s``: median extra seconds of an update step over a normal one;

and reports ``overhead = update_extra_s / (ΔT · step_s)``, the fraction of sparse training time
spent on mask updates when they happen every ΔT steps (the issue's target: ≤ 5 % at ΔT = 100).

Usage: ``python benchmarks/rigl_overhead.py [--rows 16384] [--width 256] [--sparsity 0.9]
[--interval 100] [--threads 2] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn  # noqa: E402


def measure(rows: int = 16384, width: int = 256, sparsity: float = 0.9, interval: int = 100,
            threads: int = 2, repeats: int = 7, layout: str = "csr", blocksize: int | None = None) -> dict:
    """Returns ``{"step_s", "update_step_s", "update_extra_s", "overhead", ...}`` (seconds)."""
    from gnnsparse import memory, sparsify
    from gnnsparse.regimes import DynamicSparseTraining

    memory.retain_freed_memory(True)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                          nn.Linear(width, 16))
    sparsify(model, sparsity, include=["0", "2"], init="random", layout=layout, blocksize=blocksize,
             executor="sparse", generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # update on every even step so that normal and update steps interleave
    dst = DynamicSparseTraining(model, opt, update_interval=2, end_step=10 ** 9, drop_fraction=0.3, grow="rigl")
    x, y = torch.randn(rows, width), torch.randn(rows, 16)

    def step(i: int) -> float:
        t0 = time.perf_counter()
        dst.before_forward(i)
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        dst.after_step(i)
        return time.perf_counter() - t0

    for i in range(1, 5):  # warm-up (allocations, transposes, first update)
        step(i)
    normal, update = [], []
    for i in range(5, 5 + 2 * repeats):
        (update if dst.is_update_step(i) else normal).append(step(i))
    step_s, update_s = statistics.median(normal), statistics.median(update)
    extra = max(0.0, update_s - step_s)
    return {"rows": rows, "width": width, "sparsity": sparsity, "threads": threads, "layout": layout,
            "blocksize": blocksize, "interval": interval, "step_s": step_s, "update_step_s": update_s,
            "update_extra_s": extra, "overhead": extra / (interval * step_s), "updates": dst.updates}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=16384)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--interval", type=int, default=100, help="ΔT, steps between mask updates")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--layout", choices=("csr", "bsr"), default="csr")
    p.add_argument("--blocksize", type=int, default=None)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.rows < 1 or a.width < 1 or a.interval < 1 or a.threads < 1 or a.repeats < 1:
        p.error("--rows, --width, --interval, --threads and --repeats must be >= 1")
    if not 0.0 <= a.sparsity < 1.0:
        p.error("--sparsity must be in [0, 1)")
    r = measure(a.rows, a.width, a.sparsity, a.interval, a.threads, a.repeats, a.layout,
                a.blocksize if a.layout == "bsr" else None)
    print(f"normal step {r['step_s'] * 1e3:.2f} ms, update step {r['update_step_s'] * 1e3:.2f} ms, "
          f"extra {r['update_extra_s'] * 1e3:.2f} ms -> amortized overhead at ΔT={a.interval}: "
          f"{100 * r['overhead']:.2f} % of sparse training time")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
