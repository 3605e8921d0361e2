"""Determinism (issue 7).

* Our CPU kernels give bit-identical float64 (and float32) results for ANY thread count: every
  reduction over nodes is split into chunks whose size depends on N only and the chunk partials
  are added in chunk order (csrc/cpu/common.h, ``reduction_chunk_nodes`` / ``reduce_chunks``).
  Checked here for 1, 2, 3, 4, 5, 7 and 16 threads (more threads than cores is allowed), every op,
  every ISA path, on randomized shapes that cross many reduction chunks, and through autograd.
* The same seed gives the same results twice on CPU: the three training regimes run twice in one
  process give identical result rows except the wall-clock fields. Dense library calls (torch's
  matmul in the dense layers) are deterministic for a fixed thread count, not across thread
  counts, so training is compared at one thread count.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gnnsparse import ops

from kernel_support import ISAS, require_extension

OPS = torch.ops.gnnsparse
THREADS = (1, 2, 3, 4, 5, 7, 16)


@pytest.fixture(autouse=True)
def _require_extension():
    require_extension()


@pytest.fixture(params=ISAS)
def isa(request, monkeypatch):
    monkeypatch.setenv("GNNSPARSE_CPU_ISA", request.param)
    return request.param


def _csr(out_f, in_f, density, dtype, gen, empty_rows=0):
    mask = torch.rand(out_f, in_f, generator=gen) < density
    mask[:empty_rows] = False
    crow = torch.zeros(out_f + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(mask.sum(1), 0)
    col = mask.nonzero()[:, 1].contiguous()
    return crow, col, torch.randn(col.numel(), generator=gen, dtype=dtype)


def _bsr(out_f, in_f, b, density, dtype, gen):
    bmask = torch.rand(out_f // b, in_f // b, generator=gen) < density
    crow = torch.zeros(out_f // b + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(bmask.sum(1), 0)
    col = bmask.nonzero()[:, 1].contiguous()
    return crow, col, torch.randn(col.numel(), b, b, generator=gen, dtype=dtype)


def _at_threads(n, fn):
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(n)
        return fn()
    finally:
        torch.set_num_threads(old)


def _assert_same_for_all_thread_counts(run):
    ref = _at_threads(THREADS[0], run)
    for n in THREADS[1:]:
        got = _at_threads(n, run)
        for i, (a, b) in enumerate(zip(ref, got)):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert torch.equal(a, b), f"output {i} differs between 1 and {n} threads"


# N crosses many reduction chunks (at least 256 nodes each, at most 64 chunks) and ends in a partial
# tile; odd feature counts; an all-empty leading row block; nnz = 0; full density.
SHAPES = [
    # N, in, out, density, empty leading rows
    (20011, 37, 29, 0.3, 3),
    (4099, 64, 48, 1.0, 0),
    (3001, 13, 7, 0.0, 0),
    (257, 130, 66, 0.05, 10),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:3])) + f"-d{s[3]}")
def test_csr_ops_bit_identical_for_any_thread_count(isa, shape, dtype):
    N, in_f, out_f, density, empty = shape
    g = torch.Generator().manual_seed(N + in_f)
    crow, col, values = _csr(out_f, in_f, density, dtype, g, empty)
    x = torch.randn(N, in_f, generator=g, dtype=dtype)
    gy = torch.randn(N, out_f, generator=g, dtype=dtype)
    b = torch.randn(out_f, generator=g, dtype=dtype)
    t = OPS.csr_transpose(crow, col, in_f)

    def run():
        return (OPS.csr_linear(x, crow, col, values, b, out_f),
                OPS.csr_linear(x, crow, col, values, b, out_f, *t),
                OPS.csr_linear_backward_input(gy, crow, col, values, in_f),
                *OPS.csr_linear_backward(gy, x, crow, col, values, *t, True, True, True),
                OPS.csr_sddmm(gy, x, crow, col),
                OPS.bias_grad(gy),
                *OPS.csr_transpose(crow, col, in_f))

    _assert_same_for_all_thread_counts(run)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(20011, 48, 32, 4, 0.4), (1025, 16, 64, 8, 1.0), (300, 32, 32, 16, 0.0)],
                         ids=lambda s: "x".join(map(str, s)))
def test_bsr_ops_bit_identical_for_any_thread_count(isa, shape, dtype):
    N, in_f, out_f, b, density = shape
    g = torch.Generator().manual_seed(N + b)
    crow, col, values = _bsr(out_f, in_f, b, density, dtype, g)
    x = torch.randn(N, in_f, generator=g, dtype=dtype)
    gy = torch.randn(N, out_f, generator=g, dtype=dtype)
    bias = torch.randn(out_f, generator=g, dtype=dtype)

    def run():
        return (OPS.bsr_linear(x, crow, col, values, bias, out_f),
                OPS.bsr_linear_backward_input(gy, crow, col, values, in_f),
                OPS.bsr_sddmm(gy, x, crow, col, b))

    _assert_same_for_all_thread_counts(run)


@pytest.mark.parametrize("layout", ["csr", "bsr"])
def test_autograd_through_sparse_linear_bit_identical_for_any_thread_count(layout):
    # the Python dispatch (gnnsparse.ops) + autograd formulas on top of the kernels, float64
    from gnnsparse import SparseLinear

    torch.manual_seed(0)
    dense = torch.nn.Linear(96, 64, dtype=torch.float64)
    kw = dict(layout="bsr", blocksize=8) if layout == "bsr" else {}
    layer = SparseLinear.from_dense(dense, sparsity=0.7, backend="cpu", executor="sparse", **kw)
    x0 = torch.randn(9001, 96, dtype=torch.float64)
    w = torch.randn(9001, 64, dtype=torch.float64)

    def run():
        layer.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_()
        y = layer(x)
        (y * w).sum().backward()
        return y.detach(), x.grad, layer.values.grad, layer.bias.grad

    _assert_same_for_all_thread_counts(run)


# ---------------------------------------------------------------------------- same seed, same run
_TIMING = ("train_seconds", "seconds_by_phase", "eval_seconds")


def _strip_timing(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in _TIMING}


@pytest.fixture(scope="module")
def tiny_task():
    from gnnsparse.data import load_dataset
    from gnnsparse.train import TrainConfig, make_task

    cfg = TrainConfig(epochs=3, batch_size=64, hidden=32, dropout=0.2, update_interval=2,
                      max_steps_per_epoch=4, executor="sparse", backend="cpu")
    data = load_dataset("ia-email", seed=0)
    return make_task(data, cfg), cfg


@pytest.mark.parametrize("regime,extra", [
    ("dense", {}),
    ("train-and-prune", {}),
    ("sparse-training", {"grow": "rigl"}),
    ("sparse-training", {"grow": "set", "pruning": "global"}),
])
def test_same_seed_gives_the_same_results_twice(tiny_task, regime, extra):
    from gnnsparse.train import run_dense, run_sparse_training, run_train_and_prune

    task, cfg = tiny_task
    cfg = dataclasses.replace(cfg, **extra)
    run = {"dense": lambda: run_dense(task, cfg),
           "train-and-prune": lambda: run_train_and_prune(task, cfg, 0.8),
           "sparse-training": lambda: run_sparse_training(task, cfg, 0.8)}[regime]
    first, second = run(), run()
    assert _strip_timing(first) == _strip_timing(second)
    if regime == "sparse-training":
        assert first["mask_updates"] > 0
    assert first["train_flops"] > 0
    # a different seed really changes the run (the comparison above can fail)
    other = {"dense": run_dense, "train-and-prune": run_train_and_prune,
             "sparse-training": run_sparse_training}[regime]
    args = (task, dataclasses.replace(cfg, seed=cfg.seed + 1)) + (() if regime == "dense" else (0.8,))
    assert _strip_timing(other(*args))["metrics"] != first["metrics"]
