"""Tests of the gnnsparse CSR operators (C++ CPU kernels) against the pure-torch reference.

The extension must be built (`pip install --no-build-isolation -e .`); if it is not, every test
here fails (not skips) with the build instructions.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from gnnsparse import _ext, ops, reference

from kernel_support import ISAS, require_extension  # noqa: E402
from kernel_support import cpu_has_avx2_fma as _cpu_has_avx2_fma, cpu_has_avx512f as _cpu_has_avx512f  # noqa: E402


@pytest.fixture(autouse=True)
def _require_extension():
    require_extension()


OPS = torch.ops.gnnsparse
def make_csr(out_f, in_f, density, dtype=torch.float64, seed=0, empty_rows=()):
    """Random CSR (sorted unique columns per row) with the given density; rows in
    ``empty_rows`` store nothing."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(out_f, in_f, generator=g) < density
    if density >= 1.0:
        mask[:] = True
    for r in empty_rows:
        mask[r] = False
    counts = mask.sum(1)
    crow = torch.zeros(out_f + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(counts, 0)
    col = mask.nonzero()[:, 1].contiguous()
    values = torch.randn(col.numel(), generator=g, dtype=dtype)
    return crow, col, values


def tol(dtype):
    return dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4)


def check_all_ops(N, in_f, out_f, density, dtype, seed=0, empty_rows=(), bias=True):
    crow, col, values = make_csr(out_f, in_f, density, dtype, seed, empty_rows)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(N, in_f, generator=g, dtype=dtype)
    gy = torch.randn(N, out_f, generator=g, dtype=dtype)
    b = torch.randn(out_f, generator=g, dtype=dtype) if bias else None
    t = tol(dtype)
    torch.testing.assert_close(OPS.csr_linear(x, crow, col, values, b, out_f),
                               reference.csr_linear(x, crow, col, values, b, out_f), **t)
    torch.testing.assert_close(OPS.csr_linear_backward_input(gy, crow, col, values, in_f),
                               reference.csr_linear_backward_input(gy, crow, col, values, in_f), **t)
    torch.testing.assert_close(OPS.csr_sddmm(gy, x, crow, col),
                               reference.csr_sddmm(gy, x, crow, col), **t)
    torch.testing.assert_close(OPS.bias_grad(gy), reference.bias_grad(gy), **t)


@pytest.fixture(params=ISAS)
def isa(request, monkeypatch):
    monkeypatch.setenv("GNNSPARSE_CPU_ISA", request.param)
    return request.param


SHAPES = [
    # N, in, out, density, empty_rows
    (0, 7, 13, 0.5, ()),          # no nodes
    (1, 7, 13, 0.5, ()),          # one node
    (7, 13, 7, 0.4, ()),          # odd sizes
    (13, 7, 13, 0.0, ()),         # nnz = 0
    (33, 40, 24, 1.0, ()),        # full density, partial second tile
    (65, 29, 17, 0.3, (0, 5, 16)),  # empty rows incl. first/last
    (64, 256, 64, 0.1, ()),       # multiples of the vector widths
    (1000, 37, 19, 0.2, ()),      # several reduction chunks, remainder tile
    (5, 1, 3, 1.0, ()),           # in_features = 1
    (9, 6, 1, 1.0, ()),           # out_features = 1
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("N,in_f,out_f,density,empty_rows", SHAPES)
def test_ops_match_reference(isa, N, in_f, out_f, density, empty_rows, dtype):
    check_all_ops(N, in_f, out_f, density, dtype, empty_rows=empty_rows)


def test_ops_no_bias(isa):
    check_all_ops(40, 9, 11, 0.5, torch.float32, bias=False)


@settings(max_examples=40, deadline=None)
@given(N=st.integers(0, 80), in_f=st.integers(1, 40), out_f=st.integers(1, 40),
       density=st.sampled_from([0.0, 0.05, 0.3, 0.7, 1.0]),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 10_000),
       isa=st.sampled_from(ISAS))
def test_ops_match_reference_random(N, in_f, out_f, density, dtype, seed, isa):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GNNSPARSE_CPU_ISA", isa)
        check_all_ops(N, in_f, out_f, density, dtype, seed=seed)


