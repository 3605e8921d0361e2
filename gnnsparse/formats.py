"""Compressed sparse row (CSR) helpers for weight matrices.

A weight ``W`` of shape ``(out_features, in_features)`` is held as three tensors:

* ``crow_indices``: int64 ``[out_features + 1]``, monotone, ``crow[0] == 0``,
  ``crow[-1] == nnz``;
* ``col_indices``: int64 ``[nnz]``, sorted ascending and unique within each row;
* ``values``: float ``[nnz]``.

Everything here is vectorized torch code (no Python loop over rows). These helpers
build and take apart structures; the matmul kernels live in ``gnnsparse.ops``.

Block-sparse (BSR) weights with square ``b x b`` blocks (``b`` divides both dims) are held as

* ``crow_indices``: int64 ``[out_features / b + 1]`` (CSR of the block matrix);
* ``col_indices``: int64 ``[nnzb]``, block-column indices, sorted and unique within a block row;
* ``values``: float ``[nnzb, b, b]``, ``values[k, i, j] = W[br * b + i, col[k] * b + j]``.

See :func:`dense_to_bsr`, :func:`bsr_to_dense`, :func:`block_norms`,
:func:`block_mask_to_bsr` and :func:`validate_bsr`.
"""

from __future__ import annotations

import torch

__all__ = [
    "nnz_for_density",
    "mask_to_csr",
    "csr_to_dense",
    "csr_to_mask",
    "csr_row_indices",
    "csr_keys",
    "keys_to_csr",
    "topk_mask",
    "random_mask",
    "random_keys",
    "validate_csr",
    "block_keys_to_keys",
    "block_reduce",
    "block_any",
    "block_norms",
    "expand_block_mask",
    "first_partial_block",
    "csr_to_bsr_structure",
    "dense_to_bsr",
    "bsr_to_dense",
    "block_mask_to_bsr",
    "validate_bsr",
]


def nnz_for_density(numel: int, density: float) -> int:
    """Number of stored entries for ``density`` of ``numel`` weights, rounded half up.

    Args:
        numel: number of weights (``out * in``).
        density: fraction of stored weights, in ``[0, 1]``.

    Returns:
        int in ``[0, numel]``; at least 1 when ``density > 0`` and ``numel > 0``
        (a layer never silently loses every weight).
    """
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    k = int(numel * density + 0.5)
    if density > 0 and numel > 0:
        k = max(k, 1)
    return min(k, numel)


def csr_keys(crow_indices: torch.Tensor, col_indices: torch.Tensor, in_features: int) -> torch.Tensor:
    """Linear position ``row * in_features + col`` of every stored entry (int64 ``[nnz]``).

    Keys are ascending because CSR rows are ordered and columns sorted within rows.
    """
    rows = csr_row_indices(crow_indices)
    return rows * in_features + col_indices


def keys_to_csr(keys: torch.Tensor, out_features: int, in_features: int):
    """Build ``(crow_indices, col_indices)`` from sorted unique linear positions.

    Args:
        keys: int64 ``[nnz]`` ascending, each in ``[0, out*in)``.
    """
    keys = keys.to(torch.int64)
    rows = torch.div(keys, in_features, rounding_mode="floor") if in_features > 0 else keys
    cols = keys - rows * in_features
    counts = torch.bincount(rows, minlength=out_features) if keys.numel() else torch.zeros(
        out_features, dtype=torch.int64, device=keys.device)
    crow = torch.zeros(out_features + 1, dtype=torch.int64, device=keys.device)
    crow[1:] = torch.cumsum(counts, 0)
    return crow, cols.contiguous()


def csr_row_indices(crow_indices: torch.Tensor) -> torch.Tensor:
    """Row index of every stored entry: int64 ``[nnz]`` expanded from ``crow_indices``."""
    counts = crow_indices[1:] - crow_indices[:-1]
    return torch.repeat_interleave(torch.arange(counts.numel(), device=crow_indices.device), counts)


