"""Speed sweep: gnnsparse sparse layers vs dense ``F.linear`` and ``torch.sparse``, as ratios.

Usage::

    python benchmarks/sweep.py --out results.json --png results.png            # full grid
    python benchmarks/sweep.py --out q.json --png q.png --quick                # ~2 min subset
    python benchmarks/sweep.py --out t.json --n 4096 --shapes 64x64 --sparsity 90 --threads 1

Grid (defaults): sparsity 0, 50, 70, 80, 90, 95, 99, 99.9 %; N in {4096, 65536, 262144};
(in, out) in {64x64, 256x256, 1024x1024}; threads 1 and 2; float32; modes ``fwd`` (forward, no
autograd) and ``fwdbwd`` (forward + backward for dX, the weight gradient and the bias gradient;
dense computes the full dW, the sparse methods the gradient of the stored values only).

Methods:

* ``dense``: ``F.linear(x, W, b)`` (MKL/oneDNN);
* ``torch_csr``: ``torch.sparse.mm(W_csr, x.t()).t() + b`` (the fastest correct CPU form we
  found: ``x @ W_csr.t()`` and ``torch.sparse.addmm`` were slower);
* ``torch_bsr``: the same with a BSR weight, blocksize 16 (``unsupported`` if torch has no CPU
  kernel for it);
* ``gnnsparse_csr``: ``gnnsparse.ops.csr_linear`` with the cached transpose of W (as ``SparseLinear``);
* ``gnnsparse_bsr``: ``gnnsparse.ops.bsr_linear(x, crow, col, values[nnzb, 16, 16], b, out)``
  (``not built`` if the op does not exist).

CSR methods use an unstructured random mask with exactly ``round((1 - s)·in·out)`` stored
weights; BSR methods use a random *block* mask with ``round((1 - s)·blocks)`` stored 16×16
blocks (at least one), so both formats are measured at their own kind of sparsity. Dense time
does not depend on the values, so one dense timing per cell serves as the reference for both.

Measurement: every figure is a ratio measured in the same run at the same thread count. Per
cell and mode, each method runs once (warm-up and correctness check against dense: output, and
for ``fwdbwd`` also dX and the weight/value gradient, ``allclose`` with rtol = atol = 1e-3; the
weight gradients are sums over all N rows, so their atol is 1e-3 times their largest entry), then
``--repeats`` rounds time every method once per round, the order rotated each round; the
median is reported. A method whose check fails records ``"status": "incorrect"`` and no time.

OpenMP: ``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` (as in the ``gnnsparse`` command; set it in the
environment to override). With spinning threads a 0.3 ms call took 15-30 ms at 2 threads while
other processes used the cores.

Memory: before anything is timed, glibc is told to keep freed memory
(``gnnsparse.memory.retain_freed_memory()`` if it exists, else ``mallopt(M_MMAP_MAX, 0)`` and
``mallopt(M_TRIM_THRESHOLD, 1 GiB)``), for all methods alike; ``--default-allocator`` skips it.
The JSON records which setting was used.

Skips: a cell whose single dense forward takes more than ``--max-dense-seconds`` (2 s) or whose
estimated peak memory exceeds ``--max-memory-gib`` (8 GiB, or 70 % of MemAvailable) is recorded
as skipped with the reason; a method whose warm-up call takes more than ``--max-call-seconds``
is recorded as skipped too (e.g. torch BSR at low sparsity).

Bandwidth limit (``benchmarks/bandwidth.py``): ``limit_s`` is the minimal bytes of the call (X, Y,
the stored weight; ``fwdbwd`` also dY, dX and X again; see ``bandwidth.layer_bytes``) over the copy
bandwidth, and ``limit_speedup = dense_s / limit_s`` (the "limit ratio") is the largest speed-up
over dense any kernel could reach in that cell. The copy bandwidth is measured *in the cell*: a
copy of X into a preallocated buffer (``bandwidth.make_copy_probe``) runs in every interleaved
round, so it sees the same load and the same working-set size (cache-resident for small cells) as
the methods. ``bandwidth.measure_bandwidth`` (64 MiB buffers, median of 15) at the start of the run
is recorded in ``machine.bandwidth_GBps`` and gives ``limit_s_start_bandwidth``.

Output: JSON (written atomically after every cell, so a partial run leaves a valid file), a PNG
(speed-up vs dense against sparsity, log y, one panel per (shape, N), dashed = bandwidth limit)
and a table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as _dt
import gc
import importlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

# As the `gnnsparse` command does: spinning OpenMP threads turn a 1 ms call into tens of ms when
# another process holds a core. Must be set before torch (and its OpenMP runtime) is loaded; an
# explicit OMP_WAIT_POLICY in the environment wins. Applies to dense and sparse alike.
_OMP_WAIT_POLICY_WAS = os.environ.get("OMP_WAIT_POLICY")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bandwidth as bw  # noqa: E402

METHODS = ("dense", "torch_csr", "torch_bsr", "gnnsparse_csr", "gnnsparse_bsr")
MODES = ("fwd", "fwdbwd")
FULL_SPARSITY = (0.0, 50.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.9)
FULL_N = (4096, 65536, 262144)
FULL_SHAPES = ((64, 64), (256, 256), (1024, 1024))
FULL_THREADS = (1, 2)
QUICK = dict(sparsity=(50.0, 90.0, 99.0), n=(65536,), shapes=((256, 256),), threads=(2,), repeats=10)
BLOCK = 16
_PROBE = "_copy_probe"  # interleaved copy of X: the cell's own bandwidth measurement
RTOL = ATOL = 1e-3
SHORT = {"dense": "dense", "torch_csr": "t.csr", "torch_bsr": "t.bsr", "gnnsparse_csr": "g.csr",
         "gnnsparse_bsr": "g.bsr"}
# which torch.sparse method each method is compared with (ratio_vs_torch_sparse)
TORCH_PEER = {"dense": "torch_csr", "torch_csr": "torch_csr", "gnnsparse_csr": "torch_csr",
              "torch_bsr": "torch_bsr", "gnnsparse_bsr": "torch_bsr"}


# ---------------------------------------------------------------------------------------------
# CLI
def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _sparsity_pct(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"sparsity must be a number in percent, got {s!r}") from None
    if not (0.0 <= v < 100.0) or math.isnan(v):
        raise argparse.ArgumentTypeError(
            f"sparsity is in percent and must be in [0, 100), got {v} (e.g. 90 for 90 %)")
    return v


def _shape(s: str) -> tuple[int, int]:
    parts = s.lower().split("x")
    try:
        if len(parts) != 2:
            raise ValueError
        i, o = int(parts[0]), int(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must be INxOUT, e.g. 256x256, got {s!r}") from None
    if i < 1 or o < 1:
        raise argparse.ArgumentTypeError(f"shape dims must be >= 1, got {s!r}")
    return i, o


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}") from None
    if not v > 0 or math.isinf(v):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}")
    return v


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python benchmarks/sweep.py",
        description="Sweep gnnsparse CSR/BSR layers vs dense F.linear and torch.sparse; every figure "
                    "is a ratio measured in the same run (interleaved repeats, medians).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="JSON results file (written atomically)")
    p.add_argument("--png", type=Path, default=None, help="plot file (.png); none if omitted")
    p.add_argument("--quick", action="store_true",
                   help="small subset: N=65536, 256x256, sparsity 50/90/99, threads 2, 10 repeats "
                        "(explicit --n/--shapes/--sparsity/--threads/--repeats override it)")
    p.add_argument("--sparsity", type=_sparsity_pct, nargs="+", default=None, metavar="PCT",
                   help=f"sparsities in percent (default {' '.join(map(str, FULL_SPARSITY))})")
    p.add_argument("--n", type=_positive_int, nargs="+", default=None, metavar="N",
                   help=f"numbers of rows of X (default {' '.join(map(str, FULL_N))})")
    p.add_argument("--shapes", type=_shape, nargs="+", default=None, metavar="INxOUT",
                   help="layer shapes (default 64x64 256x256 1024x1024)")
    p.add_argument("--threads", type=_positive_int, nargs="+", default=None, metavar="T",
                   help="torch thread counts (default 1 2; at most the number of CPUs)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="methods to run (dense is always run: it is the reference)")
    p.add_argument("--repeats", type=_positive_int, default=None,
                   help="timed rounds per cell (median; default 10, at least 3)")
    p.add_argument("--warmup", type=_positive_int, default=1, help="untimed calls per method before timing")
    p.add_argument("--max-dense-seconds", type=_positive_float, default=2.0,
                   help="skip a cell when one dense forward takes longer (s)")
    p.add_argument("--max-call-seconds", type=_positive_float, default=4.0,
                   help="skip a method in a cell when its warm-up call takes longer (s); dense is exempt")
    p.add_argument("--max-memory-gib", type=_positive_float, default=8.0,
                   help="skip a cell when its estimated peak memory exceeds this (GiB)")
    p.add_argument("--bandwidth-mib", type=_positive_int, default=64,
                   help="buffer size for the bandwidth measurement (MiB)")
    p.add_argument("--default-allocator", action="store_true",
                   help="leave glibc malloc at its defaults (do not retain freed memory)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    a = p.parse_args(argv)

    q = QUICK if a.quick else {}
    a.sparsity = a.sparsity or list(q.get("sparsity", FULL_SPARSITY))
    a.n = a.n or list(q.get("n", FULL_N))
    a.shapes = a.shapes or list(q.get("shapes", FULL_SHAPES))
    a.threads = a.threads or list(q.get("threads", FULL_THREADS))
    a.repeats = a.repeats or q.get("repeats", 10)
    if a.repeats < 3:
        p.error(f"--repeats must be >= 3 for a meaningful median, got {a.repeats}")
    ncpu = os.cpu_count() or 1
    bad = [t for t in a.threads if t > ncpu]
    if bad:
        p.error(f"--threads {bad} exceed the {ncpu} CPUs of this machine")
    # de-duplicate, keep order
    a.sparsity = list(dict.fromkeys(a.sparsity))
    a.n = list(dict.fromkeys(a.n))
    a.shapes = list(dict.fromkeys(a.shapes))
    a.threads = list(dict.fromkeys(a.threads))
    a.methods = ["dense"] + [m for m in dict.fromkeys(a.methods) if m != "dense"]
    a.modes = list(dict.fromkeys(a.modes))
    if a.out.suffix.lower() != ".json":
        p.error(f"--out must be a .json file, got {str(a.out)!r}")
    if a.png is not None and a.png.suffix.lower() != ".png":
        p.error(f"--png must be a .png file, got {str(a.png)!r}")
    for label, path in (("--out", a.out), ("--png", a.png)):
        if path is None:
            continue
        if path.exists() and path.is_dir():
            p.error(f"{label} {str(path)!r} is a directory")
        if not path.resolve().parent.is_dir():
            p.error(f"{label}: folder {str(path.resolve().parent)!r} does not exist")
    if a.png is not None and a.png.resolve() == a.out.resolve():
        p.error("--out and --png must be different files")
    if a.png is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            p.error("--png needs matplotlib, which is not installed")
    return a


# ---------------------------------------------------------------------------------------------
# Environment
def set_allocator(default: bool) -> dict:
    """Make glibc keep freed memory (same for every method); return a record of what was done."""
    if default:
        return {"setting": "default", "how": "--default-allocator: glibc malloc left at its defaults"}
    try:
        mem = importlib.import_module("gnnsparse.memory")
    except ImportError:
        mem = None
    fn = getattr(mem, "retain_freed_memory", None) if mem is not None else None
    if callable(fn):
        ret = fn()
        return {"setting": "retain_freed_memory", "how": "gnnsparse.memory.retain_freed_memory()",
                "returned": repr(ret)}
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_mmap_max, m_trim_threshold = -4, -1
        r1 = libc.mallopt(m_mmap_max, 0)
        r2 = libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError) as e:
        return {"setting": "default", "how": f"mallopt unavailable ({type(e).__name__}: {e})"}
    ok = r1 == 1 and r2 == 1
    return {"setting": "retain_freed_memory" if ok else "default",
            "how": "ctypes libc.mallopt(M_MMAP_MAX=-4, 0) and mallopt(M_TRIM_THRESHOLD=-1, 1<<30)",
            "mallopt_returned": [r1, r2]}


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _cache_sizes() -> dict:
    """{"L1d": "48K", "L2": "2048K", ...} of CPU 0 as the OS reports it (a VM may misreport L3)."""
    out = {}
    for d in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((d / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        out[f"L{level}" + ("d" if kind == "Data" else "i" if kind == "Instruction" else "")] = size
    return out


def _mem_available_bytes() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def machine_info() -> dict:
    import gnnsparse
    info = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_mkl": torch.backends.mkl.is_available(),
        "torch_mkldnn": torch.backends.mkldnn.is_available(),
        "gnnsparse": getattr(gnnsparse, "__version__", "?"),
        "gnnsparse_bsr_linear_built": _gnn_bsr() is not None,
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS",
                                               "GNNSPARSE_CPU_ISA", "GNNSPARSE_BACKEND")},
        "omp_wait_policy": (f"{os.environ.get('OMP_WAIT_POLICY')} (from the environment)"
                            if _OMP_WAIT_POLICY_WAS is not None else "PASSIVE (set by sweep.py)"),
        "caches": _cache_sizes(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "mem_available_bytes_start": _mem_available_bytes(),
    }
    return info


def _gnn_ops():
    from gnnsparse import _ext, ops
    _ext.load()
    return ops


def _gnn_bsr():
    try:
        ops = _gnn_ops()
    except Exception:  # noqa: BLE001 - reported as not built
        return None
    return getattr(ops, "bsr_linear", None)


# ---------------------------------------------------------------------------------------------
# Problem construction
def _exact_mask(rows: int, cols: int, keep: int, g: torch.Generator) -> torch.Tensor:
    """bool [rows, cols] with exactly ``keep`` True entries at random positions."""
    flat = torch.zeros(rows * cols, dtype=torch.bool)
    if keep > 0:
        flat[torch.randperm(rows * cols, generator=g)[:keep]] = True
    return flat.view(rows, cols)


def build_weights(in_f: int, out_f: int, sparsity_pct: float, g: torch.Generator) -> dict:
    """Dense masters of the two structures (unstructured CSR, 16×16-block BSR) and their formats."""
    s = sparsity_pct / 100.0
    w_full = torch.randn(out_f, in_f, generator=g) / in_f ** 0.5
    keep = max(1, round((1 - s) * in_f * out_f))
    mask = _exact_mask(out_f, in_f, keep, g)
    w_csr = w_full * mask
    crow, col = _csr_indices(mask)
    vals = w_full[mask].contiguous()  # row-major order == CSR order
    res = {"w_csr": w_csr, "crow": crow, "col": col, "vals": vals, "nnz": keep,
           "csr_sparsity": 1 - keep / (in_f * out_f)}
    if in_f % BLOCK == 0 and out_f % BLOCK == 0:
        br, bc = out_f // BLOCK, in_f // BLOCK
        keepb = max(1, round((1 - s) * br * bc))
        bmask = _exact_mask(br, bc, keepb, g)
        full_mask = bmask.repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)
        w_bsr = w_full * full_mask
        bcrow, bcol = _csr_indices(bmask)
        blocks = w_full.view(br, BLOCK, bc, BLOCK).permute(0, 2, 1, 3)[bmask].contiguous()
        res.update(w_bsr=w_bsr, bcrow=bcrow, bcol=bcol, bvals=blocks, nnzb=keepb,
                   bsr_sparsity=1 - keepb / (br * bc))
    return res


def _csr_indices(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    counts = mask.sum(1)
    crow = torch.zeros(mask.shape[0] + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(counts, 0)
    col = mask.nonzero()[:, 1].contiguous().to(torch.int64)
    return crow, col


def estimate_peak_bytes(n: int, in_f: int, out_f: int, modes) -> int:
    """Rough peak of one cell: X, dY, a method's Y/dX, its temporaries, the reference Y/dX."""
    per_row = 4 * (in_f + out_f)
    k = 3.5 if "fwdbwd" in modes else 2.5
    return int(n * per_row * k) + 8 * in_f * out_f * 4


