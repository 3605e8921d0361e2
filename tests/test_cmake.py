"""CMakeLists.txt builds the same csrc/ into a plain shared library usable via torch.ops.load_library
(and, where the CUDA toolkit is, csrc/cuda/ into a second library that registers the CUDA kernels).

The library is configured and built into ``build-cmake/`` at the repository root (incremental:
the first build takes ~20-30 s on 2 cores, later runs only relink if sources changed), or taken
from the environment variable ``GNNSPARSE_CMAKE_LIB`` (path to a prebuilt ``libgnnsparse_ops.so``)
when CI built it already. The library is loaded in a subprocess: this test process may already
have ``gnnsparse._C`` loaded, which registers the same operator names.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.utils

ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = ROOT / "build-cmake"
LIB_NAME = "libgnnsparse_ops.so"

_CHECK = r"""
import sys
import torch
torch.ops.load_library(sys.argv[1])
assert "gnnsparse._C" not in sys.modules
ops = torch.ops.gnnsparse
g = torch.Generator().manual_seed(0)
out_f, in_f, n = 19, 37, 101
mask = torch.rand(out_f, in_f, generator=g) < 0.3
mask[4] = False  # an empty row
w = torch.randn(out_f, in_f, generator=g, dtype=torch.float64) * mask
s = w.to_sparse_csr()
crow, col, vals = s.crow_indices(), s.col_indices(), s.values()
x = torch.randn(n, in_f, generator=g, dtype=torch.float64)
gy = torch.randn(n, out_f, generator=g, dtype=torch.float64)
b = torch.randn(out_f, generator=g, dtype=torch.float64)
torch.testing.assert_close(ops.csr_linear(x, crow, col, vals, b, out_f), x @ w.t() + b)
torch.testing.assert_close(ops.csr_linear(x.float(), crow, col, vals.float(), None, out_f),
                           (x @ w.t()).float(), rtol=1e-4, atol=1e-4)
torch.testing.assert_close(ops.csr_linear_backward_input(gy, crow, col, vals, in_f), gy @ w)
torch.testing.assert_close(ops.csr_sddmm(gy, x, crow, col), (gy.t() @ x)[mask])
torch.testing.assert_close(ops.bias_grad(gy), gy.sum(0))
try:
    ops.csr_linear(x, crow, col, vals, b, out_f - 1)
except RuntimeError as e:
    assert "crow_indices" in str(e), e
else:
    raise AssertionError("invalid crow_indices length was accepted")
print("CMAKE-LIB-OK")
"""


def _build() -> Path:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.fail("cmake not found on PATH (or set GNNSPARSE_CMAKE_LIB to a prebuilt library)")
    BUILD_DIR.mkdir(exist_ok=True)
    with open(BUILD_DIR / ".lock", "w") as lock:  # concurrent test runs share the build dir
        fcntl.flock(lock, fcntl.LOCK_EX)
        t0 = time.perf_counter()
        cuda = "ON" if _cuda_toolkit() else "OFF"
        cache = BUILD_DIR / "CMakeCache.txt"
        if cache.exists() and f"GNNSPARSE_WITH_CUDA:BOOL={cuda}" not in cache.read_text():
            cache.unlink()  # configured with the other setting: configure afresh
            shutil.rmtree(BUILD_DIR / "CMakeFiles", ignore_errors=True)
        if not cache.exists():
            try:
                subprocess.run(
                    [cmake, "-S", str(ROOT), "-B", str(BUILD_DIR), "-DCMAKE_BUILD_TYPE=Release",
                     f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
                     "-DCUDA_TOOLKIT_ROOT_DIR=/usr/local/cuda", f"-DGNNSPARSE_WITH_CUDA={cuda}"],
                    env=dict(os.environ, CUDACXX="/usr/local/cuda/bin/nvcc"),
                    check=True, capture_output=True, text=True)
            except subprocess.CalledProcessError:
                (BUILD_DIR / "CMakeCache.txt").unlink(missing_ok=True)  # reconfigure next time
                raise
        subprocess.run([cmake, "--build", str(BUILD_DIR), "-j", str(os.cpu_count() or 2)],
                       check=True, capture_output=True, text=True)
        print(f"cmake configure+build: {time.perf_counter() - t0:.1f} s")
    return BUILD_DIR / LIB_NAME


def _cuda_toolkit() -> bool:
    """CUDA build of torch and nvcc at /usr/local/cuda: the CMake build includes the CUDA library."""
    return torch.version.cuda is not None and os.path.exists("/usr/local/cuda/bin/nvcc")


def _library() -> Path:
    prebuilt = os.environ.get("GNNSPARSE_CMAKE_LIB")
    if prebuilt:
        lib = Path(prebuilt)
        assert lib.is_file(), f"GNNSPARSE_CMAKE_LIB={prebuilt} does not exist"
        return lib
    try:
        lib = _build()
    except subprocess.CalledProcessError as e:
        pytest.fail(f"CMake build failed ({' '.join(e.cmd)}):\n{e.stdout}\n{e.stderr}")
    assert lib.is_file(), f"{lib} was not produced"
    return lib


_CHECK_CUDA = r"""
import sys
import torch
torch.ops.load_library(sys.argv[1])
torch.ops.load_library(sys.argv[2])
missing = [op for op in sys.argv[3].split(",")
           if not torch._C._dispatch_has_kernel_for_dispatch_key(f"gnnsparse::{op}", "CUDA")]
assert not missing, f"no CUDA kernel registered for {missing}"
print("CMAKE-CUDA-LIB-OK")
"""


def test_cmake_cuda_library_registers_cuda_kernels():
    if os.environ.get("GNNSPARSE_CMAKE_LIB") or not _cuda_toolkit():
        pytest.skip("no CUDA toolkit (or a prebuilt CPU library was given)")
    from gnnsparse._ext import CUDA_OPS

    lib = _library()
    cuda_lib = lib.parent / "libgnnsparse_cuda_ops.so"
    assert cuda_lib.is_file(), f"{cuda_lib} was not produced"
    proc = subprocess.run([sys.executable, "-c", _CHECK_CUDA, str(lib), str(cuda_lib), ",".join(CUDA_OPS)],
                          capture_output=True, text=True, timeout=300, cwd=str(ROOT / "tests"))
    assert proc.returncode == 0 and "CMAKE-CUDA-LIB-OK" in proc.stdout, proc.stdout + proc.stderr


def test_cmake_library_matches_dense():
    lib = _library()
    proc = subprocess.run([sys.executable, "-c", _CHECK, str(lib)], capture_output=True, text=True,
                          timeout=300, cwd=str(ROOT / "tests"))
    assert proc.returncode == 0 and "CMAKE-LIB-OK" in proc.stdout, proc.stdout + proc.stderr
