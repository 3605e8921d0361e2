"""Shared by the kernel test modules (test_ops.py, test_bsr_ops.py): the extension load state,
the CPU's SIMD features and the ISA settings to run every kernel test under."""

from __future__ import annotations

import pytest

from gnnsparse import _ext

try:
    _ext.load()
    LOAD_ERROR = None
except ImportError as e:  # reported as a failure of every kernel test, not a skip
    LOAD_ERROR = e


def require_extension() -> None:
    """Fail (not skip) the calling test with the build instructions when the extension is missing."""
    if LOAD_ERROR is not None:
        pytest.fail(str(LOAD_ERROR))


def cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return set()


def cpu_has_avx2_fma() -> bool:
    return {"avx2", "fma"} <= cpu_flags()


def cpu_has_avx512f() -> bool:
    return {"avx512f", "avx2", "fma"} <= cpu_flags()


# GNNSPARSE_CPU_ISA values every kernel test runs under: "auto" takes the AVX-512 kernels where the
# CPU has AVX-512F, and "avx2" then covers the AVX2 ones; "generic" is the portable path.
ISAS = ["auto", "generic"] + (["avx2"] if cpu_has_avx512f() else [])
