"""``SparseLinear``: a drop-in for ``torch.nn.Linear`` whose weight is stored in CSR.

The layer holds only structure and values; which positions are stored, and when
that changes, is decided by a training regime (``gnnsparse.regimes``), never here.
"""

from __future__ import annotations

import math
import os
import warnings
import weakref
from typing import Callable, Iterable, Mapping

import torch
from torch import nn

from . import formats, ops

__all__ = ["SparseLinear", "sparsify", "sparse_layers", "linear_like", "MIN_SPARSE_NUMEL"]

#: Layers with fewer weights than this stay dense in :func:`sparsify` (e.g. a 128 -> 1 output
#: layer): at such sizes a sparse kernel saves nothing measurable and the target sparsity
#: cannot be represented faithfully. Reported as ``kept dense`` by ``gnnsparse compare``.
MIN_SPARSE_NUMEL = 1024


def _check_sparsity(sparsity: float) -> float:
    import numbers

    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real):
        raise TypeError(f"sparsity must be a float in [0, 1), got {type(sparsity).__name__}")
    sparsity = float(sparsity)
    if not (0.0 <= sparsity < 1.0) or math.isnan(sparsity):
        raise ValueError(f"sparsity must be in [0, 1) (fraction of zero weights), got {sparsity}")
    return sparsity


LAYOUTS = ("csr", "bsr")
EXECUTORS = ("auto", "sparse", "dense")


def _check_layout(layout, blocksize, out_features: int, in_features: int):
    """Validated ``(layout, blocksize)``; blocksize is None for CSR."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(map(repr, LAYOUTS))}, got {layout!r}")
    if layout == "csr":
        if blocksize not in (None, 1):
            raise ValueError(f"blocksize is only used with layout='bsr', got blocksize={blocksize!r}")
        return "csr", None
    import numbers

    if isinstance(blocksize, bool) or not isinstance(blocksize, numbers.Integral) or blocksize < 1:
        raise ValueError(f"layout='bsr' needs an int blocksize >= 1 (4, 8, 16 or 32 are fast), got {blocksize!r}")
    blocksize = int(blocksize)
    if out_features % blocksize or in_features % blocksize:
        raise ValueError(f"layout='bsr': blocksize {blocksize} must divide out_features={out_features} and "
                         f"in_features={in_features}")
    return "bsr", int(blocksize)


def _check_executor(executor):
    """``None``/``"auto"`` (measured choice, :mod:`gnnsparse.chooser`), ``"sparse"`` or ``"dense"``."""
    if executor is None:
        return "auto"
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(map(repr, EXECUTORS))}, got {executor!r}")
    return executor


def _is_inplace(func) -> bool:
    name = getattr(func, "__name__", "")
    if name in ("__setitem__", "copy_", "__iadd__", "__isub__", "__imul__", "__itruediv__"):
        return True
    return name.endswith("_") and not name.endswith("__")


class _DenseWeightView(torch.Tensor):
    """Dense ``[out, in]`` copy of a ``SparseLinear`` weight whose in-place writes go through.

    Reading it behaves like a plain tensor (results are plain tensors), except that views of it
    (``w[0]``, ``w[:, :3]``, ``w.t()``, ``w.data``) stay write-through. An in-place call on it or on
    such a view (``nn.init.*_``, ``.uniform_``, ``w[i, j] = v``, ``copy_``, ``out=w``) is applied to
    the dense copy and then the entries at the layer's *stored* positions are written into
    ``layer.values``; positions outside the sparsity structure are structural zeros and stay zero
    (a sparse layer cannot store them).
    """

    _layer_ref: Callable | None = None
    _root: torch.Tensor | None = None  # the full dense copy (plain tensor) this view aliases
    _orig: torch.Tensor | None = None  # the layer's weight when the view was taken (to find what changed)
    _version: int = -1  # the layer's structure version when the view was taken

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func == torch.Tensor.data.__get__:  # `.data` stays the write-through view
            return args[0]
        # nn.init functions dispatch here with the tensor as a keyword argument
        target = args[0] if args else next(
            (v for v in kwargs.values() if isinstance(v, _DenseWeightView)), None)
        out = kwargs.get("out")
        with torch._C.DisableTorchFunctionSubclass():
            result = func(*args, **kwargs)
        written = [t for t in (target if _is_inplace(func) else None, out) if isinstance(t, _DenseWeightView)]
        for view in written:
            view._write_back()
        if written:
            return written[0] if result is None or result is written[0].as_subclass(torch.Tensor) else result
        # a view of the weight (indexing, transpose, ...) stays write-through
        if isinstance(result, torch.Tensor) and isinstance(target, _DenseWeightView) and _aliases(result, target):
            return target._wrap(result)
        return result

    def _wrap(self, tensor: torch.Tensor) -> "_DenseWeightView":
        view = tensor.as_subclass(_DenseWeightView)
        view._layer_ref, view._root, view._orig, view._version = (self._layer_ref, self._root, self._orig,
                                                                  self._version)
        return view

    def _write_back(self) -> None:
        layer = self._layer_ref() if self._layer_ref is not None else None
        if layer is None:
            raise RuntimeError("the SparseLinear this weight view belongs to no longer exists")
        if layer._structure_version != self._version:
            raise RuntimeError("stale SparseLinear.weight view: the layer's sparsity structure changed after "
                               "the view was taken; read layer.weight again before writing to it")
        # only entries written through the view are stored, so a view taken before an optimizer
        # step does not roll the other weights back
        root = self._root.detach()
        changed = (root != self._orig) & ~(root.isnan() & self._orig.isnan())
        layer._write_dense(root, only=changed)
        self._orig.copy_(root)


def _aliases(a: torch.Tensor, b: torch.Tensor) -> bool:
    try:
        return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() and a.numel() > 0
    except (RuntimeError, NotImplementedError):
        return False


def linear_like(module: nn.Module) -> bool:
    """True for ``torch.nn.Linear`` and PyG's ``torch_geometric.nn.dense.Linear`` (not lazy)."""
    if isinstance(module, nn.Linear):
        return True
    try:
        from torch_geometric.nn.dense.linear import Linear as PygLinear
    except Exception:  # pragma: no cover - PyG is a dependency
        return False
    return isinstance(module, PygLinear)