# ---------------------------------------------------------------------------------------------
# Methods
class Cell:
    """One (threads, N, shape, sparsity) problem; builds the callables per mode."""

    def __init__(self, x, gy, bias, wts, in_f, out_f):
        self.x, self.gy, self.bias, self.w, self.in_f, self.out_f = x, gy, bias, wts, in_f, out_f

    def make(self, method: str, mode: str):
        """Return (fn, leaves, structure) or raise _Unavailable(status, reason)."""
        grad = mode == "fwdbwd"
        w, in_f, out_f = self.w, self.in_f, self.out_f
        x = self.x.detach().requires_grad_(grad) if grad else self.x
        b = self.bias.detach().clone().requires_grad_(grad)
        if method == "dense":
            wd = w["w_csr"].clone().requires_grad_(grad)
            return (lambda: F.linear(x, wd, b)), {"x": x, "w": wd, "b": b}, "csr"
        if method == "gnnsparse_bsr" and _gnn_bsr() is None:
            raise _Unavailable("not built", "gnnsparse.ops has no bsr_linear")
        if method in ("torch_bsr", "gnnsparse_bsr") and "w_bsr" not in w:
            raise _Unavailable("skipped", f"in/out not divisible by blocksize {BLOCK}")
        if method == "torch_csr":
            v = w["vals"].clone().requires_grad_(grad)
            crow, col = w["crow"], w["col"]

            def f():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    wc = torch.sparse_csr_tensor(crow, col, v, (out_f, in_f))
                    return torch.sparse.mm(wc, x.t()).t() + b
            return f, {"x": x, "v": v, "b": b}, "csr"
        if method == "torch_bsr":
            v = w["bvals"].clone().requires_grad_(grad)
            crow, col = w["bcrow"], w["bcol"]

            def f():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    wb = torch.sparse_bsr_tensor(crow, col, v, (out_f, in_f))
                    return torch.sparse.mm(wb, x.t()).t() + b
            return f, {"x": x, "v": v, "b": b}, "bsr"
        if method == "gnnsparse_csr":
            ops = _gnn_ops()
            v = w["vals"].clone().requires_grad_(grad)
            crow, col = w["crow"], w["col"]
            # the transpose of W cached per structure, as SparseLinear passes it (one-pass backward)
            transpose = ops.csr_transpose(crow, col, in_f)
            return (lambda: ops.csr_linear(x, crow, col, v, b, out_f, backend="cpu", transpose=transpose)), \
                {"x": x, "v": v, "b": b}, "csr"
        if method == "gnnsparse_bsr":
            fn = _gnn_bsr()
            if fn is None:
                raise _Unavailable("not built", "gnnsparse.ops has no bsr_linear")
            v = w["bvals"].clone().requires_grad_(grad)
            crow, col = w["bcrow"], w["bcol"]
            return (lambda: fn(x, crow, col, v, b, out_f)), {"x": x, "v": v, "b": b}, "bsr"
        raise ValueError(method)


