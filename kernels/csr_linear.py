"""Triton CSR sparse-weight linear forward: ``y = x @ W^T (+ bias)`` with ``W`` in CSR.

Algorithm: row-split SpMM (Sputnik-style). The grid is (node tiles, output-row tiles); one program
owns ``BLOCK_N`` nodes x ``BLOCK_O`` output rows. For each of its output rows it walks that row's
stored entries ``BLOCK_K`` at a time, gathers the matching columns of its node tile of ``x``
(masked ``x[n_tile, col]`` loads), multiplies by the weight values and accumulates a
``[BLOCK_N, BLOCK_K]`` partial (float32; float64 for float64 inputs) that is reduced once per
row. The ``[BLOCK_N, BLOCK_O]`` output tile (plus bias) is stored once, cast to ``x.dtype``.
Nodes (the long axis, 65536+) are on grid axis 0; output-row tiles on axis 1.

The backward pass w.r.t. ``x`` is the same kernel applied to the CSR transpose of ``W``
(:func:`gnnsparse.ops.csr_transpose`); the weight gradient is :mod:`.sddmm`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common as C

__all__ = ["csr_linear"]

#: Output rows per program.
BLOCK_O = 8
#: Stored entries of a row handled per loop step.
BLOCK_K = 32


@triton.autotune(configs=C.node_configs(), key=["n_key", "in_features", "out_features"])
@triton.jit
def _csr_linear_kernel(
    x_ptr, crow_ptr, col_ptr, val_ptr, bias_ptr, y_ptr,
    N, in_features, out_features, n_key,
    stride_xn, stride_xk,
    HAS_BIAS: tl.constexpr, ACC: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_o = tl.program_id(1)
    n_offs = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    n_mask = n_offs < N
    o_offs = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    k_offs = tl.arange(0, BLOCK_K)
    x_rows = x_ptr + n_offs[:, None] * stride_xn

    acc = tl.zeros((BLOCK_N, BLOCK_O), dtype=ACC)
    for r in range(BLOCK_O):
        row = pid_o * BLOCK_O + r
        row_ok = row < out_features
        start = tl.load(crow_ptr + row, mask=row_ok, other=0)
        end = tl.load(crow_ptr + row + 1, mask=row_ok, other=0)
        part = tl.zeros((BLOCK_N, BLOCK_K), dtype=ACC)
        for p0 in range(start, end, BLOCK_K):
            p = p0 + k_offs
            p_mask = p < end
            cols = tl.load(col_ptr + p, mask=p_mask, other=0)
            vals = tl.load(val_ptr + p, mask=p_mask, other=0.0).to(ACC)
            xv = tl.load(x_rows + cols[None, :] * stride_xk,
                         mask=n_mask[:, None] & p_mask[None, :], other=0.0).to(ACC)
            part += xv * vals[None, :]
        contrib = tl.sum(part, axis=1)
        acc += tl.where(tl.arange(0, BLOCK_O)[None, :] == r, contrib[:, None], 0.0)

    o_mask = o_offs < out_features
    if HAS_BIAS:
        b = tl.load(bias_ptr + o_offs, mask=o_mask, other=0.0).to(ACC)
        acc += b[None, :]
    y_ptrs = y_ptr + n_offs[:, None] * out_features + o_offs[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=n_mask[:, None] & o_mask[None, :])


def csr_linear(x: torch.Tensor, crow_indices: torch.Tensor, col_indices: torch.Tensor,
               values: torch.Tensor, bias: torch.Tensor | None, out_features: int) -> torch.Tensor:
    """``y = x @ W^T (+ bias)`` with ``W`` ``(out_features, in_features)`` in CSR.

    Args:
        x: ``[N, in_features]``, float32/float16/bfloat16/float64, any strides (strides are
            passed to the kernel; no copy).
        crow_indices: int64 ``[out_features + 1]`` (``crow[0] == 0``, non-decreasing,
            ``crow[-1] == nnz``).
        col_indices: int64 ``[nnz]``, each in ``[0, in_features)``.
        values: ``[nnz]``, same dtype as ``x`` (made contiguous if needed).
        bias: ``None`` or ``[out_features]``, same dtype as ``x``.
        out_features: number of rows of ``W``.

    Returns:
        ``[N, out_features]`` contiguous, dtype of ``x``; products accumulated in float32
        (float64 for float64 inputs). Rows of ``W`` without stored entries give ``bias`` (or 0).

    FLOPs: ``2 * N * nnz`` (one multiply-add per stored weight and node; the bias is not counted).

    Algorithm: row-split SpMM, one program per (``BLOCK_N`` node tile, ``BLOCK_O``-row output tile),
    gathering ``x[n_tile, col]`` for the stored entries of each output row (Sputnik-style);
    ``BLOCK_N`` is autotuned (key: node-count bucket, in/out features).

    Index contents are not validated (no host sync per call); :mod:`gnnsparse.ops` validates the
    CSR structure. Out-of-range indices are undefined behaviour.

    Raises:
        RuntimeError: ``x`` not 2-D; unsupported dtype (integers, complex, ...); ``values``/``bias``
            dtype differs from ``x``; indices not int64 1-D; ``crow_indices`` length not
            ``out_features + 1``; ``values`` not ``[nnz]``; ``bias`` not ``[out_features]``;
            tensors on different devices; a device other than CUDA (CPU only with
            ``TRITON_INTERPRET=1``).
    """
    op = "csr_linear"
    out_features = C.check_features(op, "out_features", out_features)
    C.check_float(op, "x", x, 2)
    C.check_index(op, "crow_indices", crow_indices, out_features + 1)
    C.check_index(op, "col_indices", col_indices)
    nnz = col_indices.shape[0]
    if values.dim() != 1 or values.shape[0] != nnz:
        raise RuntimeError(f"{op}: expected values of shape [{nnz}] (nnz), got {tuple(values.shape)}")
    C.check_same_dtype(op, "values", values, x.dtype, "x")
    C.check_bias(op, bias, out_features, x.dtype)
    C.check_devices(op, x=x, crow_indices=crow_indices, col_indices=col_indices, values=values,
                    bias=bias)

    n, in_features = x.shape
    y = torch.empty((n, out_features), dtype=x.dtype, device=x.device)
    if n == 0 or out_features == 0:
        return y
    values = values.contiguous()
    crow_indices = crow_indices.contiguous()
    col_indices = col_indices.contiguous()
    bias_arg = bias.contiguous() if bias is not None else values

    def grid(meta):
        return (triton.cdiv(n, meta["BLOCK_N"]), triton.cdiv(out_features, BLOCK_O))

    _csr_linear_kernel[grid](
        x, crow_indices, col_indices, values, bias_arg, y,
        n, in_features, out_features, C.n_bucket(n),
        x.stride(0), x.stride(1),
        HAS_BIAS=bias is not None, ACC=C.acc_dtype(x.dtype)[1], BLOCK_O=BLOCK_O, BLOCK_K=BLOCK_K,
    )
    return y
