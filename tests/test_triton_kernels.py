"""Correctness of the Triton kernels (``gnnsparse.kernels``) against :mod:`gnnsparse.reference`.

Without a GPU the kernels run in Triton's CPU interpreter: ``TRITON_INTERPRET=1`` is set here
before triton is imported, and the tensors are CPU tensors. With a GPU they run compiled on CUDA
tensors. The whole module is skipped when triton is not installed. Shapes are small (the
interpreter is slow) but odd: N = 1, 7, 33, 70, output sizes not multiples of the tiles, empty
rows, no stored entries, full density, block sizes 4/8 (broadcast path) and 16 (``tl.dot``).
Half-precision results are compared with the reference computed in float32 on the same
(rounded) inputs, with a loose tolerance; float64 results (float64 accumulation) with the float64
reference, to 1e-10. ``torch.autograd.gradcheck`` runs in float64 through the public ops
(``gnnsparse.ops.csr_linear``/``bsr_linear`` with ``backend="triton"``), i.e. through the
autograd registered for the ``gnnsparse_triton`` custom ops.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton = pytest.importorskip("triton")

from gnnsparse import _ext, ops, reference  # noqa: E402
from gnnsparse.kernels import _common  # noqa: E402
from gnnsparse.kernels import bsr_linear as tk_bsr  # noqa: E402
from gnnsparse.kernels import csr_linear as tk_csr  # noqa: E402
from gnnsparse.kernels import sddmm as tk_sddmm  # noqa: E402

INTERPRET = _common.INTERPRET
if not INTERPRET and not torch.cuda.is_available():
    pytest.skip("gnnsparse.kernels was imported without TRITON_INTERPRET=1 and there is no GPU",
                allow_module_level=True)

DEVICE = "cpu" if INTERPRET else "cuda"
DTYPES = [torch.float32, torch.float16, torch.float64]
TOL = {torch.float32: dict(atol=1e-4, rtol=1e-4),
       torch.float16: dict(atol=3e-2, rtol=1e-2),
       torch.bfloat16: dict(atol=2e-1, rtol=3e-2),
       torch.float64: dict(atol=1e-10, rtol=1e-10)}


@pytest.fixture(autouse=True)
def _no_tf32():
    """IEEE float32 products, so that float32 results compare tightly with the reference."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(gen, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=gen).to(dtype=dtype, device=DEVICE)


def _structure(gen, rows: int, cols: int, density: float, empty_rows=()):
    """CSR structure (crow, col) of a random ``rows x cols`` pattern, rows in ``empty_rows`` empty."""
    mask = torch.rand(rows, cols, generator=gen) < density
    for r in empty_rows:
        mask[r] = False
    crow = torch.zeros(rows + 1, dtype=torch.int64)
    crow[1:] = mask.sum(1).cumsum(0)
    col = mask.nonzero()[:, 1].contiguous()
    return crow.to(DEVICE), col.to(DEVICE)


def _check(got, want, dtype):
    assert got.dtype == dtype
    assert got.shape == want.shape
    assert got.device.type == DEVICE
    torch.testing.assert_close(got.double(), want.double(), **TOL[dtype])


def _ref(*ts):
    """Reference inputs: float64 stays float64, other dtypes are computed in float32."""
    return [None if t is None else (t if t.dtype == torch.float64 else t.float()) for t in ts]