class _Unavailable(Exception):
    def __init__(self, status, reason):
        super().__init__(reason)
        self.status, self.reason = status, reason


def _runner(fn, leaves, mode, gy):
    if mode == "fwd":
        def run():
            with torch.no_grad():
                return fn()
        return run

    def run():
        for t in leaves.values():
            t.grad = None
        y = fn()
        y.backward(gy)
        return y
    return run


def _check(method, structure, mode, y, leaves, ref) -> tuple[str | None, dict]:
    """(None if correct else a message, {checked tensor: max abs error vs dense})."""
    errs = {}

    def close(a, b, what, scaled=False):
        if a is None:
            return f"{what}: no gradient"
        if a.shape != b.shape:
            return f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
        err = (a - b).abs().max().item() if a.numel() else 0.0
        errs[what] = err
        # weight gradients are sums over all N rows: their float32 rounding error grows with N and
        # |entries| reach ~sqrt(N), so their atol is relative to the largest reference entry
        atol = ATOL * max(1.0, b.abs().max().item()) if scaled and b.numel() else ATOL
        if not torch.allclose(a, b, rtol=RTOL, atol=atol):
            return f"{what}: max abs error {err:.3g} (rtol={RTOL:g}, atol={atol:.3g})"
        return None

    msg = close(y.detach(), ref["y"], "output")
    if msg or mode == "fwd":
        return msg, errs
    msg = close(leaves["x"].grad, ref["dx"], "dX")
    if msg:
        return msg, errs
    if method == "dense":
        return close(leaves["w"].grad, ref["dw"], "dW", scaled=True), errs
    v = leaves["v"]
    return close(v.grad, ref["dv_csr"] if structure == "csr" else ref["dv_bsr"], "dvalues",
                 scaled=True), errs


