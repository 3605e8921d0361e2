"""Triton block-sparse (BSR, square ``b x b`` blocks) linear layer: forward, input gradient and
weight gradient.

``W`` is ``(out_features, in_features)`` in BSR: ``crow_indices`` int64 ``[out/b + 1]``,
``col_indices`` int64 ``[nnzb]`` (block columns), ``values`` ``[nnzb, b, b]`` with
``values[k, i, j] = W[br*b + i, col[k]*b + j]`` (``br`` the block row of block ``k``).

Algorithms
----------
* :func:`bsr_linear` (``y = x @ W^T + bias``) and :func:`bsr_linear_backward_input`
  (``dx = grad_out @ W``) share one block-row SpMM kernel: grid (node tiles, block rows of the
  operand), one program per ``BLOCK_N`` nodes x one block row, looping over that row's blocks
  and accumulating ``[BLOCK_N, b] @ [b, b]`` products in float32 (float64 for float64 inputs).
  The forward walks the BSR rows of ``W`` with each block loaded transposed; the input gradient
  walks the block columns of ``W`` (a block transpose of the *structure* only, computed with
  torch sort/searchsorted, no host sync), with each block loaded as stored.
* :func:`bsr_sddmm` (``dvalues = grad_out^T @ x`` at the stored blocks): grid (blocks, node
  splits), ``[b, BLOCK_N] @ [BLOCK_N, b]`` products per step; partials ``[splits, nnzb, b, b]``
  (float32; float64 for float64 inputs) summed over splits in split order (deterministic, no
  atomics).

Products of float32/float16/bfloat16 inputs use ``tl.dot`` (float32 accumulation; float32 inputs
use TF32 only when ``torch.backends.cuda.matmul.allow_tf32`` is True) when the padded block size
``BLOCK_B`` (next power of two >= b) is at least 16 -- ``tl.dot`` needs every dimension >= 16 on
GPUs. Smaller blocks (b < 16 after padding: b = 1..8) use a broadcast-multiply-and-sum path in
float32. float64 inputs always take the broadcast path, in float64 (compiled float64 ``tl.dot``
depends on the Triton version and GPU; these kernels do not rely on it): the SpMM contracts
``R_CHUNK`` block columns at a time and the SDDMM ``N_CHUNK`` nodes at a time, so the 3-D product
tile stays small for large blocks. Non-power-of-two ``b`` is handled by masking the padded block.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common as C

__all__ = ["bsr_linear", "bsr_linear_backward_input", "bsr_sddmm"]


@triton.autotune(configs=C.node_configs(), key=["n_key", "rows_out", "cols_in", "b"],
                 prune_configs_by={"early_config_prune": C.prune_block_configs})
@triton.jit
def _bsr_spmm_kernel(
    a_ptr, ptr_ptr, perm_ptr, other_ptr, val_ptr, bias_ptr, y_ptr,
    N, rows_out, cols_in, b, n_key,
    stride_an, stride_ak,
    HAS_PERM: tl.constexpr, TRANS_V: tl.constexpr, HAS_BIAS: tl.constexpr,
    USE_DOT: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr, R_CHUNK: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """y[n, g*b + s] = sum over blocks t of group g: sum_r a[n, other(t)*b + r] * M_t[r, s].

    Group g is a block row of W (forward: ``M_t = values[t]^T``, other = block column) or a block
    column of W (input gradient: ``M_t = values[perm[t]]``, other = block row).
    Without ``USE_DOT`` the contraction runs ``R_CHUNK`` block columns (of ``r``) at a time.
    """
    pid_n = tl.program_id(0)
    grp = tl.program_id(1)
    n_offs = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    n_mask = n_offs < N
    r = tl.arange(0, BLOCK_B)  # contraction index within a block
    s = tl.arange(0, BLOCK_B)  # output index within a block
    r_mask = r < b
    s_mask = s < b
    if TRANS_V:
        m_offs = s[None, :] * b + r[:, None]
    else:
        m_offs = r[:, None] * b + s[None, :]
    m_mask = r_mask[:, None] & s_mask[None, :]
    a_rows = a_ptr + n_offs[:, None] * stride_an
    a_mask = n_mask[:, None] & r_mask[None, :]
    bb = b * b

    start = tl.load(ptr_ptr + grp)
    end = tl.load(ptr_ptr + grp + 1)
    acc = tl.zeros((BLOCK_N, BLOCK_B), dtype=ACC)
    for t in range(start, end):
        if HAS_PERM:
            k = tl.load(perm_ptr + t)
        else:
            k = t
        other = tl.load(other_ptr + t)
        if USE_DOT:
            a_tile = tl.load(a_rows + (other * b + r)[None, :] * stride_ak, mask=a_mask, other=0.0)
            m_tile = tl.load(val_ptr + k * bb + m_offs, mask=m_mask, other=0.0)
            acc = tl.dot(a_tile, m_tile, acc, input_precision=PRECISION, out_dtype=ACC)
        else:
            for r0 in range(0, b, R_CHUNK):
                rc = r0 + tl.arange(0, R_CHUNK)
                rc_mask = rc < b
                if TRANS_V:
                    mc_offs = s[None, :] * b + rc[:, None]
                else:
                    mc_offs = rc[:, None] * b + s[None, :]
                a_c = tl.load(a_rows + (other * b + rc)[None, :] * stride_ak,
                              mask=n_mask[:, None] & rc_mask[None, :], other=0.0).to(ACC)
                m_c = tl.load(val_ptr + k * bb + mc_offs, mask=rc_mask[:, None] & s_mask[None, :],
                              other=0.0).to(ACC)
                acc += tl.sum(a_c[:, :, None] * m_c[None, :, :], axis=1)

    out_cols = grp * b + s
    if HAS_BIAS:
        bias = tl.load(bias_ptr + out_cols, mask=s_mask, other=0.0).to(ACC)
        acc += bias[None, :]
    y_ptrs = y_ptr + n_offs[:, None] * rows_out + out_cols[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=n_mask[:, None] & s_mask[None, :])


@triton.autotune(configs=C.node_configs(), key=["n_key", "nnzb_key", "b"],
                 prune_configs_by={"early_config_prune": C.prune_block_configs})
@triton.jit
def _bsr_sddmm_kernel(
    g_ptr, x_ptr, brow_ptr, col_ptr, part_ptr,
    N, nnzb, b, split_size, n_key, nnzb_key,
    stride_gn, stride_go, stride_xn, stride_xk,
    USE_DOT: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr, N_CHUNK: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """part[split, k] = grad_out[split nodes, block row of k]^T @ x[split nodes, block col of k],
    ``BLOCK_N`` nodes per ``tl.dot`` step, or ``N_CHUNK`` nodes per broadcast step without
    ``USE_DOT``."""
    k = tl.program_id(0)
    pid_s = tl.program_id(1)
    i = tl.arange(0, BLOCK_B)
    j = tl.arange(0, BLOCK_B)
    i_mask = i < b
    j_mask = j < b
    br = tl.load(brow_ptr + k)
    bc = tl.load(col_ptr + k)
    g_cols = g_ptr + (br * b + i)[:, None] * stride_go      # [BLOCK_B, 1] -> grad_out^T tile
    x_cols = x_ptr + (bc * b + j)[None, :] * stride_xk      # [1, BLOCK_B]

    n_start = pid_s.to(tl.int64) * split_size
    n_end = tl.minimum(n_start + split_size, N)
    acc = tl.zeros((BLOCK_B, BLOCK_B), dtype=ACC)
    if USE_DOT:
        for n0 in range(n_start, n_end, BLOCK_N):
            n = n0 + tl.arange(0, BLOCK_N)
            nm = n < n_end
            gt = tl.load(g_cols + n[None, :] * stride_gn, mask=i_mask[:, None] & nm[None, :], other=0.0)
            xt = tl.load(x_cols + n[:, None] * stride_xn, mask=nm[:, None] & j_mask[None, :], other=0.0)
            acc = tl.dot(gt, xt, acc, input_precision=PRECISION, out_dtype=ACC)
    else:
        for n0 in range(n_start, n_end, N_CHUNK):
            n = n0 + tl.arange(0, N_CHUNK)
            nm = n < n_end
            gt = tl.load(g_cols + n[None, :] * stride_gn, mask=i_mask[:, None] & nm[None, :],
                         other=0.0).to(ACC)
            xt = tl.load(x_cols + n[:, None] * stride_xn, mask=nm[:, None] & j_mask[None, :],
                         other=0.0).to(ACC)
            acc += tl.sum(gt[:, :, None] * xt[None, :, :], axis=1)

    bb = b * b
    offs = (pid_s.to(tl.int64) * nnzb + k) * bb + i[:, None] * b + j[None, :]
    tl.store(part_ptr + offs, acc, mask=i_mask[:, None] & j_mask[None, :])


# ---------------------------------------------------------------------------------------------
def _check_structure(op: str, crow_indices, col_indices, rows: int, cols: int, b: int) -> None:
    if b < 1:
        raise RuntimeError(f"{op}: blocksize must be >= 1, got {b}")
    if rows % b != 0 or cols % b != 0:
        raise RuntimeError(
            f"{op}: out_features ({rows}) and in_features ({cols}) must both be divisible by the "
            f"blocksize {b}")
    C.check_index(op, "crow_indices", crow_indices, rows // b + 1)
    C.check_index(op, "col_indices", col_indices)


def _check_values(op: str, values, nnzb: int, dtype) -> int:
    if values.dim() != 3 or values.shape[1] != values.shape[2] or values.shape[0] != nnzb:
        raise RuntimeError(
            f"{op}: expected values of shape [nnzb={nnzb}, b, b] (square blocks), got "
            f"{tuple(values.shape)}")
    C.check_same_dtype(op, "values", values, dtype, "x" if op == "bsr_linear" else "grad_out")
    return values.shape[1]


#: Largest 3-D product tile of the broadcast (non-``tl.dot``) SDDMM step, in elements.
_SDDMM_CHUNK_ELEMS = 2048


def _block_params(b: int, dtype: torch.dtype, kernel: str) -> dict:
    """Compile-time parameters of the BSR kernels for block size ``b`` and input ``dtype``.

    ``tl.dot`` (``USE_DOT``) for padded blocks ``BLOCK_B >= 16`` of float32/float16/bfloat16;
    float64 always uses the broadcast path, accumulating in float64 (``ACC``). The broadcast path
    contracts ``R_CHUNK`` (``kernel="spmm"``: all of a block up to 8, else 4) block columns or
    ``N_CHUNK`` (``kernel="sddmm"``: ``BLOCK_B**2 * N_CHUNK <= 2048``, at most 128) nodes at a time.
    """
    block_b = triton.next_power_of_2(b)
    params = dict(BLOCK_B=block_b, USE_DOT=block_b >= 16 and dtype != torch.float64,
                  PRECISION=C.dot_precision(dtype), ACC=C.acc_dtype(dtype)[1])
    if kernel == "spmm":
        params["R_CHUNK"] = block_b if block_b <= 8 else 4
    else:
        params["N_CHUNK"] = min(128, max(1, _SDDMM_CHUNK_ELEMS // (block_b * block_b)))
    return params


def _block_rows(crow_indices: torch.Tensor, nnzb: int) -> torch.Tensor:
    """Block row of every stored block, int64 ``[nnzb]`` (no host sync)."""
    counts = crow_indices[1:] - crow_indices[:-1]
    rows = torch.arange(counts.shape[0], device=crow_indices.device)
    return torch.repeat_interleave(rows, counts, output_size=nnzb)


def bsr_linear(x: torch.Tensor, crow_indices: torch.Tensor, col_indices: torch.Tensor,
               values: torch.Tensor, bias: torch.Tensor | None, out_features: int) -> torch.Tensor:
    """``y = x @ W^T (+ bias)`` with ``W`` ``(out_features, in_features)`` in BSR.

    Args:
        x: ``[N, in_features]``, float32/float16/bfloat16/float64, any strides (passed to the
            kernel).
        crow_indices: int64 ``[out_features / b + 1]``.
        col_indices: int64 ``[nnzb]`` block columns, each in ``[0, in_features / b)``.
        values: ``[nnzb, b, b]``, same dtype as ``x`` (made contiguous if needed); ``b`` is
            ``values.shape[1]`` and must divide ``out_features`` and ``in_features``.
        bias: ``None`` or ``[out_features]``, same dtype as ``x``.
        out_features: number of rows of ``W``.

    Returns:
        ``[N, out_features]`` contiguous, dtype of ``x``, float32 accumulation (float64 for
        float64 inputs). Block rows without stored blocks give ``bias`` (or 0).

    FLOPs: ``2 * N * nnzb * b * b`` (bias not counted).

    Algorithm: block-row SpMM, one program per (``BLOCK_N`` node tile, block row), ``tl.dot`` of
    ``[BLOCK_N, b] x [b, b]`` tiles per stored block (``b >= 16`` after padding to a power of
    two; broadcast-multiply-and-sum for smaller blocks and for float64). TF32 for float32 only when
    ``torch.backends.cuda.matmul.allow_tf32``. ``BLOCK_N`` autotuned (key: node-count bucket,
    out/in features, b).

    Index contents are not validated (no host sync per call); :mod:`gnnsparse.ops` validates the
    BSR structure.

    Raises:
        RuntimeError: ``x`` not 2-D; unsupported dtype (integers, complex, ...); ``values``/``bias``
            dtype differs from ``x``; ``values`` not ``[nnzb, b, b]``; features not divisible by
            ``b``; indices not int64 1-D; ``crow_indices`` length not ``out_features / b + 1``;
            ``bias`` not ``[out_features]``; tensors on different devices; a device other than
            CUDA (CPU only with ``TRITON_INTERPRET=1``).
    """
    op = "bsr_linear"
    out_features = C.check_features(op, "out_features", out_features)
    C.check_float(op, "x", x, 2)
    C.check_index(op, "col_indices", col_indices)
    b = _check_values(op, values, col_indices.shape[0], x.dtype)
    n, in_features = x.shape
    _check_structure(op, crow_indices, col_indices, out_features, in_features, b)
    C.check_bias(op, bias, out_features, x.dtype)
    C.check_devices(op, x=x, crow_indices=crow_indices, col_indices=col_indices, values=values,
                    bias=bias)

    y = torch.empty((n, out_features), dtype=x.dtype, device=x.device)
    if n == 0 or out_features == 0:
        return y
    values = values.contiguous()
    crow_indices = crow_indices.contiguous()
    col_indices = col_indices.contiguous()
    bias_arg = bias.contiguous() if bias is not None else values

    def grid(meta):
        return (triton.cdiv(n, meta["BLOCK_N"]), out_features // b)

    _bsr_spmm_kernel[grid](
        x, crow_indices, col_indices, col_indices, values, bias_arg, y,
        n, out_features, in_features, b, C.n_bucket(n),
        x.stride(0), x.stride(1),
        HAS_PERM=False, TRANS_V=True, HAS_BIAS=bias is not None,
        **_block_params(b, x.dtype, "spmm"),
    )
    return y


def bsr_linear_backward_input(grad_out: torch.Tensor, crow_indices: torch.Tensor,
                              col_indices: torch.Tensor, values: torch.Tensor,
                              in_features: int) -> torch.Tensor:
    """Input gradient of :func:`bsr_linear`: ``dx = grad_out @ W``.

    Args:
        grad_out: ``[N, out_features]``, float32/float16/bfloat16/float64, any strides.
        crow_indices: int64 ``[out_features / b + 1]``.
        col_indices: int64 ``[nnzb]`` block columns, each in ``[0, in_features / b)``.
        values: ``[nnzb, b, b]``, same dtype as ``grad_out``.
        in_features: number of columns of ``W``.

    Returns:
        ``[N, in_features]`` contiguous, dtype of ``grad_out``, float32 accumulation (float64 for
        float64 inputs).

    FLOPs: ``2 * N * nnzb * b * b``.

    Algorithm: block-column SpMM. The structure is block-transposed with torch ops (a stable sort
    of the block columns -- blocks of one column stay in block-row order -- plus
    ``searchsorted`` for the column pointers; no host sync); one program per (``BLOCK_N`` node
    tile, block column of ``W``) accumulates ``grad_out[n_tile, br*b:(br+1)*b] @ values[k]``
    (blocks used as stored, not transposed) with ``tl.dot`` (``b >= 16``, not float64) or
    broadcast-multiply-and-sum. Extra memory: three int64 ``[nnzb]``-sized index arrays.

    Index contents are not validated (no host sync per call); :mod:`gnnsparse.ops` validates the
    BSR structure.

    Raises:
        RuntimeError: ``grad_out`` not 2-D; unsupported dtype; ``values`` dtype differs from
            ``grad_out``; ``values`` not ``[nnzb, b, b]``; features not divisible by ``b``;
            indices not int64 1-D; ``crow_indices`` length not ``out_features / b + 1``; tensors on
            different devices; a device other than CUDA (CPU only with ``TRITON_INTERPRET=1``).
    """
    op = "bsr_linear_backward_input"
    in_features = C.check_features(op, "in_features", in_features)
    C.check_float(op, "grad_out", grad_out, 2)
    C.check_index(op, "col_indices", col_indices)
    nnzb = col_indices.shape[0]
    b = _check_values(op, values, nnzb, grad_out.dtype)
    n, out_features = grad_out.shape
    _check_structure(op, crow_indices, col_indices, out_features, in_features, b)
    C.check_devices(op, grad_out=grad_out, crow_indices=crow_indices, col_indices=col_indices,
                    values=values)

    dx = torch.empty((n, in_features), dtype=grad_out.dtype, device=grad_out.device)
    if n == 0 or in_features == 0:
        return dx
    values = values.contiguous()
    dev = col_indices.device
    # Block transpose of the structure: blocks grouped by block column, block-row order inside.
    sorted_cols, perm = torch.sort(col_indices, stable=True)
    ccol = torch.searchsorted(sorted_cols, torch.arange(in_features // b + 1, device=dev))
    brow_t = _block_rows(crow_indices, nnzb)[perm]
    perm = perm.contiguous()

    def grid(meta):
        return (triton.cdiv(n, meta["BLOCK_N"]), in_features // b)

    _bsr_spmm_kernel[grid](
        grad_out, ccol, perm, brow_t, values, values, dx,
        n, in_features, out_features, b, C.n_bucket(n),
        grad_out.stride(0), grad_out.stride(1),
        HAS_PERM=True, TRANS_V=False, HAS_BIAS=False, **_block_params(b, grad_out.dtype, "spmm"),
    )
    return dx


def bsr_sddmm(grad_out: torch.Tensor, x: torch.Tensor, crow_indices: torch.Tensor,
              col_indices: torch.Tensor, blocksize: int, *, splits: int | None = None) -> torch.Tensor:
    """Weight gradient of :func:`bsr_linear`: ``(grad_out^T @ x)`` at the stored blocks.

    ``dvalues[k, i, j] = sum_n grad_out[n, br(k)*b + i] * x[n, col[k]*b + j]``.

    Args:
        grad_out: ``[N, out_features]``, float32/float16/bfloat16/float64, any strides.
        x: ``[N, in_features]``, same dtype as ``grad_out``, any strides.
        crow_indices: int64 ``[out_features / b + 1]``.
        col_indices: int64 ``[nnzb]`` block columns.
        blocksize: ``b`` (divides ``out_features`` and ``in_features``).
        splits: number of node ranges reduced in the second stage; ``None`` (default) picks it
            from the shapes (:func:`._common.node_split_plan`). For tests and tuning.

    Returns:
        ``[nnzb, b, b]``, dtype of ``x``; float32 accumulation, float32 partials summed over
        splits in a fixed order (deterministic, no atomics) -- float64 throughout for float64
        inputs. ``N == 0`` gives zeros.

    FLOPs: ``2 * N * nnzb * b * b``.

    Algorithm: block SDDMM, one program per (stored block, node split), ``tl.dot`` of
    ``[b, BLOCK_N] x [BLOCK_N, b]`` tiles (``b >= 16`` after padding; broadcast-multiply-and-sum
    below and for float64), partials ``[splits, nnzb, b, b]`` in float32 (float64 for float64
    inputs), then ``sum(0)``. Extra memory: ``splits * nnzb * b * b * 4`` bytes (8 for float64).

    Index contents are not validated (no host sync per call); :mod:`gnnsparse.ops` validates the
    BSR structure.

    Raises:
        RuntimeError: inputs not 2-D; unsupported dtype; dtype of ``x`` differs from
            ``grad_out``; different node counts; ``blocksize`` < 1 or not dividing the features;
            indices not int64 1-D; ``crow_indices`` length not ``out_features / b + 1``;
            ``splits`` < 1; tensors on different devices; a device other than CUDA (CPU only
            with ``TRITON_INTERPRET=1``).
    """
    op = "bsr_sddmm"
    C.check_float(op, "grad_out", grad_out, 2)
    C.check_float(op, "x", x, 2)
    C.check_same_dtype(op, "x", x, grad_out.dtype, "grad_out")
    if x.shape[0] != grad_out.shape[0]:
        raise RuntimeError(f"{op}: grad_out has {grad_out.shape[0]} rows (nodes) but x has {x.shape[0]}")
    b = C.check_features(op, "blocksize", blocksize)
    n, out_features = grad_out.shape
    in_features = x.shape[1]
    _check_structure(op, crow_indices, col_indices, out_features, in_features, b)
    C.check_devices(op, grad_out=grad_out, x=x, crow_indices=crow_indices, col_indices=col_indices)

    nnzb = col_indices.shape[0]
    if nnzb == 0 or n == 0:
        return torch.zeros((nnzb, b, b), dtype=x.dtype, device=x.device)
    brow = _block_rows(crow_indices, nnzb)
    col_indices = col_indices.contiguous()
    num_splits, split_size = C.node_split_plan(n, nnzb, splits)
    acc_torch = C.acc_dtype(x.dtype)[0]
    partials = torch.empty((num_splits, nnzb, b, b), dtype=acc_torch, device=x.device)

    _bsr_sddmm_kernel[(nnzb, num_splits)](
        grad_out, x, brow, col_indices, partials,
        n, nnzb, b, split_size, C.n_bucket(n), C.n_bucket(nnzb),
        grad_out.stride(0), grad_out.stride(1), x.stride(0), x.stride(1),
        **_block_params(b, x.dtype, "sddmm"),
    )
    if num_splits == 1:
        return partials[0].to(x.dtype)
    return partials.sum(0, dtype=acc_torch).to(x.dtype)
