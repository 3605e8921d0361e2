"""Sparse training from scratch with a fixed number of stored weights: RigL and SET.

Every ``update_interval`` optimizer steps until ``end_step``, each sparse layer drops the
``k = round(α_t · nnz)`` stored weights of smallest magnitude and grows ``k`` new positions:

* **RigL** (Evci et al., "Rigging the Lottery: Making All Tickets Winners", ICML 2020): the
  unstored positions with the largest magnitude of the *dense* gradient ``dYᵀ·X``, computed only
  on update steps (its ``2·N·in·out`` FLOPs are counted);
* **SET** (Mocanu et al., Nature Communications 2018): uniformly random unstored positions.

``α_t = α/2 · (1 + cos(π t / end_step))`` (cosine decay, RigL). Grown weights start at 0.0 and
with zeroed optimizer state; surviving weights keep their value and their optimizer state at
the same (row, col). The stored nnz of each layer never changes. Candidates for growth are all
positions not kept after the drop, as in RigL; a just-dropped position that is regrown at once
counts as surviving (it keeps its value and state), so only genuinely new positions start at 0.
With ``scope="global"`` the drop and the growth are ranked over all layers together and only the
total nnz is fixed.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import torch
from torch import nn

from .. import formats
from .._failpoints import failpoint
from ..nn import SparseLinear, sparse_layers

__all__ = ["DynamicSparseTraining", "cosine_drop_fraction", "remap_optimizer_state", "GROW_MODES", "SCOPES"]

GROW_MODES = ("rigl", "set")
SCOPES = ("layer", "global")


def cosine_drop_fraction(step: int, alpha: float, end_step: int) -> float:
    """RigL's cosine-decayed drop fraction at ``step`` (0 after ``end_step``)."""
    if end_step <= 0 or step >= end_step:
        return 0.0
    return alpha / 2.0 * (1.0 + math.cos(math.pi * step / end_step))


def remap_optimizer_state(optimizer: torch.optim.Optimizer, param: nn.Parameter, old_index: torch.Tensor,
                          new_index: torch.Tensor, new_numel: int) -> None:
    """Move per-element optimizer state of ``param`` after a structure change.

    ``state[new_index[i]] = old_state[old_index[i]]``; every other element's state becomes 0.
    Tensor states whose shape is not ``[old nnz]`` (e.g. Adam's scalar ``step``) are kept.
    """
    state = optimizer.state.get(param)
    if not state:
        return
    for key, val in list(state.items()):
        if torch.is_tensor(val) and val.dim() == 1 and key != "step":
            new = val.new_zeros(new_numel)
            new[new_index] = val[old_index]
            state[key] = new


class _GradCapture:
    """Accumulates a layer's dense weight gradient ``Σ dYᵀ·X`` during backward (update steps only).

    Each call's input is held only until that call's output gradient arrives, then folded into the
    ``[out, in]`` sum, so a layer called many times in one step (a link loss decoded in chunks,
    ``TrainConfig.loss_chunk``) holds one chunk's input at a time, not all of them.
    """

    def __init__(self, layer: SparseLinear):
        self.layer = layer
        self.inputs: dict[int, torch.Tensor] = {}
        self.calls = 0
        self.grad: torch.Tensor | None = None
        self.flops = 0
        self.handle = layer.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        if not torch.is_grad_enabled() or not output.requires_grad:
            return
        idx = self.calls
        self.calls += 1
        self.inputs[idx] = args[0].detach().reshape(-1, module.in_features)

        def store(g, idx=idx):
            x = self.inputs.pop(idx)
            dy = g.detach().reshape(-1, module.out_features)
            if self.grad is None:
                self.grad = self.layer.values.new_zeros(module.out_features, module.in_features)
            self.grad.addmm_(dy.t(), x)
            self.flops += 2 * x.shape[0] * module.in_features * module.out_features

        output.register_hook(store)

    def dense_grad(self) -> tuple[torch.Tensor, int]:
        """Dense ``dL/dW`` ``[out, in]`` summed over the captured calls whose output reached the loss,
        and its FLOPs ``2·N·in·out``."""
        layer = self.layer
        g = self.grad if self.grad is not None else layer.values.new_zeros(layer.out_features, layer.in_features)
        return g, self.flops

    def close(self):
        self.handle.remove()
        self.inputs.clear()


