"""Sparse adjacency helpers shared by :class:`LinkData` and :class:`NodeData`."""

from __future__ import annotations

import warnings

import numpy as np
import torch

__all__ = ["NORMALIZATIONS", "csr_adjacency", "undirected_pairs"]

#: Supported ``normalize`` modes of ``adjacency()``.
NORMALIZATIONS = ("sum", "mean", "gcn")


def undirected_pairs(u: np.ndarray, v: np.ndarray, num_nodes: int) -> np.ndarray:
    """Canonical codes ``min*n + max`` of unordered pairs (self-loops kept)."""
    lo = np.minimum(u, v).astype(np.int64, copy=False)
    hi = np.maximum(u, v).astype(np.int64, copy=False)
    return lo * np.int64(num_nodes) + hi


def csr_adjacency(edge_index: np.ndarray, num_nodes: int, normalize: str) -> torch.Tensor:
    """Build a float32 ``torch.sparse_csr_tensor`` ``[num_nodes, num_nodes]``.

    ``edge_index`` is ``[2, E]`` (row, col) with both directions of every
    undirected edge, no duplicates and no self-loops.  Values:

    ``"sum"``
        1.0 per edge, so ``A @ X`` sums neighbour features.
    ``"mean"``
        ``1 / deg(row)``, so ``A @ X`` averages neighbour features; rows of
        isolated nodes stay empty (their output is 0).
    ``"gcn"``
        ``D^-1/2 (A + I) D^-1/2`` with ``D`` the degree of ``A + I``
        (Kipf & Welling); self-loops are added for every node.

    Column indices are sorted within each row.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    n = int(num_nodes)
    row = np.asarray(edge_index[0], dtype=np.int64)
    col = np.asarray(edge_index[1], dtype=np.int64)
    if normalize == "gcn":
        loops = np.arange(n, dtype=np.int64)
        row = np.concatenate((row, loops))
        col = np.concatenate((col, loops))
    order = np.lexsort((col, row))
    row = row[order]
    col = col[order]
    deg = np.bincount(row, minlength=n).astype(np.int64)
    crow = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(deg, out=crow[1:])
    if normalize == "sum":
        values = np.ones(row.shape[0], dtype=np.float32)
    elif normalize == "mean":
        values = (1.0 / deg[row]).astype(np.float32)
    else:
        dinv = 1.0 / np.sqrt(deg.astype(np.float64))  # deg >= 1 (self-loops)
        values = (dinv[row] * dinv[col]).astype(np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(crow),
            torch.from_numpy(np.ascontiguousarray(col)),
            torch.from_numpy(values),
            size=(n, n),
            dtype=torch.float32,
            check_invariants=False,  # built sorted and in range above
        )
