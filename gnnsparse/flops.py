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


def _as_lists(key):
    return [_as_lists(k) for k in key] if isinstance(key, tuple) else key


def _as_tuples(key):
    return tuple(_as_tuples(k) for k in key) if isinstance(key, list) else key


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

    def state_dict(self) -> dict:
        """The cache and totals as lists, dicts, strings and ints (for checkpoints)."""
        return {"cache": [[_as_lists(k), v] for k, v in self._cache.items()], "by_phase": dict(self.by_phase)}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (tuple keys come back as tuples), so a resumed run
        neither re-measures a step (an extra forward) nor loses the FLOPs already counted."""
        self._cache = {_as_tuples(k): int(v) for k, v in state["cache"]}
        self.by_phase = defaultdict(int, {str(p): int(f) for p, f in state["by_phase"].items()})

    @property
    def total(self) -> int:
        """All FLOPs counted so far."""
        return sum(self.by_phase.values())