def _reference(cell: Cell, structure: str, mode: str) -> dict:
    """Dense float32 reference of one structure: y (and dX, dW, the dW entries at the stored positions)."""
    w = cell.w["w_csr" if structure == "csr" else "w_bsr"]
    x = cell.x.detach().requires_grad_(mode == "fwdbwd")
    wd = w.clone().requires_grad_(mode == "fwdbwd")
    if mode == "fwd":
        with torch.no_grad():
            return {"y": F.linear(x, wd, cell.bias)}
    y = F.linear(x, wd, cell.bias)
    y.backward(cell.gy)
    ref = {"y": y.detach(), "dx": x.grad, "dw": wd.grad}
    if structure == "csr":
        ref["dv_csr"] = _gather_csr(wd.grad, cell.w)
    else:
        ref["dv_bsr"] = _gather_bsr(wd.grad, cell.w, cell.out_f, cell.in_f)
    return ref


def _gather_csr(dw, w):
    rows = torch.repeat_interleave(torch.arange(len(w["crow"]) - 1), w["crow"].diff())
    return dw[rows, w["col"]]


def _gather_bsr(dw, w, out_f, in_f):
    br, bc = out_f // BLOCK, in_f // BLOCK
    blocks = dw.view(br, BLOCK, bc, BLOCK).permute(0, 2, 1, 3)
    rows = torch.repeat_interleave(torch.arange(br), w["bcrow"].diff())
    return blocks[rows, w["bcol"]]


