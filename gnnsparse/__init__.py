"""gnnsparse: really sparse weight layers for graph neural networks.

Sparse CSR kernels (C++/OpenMP) behind a drop-in ``SparseLinear``, the two
training regimes compared in "Towards Sparsification of Graph Neural
Networks" (Peng et al., ICCD 2022) and an executed-FLOPs counter.
"""

__version__ = "0.1.0"

from .nn import SparseLinear, sparsify, sparse_layers  # noqa: E402

__all__ = ["SparseLinear", "sparsify", "sparse_layers", "__version__"]
