"""Triton CSR SDDMM: the weight gradient of :mod:`.csr_linear`,
``dvalues[p] = sum_n grad_out[n, row(p)] * x[n, col(p)]`` (``grad_out^T @ x`` sampled at the
stored positions of ``W``).

Algorithm: nnz-split SDDMM with a node split and a deterministic two-stage reduction. The row of
every stored entry is expanded with torch ops (``repeat_interleave`` with a known output size, no
host sync). The grid is (entry tiles of ``BLOCK_P`` stored entries, node splits); each program
walks its node range ``BLOCK_N`` nodes at a time, gathering ``grad_out[n, row(p)]`` and
``x[n, col(p)]`` for its entries and accumulating their products in a ``[BLOCK_N, BLOCK_P]``
tile reduced over nodes at the end. Each split writes its own partial row (``[splits, nnz]``, no
atomics); the partials are then summed over splits in split order (``torch.sum(0)``) and cast to
``x.dtype``. Tile, partials and sum are float32, or float64 for float64 inputs. The split plan
depends on the shapes only, so repeated calls give bit-identical results (for a fixed autotuned
``BLOCK_N``/``num_warps``; a different config, e.g. chosen by autotuning in another process, may
round differently).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common as C

__all__ = ["csr_sddmm"]

#: Stored entries per program.
BLOCK_P = 32


@triton.autotune(configs=C.node_configs(), key=["n_key", "nnz_key"])
@triton.jit
def _csr_sddmm_kernel(
    g_ptr, x_ptr, row_ptr, col_ptr, part_ptr,
    N, nnz, split_size, n_key, nnz_key,
    stride_gn, stride_go, stride_xn, stride_xk,
    ACC: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_p = tl.program_id(0)
    pid_s = tl.program_id(1)
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_mask = p < nnz
    rows = tl.load(row_ptr + p, mask=p_mask, other=0)
    cols = tl.load(col_ptr + p, mask=p_mask, other=0)
    g_cols = g_ptr + rows[None, :] * stride_go
    x_cols = x_ptr + cols[None, :] * stride_xk

    n_start = pid_s.to(tl.int64) * split_size
    n_end = tl.minimum(n_start + split_size, N)
    acc = tl.zeros((BLOCK_N, BLOCK_P), dtype=ACC)
    for n0 in range(n_start, n_end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        m = (n < n_end)[:, None] & p_mask[None, :]
        gv = tl.load(g_cols + n[:, None] * stride_gn, mask=m, other=0.0).to(ACC)
        xv = tl.load(x_cols + n[:, None] * stride_xn, mask=m, other=0.0).to(ACC)
        acc += gv * xv
    out = tl.sum(acc, axis=0)
    tl.store(part_ptr + pid_s.to(tl.int64) * nnz + p, out, mask=p_mask)


def _row_of_entries(crow_indices: torch.Tensor, nnz: int) -> torch.Tensor:
    """Row of every stored entry, int64 ``[nnz]`` (no host sync: the output size is given)."""
    counts = crow_indices[1:] - crow_indices[:-1]
    rows = torch.arange(counts.shape[0], device=crow_indices.device)
    return torch.repeat_interleave(rows, counts, output_size=nnz)


def csr_sddmm(grad_out: torch.Tensor, x: torch.Tensor, crow_indices: torch.Tensor,
              col_indices: torch.Tensor, *, splits: int | None = None) -> torch.Tensor:
    """Weight gradient of ``csr_linear``: ``(grad_out^T @ x)`` at the stored positions of ``W``.

    ``dvalues[p] = sum_n grad_out[n, row(p)] * x[n, col(p)]``.

    Args:
        grad_out: ``[N, out_features]``, float32/float16/bfloat16/float64, any strides.
        x: ``[N, in_features]``, same dtype as ``grad_out``, any strides.
        crow_indices: int64 ``[out_features + 1]``.
        col_indices: int64 ``[nnz]``, each in ``[0, in_features)``.
        splits: number of node ranges reduced in the second stage; ``None`` (default) picks it
            from the shapes (:func:`._common.node_split_plan`). For tests and tuning.

    Returns:
        ``[nnz]``, dtype of ``x``; float32 accumulation, float32 partials summed over splits in a
        fixed order (deterministic, no atomics) -- float64 throughout for float64 inputs.
        ``N == 0`` gives zeros.

    FLOPs: ``2 * N * nnz``.

    Algorithm: nnz-split SDDMM, one program per (``BLOCK_P``-entry tile, node split), gathering
    ``grad_out[n, row(p)]`` and ``x[n, col(p)]`` over ``BLOCK_N``-node steps (autotuned, key:
    node-count and nnz buckets); partials ``[splits, nnz]`` in float32 (float64 for float64
    inputs), then ``sum(0)``. Extra memory: ``splits * nnz * 4`` bytes (8 for float64) plus the
    int64 row of every entry.

    Index contents are not validated (no host sync per call); :mod:`gnnsparse.ops` validates the
    CSR structure.

    Raises:
        RuntimeError: inputs not 2-D; unsupported dtype (integers, complex, ...); dtype of ``x`` differs
            from ``grad_out``; different node counts; indices not int64 1-D; ``crow_indices``
            length not ``out_features + 1``; ``splits`` < 1; tensors on different devices; a
            device other than CUDA (CPU only with ``TRITON_INTERPRET=1``).
    """
    op = "csr_sddmm"
    C.check_float(op, "grad_out", grad_out, 2)
    C.check_float(op, "x", x, 2)
    C.check_same_dtype(op, "x", x, grad_out.dtype, "grad_out")
    if x.shape[0] != grad_out.shape[0]:
        raise RuntimeError(f"{op}: grad_out has {grad_out.shape[0]} rows (nodes) but x has {x.shape[0]}")
    out_features = grad_out.shape[1]
    C.check_index(op, "crow_indices", crow_indices, out_features + 1)
    C.check_index(op, "col_indices", col_indices)
    C.check_devices(op, grad_out=grad_out, x=x, crow_indices=crow_indices, col_indices=col_indices)

    n = x.shape[0]
    nnz = col_indices.shape[0]
    if nnz == 0 or n == 0:
        return torch.zeros((nnz,), dtype=x.dtype, device=x.device)
    rows = _row_of_entries(crow_indices, nnz)
    col_indices = col_indices.contiguous()
    p_tiles = triton.cdiv(nnz, BLOCK_P)
    num_splits, split_size = C.node_split_plan(n, p_tiles, splits)
    acc_torch, acc_tl = C.acc_dtype(x.dtype)
    partials = torch.empty((num_splits, nnz), dtype=acc_torch, device=x.device)

    _csr_sddmm_kernel[(p_tiles, num_splits)](
        grad_out, x, rows, col_indices, partials,
        n, nnz, split_size, C.n_bucket(n), C.n_bucket(nnz),
        grad_out.stride(0), grad_out.stride(1), x.stride(0), x.stride(1),
        ACC=acc_tl, BLOCK_P=BLOCK_P,
    )
    if num_splits == 1:
        return partials[0].to(x.dtype)
    return partials.sum(0, dtype=acc_torch).to(x.dtype)