def mask_to_csr(mask: torch.Tensor, dense: torch.Tensor | None = None):
    """Convert a boolean mask ``[out, in]`` (and optionally dense values) to CSR.

    Args:
        mask: bool ``[out, in]``; True marks a stored position (its value may be 0.0).
        dense: optional float ``[out, in]`` whose entries at ``mask`` become the values.

    Returns:
        ``(crow_indices, col_indices, values)``; ``values`` is None when ``dense`` is None.
    """
    if mask.dim() != 2:
        raise ValueError(f"mask must be 2-D [out, in], got shape {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be torch.bool, got {mask.dtype}")
    out_f, in_f = mask.shape
    keys = torch.nonzero(mask.reshape(-1), as_tuple=False).reshape(-1)
    crow, col = keys_to_csr(keys, out_f, in_f)
    values = None
    if dense is not None:
        if dense.shape != mask.shape:
            raise ValueError(f"dense shape {tuple(dense.shape)} != mask shape {tuple(mask.shape)}")
        values = dense.reshape(-1)[keys].clone()
    return crow, col, values


def csr_to_mask(crow_indices, col_indices, shape) -> torch.Tensor:
    """Boolean ``[out, in]`` mask of the stored positions."""
    out_f, in_f = shape
    mask = torch.zeros(out_f * in_f, dtype=torch.bool, device=col_indices.device)
    mask[csr_keys(crow_indices, col_indices, in_f)] = True
    return mask.reshape(out_f, in_f)