def test_zero_in_and_out_features():
    crow, col, values = make_csr(4, 0, 0.5)
    y = OPS.csr_linear(torch.randn(3, 0, dtype=torch.float64), crow, col, values, None, 4)
    torch.testing.assert_close(y, torch.zeros(3, 4, dtype=torch.float64))
    crow, col, values = make_csr(0, 5, 0.5)
    x = torch.randn(3, 5, dtype=torch.float64)
    assert OPS.csr_linear(x, crow, col, values, None, 0).shape == (3, 0)
    assert OPS.bias_grad(torch.zeros(3, 0)).shape == (0,)
    dx = OPS.csr_linear_backward_input(torch.zeros(3, 0, dtype=torch.float64), crow, col, values, 5)
    torch.testing.assert_close(dx, torch.zeros(3, 5, dtype=torch.float64))


def test_unsorted_and_duplicate_columns_are_summed():
    # not the documented layout, but the kernels must still agree with the reference
    crow = torch.tensor([0, 3, 3, 5])
    col = torch.tensor([4, 1, 4, 0, 2])
    values = torch.randn(5, dtype=torch.float64)
    x = torch.randn(40, 5, dtype=torch.float64)
    gy = torch.randn(40, 3, dtype=torch.float64)
    torch.testing.assert_close(OPS.csr_linear(x, crow, col, values, None, 3),
                               reference.csr_linear(x, crow, col, values, None, 3))
    torch.testing.assert_close(OPS.csr_linear_backward_input(gy, crow, col, values, 5),
                               reference.csr_linear_backward_input(gy, crow, col, values, 5))
    torch.testing.assert_close(OPS.csr_sddmm(gy, x, crow, col), reference.csr_sddmm(gy, x, crow, col))


def test_isa_env_var_is_read_at_call_time(monkeypatch):
    crow, col, values = make_csr(8, 8, 0.5, torch.float32)
    x = torch.randn(4, 8)
    monkeypatch.setenv("GNNSPARSE_CPU_ISA", "bogus")
    with pytest.raises(RuntimeError, match="GNNSPARSE_CPU_ISA"):
        OPS.csr_linear(x, crow, col, values, None, 8)


@pytest.mark.skipif(not _cpu_has_avx2_fma(), reason="CPU has no AVX2+FMA: only the generic path exists")
def test_generic_and_avx2_paths_differ_but_agree(monkeypatch):
    # The two paths round differently (FMA vs. mul+add), so bit-identical outputs would mean the
    # env var selected the same code twice.
    crow, col, values = make_csr(64, 256, 0.5, torch.float32, seed=3)
    x = torch.randn(512, 256, generator=torch.Generator().manual_seed(4))
    monkeypatch.setenv("GNNSPARSE_CPU_ISA", "avx2")
    y_avx2 = OPS.csr_linear(x, crow, col, values, None, 64)
    monkeypatch.setenv("GNNSPARSE_CPU_ISA", "generic")
    y_gen = OPS.csr_linear(x, crow, col, values, None, 64)
    assert not torch.equal(y_avx2, y_gen)
    torch.testing.assert_close(y_avx2, y_gen, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not _cpu_has_avx512f(), reason="CPU has no AVX-512F")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_avx512_and_avx2_forward_agree(monkeypatch, dtype):
    crow, col, values = make_csr(64, 256, 0.3, dtype, seed=3)
    x = torch.randn(200, 256, generator=torch.Generator().manual_seed(4), dtype=dtype)
    b = torch.randn(64, dtype=dtype)
    monkeypatch.setenv("GNNSPARSE_CPU_ISA", "avx512")
    y512 = OPS.csr_linear(x, crow, col, values, b, 64)
    monkeypatch.setenv("GNNSPARSE_CPU_ISA", "avx2")
    y256 = OPS.csr_linear(x, crow, col, values, b, 64)
    torch.testing.assert_close(y512, y256, **tol(dtype))
    torch.testing.assert_close(y512, reference.csr_linear(x, crow, col, values, b, 64), **tol(dtype))