def _linear_dims(module: nn.Module):
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    in_f, out_f = module.in_channels, module.out_channels
    if in_f is None or in_f < 0:
        raise ValueError("cannot convert a lazy PyG Linear (in_channels=-1); run one forward first")
    return in_f, out_f


class SparseLinear(nn.Module):
    r"""Linear layer ``y = x W^T + b`` with ``W`` stored in CSR and multiplied by sparse kernels.

    A drop-in for :class:`torch.nn.Linear` and PyG's ``Linear``: inputs are ``[*, in_features]``
    (any leading dims, non-contiguous and zero-row inputs accepted), output ``[*, out_features]``.
    Forward runs ``gnnsparse.ops.csr_linear`` (C++/OpenMP CSR SpMM on CPU); the backward computes
    ``dX = dY W`` sparsely and the weight gradient only at stored positions (SDDMM). No dense ``W``
    is formed in training.

    *Sparsity* is structural: ``1 - nnz / (out_features * in_features)``; a stored weight whose
    value is 0.0 still counts as stored.

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.
        bias: learn an additive bias ``[out_features]``.
        sparsity: fraction of zero weights in ``[0, 1)``; ``nnz = round((1 - sparsity) * numel)``
            positions are chosen uniformly at random (``generator``) unless ``mask`` is given.
        mask: optional bool ``[out_features, in_features]`` of stored positions (overrides ``sparsity``).
        backend: ``None`` (auto: by the input's device, or ``GNNSPARSE_BACKEND``), ``"cpu"`` (C++
            kernels), ``"cuda"`` (CUDA kernels), ``"triton"`` (Triton kernels; CPU tensors under
            ``TRITON_INTERPRET=1``) or ``"torch"`` (reference); see
            :func:`gnnsparse.ops.resolve_backend`. The backend in use shows in ``repr``.
        generator: ``torch.Generator`` for the random structure.
        device, dtype: as for ``nn.Linear``: float32 or float64 on every backend; float16 and
            bfloat16 on the ``"cuda"``, ``"triton"`` and ``"torch"`` backends.
        layout: ``"csr"`` (any structure) or ``"bsr"``: whole ``blocksize × blocksize`` blocks are
            stored or not (a random structure draws blocks; a mask must be block-aligned) and the
            forward runs the block-sparse kernel ``gnnsparse.ops.bsr_linear``. Values are kept in
            CSR order either way, so regimes and optimizers see the same ``values`` parameter.
        blocksize: block edge for ``layout="bsr"``; must divide both dimensions (4, 8, 16 and 32
            have fast kernels).
        executor: ``"auto"`` (default; also ``None``): per call, the kernel measured fastest for
            this shape, density, layout, dtype and thread count by :func:`gnnsparse.chooser.choose`
            (cached on disk, so a layer is never slower than dense by our choice; the environment
            variable ``GNNSPARSE_EXECUTOR=dense|sparse`` overrides it); ``"sparse"``: always the
            layout's sparse kernel; ``"dense"``: ``F.linear`` with the dense weight built from
            ``values`` (dense FLOPs). The executor of the last forward is ``last_executor``; the
            measured choice is saved in ``state_dict`` (extra state) and restored with it (it
            applies while the layer's executor is ``"auto"`` and no override is set).

    Attributes:
        values (Parameter): ``[nnz]`` stored weights, row-major (CSR order).
        crow_indices (buffer): int64 ``[out_features + 1]``.
        col_indices (buffer): int64 ``[nnz]``.
        bias (Parameter or None): ``[out_features]``.

    Initialization: values ~ U(-1/sqrt(f), 1/sqrt(f)) with ``f = max(1, density * in_features)``,
    the fan-in each output actually sees (sparse-aware scaling, Evci et al., "Gradient Flow in Sparse
    Neural Networks", AAAI 2022); bias ~ U(-1/sqrt(in), 1/sqrt(in)) as in ``nn.Linear``.

    Raises:
        ValueError: sparsity outside ``[0, 1)``, mask of the wrong shape, negative sizes.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, sparsity: float = 0.9,
                 *, mask: torch.Tensor | None = None, backend: str | None = None,
                 generator: torch.Generator | None = None, device=None, dtype=None,
                 layout: str = "csr", blocksize: int | None = None, executor: str | None = None):
        super().__init__()
        import numbers

        for label, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise TypeError(f"{label} must be an int, got {type(v).__name__} {v!r}")
        if in_features < 0 or out_features < 0:
            raise ValueError(f"in_features and out_features must be >= 0, got {in_features}, {out_features}")
        self._structure_version = 0  # bumped whenever the stored positions change
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.backend = ops.check_backend(backend) if backend is not None else None
        self.layout, self.blocksize = _check_layout(layout, blocksize, self.out_features, self.in_features)
        self.executor = _check_executor(executor)
        self._pinned_choice = None  # an executor restored from a checkpoint
        self._choice = None  # (key, gnnsparse.chooser.Choice) of the last forward
        self.last_executor = None  # "dense", "csr" or "bsr": what the last forward ran
        dtype = dtype or torch.get_default_dtype()
        if dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            raise TypeError(f"SparseLinear supports float32, float64, float16 and bfloat16 values, got {dtype}")
        if mask is None:
            # draw nnz random positions directly: memory scales with nnz, not out * in
            sparsity = _check_sparsity(sparsity)
            b = self.blocksize or 1
            grid = (self.out_features // b, self.in_features // b) if b else (0, 0)
            numel = grid[0] * grid[1]
            keys = formats.random_keys(numel, formats.nnz_for_density(numel, 1.0 - sparsity),
                                       generator=generator, device=device)
            if b > 1:  # random blocks: every entry of a chosen block is stored
                keys = formats.block_keys_to_keys(keys, grid[1], b)
            crow, col = formats.keys_to_csr(keys, self.out_features, self.in_features)
        else:
            self._check_mask(mask)
            mask = mask.to(device=device) if device is not None else mask
            crow, col, _ = formats.mask_to_csr(mask)
        self.register_buffer("crow_indices", crow)
        self.register_buffer("col_indices", col)
        self.values = nn.Parameter(torch.empty(col.numel(), device=crow.device, dtype=dtype))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_features, device=crow.device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(generator=generator)
        if self.layout == "bsr" and self.crow_indices.device.type != "meta":
            self._bsr_structure()

    # ------------------------------------------------------------------ structure
    def _check_mask(self, mask: torch.Tensor) -> None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError("mask must be a torch.bool tensor")
        if tuple(mask.shape) != (self.out_features, self.in_features):
            raise ValueError(f"mask must have shape [{self.out_features}, {self.in_features}] "
                             f"(out_features, in_features), got {tuple(mask.shape)}")
        if self.layout == "bsr":
            bad = formats.first_partial_block(mask, self.blocksize)
            if bad is not None:
                raise ValueError(f"layout='bsr' with blocksize {self.blocksize} stores whole blocks, but block "
                                 f"(row {bad[0]}, col {bad[1]}) of the mask is partly set; use "
                                 f"gnnsparse.formats.expand_block_mask(block_mask, {self.blocksize})")

    def block_mask(self) -> torch.Tensor:
        """Bool ``[out / b, in / b]`` of stored blocks (``b`` = :attr:`blocksize`; 1 for CSR)."""
        return formats.block_any(self.mask(), self.blocksize or 1)

    @property
    def nnz(self) -> int:
        """Number of stored weights."""
        return int(self.col_indices.numel())

    @property
    def numel_dense(self) -> int:
        """Number of weights of the dense equivalent (``out * in``)."""
        return self.out_features * self.in_features

    @property
    def sparsity(self) -> float:
        """Structural sparsity ``1 - nnz / (out * in)`` (0.0 for an empty shape)."""
        n = self.numel_dense
        return 1.0 - self.nnz / n if n else 0.0

    @property
    def density(self) -> float:
        """``1 - sparsity``."""
        return 1.0 - self.sparsity

    def row_indices(self) -> torch.Tensor:
        """Row of each stored weight, int64 ``[nnz]``."""
        return formats.csr_row_indices(self.crow_indices)

    def mask(self) -> torch.Tensor:
        """Bool ``[out, in]`` of stored positions."""
        return formats.csr_to_mask(self.crow_indices, self.col_indices, (self.out_features, self.in_features))

    def set_csr(self, crow_indices: torch.Tensor, col_indices: torch.Tensor, values: torch.Tensor) -> None:
        """Replace the stored structure and values (used by training regimes).

        The ``values`` Parameter object is kept (its ``.data`` is swapped), so an optimizer
        that holds it stays attached; remapping optimizer state is the caller's job. Its
        ``.grad`` is reset to None (it belonged to the old structure). When nnz changes, free
        any graph built with the old values first (e.g. keep ``loss.detach()``, not ``loss``):
        autograd would reject a gradient of the new shape for a graph that still references
        the old accumulator.

        Raises:
            ValueError: the triple is not a valid ``[out, in]`` CSR matrix.
        """
        formats.validate_csr(crow_indices, col_indices, values, (self.out_features, self.in_features))
        if self.layout == "bsr":
            self._check_mask(formats.csr_to_mask(crow_indices, col_indices, (self.out_features, self.in_features)))
        self._structure_version += 1
        self.crow_indices = crow_indices.to(self.crow_indices.device)
        self.col_indices = col_indices.to(self.col_indices.device)
        self.values.data = values.detach().to(self.values.device, self.values.dtype).contiguous()
        self.values.grad = None  # a gradient of the old structure means nothing for the new one
        if self.layout == "bsr":
            self._bsr_structure()  # keep the BSR view current (torch.compile reads it as is)

    def set_mask(self, mask: torch.Tensor, dense: torch.Tensor | None = None) -> None:
        """Store exactly the positions of ``mask`` (bool ``[out, in]``), values from ``dense``.

        Without ``dense``, positions stored before keep their value and new ones start at 0.0.
        """
        self._check_mask(mask)
        if dense is None:
            dense = self.dense_weight().detach()
        crow, col, vals = formats.mask_to_csr(mask.to(self.col_indices.device), dense)
        self.set_csr(crow, col, vals)

    # ------------------------------------------------------------------ parameters
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-initialize values and bias (structure unchanged). Called by PyG convs."""
        fan = max(1.0, self.density * self.in_features)
        bound = 1.0 / math.sqrt(fan)
        with torch.no_grad():
            if self.values.numel():
                self.values.uniform_(-bound, bound, generator=generator)
            if self.bias is not None:
                b = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
                self.bias.uniform_(-b, b, generator=generator)

    def dense_weight(self) -> torch.Tensor:
        """Dense ``[out, in]`` tensor equal to the sparse weight (differentiable w.r.t. ``values``)."""
        return formats.csr_to_dense(self.crow_indices, self.col_indices, self.values,
                                    (self.out_features, self.in_features))

    @property
    def weight(self) -> torch.Tensor:
        """Dense ``[out, in]`` equivalent of the weight (a copy, built on each access).

        Gradients flow to ``values``. In-place writes (e.g. ``nn.init.kaiming_uniform_(layer.weight)``)
        are written through to the stored positions; positions outside the structure stay zero.
        Not used by ``forward``.
        """
        dense = self.dense_weight()
        view = dense.as_subclass(_DenseWeightView)
        view._layer_ref, view._root = weakref.ref(self), dense
        view._orig, view._version = dense.detach().clone(), self._structure_version
        return view

    @weight.setter
    def weight(self, value) -> None:
        if not isinstance(value, torch.Tensor):
            raise TypeError("weight must be a tensor")
        if tuple(value.shape) != (self.out_features, self.in_features):
            raise ValueError(f"weight must have shape [{self.out_features}, {self.in_features}], "
                             f"got {tuple(value.shape)}")
        self._write_dense(value.detach())

    def _write_dense(self, dense: torch.Tensor, only: torch.Tensor | None = None) -> None:
        """Store ``dense[out, in]`` at the stored positions (only where ``only`` is True, if given)."""
        keys = formats.csr_keys(self.crow_indices, self.col_indices, self.in_features)
        new = dense.reshape(-1).to(self.values.device, self.values.dtype)[keys]
        with torch.no_grad():
            if only is None:
                self.values.copy_(new)
            else:
                sel = only.reshape(-1).to(self.values.device)[keys]
                self.values[sel] = new[sel]

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_dense(cls, linear: nn.Module, sparsity: float | None = None, mask: torch.Tensor | None = None,
                   backend: str | None = None, *, layout: str = "csr", blocksize: int | None = None,
                   executor: str | None = None) -> "SparseLinear":
        """Build a ``SparseLinear`` from a dense ``nn.Linear`` or PyG ``Linear``.

        Args:
            linear: the dense layer (weight ``[out, in]``).
            sparsity: keep the ``round((1 - sparsity) * numel)`` largest-magnitude weights
                (ties broken by position); with ``layout="bsr"`` the blocks of largest Frobenius
                norm (block magnitude pruning), ``round((1 - sparsity) * numel / b²)`` of them.
            mask: bool ``[out, in]`` of positions to keep (overrides ``sparsity``); block-aligned
                for ``layout="bsr"``.
            With neither, every nonzero weight is kept (for BSR: every block with a nonzero).
            layout, blocksize, executor: as for the constructor.

        Raises:
            ValueError: bad sparsity or mask shape; TypeError: not a linear layer.
        """
        if not linear_like(linear):
            raise TypeError(f"from_dense expects nn.Linear or torch_geometric Linear, got {type(linear).__name__}")
        in_f, out_f = _linear_dims(linear)
        w = linear.weight.detach()
        layout, blocksize = _check_layout(layout, blocksize, out_f, in_f)
        b = blocksize or 1
        if mask is None:
            if sparsity is None:
                mask = w != 0
                if b > 1:
                    mask = formats.expand_block_mask(formats.block_any(mask, b), b)
            else:
                s = _check_sparsity(sparsity)
                if b > 1:
                    norms = formats.block_norms(w, b)
                    mask = formats.expand_block_mask(
                        formats.topk_mask(norms, formats.nnz_for_density(norms.numel(), 1.0 - s)), b)
                else:
                    mask = formats.topk_mask(w.abs(), formats.nnz_for_density(w.numel(), 1.0 - s))
        layer = cls(in_f, out_f, bias=linear.bias is not None, mask=mask.to(w.device), backend=backend,
                    device=w.device, dtype=w.dtype, layout=layout, blocksize=blocksize, executor=executor)
        crow, col, vals = formats.mask_to_csr(mask.to(w.device), w)
        layer.set_csr(crow, col, vals)
        if linear.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(linear.bias.detach())
        return layer

    def to_dense(self) -> nn.Linear:
        """An ``nn.Linear`` with the same weights (zeros at unstored positions)."""
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.values.device, dtype=self.values.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.dense_weight())
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[*, in_features]`` float (same dtype as values) -> ``[*, out_features]``.

        Raises:
            TypeError: ``x`` is not a tensor.
            ValueError: ``x`` is not at least 1-D or its last dimension is not ``in_features``;
                with the NaN/Inf check on (:func:`gnnsparse.ops.set_check_finite`), a non-finite
                entry of ``x``, ``values`` or ``bias``.
            RuntimeError: ``x`` on another device or of another dtype than the layer (outside
                autocast).
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"SparseLinear expects a torch.Tensor input, got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"SparseLinear expects input [*, {self.in_features}], got shape {tuple(x.shape)}")
        if x.device != self.values.device:
            raise RuntimeError(f"SparseLinear: all tensors must be on one device, got input on {x.device} and the "
                               f"layer's values on {self.values.device} (move one with .to())")
        if x.dtype != self.values.dtype and not torch.is_autocast_enabled(x.device.type):
            raise RuntimeError(f"SparseLinear: expected input of dtype {self.values.dtype} (the layer's dtype), got "
                               f"{x.dtype}; convert the input or the layer with .to(dtype)")
        executor = self._resolve_executor(x)
        self.last_executor = executor
        if executor == "dense":
            ops._raise_if_not_finite("SparseLinear", x=x, values=self.values, bias=self.bias)
            keys = self._dense_keys()
            w = self.values.new_zeros(self.numel_dense).index_put((keys,), self.values)
            return nn.functional.linear(x, w.view(self.out_features, self.in_features), self.bias)
        if executor == "bsr":
            bcrow, bcol, perm = self._bsr_structure()
            b = self.blocksize
            return ops.bsr_linear(x, bcrow, bcol, self.values[perm].view(-1, b, b), self.bias,
                                  self.out_features, backend=self.backend)
        return ops.csr_linear(x, self.crow_indices, self.col_indices, self.values, self.bias,
                              self.out_features, backend=self.backend,
                              transpose=self._cached_transpose(x))

    # ------------------------------------------------------------------ execution choice
    def _structure_key(self):
        crow, col = self.crow_indices, self.col_indices
        return (self._structure_version, crow.data_ptr(), crow._version, col.data_ptr(), col._version,
                col.numel())

    def choose_executor(self) -> str:
        """Resolve the executor for CPU inputs now (runs the chooser's measurement if it is not
        cached), so that it does not happen inside a timed or FLOP-counted first step. Returns
        ``"dense"``, ``"csr"`` or ``"bsr"``."""
        return self._resolve_executor(torch.empty(0, self.in_features, dtype=self.values.dtype,
                                                  device=self.values.device))

    def _resolve_executor(self, x: torch.Tensor) -> str:
        """``"dense"``, ``"csr"`` or ``"bsr"`` for this call (see :attr:`executor`)."""
        sparse = self.layout
        if (self.executor == "sparse" or torch.compiler.is_compiling()
                or ops.resolve_backend(self.backend, x.device) != "cpu"):
            return sparse
        if self.executor == "dense":
            return "dense"
        if self.values.dtype not in (torch.float32, torch.float64):
            return sparse  # half dtypes on "cpu": the op says which backends take them
        from . import chooser

        env = os.environ.get("GNNSPARSE_EXECUTOR", "").strip() or "auto"
        forced = chooser.get_override() or (env if env in ("sparse", "dense") else None)
        if forced is not None:  # overrides win over a measured or restored choice
            return sparse if forced == "sparse" else "dense"
        if self._pinned_choice is not None:
            return self._pinned_choice  # restored from a checkpoint
        key = (self.nnz, torch.get_num_threads(), self.values.dtype, env, chooser.get_override())
        if self._choice is None or self._choice[0] != key:
            b = self.blocksize or 1
            numel_units = self.numel_dense // (b * b) if b else 0
            density = (self.nnz / (b * b)) / numel_units if numel_units else 0.0
            if self.nnz == 0 or self.numel_dense == 0:
                return sparse
            from torch.utils._python_dispatch import _disable_current_modes

            with _disable_current_modes():  # the measurement is not part of a FLOP count or trace
                choice = chooser.choose(self.out_features, self.in_features, max(density, 1e-3),
                                        layout=self.layout, blocksize=self.blocksize, dtype=self.values.dtype)
            self._choice = (key, choice)
        return self._choice[1].executor

    @property
    def choice(self):
        """The :class:`gnnsparse.chooser.Choice` behind the last forward (None before the first
        forward, with ``executor="sparse"``/``"dense"``, or when restored from a checkpoint)."""
        return None if self._choice is None else self._choice[1]

    def _dense_keys(self) -> torch.Tensor:
        """Flat positions ``row * in + col`` of the stored weights (int64 ``[nnz]``), cached per
        structure (the dense executor scatters ``values`` there)."""
        key = self._structure_key()
        cache = getattr(self, "_keys_cache", None)
        if cache is None or cache[0] != key:
            cache = (key, formats.csr_keys(self.crow_indices, self.col_indices, self.in_features))
            self._keys_cache = cache
        return cache[1]

    def _bsr_structure(self):
        """``(block crow [out/b + 1], block col [nnzb], perm [nnz])`` of the current structure:
        ``values[perm].view(nnzb, b, b)`` are the BSR blocks. Cached per structure."""
        cache = getattr(self, "_bsr_cache", None)
        if torch.compiler.is_compiling() and cache is not None:
            return cache[1]  # kept current eagerly (set_csr, load_state_dict, __init__)
        if self.crow_indices.device.type == "meta":
            raise ValueError("SparseLinear(layout='bsr'): the layer is on the meta device (no structure to "
                             "compute with); move it to a real device first")
        key = self._structure_key()
        if cache is None or cache[0] != key:
            cache = (key, formats.csr_to_bsr_structure(self.crow_indices, self.col_indices,
                                                       (self.out_features, self.in_features), self.blocksize))
            self._bsr_cache = cache
        return cache[1]

    def get_extra_state(self):
        """Layout, block size and executor choice, saved in checkpoints (``state_dict``)."""
        chosen = self._pinned_choice or (self._choice[1].executor if self._choice is not None else None)
        return {"layout": self.layout, "blocksize": self.blocksize, "executor": self.executor,
                "chosen_executor": chosen}

    def set_extra_state(self, state) -> None:
        if not isinstance(state, dict):
            raise ValueError(f"SparseLinear extra state must be a dict, got {type(state).__name__}")
        layout, blocksize = _check_layout(state.get("layout", "csr"), state.get("blocksize"),
                                          self.out_features, self.in_features)
        if (layout, blocksize) != (self.layout, self.blocksize):
            raise ValueError(f"checkpoint layer has layout={layout!r}, blocksize={blocksize} but this layer has "
                             f"layout={self.layout!r}, blocksize={self.blocksize}")
        _check_executor(state.get("executor"))  # validated; the layer keeps its own executor mode
        chosen = state.get("chosen_executor")
        if chosen not in (None, "dense", self.layout):
            raise ValueError(f"checkpoint executor {chosen!r} is not 'dense' or {self.layout!r}")
        self._pinned_choice = chosen

    def _cached_transpose(self, x: torch.Tensor):
        """``(t_crow, t_col, t_perm)`` of the current structure when this call's backward will
        need ``dX`` on a kernel backend (``cpu``, ``cuda``, ``triton``), else None. Rebuilt (in C++) only when the structure
        changed: ``set_csr``/``set_mask``/``load_state_dict`` or an in-place write to the index
        buffers (tracked through the tensors' version counters)."""
        if (not torch.is_grad_enabled() or not x.requires_grad or torch.compiler.is_compiling()
                or ops.resolve_backend(self.backend, x.device) == "torch"):
            return None
        crow, col = self.crow_indices, self.col_indices
        key = self._structure_key()
        cache = getattr(self, "_transpose_cache", None)
        if cache is None or cache[0] != key:
            cache = (key, ops.csr_transpose(crow, col, self.in_features))
            self._transpose_cache = cache
        return cache[1]

    def extra_repr(self) -> str:
        try:
            backend = self.backend or ops.resolve_backend(None, self.values.device)
        except ValueError:  # a bad GNNSPARSE_BACKEND: the forward raises, the repr says so
            backend = f"invalid GNNSPARSE_BACKEND={os.environ.get('GNNSPARSE_BACKEND')!r}"
        layout = self.layout if self.layout == "csr" else f"bsr, blocksize={self.blocksize}"
        chosen = self._pinned_choice or (self._choice[1].executor if self._choice is not None else None)
        ex = self.executor if chosen is None else f"{self.executor} -> {chosen}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, sparsity={self.sparsity:.4f}, nnz={self.nnz}, "
                f"layout={layout}, backend={backend}, executor={ex}")

    # ------------------------------------------------------------------ state dict
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # The structure may differ in nnz from this instance: adopt the incoming one exactly.
        crow = state_dict.get(prefix + "crow_indices")
        col = state_dict.get(prefix + "col_indices")
        vals = state_dict.get(prefix + "values")
        if crow is not None and col is not None and vals is not None:
            try:
                formats.validate_csr(crow, col, vals, (self.out_features, self.in_features),
                                     name=prefix + "weight")
                extra = state_dict.get(prefix + "_extra_state")
                if isinstance(extra, dict):  # refuse a layout mismatch before changing anything
                    layout, blocksize = _check_layout(extra.get("layout", "csr"), extra.get("blocksize"),
                                                      self.out_features, self.in_features)
                    if (layout, blocksize) != (self.layout, self.blocksize):
                        raise ValueError(f"{prefix}weight: checkpoint layer has layout={layout!r}, "
                                         f"blocksize={blocksize} but this layer has layout={self.layout!r}, "
                                         f"blocksize={self.blocksize}")
                if self.layout == "bsr":
                    mask = formats.csr_to_mask(crow, col, (self.out_features, self.in_features))
                    bad = formats.first_partial_block(mask, self.blocksize)
                    if bad is not None:
                        raise ValueError(f"{prefix}weight: the checkpoint structure is not block-aligned for "
                                         f"blocksize {self.blocksize} (block row {bad[0]}, col {bad[1]})")
            except ValueError as e:
                error_msgs.append(str(e))
                return
            self._structure_version += 1
            self.crow_indices = torch.empty_like(crow, device=self.crow_indices.device)
            self.col_indices = torch.empty_like(col, device=self.col_indices.device)
            self.values.data = torch.empty_like(vals, device=self.values.device, dtype=self.values.dtype)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if self.layout == "bsr" and not error_msgs:
            self._bsr_structure()


