"""The backend dispatch (cpu / cuda / triton / torch), the CUDA build, and the CUDA and Triton
backends through gnnsparse.ops and SparseLinear.

Without a GPU (CI): the CUDA kernels must still be built and registered (op by op), device/dtype
mismatches must raise clear errors, and the Triton backend runs on CPU tensors in Triton's
interpreter (TRITON_INTERPRET=1, set by the root conftest). With a GPU, the CUDA and Triton
backends are checked against the reference on randomized shapes and with gradcheck.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from gnnsparse import _ext, ops, reference
from gnnsparse.nn import SparseLinear

from kernel_support import require_extension
from test_bsr_ops import make_bsr
from test_ops import make_csr

HAS_GPU = torch.cuda.is_available()
gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")


def _cuda_build_expected() -> bool:
    mode = os.environ.get("GNNSPARSE_CUDA", "auto").strip().lower() or "auto"
    nvcc = os.path.join(os.environ.get("CUDA_HOME") or "/usr/local/cuda", "bin", "nvcc")
    return mode != "0" and torch.version.cuda is not None and (os.path.exists(nvcc) or shutil.which("nvcc"))


# ------------------------------------------------------------------------------ CUDA build
def test_cuda_extension_built_where_the_toolkit_is():
    require_extension()
    if not _cuda_build_expected():
        pytest.skip("no CUDA toolkit / CPU-only torch / GNNSPARSE_CUDA=0: the CUDA kernels are not built")
    assert _ext.cuda_built(), f"the CUDA toolkit is here but gnnsparse._C_cuda did not load: {_ext.cuda_error()}"


@pytest.mark.parametrize("op", _ext.CUDA_OPS)
def test_cuda_kernel_registered(op):
    require_extension()
    if not _ext.cuda_built():
        pytest.skip(f"CUDA kernels not built: {_ext.cuda_error()}")
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"gnnsparse::{op}", "CUDA"), op
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"gnnsparse::{op}", "CPU"), op


# ------------------------------------------------------------------------------ dispatch
def test_resolve_backend_by_device(monkeypatch):
    monkeypatch.delenv("GNNSPARSE_BACKEND", raising=False)
    assert ops.resolve_backend(None, "cpu") == "cpu"
    assert ops.resolve_backend(None, "meta") == "torch"
    expected = "cuda" if _ext.cuda_built() else ("triton" if ops.triton_available() else "torch")
    assert ops.resolve_backend(None, torch.device("cuda")) == expected
    for name in ops.VALID_BACKENDS:
        assert ops.resolve_backend(name, "cpu") == name
    monkeypatch.setenv("GNNSPARSE_BACKEND", "triton")
    assert ops.resolve_backend(None, "cpu") == "triton"


def test_backend_device_mismatch_errors(monkeypatch):
    require_extension()
    crow, col, values = make_csr(6, 5, 0.5, dtype=torch.float32)
    x = torch.randn(3, 5)
    with pytest.raises(RuntimeError, match="backend 'cuda' runs on CUDA tensors, got tensors on cpu"):
        ops.csr_linear(x, crow, col, values, None, 6, backend="cuda")
    with pytest.raises(RuntimeError, match="backend 'cuda' runs on CUDA tensors"):
        ops.bsr_linear(torch.randn(3, 8), *make_bsr(8, 8, 4, 0.5, dtype=torch.float32), None, 8, backend="cuda")
    with pytest.raises(RuntimeError, match="backend 'cpu' runs on CPU tensors, got tensors on cuda"):
        ops.check_backend_device("cpu", torch.device("cuda"))
    with pytest.raises(RuntimeError, match="backend 'cpu' supports float32 and float64, got torch.float16"):
        ops.csr_linear(x.half(), crow, col, values.half(), None, 6, backend="cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        ops.csr_linear(x, crow, col, values, None, 6, backend="triton")
    with pytest.raises(RuntimeError, match="backend 'triton' runs on CUDA tensors"):
        ops.check_backend_device("triton", torch.device("meta"))
    if not _ext.cuda_built():
        with pytest.raises(ImportError, match="CUDA kernels are not available"):
            ops.check_backend_device("cuda", torch.device("cuda"))


def test_sparse_linear_backend_in_repr_and_half_dtypes():
    layer = SparseLinear(8, 4, sparsity=0.5, backend="triton")
    assert "backend=triton" in repr(layer)
    assert "backend=cpu" in repr(SparseLinear(8, 4, sparsity=0.5))
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        SparseLinear(8, 4, backend="gpu")
    for dt in (torch.float16, torch.bfloat16):
        layer = SparseLinear(8, 4, sparsity=0.5, dtype=dt, backend="torch")
        assert layer(torch.randn(3, 8, dtype=dt)).dtype == dt
    with pytest.raises(RuntimeError, match="backend 'cpu' supports float32 and float64"):
        SparseLinear(8, 4, sparsity=0.5, dtype=torch.float16)(torch.randn(3, 8, dtype=torch.float16))


# ------------------------------------------------------------------------------ Triton backend
triton_cpu = pytest.mark.skipif(
    HAS_GPU or not ops.triton_available() or os.environ.get("TRITON_INTERPRET") != "1",
    reason="Triton's interpreter on CPU tensors (TRITON_INTERPRET=1 without a GPU)")


@triton_cpu
@pytest.mark.parametrize("layout,blocksize", [("csr", None), ("bsr", 4), ("bsr", 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_layer_matches_torch_backend(layout, blocksize, dtype):
    torch.manual_seed(0)
    layer = SparseLinear(32, 16, sparsity=0.6, layout=layout, blocksize=blocksize, backend="triton", dtype=dtype)
    x = torch.randn(19, 32, dtype=dtype, requires_grad=True)
    y = layer(x)
    y.float().square().sum().backward()
    got = (y.detach(), x.grad.clone(), layer.values.grad.clone(), layer.bias.grad.clone())
    x.grad = None
    layer.zero_grad()
    layer.backend = "torch"
    y2 = layer(x)
    y2.float().square().sum().backward()
    want = (y2.detach(), x.grad, layer.values.grad, layer.bias.grad)
    t = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.float(), b.float(), **t)


@triton_cpu
def test_triton_backend_counts_flops_and_rejects_stale_transpose():
    from torch.utils.flop_counter import FlopCounterMode

    crow, col, values = make_csr(12, 10, 0.4, dtype=torch.float32, seed=3)
    values.requires_grad_(True)
    x = torch.randn(7, 10, requires_grad=True)
    tr = ops.csr_transpose(crow, col, 10)
    with FlopCounterMode(display=False) as fc:
        ops.csr_linear(x, crow, col, values, None, 12, backend="triton", transpose=tr).sum().backward()
    assert fc.get_total_flops() == 3 * 2 * 7 * col.numel()  # forward, dX, SDDMM
    other = make_csr(12, 10, 0.7, dtype=torch.float32, seed=4)
    with pytest.raises(RuntimeError, match="not the transpose of W"):
        ops.csr_linear(x, crow, col, values, None, 12, backend="triton",
                       transpose=ops.csr_transpose(other[0], other[1], 10))
    bad = col.clone()
    bad[0] = 10
    with pytest.raises(RuntimeError, match=r"col_indices\[0\]=10 outside \[0, 10\)"):
        ops.csr_linear(x, crow, bad, values, None, 12, backend="triton")


# ------------------------------------------------------------------------------ on a GPU
def _gpu_backends():
    names = []
    if _ext.cuda_built():
        names.append("cuda")
    if ops.triton_available():
        names.append("triton")
    return names


def _tol(dtype):
    return {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-4, atol=1e-4),
            torch.float16: dict(rtol=2e-2, atol=2e-2), torch.bfloat16: dict(rtol=6e-2, atol=6e-2)}[dtype]


@gpu
@pytest.mark.parametrize("backend", _gpu_backends())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("N,in_f,out_f,density,empty", [
    (1, 1, 1, 1.0, ()), (7, 13, 5, 0.4, (1, 3)), (70, 130, 200, 0.1, (0,)), (257, 64, 300, 0.0, ()),
    (129, 300, 129, 1.0, ()), (0, 16, 8, 0.5, ())])
def test_gpu_csr_ops_match_reference(backend, dtype, N, in_f, out_f, density, empty):
    if backend == "triton" and dtype == torch.float64 and not _triton_f64():
        pytest.skip("triton kernels without float64")
    torch.backends.cuda.matmul.allow_tf32 = False
    crow, col, values = (t.cuda() for t in make_csr(out_f, in_f, density, torch.float64, 1, empty))
    g = torch.Generator(device="cuda").manual_seed(2)
    x = torch.randn(N, in_f, device="cuda", dtype=torch.float64, generator=g)
    gy = torch.randn(N, out_f, device="cuda", dtype=torch.float64, generator=g)
    b = torch.randn(out_f, device="cuda", dtype=torch.float64, generator=g)
    ns = ops.op_namespace(backend)
    lo = lambda t: t.to(dtype)  # noqa: E731
    t = _tol(dtype)
    torch.testing.assert_close(ns.csr_linear(lo(x), crow, col, lo(values), lo(b), out_f).double(),
                               reference.csr_linear(lo(x).double(), crow, col, lo(values).double(), lo(b).double(),
                                                    out_f), **t)
    torch.testing.assert_close(ns.csr_linear_backward_input(lo(gy), crow, col, lo(values), in_f).double(),
                               reference.csr_linear_backward_input(lo(gy).double(), crow, col, lo(values).double(),
                                                                   in_f), **t)
    torch.testing.assert_close(ns.csr_sddmm(lo(gy), lo(x), crow, col).double(),
                               reference.csr_sddmm(lo(gy).double(), lo(x).double(), crow, col), **t)


@gpu
@pytest.mark.parametrize("backend", _gpu_backends())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("tf32", [False, True])
@pytest.mark.parametrize("N,in_f,out_f,b,density", [
    (1, 16, 16, 16, 1.0), (37, 64, 48, 16, 0.5), (130, 96, 64, 32, 0.3), (9, 24, 12, 4, 0.6), (5, 16, 32, 8, 0.0)])
def test_gpu_bsr_ops_match_reference(backend, dtype, tf32, N, in_f, out_f, b, density):
    if backend == "triton" and dtype == torch.float64 and not _triton_f64():
        pytest.skip("triton kernels without float64")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        crow, col, values = (t.cuda() for t in make_bsr(out_f, in_f, b, density, torch.float64, 1))
        g = torch.Generator(device="cuda").manual_seed(2)
        x = torch.randn(N, in_f, device="cuda", dtype=torch.float64, generator=g)
        gy = torch.randn(N, out_f, device="cuda", dtype=torch.float64, generator=g)
        ns = ops.op_namespace(backend)
        lo = lambda t: t.to(dtype)  # noqa: E731
        t = _tol(dtype) if not (tf32 and dtype == torch.float32) else dict(rtol=5e-3, atol=5e-3)
        torch.testing.assert_close(ns.bsr_linear(lo(x), crow, col, lo(values), None, out_f).double(),
                                   reference.bsr_linear(lo(x).double(), crow, col, lo(values).double(), None, out_f),
                                   **t)
        torch.testing.assert_close(
            ns.bsr_linear_backward_input(lo(gy), crow, col, lo(values), in_f).double(),
            reference.bsr_linear_backward_input(lo(gy).double(), crow, col, lo(values).double(), in_f), **t)
        torch.testing.assert_close(ns.bsr_sddmm(lo(gy), lo(x), crow, col, b).double(),
                                   reference.bsr_sddmm(lo(gy).double(), lo(x).double(), crow, col, b), **t)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False


def _triton_f64() -> bool:
    try:
        from gnnsparse.kernels import _common
    except ImportError:
        return False
    return torch.float64 in _common.SUPPORTED_DTYPES


@gpu
@pytest.mark.skipif(not _ext.cuda_built(), reason="CUDA kernels not built")
@pytest.mark.parametrize("layout,b", [("csr", None), ("bsr", 4), ("bsr", 16)])
def test_gpu_cuda_gradcheck_float64(layout, b):
    torch.manual_seed(0)
    layer = SparseLinear(32, 16, sparsity=0.5, layout=layout, blocksize=b, backend="cuda",
                         dtype=torch.float64, device="cuda")
    x = torch.randn(5, 32, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, v, bias: _apply(layer, x, v, bias), (x, layer.values, layer.bias))


def _apply(layer, x, v, bias):
    if layer.layout == "csr":
        return ops.csr_linear(x, layer.crow_indices, layer.col_indices, v, bias, layer.out_features,
                              backend=layer.backend, transpose=ops.csr_transpose(layer.crow_indices,
                                                                                layer.col_indices, layer.in_features))
    crow, col, perm = layer._bsr_structure()
    bb = layer.blocksize
    return ops.bsr_linear(x, crow, col, v[perm].view(-1, bb, bb), bias, layer.out_features, backend=layer.backend)


@gpu
@pytest.mark.skipif(not _ext.cuda_built(), reason="CUDA kernels not built")
def test_gpu_cuda_bad_input_errors():
    crow, col, values = (t.cuda() for t in make_csr(6, 5, 0.6, torch.float32, 0))
    x = torch.randn(3, 5, device="cuda")
    bad = col.clone()
    bad[0] = 5
    with pytest.raises(RuntimeError, match=r"col_indices\[0\] = 5 is out of range \[0, 5\)"):
        torch.ops.gnnsparse.csr_linear(x, crow, bad, values, None, 6)
    crow2 = crow.clone()
    crow2[2] = crow2[3] + 1
    with pytest.raises(RuntimeError, match="non-decreasing"):
        torch.ops.gnnsparse.csr_linear(x, crow2, col, values, None, 6)
    with pytest.raises(RuntimeError, match="must be on one device|must be a CUDA tensor"):
        torch.ops.gnnsparse.csr_linear(x, crow.cpu(), col, values, None, 6)
    with pytest.raises(RuntimeError, match="not the transpose of W"):
        tr = torch.ops.gnnsparse.csr_transpose(crow, col, 5)
        t_perm = tr[2].flip(0)
        torch.ops.gnnsparse.csr_linear(x, crow, col, values, None, 6, tr[0], tr[1], t_perm)
    # a structure changed in place after a successful call is validated again
    torch.ops.gnnsparse.csr_linear(x, crow, col, values, None, 6)
    col[0] = 7
    with pytest.raises(RuntimeError, match="out of range"):
        torch.ops.gnnsparse.csr_linear(x, crow, col, values, None, 6)


# ------------------------------------------------------------------------------ bad input (triton, dispatch)
@triton_cpu
def test_triton_checks_every_call_on_cpu_and_names_bad_arguments(monkeypatch):
    crow, col, values = make_csr(2, 3, 1.0, dtype=torch.float32)
    x = torch.randn(4, 3)
    ops.csr_linear(x, crow, col, values, None, 2, backend="triton")
    col.data[0] = 10 ** 8  # bypasses the version counter: CPU tensors are checked on every call
    with pytest.raises(RuntimeError, match="col_indices"):
        ops.csr_linear(x, crow, col, values, None, 2, backend="triton")
    col.data[0] = 0
    T = torch.ops.gnnsparse_triton
    with pytest.raises(RuntimeError, match="csr_linear: expected x to be 2-D"):
        T.csr_linear(torch.randn(3), crow, col, values, None, 2)
    with pytest.raises(RuntimeError, match="give all of t_crow, t_col, t_perm or none"):
        T.csr_linear(x, crow, col, values, None, 2, None, None, torch.arange(col.numel()))
    with pytest.raises(RuntimeError, match="csr_linear_backward_input: values dtype torch.float32 differs"):
        T.csr_linear_backward_input(torch.randn(4, 2, dtype=torch.float64), crow, col, values, 3)
    with pytest.raises(RuntimeError, match="bias_grad: expected grad_out to be 2-D"):
        T.bias_grad(torch.randn(3))
    bcrow, bcol, bvals = make_bsr(8, 8, 4, 1.0, dtype=torch.float32)
    with pytest.raises(RuntimeError, match=r"values must have shape \[nnzb, b, b\]"):
        T.bsr_linear(torch.randn(2, 8), bcrow, bcol, bvals.flatten(1), None, 8)
    with pytest.raises(RuntimeError, match="blocksize must be >= 1, got 0"):
        T.bsr_sddmm(torch.randn(2, 8), torch.randn(2, 8), bcrow, bcol, 0)
    with pytest.raises(RuntimeError, match="computes bfloat16 wrongly"):
        ops.bsr_linear(torch.randn(2, 8).bfloat16(), bcrow, bcol, bvals.bfloat16(), None, 8, backend="triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET is now '0'"):
        ops.check_backend_device("triton", torch.device("cuda"))


def test_triton_registered_at_import_counts_flops_on_first_call():
    """A FlopCounterMode opened before the first Triton call still counts it (the ops are registered
    when gnnsparse.ops is imported, not on first use)."""
    if not ops.triton_available() or HAS_GPU:
        pytest.skip("Triton's interpreter on CPU")
    import subprocess
    import sys

    code = (
        "import os; os.environ['TRITON_INTERPRET'] = '1'\n"
        "import torch\n"
        "from torch.utils.flop_counter import FlopCounterMode\n"
        "from gnnsparse import ops\n"
        "crow = torch.tensor([0, 2, 3]); col = torch.tensor([0, 2, 1]); v = torch.randn(3)\n"
        "with FlopCounterMode(display=False) as fc:\n"
        "    ops.csr_linear(torch.randn(4, 3), crow, col, v, None, 2, backend='triton')\n"
        "print('FLOPS', fc.get_total_flops())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert "FLOPS 24" in proc.stdout, proc.stdout + proc.stderr


def test_bad_backend_env_is_named_and_repr_survives(monkeypatch):
    layer = SparseLinear(4, 4, sparsity=0.5)
    monkeypatch.setenv("GNNSPARSE_BACKEND", "gpu")
    assert "invalid GNNSPARSE_BACKEND='gpu'" in repr(layer)
    with pytest.raises(ValueError, match="environment variable GNNSPARSE_BACKEND='gpu' is not a backend"):
        layer(torch.randn(2, 4))


def test_half_layer_on_cpu_says_which_backends_take_it(monkeypatch):
    require_extension()
    monkeypatch.setenv("GNNSPARSE_EXECUTOR", "auto")
    layer = SparseLinear(8, 12, sparsity=0.5, dtype=torch.float16)
    with pytest.raises(RuntimeError, match="backend 'cpu' supports float32 and float64, got torch.float16"):
        layer(torch.randn(5, 8, dtype=torch.float16))
    layer.backend = "torch"
    assert layer(torch.randn(5, 8, dtype=torch.float16)).dtype == torch.float16
