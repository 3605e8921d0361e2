"""Data-parallel training over ``torch.distributed``: process group, gradient and mask synchronization.

``gnnsparse compare`` (and the ``gnnsparse.train.run_*`` functions) run data-parallel when a process
group of more than one rank is initialized, typically by launching with ``torchrun``::

    torchrun --standalone --nproc-per-node 2 -m gnnsparse compare --dataset ia-enron-employees ...

Everything goes through PyTorch's own collectives (``torch.distributed``: gloo for CPU tensors, NCCL
for CUDA tensors); gnnsparse has no transport of its own.

What is split, what is synchronized (see :mod:`gnnsparse.train`):

* **Batches.** Every rank draws the same *global* batch from the same seeded generator (so the
  batch order, the training negatives and SET's random growth stay in lockstep on all ranks) and
  keeps the items ``rank::world_size`` of it (:func:`shard_batch`). Each rank's loss is its items'
  summed loss divided by the *global* batch size, so the sum over ranks of the gradients is the
  one-process gradient of the same global batch (up to float summation order).
* **Gradients.** After each backward, the gradients of all parameters (sparse ``values``, biases,
  dense weights, embeddings) are summed over ranks by :func:`all_reduce_gradients`: one
  ``all_reduce`` of a flat buffer per dtype. Not ``DistributedDataParallel``: DDP fixes its
  buckets, and so every parameter's size, when the model is wrapped, while a layer's ``values``
  change size when train-and-prune sparsifies the model and at every global-scope drop-and-grow;
  and DDP expects one backward per forward, while the chunked link loss
  (``TrainConfig.loss_chunk``) runs one backward per chunk plus one through the encoder. A flat
  all-reduce after the whole backward is what DDP does per bucket, minus the overlap with the
  backward (not worth its constraints here: each step's backward is short).
* **Masks.** RigL's grow scores come from the dense gradients summed over ranks
  (:func:`all_reduce_tensors`, called by :class:`~gnnsparse.regimes.DynamicSparseTraining`), and the
  drop/grow choice is then computed from identical inputs by the same deterministic code
  (stable sorts, lower position wins ties); pruning thresholds come from weights that are identical
  because every optimizer step applies identical gradients. After every mask update
  :func:`check_masks` compares a 64-bit fingerprint of every sparse layer's structure (and every
  pruning mask) across ranks with one ``all_gather`` and raises :class:`MaskMismatchError`, naming
  the first layer and the ranks that differ from rank 0, when they are not all equal.
* **Model selection.** Rank 0's validation metrics are broadcast, so every rank selects the same epoch.

A collective that fails (a peer died: gloo reports the closed connection at once; a peer hangs: the
process group's timeout, :func:`init_from_env` ``timeout_s``) raises :class:`DistributedError`
``"rank R: lost contact with another rank (...)"``; ``gnnsparse compare`` exits with status 3.

Test hook: with ``GNNSPARSE_RANK_DUMP=<folder>`` set, each rank writes ``rank<R>-<run key>.pt`` (its
last and selected model states and its count of mask checks) when a run finishes.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
from typing import Iterable, Mapping, Sequence

import torch

__all__ = ["DistributedError", "MaskMismatchError", "init_from_env", "shutdown", "enabled", "rank", "world_size",
           "is_main", "shard_batch", "all_reduce_gradients", "all_reduce_tensors", "reduce_numbers",
           "gather_numbers", "broadcast_object", "broadcast_parameters", "fingerprint", "mask_fingerprints",
           "check_masks", "dump_rank_state", "DEFAULT_TIMEOUT_S", "RANK_DUMP_ENV"]

#: Default seconds a collective waits for the other ranks before failing.
DEFAULT_TIMEOUT_S = 300.0
#: Environment variable of the per-rank state dump (tests).
RANK_DUMP_ENV = "GNNSPARSE_RANK_DUMP"


class DistributedError(RuntimeError):
    """A collective failed: another rank died or timed out, or the ranks disagree."""


class MaskMismatchError(DistributedError):
    """Ranks hold different sparsity masks after a mask update."""


# ------------------------------------------------------------------------------- process group
def _dist():
    import torch.distributed as dist

    return dist


def enabled() -> bool:
    """True when a process group of more than one rank is initialized (data-parallel training)."""
    dist = _dist()
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    dist = _dist()
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    dist = _dist()
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """True on rank 0 (and without a process group): the rank that prints and writes files."""
    return rank() == 0


def init_from_env(timeout_s: float = DEFAULT_TIMEOUT_S, backend: str | None = None) -> bool:
    """Join the process group described by torchrun's environment, if there is one.

    Reads ``WORLD_SIZE``, ``RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``, through torch's ``env://``
    rendezvous). Nothing happens when ``WORLD_SIZE`` is unset or 1, or a group is already initialized.

    Args:
        timeout_s: seconds a collective (and the initial rendezvous) waits for the other ranks before
            it fails (> 0).
        backend: ``"gloo"`` (CPU tensors; the default: gnnsparse's training loop runs on CPU) or
            ``"nccl"`` (CUDA tensors over NCCL, one GPU per rank selected by ``LOCAL_RANK``; the CPU
            collectives of this module still go over gloo). NCCL is untested (no GPU here).

    Returns:
        True when this call initialized a group of more than one rank.

    Raises:
        ValueError: bad ``timeout_s``, ``WORLD_SIZE``/``RANK`` that are not integers or out of range,
            a ``RANK`` without ``MASTER_ADDR``/``MASTER_PORT``.
        DistributedError: the rendezvous failed (another rank never came, the address is wrong).
    """
    if not timeout_s > 0:
        raise ValueError(f"distributed timeout must be > 0 seconds, got {timeout_s}")
    env = os.environ
    if not env.get("WORLD_SIZE"):
        return False
    try:
        world, r = int(env["WORLD_SIZE"]), int(env.get("RANK", "0"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE={env.get('WORLD_SIZE')!r} and RANK={env.get('RANK')!r} must be integers "
                         f"(set by torchrun)") from None
    if world < 1 or not 0 <= r < world:
        raise ValueError(f"RANK={r} must be in [0, WORLD_SIZE={world})")
    dist = _dist()
    if world == 1 or (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed: cannot train on several processes")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
    if missing:
        raise ValueError(f"WORLD_SIZE={world} but {', '.join(missing)} unset: launch with torchrun")
    backend = backend or "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"distributed backend must be 'gloo' or 'nccl', got {backend!r}")
    if backend == "nccl":  # CUDA tensors over NCCL; the small CPU collectives (counters, masks) over gloo
        local = int(env.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        backend = "cpu:gloo,cuda:nccl"
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as e:
        raise DistributedError(f"rank {r}: cannot join the process group of {world} ranks at "
                               f"{env['MASTER_ADDR']}:{env['MASTER_PORT']} ({_first_line(e)})") from None
    return True


def shutdown() -> None:
    """Leave the process group (if any); safe to call after a failed collective."""
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(RuntimeError):  # a group broken by a dead peer may refuse a clean exit
            dist.destroy_process_group()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@contextlib.contextmanager
def _collective(what: str):
    """Turn a failed collective (dead peer, timeout) into :class:`DistributedError`."""
    try:
        yield
    except DistributedError:
        raise
    except RuntimeError as e:  # torch.distributed.DistError and gloo's errors are RuntimeErrors
        raise DistributedError(f"rank {rank()}: lost contact with another rank during {what} "
                               f"({_first_line(e)})") from None


# ------------------------------------------------------------------------------------- batches
def shard_batch(batch: Sequence[torch.Tensor]) -> tuple[tuple[torch.Tensor, ...], int]:
    """This rank's part of a global batch, and the global batch size.

    Every tensor of ``batch`` indexes the batch's items along its last dimension (link: pairs
    ``[2, n]`` and labels ``[n]``; node: node ids ``[n]``); this rank keeps items
    ``rank::world_size`` (contiguous copies). Ranks beyond the batch size get empty parts.

    Returns:
        ``(local batch, n)``: divide the local summed loss by ``n`` so the gradients summed over ranks
        are the gradient of the global batch's mean loss.
    """
    n = int(batch[0].shape[-1])
    k, r = world_size(), rank()
    return tuple(t[..., r::k].contiguous() for t in batch), n


# --------------------------------------------------------------------------------- collectives
def all_reduce_tensors(tensors: Sequence[torch.Tensor], what: str = "a gradient all-reduce") -> None:
    """Sum ``tensors`` over all ranks, in place (one flat ``all_reduce`` per dtype and device).

    Every rank must pass tensors of the same dtypes and shapes in the same order. Without a
    process group of more than one rank, nothing happens.

    Raises:
        DistributedError: another rank died or timed out.
    """
    if not enabled() or not tensors:
        return
    dist = _dist()
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    with _collective(what):
        for ts in groups.values():
            flat = torch.cat([t.reshape(-1) for t in ts])
            dist.all_reduce(flat)
            off = 0
            for t in ts:
                t.copy_(flat[off:off + t.numel()].view_as(t))
                off += t.numel()


def all_reduce_gradients(params: Iterable[torch.nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
    """Sum every parameter's ``.grad`` and the step's loss over ranks; returns the summed loss.

    Call after the backward of each rank's part of the batch (loss scaled by the global batch
    size, see :func:`shard_batch`) and before ``optimizer.step()``. A parameter without a gradient
    on some ranks (its part of the graph was not reached there, e.g. an empty part) counts as zero
    there; a parameter without a gradient on every rank keeps ``grad = None`` (as one process would,
    so Adam skips it). The loss (a 0-dim tensor) comes back as the sum over ranks (the global
    batch's mean loss), so every rank sees the same value and a non-finite loss stops all ranks.

    Raises:
        DistributedError: another rank died or timed out.
    """
    params = [p for p in params if p.requires_grad]
    if not enabled():
        return loss
    dist = _dist()
    present = torch.tensor([p.grad is not None for p in params] + [0], dtype=torch.float64)
    present[-1] = loss.detach().double()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    with _collective("the gradient all-reduce"):
        dist.all_reduce(present)
    all_reduce_tensors(grads, "the gradient all-reduce")
    for p, g, n in zip(params, grads, present[:-1].tolist()):
        p.grad = g if n > 0 else None
    return present[-1].to(loss.dtype)


def reduce_numbers(values: Sequence[float], op: str = "sum") -> list:
    """``values`` summed (``op="sum"``) or maxed (``"max"``) over ranks: all ints (FLOP counts) in
    int64, exactly; otherwise in float64. Every rank must pass as many values of the same kinds.
    Without a process group: ``values`` as a list.

    Raises:
        ValueError: ``op`` is not ``"sum"`` or ``"max"``.
        DistributedError: another rank died or timed out.
    """
    if op not in ("sum", "max"):
        raise ValueError(f"op must be 'sum' or 'max', got {op!r}")
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    t = torch.tensor(list(values), dtype=torch.int64 if ints else torch.float64)
    if enabled() and t.numel():
        dist = _dist()
        with _collective(f"a {op} of counters"):
            dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.tolist()


def gather_numbers(values: Sequence[float]) -> list[list]:
    """Every rank's ``values`` (same length and kinds on all ranks), as ``[rank][i]`` lists: all ints
    in int64, otherwise float64.

    Raises:
        DistributedError: another rank died or timed out.
    """
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    t = torch.tensor(list(values), dtype=torch.int64 if ints else torch.float64)
    if not enabled():
        return [t.tolist()]
    dist = _dist()
    out = [torch.empty_like(t) for _ in range(world_size())]
    with _collective("a gather of counters"):
        dist.all_gather(out, t)
    return [o.tolist() for o in out]


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` (picklable) on every rank; ``obj`` itself without a process group."""
    if not enabled():
        return obj
    dist = _dist()
    box = [obj]
    with _collective("a broadcast"):
        dist.broadcast_object_list(box, src=src)
    return box[0]


@torch.no_grad()
def broadcast_parameters(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and floating-point buffers (e.g. the paper model's fixed walk
    embeddings, computed on every rank) into every rank's ``module``, so all ranks start from the
    same model even where building it is not bit-reproducible across processes. Same shapes
    required: call :func:`check_masks` first for sparse layers (their index buffers are not sent).

    Raises:
        DistributedError: another rank died or timed out.
    """
    if not enabled():
        return
    dist = _dist()
    tensors = list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]
    with _collective("the parameter broadcast"):
        for t in tensors:
            dist.broadcast(t.data, src=src)


# ---------------------------------------------------------------------------------- mask check
def fingerprint(tensors: Iterable[torch.Tensor]) -> int:
    """A 64-bit fingerprint (signed int) of the tensors' dtypes, shapes and contents (BLAKE2b).

    Equal tensors give equal fingerprints on every machine; any change of a value, a shape or the
    order gives another one (collisions have probability ~2**-64). Costs one pass over the bytes.
    """
    h = hashlib.blake2b(digest_size=8)
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return int.from_bytes(h.digest(), "little", signed=True)


def mask_fingerprints(model: torch.nn.Module,
                      masks: Mapping[str, torch.Tensor] | None = None) -> dict[str, int]:
    """``{name: fingerprint}`` of every :class:`~gnnsparse.nn.SparseLinear`'s structure (``crow``
    and ``col`` indices) in ``model`` and of every bool mask in ``masks`` (e.g. a pruner's, named
    ``"mask:<layer>"``), in a fixed order."""
    from .nn import sparse_layers

    out = {name: fingerprint((layer.crow_indices, layer.col_indices))
           for name, layer in sparse_layers(model).items()}
    for name, m in (masks or {}).items():
        out[f"mask:{name}"] = fingerprint((m,))
    return out


def check_masks(model: torch.nn.Module, what: str, masks: Mapping[str, torch.Tensor] | None = None) -> bool:
    """Verify that every rank holds the same sparse structures and masks (one ``all_gather`` of
    ``len(layers) + len(masks)`` int64 fingerprints). A no-op returning False without a process
    group of more than one rank; True after a passed check.

    Args:
        what: the update just done (for the message), e.g. ``"mask update 3 (step 12)"``.

    Raises:
        MaskMismatchError: some rank's fingerprints differ from rank 0's (names the first differing
            layer, the ranks and ``what``), or the ranks have different layer sets.
        DistributedError: another rank died or timed out.
    """
    if not enabled():
        return False
    dist = _dist()
    fps = mask_fingerprints(model, masks)
    names = list(fps)
    names_fp = fingerprint((torch.tensor(list("\0".join(names).encode()), dtype=torch.uint8),))
    mine = torch.tensor([names_fp] + [fps[n] for n in names], dtype=torch.int64)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(world_size())]
    with _collective(f"the mask check after {what}"):
        dist.all_gather(sizes, torch.tensor([mine.numel()], dtype=torch.int64))
        if len({int(s) for s in sizes}) != 1:
            raise MaskMismatchError(f"rank {rank()}: ranks have different numbers of sparse layers after {what}: "
                                    f"{[int(s) for s in sizes]}")
        everyone = [torch.empty_like(mine) for _ in range(world_size())]
        dist.all_gather(everyone, mine)
    ref = everyone[0]
    if any(int(e[0]) != int(ref[0]) for e in everyone):
        raise MaskMismatchError(f"rank {rank()}: ranks have different sparse layers after {what}")
    for i, name in enumerate(names, start=1):
        bad = [r for r, e in enumerate(everyone) if int(e[i]) != int(ref[i])]
        if bad:
            raise MaskMismatchError(
                f"rank {rank()}: ranks hold different masks after {what}: layer {name} on rank(s) "
                f"{', '.join(map(str, bad))} differs from rank 0 (a non-deterministic mask update; "
                f"training stopped)")
    return True


def dump_rank_state(key: str, payload: dict) -> None:
    """Write ``payload`` to ``$GNNSPARSE_RANK_DUMP/rank<R>-<key>.pt`` when that variable is set (tests)."""
    folder = os.environ.get(RANK_DUMP_ENV)
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    torch.save(payload, os.path.join(folder, f"rank{rank()}-{key}.pt"))
