"""Training regimes compared by the paper: dense train-and-prune and sparse training.

* :mod:`.prune`: magnitude pruning (per-layer or global, one-shot or Zhu & Gupta gradual).
* :mod:`.dst`: dynamic sparse training (RigL, SET) with a fixed nnz.
* :mod:`.distribution`: uniform and ERK per-layer sparsity.

The regimes own masks and schedules; :class:`gnnsparse.SparseLinear` only holds structure and values.
"""

from .distribution import DISTRIBUTIONS, candidate_layers, layer_sparsities
from .dst import GROW_MODES, SCOPES, DynamicSparseTraining, cosine_drop_fraction, remap_optimizer_state
from .prune import PRUNE_SCHEDULES, PRUNING_MODES, MagnitudePruner, cubic_sparsity

__all__ = [
    "DISTRIBUTIONS", "candidate_layers", "layer_sparsities",
    "GROW_MODES", "SCOPES", "DynamicSparseTraining", "cosine_drop_fraction", "remap_optimizer_state",
    "PRUNE_SCHEDULES", "PRUNING_MODES", "MagnitudePruner", "cubic_sparsity",
]