def run_cell_mode(cell: Cell, methods, mode, repeats, warmup, max_call_s):
    """Check, warm up and time the methods of one cell in one mode; return {method: record}."""
    recs: dict[str, dict] = {}
    runs: dict[str, callable] = {}
    refs: dict[str, dict] = {}
    for m in methods:
        try:
            fn, leaves, structure = cell.make(m, mode)
        except _Unavailable as e:
            recs[m] = {"status": e.status, "reason": e.reason}
            continue
        run = _runner(fn, leaves, mode, cell.gy)
        try:
            t0 = time.perf_counter()
            y = run()
            first = time.perf_counter() - t0
        except (RuntimeError, NotImplementedError, TypeError, ValueError) as e:
            msg = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            status = "unsupported" if m.startswith("torch_") and _looks_unsupported(e) else "error"
            recs[m] = {"status": status, "reason": msg}
            continue
        if structure not in refs:
            refs[structure] = _reference(cell, structure, mode)
        bad, errs = _check(m, structure, mode, y, leaves, refs[structure])
        del y
        if bad:
            recs[m] = {"status": "incorrect", "reason": bad, "structure": structure,
                       "max_abs_err_vs_dense": errs}
            continue
        if m != "dense" and first > max_call_s:
            recs[m] = {"status": "skipped", "structure": structure, "first_call_s": first,
                       "reason": f"one call took {first:.2f} s > --max-call-seconds {max_call_s:g}"}
            continue
        for _ in range(warmup - 1):
            run()
        runs[m] = run
        recs[m] = {"status": "ok", "structure": structure, "first_call_s": first,
                   "max_abs_err_vs_dense": errs}
    refs.clear()
    gc.collect()
    probe, probe_bytes = bw.make_copy_probe(cell.x)
    runs[_PROBE] = probe
    names = list(runs)
    samples = {m: [] for m in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)] if names else []
        for m in order:
            t0 = time.perf_counter()
            runs[m]()
            samples[m].append(time.perf_counter() - t0)
    probe_s = samples.pop(_PROBE)
    for m in runs:
        if m != _PROBE:
            recs[m].update(seconds=statistics.median(samples[m]), seconds_min=min(samples[m]),
                           samples_s=samples[m])
    med = statistics.median(probe_s)
    copy = {"bytes": probe_bytes, "seconds": med, "GBps": probe_bytes / med / 1e9,
            "GBps_max": probe_bytes / min(probe_s) / 1e9}
    return recs, copy


