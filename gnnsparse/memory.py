"""Allocation settings for the CPU hot path: keep freed memory in the process.

Why: glibc serves every allocation above its mmap threshold (at most 32 MiB on 64-bit) with a
fresh ``mmap`` and returns it with ``munmap`` on free. A layer output of 64 MiB (65536 × 256
float32) is therefore new memory on every call, and the kernel pays one page fault per 4 KiB
page plus the kernel's zeroing before the first write. Measured on the 2-core development
machine: 25–40 ms for 64 MiB, more than the whole 90 %-sparse forward kernel. It hits dense
``F.linear`` just the same.

:func:`retain_freed_memory` switches glibc to serve large blocks from the heap
(``M_MMAP_MAX = 0``) and not to give freed memory back to the OS below ``trim_threshold``
(``M_TRIM_THRESHOLD``), so a freed output is reused by the next call without faults. It is
process-wide and affects every allocation (dense and sparse alike); the memory high-water mark
stays allocated to the process. Off by default for library users; ``gnnsparse compare`` and the
benchmarks switch it on (``GNNSPARSE_RETAIN_MEMORY=0`` keeps glibc's defaults there), and
``GNNSPARSE_RETAIN_MEMORY=1`` switches it on when gnnsparse is imported.

Alternatives measured on the same machine (X 65536×256 float32, dense ``F.linear`` / 90 %-sparse
forward): glibc defaults 59 / 38 ms; ``THP_MEM_ALLOC_ENABLE=1`` (PyTorch's transparent huge pages
for CPU tensors ≥ 2 MiB) 54 / 29 ms; :func:`retain_freed_memory` 43 / 23 ms.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time

__all__ = ["retain_freed_memory", "retaining", "allocation_cost", "env_setting"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_GLIBC_MMAP_MAX_DEFAULT = 65536
_GLIBC_TRIM_DEFAULT = 128 * 1024
_state = {"enabled": False}


def _libc():
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def retain_freed_memory(enable: bool = True, trim_threshold: int = 1 << 30) -> bool:
    """Make glibc keep freed memory for reuse instead of unmapping it (process-wide).

    Args:
        enable: True to switch on; False sets glibc's default values back (``M_MMAP_MAX``
            65536, ``M_TRIM_THRESHOLD`` 128 KiB). glibc's *dynamic* mmap threshold stays off
            once any of these was set, so large blocks are then always ``mmap``-ed (the behaviour
            of a fresh process for blocks above 32 MiB).
        trim_threshold: bytes of free memory at the top of the heap that glibc keeps instead of
            returning them to the OS (default 1 GiB).

    Returns:
        True if the setting was applied, False where it is not available (not glibc, e.g. musl,
        macOS, Windows); nothing changes then.

    Raises:
        ValueError: ``trim_threshold`` not a positive int below 2**31.
    """
    if isinstance(trim_threshold, bool) or not isinstance(trim_threshold, int) or not 0 < trim_threshold < 2 ** 31:
        raise ValueError(f"trim_threshold must be an int in (0, 2**31) bytes, got {trim_threshold!r}")
    libc = _libc()
    if libc is None:
        return False
    if enable:
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
    else:
        ok = (libc.mallopt(_M_MMAP_MAX, _GLIBC_MMAP_MAX_DEFAULT) == 1
              and libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_TRIM_DEFAULT) == 1)
    if ok:
        _state["enabled"] = bool(enable)
    return ok


def retaining() -> bool:
    """Whether :func:`retain_freed_memory` is switched on in this process."""
    return _state["enabled"]


def allocation_cost(nbytes: int = 64 << 20, repeats: int = 5) -> dict:
    """Measure what a fresh output costs: allocate ``nbytes`` with ``torch.empty`` and write it
    once (``fill_``), against writing an already allocated buffer of the same size.

    Returns:
        ``{"nbytes", "fresh_s", "reused_s", "overhead_s", "retaining"}``: medians over
        ``repeats`` in seconds; ``overhead_s = fresh_s - reused_s`` is the page-fault cost.
    """
    import statistics

    import torch

    n = max(1, int(nbytes) // 4)
    buf = torch.empty(n)
    buf.fill_(1.0)
    fresh, reused = [], []
    for _ in range(max(1, int(repeats))):
        t0 = time.perf_counter()
        torch.empty(n).fill_(1.0)
        fresh.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        buf.fill_(1.0)
        reused.append(time.perf_counter() - t0)
    f, r = statistics.median(fresh), statistics.median(reused)
    return {"nbytes": n * 4, "fresh_s": f, "reused_s": r, "overhead_s": f - r, "retaining": retaining()}


def env_setting(default: bool) -> bool:
    """``GNNSPARSE_RETAIN_MEMORY`` as a bool: ``1/true/yes/on`` and ``0/false/no/off``
    (case-insensitive); unset or empty gives ``default``.

    Raises:
        ValueError: any other value (the message names the variable and the valid values).
    """
    given = os.environ.get("GNNSPARSE_RETAIN_MEMORY", "").strip()
    raw = given.lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"GNNSPARSE_RETAIN_MEMORY={given!r} is not one of 1/true/yes/on or 0/false/no/off")


if env_setting(False):
    retain_freed_memory(True)