def csr_to_dense(crow_indices, col_indices, values, shape) -> torch.Tensor:
    """Dense ``[out, in]`` tensor equal to the CSR matrix (differentiable w.r.t. ``values``).

    Duplicate positions are summed, as in the kernels (``gnnsparse.ops``) and the reference.
    """
    out_f, in_f = shape
    keys = csr_keys(crow_indices, col_indices, in_f)
    dense = values.new_zeros(out_f * in_f)
    dense = dense.index_put((keys,), values, accumulate=True)
    return dense.reshape(out_f, in_f)


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` largest entries of ``scores`` (same shape).

    Ties are broken by position (lower linear index wins), so the result is
    deterministic. ``k`` is clamped to ``[0, numel]``.
    """
    flat = scores.reshape(-1)
    k = max(0, min(int(k), flat.numel()))
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if k:
        # stable descending sort: equal scores keep their index order
        order = torch.sort(flat, descending=True, stable=True).indices[:k]
        mask[order] = True
    return mask.reshape(scores.shape)


def random_keys(numel: int, k: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """``k`` distinct positions in ``[0, numel)``, uniformly at random, sorted (int64 ``[k]``).

    Memory and time scale with ``k`` when ``k`` is a small fraction of ``numel`` (rejection sampling
    in rounds); otherwise a permutation of all positions is drawn.
    """
    k = max(0, min(int(k), int(numel)))
    if k == 0:
        return torch.zeros(0, dtype=torch.int64, device=device)
    if 4 * k >= numel:
        return torch.sort(torch.randperm(numel, generator=generator, device=device)[:k]).values
    keys = torch.zeros(0, dtype=torch.int64, device=device)
    while keys.numel() < k:
        draw = torch.randint(0, numel, (2 * (k - keys.numel()) + 16,), generator=generator, device=device)
        keys = torch.unique(torch.cat([keys, draw]))  # sorted, distinct
    # keep a uniformly random subset of exactly k among the distinct candidates
    pick = torch.randperm(keys.numel(), generator=generator, device=device)[:k]
    return torch.sort(keys[pick]).values


def random_mask(shape, k: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Boolean mask with exactly ``k`` True entries at uniformly random positions."""
    out_f, in_f = shape
    numel = out_f * in_f
    k = max(0, min(int(k), numel))
    flat = torch.zeros(numel, dtype=torch.bool, device=device)
    if k:
        flat[torch.randperm(numel, generator=generator, device=device)[:k]] = True
    return flat.reshape(out_f, in_f)


def validate_csr(crow_indices, col_indices, values, shape, name: str = "weight", check_sorted: bool = True) -> None:
    """Raise ``ValueError`` naming the problem if the CSR triple is not a valid ``shape`` matrix.

    Checks dtypes (int64 indices), devices (no meta), dimensions, lengths, ``crow`` bounds and
    monotonicity, column range and (``check_sorted``) sorted unique columns within each row.
    ``values`` may be None (structure only).
    """
    out_f, in_f = shape
    for label, t in (("crow_indices", crow_indices), ("col_indices", col_indices), ("values", values)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise ValueError(f"{name}: {label} must be a tensor, got {type(t).__name__}")
        if t is not None and t.device.type == "meta":
            raise ValueError(f"{name}: {label} is a meta tensor (no data to check or compute with)")
        if t is not None and t.dim() != 1:
            raise ValueError(f"{name}: {label} must be 1-D, got shape {tuple(t.shape)}")
    if crow_indices.dtype != torch.int64 or col_indices.dtype != torch.int64:
        raise ValueError(f"{name}: crow_indices/col_indices must be int64, got "
                         f"{crow_indices.dtype}/{col_indices.dtype}")
    if crow_indices.dim() != 1 or crow_indices.numel() != out_f + 1:
        raise ValueError(f"{name}: crow_indices must have shape [{out_f + 1}], got {tuple(crow_indices.shape)}")
    nnz = col_indices.numel()
    if values is not None and (values.dim() != 1 or values.numel() != nnz):
        raise ValueError(f"{name}: values must have shape [{nnz}], got {tuple(values.shape)}")
    if int(crow_indices[0]) != 0 or int(crow_indices[-1]) != nnz:
        raise ValueError(f"{name}: crow_indices must start at 0 and end at nnz={nnz}, got "
                         f"{int(crow_indices[0])}..{int(crow_indices[-1])}")
    if bool((crow_indices < 0).any()) or bool((crow_indices > nnz).any()):
        r = int(torch.nonzero((crow_indices < 0) | (crow_indices > nnz))[0])
        raise ValueError(f"{name}: crow_indices[{r}]={int(crow_indices[r])} outside [0, nnz={nnz}]")
    diffs = crow_indices[1:] - crow_indices[:-1]
    if bool((diffs < 0).any()):
        r = int(torch.nonzero(diffs < 0)[0])
        raise ValueError(f"{name}: crow_indices decreases at row {r}")
    if nnz:
        if bool((col_indices < 0).any()) or bool((col_indices >= in_f).any()):
            bad = int(torch.nonzero((col_indices < 0) | (col_indices >= in_f))[0])
            raise ValueError(f"{name}: col_indices[{bad}]={int(col_indices[bad])} outside [0, {in_f})")
        if not check_sorted:
            return
        keys = csr_keys(crow_indices, col_indices, in_f)
        if bool((keys[1:] <= keys[:-1]).any()):
            bad = int(torch.nonzero(keys[1:] <= keys[:-1])[0]) + 1
            raise ValueError(f"{name}: columns not sorted/unique within a row at entry {bad}")


# ---------------------------------------------------------------------------------------------
# Block structure (BSR layout of SparseLinear: whole b x b blocks are stored or not).
def block_keys_to_keys(block_keys: torch.Tensor, grid_cols: int, blocksize: int) -> torch.Tensor:
    """Element keys (``row * in + col``, sorted) of every entry of the given blocks.

    Args:
        block_keys: int64 ``[nnzb]``, block positions ``block_row * grid_cols + block_col``.
        grid_cols: blocks per row (``in_features / b``).
        blocksize: ``b``.

    Returns:
        int64 ``[nnzb * b * b]``, ascending.
    """
    b = int(blocksize)
    in_f = grid_cols * b
    br, bc = block_keys // grid_cols, block_keys % grid_cols
    i = torch.arange(b, device=block_keys.device)
    rows = (br[:, None, None] * b + i[None, :, None]).expand(-1, b, b)
    cols = (bc[:, None, None] * b + i[None, None, :]).expand(-1, b, b)
    return torch.sort((rows * in_f + cols).reshape(-1)).values


def block_reduce(t: torch.Tensor, blocksize: int, op: str = "sum") -> torch.Tensor:
    """Reduce each ``b × b`` block of ``t [out, in]`` to one entry: ``[out / b, in / b]``.

    ``op``: ``"sum"``, ``"any"`` (bool) or ``"all"`` (bool). Raises ValueError when ``b`` does not
    divide both dimensions.
    """
    b = int(blocksize)
    out_f, in_f = t.shape
    if b < 1 or out_f % b or in_f % b:
        raise ValueError(f"blocksize {b} must divide both dimensions of a {tuple(t.shape)} matrix")
    v = t.reshape(out_f // b, b, in_f // b, b)
    if op == "sum":
        return v.sum(dim=(1, 3))
    if op == "any":
        return v.any(dim=3).any(dim=1)
    if op == "all":
        return v.all(dim=3).all(dim=1)
    raise ValueError(f"op must be 'sum', 'any' or 'all', got {op!r}")


def block_any(mask: torch.Tensor, blocksize: int) -> torch.Tensor:
    """Bool ``[out / b, in / b]``: blocks of ``mask [out, in]`` with any stored entry."""
    return block_reduce(mask, blocksize, "any")


def expand_block_mask(block_mask: torch.Tensor, blocksize: int) -> torch.Tensor:
    """Element mask ``[R * b, C * b]`` of a block mask ``[R, C]`` (each block repeated b × b)."""
    b = int(blocksize)
    return block_mask.repeat_interleave(b, dim=0).repeat_interleave(b, dim=1)


def first_partial_block(mask: torch.Tensor, blocksize: int):
    """``(block_row, block_col)`` of the first block of ``mask`` that is partly set, or None when
    every block is all-stored or all-empty (the mask can be stored in BSR without padding)."""
    partial = block_reduce(mask, blocksize, "any") & ~block_reduce(mask, blocksize, "all")
    if not bool(partial.any()):
        return None
    r, c = partial.nonzero()[0].tolist()
    return r, c


def csr_to_bsr_structure(crow_indices: torch.Tensor, col_indices: torch.Tensor, shape, blocksize: int):
    """BSR structure of a block-aligned CSR matrix (every ``b × b`` block fully stored or empty).

    Args:
        crow_indices, col_indices: the element-level CSR of ``W [out, in]`` (sorted columns).
        shape: ``(out, in)``, both divisible by ``b``.
        blocksize: ``b``.

    Returns:
        ``(bcrow, bcol, perm)``: int64 ``[out / b + 1]``, ``[nnzb]`` (block columns) and ``[nnz]``
        such that ``values[perm].view(nnzb, b, b)[k, i, j]`` is ``W[br * b + i, bcol[k] * b + j]``
        for block ``k`` in block row ``br``.

    Raises:
        ValueError: the structure is not block-aligned.
    """
    b = int(blocksize)
    out_f, in_f = shape
    rows = csr_row_indices(crow_indices)
    cols = col_indices
    grid_c = in_f // b
    bkey = (rows // b) * grid_c + cols // b
    within = (rows % b) * b + cols % b
    perm = torch.argsort(bkey * (b * b) + within)
    nnz = cols.numel()
    if nnz % (b * b):
        raise ValueError(f"structure is not block-aligned for blocksize {b}: nnz={nnz} is not a multiple of {b * b}")
    sorted_keys = bkey[perm]
    blocks = sorted_keys.view(-1, b * b)
    if blocks.numel() and not bool((blocks == blocks[:, :1]).all()) or \
            not torch.equal(within[perm].view(-1, b * b),
                            torch.arange(b * b, device=cols.device).expand(nnz // (b * b), b * b)):
        raise ValueError(f"structure is not block-aligned for blocksize {b} (a block is partly stored)")
    block_ids = blocks[:, 0] if blocks.numel() else sorted_keys[:0]
    bcol = block_ids % grid_c
    counts = torch.bincount(block_ids // grid_c, minlength=out_f // b)
    bcrow = torch.zeros(out_f // b + 1, dtype=torch.int64, device=cols.device)
    bcrow[1:] = torch.cumsum(counts, 0)
    return bcrow, bcol, perm
# Block-sparse (BSR) helpers
def _check_blocks(shape, blocksize: int, name: str = "weight"):
    """Number of block rows/columns of ``shape`` for ``blocksize`` (ValueError if it does not divide)."""
    out_f, in_f = (int(d) for d in shape)
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize < 1:
        raise ValueError(f"{name}: blocksize must be a positive int, got {blocksize!r}")
    if out_f % blocksize or in_f % blocksize:
        raise ValueError(f"{name}: shape ({out_f}, {in_f}) is not divisible by blocksize {blocksize}")
    return out_f // blocksize, in_f // blocksize


def _blocks_view(dense: torch.Tensor, blocksize: int) -> torch.Tensor:
    """``[out/b, in/b, b, b]`` view-like tensor of the blocks of ``dense [out, in]``."""
    nbr, nbc = _check_blocks(dense.shape, blocksize)
    b = blocksize
    return dense.reshape(nbr, b, nbc, b).permute(0, 2, 1, 3)


def block_norms(dense: torch.Tensor, blocksize: int) -> torch.Tensor:
    """Frobenius norm of every ``b x b`` block of ``dense`` (for block magnitude pruning).

    Args:
        dense: float ``[out, in]``; ``blocksize`` must divide both dims.
        blocksize: ``b >= 1``.

    Returns:
        ``[out / b, in / b]``, dtype of ``dense``.

    Raises:
        ValueError: ``dense`` is not 2-D, or ``blocksize`` is not a positive int dividing both dims.
    """
    if dense.dim() != 2:
        raise ValueError(f"dense must be 2-D [out, in], got shape {tuple(dense.shape)}")
    return torch.linalg.vector_norm(_blocks_view(dense, blocksize), dim=(2, 3))


def block_mask_to_bsr(block_mask: torch.Tensor, dense: torch.Tensor | None, blocksize: int):
    """BSR of the blocks marked in ``block_mask``, values taken from ``dense``.

    Args:
        block_mask: bool ``[out / b, in / b]``; True keeps a block (even if all its values are 0).
        dense: float ``[out, in]`` with ``out = block_mask.shape[0] * b`` (likewise ``in``), or
            None (structure only).
        blocksize: ``b >= 1``.

    Returns:
        ``(crow_indices int64 [out/b + 1], col_indices int64 [nnzb], values [nnzb, b, b])``
        (block columns sorted within each block row); ``values`` is None when ``dense`` is None.

    Raises:
        ValueError: mask not 2-D, ``dense`` of the wrong shape, bad ``blocksize``.
        TypeError: mask not bool.
    """
    if block_mask.dim() != 2:
        raise ValueError(f"block_mask must be 2-D [out/b, in/b], got shape {tuple(block_mask.shape)}")
    if block_mask.dtype != torch.bool:
        raise TypeError(f"block_mask must be torch.bool, got {block_mask.dtype}")
    nbr, nbc = block_mask.shape
    _check_blocks((nbr * blocksize, nbc * blocksize), blocksize)
    keys = torch.nonzero(block_mask.reshape(-1), as_tuple=False).reshape(-1)
    crow, col = keys_to_csr(keys, nbr, nbc)
    values = None
    if dense is not None:
        if tuple(dense.shape) != (nbr * blocksize, nbc * blocksize):
            raise ValueError(f"dense shape {tuple(dense.shape)} != block_mask shape {tuple(block_mask.shape)} "
                             f"x blocksize {blocksize}")
        values = _blocks_view(dense, blocksize).reshape(nbr * nbc, blocksize, blocksize)[keys].contiguous()
    return crow, col, values


def dense_to_bsr(dense: torch.Tensor, blocksize: int, mask: torch.Tensor | None = None):
    """Convert a dense ``[out, in]`` matrix to BSR with ``b x b`` blocks.

    Args:
        dense: float ``[out, in]``; ``blocksize`` must divide both dims.
        blocksize: ``b >= 1``.
        mask: optional bool block mask ``[out / b, in / b]`` of the blocks to store; by default
            every block with a nonzero entry is stored.

    Returns:
        ``(crow_indices, col_indices, values)`` as in :func:`block_mask_to_bsr`.

    Raises:
        ValueError: ``dense`` not 2-D, bad ``blocksize``, mask of the wrong shape.
        TypeError: mask not bool.
    """
    if dense.dim() != 2:
        raise ValueError(f"dense must be 2-D [out, in], got shape {tuple(dense.shape)}")
    nbr, nbc = _check_blocks(dense.shape, blocksize)
    if mask is None:
        mask = (_blocks_view(dense, blocksize) != 0).flatten(2).any(-1)
    elif tuple(mask.shape) != (nbr, nbc):
        raise ValueError(f"mask must have shape ({nbr}, {nbc}) = dense shape / blocksize, got {tuple(mask.shape)}")
    return block_mask_to_bsr(mask, dense, blocksize)


def bsr_to_dense(crow_indices, col_indices, values, shape) -> torch.Tensor:
    """Dense ``[out, in]`` tensor equal to the BSR matrix (differentiable w.r.t. ``values``).

    Args:
        crow_indices: int64 ``[out / b + 1]``; col_indices: int64 ``[nnzb]``;
        values: float ``[nnzb, b, b]``; shape: ``(out, in)``, both divisible by ``b``.

    Duplicate blocks are summed, as in the kernels.

    Raises:
        ValueError: ``values`` not 3-D with square blocks, ``shape`` not divisible by ``b``.
    """
    if values.dim() != 3 or values.shape[1] != values.shape[2]:
        raise ValueError(f"values must be [nnzb, b, b], got shape {tuple(values.shape)}")
    b = int(values.shape[1])
    nbr, nbc = _check_blocks(shape, b)
    keys = csr_keys(crow_indices, col_indices, nbc)
    blocks = values.new_zeros((nbr * nbc, b, b)).index_put((keys,), values, accumulate=True)
    return blocks.reshape(nbr, nbc, b, b).permute(0, 2, 1, 3).reshape(nbr * b, nbc * b)


def validate_bsr(crow_indices, col_indices, values, shape, blocksize: int | None = None,
                 name: str = "weight", check_sorted: bool = True) -> None:
    """Raise ``ValueError`` naming the problem if the BSR triple is not a valid ``shape`` matrix.

    Args:
        crow_indices: int64 ``[out / b + 1]``; col_indices: int64 ``[nnzb]``.
        values: ``[nnzb, b, b]`` or None (structure only; then ``blocksize`` is required).
        shape: ``(out, in)``.
        blocksize: ``b``; taken from ``values`` when None, checked against it otherwise.
        check_sorted: also require sorted unique block columns within each block row.

    Raises:
        ValueError: blocksize missing/invalid or not dividing ``shape``; ``values`` not
            ``[nnzb, b, b]``; any CSR problem of the block structure (see :func:`validate_csr`).
    """
    if values is not None:
        if not isinstance(values, torch.Tensor):
            raise ValueError(f"{name}: values must be a tensor, got {type(values).__name__}")
        if values.device.type == "meta":
            raise ValueError(f"{name}: values is a meta tensor (no data to check or compute with)")
        if values.dim() != 3 or values.shape[1] != values.shape[2]:
            raise ValueError(f"{name}: values must be [nnzb, b, b] (square blocks), got shape "
                             f"{tuple(values.shape)}")
        vb = int(values.shape[1])
        if blocksize is not None and int(blocksize) != vb:
            raise ValueError(f"{name}: blocksize {blocksize} != values block size {vb}")
        blocksize = vb
    if blocksize is None:
        raise ValueError(f"{name}: blocksize is required when values is None")
    nbr, nbc = _check_blocks(shape, int(blocksize), name)
    validate_csr(crow_indices, col_indices, None, (nbr, nbc), name=name, check_sorted=check_sorted)
    if values is not None and values.shape[0] != col_indices.numel():
        raise ValueError(f"{name}: values must have shape [{col_indices.numel()}, {blocksize}, {blocksize}] "
                         f"(nnzb = len(col_indices)), got {tuple(values.shape)}")