def _looks_unsupported(e: Exception) -> bool:
    s = str(e).lower()
    return any(k in s for k in ("not implemented", "notimplemented", "unsupported", "not supported",
                                "could not run", "does not support"))


# ---------------------------------------------------------------------------------------------
# Output
def write_json_atomic(path: Path, obj) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.resolve().parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, allow_nan=False, default=_json_default)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _finite(v):
    return v if v is None or math.isfinite(v) else None


def add_ratios(records: list[dict], cell_key: dict, recs: dict, limits: dict, limits_start: dict) -> None:
    dense = recs.get("dense", {}).get("seconds")
    for m, r in recs.items():
        row = dict(cell_key)
        row["method"] = m
        row.update({k: v for k, v in r.items()})
        s = r.get("seconds")
        peer = recs.get(TORCH_PEER[m], {}).get("seconds")
        row["ratio_vs_dense"] = _finite(s / dense) if s and dense else None
        row["speedup_vs_dense"] = _finite(dense / s) if s and dense else None
        row["ratio_vs_torch_sparse"] = _finite(s / peer) if s and peer else None
        row["torch_sparse_peer"] = TORCH_PEER[m]
        fmt = "bsr" if m.endswith("bsr") else "csr"
        lim, lim0 = limits.get(fmt), limits_start.get(fmt)
        row["limit_s"] = lim
        row["limit_speedup"] = _finite(dense / lim) if dense and lim else None  # dense / limit
        row["ratio_vs_limit"] = _finite(s / lim) if s and lim else None
        row["limit_s_start_bandwidth"] = lim0
        row["limit_speedup_start_bandwidth"] = _finite(dense / lim0) if dense and lim0 else None
        row["working_set_bytes"] = ws = bw.layer_bytes(row["n"], row["in_features"], row["out_features"],
                                                       0, row["mode"])
        records.append(row)


