"""Tests of the gnnsparse block-sparse (BSR) weight operators against the pure-torch reference.

The extension must be built (`pip install --no-build-isolation -e .`); if it is not, every test
here fails (not skips) with the build instructions.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from gnnsparse import _ext, formats, ops, reference

from kernel_support import ISAS, cpu_has_avx2_fma as _cpu_has_avx2_fma, require_extension  # noqa: E402


@pytest.fixture(autouse=True)
def _require_extension():
    require_extension()


OPS = torch.ops.gnnsparse
BLOCKS = [1, 2, 4, 8, 16, 32]


def make_bsr(out_f, in_f, b, density, dtype=torch.float64, seed=0, empty_block_rows=()):
    """Random BSR with sorted unique block columns; a fraction ``density`` of the blocks is stored
    (all for density 1); block rows in ``empty_block_rows`` store nothing."""
    g = torch.Generator().manual_seed(seed)
    nbr, nbc = out_f // b, in_f // b
    mask = torch.rand(nbr, nbc, generator=g) < density
    if density >= 1.0:
        mask[:] = True
    for r in empty_block_rows:
        mask[r] = False
    crow, col, _ = formats.block_mask_to_bsr(mask, None, b)
    values = torch.randn(col.numel(), b, b, generator=g, dtype=dtype)
    return crow, col, values


def tol(dtype):
    return dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=3e-4, atol=3e-4)


def check_all_ops(N, in_f, out_f, b, density, dtype, seed=0, empty_block_rows=(), bias=True):
    crow, col, values = make_bsr(out_f, in_f, b, density, dtype, seed, empty_block_rows)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(N, in_f, generator=g, dtype=dtype)
    gy = torch.randn(N, out_f, generator=g, dtype=dtype)
    bv = torch.randn(out_f, generator=g, dtype=dtype) if bias else None
    t = tol(dtype)
    torch.testing.assert_close(OPS.bsr_linear(x, crow, col, values, bv, out_f),
                               reference.bsr_linear(x, crow, col, values, bv, out_f), **t)
    torch.testing.assert_close(OPS.bsr_linear_backward_input(gy, crow, col, values, in_f),
                               reference.bsr_linear_backward_input(gy, crow, col, values, in_f), **t)
    torch.testing.assert_close(OPS.bsr_sddmm(gy, x, crow, col, b),
                               reference.bsr_sddmm(gy, x, crow, col, b), **t)


@pytest.fixture(params=ISAS)
def isa(request, monkeypatch):
    monkeypatch.setenv("GNNSPARSE_CPU_ISA", request.param)
    return request.param


SHAPES = [
    # N, in, out, b, density, empty block rows
    (0, 32, 48, 16, 0.5, ()),        # no nodes
    (1, 32, 64, 32, 0.5, ()),        # one node
    (13, 24, 40, 8, 0.4, ()),        # odd N, partial micro-tiles
    (13, 16, 32, 4, 0.0, ()),        # nnzb = 0
    (37, 64, 32, 16, 1.0, ()),       # full density
    (65, 64, 128, 16, 0.4, (0, 3, 7)),  # empty block rows incl. first/last
    (300, 96, 64, 32, 0.5, (1,)),    # b = 32 (several slices), empty row
    (1000, 48, 24, 8, 0.3, ()),      # several reduction chunks
    (7, 15, 9, 3, 0.5, ()),          # b = 3 (portable path only)
    (9, 8, 8, 8, 1.0, ()),           # a single block
    (11, 6, 10, 2, 0.6, ()),         # b = 2
    (5, 7, 3, 1, 0.5, ()),           # b = 1 (plain CSR)
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("N,in_f,out_f,b,density,empty_rows", SHAPES)
def test_ops_match_reference(isa, N, in_f, out_f, b, density, empty_rows, dtype):
    check_all_ops(N, in_f, out_f, b, density, dtype, empty_block_rows=empty_rows)


def test_ops_no_bias(isa):
    check_all_ops(40, 32, 16, 8, 0.5, torch.float32, bias=False)


@st.composite
def _problem(draw):
    b = draw(st.sampled_from(BLOCKS))
    nbr = draw(st.integers(1, max(1, 64 // b)))
    nbc = draw(st.integers(1, max(1, 64 // b)))
    return dict(N=draw(st.integers(0, 70)), in_f=nbc * b, out_f=nbr * b, b=b,
                density=draw(st.sampled_from([0.0, 0.1, 0.4, 0.8, 1.0])),
                dtype=draw(st.sampled_from([torch.float32, torch.float64])),
                seed=draw(st.integers(0, 10_000)), bias=draw(st.booleans()))


@settings(max_examples=60, deadline=None)
@given(p=_problem(), isa=st.sampled_from(ISAS))
def test_ops_match_reference_random(p, isa):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GNNSPARSE_CPU_ISA", isa)
        check_all_ops(**p)


@pytest.mark.skipif(not _cpu_has_avx2_fma(), reason="CPU has no AVX2+FMA: only the generic path exists")
@pytest.mark.parametrize("b", [4, 8, 16, 32])
def test_generic_and_vector_paths_differ_but_agree(monkeypatch, b):
    # FMA vs. mul+add round differently: bit-identical outputs would mean the env var selected
    # the same code twice.
    crow, col, values = make_bsr(64, 128, b, 0.5, torch.float32, seed=3)
    x = torch.randn(257, 128, generator=torch.Generator().manual_seed(4))
    monkeypatch.setenv("GNNSPARSE_CPU_ISA", "avx2")
    y_avx2 = OPS.bsr_linear(x, crow, col, values, None, 64)
    monkeypatch.setenv("GNNSPARSE_CPU_ISA", "generic")
    y_gen = OPS.bsr_linear(x, crow, col, values, None, 64)
    assert not torch.equal(y_avx2, y_gen)
    torch.testing.assert_close(y_avx2, y_gen, rtol=1e-4, atol=1e-4)
    monkeypatch.setenv("GNNSPARSE_CPU_ISA", "auto")
    torch.testing.assert_close(OPS.bsr_linear(x, crow, col, values, None, 64), y_gen, rtol=1e-4, atol=1e-4)


def test_zero_features():
    # in_features = 0: no blocks possible; out_features = 0: no block rows
    crow = torch.zeros(3, dtype=torch.int64)
    col = torch.zeros(0, dtype=torch.int64)
    values = torch.zeros(0, 4, 4, dtype=torch.float64)
    y = OPS.bsr_linear(torch.randn(5, 0, dtype=torch.float64), crow, col, values, None, 8)
    torch.testing.assert_close(y, torch.zeros(5, 8, dtype=torch.float64))
    crow0 = torch.zeros(1, dtype=torch.int64)
    x = torch.randn(5, 8, dtype=torch.float64)
    assert OPS.bsr_linear(x, crow0, col, values, None, 0).shape == (5, 0)
    dx = OPS.bsr_linear_backward_input(torch.zeros(5, 0, dtype=torch.float64), crow0, col, values, 8)
    torch.testing.assert_close(dx, torch.zeros(5, 8, dtype=torch.float64))
    assert OPS.bsr_sddmm(torch.zeros(5, 0, dtype=torch.float64), x, crow0, col, 4).shape == (0, 4, 4)


def test_noncontiguous_inputs(isa):
    crow, col, values = make_bsr(32, 64, 16, 0.5, seed=5)
    x = torch.randn(64, 45, dtype=torch.float64).t()  # [45, 64], non-contiguous
    gy = torch.randn(32, 45, dtype=torch.float64).t()
    vt = values.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    assert not (x.is_contiguous() or gy.is_contiguous() or vt.is_contiguous())
    torch.testing.assert_close(OPS.bsr_linear(x, crow, col, vt, None, 32),
                               reference.bsr_linear(x, crow, col, values, None, 32))
    torch.testing.assert_close(OPS.bsr_linear_backward_input(gy, crow, col, vt, 64),
                               reference.bsr_linear_backward_input(gy, crow, col, values, 64))
    torch.testing.assert_close(OPS.bsr_sddmm(gy, x, crow, col, 16), reference.bsr_sddmm(gy, x, crow, col, 16))


# ------------------------------------------------------------------------------ ops.bsr_linear
@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_bsr_linear_nd_and_backends(backend, isa):
    out_f, in_f, b = 16, 24, 8
    crow, col, values = make_bsr(out_f, in_f, b, 0.5, seed=6)
    bias = torch.randn(out_f, dtype=torch.float64)
    w = reference.bsr_dense_weight(crow, col, values, out_f, in_f)
    x3 = torch.randn(2, 5, in_f, dtype=torch.float64)
    y = ops.bsr_linear(x3, crow, col, values, bias, out_f, backend=backend, in_features=in_f)
    assert y.shape == (2, 5, out_f)
    torch.testing.assert_close(y, x3 @ w.t() + bias)
    x1 = torch.randn(in_f, dtype=torch.float64)
    torch.testing.assert_close(ops.bsr_linear(x1, crow, col, values, None, out_f, backend=backend), w @ x1)
    x0 = torch.randn(3, 0, in_f, dtype=torch.float64)
    assert ops.bsr_linear(x0, crow, col, values, bias, out_f, backend=backend).shape == (3, 0, out_f)


def test_torch_backend_validates():
    crow, col, values = make_bsr(8, 8, 4, 1.0, seed=1)
    bad = col.clone()
    bad[0] = -1
    with pytest.raises(ValueError, match=r"col_indices\[0\]=-1 outside"):
        ops.bsr_linear(torch.randn(3, 8, dtype=torch.float64), crow, bad, values, None, 8, backend="torch")


@pytest.mark.parametrize("b,out_f,in_f,empty_rows", [(2, 6, 4, ()), (4, 8, 8, (0,)), (8, 8, 16, ())])
def test_gradcheck(isa, b, out_f, in_f, empty_rows):
    crow, col, values = make_bsr(out_f, in_f, b, 0.6, empty_block_rows=empty_rows, seed=7)
    if col.numel() == 0:
        crow, col, values = make_bsr(out_f, in_f, b, 1.0, empty_block_rows=empty_rows, seed=7)
    values.requires_grad_()
    x = torch.randn(2, 3, in_f, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(out_f, dtype=torch.float64, requires_grad=True)

    def f(x, v, bias):
        return ops.bsr_linear(x, crow, col, v, bias, out_f, backend="cpu")

    assert torch.autograd.gradcheck(f, (x, values, bias))
    assert torch.autograd.gradgradcheck(f, (x, values, bias))


def test_backward_matches_torch_backend_and_skips_unneeded_grads():
    out_f, in_f, b = 32, 48, 8
    crow, col, values = make_bsr(out_f, in_f, b, 0.4, seed=2)
    x = torch.randn(300, in_f, dtype=torch.float64)
    bias = torch.randn(out_f, dtype=torch.float64)
    gy = torch.randn(300, out_f, dtype=torch.float64)
    grads = {}
    for backend in ("cpu", "torch"):
        xs, vs, bs = (t.clone().requires_grad_() for t in (x, values, bias))
        ops.bsr_linear(xs, crow, col, vs, bs, out_f, backend=backend).backward(gy)
        grads[backend] = (xs.grad, vs.grad, bs.grad)
    for a, r in zip(grads["cpu"], grads["torch"]):
        torch.testing.assert_close(a, r)
    from torch.utils.flop_counter import FlopCounterMode

    vs = values.clone().requires_grad_()
    with FlopCounterMode(display=False) as fc:
        ops.bsr_linear(x, crow, col, vs, bias, out_f, backend="cpu").backward(gy)
    assert sorted(str(k) for k in fc.get_flop_counts()["Global"]) == ["gnnsparse.bsr_linear",
                                                                       "gnnsparse.bsr_sddmm"]
    torch.testing.assert_close(vs.grad, grads["torch"][1])


def test_flop_counter_mode():
    from torch.utils.flop_counter import FlopCounterMode

    out_f, in_f, N, b = 16, 32, 12, 8
    crow, col, values = make_bsr(out_f, in_f, b, 0.5)
    nnzb = col.numel()
    x = torch.randn(N, in_f, dtype=torch.float64, requires_grad=True)
    v = values.clone().requires_grad_()
    bias = torch.zeros(out_f, dtype=torch.float64, requires_grad=True)
    with FlopCounterMode(display=False) as fc:
        ops.bsr_linear(x, crow, col, v, bias, out_f, backend="cpu").sum().backward()
    counts = {str(k): c for k, c in fc.get_flop_counts()["Global"].items()}
    f = 2 * N * nnzb * b * b
    assert counts == {"gnnsparse.bsr_linear": f, "gnnsparse.bsr_linear_backward_input": f,
                      "gnnsparse.bsr_sddmm": f, "gnnsparse.bias_grad": 0}
    assert ops.bsr_linear_flops(N, nnzb, b) == f


# ------------------------------------------------------------------------------ opcheck
def _opcheck_cases():
    crow, col, values = make_bsr(8, 12, 4, 0.5, seed=11)
    g = torch.Generator().manual_seed(12)
    x = torch.randn(37, 12, generator=g, dtype=torch.float64)
    gy = torch.randn(37, 8, generator=g, dtype=torch.float64)
    b = torch.randn(8, generator=g, dtype=torch.float64)
    rg = lambda t: t.clone().requires_grad_()  # noqa: E731
    return [
        ("bsr_linear", (x, crow, col, values, b, 8)),
        ("bsr_linear", (rg(x), crow, col, rg(values), rg(b), 8)),
        ("bsr_linear", (x.float(), crow, col, values.float(), None, 8)),
        ("bsr_linear_backward_input", (gy, crow, col, values, 12)),
        ("bsr_linear_backward_input", (rg(gy), crow, col, rg(values), 12)),
        ("bsr_sddmm", (gy, x, crow, col, 4)),
        ("bsr_sddmm", (rg(gy), rg(x), crow, col, 4)),
    ]


@pytest.mark.parametrize("case", range(len(_opcheck_cases())))
def test_opcheck(case):
    name, args = _opcheck_cases()[case]
    torch.library.opcheck(getattr(OPS, name), args)


# ------------------------------------------------------------------------------ determinism
@pytest.mark.parametrize("b", [4, 16, 3])
def test_deterministic_across_thread_counts(b):
    dtype = torch.float64
    out_f, in_f, N = 16 * b, 8 * b, 3001  # many tiles and reduction chunks, partial last tile
    crow, col, values = make_bsr(out_f, in_f, b, 0.3, dtype, seed=9)
    g = torch.Generator().manual_seed(10)
    x = torch.randn(N, in_f, generator=g, dtype=dtype)
    gy = torch.randn(N, out_f, generator=g, dtype=dtype)
    bias = torch.randn(out_f, generator=g, dtype=dtype)

    def run():
        return (OPS.bsr_linear(x, crow, col, values, bias, out_f),
                OPS.bsr_linear_backward_input(gy, crow, col, values, in_f),
                OPS.bsr_sddmm(gy, x, crow, col, b))

    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run()
        torch.set_num_threads(2)
        two = run()
    finally:
        torch.set_num_threads(old)
    for a, b_ in zip(one, two):
        assert torch.equal(a, b_)


def test_large_output_streaming_path_matches(isa):
    # Outputs >= 16 MiB take the non-temporal store path of the AVX2 kernel.
    out_f, in_f, b, N = 256, 64, 16, 16500
    crow, col, values = make_bsr(out_f, in_f, b, 0.3, torch.float32, seed=13)
    x = torch.randn(N, in_f, generator=torch.Generator().manual_seed(14))
    bias = torch.randn(out_f)
    torch.testing.assert_close(OPS.bsr_linear(x, crow, col, values, bias, out_f),
                               reference.bsr_linear(x, crow, col, values, bias, out_f), rtol=3e-4, atol=3e-4)


# ------------------------------------------------------------------------------ formats
def test_format_helpers_round_trip():
    g = torch.Generator().manual_seed(3)
    dense = torch.randn(16, 24, generator=g, dtype=torch.float64)
    norms = formats.block_norms(dense, 4)
    assert norms.shape == (4, 6)
    torch.testing.assert_close(norms[1, 2], dense[4:8, 8:12].norm())
    mask = norms > norms.median()
    crow, col, values = formats.block_mask_to_bsr(mask, dense, 4)
    assert values.shape == (int(mask.sum()), 4, 4)
    formats.validate_bsr(crow, col, values, (16, 24))
    w = formats.bsr_to_dense(crow, col, values, (16, 24))
    expect = dense * mask.repeat_interleave(4, 0).repeat_interleave(4, 1)
    torch.testing.assert_close(w, expect)
    torch.testing.assert_close(w, reference.bsr_dense_weight(crow, col, values, 16, 24))
    c2, k2, v2 = formats.dense_to_bsr(expect, 4)
    assert torch.equal(c2, crow) and torch.equal(k2, col) and torch.equal(v2, values)
    with pytest.raises(ValueError, match="not divisible by blocksize 5"):
        formats.dense_to_bsr(dense, 5)
    with pytest.raises(ValueError, match=r"values must be \[nnzb, b, b\]"):
        formats.validate_bsr(crow, col, values[:, :2], (16, 24))
    nonmono = crow.clone()
    nonmono[1], nonmono[2] = col.numel(), 0
    with pytest.raises(ValueError, match="decreases"):
        formats.validate_bsr(nonmono, col, values, (16, 24))


# ------------------------------------------------------------------------------ bad input
def _bad_cases():
    out_f, in_f, bs = 8, 12, 4
    crow, col, values = make_bsr(out_f, in_f, bs, 0.5, torch.float32, seed=1, empty_block_rows=(1,))
    x = torch.randn(5, in_f)
    gy = torch.randn(5, out_f)
    b = torch.randn(out_f)
    nnzb = col.numel()
    assert nnzb >= 2
    bad_col = col.clone()
    bad_col[1] = in_f // bs
    neg_col = col.clone()
    neg_col[0] = -1
    nonmono = crow.clone()
    nonmono[1] = nnzb
    nonmono[2] = 0
    L = lambda *a: OPS.bsr_linear(*a)  # noqa: E731
    return {
        "values dtype": (lambda: L(x, crow, col, values.double(), b, out_f),
                         r"expected values to have dtype Float \(same as x\), got Double"),
        "x dtype": (lambda: L(x.half(), crow, col, values.half(), None, out_f),
                    r"expected x to have dtype float32 or float64, got Half"),
        "crow dtype": (lambda: L(x, crow.int(), col, values, b, out_f),
                       r"expected crow_indices to have dtype int64, got Int"),
        "values 2-D": (lambda: L(x, crow, col, values.flatten(1), b, out_f),
                       r"expected values to be 3-D \[nnzb, blocksize, blocksize\]"),
        "values not square": (lambda: L(x, crow, col, values[:, :, :2], b, out_f),
                              r"expected values to hold square blocks"),
        "values nnzb": (lambda: L(x, crow, col, values[:-1], b, out_f),
                        rf"expected values to have shape \[nnzb, blocksize, blocksize\] = \[{nnzb}, 4, 4\]"),
        "out not divisible": (lambda: L(x, crow, col, values, None, out_f + 2),
                              r"out_features = 10 is not divisible by blocksize 4"),
        "in not divisible": (lambda: L(torch.randn(5, 10), crow, col, values, None, out_f),
                             r"in_features = x.size\(1\) = 10 is not divisible by blocksize 4"),
        "col out of range": (lambda: L(x, crow, bad_col, values, b, out_f),
                             r"col_indices\[1\] = 3 is out of range \[0, 3\) \(in_features / blocksize"),
        "col negative": (lambda: L(x, crow, neg_col, values, b, out_f),
                         r"col_indices\[0\] = -1 is out of range"),
        "crow non-monotone": (lambda: L(x, nonmono, col, values, b, out_f),
                              r"crow_indices must be non-decreasing"),
        "crow length": (lambda: L(x, crow[:-1], col, values, b, out_f),
                        r"expected crow_indices to have shape \[out_features / blocksize \+ 1\] = \[3\]"),
        "bias shape": (lambda: L(x, crow, col, values, torch.randn(out_f + 1), out_f),
                       rf"expected bias to have shape \[out_features\] = \[{out_f}\]"),
        "bwd_input not divisible": (lambda: OPS.bsr_linear_backward_input(gy, crow, col, values, 13),
                                    r"in_features = 13 is not divisible by blocksize 4"),
        "bwd_input col range": (lambda: OPS.bsr_linear_backward_input(gy, crow, col, values, 8),
                                r"is out of range \[0, 2\)"),
        "bwd_input values dtype": (lambda: OPS.bsr_linear_backward_input(gy, crow, col, values.double(),
                                                                         in_f),
                                   r"expected values to have dtype Float \(same as grad_out\)"),
        "sddmm blocksize 0": (lambda: OPS.bsr_sddmm(gy, x, crow, col, 0), r"expected blocksize >= 1, got 0"),
        "sddmm blocksize": (lambda: OPS.bsr_sddmm(gy, x, crow, col, 8),
                            r"in_features = x.size\(1\) = 12 is not divisible by blocksize 8"),
        "sddmm rows": (lambda: OPS.bsr_sddmm(gy[:4], x, crow, col, bs),
                       r"expected grad_out and x to have the same number of rows"),
        "sddmm dtype": (lambda: OPS.bsr_sddmm(gy.double(), x, crow, col, bs),
                        r"expected grad_out to have dtype Float \(same as x\), got Double"),
        "sddmm crow non-monotone": (lambda: OPS.bsr_sddmm(gy, x, nonmono, col, bs),
                                    r"crow_indices must be non-decreasing"),
        "sddmm col range": (lambda: OPS.bsr_sddmm(gy, x, crow, bad_col, bs), r"col_indices\[1\] = 3 is out of range"),
    }


@pytest.mark.parametrize("name", sorted(_bad_cases()))
def test_bad_input_raises(name):
    fn, pattern = _bad_cases()[name]
    with pytest.raises(RuntimeError, match=pattern):
        fn()