def test_avx512_request_without_cpu_support_or_bad_isa_raises(monkeypatch):
    crow, col, values = make_csr(4, 4, 0.5, torch.float32)
    x = torch.randn(3, 4)
    if not _cpu_has_avx512f():
        monkeypatch.setenv("GNNSPARSE_CPU_ISA", "avx512")
        with pytest.raises(RuntimeError, match="AVX-512"):
            OPS.csr_linear(x, crow, col, values, None, 4)
    monkeypatch.setenv("GNNSPARSE_CPU_ISA", "avx1024")
    with pytest.raises(RuntimeError, match="'avx512'"):
        OPS.csr_linear(x, crow, col, values, None, 4)


# ------------------------------------------------------------------------------ ops.csr_linear
@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_csr_linear_nd_and_noncontiguous(backend, isa):
    out_f, in_f = 11, 13
    crow, col, values = make_csr(out_f, in_f, 0.4)
    b = torch.randn(out_f, dtype=torch.float64)
    w = reference.dense_weight(crow, col, values, out_f, in_f)
    x3 = torch.randn(2, 5, in_f, dtype=torch.float64)
    y = ops.csr_linear(x3, crow, col, values, b, out_f, backend=backend)
    assert y.shape == (2, 5, out_f)
    torch.testing.assert_close(y, x3 @ w.t() + b)
    xt = torch.randn(in_f, 37, dtype=torch.float64).t()  # non-contiguous [37, in]
    assert not xt.is_contiguous()
    torch.testing.assert_close(ops.csr_linear(xt, crow, col, values, b, out_f, backend=backend),
                               xt @ w.t() + b)
    x1 = torch.randn(in_f, dtype=torch.float64)
    torch.testing.assert_close(ops.csr_linear(x1, crow, col, values, None, out_f, backend=backend),
                               w @ x1)
    x0 = torch.randn(3, 0, in_f, dtype=torch.float64)
    assert ops.csr_linear(x0, crow, col, values, b, out_f, backend=backend).shape == (3, 0, out_f)


@pytest.mark.parametrize("empty_rows", [(), (0, 3)])
def test_gradcheck(isa, empty_rows):
    out_f, in_f = 6, 9
    crow, col, values = make_csr(out_f, in_f, 0.5, empty_rows=empty_rows, seed=7)
    values.requires_grad_()
    x = torch.randn(2, 35, in_f, dtype=torch.float64, requires_grad=True)
    b = torch.randn(out_f, dtype=torch.float64, requires_grad=True)

    def f(x, v, b):
        return ops.csr_linear(x, crow, col, v, b, out_f, backend="cpu")

    assert torch.autograd.gradcheck(f, (x, values, b))
    assert torch.autograd.gradgradcheck(f, (x, values, b))


def test_backward_matches_torch_backend_and_skips_unneeded_grads():
    out_f, in_f = 20, 30
    crow, col, values = make_csr(out_f, in_f, 0.3, seed=2)
    x = torch.randn(300, in_f, dtype=torch.float64)
    b = torch.randn(out_f, dtype=torch.float64)
    gy = torch.randn(300, out_f, dtype=torch.float64)
    grads = {}
    for backend in ("cpu", "torch"):
        xs, vs, bs = (t.clone().requires_grad_() for t in (x, values, b))
        ops.csr_linear(xs, crow, col, vs, bs, out_f, backend=backend).backward(gy)
        grads[backend] = (xs.grad, vs.grad, bs.grad)
    for a, r in zip(grads["cpu"], grads["torch"]):
        torch.testing.assert_close(a, r)
    # only values needs a gradient: the backward must run just the SDDMM
    from torch.utils.flop_counter import FlopCounterMode

    vs = values.clone().requires_grad_()
    with FlopCounterMode(display=False) as fc:
        ops.csr_linear(x, crow, col, vs, b, out_f, backend="cpu").backward(gy)
    assert sorted(str(k) for k in fc.get_flop_counts()["Global"]) == ["gnnsparse.csr_linear",
                                                                       "gnnsparse.csr_sddmm"]
    torch.testing.assert_close(vs.grad, grads["torch"][1])


