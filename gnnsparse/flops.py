"""Executed training FLOPs (1 multiply-add = 2 FLOPs).

Per-step FLOPs are measured once per distinct step shape with
:class:`torch.utils.flop_counter.FlopCounterMode` in an **untimed** forward+backward pass:
dense ops by PyTorch's own formulas, gnnsparse's sparse weight ops (``csr_linear`` and its
backward ops, ``2·N·nnz`` each) and the message-passing SpMM (``adj_spmm``, ``2·nnz(A)·d``)
by the formulas they register. The training loop then adds the cached count for every step it
executes, plus FLOPs a regime reports from shapes (RigL's dense gradient). Optimizer updates,
mask bookkeeping and elementwise activations are not counted (FlopCounterMode ignores them).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Hashable

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["measure_flops", "StepFlops"]


def measure_flops(fn: Callable[[], object]) -> int:
    """FLOPs executed by ``fn()`` (run once, under FlopCounterMode, with the RNG state restored after).

    Use outside timed sections only.
    """
    with torch.random.fork_rng(devices=[]):
        with FlopCounterMode(display=False) as counter:
            fn()
    return int(counter.get_total_flops())


class StepFlops:
    """Cache of per-step FLOPs keyed by ``(phase, shape key)`` plus running totals per phase."""

    def __init__(self):
        self._cache: dict[Hashable, int] = {}
        self.by_phase: dict[str, int] = defaultdict(int)

    def per_step(self, key: Hashable, measure: Callable[[], int]) -> int:
        """Cached FLOPs for ``key``; ``measure()`` is called (untimed) the first time."""
        if key not in self._cache:
            self._cache[key] = int(measure())
        return self._cache[key]

    def add(self, phase: str, flops: int) -> None:
        """Add executed FLOPs to ``phase``."""
        self.by_phase[phase] += int(flops)

    @property
    def total(self) -> int:
        """All FLOPs counted so far."""
        return sum(self.by_phase.values())