# ---------------------------------------------------------------------------------------------
# CSR forward
# (N, in, out, density, empty rows): odd sizes, out not a multiple of BLOCK_O, rows longer than
# BLOCK_K (in=70 at full density), no stored entries at all.
CSR_CASES = [
    (1, 5, 3, 0.5, ()),
    (7, 16, 16, 1.0, ()),
    (33, 37, 19, 0.3, (0, 5, 18)),
    (70, 20, 11, 0.0, ()),
    (33, 70, 9, 1.0, (4,)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", CSR_CASES, ids=lambda c: f"N{c[0]}-{c[1]}x{c[2]}-d{c[3]}")
def test_csr_linear(case, bias, dtype):
    n, fin, fout, density, empty = case
    gen = _gen(hash(case) % 1000)
    crow, col = _structure(gen, fout, fin, density, empty)
    values = _randn(gen, col.numel(), dtype=dtype)
    x = _randn(gen, n, fin, dtype=dtype)
    b = _randn(gen, fout, dtype=dtype) if bias else None
    y = tk_csr.csr_linear(x, crow, col, values, b, fout)
    xf, vf, bf = _ref(x, values, b)
    want = reference.csr_linear(xf, crow, col, vf, bf, fout)
    _check(y, want, dtype)
    assert y.is_contiguous()
    for r in empty:  # empty rows of W give exactly the bias (or 0)
        expect = torch.zeros(n, dtype=dtype, device=DEVICE) if b is None else b[r].expand(n)
        assert torch.equal(y[:, r], expect)


def test_csr_linear_noncontiguous_x():
    gen = _gen(1)
    crow, col = _structure(gen, 13, 21, 0.4)
    values = _randn(gen, col.numel())
    base = _randn(gen, 21, 2 * 33)
    x = base.t()[::2]  # [33, 21], strides (2, 66)
    assert not x.is_contiguous()
    y = tk_csr.csr_linear(x, crow, col, values, None, 13)
    _check(y, reference.csr_linear(x.contiguous(), crow, col, values, None, 13), torch.float32)


def test_csr_linear_empty_inputs():
    gen = _gen(2)
    crow, col = _structure(gen, 5, 4, 0.5)
    values = _randn(gen, col.numel())
    y = tk_csr.csr_linear(_randn(gen, 0, 4), crow, col, values, None, 5)
    assert y.shape == (0, 5)
    crow0 = torch.zeros(1, dtype=torch.int64, device=DEVICE)
    empty = torch.zeros(0, dtype=torch.int64, device=DEVICE)
    y = tk_csr.csr_linear(_randn(gen, 3, 4), crow0, empty, _randn(gen, 0), None, 0)
    assert y.shape == (3, 0)


# ---------------------------------------------------------------------------------------------
# CSR SDDMM (weight gradient)
# (N, in, out, density, empty rows, splits); splits=None is the automatic plan (N=1100 gives 2).
SDDMM_CASES = [
    (1, 5, 3, 0.5, (), None),
    (7, 16, 16, 1.0, (), 3),
    (33, 37, 19, 0.3, (0, 18), 3),
    (70, 20, 11, 0.0, (), None),
    (70, 9, 40, 0.5, (1,), 4),
    (1100, 8, 6, 0.5, (), None),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", SDDMM_CASES, ids=lambda c: f"N{c[0]}-{c[1]}x{c[2]}-d{c[3]}-s{c[5]}")
def test_csr_sddmm(case, dtype):
    n, fin, fout, density, empty, splits = case
    gen = _gen(hash(case) % 1000)
    crow, col = _structure(gen, fout, fin, density, empty)
    x = _randn(gen, n, fin, dtype=dtype)
    g = _randn(gen, n, fout, dtype=dtype)
    dv = tk_sddmm.csr_sddmm(g, x, crow, col, splits=splits)
    want = reference.csr_sddmm(*_ref(g, x), crow, col)
    _check(dv, want, dtype)


def test_csr_sddmm_noncontiguous_and_deterministic():
    gen = _gen(3)
    crow, col = _structure(gen, 12, 10, 0.5)
    g = _randn(gen, 12, 70).t()  # [70, 12], column-major
    x = _randn(gen, 70, 20)[:, ::2]  # [70, 10], stride 2
    a = tk_sddmm.csr_sddmm(g, x, crow, col, splits=3)
    b = tk_sddmm.csr_sddmm(g, x, crow, col, splits=3)
    assert torch.equal(a, b)  # no atomics: bit-identical on repeat
    _check(a, reference.csr_sddmm(g.contiguous(), x.contiguous(), crow, col), torch.float32)


def test_node_split_plan():
    assert _common.node_split_plan(70, 10, 3) == (3, 24)
    assert _common.node_split_plan(7, 10, 3) == (3, 3)
    assert _common.node_split_plan(5, 10, 100) == (5, 1)  # never an empty split
    assert _common.node_split_plan(1000, 1, None)[0] == 1  # small N: one split
    s, size = _common.node_split_plan(65536, 4, None)
    assert 1 < s <= _common.MAX_SPLITS and size % 128 == 0 and s * size >= 65536
    assert _common.node_split_plan(65536, 10**6, None)[0] == 1  # enough programs already
    with pytest.raises(RuntimeError, match="splits"):
        _common.node_split_plan(10, 1, 0)


# ---------------------------------------------------------------------------------------------
# BSR
# (N, block rows, block cols, density, empty block rows)
BSR_CASES = [
    (1, 2, 3, 0.5, ()),
    (33, 3, 2, 1.0, ()),
    (70, 4, 3, 0.4, (0, 2)),
    (7, 2, 2, 0.0, ()),
]


def _bsr(gen, case, b, dtype):
    n, nbr, nbc, density, empty = case
    crow, col = _structure(gen, nbr, nbc, density, empty)
    values = _randn(gen, col.numel(), b, b, dtype=dtype)
    return n, nbr * b, nbc * b, crow, col, values


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("b", [4, 8, 16])
@pytest.mark.parametrize("case", BSR_CASES, ids=lambda c: f"N{c[0]}-{c[1]}x{c[2]}-d{c[3]}")
def test_bsr_ops(case, b, dtype):
    gen = _gen(hash((case, b)) % 1000)
    n, fout, fin, crow, col, values = _bsr(gen, case, b, dtype)
    x = _randn(gen, n, fin, dtype=dtype)
    g = _randn(gen, n, fout, dtype=dtype)
    bias = _randn(gen, fout, dtype=dtype) if case[0] % 2 else None  # with and without bias
    xf, gf, vf, bf = _ref(x, g, values, bias)

    y = tk_bsr.bsr_linear(x, crow, col, values, bias, fout)
    _check(y, reference.bsr_linear(xf, crow, col, vf, bf, fout), dtype)
    for br in case[4]:  # empty block rows give exactly the bias (or 0)
        sl = slice(br * b, (br + 1) * b)
        expect = torch.zeros(n, b, dtype=dtype, device=DEVICE) if bias is None else bias[sl].expand(n, b)
        assert torch.equal(y[:, sl], expect)

    dx = tk_bsr.bsr_linear_backward_input(g, crow, col, values, fin)
    _check(dx, reference.bsr_linear_backward_input(gf, crow, col, vf, fin), dtype)

    want = reference.bsr_sddmm(gf, xf, crow, col, b)
    for splits in (None, 3):
        dv = tk_bsr.bsr_sddmm(g, x, crow, col, b, splits=splits)
        _check(dv, want, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("b", [3, 12, 32])
def test_bsr_ops_non_power_of_two_block(b, dtype):
    """Padded, masked blocks: b=3 (broadcast path in a 4-wide tile), b=12 (tl.dot on 16; float64:
    broadcast path in 4-column / 8-node chunks); b=32 (float64: 8 column chunks, 2-node steps)."""
    gen = _gen(b)
    n, fout, fin, crow, col, values = _bsr(gen, (33, 3, 2, 0.6, (1,)), b, dtype)
    x = _randn(gen, n, fin, dtype=dtype)
    g = _randn(gen, n, fout, dtype=dtype)
    bias = _randn(gen, fout, dtype=dtype)
    _check(tk_bsr.bsr_linear(x, crow, col, values, bias, fout),
           reference.bsr_linear(x, crow, col, values, bias, fout), dtype)
    _check(tk_bsr.bsr_linear_backward_input(g, crow, col, values, fin),
           reference.bsr_linear_backward_input(g, crow, col, values, fin), dtype)
    _check(tk_bsr.bsr_sddmm(g, x, crow, col, b, splits=2),
           reference.bsr_sddmm(g, x, crow, col, b), dtype)


def test_bsr_noncontiguous_and_deterministic():
    gen = _gen(5)
    b = 16
    n, fout, fin, crow, col, values = _bsr(gen, (40, 2, 3, 0.7, ()), b, torch.float32)
    x = _randn(gen, fin, n).t()  # column-major [40, 48]
    g = _randn(gen, n, 2 * fout)[:, ::2]  # stride 2
    vals_nc = values.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    assert not vals_nc.is_contiguous()
    xc, gc = x.contiguous(), g.contiguous()
    _check(tk_bsr.bsr_linear(x, crow, col, vals_nc, None, fout),
           reference.bsr_linear(xc, crow, col, values, None, fout), torch.float32)
    _check(tk_bsr.bsr_linear_backward_input(g, crow, col, vals_nc, fin),
           reference.bsr_linear_backward_input(gc, crow, col, values, fin), torch.float32)
    a = tk_bsr.bsr_sddmm(g, x, crow, col, b, splits=3)
    assert torch.equal(a, tk_bsr.bsr_sddmm(g, x, crow, col, b, splits=3))
    _check(a, reference.bsr_sddmm(gc, xc, crow, col, b), torch.float32)


def test_bsr_backward_input_unsorted_columns_in_transpose():
    """Block column c collects blocks from several block rows, not adjacent in ``values``."""
    b = 4
    crow = torch.tensor([0, 2, 3, 5], dtype=torch.int64, device=DEVICE)
    col = torch.tensor([1, 2, 1, 0, 1], dtype=torch.int64, device=DEVICE)
    gen = _gen(6)
    values = _randn(gen, 5, b, b)
    g = _randn(gen, 9, 3 * b)
    _check(tk_bsr.bsr_linear_backward_input(g, crow, col, values, 3 * b),
           reference.bsr_linear_backward_input(g, crow, col, values, 3 * b), torch.float32)


# ---------------------------------------------------------------------------------------------
# float64: float64 accumulation, and gradcheck through the public ops (backend="triton")
def test_float64_params():
    tl = triton.language
    assert torch.float64 in _common.SUPPORTED_DTYPES
    assert _common.acc_dtype(torch.float64) == (torch.float64, tl.float64)
    assert _common.acc_dtype(torch.float16) == (torch.float32, tl.float32)
    p = tk_bsr._block_params(16, torch.float64, "spmm")
    assert not p["USE_DOT"] and p["ACC"] == tl.float64 and p["R_CHUNK"] == 4
    assert tk_bsr._block_params(16, torch.float32, "spmm")["USE_DOT"]
    assert tk_bsr._block_params(4, torch.float32, "spmm")["R_CHUNK"] == 4
    assert tk_bsr._block_params(32, torch.float64, "sddmm")["N_CHUNK"] == 2


def test_float64_accumulates_in_float64():
    """Sums that float32 accumulation would round away: 1 + k * 2**-40 terms."""
    n = 70
    x = torch.full((n, 1), 2.0 ** -40, dtype=torch.float64, device=DEVICE)
    x[0] = 1.0
    crow = torch.tensor([0, 1], dtype=torch.int64, device=DEVICE)
    col = torch.zeros(1, dtype=torch.int64, device=DEVICE)
    one = torch.ones(1, dtype=torch.float64, device=DEVICE)
    want = 1.0 + (n - 1) * 2.0 ** -40
    assert tk_sddmm.csr_sddmm(torch.ones(n, 1, dtype=torch.float64, device=DEVICE), x, crow, col,
                              splits=1).item() == want
    assert tk_csr.csr_linear(x.t().contiguous(), torch.tensor([0, n], device=DEVICE),
                             torch.arange(n, device=DEVICE), one.expand(n), None, 1).item() == want


_needs_ext = pytest.mark.skipif(not _ext.available(),
                                reason="the triton custom ops take their schemas from the C++ extension")


#: The ops are linear in each of x, values, bias, so central differences are exact up to float64
#: rounding (~1e-9 here): much tighter than gradcheck's defaults (atol 1e-5, rtol 1e-3), which in
#: fast mode (atol scaled by the projection sums) let a 1% error in a 512-entry gradient through.
GRADCHECK_TOL = dict(atol=1e-7, rtol=1e-6)


def _leaf(gen, *shape):
    return _randn(gen, *shape, dtype=torch.float64).requires_grad_()


@_needs_ext
@pytest.mark.parametrize("cached", [False, True], ids=["transpose-per-call", "cached-transpose"])
def test_csr_linear_gradcheck_float64(cached):
    """x, values and bias together; the cached transpose takes the one-pass backward
    (``csr_linear_backward``), without it ``csr_linear_backward_input`` + ``csr_sddmm``."""
    gen = _gen(11)
    n, fin, fout = 5, 8, 6
    crow, col = _structure(gen, fout, fin, 0.5, (2,))  # row 2 of W empty
    x, v, bias = _leaf(gen, n, fin), _leaf(gen, col.numel()), _leaf(gen, fout)
    transpose = ops.csr_transpose(crow, col, fin) if cached else None

    def f(x, v, bias):
        return ops.csr_linear(x, crow, col, v, bias, fout, backend="triton", transpose=transpose)

    assert f(x, v, bias).dtype == torch.float64
    assert torch.autograd.gradcheck(f, (x, v, bias), **GRADCHECK_TOL)


# (b, in, out, fast_mode): the full Jacobian on a small weight; random projections of it
# (``fast_mode``) on 32 x 32 weights, whose full numerical Jacobian (one interpreted forward per
# weight entry) would take minutes under the interpreter.
BSR_GRADCHECK = [(4, 8, 12, False), (4, 32, 32, True), (16, 32, 32, True)]


@_needs_ext
@pytest.mark.parametrize("case", BSR_GRADCHECK,
                         ids=lambda c: f"b{c[0]}-{c[2]}x{c[1]}-{'fast' if c[3] else 'full'}")
def test_bsr_linear_gradcheck_float64(case):
    b, fin, fout, fast = case
    gen = _gen(12 + b + fin)
    n = 5
    crow, col = _structure(gen, fout // b, fin // b, 0.6, (1,))  # block row 1 empty
    assert col.numel() > 0
    x, v, bias = _leaf(gen, n, fin), _leaf(gen, col.numel(), b, b), _leaf(gen, fout)

    def f(x, v, bias):
        return ops.bsr_linear(x, crow, col, v, bias, fout, backend="triton")

    assert f(x, v, bias).dtype == torch.float64
    assert torch.autograd.gradcheck(f, (x, v, bias), fast_mode=fast, **GRADCHECK_TOL)


# ---------------------------------------------------------------------------------------------
# bfloat16 and TF32: only meaningful compiled (the 3.8 interpreter computes bf16 wrongly)
@pytest.mark.skipif(INTERPRET, reason="bf16 arithmetic and tl.dot are wrong in Triton's interpreter")
def test_bfloat16_gpu():
    dtype = torch.bfloat16
    gen = _gen(7)
    crow, col = _structure(gen, 19, 37, 0.3, (2,))
    v = _randn(gen, col.numel(), dtype=dtype)
    x = _randn(gen, 70, 37, dtype=dtype)
    g = _randn(gen, 70, 19, dtype=dtype)
    _check(tk_csr.csr_linear(x, crow, col, v, None, 19),
           reference.csr_linear(x.float(), crow, col, v.float(), None, 19), dtype)
    _check(tk_sddmm.csr_sddmm(g, x, crow, col),
           reference.csr_sddmm(g.float(), x.float(), crow, col), dtype)
    n, fout, fin, bcrow, bcol, bv = _bsr(gen, (70, 3, 2, 0.7, ()), 16, dtype)
    x = _randn(gen, n, fin, dtype=dtype)
    g = _randn(gen, n, fout, dtype=dtype)
    _check(tk_bsr.bsr_linear(x, bcrow, bcol, bv, None, fout),
           reference.bsr_linear(x.float(), bcrow, bcol, bv.float(), None, fout), dtype)
    _check(tk_bsr.bsr_sddmm(g, x, bcrow, bcol, 16),
           reference.bsr_sddmm(g.float(), x.float(), bcrow, bcol, 16), dtype)


@pytest.mark.skipif(INTERPRET, reason="TF32 exists on CUDA only")
def test_tf32_follows_torch_flag():
    gen = _gen(8)
    n, fout, fin, crow, col, values = _bsr(gen, (256, 4, 4, 1.0, ()), 32, torch.float32)
    x = _randn(gen, n, fin)
    want = reference.bsr_linear(x.double(), crow, col, values.double(), None, fout)
    torch.backends.cuda.matmul.allow_tf32 = False
    ieee = tk_bsr.bsr_linear(x, crow, col, values, None, fout)
    torch.backends.cuda.matmul.allow_tf32 = True
    tf32 = tk_bsr.bsr_linear(x, crow, col, values, None, fout)
    err_ieee = (ieee.double() - want).abs().max().item()
    err_tf32 = (tf32.double() - want).abs().max().item()
    assert err_ieee < 1e-3
    assert err_tf32 < 0.5  # TF32 has a 10-bit mantissa
    if torch.cuda.get_device_capability()[0] >= 8:
        assert err_tf32 > err_ieee


# ---------------------------------------------------------------------------------------------
# Configuration
def test_autotune_configs(monkeypatch):
    kernels = [tk_csr._csr_linear_kernel, tk_sddmm._csr_sddmm_kernel,
               tk_bsr._bsr_spmm_kernel, tk_bsr._bsr_sddmm_kernel]
    expected = 1 if (INTERPRET or _common.ONE_CONFIG) else 6
    for k in kernels:
        assert len(k.configs) == expected
    monkeypatch.setattr(_common, "INTERPRET", False)
    monkeypatch.setattr(_common, "ONE_CONFIG", False)
    cfgs = _common.node_configs()
    assert {(c.kwargs["BLOCK_N"], c.num_warps) for c in cfgs} == {
        (bn, nw) for bn in (32, 64, 128) for nw in (4, 8)}
    pruned = _common.prune_block_configs(cfgs, {}, BLOCK_B=128)
    assert {c.kwargs["BLOCK_N"] for c in pruned} == {32, 64}
    f32, f64 = torch.zeros(1), torch.zeros(1, dtype=torch.float64)
    assert len(_common.prune_block_configs(cfgs, {"a_ptr": f32}, BLOCK_B=64)) == 6
    pruned = _common.prune_block_configs(cfgs, {"a_ptr": f64}, BLOCK_B=64)  # float64: half the tile
    assert {c.kwargs["BLOCK_N"] for c in pruned} == {32, 64}
    pruned = _common.prune_block_configs(cfgs, {"a_ptr": f64}, BLOCK_B=256)
    assert {c.kwargs["BLOCK_N"] for c in pruned} == {32}  # always keeps the smallest tile
    monkeypatch.setattr(_common, "INTERPRET", True)
    assert len(_common.node_configs()) == 1


def test_dot_precision(monkeypatch):
    monkeypatch.setattr(_common, "INTERPRET", False)
    torch.backends.cuda.matmul.allow_tf32 = True
    assert _common.dot_precision(torch.float32) == "tf32"
    assert _common.dot_precision(torch.float16) == "ieee"
    torch.backends.cuda.matmul.allow_tf32 = False
    assert _common.dot_precision(torch.float32) == "ieee"
    monkeypatch.setattr(_common, "INTERPRET", True)
    torch.backends.cuda.matmul.allow_tf32 = True
    assert _common.dot_precision(torch.float32) == "ieee"


# ---------------------------------------------------------------------------------------------
# Validation (no kernel launches)
def _csr_args():
    gen = _gen(9)
    crow, col = _structure(gen, 4, 6, 0.5, ())
    return _randn(gen, 5, 6), crow, col, _randn(gen, col.numel())


def test_csr_linear_validation(monkeypatch):
    x, crow, col, v = _csr_args()
    f = tk_csr.csr_linear
    with pytest.raises(RuntimeError, match="2-D"):
        f(x[0], crow, col, v, None, 4)
    with pytest.raises(RuntimeError, match="does not support"):
        f(x.to(torch.complex64), crow, col, v.to(torch.complex64), None, 4)
    with pytest.raises(RuntimeError, match="int32"):
        f(x.int(), crow, col, v, None, 4)
    with pytest.raises(RuntimeError, match="values dtype"):
        f(x, crow, col, v.half(), None, 4)
    with pytest.raises(RuntimeError, match="int64"):
        f(x, crow.int(), col, v, None, 4)
    with pytest.raises(RuntimeError, match="int64"):
        f(x, crow, col.int(), v, None, 4)
    with pytest.raises(RuntimeError, match="crow_indices must have 6"):
        f(x, crow, col, v, None, 5)
    with pytest.raises(RuntimeError, match="values of shape"):
        f(x, crow, col, v[:-1], None, 4)
    with pytest.raises(RuntimeError, match="bias of shape"):
        f(x, crow, col, v, torch.zeros(5, device=DEVICE), 4)
    with pytest.raises(RuntimeError, match="bias dtype"):
        f(x, crow, col, v, torch.zeros(4, device=DEVICE, dtype=torch.float16), 4)
    with pytest.raises(RuntimeError, match="out_features"):
        f(x, crow, col, v, None, -1)
    with pytest.raises(RuntimeError, match="one device"):
        f(x.to("meta"), crow, col, v, None, 4)
    monkeypatch.setattr(_common, "INTERPRET", False)
    with pytest.raises(RuntimeError, match="CUDA device or TRITON_INTERPRET=1"):
        f(x.cpu(), crow.cpu(), col.cpu(), v.cpu(), None, 4)


def test_csr_sddmm_validation():
    x, crow, col, _ = _csr_args()
    g = torch.zeros(5, 4, device=DEVICE)
    f = tk_sddmm.csr_sddmm
    with pytest.raises(RuntimeError, match="2-D"):
        f(g[0], x, crow, col)
    with pytest.raises(RuntimeError, match="x dtype"):
        f(g, x.half(), crow, col)
    with pytest.raises(RuntimeError, match="does not support"):
        f(g.int(), x.int(), crow, col)
    with pytest.raises(RuntimeError, match="x dtype"):
        f(g.double(), x, crow, col)
    with pytest.raises(RuntimeError, match="nodes"):
        f(g[:4], x, crow, col)
    with pytest.raises(RuntimeError, match="crow_indices must have"):
        f(g[:, :3], x, crow, col)
    with pytest.raises(RuntimeError, match="int64"):
        f(g, x, crow, col.int())
    with pytest.raises(RuntimeError, match="splits"):
        f(g, x, crow, col, splits=0)
    with pytest.raises(RuntimeError, match="one device"):
        f(g, x.to("meta"), crow, col)


def test_bsr_validation(monkeypatch):
    gen = _gen(10)
    b = 4
    n, fout, fin, crow, col, values = _bsr(gen, (5, 2, 3, 0.6, ()), b, torch.float32)
    x = _randn(gen, n, fin)
    g = _randn(gen, n, fout)
    with pytest.raises(RuntimeError, match="2-D"):
        tk_bsr.bsr_linear(x[0], crow, col, values, None, fout)
    with pytest.raises(RuntimeError, match="does not support"):
        tk_bsr.bsr_linear(x.to(torch.complex64), crow, col, values.to(torch.complex64), None, fout)
    with pytest.raises(RuntimeError, match="values dtype"):
        tk_bsr.bsr_linear(x.double(), crow, col, values, None, fout)
    with pytest.raises(RuntimeError, match="values dtype"):
        tk_bsr.bsr_linear(x, crow, col, values.half(), None, fout)
    with pytest.raises(RuntimeError, match="square"):
        tk_bsr.bsr_linear(x, crow, col, values[:, :, :2], None, fout)
    with pytest.raises(RuntimeError, match=r"nnzb="):
        tk_bsr.bsr_linear(x, crow, col, values[:0], None, fout)
    with pytest.raises(RuntimeError, match="divisible"):
        tk_bsr.bsr_linear(x[:, :-1], crow, col, values, None, fout)
    with pytest.raises(RuntimeError, match="divisible"):
        tk_bsr.bsr_linear(x, crow, col, values, None, fout + 2)
    with pytest.raises(RuntimeError, match="crow_indices must have"):
        tk_bsr.bsr_linear(x, crow, col, values, None, fout + b)
    with pytest.raises(RuntimeError, match="int64"):
        tk_bsr.bsr_linear(x, crow, col.int(), values, None, fout)
    with pytest.raises(RuntimeError, match="bias of shape"):
        tk_bsr.bsr_linear(x, crow, col, values, g[0, :-1], fout)
    with pytest.raises(RuntimeError, match="divisible"):
        tk_bsr.bsr_linear_backward_input(g, crow, col, values, fin + 1)
    with pytest.raises(RuntimeError, match="values dtype"):
        tk_bsr.bsr_linear_backward_input(g, crow, col, values.half(), fin)
    with pytest.raises(RuntimeError, match="2-D"):
        tk_bsr.bsr_linear_backward_input(g[0], crow, col, values, fin)
    with pytest.raises(RuntimeError, match="blocksize"):
        tk_bsr.bsr_sddmm(g, x, crow, col, 0)
    with pytest.raises(RuntimeError, match="divisible"):
        tk_bsr.bsr_sddmm(g, x, crow, col, 3)
    with pytest.raises(RuntimeError, match="nodes"):
        tk_bsr.bsr_sddmm(g[:2], x, crow, col, b)
    with pytest.raises(RuntimeError, match="x dtype"):
        tk_bsr.bsr_sddmm(g, x.half(), crow, col, b)
    with pytest.raises(RuntimeError, match="one device"):
        tk_bsr.bsr_sddmm(g, x, crow.to("meta"), col, b)
    monkeypatch.setattr(_common, "INTERPRET", False)
    with pytest.raises(RuntimeError, match="CUDA device or TRITON_INTERPRET=1"):
        tk_bsr.bsr_linear(x.cpu(), crow.cpu(), col.cpu(), values.cpu(), None, fout)