def test_flop_counter_mode():
    from torch.utils.flop_counter import FlopCounterMode

    out_f, in_f, N = 8, 10, 12
    crow, col, values = make_csr(out_f, in_f, 0.5)
    nnz = col.numel()
    x = torch.randn(N, in_f, dtype=torch.float64, requires_grad=True)
    v = values.clone().requires_grad_()
    b = torch.zeros(out_f, dtype=torch.float64, requires_grad=True)
    with FlopCounterMode(display=False) as fc:
        ops.csr_linear(x, crow, col, v, b, out_f, backend="cpu").sum().backward()
    counts = {str(k): c for k, c in fc.get_flop_counts()["Global"].items()}
    assert counts == {
        # bias add and bias gradient are not counted, as for dense addmm
        "gnnsparse.csr_linear": 2 * N * nnz,
        "gnnsparse.csr_linear_backward_input": 2 * N * nnz,
        "gnnsparse.csr_sddmm": 2 * N * nnz,
        "gnnsparse.bias_grad": 0,
    }


# ------------------------------------------------------------------------------ backends
def test_resolve_backend(monkeypatch):
    monkeypatch.delenv("GNNSPARSE_BACKEND", raising=False)
    assert ops.resolve_backend(None, torch.device("cpu")) == "cpu"
    assert ops.resolve_backend(None, None) == "cpu"
    assert ops.resolve_backend(None, "meta") == "torch"
    assert ops.resolve_backend("torch", "cpu") == "torch"
    monkeypatch.setenv("GNNSPARSE_BACKEND", "torch")
    assert ops.resolve_backend(None, "cpu") == "torch"
    assert ops.resolve_backend("cpu", "cpu") == "cpu"
    monkeypatch.setenv("GNNSPARSE_BACKEND", "nope")
    with pytest.raises(ValueError, match="'cpu', 'cuda', 'triton', 'torch'"):
        ops.resolve_backend(None, "cpu")
    with pytest.raises(ValueError, match="unknown backend"):
        ops.check_backend("gpu")