def print_table(results: dict, methods) -> None:
    recs = [r for r in results["records"] if r.get("method") is not None]
    skipped = [r for r in results["records"] if r.get("method") is None]
    cols = [m for m in methods if m != "dense"]
    head = (f"{'thr':>3} {'mode':<6} {'shape':>9} {'N':>7} {'sp%':>5} {'dense ms':>9} "
            + " ".join(f"{SHORT[m]:>7}" for m in cols) + f" {'limit':>7} {'g/t.csr':>7}")
    print("\nspeed-up vs dense (dense_s / method_s, >1 = faster than dense; medians, interleaved; "
          "limit = dense_s / bandwidth bound)")
    print(head)
    print("-" * len(head))
    by = {}
    for r in recs:
        by.setdefault((r["threads"], r["mode"], r["in_features"], r["out_features"], r["n"],
                       r["sparsity_pct"]), {})[r["method"]] = r
    for key in sorted(by):
        t, mode, i, o, n, sp = key
        row = by[key]
        d = row.get("dense", {})
        cells = []
        for m in cols:
            r = row.get(m)
            if r is None:
                cells.append(f"{'':>7}")
            elif r.get("speedup_vs_dense") is not None:
                cells.append(f"{r['speedup_vs_dense']:>6.2f}x")
            else:
                tag = {"not built": "n/b", "unsupported": "unsup", "skipped": "skip",
                       "incorrect": "WRONG", "error": "err"}.get(r.get("status"), r.get("status", "?"))
                cells.append(f"{tag:>7}")
        lim = d.get("limit_speedup")

        g = row.get("gnnsparse_csr", {}).get("ratio_vs_torch_sparse")
        dms = d.get("seconds")
        print(f"{t:>3} {mode:<6} {f'{i}x{o}':>9} {n:>7} {sp:>5g} "
              f"{(dms * 1e3 if dms else float('nan')):>9.2f} " + " ".join(cells)
              + f" {(f'{lim:.1f}x' if lim else '-'):>7} {(f'{g:.2f}' if g else '-'):>7}")
    if skipped:
        print(f"skipped cells: {len(skipped)}")
        for r in skipped:
            print(f"  threads={r['threads']} N={r['n']} {r['in_features']}x{r['out_features']} "
                  f"sp={r['sparsity_pct']:g}%: {r['reason']}")
    print("g/t.csr = gnnsparse CSR time / torch.sparse CSR time (<1 = gnnsparse faster)")


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [r for r in results["records"] if r.get("method") is not None]
    if not recs:
        return
    threads = sorted({r["threads"] for r in recs})
    t_plot = 2 if 2 in threads else threads[-1]
    recs = [r for r in recs if r["threads"] == t_plot]
    shapes = sorted({(r["in_features"], r["out_features"]) for r in recs})
    ns = sorted({r["n"] for r in recs})
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, axes = plt.subplots(len(shapes), len(ns), figsize=(max(9.0, 4.6 * len(ns)), 3.6 * len(shapes) + 1.2),
                             squeeze=False, sharex=True)
    xform = lambda sp: -math.log10(max(1e-4, 1 - sp / 100.0))  # noqa: E731
    colors = {"torch_csr": "tab:blue", "torch_bsr": "tab:cyan", "gnnsparse_csr": "tab:red",
              "gnnsparse_bsr": "tab:orange"}
    style = {"fwd": dict(ls="-", marker="o"), "fwdbwd": dict(ls=":", marker="s")}
    sps = sorted({r["sparsity_pct"] for r in recs})
    for i, shp in enumerate(shapes):
        for j, n in enumerate(ns):
            ax = axes[i][j]
            sub = [r for r in recs if (r["in_features"], r["out_features"]) == shp and r["n"] == n]
            ax.axhline(1.0, color="gray", lw=0.8)
            for mode in MODES:
                for m in colors:
                    pts = sorted((r["sparsity_pct"], r["speedup_vs_dense"]) for r in sub
                                 if r["method"] == m and r["mode"] == mode and r.get("speedup_vs_dense"))
                    if pts:
                        ax.plot([xform(p) for p, _ in pts], [v for _, v in pts], color=colors[m],
                                ms=3.5, lw=1.2, label=f"{SHORT[m]} {mode}", **style[mode])
                lim = sorted((r["sparsity_pct"], r["limit_speedup"]) for r in sub
                             if r["method"] == "dense" and r["mode"] == mode and r.get("limit_speedup"))
                if lim:
                    ax.plot([xform(p) for p, _ in lim], [v for _, v in lim], ls="--",
                            color="black" if mode == "fwd" else "dimgray", lw=1.0,
                            label=f"bandwidth limit {mode}")
            if not sub:
                ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center")
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_title(f"{shp[0]}x{shp[1]}, N={n}, {t_plot} threads", fontsize=9)
            ax.set_xticks([xform(s) for s in sps])
            ax.set_xticklabels([f"{s:g}" for s in sps], fontsize=7)
            ax.grid(True, which="both", alpha=0.3)
            if j == 0:
                ax.set_ylabel("speed-up vs dense (x)")
            if i == len(shapes) - 1:
                ax.set_xlabel("sparsity (%)")
    handles, labels = {}, []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(4, len(handles)),
               fontsize=8, frameon=False)
    fig.suptitle("speed-up vs dense F.linear = dense_time / method_time (same run, interleaved medians)\n"
                 "solid = forward, dotted = forward+backward, dashed = memory-bandwidth limit; "
                 ">1 = faster than dense", fontsize=9)
    nrow_legend = math.ceil(len(handles) / 4)
    fig.tight_layout(rect=(0, 0.03 + 0.25 * nrow_legend / fig.get_figheight(), 1,
                           1 - 0.45 / fig.get_figheight()))
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.resolve().parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    a = parse_args(argv)
    t_start = time.perf_counter()
    allocator = set_allocator(a.default_allocator)
    info = machine_info()
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None

    bandwidth = {}
    for t in a.threads:
        bandwidth[str(t)] = bw.measure_bandwidth(t, a.bandwidth_mib * bw.MIB, repeats=15)
        bandwidth[str(t)].pop("samples_s", None)
    results = {
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([sys.executable] + sys.argv),
        "config": {
            "sparsity_pct": a.sparsity, "n": a.n, "shapes": [list(s) for s in a.shapes],
            "threads": a.threads, "modes": a.modes, "methods": a.methods, "repeats": a.repeats,
            "warmup": a.warmup, "dtype": "float32", "blocksize": BLOCK, "rtol": RTOL, "atol": ATOL,
            "check": "allclose vs dense float32 F.linear (and its autograd), once per cell and mode: "
                     "output and dX with rtol=atol=1e-3; weight gradients (sums over N rows) with "
                     "rtol=1e-3, atol=1e-3*max|reference|",
            "max_dense_seconds": a.max_dense_seconds, "max_call_seconds": a.max_call_seconds,
            "max_memory_gib": a.max_memory_gib, "seed": a.seed, "quick": a.quick,
            "torch_csr_call": "torch.sparse.mm(W_csr, x.t()).t() + b",
            "torch_bsr_call": "torch.sparse.mm(W_bsr, x.t()).t() + b",
            "ratio_definitions": {
                "ratio_vs_dense": "method_s / dense_s (same run, same threads; <1 = faster than dense)",
                "speedup_vs_dense": "dense_s / method_s",
                "ratio_vs_torch_sparse": "method_s / torch_sparse_s of the same format (dense: vs torch_csr)",
                "limit_s": "bandwidth.limit_seconds: minimal bytes (X, Y, stored weight; fwdbwd also dY, "
                           "dX, X again) / copy bandwidth of X measured interleaved in this cell "
                           "(cell_copy_GBps)",
                "limit_s_start_bandwidth": "the same with bandwidth.measure_bandwidth at the start of the run",
                "limit_speedup": "dense_s / limit_s (the 'limit ratio': the largest possible speed-up)",
            },
        },
        "machine": dict(info, allocator=allocator, bandwidth_GBps=bandwidth),
        "records": [],
    }
    write_json_atomic(a.out, results)

    cells = [(t, n, shp, sp) for t in a.threads for n in a.n for shp in a.shapes for sp in a.sparsity]
    bar = tqdm(total=len(cells) * len(a.modes), disable=a.no_progress or tqdm is None,
               desc="sweep", unit="cell", dynamic_ncols=True, file=sys.stderr) if tqdm else None
    old_threads = torch.get_num_threads()
    dense_fwd_cache: dict = {}  # (threads, n, shape) -> seconds of one dense forward (values do not matter)
    try:
        for (t, n, (in_f, out_f), sp) in cells:
            key = {"threads": t, "n": n, "in_features": in_f, "out_features": out_f, "sparsity_pct": sp}
            if bar:
                bar.set_postfix_str(f"T={t} N={n} {in_f}x{out_f} {sp:g}%")
            torch.set_num_threads(t)
            reason = None
            peak = estimate_peak_bytes(n, in_f, out_f, a.modes)
            avail = _mem_available_bytes()
            if peak > a.max_memory_gib * 2 ** 30:
                reason = f"estimated memory {peak / 2**30:.1f} GiB > --max-memory-gib {a.max_memory_gib:g}"
            elif avail is not None and peak > 0.7 * avail:
                reason = f"estimated memory {peak / 2**30:.1f} GiB > 70% of MemAvailable {avail / 2**30:.1f} GiB"
            prev = dense_fwd_cache.get((t, n, in_f, out_f))
            if reason is None and prev is not None and prev > a.max_dense_seconds:
                reason = f"one dense forward took {prev:.2f} s > --max-dense-seconds {a.max_dense_seconds:g}"
            if reason:
                results["records"].append(dict(key, method=None, mode=None, status="skipped", reason=reason))
                if bar:
                    bar.update(len(a.modes))
                continue
            g = torch.Generator().manual_seed(a.seed * 1000003 + hash((n, in_f, out_f, sp)) % 1000003)
            x = torch.randn(n, in_f, generator=g)
            gy = torch.randn(n, out_f, generator=g)
            bias = torch.randn(out_f, generator=g)
            wts = build_weights(in_f, out_f, sp, g)
            if prev is None:
                with torch.no_grad():
                    F.linear(x, wts["w_csr"], bias)
                    t0 = time.perf_counter()
                    F.linear(x, wts["w_csr"], bias)
                    prev = dense_fwd_cache[(t, n, in_f, out_f)] = time.perf_counter() - t0
                if prev > a.max_dense_seconds:
                    results["records"].append(dict(key, method=None, mode=None, status="skipped",
                                                   reason=f"one dense forward took {prev:.2f} s > "
                                                          f"--max-dense-seconds {a.max_dense_seconds:g}"))
                    del x, gy, wts
                    gc.collect()
                    if bar:
                        bar.update(len(a.modes))
                    continue
            cell = Cell(x, gy, bias, wts, in_f, out_f)
            for mode in a.modes:
                recs, copy = run_cell_mode(cell, a.methods, mode, a.repeats, a.warmup, a.max_call_seconds)
                wb = {"csr": min(bw.csr_weight_bytes(out_f, wts["nnz"]), in_f * out_f * 4)}
                if "nnzb" in wts:
                    wb["bsr"] = min(bw.bsr_weight_bytes(out_f, wts["nnzb"], BLOCK), in_f * out_f * 4)
                # the limit uses the copy bandwidth measured interleaved in this cell (same load, same
                # working-set size); the one from the start of the run is kept for reference
                limits = {k: bw.limit_seconds(n, in_f, out_f, copy["GBps"], v, mode) for k, v in wb.items()}
                limits_start = {k: bw.limit_seconds(n, in_f, out_f, bandwidth[str(t)], v, mode)
                                for k, v in wb.items()}
                ck = dict(key, mode=mode, nnz=wts["nnz"], csr_sparsity=wts["csr_sparsity"],
                          nnzb=wts.get("nnzb"), bsr_sparsity=wts.get("bsr_sparsity"),
                          cell_copy_GBps=copy["GBps"], cell_copy_GBps_max=copy["GBps_max"],
                          cell_copy_bytes=copy["bytes"])
                add_ratios(results["records"], ck, recs, limits, limits_start)
                if bar:
                    bar.update(1)
            del cell, x, gy, wts
            gc.collect()
            write_json_atomic(a.out, results)
    except KeyboardInterrupt:
        results["interrupted"] = True
        print("\ninterrupted: writing the partial results", file=sys.stderr)
    finally:
        torch.set_num_threads(old_threads)
        if bar:
            bar.close()
    results["machine"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results["wall_seconds"] = time.perf_counter() - t_start
    write_json_atomic(a.out, results)
    if a.png is not None:
        plot(results, a.png)
    print_table(results, a.methods)
    bwl = ", ".join(f"{t} thr: copy {b['copy_GBps']:.1f} GB/s" for t, b in bandwidth.items())
    print(f"allocator: {allocator['setting']} ({allocator['how']}); bandwidth: {bwl}; "
          f"wall {results['wall_seconds']:.0f} s; wrote {a.out}" + (f", {a.png}" if a.png else ""))
    return 130 if results.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
