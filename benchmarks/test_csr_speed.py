"""Speed of the gnnsparse CSR layer vs dense ``F.linear`` and ``torch.sparse`` CSR.

Run with ``pytest --benchmark`` (skipped otherwise). Problem: X 65536×256,
W 256×256, float32, ``torch.set_num_threads(2)``, sparsity 50/90/99 %.

* ``fwd``: forward only, no autograd.
* ``fwdbwd``: forward + backward w.r.t. x, W (dense: full dW; CSR: values, i.e. SDDMM) and bias;
  gnnsparse gets the cached transpose of W, as ``SparseLinear`` passes it (one-pass backward).

Allocation is included on both sides, with glibc set to keep freed memory
(``gnnsparse.memory.retain_freed_memory``) for the whole session, dense and sparse alike.

The three implementations are timed interleaved (round-robin, order rotated each round) in
the same process so machine load affects them alike; the medians, their ratios and the
ratio to torch.sparse are stored in ``benchmark.extra_info`` and printed in a table at the
end of the session. pytest-benchmark's own statistics are for the gnnsparse call.

At 90 % sparsity the CSR layer must beat dense in both modes (the project's point): the test
asserts it on the interleaved medians.
"""

from __future__ import annotations

import statistics
import time
import warnings

import pytest
import torch
import torch.nn.functional as F

from gnnsparse import _ext, ops

import bandwidth as bw  # benchmarks/bandwidth.py (pytest puts this rootless folder on sys.path)

N, IN, OUT = 65536, 256, 256
THREADS = 2
ROUNDS = {"fwd": 11, "fwdbwd": 11}


@pytest.fixture(scope="module")
def threads():
    from gnnsparse import memory

    # the same allocator setting for every side: freed outputs are reused instead of being
    # page-faulted in again on every call (see gnnsparse.memory); process-wide
    memory.retain_freed_memory(True)
    old = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield THREADS
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def copy_bandwidth(threads):
    """Copy bandwidth (GB/s) at THREADS threads, measured once in this process."""
    return bw.measure_bandwidth(threads)["copy_GBps"]


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, IN, generator=g)
    gy = torch.randn(N, OUT, generator=g)
    w = torch.randn(OUT, IN, generator=g) / IN ** 0.5
    b = torch.randn(OUT, generator=g)
    return x, gy, w, b


def _impls(data, sparsity, mode):
    x, gy, w_full, b = data
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(OUT, IN, generator=g) >= sparsity
    w = w_full * mask
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = w.to_sparse_csr()
    crow, col, vals = s.crow_indices(), s.col_indices(), s.values().clone()
    grad = mode == "fwdbwd"
    x_ = x.clone().requires_grad_(grad)
    w_ = w.clone().requires_grad_(grad)
    b_ = b.clone().requires_grad_(grad)
    v_ = vals.clone().requires_grad_(grad)
    v_t = vals.clone().requires_grad_(grad)
    leaves = [x_, w_, b_, v_, v_t]

    def dense():
        return F.linear(x_, w_, b_)

    def torch_sparse():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wc = torch.sparse_csr_tensor(crow, col, v_t, (OUT, IN))
            return torch.sparse.mm(wc, x_.t()).t() + b_

    transpose = ops.csr_transpose(crow, col, IN)  # cached per structure, as SparseLinear does

    def gnn():
        return ops.csr_linear(x_, crow, col, v_, b_, OUT, backend="cpu", transpose=transpose)

    def wrap(f):
        if not grad:
            return f

        def run():
            for t in leaves:
                t.grad = None
            f().backward(gy)
        return run

    return {"dense": wrap(dense), "torch_sparse": wrap(torch_sparse), "gnnsparse": wrap(gnn)}, \
        int(col.numel())


def _interleaved(fns, rounds):
    names = list(fns)
    for n in names:  # warm-up (allocator, page cache, lazy init)
        fns[n]()
    times = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
    return times


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_csr_speed(benchmark, threads, data, speed_results, copy_bandwidth, sparsity, mode):
    _ext.load()
    fns, nnz = _impls(data, sparsity, mode)
    times = _interleaved(fns, ROUNDS[mode])
    med = {n: statistics.median(t) for n, t in times.items()}
    info = {
        "mode": mode, "sparsity": sparsity, "nnz": nnz, "threads": threads,
        "shape_x": f"{N}x{IN}", "shape_w": f"{OUT}x{IN}",
        "dense_s": med["dense"], "torch_sparse_s": med["torch_sparse"], "gnnsparse_s": med["gnnsparse"],
        "dense_min_s": min(times["dense"]), "torch_sparse_min_s": min(times["torch_sparse"]),
        "gnnsparse_min_s": min(times["gnnsparse"]),
        "ratio_vs_dense": med["gnnsparse"] / med["dense"],
        "ratio_vs_torch_sparse": med["gnnsparse"] / med["torch_sparse"],
    }
    # memory-bandwidth floor (X, Y, the CSR weight; fwdbwd also dY, dX, X again) and the
    # "limit ratio" dense_s / limit_s: the largest speed-up over dense any kernel could reach
    info["copy_GBps"] = copy_bandwidth
    info["limit_s"] = bw.limit_seconds(N, IN, OUT, copy_bandwidth, bw.csr_weight_bytes(OUT, nnz), mode)
    info["limit_ratio"] = info["dense_s"] / info["limit_s"]
    benchmark.extra_info.update(info)
    speed_results.append(info)
    benchmark.pedantic(fns["gnnsparse"], rounds=3, iterations=1)
    if sparsity == 0.9:
        assert info["ratio_vs_dense"] < 1.0, (
            f"{mode}: CSR layer not faster than dense at 90% sparsity: {info}")
