"""How a global sparsity target is split across layers: uniform or ERK.

ERK (Erdős–Rényi, as used by RigL: Evci et al., "Rigging the Lottery", ICML 2020, and
Mocanu et al. 2018 for SET) gives a linear layer ``[out, in]`` a density proportional to
``(in + out) / (in * out)``, scaled so that the total number of stored weights equals
``(1 - sparsity) * total``. Layers whose density would exceed 1 are made dense and the
scale is re-solved over the rest (RigL's procedure).
"""

from __future__ import annotations

from typing import Mapping

import torch.nn as nn

__all__ = ["layer_sparsities", "candidate_layers", "DISTRIBUTIONS"]

DISTRIBUTIONS = ("uniform", "erk")


def candidate_layers(model: nn.Module, min_numel: int) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Linear layers of ``model`` that can be sparsified.

    Two documented rules keep a layer dense: fewer than ``min_numel`` weights, or being named in
    the model's ``dense_layers`` attribute (its output layer: a classifier with one or a few
    weights per class cannot keep the target sparsity and still separate the classes — at 99 %
    a 128 -> 42 classifier would keep 54 weights, about one per class).

    Returns:
        ``({name: (out_features, in_features)}, {kept-dense name: reason})``.
    """
    from ..nn import SparseLinear, linear_like, _linear_dims

    by_design = set(getattr(model, "dense_layers", ()))
    shapes, kept = {}, {}
    for name, m in model.named_modules():
        if isinstance(m, SparseLinear):
            shapes[name] = (m.out_features, m.in_features)
        elif linear_like(m):
            in_f, out_f = _linear_dims(m)
            if name in by_design:
                kept[name] = "output layer"
            elif in_f * out_f < min_numel:
                kept[name] = f"< {min_numel} weights"
            else:
                shapes[name] = (out_f, in_f)
    return shapes, kept


def layer_sparsities(shapes: Mapping[str, tuple[int, int]], sparsity: float,
                     distribution: str = "uniform") -> dict[str, float]:
    """Per-layer sparsity for a global target.

    Args:
        shapes: ``{layer name: (out_features, in_features)}``.
        sparsity: global target in ``[0, 1)`` over these layers' weights.
        distribution: ``"uniform"`` (every layer at ``sparsity``) or ``"erk"``.

    Returns:
        ``{name: sparsity}``; for ERK the stored total equals the target up to rounding.

    Raises:
        ValueError: unknown distribution or sparsity outside [0, 1).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if distribution == "uniform":
        return {n: float(sparsity) for n in shapes}
    if distribution != "erk":
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    density = 1.0 - sparsity
    numel = {n: o * i for n, (o, i) in shapes.items()}
    raw = {n: (o + i) / (o * i) for n, (o, i) in shapes.items()}
    dense: set[str] = set()
    while True:
        free = [n for n in shapes if n not in dense]
        budget = density * sum(numel.values()) - sum(numel[n] for n in dense)
        divisor = sum(raw[n] * numel[n] for n in free)
        if not free or divisor <= 0:
            break
        eps = budget / divisor
        over = [n for n in free if eps * raw[n] > 1.0]
        if not over:
            break
        dense.add(max(over, key=lambda n: raw[n]))
    out = {}
    for n in shapes:
        d = 1.0 if n in dense else min(1.0, eps * raw[n])
        out[n] = max(0.0, 1.0 - d)
    return out