def test_env_backend_is_used(monkeypatch):
    out_f, in_f = 4, 5
    crow, col, values = make_csr(out_f, in_f, 0.5)
    x = torch.randn(3, in_f, dtype=torch.float64, requires_grad=True)
    calls = []
    real = reference.csr_linear
    monkeypatch.setattr(reference, "csr_linear", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setenv("GNNSPARSE_BACKEND", "torch")
    y = ops.csr_linear(x, crow, col, values, None, out_f)
    assert calls == [1]
    monkeypatch.setenv("GNNSPARSE_BACKEND", "cpu")
    y2 = ops.csr_linear(x, crow, col, values, None, out_f)
    assert calls == [1]
    monkeypatch.delenv("GNNSPARSE_BACKEND")
    ops.csr_linear(x, crow, col, values, None, out_f)
    assert calls == [1]  # auto on CPU with the extension built -> "cpu"
    torch.testing.assert_close(y, y2)


# ------------------------------------------------------------------------------ opcheck
def _opcheck_cases():
    crow, col, values = make_csr(6, 9, 0.5, seed=11)
    g = torch.Generator().manual_seed(12)
    x = torch.randn(37, 9, generator=g, dtype=torch.float64)
    gy = torch.randn(37, 6, generator=g, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    rg = lambda t: t.clone().requires_grad_()  # noqa: E731
    return [
        ("csr_linear", (x, crow, col, values, b, 6)),
        ("csr_linear", (rg(x), crow, col, rg(values), rg(b), 6)),
        ("csr_linear", (x.float(), crow, col, values.float(), None, 6)),
        ("csr_linear_backward_input", (gy, crow, col, values, 9)),
        ("csr_linear_backward_input", (rg(gy), crow, col, rg(values), 9)),
        ("csr_sddmm", (gy, x, crow, col)),
        ("csr_sddmm", (rg(gy), rg(x), crow, col)),
        ("bias_grad", (gy,)),
        ("bias_grad", (rg(gy),)),
    ]


@pytest.mark.parametrize("case", range(len(_opcheck_cases())))
def test_opcheck(case):
    name, args = _opcheck_cases()[case]
    torch.library.opcheck(getattr(OPS, name), args)


# ------------------------------------------------------------------------------ torch.compile
class _TinySparse(torch.nn.Module):
    def __init__(self, out_f, in_f):
        super().__init__()
        crow, col, values = make_csr(out_f, in_f, 0.5, torch.float32, seed=5)
        self.out_f = out_f
        self.register_buffer("crow", crow)
        self.register_buffer("col", col)
        self.values = torch.nn.Parameter(values)
        self.bias = torch.nn.Parameter(torch.randn(out_f))

    def forward(self, x):
        return torch.relu(ops.csr_linear(x, self.crow, self.col, self.values, self.bias, self.out_f,
                                         backend="cpu"))


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    mod = _TinySparse(6, 10)
    x = torch.randn(4, 7, 10, requires_grad=True)
    y_eager = mod(x)
    y_eager.square().sum().backward()
    grads_eager = [t.grad.clone() for t in (x, mod.values, mod.bias)]
    for t in (x, mod.values, mod.bias):
        t.grad = None
    compiled = torch.compile(mod, fullgraph=True)
    y_comp = compiled(x)
    y_comp.square().sum().backward()
    torch.testing.assert_close(y_comp, y_eager)
    for a, r in zip((x.grad, mod.values.grad, mod.bias.grad), grads_eager):
        torch.testing.assert_close(a, r)


# ------------------------------------------------------------------------------ determinism
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_deterministic_across_thread_counts(dtype):
    out_f, in_f, N = 48, 64, 3001  # many tiles and reduction chunks, partial last tile
    crow, col, values = make_csr(out_f, in_f, 0.3, dtype, seed=9)
    g = torch.Generator().manual_seed(10)
    x = torch.randn(N, in_f, generator=g, dtype=dtype)
    gy = torch.randn(N, out_f, generator=g, dtype=dtype)
    b = torch.randn(out_f, generator=g, dtype=dtype)

    def run():
        return (OPS.csr_linear(x, crow, col, values, b, out_f),
                OPS.csr_linear_backward_input(gy, crow, col, values, in_f),
                OPS.csr_sddmm(gy, x, crow, col),
                OPS.bias_grad(gy))

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


# ------------------------------------------------------------------------------ bad input
def _bad_cases():
    out_f, in_f = 4, 6
    crow, col, values = make_csr(out_f, in_f, 0.5, torch.float32, seed=1, empty_rows=(2,))
    x = torch.randn(5, in_f)
    b = torch.randn(out_f)
    nnz = col.numel()
    bad_col = col.clone()
    bad_col[1] = in_f
    neg_col = col.clone()
    neg_col[0] = -1
    nonmono = crow.clone()
    c1, c2 = int(crow[1]), int(crow[2])
    nonmono[1], nonmono[2] = c2 + 1, c1
    first = crow.clone()
    first[0] = 1
    last = crow.clone()
    last[-1] = nnz - 1
    L = lambda *a: OPS.csr_linear(*a)  # noqa: E731
    return {
        "values dtype": (lambda: L(x, crow, col, values.double(), b, out_f),
                         r"expected values to have dtype Float \(same as x\), got Double"),
        "x dtype": (lambda: L(x.half(), crow, col, values.half(), None, out_f),
                    r"expected x to have dtype float32 or float64, got Half"),
        "bias dtype": (lambda: L(x, crow, col, values, b.double(), out_f),
                       r"expected bias to have dtype Float"),
        "crow dtype": (lambda: L(x, crow.int(), col, values, b, out_f),
                       r"expected crow_indices to have dtype int64, got Int"),
        "col dtype": (lambda: L(x, crow, col.int(), values, b, out_f),
                      r"expected col_indices to have dtype int64, got Int"),
        "col out of range": (lambda: L(x, crow, bad_col, values, b, out_f),
                             rf"col_indices\[1\] = {in_f} is out of range \[0, {in_f}\)"),
        "col negative": (lambda: L(x, crow, neg_col, values, b, out_f),
                         r"col_indices\[0\] = -1 is out of range"),
        "crow non-monotone": (lambda: L(x, nonmono, col, values, b, out_f),
                              r"crow_indices must be non-decreasing, but crow_indices\[2\]"),
        "crow first": (lambda: L(x, first, col, values, b, out_f),
                       r"expected crow_indices\[0\] == 0, got 1"),
        "crow last": (lambda: L(x, last, col, values, b, out_f),
                      rf"expected crow_indices\[{out_f}\] \(last\) == nnz"),
        "crow length": (lambda: L(x, crow[:-1], col, values, b, out_f),
                        rf"expected crow_indices to have shape \[out_features \+ 1\] = \[{out_f + 1}\], "
                        rf"got \[{out_f}\]"),
        "values length": (lambda: L(x, crow, col, values[:-1], b, out_f),
                          rf"expected values to have shape \[nnz\] = \[{nnz}\].*got \[{nnz - 1}\]"),
        "x last dim (kernel)": (lambda: L(x[:, :2], crow, col, values, b, out_f),
                                r"is out of range \[0, 2\) \(in_features = x.size\(1\) = 2\)"),
        "x last dim (ops)": (lambda: ops.csr_linear(torch.randn(3, 2, in_f + 1), crow, col, values, b,
                                                    out_f, in_features=in_f),
                             rf"x has shape \(3, 2, {in_f + 1}\) but W has shape \({out_f}, {in_f}\)"),
        "x 3-D": (lambda: L(torch.randn(2, 5, in_f), crow, col, values, b, out_f),
                  r"expected x to be 2-D, got shape \[2, 5, 6\]"),
        "bias shape": (lambda: L(x, crow, col, values, torch.randn(out_f + 1), out_f),
                       rf"expected bias to have shape \[out_features\] = \[{out_f}\], got \[{out_f + 1}\]"),
        "bwd_input values dtype": (lambda: OPS.csr_linear_backward_input(torch.randn(5, out_f), crow, col,
                                                                         values.double(), in_f),
                                   r"expected values to have dtype Float \(same as grad_out\)"),
        "bwd_input col range": (lambda: OPS.csr_linear_backward_input(torch.randn(5, out_f), crow, col,
                                                                      values, 2),
                                r"is out of range \[0, 2\) \(in_features = 2\)"),
        "bwd_input crow length": (lambda: OPS.csr_linear_backward_input(torch.randn(5, out_f + 1), crow,
                                                                        col, values, in_f),
                                  r"expected crow_indices to have shape \[out_features = grad_out.size\(1\)"),
        "sddmm rows": (lambda: OPS.csr_sddmm(torch.randn(4, out_f), x, crow, col),
                       r"expected grad_out and x to have the same number of rows"),
        "sddmm dtype": (lambda: OPS.csr_sddmm(torch.randn(5, out_f).double(), x, crow, col),
                        r"expected grad_out to have dtype Float \(same as x\), got Double"),
        "sddmm col range": (lambda: OPS.csr_sddmm(torch.randn(5, out_f), x[:, :3], crow, col),
                            r"is out of range \[0, 3\)"),
        "bias_grad dim": (lambda: OPS.bias_grad(torch.randn(5)),
                          r"expected grad_out to be 2-D, got shape \[5\]"),
        "bias_grad dtype": (lambda: OPS.bias_grad(torch.randn(5, 3).to(torch.bfloat16)),
                            r"expected grad_out to have dtype float32 or float64, got BFloat16"),
    }


@pytest.mark.parametrize("name", sorted(_bad_cases()))
def test_bad_input_raises(name):
    fn, pattern = _bad_cases()[name]
    with pytest.raises(RuntimeError, match=pattern):
        fn()


# ------------------------------------------------------------------------------ cached W^T for dX
@pytest.mark.parametrize("shape,density", [((7, 11), 0.4), ((16, 5), 1.0), ((3, 9), 0.0), ((1, 1), 1.0)])
def test_csr_transpose_matches_dense_transpose_and_torch_fallback(shape, density, monkeypatch):
    out_f, in_f = shape
    crow, col, values = make_csr(out_f, in_f, density, seed=3, empty_rows=(0,) if out_f > 2 else ())
    t_crow, t_col, t_perm = OPS.csr_transpose(crow, col, in_f)
    dense = reference.dense_weight(crow, col, values, out_f, in_f)
    got = reference.dense_weight(t_crow, t_col, values[t_perm], in_f, out_f)
    torch.testing.assert_close(got, dense.t(), rtol=0, atol=0)
    monkeypatch.setattr(ops._ext, "available", lambda: False)
    fb = ops.csr_transpose(crow, col, in_f)
    for a, b in zip(fb, (t_crow, t_col, t_perm)):
        assert torch.equal(a, b)


def test_csr_linear_with_cached_transpose_gradcheck_and_opcheck():
    crow, col, values = make_csr(6, 9, 0.5, seed=8)
    t = OPS.csr_transpose(crow, col, 9)
    x = torch.randn(5, 9, dtype=torch.float64, requires_grad=True)
    v = values.clone().requires_grad_()
    f = lambda x, v: ops.csr_linear(x, crow, col, v, None, 6, transpose=t)
    assert torch.autograd.gradcheck(f, (x, v))
    assert torch.autograd.gradgradcheck(f, (x, v))
    torch.library.opcheck(OPS.csr_linear, (x, crow, col, v, None, 6, *t))
    torch.library.opcheck(OPS.csr_transpose, (crow, col, 9))


def test_csr_linear_rejects_stale_or_partial_transpose():
    crow, col, values = make_csr(6, 9, 0.5, seed=8)
    t_crow, t_col, t_perm = OPS.csr_transpose(crow, col, 9)
    x = torch.randn(3, 9, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="all of t_crow, t_col, t_perm"):
        OPS.csr_linear(x, crow, col, values, None, 6, t_crow, None, None)
    bad = t_perm.clone()
    bad[[0, 1]] = bad[[1, 0]]
    with pytest.raises(RuntimeError, match="does not match W"):
        OPS.csr_linear(x, crow, col, values, None, 6, t_crow, t_col, bad)
    with pytest.raises(RuntimeError, match="wrong|stale|expected"):
        OPS.csr_linear(x, crow, col, values, None, 6, t_crow[:-1], t_col, t_perm)


# ------------------------------------------------------------------------------ fused backward
@pytest.mark.parametrize("N,in_f,out_f,density,empty_rows", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_csr_linear_backward_fused_matches_reference(isa, N, in_f, out_f, density, empty_rows, dtype):
    crow, col, values = make_csr(out_f, in_f, density, dtype, seed=N + in_f, empty_rows=empty_rows)
    t = OPS.csr_transpose(crow, col, in_f)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(N, in_f, generator=g, dtype=dtype)
    gy = torch.randn(N, out_f, generator=g, dtype=dtype)
    dx, dv, db = OPS.csr_linear_backward(gy, x, crow, col, values, *t, True, True, True)
    torch.testing.assert_close(dx, reference.csr_linear_backward_input(gy, crow, col, values, in_f), **tol(dtype))
    torch.testing.assert_close(dv, reference.csr_sddmm(gy, x, crow, col), **tol(dtype))
    torch.testing.assert_close(db, reference.bias_grad(gy), **tol(dtype))
    dx2, dv2, db2 = OPS.csr_linear_backward(gy, x, crow, col, values, *t, False, True, False)
    assert dx2.numel() == 0 and db2.numel() == 0
    torch.testing.assert_close(dv2, dv, rtol=0, atol=0)


def test_csr_linear_backward_fused_is_thread_count_invariant_and_used_by_autograd(monkeypatch):
    crow, col, values = make_csr(48, 72, 0.3, torch.float64, seed=2)
    t = OPS.csr_transpose(crow, col, 72)
    x = torch.randn(3000, 72, dtype=torch.float64)
    gy = torch.randn(3000, 48, dtype=torch.float64)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = OPS.csr_linear_backward(gy, x, crow, col, values, *t, True, True, True)
        torch.set_num_threads(2)
        two = OPS.csr_linear_backward(gy, x, crow, col, values, *t, True, True, True)
    finally:
        torch.set_num_threads(old)
    for a, b in zip(one, two):
        assert torch.equal(a, b)
    calls = []
    real = OPS.csr_linear_backward
    monkeypatch.setattr(OPS, "csr_linear_backward", lambda *a: calls.append(1) or real(*a), raising=False)
    xr = x.clone().requires_grad_()
    v = values.clone().requires_grad_()
    ops.csr_linear(xr, crow, col, v, None, 48, transpose=t).backward(gy)
    torch.testing.assert_close(xr.grad, one[0])
    torch.testing.assert_close(v.grad, one[1])
    assert calls, "the autograd backward did not use the fused op"


def test_csr_linear_backward_fused_opcheck_and_bad_input():
    crow, col, values = make_csr(6, 9, 0.5, seed=8)
    t = OPS.csr_transpose(crow, col, 9)
    x, gy = torch.randn(5, 9, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    torch.library.opcheck(OPS.csr_linear_backward, (gy, x, crow, col, values, *t, True, True, True))
    with pytest.raises(RuntimeError, match="same number of rows"):
        OPS.csr_linear_backward(gy[:3], x, crow, col, values, *t, True, True, True)
    bad = t[2].flip(0)
    with pytest.raises(RuntimeError, match="does not match W"):
        OPS.csr_linear_backward(gy, x, crow, col, values, t[0], t[1], bad, True, True, True)
    with pytest.raises(RuntimeError, match="dtype"):
        OPS.csr_linear_backward(gy.float(), x, crow, col, values, *t, True, True, True)


# ------------------------------------------------------------------------------ regressions
@pytest.mark.parametrize("out_f", [33, 36, 40])
def test_streamed_output_with_unaligned_rows(out_f):
    # outputs >= 8 MiB are streamed; rows whose width is not a multiple of 16 floats must fall
    # back to plain stores (this used to crash with an unaligned streaming store)
    crow, col, values = make_csr(out_f, 8, 0.5, torch.float32, seed=1)
    x = torch.randn(60000, 8, generator=torch.Generator().manual_seed(0))
    y = OPS.csr_linear(x, crow, col, values, None, out_f)
    torch.testing.assert_close(y, reference.csr_linear(x, crow, col, values, None, out_f), **tol(torch.float32))
    t = OPS.csr_transpose(crow, col, 8)
    gy = torch.randn(60000, out_f, generator=torch.Generator().manual_seed(1))
    crow2, col2, values2 = make_csr(8, out_f, 0.5, torch.float32, seed=2)
    t2 = OPS.csr_transpose(crow2, col2, out_f)
    xb = torch.randn(60000, out_f, generator=torch.Generator().manual_seed(2))
    dx, _, _ = OPS.csr_linear_backward(torch.randn(60000, 8), xb, crow2, col2, values2, *t2, True, False, False)
    assert dx.shape == (60000, out_f) and torch.isfinite(dx).all()
    del t, gy


def test_transpose_on_another_device_is_rejected():
    crow, col, values = make_csr(8, 12, 0.5, seed=1)
    t_crow, t_col, t_perm = OPS.csr_transpose(crow, col, 12)
    x = torch.ones(3, 12, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="one device|device"):
        OPS.csr_linear(x, crow, col, values, None, 8, t_crow.to("meta"), t_col, t_perm)


def test_corrupt_t_crow_is_rejected_before_indexing():
    crow, col, values = make_csr(8, 12, 0.5, seed=1)
    t_crow, t_col, t_perm = OPS.csr_transpose(crow, col, 12)
    bad = t_crow.clone()
    bad[5] = 10 ** 9
    x = torch.ones(3, 12, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="t_crow"):
        OPS.csr_linear(x, crow, col, values, None, 8, bad, t_col, t_perm)


@pytest.mark.skipif(not _cpu_has_avx512f(), reason="CPU has no AVX-512F")
def test_avx512_and_avx2_sddmm_agree(monkeypatch):
    crow, col, values = make_csr(48, 64, 0.4, torch.float32, seed=5)
    g = torch.Generator().manual_seed(3)
    x, gy = torch.randn(1000, 64, generator=g), torch.randn(1000, 48, generator=g)
    monkeypatch.setenv("GNNSPARSE_CPU_ISA", "avx512")
    d512 = OPS.csr_sddmm(gy, x, crow, col)
    monkeypatch.setenv("GNNSPARSE_CPU_ISA", "avx2")
    d256 = OPS.csr_sddmm(gy, x, crow, col)
    ref = reference.csr_sddmm(gy, x, crow, col)
    torch.testing.assert_close(d512, ref, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(d256, ref, rtol=1e-4, atol=1e-3)