def _units(layer: SparseLinear):
    """``(unit keys, unit magnitudes)`` of a layer: per stored weight (``row * in + col``,
    ``|value|``) for CSR; per stored block (``block_row * (in / b) + block_col``, Frobenius norm of
    the block) for BSR. Keys ascending."""
    b = layer.blocksize or 1
    vals = layer.values.detach()
    if b == 1:
        return formats.csr_keys(layer.crow_indices, layer.col_indices, layer.in_features), vals.abs()
    bcrow, bcol, perm = formats.csr_to_bsr_structure(layer.crow_indices, layer.col_indices,
                                                     (layer.out_features, layer.in_features), b)
    keys = formats.csr_row_indices(bcrow) * (layer.in_features // b) + bcol
    return keys, vals[perm].view(-1, b * b).norm(dim=1)


class DynamicSparseTraining:
    """Drop-and-grow schedule for every :class:`SparseLinear` in a model (RigL or SET).

    Usage per step: ``dst.before_forward(step)`` → forward/backward → ``optimizer.step()`` →
    ``dst.after_step(step)`` (returns the executed FLOPs of the dense gradient, 0 on other steps).

    Args:
        model: model already converted with ``sparsify(..., init="random")``.
        optimizer: its optimizer (per-element state is remapped on updates).
        update_interval: ΔT, optimizer steps between mask updates (> 0).
        end_step: no updates at or after this step (RigL: 75 % of training).
        drop_fraction: α, initial drop fraction in ``[0, 1)``.
        grow: ``"rigl"`` or ``"set"``.
        generator: random source for SET.
        Layers with ``layout="bsr"`` drop and grow whole blocks (block magnitude / block gradient
        norm), so they stay block-aligned.
        scope: ``"layer"``: every layer drops and regrows ``round(α·nnz_l)`` (its nnz never changes);
            ``"global"``: the ``round(α·Σnnz)`` smallest magnitudes over all layers are dropped and as
            many positions grown by the best scores over all layers, so the total nnz never changes but
            layers may trade connections (the sparse-training counterpart of global magnitude pruning).
        all_reduce: data-parallel training: a function that sums a list of tensors over the ranks in
            place (:func:`gnnsparse.distributed.all_reduce_tensors`); RigL's captured dense gradients
            ``[out, in]`` of all layers go through it before the grow scores, so every rank scores
            the global batch's gradient and makes the same choice. None: one process.

    Raises:
        ValueError: bad ``grow``, ``update_interval`` or ``drop_fraction``; no sparse layers.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, update_interval: int, end_step: int,
                 drop_fraction: float = 0.3, grow: str = "rigl", generator: torch.Generator | None = None,
                 scope: str = "layer",
                 all_reduce: Callable[[Sequence[torch.Tensor]], None] | None = None):
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        if grow not in GROW_MODES:
            raise ValueError(f"grow must be one of {GROW_MODES}, got {grow!r}")
        if update_interval <= 0:
            raise ValueError(f"update_interval must be > 0, got {update_interval}")
        if not 0.0 <= drop_fraction < 1.0:
            raise ValueError(f"drop_fraction must be in [0, 1), got {drop_fraction}")
        self.layers = sparse_layers(model)
        if not self.layers:
            raise ValueError("model has no SparseLinear layers: call gnnsparse.sparsify first")
        self.optimizer = optimizer
        self.update_interval, self.end_step = int(update_interval), int(end_step)
        self.alpha, self.grow = float(drop_fraction), grow
        self.generator = generator
        self.scope = scope
        self.all_reduce = all_reduce
        self._captures: dict[str, _GradCapture] = {}
        self.updates = 0
        self.history: list[dict] = []

    def is_update_step(self, step: int) -> bool:
        """True when the step numbered ``step`` (1-based count after the optimizer step) updates masks."""
        return 0 < step < self.end_step and step % self.update_interval == 0

    def before_forward(self, step: int) -> None:
        """Call before the forward of step ``step`` (1-based); installs gradient capture for RigL updates."""
        if self.grow == "rigl" and self.is_update_step(step):
            self._captures = {n: _GradCapture(l) for n, l in self.layers.items()}

    @torch.no_grad()
    def after_step(self, step: int) -> int:
        """Call after ``optimizer.step()`` of step ``step``; updates masks when due. Returns executed FLOPs."""
        if not self.is_update_step(step):
            return 0
        alpha = cosine_drop_fraction(step, self.alpha, self.end_step)
        flops, grads = 0, {}
        for name in self.layers:
            if self.grow == "rigl":
                cap = self._captures.get(name)
                if cap is None:
                    raise RuntimeError("RigL update without captured gradients: call before_forward(step) "
                                       "before the forward of an update step")
                grads[name], f = cap.dense_grad()
                flops += f
                cap.close()
        self._captures = {}
        if grads and self.all_reduce is not None:  # every rank scores the summed (global) gradient
            self.all_reduce([grads[n] for n in self.layers])
        # Drop and grow work on units: single weights (CSR layers) or whole b x b blocks (BSR
        # layers, blocksize b): block magnitude = Frobenius norm of the block's values, RigL's grow
        # score = Frobenius norm of the block's dense gradient, SET draws blocks uniformly.
        units = {n: _units(l) for n, l in self.layers.items()}
        old_keys = {n: u[0] for n, u in units.items()}
        kept = self._drop(alpha, old_keys, {n: u[1] for n, u in units.items()})
        scores = {n: self._grow_scores(n, kept[n], grads.get(n)) for n in self.layers}
        grown = self._choose_grown(scores, {n: old_keys[n].numel() - kept[n][0].numel() for n in self.layers})
        changed = changed_layers = 0
        for name, layer in self.layers.items():
            keep_idx, kept_keys = kept[name]
            if grown[name].numel() == 0 and kept_keys.numel() == old_keys[name].numel():
                continue
            b = layer.blocksize or 1
            if b > 1:  # blocks -> the element positions they cover
                grid_c = layer.in_features // b
                changed += self._apply(layer, formats.csr_keys(layer.crow_indices, layer.col_indices,
                                                               layer.in_features),
                                       formats.block_keys_to_keys(kept_keys, grid_c, b),
                                       formats.block_keys_to_keys(grown[name], grid_c, b)) // (b * b)
            else:
                changed += self._apply(layer, old_keys[name], kept_keys, grown[name])
            if changed_layers == 0:
                failpoint("dst-update")  # tests: killed with one layer's structure changed, the rest not
            changed_layers += 1
        self.updates += 1
        self.history.append({"step": step, "drop_fraction": alpha, "changed": changed,
                             "nnz": {n: l.nnz for n, l in self.layers.items()}})
        return flops

    def _drop(self, alpha: float, old_keys: dict, vals: dict) -> dict:
        """``{name: (kept unit indices, kept unit keys)}`` after dropping the smallest magnitudes.

        Per layer: ``round(α·nnz_l)`` units from each layer (none when it has no free position to
        regrow into). Global: ``round(α·Σnnz)`` smallest over all layers pooled.
        """
        if self.scope == "layer":
            drop_counts = {}
            for n, l in self.layers.items():
                b = l.blocksize or 1
                nnz, numel = old_keys[n].numel(), l.numel_dense // (b * b)
                k = int(round(alpha * nnz))
                drop_counts[n] = 0 if nnz in (0, numel) else min(k, nnz)
        else:
            names = list(self.layers)
            pooled = torch.cat([vals[n].double() for n in names]) if names else torch.zeros(0)
            k = int(round(alpha * pooled.numel()))
            dropped = torch.zeros(pooled.numel(), dtype=torch.bool)
            dropped[torch.sort(pooled, stable=True).indices[:k]] = True
            drop_counts, off = {}, 0
            for n in names:
                size = vals[n].numel()
                drop_counts[n] = dropped[off:off + size]
                off += size
        out = {}
        for n in self.layers:
            d = drop_counts[n]
            if isinstance(d, int):  # drop the d smallest (stable: lower position wins ties)
                order = torch.sort(vals[n], stable=True).indices
                keep_idx = torch.sort(order[d:]).values
            else:
                keep_idx = torch.nonzero(~d).reshape(-1)
            out[n] = (keep_idx, old_keys[n][keep_idx])
        return out

    def _grow_scores(self, name: str, kept, dense_grad) -> torch.Tensor:
        layer = self.layers[name]
        b = layer.blocksize or 1
        if self.grow == "rigl":
            g = dense_grad.double()
            scores = (g.abs() if b == 1 else formats.block_norms(g, b)).reshape(-1)
        else:
            scores = torch.rand(layer.numel_dense // (b * b), generator=self.generator, dtype=torch.float64)
        scores[kept[1]] = -math.inf
        return scores

    def _choose_grown(self, scores: dict, dropped: dict) -> dict:
        """Positions to grow: per layer as many as it dropped, or globally as many as were dropped in all."""
        if self.scope == "layer":
            return {n: torch.nonzero(formats.topk_mask(s, min(dropped[n], int((s > -math.inf).sum()))))
                    .reshape(-1) for n, s in scores.items()}
        names = list(scores)
        pooled = torch.cat([scores[n] for n in names])
        k = min(sum(dropped.values()), int((pooled > -math.inf).sum()))
        chosen = formats.topk_mask(pooled, k)
        out, off = {}, 0
        for n in names:
            size = scores[n].numel()
            out[n] = torch.nonzero(chosen[off:off + size]).reshape(-1)
            off += size
        return out

    def _apply(self, layer: SparseLinear, old_keys, kept_keys, grown_keys) -> int:
        values = layer.values.detach()
        nnz_old = old_keys.numel()
        new_keys = torch.sort(torch.cat([kept_keys, grown_keys])).values
        # a position stored before and after (kept, or dropped and at once regrown) keeps its value and
        # optimizer state; a newly stored position starts at 0.0 with zero state
        pos = torch.searchsorted(old_keys, new_keys).clamp_max(max(nnz_old - 1, 0))
        was_stored = (old_keys[pos] == new_keys) if nnz_old else torch.zeros_like(new_keys, dtype=torch.bool)
        new_pos_kept = torch.nonzero(was_stored).reshape(-1)
        old_pos_kept = pos[was_stored]
        new_vals = values.new_zeros(new_keys.numel())
        new_vals[new_pos_kept] = values[old_pos_kept]
        crow, col = formats.keys_to_csr(new_keys, layer.out_features, layer.in_features)
        layer.set_csr(crow, col, new_vals)
        remap_optimizer_state(self.optimizer, layer.values, old_pos_kept, new_pos_kept, new_keys.numel())
        return int((~was_stored).sum())

    def state_dict(self) -> dict:
        """The schedule's state for a checkpoint: update count, history and the generator's state
        (the layers' structures and the optimizer state are saved with the model and optimizer).

        Raises:
            RuntimeError: called between ``before_forward`` and ``after_step`` of an update step
                (captured gradients cannot be saved).
        """
        if self._captures:
            raise RuntimeError("DynamicSparseTraining.state_dict() inside an update step: save between steps")
        return {"updates": self.updates, "history": copy.deepcopy(self.history),
                "generator": self.generator.get_state() if self.generator is not None else None}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            ValueError: the state has a generator state and this schedule has no generator, or the
                other way round.
        """
        if (state.get("generator") is None) != (self.generator is None):
            raise ValueError("DynamicSparseTraining state: generator present in only one of the saved state "
                             "and this schedule")
        self.updates = int(state["updates"])
        self.history = copy.deepcopy(list(state["history"]))
        if self.generator is not None:
            self.generator.set_state(state["generator"])

    def close(self) -> None:
        """Remove any installed hooks."""
        for cap in self._captures.values():
            cap.close()
        self._captures = {}
