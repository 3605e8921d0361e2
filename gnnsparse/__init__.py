"""gnnsparse: really sparse weight layers for graph neural networks.

Sparse CSR kernels (C++/OpenMP) behind a drop-in ``SparseLinear``, the two
training regimes compared in "Towards Sparsification of Graph Neural
Networks" (Peng et al., ICCD 2022) and an executed-FLOPs counter.

``SparseLinear``, ``sparsify`` and ``sparse_layers`` are loaded on first use, so that the
``gnnsparse`` command can configure OpenMP before torch is imported.
"""

import os as _os

__version__ = "0.1.0"

if _os.environ.get("GNNSPARSE_RETAIN_MEMORY", "").strip():
    try:
        from . import memory as _memory  # noqa: F401  (applies the allocator setting on import)
    except ValueError as _e:  # a bad value: say so, keep glibc's defaults
        import warnings as _warnings

        _warnings.warn(f"{_e}; the allocator setting was not applied", RuntimeWarning, stacklevel=2)

__all__ = ["SparseLinear", "sparsify", "sparse_layers", "set_check_finite", "check_finite", "__version__"]


def __getattr__(name):
    if name in ("SparseLinear", "sparsify", "sparse_layers"):
        from . import nn

        return getattr(nn, name)
    if name in ("set_check_finite", "check_finite"):  # the optional NaN/Inf check (gnnsparse.ops)
        from . import ops

        return getattr(ops, name)
    raise AttributeError(f"module 'gnnsparse' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + ["SparseLinear", "sparsify", "sparse_layers", "set_check_finite", "check_finite"])