def sparse_layers(model: nn.Module) -> dict[str, SparseLinear]:
    """``{qualified name: SparseLinear}`` for every sparse layer in ``model``."""
    return {n: m for n, m in model.named_modules() if isinstance(m, SparseLinear)}


def _matches(name: str, patterns: Iterable[str] | None) -> bool:
    import fnmatch
    return any(fnmatch.fnmatchcase(name, p) or name == p for p in patterns or ())


def sparsify(model: nn.Module, sparsity: float | Mapping[str, float], include: Iterable[str] | None = None,
             exclude: Iterable[str] | None = None, *, masks: Mapping[str, torch.Tensor] | None = None,
             init: str = "magnitude", min_numel: int = MIN_SPARSE_NUMEL, backend: str | None = None,
             generator: torch.Generator | None = None, layout: str = "csr", blocksize: int | None = None,
             executor: str | None = None) -> dict[str, SparseLinear]:
    """Replace the Linear layers of ``model`` by :class:`SparseLinear`, in place.

    Swaps ``torch.nn.Linear`` and PyG ``Linear`` modules anywhere in the tree, including those
    inside PyG convolutions (``SAGEConv.lin_l``/``lin_r``, ``GCNConv.lin``).

    **Build the optimizer after calling this**: the dense weights are replaced by new
    ``values`` parameters, which an optimizer created before would not update.

    Args:
        model: module to modify in place.
        sparsity: one float in ``[0, 1)`` for every layer, or ``{layer name: sparsity}``
            (e.g. from :func:`gnnsparse.regimes.distribution.layer_sparsities`); layers missing
            from the mapping are left dense.
        include / exclude: a ``fnmatch`` pattern or a list of them, on qualified module names
            (``"encoder.*"``); ``include=None`` means every linear layer. A module shared under
            several names is swapped everywhere (it stays shared) if any name is included and none
            excluded.
        masks: optional ``{layer name: bool [out, in]}`` giving the exact structure (overrides sparsity).
        init: ``"magnitude"`` keeps the largest-magnitude dense weights (their values are kept);
            ``"random"`` draws a uniformly random structure and re-initializes the values
            (sparse training from scratch).
        min_numel: with a single float ``sparsity``, layers with fewer weights stay dense (see
            ``MIN_SPARSE_NUMEL``) and a ``UserWarning`` names them; ``min_numel=0`` sparsifies all.
        layout, blocksize: ``"csr"`` (default) or ``"bsr"`` with a block size that divides both
            dimensions of every swapped layer (block magnitude pruning / random blocks); a layer
            whose shape it does not divide stays dense and is named in a ``UserWarning``.
        executor: ``"auto"`` (default: measured choice of dense or sparse kernel per layer, see
            :mod:`gnnsparse.chooser`), ``"sparse"`` or ``"dense"``.

    Returns:
        ``{name: SparseLinear}`` of the layers that were swapped.

    Raises:
        ValueError: sparsity outside ``[0, 1)``, unknown ``init``, a mask of the wrong shape, a name in
            ``sparsity``/``masks`` that is not a linear layer of the model, ``model`` itself a Linear.
        TypeError: ``include``/``exclude`` not strings.
    """
    if init not in ("magnitude", "random"):
        raise ValueError(f"init must be 'magnitude' or 'random', got {init!r}")
    _check_layout(layout, blocksize, 0, 0)
    executor = _check_executor(executor)
    include, exclude = _patterns(include, "include"), _patterns(exclude, "exclude")
    if not isinstance(sparsity, Mapping):
        _check_sparsity(sparsity)
    else:
        for v in sparsity.values():
            _check_sparsity(v)
    masks = masks or {}
    if linear_like(model):
        raise ValueError("sparsify replaces layers inside a model in place and cannot replace the model "
                         "itself; use SparseLinear.from_dense(layer, sparsity=...) for a single layer")
    # every name under which each linear module appears (a module may be shared by several parents)
    names_of: dict[int, list[str]] = {}
    modules: dict[int, nn.Module] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if linear_like(module) and not isinstance(module, SparseLinear):
            names_of.setdefault(id(module), []).append(name)
            modules[id(module)] = module
    all_names = {n for ns in names_of.values() for n in ns}
    for label, given in (("sparsity", sparsity if isinstance(sparsity, Mapping) else {}), ("masks", masks)):
        unknown = sorted(set(given) - all_names)
        if unknown:
            raise ValueError(f"sparsify: {label} names layers that are not linear layers of the model: "
                             f"{', '.join(unknown)} (linear layers: {', '.join(sorted(all_names)) or 'none'})")
    targets, too_small, not_divisible = [], [], []
    for key, names in names_of.items():
        module, name = modules[key], names[0]
        if include is not None and not any(_matches(n, include) for n in names):
            continue
        if exclude is not None and any(_matches(n, exclude) for n in names):
            continue
        in_f, out_f = _linear_dims(module)
        mask_name = next((n for n in names if n in masks), None)
        if mask_name is not None:
            targets.append((names, module, masks[mask_name], None))
            continue
        if isinstance(sparsity, Mapping):
            s_name = next((n for n in names if n in sparsity), None)
            if s_name is None:
                continue
            s = sparsity[s_name]
        else:
            s = sparsity
            if in_f * out_f < min_numel:
                too_small.append(f"{name} ({out_f}x{in_f})")
                continue
        if layout == "bsr" and (in_f % blocksize or out_f % blocksize):
            not_divisible.append(f"{name} ({out_f}x{in_f})")
            continue
        targets.append((names, module, None, s))
    if too_small:
        warnings.warn(f"sparsify: kept dense (fewer than min_numel={min_numel} weights): "
                      f"{', '.join(too_small)}; pass min_numel=0 to sparsify them too", UserWarning,
                      stacklevel=2)
    if not_divisible:
        warnings.warn(f"sparsify: kept dense (blocksize {blocksize} does not divide the shape): "
                      f"{', '.join(not_divisible)}", UserWarning, stacklevel=2)
    swapped = {}
    kw = dict(backend=backend, layout=layout, blocksize=blocksize, executor=executor)
    for names, module, mask, s in targets:
        if mask is not None:
            new = SparseLinear.from_dense(module, mask=mask, **kw)
        elif init == "magnitude":
            new = SparseLinear.from_dense(module, sparsity=s, **kw)
        else:
            in_f, out_f = _linear_dims(module)
            new = SparseLinear(in_f, out_f, bias=module.bias is not None, sparsity=s, generator=generator,
                               device=module.weight.device, dtype=module.weight.dtype, **kw)
        for name in names:  # a shared module stays shared
            _set_submodule(model, name, new)
            swapped[name] = new
    return swapped


def _patterns(value, label):
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{label} must be a pattern string or a list of them, got {type(value).__name__}") from None
    if not all(isinstance(p, str) for p in items):
        raise TypeError(f"{label} patterns must be strings, got {items!r}")
    return items


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
