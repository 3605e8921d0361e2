"""Pure-torch reference implementations of the ``torch.ops.gnnsparse`` operators.

Same names and signatures as the C++ ops. They favour obvious correctness over
speed: the CSR weight is expanded into a dense ``[out_features, in_features]``
matrix with ``index_put_`` (duplicate positions are summed). They run on any
device and are differentiable through ordinary autograd (the ``"torch"``
backend of :mod:`gnnsparse.ops`).

The block-sparse (BSR) ops (``bsr_*``, weight values ``[nnzb, b, b]``) expand their blocks into
a dense weight the same way (:func:`bsr_dense_weight`).
"""

from __future__ import annotations

import torch

__all__ = ["dense_weight", "csr_linear", "csr_linear_backward_input", "csr_sddmm", "bias_grad",
           "bsr_dense_weight", "bsr_linear", "bsr_linear_backward_input", "bsr_sddmm"]


def _row_indices(crow_indices: torch.Tensor, nnz: int) -> torch.Tensor:
    """Row index of every stored entry (int64 ``[nnz]``)."""
    counts = crow_indices[1:] - crow_indices[:-1]
    rows = torch.arange(counts.numel(), device=crow_indices.device)
    return torch.repeat_interleave(rows, counts, output_size=nnz)


def dense_weight(crow_indices: torch.Tensor, col_indices: torch.Tensor, values: torch.Tensor,
                 out_features: int, in_features: int) -> torch.Tensor:
    """Dense ``[out_features, in_features]`` matrix of a CSR weight (differentiable in ``values``)."""
    rows = _row_indices(crow_indices, col_indices.numel())
    w = values.new_zeros((out_features, in_features))
    return w.index_put((rows, col_indices), values, accumulate=True)


def csr_linear(x: torch.Tensor, crow_indices: torch.Tensor, col_indices: torch.Tensor,
               values: torch.Tensor, bias: torch.Tensor | None, out_features: int) -> torch.Tensor:
    """``x [N, in] @ W.T (+ bias [out])`` -> ``[N, out]``."""
    w = dense_weight(crow_indices, col_indices, values, out_features, x.shape[1])
    y = x @ w.t()
    if bias is not None:
        y = y + bias
    return y


def csr_linear_backward_input(grad_out: torch.Tensor, crow_indices: torch.Tensor,
                              col_indices: torch.Tensor, values: torch.Tensor,
                              in_features: int) -> torch.Tensor:
    """``grad_out [N, out] @ W`` -> ``[N, in]``."""
    w = dense_weight(crow_indices, col_indices, values, grad_out.shape[1], in_features)
    return grad_out @ w


def csr_sddmm(grad_out: torch.Tensor, x: torch.Tensor, crow_indices: torch.Tensor,
              col_indices: torch.Tensor) -> torch.Tensor:
    """``(grad_out.T @ x)`` at the stored positions -> ``[nnz]``."""
    rows = _row_indices(crow_indices, col_indices.numel())
    return (grad_out.t() @ x)[rows, col_indices]


def bias_grad(grad_out: torch.Tensor) -> torch.Tensor:
    """Column sums of ``grad_out [N, out]`` -> ``[out]``."""
    return grad_out.sum(0)


# ---------------------------------------------------------------------------------------------
# Block-sparse (BSR) weights: square b x b blocks, values [nnzb, b, b] with
# values[k, i, j] = W[br * b + i, col[k] * b + j].
def _bsr_element_index(crow_indices: torch.Tensor, col_indices: torch.Tensor, b: int):
    """Dense (row, col) index of every element of every stored block, each int64 ``[nnzb, b, b]``."""
    nnzb = col_indices.numel()
    brow = _row_indices(crow_indices, nnzb)
    r = torch.arange(b, device=col_indices.device)
    rows = (brow * b).view(-1, 1, 1) + r.view(1, b, 1)
    cols = (col_indices * b).view(-1, 1, 1) + r.view(1, 1, b)
    return rows.expand(nnzb, b, b), cols.expand(nnzb, b, b)


def bsr_dense_weight(crow_indices: torch.Tensor, col_indices: torch.Tensor, values: torch.Tensor,
                     out_features: int, in_features: int) -> torch.Tensor:
    """Dense ``[out_features, in_features]`` matrix of a BSR weight (differentiable in ``values``).

    ``values`` is ``[nnzb, b, b]``; duplicate blocks are summed.
    """
    b = values.shape[1]
    rows, cols = _bsr_element_index(crow_indices, col_indices, b)
    w = values.new_zeros((out_features, in_features))
    return w.index_put((rows.reshape(-1), cols.reshape(-1)), values.reshape(-1), accumulate=True)


def bsr_linear(x: torch.Tensor, crow_indices: torch.Tensor, col_indices: torch.Tensor,
               values: torch.Tensor, bias: torch.Tensor | None, out_features: int) -> torch.Tensor:
    """``x [N, in] @ W.T (+ bias [out])`` -> ``[N, out]``, ``W`` in BSR."""
    w = bsr_dense_weight(crow_indices, col_indices, values, out_features, x.shape[1])
    y = x @ w.t()
    if bias is not None:
        y = y + bias
    return y


def bsr_linear_backward_input(grad_out: torch.Tensor, crow_indices: torch.Tensor,
                              col_indices: torch.Tensor, values: torch.Tensor,
                              in_features: int) -> torch.Tensor:
    """``grad_out [N, out] @ W`` -> ``[N, in]``, ``W`` in BSR."""
    w = bsr_dense_weight(crow_indices, col_indices, values, grad_out.shape[1], in_features)
    return grad_out @ w


def bsr_sddmm(grad_out: torch.Tensor, x: torch.Tensor, crow_indices: torch.Tensor,
              col_indices: torch.Tensor, blocksize: int) -> torch.Tensor:
    """``(grad_out.T @ x)`` at the stored blocks -> ``[nnzb, b, b]``."""
    rows, cols = _bsr_element_index(crow_indices, col_indices, int(blocksize))
    return (grad_out.t() @ x)[rows, cols]
