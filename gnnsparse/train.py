"""Training loops for the paper's comparison: dense, dense train-and-prune, sparse training.

Protocol (the same for every regime):

* Mini-batches of supervision items (link: positive training pairs plus as many fresh random
  negatives; node: training nodes); each step encodes the full training graph.
* ``epochs`` E for dense and sparse training; train-and-prune runs E dense epochs (gradual
  magnitude pruning inside them) plus ``finetune_epochs`` (default E // 2) on sparse kernels
  with the mask fixed, and its FLOPs and seconds include both phases.
* Model selection on the validation metric (ROC-AUC for links, accuracy for nodes), evaluated
  after every epoch (for train-and-prune: only in the fine-tuning phase, at the final
  sparsity); test metrics are computed once, for the selected checkpoint.
* ``train_seconds`` is wall-clock of the training steps only (forward, backward, optimizer,
  mask updates, negative sampling); evaluation and FLOP measurement are outside it.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import distributed, ops, paper, regimes
from ._failpoints import failpoint, perturb_point
from .flops import StepFlops, measure_flops
from .graph import Adjacency
from .models import build_model
from .nn import MIN_SPARSE_NUMEL, SparseLinear, _check_sparsity, sparse_layers, sparsify

__all__ = ["TrainConfig", "LinkTask", "NodeTask", "make_task", "run_dense", "run_train_and_prune",
           "run_sparse_training", "REGIMES", "sparsity_report"]

REGIMES = ("dense", "train-and-prune", "sparse-training")


#: Model names: PyG encoders (gnnsparse.models.MODELS) and the paper's MLP on walk embeddings.
MODEL_CHOICES = ("sage", "gcn", "paper-mlp")


@dataclass
class TrainConfig:
    """Hyper-parameters shared by all regimes (defaults mirror the paper's setup).

    Attributes:
        epochs: E, training epochs (dense and sparse training; train-and-prune's dense phase).
        finetune_epochs: train-and-prune fine-tuning epochs; None means ``epochs // 2``.
        batch_size: supervision items (positive pairs or nodes) per step.
        lr, weight_decay: Adam settings.
        hidden, num_layers, model, dropout: encoder shape (``model`` is ``"sage"`` or ``"gcn"``).
        seed: seeds the model init, the batch order and the training negatives.
        distribution: ``"uniform"`` or ``"erk"`` per-layer sparsity (both regimes).
        pruning: ``"layer"`` or ``"global"`` magnitude ranking, both regimes: train-and-prune's
            pruning threshold, and sparse training's drop/grow (``DynamicSparseTraining(scope=...)``).
        prune_schedule: ``"gradual"`` (Zhu & Gupta cubic) or ``"oneshot"``.
        prune_start, prune_end: fractions of the dense phase where gradual pruning runs.
        grow: ``"rigl"`` or ``"set"`` (sparse training).
        update_interval: ΔT in steps between mask updates (pruning and drop/grow).
        drop_fraction: α for drop-and-grow (cosine-decayed).
        update_end: fraction of training after which masks stop changing (RigL: 0.75).
        backend: sparse op backend (None = auto).
        min_numel: layers with fewer weights stay dense.
        layout: ``"csr"`` or ``"bsr"`` (both regimes: block magnitude pruning / block drop-and-grow,
            block-sparse kernels); layers whose shape ``blocksize`` does not divide stay dense.
        blocksize: BSR block edge (``layout="bsr"`` only).
        executor: ``"auto"`` (measured dense-vs-sparse choice per layer, :mod:`gnnsparse.chooser`),
            ``"sparse"`` or ``"dense"``; sparse layers the chooser runs dense count dense FLOPs.
        loss_chunk: link tasks only. None (default): each step's loss is one decode of the whole
            batch. An int ``c >= 1``: the encoder runs once, its output ``z`` is detached, the
            batch's pairs are decoded and their BCE (summed, divided by the batch size: the same
            mean) back-propagated ``c`` pairs at a time into the detached ``z`` and the decoder,
            then ``z.backward(dL/dz)`` once through the encoder. Same loss and gradients (up to
            float summation order), memory ``O(N·hidden + c·hidden)`` whatever the batch size, so
            a batch may hold all training pairs (``batch_size >= n_train``: one step per epoch).
            Node tasks ignore it (their loss reads rows of one ``[N, classes]`` output).
        max_steps_per_epoch: None (default): an epoch is every batch of the shuffled training items.
            An int ``k >= 1``: an epoch stops after its first ``k`` batches (a random ``k·batch_size``
            subset of the items, fresh each epoch); step-based schedules (pruning, drop/grow
            ``update_end``) count the capped epochs.
    """

    epochs: int = 30
    finetune_epochs: int | None = None
    batch_size: int = 512
    lr: float = 0.005
    weight_decay: float = 0.0
    hidden: int = 128
    num_layers: int = 2
    model: str = "sage"
    dropout: float = 0.0
    seed: int = 0
    distribution: str = "uniform"
    pruning: str = "layer"
    prune_schedule: str = "gradual"
    prune_start: float = 0.25
    prune_end: float = 0.75
    grow: str = "rigl"
    update_interval: int = 25
    drop_fraction: float = 0.3
    update_end: float = 0.75
    backend: str | None = None
    min_numel: int = MIN_SPARSE_NUMEL
    layout: str = "csr"
    blocksize: int | None = None
    executor: str = "auto"
    loss_chunk: int | None = None
    max_steps_per_epoch: int | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.finetune_epochs is not None and self.finetune_epochs < 0:
            raise ValueError(f"finetune_epochs must be >= 0, got {self.finetune_epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("loss_chunk", "max_steps_per_epoch"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be None or an int >= 1, got {v!r}")
        if self.update_interval < 1:
            raise ValueError(f"update_interval must be >= 1, got {self.update_interval}")
        if self.distribution not in regimes.DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {regimes.DISTRIBUTIONS}, got {self.distribution!r}")
        if self.pruning not in regimes.PRUNING_MODES:
            raise ValueError(f"pruning must be one of {regimes.PRUNING_MODES}, got {self.pruning!r}")
        if self.prune_schedule not in regimes.PRUNE_SCHEDULES:
            raise ValueError(f"prune_schedule must be one of {regimes.PRUNE_SCHEDULES}")
        if self.grow not in regimes.GROW_MODES:
            raise ValueError(f"grow must be one of {regimes.GROW_MODES}, got {self.grow!r}")
        if not 0.0 <= self.drop_fraction < 1.0:
            raise ValueError(f"drop_fraction must be in [0, 1), got {self.drop_fraction}")
        if self.layout not in ("csr", "bsr"):
            raise ValueError(f"layout must be 'csr' or 'bsr', got {self.layout!r}")
        if self.layout == "bsr" and (not isinstance(self.blocksize, int) or self.blocksize < 1):
            raise ValueError(f"layout='bsr' needs blocksize >= 1, got {self.blocksize!r}")
        if self.layout == "csr" and self.blocksize not in (None, 1):
            raise ValueError(f"blocksize is only used with layout='bsr', got {self.blocksize!r}")
        if self.model not in MODEL_CHOICES:
            raise ValueError(f"model must be one of {MODEL_CHOICES}, got {self.model!r}")
        if self.executor not in ("auto", "sparse", "dense"):
            raise ValueError(f"executor must be 'auto', 'sparse' or 'dense', got {self.executor!r}")
        for name in ("prune_start", "prune_end", "update_end"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")

    @property
    def finetune(self) -> int:
        return self.epochs // 2 if self.finetune_epochs is None else self.finetune_epochs


# ---------------------------------------------------------------------------------------- tasks
class _Task:
    """What both tasks share: the data, the batch size, the structural features and the adjacency."""

    def __init__(self, data, batch_size: int, normalization: str):
        self.data = data
        self.batch_size = batch_size
        self.features = data.node_features().float()
        self.adj = Adjacency.from_sparse_csr(data.adjacency(normalization), normalization).to_sparse_csr()

    def paper_embeddings(self, src, dst, time, dim: int, seed: int) -> torch.Tensor:
        """Walk + skip-gram embeddings of the training graph for ``--model paper-mlp`` (see
        :mod:`gnnsparse.paper`), computed once per (dim, seed) and task; not part of training
        FLOPs or time."""
        cache = self.__dict__.setdefault("_paper_embeddings", {})
        if (dim, seed) not in cache:
            cache[(dim, seed)] = paper.graph_embeddings(src, dst, time, self.data.num_nodes, dim, seed=seed)
        return cache[(dim, seed)]

    @staticmethod
    def batch_key(batch) -> tuple:
        """Shape key of a batch: steps with equal keys execute the same FLOPs."""
        return tuple(batch[0].shape)


class _InjectGrad(torch.autograd.Function):
    """``root = _InjectGrad.apply(z, [g]); root.backward()`` is ``z.backward(g)``, except that ``g`` is
    popped from its holder list inside the backward, so the caller keeps no reference to it."""

    @staticmethod
    def forward(ctx, z, holder):
        ctx.holder = holder
        return z.new_zeros(())

    @staticmethod
    def backward(ctx, _):
        return ctx.holder.pop(), None


#: Evaluation pairs decoded per call (bounds the decoder's [pairs, hidden] intermediates).
DECODE_CHUNK = 65536


class LinkTask(_Task):
    """Link prediction on a ``LinkData``: BCE on positive pairs vs. fresh random negatives.

    Metrics: ROC-AUC, AP and accuracy (logit > 0) on all pairs of a split, and the same on the
    pairs whose two nodes both appear in training (``*_seen``).
    """

    kind = "link"
    primary = "auc"

    def __init__(self, data, batch_size: int, normalization: str):
        super().__init__(data, batch_size, normalization)
        self.seen = data.seen_mask

    def build_model(self, cfg: TrainConfig) -> nn.Module:
        if cfg.model == "paper-mlp":
            u, v = self.data.train_pos.numpy()
            return paper.PaperLinkMLP(self.paper_embeddings(u, v, self.data.train_time.numpy(), 8, cfg.seed))
        return build_model("link", self.data.num_nodes, self.features.shape[1], cfg.hidden, cfg.model,
                           num_layers=cfg.num_layers, dropout=cfg.dropout)

    def epoch_batches(self, gen: torch.Generator, compact: bool = False, start: int = 0,
                      gen_state: torch.Tensor | None = None):
        """Batches ``(pairs [2, 2b], labels [2b])``: ``b`` shuffled training positives, then ``b`` fresh
        negatives. ``compact=True`` (the chunked loss): the same pairs as int32 (when the node ids
        fit) and the labels as bool, 9 instead of 20 bytes per pair for a batch of all pairs.

        Resuming mid-epoch: with ``gen`` in its state at the start of the epoch, ``start=i`` yields
        the epoch's batches ``i, i+1, ...`` exactly as an uninterrupted epoch would: the permutation
        is drawn again; the negatives of batches ``< i`` are not drawn when ``gen_state`` (the
        generator's state after batch ``i - 1``, a ByteTensor from ``gen.get_state()``) is given,
        else they are drawn and discarded."""
        pos = self.data.train_pos
        perm = torch.randperm(pos.shape[1], generator=gen)
        small = compact and self.data.num_nodes <= torch.iinfo(torch.int32).max
        if start and gen_state is not None:
            gen.set_state(gen_state)
        for i_batch, i in enumerate(range(0, perm.numel(), self.batch_size)):
            idx = perm[i:i + self.batch_size]
            if i_batch < start:
                if gen_state is None:
                    self.data.sample_train_negatives(idx.numel(), gen)
                continue
            p = pos[:, idx]
            n = self.data.sample_train_negatives(idx.numel(), gen)
            if small:
                p, n = p.to(torch.int32), n.to(torch.int32)
            if compact:
                labels = torch.cat([torch.ones(idx.numel(), dtype=torch.bool),
                                    torch.zeros(n.shape[1], dtype=torch.bool)])
            else:
                labels = torch.cat([torch.ones(idx.numel()), torch.zeros(n.shape[1])])
            batch = torch.cat([p, n], 1), labels
            del p, n, idx  # not kept alive by the suspended generator (a full batch: 3 x [2, B] int64)
            yield batch
            del batch

    def loss(self, model, batch, total: int | None = None) -> torch.Tensor:
        """Mean BCE of the batch's pairs; with ``total``: their summed BCE divided by ``total`` (a
        data-parallel rank's part of a global batch of ``total`` pairs, see
        :func:`gnnsparse.distributed.shard_batch`; 0.0 for an empty part)."""
        pairs, labels = batch
        logits = model(self.features, self.adj, pairs, self.seen)
        if total is None:
            return F.binary_cross_entropy_with_logits(logits, labels)
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="sum") / total

    def chunked_step_flops(self, model, batch, chunk: int) -> int:
        """Executed FLOPs of ``loss_backward_chunked(model, batch, chunk)`` without decoding the whole
        batch under the FLOP counter (untimed; the gradients it leaves behind are to be discarded).

        Every full chunk executes the same FLOPs, so three short runs suffice: ``A`` = encoder +
        chunk 0, ``B`` = encoder + chunks 0 and 1, ``L`` = encoder + the last (partial) chunk; the
        encoder's forward/backward is ``E = 2A - B``, a full chunk ``C = B - A``, and the step
        ``E + (#full chunks)·C + (L - E)``. Batches of at most 3 chunks are measured whole.
        """
        total = batch[0].shape[1]
        n_full, rem = divmod(total, chunk)
        if n_full + (rem > 0) <= 3:
            return measure_flops(lambda: self.loss_backward_chunked(model, batch, chunk))
        run = lambda starts: measure_flops(  # noqa: E731
            lambda: self.loss_backward_chunked(model, batch, chunk, starts=starts))
        a, b = run([0]), run([0, chunk])
        enc, per_chunk = 2 * a - b, b - a
        flops = enc + n_full * per_chunk
        if rem:
            flops += run([n_full * chunk]) - enc
        return flops

    def loss_backward_chunked(self, model, batch, chunk: int, starts=None, total: int | None = None) -> torch.Tensor:
        """Back-propagate the batch's loss decoded ``chunk`` pairs at a time (``loss_chunk``).

        Accumulates into the parameters' ``.grad`` exactly what ``loss(model, batch).backward()``
        would (up to float summation order) and returns the (detached) loss. The encoder runs
        forward and backward once; its output is detached so that each chunk's backward stops at
        the embedding ``z`` and only ``[chunk, hidden]`` intermediates are alive at a time. When
        the loss is not finite, the encoder's backward is skipped (the caller raises). Each chunk
        decodes from its own rows ``z[unique(chunk nodes)]`` and adds their gradient into one
        ``[N, hidden]`` buffer with ``index_add_``. ``total`` (default: the batch's pairs) divides the
        summed BCE (a data-parallel rank's part of a global batch, see :meth:`loss`).
        """
        pairs, labels = batch
        total = pairs.shape[1] if total is None else total
        z = model.encoder(self.features, self.adj, self.seen)
        zd = z.detach()
        del batch
        loss = torch.zeros((), dtype=torch.float64)
        gz = torch.zeros_like(z) if z.requires_grad else None
        for i in (range(0, pairs.shape[1], chunk) if starts is None else starts):  # starts: FLOP measurement only
            p = pairs[:, i:i + chunk]
            if gz is not None:
                # decode from the chunk's own rows of z, then scatter their gradient into gz: no
                # [N, hidden] gradient per chunk (what indexing z itself would allocate and zero)
                nodes, local = torch.unique(p.long(), return_inverse=True)
                zc = zd[nodes].requires_grad_()
                logits = model.decode(zc, local)
            else:
                logits = model.decode(zd, p)
            part = F.binary_cross_entropy_with_logits(logits, labels[i:i + chunk].to(logits.dtype),
                                                      reduction="sum") / total
            if part.requires_grad:
                part.backward()
            if gz is not None:
                gz.index_add_(0, nodes, zc.grad)
                del zc, nodes, local
            loss += part.detach().double()
        dtype = z.dtype
        if torch.isfinite(loss) and gz is not None:
            # hand dL/dz to the encoder's backward without keeping a reference here, and drop z
            # (the graph does not save it): both [N, hidden] buffers are freed as soon as the
            # engine has consumed them instead of living through the whole encoder backward
            root = _InjectGrad.apply(z, [gz])
            del z, zd, gz
            root.backward()
        return loss.to(dtype)

    @torch.no_grad()
    def evaluate(self, model, split: str) -> dict:
        from sklearn.metrics import average_precision_score, roc_auc_score

        model.eval()
        pos, neg = getattr(self.data, f"{split}_pos"), getattr(self.data, f"{split}_neg")
        z = model.encoder(self.features, self.adj, self.seen)
        pairs = torch.cat([pos, neg], 1)
        # in chunks: the decoder's [pairs, hidden] intermediates of a large graph's evaluation
        # pairs would not fit in memory at once (12M pairs x 128 floats = 6 GB)
        scores = np.concatenate([model.decode(z, pairs[:, i:i + DECODE_CHUNK]).double().numpy()
                                 for i in range(0, pairs.shape[1], DECODE_CHUNK)] or [np.zeros(0)])
        labels = np.concatenate([np.ones(pos.shape[1]), np.zeros(neg.shape[1])])
        seen = self.data.pairs_both_seen(pairs).numpy()
        model.train()
        out = {}
        for suffix, sel in (("", np.ones_like(seen, dtype=bool)), ("_seen", seen)):
            y, s = labels[sel], scores[sel]
            if len(np.unique(y)) < 2:
                out.update({f"auc{suffix}": float("nan"), f"ap{suffix}": float("nan"),
                            f"acc{suffix}": float("nan")})
                continue
            out[f"auc{suffix}"] = float(roc_auc_score(y, s))
            out[f"ap{suffix}"] = float(average_precision_score(y, s))
            out[f"acc{suffix}"] = float(((s > 0) == (y > 0.5)).mean())
        out["pairs"] = int(labels.size)
        out["pairs_seen"] = int(seen.sum())
        return out


class NodeTask(_Task):
    """Node classification on a ``NodeData``: cross-entropy on mini-batches of training nodes.

    Metrics: accuracy and macro-F1 on the split's nodes.
    """

    kind = "node"
    primary = "accuracy"

    def __init__(self, data, batch_size: int, normalization: str):
        super().__init__(data, batch_size, normalization)
        self.train_idx = torch.nonzero(data.train_mask).reshape(-1)

    def build_model(self, cfg: TrainConfig) -> nn.Module:
        if cfg.model == "paper-mlp":
            ei = self.data.edge_index.numpy()
            half = ei.shape[1] // 2  # edge_index holds every (u, v) and then every (v, u)
            emb = self.paper_embeddings(ei[0, :half], ei[1, :half], None, 64, cfg.seed)
            return paper.PaperNodeMLP(emb, self.data.num_classes)
        return build_model("node", self.data.num_nodes, self.features.shape[1], cfg.hidden, cfg.model,
                           num_classes=self.data.num_classes, num_layers=cfg.num_layers, dropout=cfg.dropout)

    def epoch_batches(self, gen: torch.Generator, start: int = 0, gen_state: torch.Tensor | None = None):
        """Batches ``(node ids [b],)`` of shuffled training nodes; ``start``/``gen_state`` resume
        mid-epoch as in :meth:`LinkTask.epoch_batches` (only the permutation draws from ``gen``)."""
        perm = self.train_idx[torch.randperm(self.train_idx.numel(), generator=gen)]
        if start and gen_state is not None:
            gen.set_state(gen_state)
        for i in range(start * self.batch_size, perm.numel(), self.batch_size):
            yield (perm[i:i + self.batch_size],)

    def loss(self, model, batch, total: int | None = None) -> torch.Tensor:
        """Mean cross-entropy of the batch's nodes; with ``total``: summed, divided by ``total`` (see
        :meth:`LinkTask.loss`)."""
        (idx,) = batch
        logits = model(self.features, self.adj)
        if total is None:
            return F.cross_entropy(logits[idx], self.data.y[idx])
        return F.cross_entropy(logits[idx], self.data.y[idx], reduction="sum") / total

    @torch.no_grad()
    def evaluate(self, model, split: str) -> dict:
        from sklearn.metrics import f1_score

        model.eval()
        mask = getattr(self.data, f"{split}_mask")
        pred = model(self.features, self.adj).argmax(1)[mask].numpy()
        y = self.data.y[mask].numpy()
        model.train()
        return {"accuracy": float((pred == y).mean()) if y.size else float("nan"),
                "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)) if y.size else float("nan"),
                "nodes": int(y.size)}


def make_task(data, cfg: TrainConfig):
    """The task object for ``data`` (``data.task`` is ``"link"`` or ``"node"``)."""
    norm = "mean" if cfg.model == "sage" else "gcn"
    if data.task == "link":
        return LinkTask(data, cfg.batch_size, norm)
    if data.task == "node":
        return NodeTask(data, cfg.batch_size, norm)
    raise ValueError(f"unknown task {data.task!r}")


# ------------------------------------------------------------------------------------- helpers
def _steps_per_epoch(task, cfg: TrainConfig | None = None) -> int:
    n = task.data.train_pos.shape[1] if task.kind == "link" else task.train_idx.numel()
    steps = max(1, math.ceil(n / task.batch_size))
    if cfg is not None and cfg.max_steps_per_epoch is not None:
        steps = min(steps, cfg.max_steps_per_epoch)
    return steps


def sparsity_report(model: nn.Module, kept_dense: dict[str, str]) -> dict:
    """Structural sparsity of the sparsified layers, the whole Linear-weight set, and per layer."""
    from .nn import _linear_dims, linear_like

    layers, stored_sp, numel_sp, stored_all, numel_all = [], 0, 0, 0, 0
    for name, m in model.named_modules():
        if isinstance(m, SparseLinear):
            numel, nnz = m.numel_dense, m.nnz
            kind = m.layout if m.layout == "csr" else f"bsr{m.blocksize}"
            ran = m.last_executor
            if ran == "dense":  # the chooser ran it dense: its FLOPs are counted dense
                kind += " (ran dense; dense FLOPs counted)"
            stored_sp += nnz
            numel_sp += numel
        elif linear_like(m):
            in_f, out_f = _linear_dims(m)
            numel, nnz, kind = in_f * out_f, int((m.weight != 0).sum()), "dense"
            kind = f"dense (kept: {kept_dense[name]})" if name in kept_dense else "dense"
        else:
            continue
        sparse = isinstance(m, SparseLinear)
        stored_all += nnz if sparse else numel
        numel_all += numel
        layers.append({"name": name, "kind": kind, "numel": numel, "nnz": nnz if sparse else numel,
                       "sparsity": 1.0 - (nnz if sparse else numel) / numel if numel else 0.0,
                       "executor": m.last_executor if sparse else "dense"})
    return {
        "measured_sparsity": 1.0 - stored_sp / numel_sp if numel_sp else 0.0,
        "model_sparsity": 1.0 - stored_all / numel_all if numel_all else 0.0,
        "layers": layers,
    }


@dataclass
class _Phase:
    name: str
    epochs: int
    select: bool
    before: Callable[[int], None] | None = None
    after: Callable[[int], int] | None = None
    on_epoch: Callable[[int], None] | None = None
    max_steps: int | None = None
    loss_chunk: int | None = None


@dataclass
class _RunState:
    flops: StepFlops = field(default_factory=StepFlops)
    seconds: dict = field(default_factory=dict)
    eval_seconds: float = 0.0
    step: int = 0
    best_val: float = -math.inf
    best_state: dict | None = None
    best_epoch: int = -1
    best_metrics: dict | None = None
    curve: list = field(default_factory=list)
    mask_checks: int = 0  # cross-rank mask checks after mask updates (data-parallel runs)


#: What restoring a damaged or foreign saved state raises (turned into one clear ValueError).
_DAMAGED = (KeyError, RuntimeError, ValueError, TypeError, IndexError, AttributeError)
#: The phases of each regime, in order: a saved state of another phase is refused.
_PHASES = {"dense": ("dense",), "train-and-prune": ("dense-prune", "finetune"), "sparse-training": ("sparse",)}


class _RunCheckpoint:
    """One regime run's link to a :class:`gnnsparse.checkpoint.Checkpointer`: what to save, and
    where and how to resume (the file handling is the checkpointer's, the regime's state its own)."""

    def __init__(self, checkpointer, regime: str, sparsity: float, cfg: TrainConfig, epochs: int):
        from .checkpoint import run_key

        self.cp = checkpointer
        self.key = run_key(regime, sparsity, cfg.seed)
        self.config = asdict(cfg)
        self.epochs = epochs  # of all phases (progress of a finished run)
        self.done = checkpointer.finished(self.key)
        self.saved = None if self.done is not None else checkpointer.load_run(self.key, self.config)
        self.get_regime: Callable[[], dict] = dict
        self.set_regime: Callable[[dict], None] = lambda state: None
        from . import chooser

        # GNNSPARSE_EXECUTOR / chooser.set_override win over measured and restored decisions of
        # executor="auto" layers: one set otherwise at the resume would change the kernels silently
        self.override = (chooser.get_override() or chooser._env_override()) if cfg.executor == "auto" else None
        if self.saved is not None and self.saved.get("executor_override", self.override) != self.override:
            raise ValueError(f"checkpoint {checkpointer.path}: run {self.key} ran with executor override "
                             f"{self.saved.get('executor_override')!r}, now {self.override!r} (GNNSPARSE_EXECUTOR "
                             f"or gnnsparse.chooser.set_override); resume with the same setting")
        self.backend = ops.resolve_backend(cfg.backend, "cpu")
        self.force_backend = None  # the checkpoint's backend, where "auto" would now pick another
        if self.saved is not None and self.saved.get("phase") not in _PHASES[regime]:
            raise ValueError(f"checkpoint {checkpointer.path}: run {self.key} is saved in phase "
                             f"{self.saved.get('phase')!r}, which is not a phase of {regime} "
                             f"({', '.join(_PHASES[regime])}); the checkpoint is damaged")
        saved = None if self.saved is None else self.saved.get("backend")
        if self.saved is not None and saved not in ops.VALID_BACKENDS:
            raise ValueError(f"checkpoint {checkpointer.path}: run {self.key} has saved backend {saved!r}, not one "
                             f"of {', '.join(ops.VALID_BACKENDS)}; the checkpoint is damaged")
        if saved is not None and saved != self.backend:
            try:
                ops.check_backend_device(saved, torch.device("cpu"))
            except (ImportError, RuntimeError, ValueError) as e:
                raise ValueError(f"checkpoint {checkpointer.path}: run {self.key} ran the sparse kernels of backend "
                                 f"{saved!r}, which cannot run now ({str(e).splitlines()[0]}); resume where it is "
                                 f"available") from None
            self.backend = self.force_backend = saved

    @classmethod
    def open(cls, checkpointer, regime, sparsity, cfg, epochs) -> "_RunCheckpoint | None":
        return None if checkpointer is None else cls(checkpointer, regime, sparsity, cfg, epochs)

    @property
    def resume_phase(self) -> str | None:
        """The phase the saved state is in (None: nothing to resume, or already restored)."""
        return None if self.saved is None else self.saved["phase"]

    def due(self, step: int) -> bool:
        return self.cp.due(step)

    def finished_row(self, progress) -> dict:
        if progress is not None:
            progress.update(self.epochs)
        return self.done

    def save(self, phase: str, epoch: int, batch: int, model, optimizer, state: "_RunState",
             epoch_gen_state: torch.Tensor, gen: torch.Generator, loss: float | None) -> None:
        """Checkpoint the run at ``(phase, epoch, next batch)`` (outside timed sections).

        Data-parallel: called on every rank at the same step (collectives inside); the saved FLOPs
        are summed over ranks and the seconds maxed, so the state does not depend on the world size;
        only rank 0's checkpointer writes the file (the others' are ``writer=False``)."""
        flops = state.flops.state_dict()
        seconds, eval_seconds = _global_seconds(state)
        if distributed.enabled():
            phases = sorted(flops["by_phase"])
            summed = distributed.reduce_numbers([int(flops["by_phase"][p]) for p in phases], "sum")
            flops["by_phase"] = {p: int(v) for p, v in zip(phases, summed)}
        self.cp.save_run(self.key, self.config, {
            "phase": phase, "epoch": epoch, "batch": batch, "loss": loss, "backend": self.backend,
            "executor_override": self.override,
            "model": model.state_dict(), "executors": _executor_state(model),
            "optimizer": optimizer.state_dict(), "regime": self.get_regime(),
            "rng": {"epoch_start": epoch_gen_state, "batch": gen.get_state(), "torch": torch.get_rng_state()},
            "flops": flops, "world_size": distributed.world_size(),
            "run": {"step": state.step, "seconds": seconds, "eval_seconds": eval_seconds,
                    "best_val": state.best_val, "best_state": state.best_state, "best_epoch": state.best_epoch,
                    "best_metrics": state.best_metrics, "curve": state.curve, "mask_checks": state.mask_checks},
        })

    def restore(self, model, optimizer, state: "_RunState", gen: torch.Generator, epochs: int):
        """Load the saved state into the run's objects (once); returns ``(epoch, next batch, the batch
        generator's state after the last done batch, the last loss)`` and leaves ``gen`` in its state at
        the start of that epoch.

        Every saved field is checked before training continues (``epochs``: the phase's epoch count):
        a damaged or hand-edited checkpoint (a tensor of the wrong shape, a CSR structure that is not
        valid, an Adam moment that does not fit its parameter, a position outside the phase, a random
        state of the wrong size, a missing field) is refused with a ValueError naming the file, the
        run and the problem, never reaching the kernels.
        """
        s, self.saved = self.saved, None
        try:
            epoch, batch = s["epoch"], s["batch"]
            if not (type(epoch) is int and type(batch) is int and 0 <= epoch <= epochs and batch >= 0):
                raise ValueError(f"position epoch {epoch!r}, batch {batch!r} is not a position of this "
                                 f"phase (epoch 0..{epochs}, batch >= 0)")
            if s["loss"] is not None and not isinstance(s["loss"], float):
                raise ValueError(f"loss {s['loss']!r} is not a number")
            r = s["run"]
            if r["best_state"] is not None:  # what the run selected so far must fit the model too
                model.load_state_dict(r["best_state"])
            model.load_state_dict(s["model"])
            optimizer.load_state_dict(s["optimizer"])
            _check_optimizer_state(optimizer, model)
            self.set_regime(s["regime"])
            state.flops.load_state_dict(s["flops"])
            _restore_executors(model, s["executors"], self.cp.path)
            step, seconds, eval_seconds = int(r["step"]), dict(r["seconds"]), float(r["eval_seconds"])
            best_val, best_epoch = float(r["best_val"]), int(r["best_epoch"])
            best_metrics, curve = r["best_metrics"], list(r["curve"])
            if best_metrics is not None and not isinstance(best_metrics, dict):
                raise ValueError(f"best_metrics {best_metrics!r} is not a dict")
            if not all(isinstance(c, dict) and {"phase", "epoch", "loss", "val"} <= set(c) for c in curve):
                raise ValueError("the curve holds an entry that is not a dict of phase, epoch, loss and val")
            if not distributed.is_main():  # the saved totals are global: counted once, on rank 0
                state.flops.by_phase = type(state.flops.by_phase)(int, {p: 0 for p in state.flops.by_phase})
            mask_checks = int(r.get("mask_checks", 0))
            torch.set_rng_state(s["rng"]["torch"])
            gen.set_state(s["rng"]["epoch_start"])
            resume_gen = s["rng"]["batch"]
            torch.Generator().set_state(resume_gen)  # the right type and size, or an error now
        except _DAMAGED as e:  # a checkpoint of another model or gnnsparse version, or a damaged one
            raise self.refuse(e) from None
        state.step, state.seconds, state.eval_seconds = step, seconds, eval_seconds
        state.best_val, state.best_state, state.best_epoch = best_val, r["best_state"], best_epoch
        state.best_metrics, state.curve = best_metrics, curve
        state.mask_checks = mask_checks
        return epoch, batch, resume_gen, s["loss"]

    def refuse(self, e: BaseException) -> ValueError:
        """The ValueError for a saved state that cannot be restored (``e``: what restoring raised):
        names the checkpoint file, the run, and the whole reason (every line of it)."""
        msg = " ".join(str(e).split()) or type(e).__name__  # load_state_dict's reason is on its 2nd line
        if isinstance(e, KeyError):
            msg = f"field {msg} is missing"
        if msg.startswith(f"checkpoint {self.cp.path}"):
            return ValueError(msg)
        return ValueError(f"checkpoint {self.cp.path}: the saved state of run {self.key} does not fit this run: "
                          f"{msg}")

    def finish(self, row: dict, model) -> dict:
        """Record the finished run (result row and final model state); returns the row as saved."""
        return self.cp.finish_run(self.key, row, model.state_dict())


def _executor_state(model: nn.Module) -> dict:
    """Each sparse layer's executor decision: pinned (restored) and measured choice with its key."""
    out = {}
    for name, layer in sparse_layers(model).items():
        choice = None
        if layer._choice is not None:
            (nnz, threads, _dtype, env, override), c = layer._choice
            choice = {"nnz": nnz, "threads": threads, "env": env, "override": override, "executor": c.executor}
        out[name] = {"pinned": layer._pinned_choice, "choice": choice}
    return out


def _check_optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    """Each restored per-parameter optimizer tensor (Adam's moments) has its parameter's shape, dtype
    and device; raises ValueError naming the parameter otherwise (a restored moment of another nnz
    would fail inside the optimizer step, or broadcast silently)."""
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for field_name, value in optimizer.state.get(p, {}).items():
                if not torch.is_tensor(value) or field_name == "step":
                    continue
                if value.shape != p.shape or value.dtype != p.dtype or value.device != p.device:
                    raise ValueError(f"optimizer state {field_name} of parameter {names.get(id(p), '?')} has "
                                     f"shape {tuple(value.shape)}, {value.dtype}, but the parameter is "
                                     f"{tuple(p.shape)}, {p.dtype}")


def _restore_executors(model: nn.Module, saved: dict, path: str) -> None:
    """Put back the executor decisions of :func:`_executor_state` (never measured again).

    Raises:
        ValueError: a layer is missing from the saved decisions, or a saved executor cannot run now.
    """
    from . import chooser

    for name, layer in sparse_layers(model).items():
        if name not in saved:
            raise ValueError(f"checkpoint {path} has no executor decision for sparse layer {name}")
        st = saved[name]
        choice = st["choice"]
        for ex in (st["pinned"], None if choice is None else choice["executor"]):
            if ex is None:
                continue
            if ex not in ("dense", layer.layout):
                raise ValueError(f"checkpoint {path}: layer {name} ran executor {ex!r}, not 'dense' or "
                                 f"{layer.layout!r}")
            if ex not in chooser.candidates(layer.layout):
                raise ValueError(f"checkpoint {path}: layer {name} ran executor {ex!r}, which is not available "
                                 f"now")
        layer._pinned_choice = st["pinned"]
        layer._choice = None if choice is None else (
            (int(choice["nnz"]), int(choice["threads"]), layer.values.dtype, choice["env"], choice["override"]),
            chooser.Choice(choice["executor"], layer.layout, "restored"))


def _run_phase(model, task, optimizer, phase: _Phase, state: _RunState, gen: torch.Generator, progress=None,
               ckpt: "_RunCheckpoint | None" = None):
    chunked = phase.loss_chunk is not None and task.kind == "link"
    start_epoch, start_batch, resume_gen, last_loss = 0, 0, None, None
    if ckpt is not None and ckpt.resume_phase == phase.name:
        start_epoch, start_batch, resume_gen, last_loss = ckpt.restore(model, optimizer, state, gen, phase.epochs)
        if progress is not None and start_epoch:
            progress.update(start_epoch)
    loss = None
    state.seconds.setdefault(phase.name, 0.0)
    dp = distributed.enabled()  # data-parallel: this rank trains on its part of each global batch
    for epoch in range(start_epoch, phase.epochs):
        epoch_gen_state = gen.get_state()  # what a resume mid-epoch redraws the permutation from
        first, cur = (start_batch, resume_gen) if resume_gen is not None else (0, None)
        resume_gen = None
        if phase.max_steps is not None and first >= phase.max_steps:
            gen.set_state(cur)  # the epoch's capped steps were all done before the checkpoint
            batches = ()
        else:
            kw = dict(start=first, gen_state=cur)
            batches = task.epoch_batches(gen, compact=True, **kw) if chunked else task.epoch_batches(gen, **kw)
        for i_batch, batch in enumerate(batches, start=first):
            total = None
            if dp:  # every rank drew the same global batch (same generator): keep this rank's part
                batch, total = distributed.shard_batch(batch)
            part = {} if total is None else {"total": total}
            key = (phase.name, task.batch_key(batch))

            def measure(batch=batch):
                def fwd_bwd():
                    task.loss(model, batch, **part).backward()
                f = (task.chunked_step_flops(model, batch, phase.loss_chunk) if chunked
                     else measure_flops(fwd_bwd))
                optimizer.zero_grad(set_to_none=True)
                return f

            per_step = state.flops.per_step(key, measure)
            state.step += 1
            t0 = time.perf_counter()
            if phase.before:
                phase.before(state.step)
            optimizer.zero_grad(set_to_none=True)
            loss = (task.loss_backward_chunked(model, batch, phase.loss_chunk, **part) if chunked
                    else task.loss(model, batch, **part))
            if dp:  # sum the ranks' gradients (and losses: the global batch's mean loss on every rank)
                if not chunked:
                    loss.backward()
                loss = distributed.all_reduce_gradients(model.parameters(), loss.detach())
            if not torch.isfinite(loss):
                raise ValueError(f"training diverged in phase '{phase.name}' at step {state.step}: loss is "
                                 f"{loss.item()} (lower the learning rate)")
            if not chunked and not dp:
                loss.backward()
            optimizer.step()
            # drop the step's graph before the mask update: a layer whose nnz changes (global
            # drop-and-grow) gets values of a new shape, which a still-referenced graph would
            # reject at the next backward
            loss = loss.detach()
            extra = phase.after(state.step) if phase.after else 0
            state.seconds[phase.name] += time.perf_counter() - t0
            state.flops.add(phase.name, per_step + extra)
            failpoint(f"step-{phase.name}")
            if ckpt is not None and ckpt.due(state.step):
                ckpt.save(phase.name, epoch, i_batch + 1, model, optimizer, state, epoch_gen_state, gen,
                          float(loss.item()))
            if phase.max_steps is not None and i_batch + 1 >= phase.max_steps:
                break  # before the generator draws the next batch (and its negatives)
        # nothing reads the last step's gradients again (the next step zeroes them): free them
        # before the evaluation (the embedding's is [N, hidden])
        optimizer.zero_grad(set_to_none=True)
        if phase.on_epoch:
            phase.on_epoch(epoch)
        t0 = time.perf_counter()
        val = distributed.broadcast_object(task.evaluate(model, "val"))  # rank 0's: one selection everywhere
        state.eval_seconds += time.perf_counter() - t0
        failpoint("evaluate")
        loss_value = float(loss.item()) if loss is not None else last_loss
        state.curve.append({"phase": phase.name, "epoch": epoch, "loss": loss_value, "val": val[task.primary]})
        if phase.select and (val[task.primary] > state.best_val or state.best_state is None):
            state.best_val = val[task.primary]
            state.best_state = copy.deepcopy(model.state_dict())
            state.best_epoch = len(state.curve) - 1
            state.best_metrics = val
        if progress is not None:
            progress.update(1)
            progress.set_postfix_str(f"{phase.name} val {task.primary}={val[task.primary]:.3f}")
        if ckpt is not None:  # after the evaluation and the selection: the next epoch starts afresh
            ckpt.save(phase.name, epoch + 1, 0, model, optimizer, state, gen.get_state(), gen, loss_value)
        loss, last_loss = None, loss_value


def _global_seconds(state: _RunState) -> tuple[dict, float]:
    """The run's seconds per phase and evaluation seconds, maxed over ranks (data-parallel: the
    slowest rank's time is the step's time); this rank's own without a process group."""
    phases = sorted(state.seconds)
    vals = distributed.reduce_numbers([float(state.seconds[p]) for p in phases] + [float(state.eval_seconds)],
                                      "max")
    return dict(zip(phases, vals[:-1])), vals[-1]


def _check_masks(model, state: _RunState, what: str, masks: dict | None = None, count: bool = True) -> None:
    """Data-parallel runs: verify that all ranks hold the same sparse structures (and pruning masks)
    after ``what`` (:func:`gnnsparse.distributed.check_masks`); counted in ``state.mask_checks``."""
    if not distributed.enabled():
        return
    if perturb_point("mask-check"):  # tests: make this rank's mask differ from the others'
        layers = sparse_layers(model)
        if layers:
            layer = next(iter(layers.values()))
            m = layer.mask()
            m[0, 0] = ~m[0, 0]
            layer.set_mask(m)
        elif masks:
            m = next(iter(masks.values()))
            m.view(-1)[0] = ~m.view(-1)[0]
    distributed.check_masks(model, what, masks)
    if count:
        state.mask_checks += 1


def _finish(regime, model, task, state: _RunState, cfg: TrainConfig, sparsity, kept, extra=None) -> dict:
    import os

    dump = bool(os.environ.get(distributed.RANK_DUMP_ENV))
    last = copy.deepcopy(model.state_dict()) if dump else None
    model.load_state_dict(state.best_state)
    t0 = time.perf_counter()
    test = distributed.broadcast_object(task.evaluate(model, "test"))
    state.eval_seconds += time.perf_counter() - t0
    seconds, eval_seconds = _global_seconds(state)
    flops_by_phase = dict(state.flops.by_phase)
    dist_info = None
    if distributed.enabled():
        phases = sorted(flops_by_phase)
        flops_by_phase = dict(zip(phases, distributed.reduce_numbers(
            [int(flops_by_phase[p]) for p in phases], "sum")))
        flops_by_rank = distributed.gather_numbers([state.flops.total])
        seconds_by_rank = distributed.gather_numbers([float(sum(state.seconds.values()))])
        dist_info = {"mask_checks": state.mask_checks, "flops_by_rank": [int(f) for (f,) in flops_by_rank],
                     "train_seconds_by_rank": [float(s) for (s,) in seconds_by_rank]}
    rep = sparsity_report(model, kept)
    row = {
        "regime": regime,
        "target_sparsity": sparsity,
        "measured_sparsity": rep["measured_sparsity"] if regime != "dense" else 0.0,
        "model_sparsity": rep["model_sparsity"],
        "layers": rep["layers"],
        "metrics": {"val": state.best_metrics, "test": test},
        "primary_metric": task.primary,
        "best_epoch": state.best_epoch,
        "train_flops": sum(flops_by_phase.values()),
        "flops_by_phase": flops_by_phase,
        "train_seconds": sum(seconds.values()),
        "seconds_by_phase": seconds,
        "eval_seconds": eval_seconds,
        "steps": state.step,
        "world_size": distributed.world_size(),
        "seed": cfg.seed,
        "config": asdict(cfg),
        "curve": state.curve,
    }
    if dist_info is not None:
        row["distributed"] = dist_info
    if extra:
        row.update(extra)
    if dump:
        from .checkpoint import run_key

        distributed.dump_rank_state(run_key(regime, sparsity, cfg.seed), {
            "last": last, "selected": model.state_dict(), "mask_checks": state.mask_checks, "row": row})
    return row


def _phase_kw(cfg: TrainConfig) -> dict:
    return dict(max_steps=cfg.max_steps_per_epoch, loss_chunk=cfg.loss_chunk)


def _seeded(cfg: TrainConfig):
    torch.manual_seed(cfg.seed)
    return torch.Generator().manual_seed(cfg.seed)


def _adam(model, cfg):
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


# ------------------------------------------------------------------------------------- regimes
_CHECKPOINT_DOC = """
    ``checkpoint``: an optional :class:`gnnsparse.checkpoint.Checkpointer`. The run then saves its
    complete state every ``checkpoint.every`` steps and after every epoch's evaluation, continues from
    the saved state when the checkpointer holds one for this run (ending bit-identical to an
    uninterrupted run, timings aside), and is recorded as finished at the end; a finished run returns
    its saved row without training. Raises ``ValueError`` when the saved run had another configuration
    or cannot be resumed here (see :mod:`gnnsparse.checkpoint`)."""


def run_dense(task, cfg: TrainConfig, progress=None, checkpoint=None) -> dict:
    """Train the dense model for ``cfg.epochs``; returns the result row (see ``gnnsparse compare``)."""
    cfg.validate()
    ck = _RunCheckpoint.open(checkpoint, "dense", 0.0, cfg, cfg.epochs)
    if ck is not None and ck.done is not None:
        return ck.finished_row(progress)
    gen = _seeded(cfg)
    model = task.build_model(cfg)
    distributed.broadcast_parameters(model)  # same seed, same init; rank 0's makes sure
    opt = _adam(model, cfg)
    state = _RunState()
    _run_phase(model, task, opt, _Phase("dense", cfg.epochs, True, **_phase_kw(cfg)), state, gen, progress, ck)
    row = _finish("dense", model, task, state, cfg, 0.0, {})
    return ck.finish(row, model) if ck is not None else row


def _targets(model, cfg: TrainConfig, sparsity: float):
    shapes, kept = regimes.candidate_layers(model, cfg.min_numel)
    if cfg.layout == "bsr":
        b = cfg.blocksize
        for name in [n for n, (o, i) in shapes.items() if o % b or i % b]:
            kept[name] = f"blocksize {b} does not divide {shapes.pop(name)}"
    return regimes.layer_sparsities(shapes, sparsity, cfg.distribution), kept


def _sparse_kw(cfg: TrainConfig, ck: _RunCheckpoint | None = None) -> dict:
    backend = ck.force_backend if ck is not None and ck.force_backend is not None else cfg.backend
    return dict(backend=backend, layout=cfg.layout, blocksize=cfg.blocksize, executor=cfg.executor)


def _choose_executors(model: nn.Module) -> None:
    """Resolve every sparse layer's executor before training (outside timed steps)."""
    with torch.no_grad():
        for layer in sparse_layers(model).values():
            layer.choose_executor()


def run_train_and_prune(task, cfg: TrainConfig, sparsity: float, progress=None, checkpoint=None) -> dict:
    """Dense training with magnitude pruning, then sparse fine-tuning with the mask fixed.

    Phase ``dense-prune`` (``cfg.epochs``): dense kernels; masks follow the Zhu & Gupta cubic
    schedule between ``prune_start`` and ``prune_end`` of the phase (or one shot at the end) and are
    applied after every optimizer step. Phase ``finetune`` (``cfg.finetune`` epochs): the masked
    layers become :class:`SparseLinear` (CSR kernels) and train with a fresh Adam.
    """
    cfg.validate()
    sparsity = _check_sparsity(sparsity)
    ck = _RunCheckpoint.open(checkpoint, "train-and-prune", sparsity, cfg, cfg.epochs + cfg.finetune)
    if ck is not None and ck.done is not None:
        return ck.finished_row(progress)
    gen = _seeded(cfg)
    model = task.build_model(cfg)
    distributed.broadcast_parameters(model)
    targets, kept = _targets(model, cfg, sparsity)
    spe = _steps_per_epoch(task, cfg)
    total = cfg.epochs * spe
    if cfg.prune_schedule == "gradual":
        start, end = int(cfg.prune_start * total), max(1, int(cfg.prune_end * total))
    else:
        start = end = total
    pruner = regimes.MagnitudePruner(model, targets, cfg.pruning, cfg.prune_schedule, start, end,
                                     cfg.update_interval, blocksize=cfg.blocksize if cfg.layout == "bsr" else None)
    opt = _adam(model, cfg)
    state = _RunState()
    in_finetune = False
    if ck is not None:
        ck.get_regime, ck.set_regime = pruner.state_dict, pruner.load_state_dict
        if ck.resume_phase == "finetune":  # rebuild the sparsified model before loading its state
            try:
                pruner.load_state_dict(ck.saved["regime"])
            except _DAMAGED as e:
                raise ck.refuse(e) from None
            in_finetune = True
            if progress is not None:
                progress.update(cfg.epochs)

    def after(step):
        if pruner.step(step):  # the threshold came from weights identical on every rank: check it
            _check_masks(model, state, f"pruning update {pruner.updates} (step {step})", pruner._masks)
        return 0

    ft = cfg.finetune
    if not in_finetune:
        _run_phase(model, task, opt, _Phase("dense-prune", cfg.epochs, ft == 0, after=after, **_phase_kw(cfg)),
                   state, gen, progress, ck)
    updates = pruner.updates
    masks = pruner.masks(finalize=True)
    if pruner.updates != updates:
        _check_masks(model, state, f"pruning update {pruner.updates} (final masks)", pruner._masks)
    sparsify(model, targets, masks=masks, **_sparse_kw(cfg, ck))
    _check_masks(model, state, "sparsify (the final pruning masks)", count=False)
    if not in_finetune:  # a resumed fine-tuning restores the decisions instead of measuring again
        _choose_executors(model)
    if ft == 0:  # no fine-tuning: select the final pruned model
        state.best_state = copy.deepcopy(model.state_dict())
        state.best_metrics = distributed.broadcast_object(task.evaluate(model, "val"))
        state.best_epoch = len(state.curve) - 1
    else:
        state.best_state, state.best_val = None, -math.inf
        opt = _adam(model, cfg)
        _run_phase(model, task, opt, _Phase("finetune", ft, True, **_phase_kw(cfg)), state, gen, progress, ck)
    row = _finish("train-and-prune", model, task, state, cfg, sparsity, kept,
                  {"layer_targets": targets, "prune_updates": pruner.updates})
    return ck.finish(row, model) if ck is not None else row


def run_sparse_training(task, cfg: TrainConfig, sparsity: float, progress=None, checkpoint=None) -> dict:
    """Sparse training from scratch at ``sparsity`` (RigL or SET drop-and-grow, nnz fixed)."""
    cfg.validate()
    sparsity = _check_sparsity(sparsity)
    ck = _RunCheckpoint.open(checkpoint, "sparse-training", sparsity, cfg, cfg.epochs)
    if ck is not None and ck.done is not None:
        return ck.finished_row(progress)
    gen = _seeded(cfg)
    model = task.build_model(cfg)
    targets, kept = _targets(model, cfg, sparsity)
    mask_gen = torch.Generator().manual_seed(cfg.seed + 1)
    sparsify(model, targets, init="random", generator=mask_gen, **_sparse_kw(cfg, ck))
    state = _RunState()
    _check_masks(model, state, "the initial random masks", count=False)
    distributed.broadcast_parameters(model)
    if ck is None or ck.resume_phase is None:  # a resumed run restores the decisions instead
        _choose_executors(model)
    opt = _adam(model, cfg)
    total = cfg.epochs * _steps_per_epoch(task, cfg)
    # data-parallel: RigL's dense gradients are summed over ranks before the grow scores
    reduce = distributed.all_reduce_tensors if distributed.enabled() else None
    dst = regimes.DynamicSparseTraining(model, opt, cfg.update_interval, int(cfg.update_end * total),
                                        cfg.drop_fraction, cfg.grow, generator=mask_gen, scope=cfg.pruning,
                                        all_reduce=reduce)
    if ck is not None:
        ck.get_regime, ck.set_regime = dst.state_dict, dst.load_state_dict

    def after(step):
        flops = dst.after_step(step)
        if dst.is_update_step(step):
            _check_masks(model, state, f"mask update {dst.updates} (step {step})")
        return flops

    _run_phase(model, task, opt, _Phase("sparse", cfg.epochs, True, before=dst.before_forward,
                                        after=after, **_phase_kw(cfg)), state, gen, progress, ck)
    dst.close()
    row = _finish("sparse-training", model, task, state, cfg, sparsity, kept,
                  {"layer_targets": targets, "mask_updates": dst.updates})
    return ck.finish(row, model) if ck is not None else row


for _f in (run_dense, run_train_and_prune, run_sparse_training):
    _f.__doc__ += _CHECKPOINT_DOC
del _f
