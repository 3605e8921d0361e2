"""Helpers shared by the Triton kernel modules: argument validation, autotune configs, TF32 policy
and the node-split plan of the SDDMM (weight-gradient) kernels.

Interpreter mode
----------------
:data:`INTERPRET` is read once, at import time, from ``TRITON_INTERPRET`` -- the same moment
``@triton.jit`` decides whether a kernel is compiled or interpreted, so the two always agree.
Under the interpreter the kernels accept CPU tensors, every autotuned kernel gets exactly one
config (the interpreter cannot benchmark configs: several configs fail with "0 active drivers")
and ``tl.dot`` runs with ``input_precision="ieee"``.

Accumulation
------------
float32, float16 and bfloat16 inputs accumulate in float32; float64 inputs accumulate in float64
(:func:`acc_dtype`), and every output has the input dtype. The BSR kernels never call ``tl.dot``
on float64 (compiled float64 ``tl.dot`` depends on the Triton version and GPU); they use a
chunked broadcast-multiply-and-sum path in float64 instead (``_block_params`` in
:mod:`.bsr_linear`).

Validation policy
-----------------
Everything that can be checked from tensor metadata is checked (ranks, shapes, dtypes, devices) and
reported as ``RuntimeError`` naming the op and the problem, like the C++ ops' ``TORCH_CHECK``.
Index *contents* (``crow_indices`` monotone, columns in range, ...) are not checked here: that
needs a device-to-host sync per call; :mod:`gnnsparse.ops` validates the structure once.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

#: True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET`` = 1/true/on/yes at
#: import time, the values triton itself accepts).
INTERPRET: bool = os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes")

#: ``GNNSPARSE_TRITON_CONFIGS=one`` (read at import time) gives every kernel a single autotune
#: config, as under the interpreter: for correctness runs, where autotuning only costs compile time.
ONE_CONFIG: bool = os.environ.get("GNNSPARSE_TRITON_CONFIGS", "").strip().lower() == "one"

#: Floating dtypes the Triton kernels take: float32/float16/bfloat16 accumulate in float32,
#: float64 in float64 (:func:`acc_dtype`).
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def acc_dtype(dtype: torch.dtype):
    """``(torch dtype, tl dtype)`` of the accumulators (and SDDMM partials) for inputs of ``dtype``:
    float64 for float64, float32 for float32/float16/bfloat16."""
    if dtype == torch.float64:
        return torch.float64, tl.float64
    return torch.float32, tl.float32


def node_configs() -> list:
    """Autotune configs over the node-tile height ``BLOCK_N`` and ``num_warps``.

    Six configs (``BLOCK_N`` 32/64/128 x ``num_warps`` 4/8) when compiling for a GPU; exactly one
    (``BLOCK_N=32, num_warps=4``) under the interpreter or with ``GNNSPARSE_TRITON_CONFIGS=one``.
    """
    if INTERPRET or ONE_CONFIG:
        return [triton.Config({"BLOCK_N": 32}, num_warps=4)]
    return [triton.Config({"BLOCK_N": bn}, num_warps=nw) for bn in (32, 64, 128) for nw in (4, 8)]


#: Largest node tile x block tile (``BLOCK_N * BLOCK_B``) of the BSR kernels, in bytes of the
#: accumulator dtype: 8192 float32 elements, 4096 float64 elements.
MAX_BLOCK_TILE_BYTES = 8192 * 4


def prune_block_configs(configs, named_args, **kwargs):
    """``early_config_prune`` for the BSR kernels: drop node tiles whose accumulator-sized tile
    (``BLOCK_N x BLOCK_B``) would exceed :data:`MAX_BLOCK_TILE_BYTES` -- 8192 float32 elements,
    4096 when a float64 tensor is among the arguments (register spills for large blocks).
    Always keeps at least the smallest tile."""
    bb = kwargs.get("BLOCK_B", named_args.get("BLOCK_B", 16))
    f64 = any(isinstance(v, torch.Tensor) and v.dtype == torch.float64 for v in named_args.values())
    limit = MAX_BLOCK_TILE_BYTES // (8 if f64 else 4)
    kept = [c for c in configs if c.kwargs["BLOCK_N"] * bb <= limit]
    if kept:
        return kept
    smallest = min(c.kwargs["BLOCK_N"] for c in configs)
    return [c for c in configs if c.kwargs["BLOCK_N"] == smallest]


def n_bucket(n: int) -> int:
    """Autotune key for the node count: the next power of two, so that mini-batches of varying
    size do not each trigger a new tuning run."""
    return triton.next_power_of_2(max(int(n), 1))


def dot_precision(dtype: torch.dtype) -> str:
    """``input_precision`` for ``tl.dot``: ``"tf32"`` for float32 inputs only when
    ``torch.backends.cuda.matmul.allow_tf32`` is True (read at every call) and not under the
    interpreter; ``"ieee"`` otherwise (half-precision inputs ignore it; float64 never reaches
    ``tl.dot``)."""
    if dtype == torch.float32 and not INTERPRET and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


# ---------------------------------------------------------------------------------------------
# Validation
def check_devices(op: str, **tensors) -> torch.device:
    """All named tensors (``None`` skipped) on one device, which is CUDA, or CPU under the
    interpreter. Returns that device.

    Raises:
        RuntimeError: tensors on different devices, or a device the Triton backend cannot use.
    """
    devs = {name: t.device for name, t in tensors.items() if t is not None}
    first = next(iter(devs.values()))
    if any(d != first for d in devs.values()):
        listing = ", ".join(f"{n} on {d}" for n, d in devs.items())
        raise RuntimeError(f"{op}: expected all tensors on one device, got {listing}")
    if first.type == "cuda":
        return first
    if first.type == "cpu" and INTERPRET:
        return first
    raise RuntimeError(
        f"{op}: the triton backend needs a CUDA device or TRITON_INTERPRET=1 (set before triton "
        f"is imported) for CPU tensors; got tensors on {first}")


def check_float(op: str, name: str, t: torch.Tensor, dim: int) -> None:
    """``t`` has ``dim`` dimensions and a supported floating dtype.

    Raises:
        RuntimeError: wrong rank or unsupported dtype (integer, complex, float8, ...).
    """
    if t.dim() != dim:
        raise RuntimeError(f"{op}: expected {name} to be {dim}-D, got shape {tuple(t.shape)}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise RuntimeError(
            f"{op}: {name} has dtype {t.dtype}, which the triton backend does not support "
            f"(supported: float32, float16, bfloat16, float64)")


def check_same_dtype(op: str, name: str, t: torch.Tensor, dtype: torch.dtype, ref: str) -> None:
    """Raises RuntimeError when ``t.dtype != dtype`` (``ref`` names the tensor it must match)."""
    if t.dtype != dtype:
        raise RuntimeError(f"{op}: {name} dtype {t.dtype} must equal the {ref} dtype {dtype}")


def check_index(op: str, name: str, t: torch.Tensor, length: int | None = None) -> None:
    """``t`` is a 1-D int64 tensor (of ``length`` elements when given).

    Raises:
        RuntimeError: wrong dtype, rank or length.
    """
    if t.dtype != torch.int64:
        raise RuntimeError(f"{op}: {name} must be int64, got {t.dtype}")
    if t.dim() != 1:
        raise RuntimeError(f"{op}: {name} must be 1-D, got shape {tuple(t.shape)}")
    if length is not None and t.shape[0] != length:
        raise RuntimeError(f"{op}: {name} must have {length} elements, got {t.shape[0]}")


def check_features(op: str, name: str, value) -> int:
    """A non-negative Python int feature count.

    Raises:
        RuntimeError: negative or not an integer.
    """
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise RuntimeError(f"{op}: {name} must be an integer, got {value!r}") from None
    if v != value or v < 0:
        raise RuntimeError(f"{op}: {name} must be a non-negative integer, got {value!r}")
    return v


def check_bias(op: str, bias: torch.Tensor | None, out_features: int, dtype: torch.dtype) -> None:
    """``bias`` is ``None`` or ``[out_features]`` of ``dtype``.

    Raises:
        RuntimeError: wrong shape or dtype.
    """
    if bias is None:
        return
    if bias.dim() != 1 or bias.shape[0] != out_features:
        raise RuntimeError(f"{op}: expected bias of shape [{out_features}], got {tuple(bias.shape)}")
    check_same_dtype(op, "bias", bias, dtype, "x")


# ---------------------------------------------------------------------------------------------
# Node splits of the SDDMM kernels
#: Programs the SDDMM grids aim for (enough to fill a large GPU a few times over).
TARGET_PROGRAMS = 2048
#: Largest number of node splits (partials memory is splits x output size, in the accumulator
#: dtype).
MAX_SPLITS = 64
#: Smallest node range one split gets when the split count is chosen automatically.
MIN_SPLIT_NODES = 512


def node_split_plan(n: int, work_programs: int, splits: int | None = None) -> tuple[int, int]:
    """``(num_splits, nodes_per_split)`` for an SDDMM over ``n`` nodes whose output is covered by
    ``work_programs`` programs per split.

    Automatic (``splits=None``): enough splits to reach about :data:`TARGET_PROGRAMS` programs, at
    most :data:`MAX_SPLITS`, each split at least :data:`MIN_SPLIT_NODES` nodes, split size a
    multiple of 128 (every ``BLOCK_N``). The plan depends on the shapes only, so the second-stage
    reduction (a sum over splits in split order, in the accumulator dtype) is the same on every
    call.
    An explicit ``splits`` (>= 1) divides the nodes into ``ceil(n / ceil(n / splits))`` ranges.

    Raises:
        RuntimeError: ``splits`` < 1.
    """
    n = max(int(n), 1)
    if splits is not None:
        if int(splits) < 1:
            raise RuntimeError(f"node splits must be >= 1, got {splits}")
        size = triton.cdiv(n, int(splits))
        return triton.cdiv(n, size), size
    want = triton.cdiv(TARGET_PROGRAMS, max(int(work_programs), 1))
    s = max(1, min(want, MAX_SPLITS, n // MIN_SPLIT_NODES))
    size = triton.cdiv(triton.cdiv(n, s), 128) * 128
    return triton.cdiv(n, size), size
