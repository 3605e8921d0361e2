"""Dense train-and-prune: magnitude pruning of dense Linear weights, one-shot or gradual.

The gradual schedule is Zhu & Gupta, "To prune, or not to prune" (2017): at step ``t`` in
``[t0, t0 + nΔt]`` the sparsity is ``s_t = s_f + (s_i - s_f)(1 - (t - t0)/(nΔt))³``.
Pruning keeps the largest magnitudes, per layer (each layer to its own target) or global
(one threshold over all pruned layers). During the dense phase the mask is applied by
multiplying the dense weight after each optimizer step (dense kernels execute, and are counted
as dense); :meth:`MagnitudePruner.masks` then hands the final structure to
:func:`gnnsparse.sparsify` for fine-tuning on sparse kernels.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .. import formats
from .._failpoints import failpoint

__all__ = ["cubic_sparsity", "MagnitudePruner", "PRUNING_MODES", "PRUNE_SCHEDULES"]

PRUNING_MODES = ("layer", "global")
PRUNE_SCHEDULES = ("gradual", "oneshot")


def cubic_sparsity(step: int, final: float, start: int, end: int, initial: float = 0.0) -> float:
    """Zhu & Gupta cubic schedule: sparsity at ``step`` rising from ``initial`` (at ``start``) to ``final``
    (at ``end`` and after). Before ``start`` returns ``initial``."""
    if step <= start:
        return initial
    if step >= end or end <= start:
        return final
    frac = (step - start) / (end - start)
    return final + (initial - final) * (1.0 - frac) ** 3


class MagnitudePruner:
    """Owns the pruning masks of a model's dense Linear layers.

    Args:
        model: model whose layers named in ``targets`` are ``nn.Linear`` / PyG ``Linear``.
        targets: ``{layer name: final sparsity}`` (per-layer mode) — in global mode the overall
            target is the weight-count-weighted mean of these.
        mode: ``"layer"`` or ``"global"``.
        schedule: ``"gradual"`` (cubic, masks updated every ``interval`` steps between ``start``
            and ``end``) or ``"oneshot"`` (prune once at ``end``).
        start, end: steps of the schedule; ``interval``: steps between mask updates.
        blocksize: ``None``/1 prunes single weights by ``|w|``; ``b > 1`` prunes whole ``b × b``
            blocks by their Frobenius norm (block magnitude pruning), so the final masks can be
            stored in BSR (``SparseLinear(layout="bsr", blocksize=b)``); ``b`` must divide every
            target layer's shape.

    Raises:
        ValueError: unknown mode/schedule, a target outside [0, 1), a layer that is missing.
    """

    def __init__(self, model: nn.Module, targets: Mapping[str, float], mode: str = "layer",
                 schedule: str = "gradual", start: int = 0, end: int = 0, interval: int = 1,
                 blocksize: int | None = None):
        if mode not in PRUNING_MODES:
            raise ValueError(f"pruning mode must be one of {PRUNING_MODES}, got {mode!r}")
        if schedule not in PRUNE_SCHEDULES:
            raise ValueError(f"prune schedule must be one of {PRUNE_SCHEDULES}, got {schedule!r}")
        self.layers = {n: model.get_submodule(n) for n in targets}
        for n, s in targets.items():
            if not 0.0 <= s < 1.0:
                raise ValueError(f"target sparsity for {n} must be in [0, 1), got {s}")
        self.targets = dict(targets)
        import numbers

        self.blocksize = 1 if blocksize is None else blocksize
        if isinstance(self.blocksize, bool) or not isinstance(self.blocksize, numbers.Integral) \
                or self.blocksize < 1:
            raise ValueError(f"blocksize must be an int >= 1 or None, got {blocksize!r}")
        self.blocksize = int(self.blocksize)
        for n, m in self.layers.items():
            o, i = m.weight.shape
            if o % self.blocksize or i % self.blocksize:
                raise ValueError(f"blocksize {self.blocksize} does not divide the shape ({o}, {i}) of layer {n}")
        self.mode, self.schedule = mode, schedule
        self.start, self.end, self.interval = int(start), int(max(end, start)), max(1, int(interval))
        self._masks = {n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in self.layers.items()}
        self.current_fraction = 0.0  # fraction of the way to the final targets (0..1)
        self.updates = 0  # calls of prune_to (mask updates)

    def _scaled_targets(self, fraction: float) -> dict[str, float]:
        return {n: s * fraction for n, s in self.targets.items()}

    def prune_to(self, fraction: float) -> None:
        """Set masks so each layer (or the pool) reaches ``fraction`` of its final sparsity."""
        targets = self._scaled_targets(fraction)
        b = self.blocksize
        # scores per unit: |w| per weight, or the Frobenius norm per b x b block
        scores = {n: (m.weight.detach().abs() if b == 1 else formats.block_norms(m.weight.detach(), b))
                  for n, m in self.layers.items()}
        unit_masks = {}
        if self.mode == "layer":
            for n, sc in scores.items():
                k = formats.nnz_for_density(sc.numel(), 1.0 - targets[n])
                unit_masks[n] = formats.topk_mask(sc, k)
        else:
            total = sum(sc.numel() for sc in scores.values())
            keep = sum(sc.numel() * (1.0 - targets[n]) for n, sc in scores.items())
            k = formats.nnz_for_density(total, keep / total if total else 1.0)
            names = list(scores)
            flat = torch.cat([scores[n].reshape(-1).double() for n in names])
            mask = formats.topk_mask(flat, k)
            off = 0
            for n in names:
                size = scores[n].numel()
                unit_masks[n] = mask[off:off + size].reshape(scores[n].shape)
                off += size
        for i, (n, um) in enumerate(unit_masks.items()):
            self._masks[n] = um if b == 1 else formats.expand_block_mask(um, b)
            if i == 0:
                failpoint("prune")  # tests: killed with one mask updated, the weights not yet masked
        self.current_fraction = fraction
        self.updates += 1
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights (call after each optimizer step)."""
        for n, m in self.layers.items():
            m.weight.mul_(self._masks[n].to(m.weight.dtype))

    def fraction_at(self, step: int) -> float:
        """Fraction of the final sparsity scheduled at ``step``."""
        if self.schedule == "oneshot":
            return 1.0 if step >= self.end else 0.0
        return cubic_sparsity(step, 1.0, self.start, self.end)

    def step(self, step: int) -> bool:
        """Called after the optimizer step ``step`` (0-based count of steps done). Returns True if masks changed."""
        changed = False
        due = (self.schedule == "oneshot" and step == self.end) or (
            self.schedule == "gradual" and self.start <= step <= self.end
            and ((step - self.start) % self.interval == 0 or step == self.end))
        if due:
            frac = self.fraction_at(step)
            if frac != self.current_fraction:
                self.prune_to(frac)
                changed = True
        if not changed:
            self.apply()
        return changed

    def masks(self, finalize: bool = True) -> dict[str, torch.Tensor]:
        """The masks ``{name: bool [out, in]}``; with ``finalize`` first prunes to the final targets."""
        if finalize and self.current_fraction < 1.0:
            self.prune_to(1.0)
        return {n: m.clone() for n, m in self._masks.items()}

    def state_dict(self) -> dict:
        """Masks (bool ``[out, in]`` per layer), schedule position and update count, for a checkpoint."""
        return {"masks": {n: m.clone() for n, m in self._masks.items()},
                "current_fraction": float(self.current_fraction), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            ValueError: the layer names or mask shapes differ from this pruner's.
        """
        masks = state["masks"]
        if set(masks) != set(self._masks):
            raise ValueError(f"pruner state has layers {sorted(masks)}, this pruner {sorted(self._masks)}")
        for n, m in masks.items():
            if m.dtype != torch.bool or m.shape != self._masks[n].shape:
                raise ValueError(f"pruner state: mask of {n} is {m.dtype} {tuple(m.shape)}, expected bool "
                                 f"{tuple(self._masks[n].shape)}")
        self._masks = {n: masks[n].clone() for n in self._masks}
        self.current_fraction = float(state["current_fraction"])
        self.updates = int(state.get("updates", 0))

    def sparsity(self) -> float:
        """Current structural sparsity over the pruned layers."""
        total = sum(m.numel() for m in self._masks.values())
        kept = sum(int(m.sum()) for m in self._masks.values())
        return 1.0 - kept / total if total else 0.0
