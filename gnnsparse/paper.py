"""The paper's own model ("paper mode"): node embeddings from temporal random walks and skip-gram,
fed to a small MLP.

"Towards Sparsification of Graph Neural Networks" (Peng et al., ICCD 2022) trained, in its code,
an MLP on precomputed node embeddings rather than message-passing layers:

* embeddings: time-respecting random walks (each step follows an edge no older than the previous
  one, as in CTDNE, Nguyen et al. 2018) and skip-gram with negative sampling (word2vec, Mikolov
  et al. 2013), both implemented here (PyG's Node2Vec needs pyg-lib); computed on **training
  edges only**; dimension 8 for link prediction (the MLP input is the concatenation of two nodes,
  16), 64 for node classification;
* :class:`PaperLinkMLP`: ``16 -> 128 -> 1`` (ReLU); :class:`PaperNodeMLP`: ``64 -> 256 -> 128 -> C``
  without biases (ReLU).

The embeddings are fixed inputs (buffers): training, pruning and sparse training act on the MLP's
``Linear`` layers, so both regimes are compared on the paper's exact model. Embedding
computation is preprocessing and is not counted in training FLOPs or time.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["temporal_walks", "skipgram_embeddings", "graph_embeddings", "PaperLinkMLP", "PaperNodeMLP"]


def temporal_walks(src: np.ndarray, dst: np.ndarray, time: np.ndarray | None, num_nodes: int, *,
                   walk_length: int = 10, walks_per_node: int = 10, seed: int = 0) -> np.ndarray:
    """Time-respecting random walks over directed edges ``src -> dst`` (pass both directions for
    an undirected graph).

    Every node with an out-edge starts ``walks_per_node`` walks; each step picks uniformly among
    the current node's out-edges whose time is >= the time of the edge that led there (any edge at
    the first step; with ``time=None`` every edge qualifies). A walk with no such edge stops.
    Vectorized over walkers (one numpy pass per step).

    Args:
        src, dst: int ``[E]`` node ids in ``[0, num_nodes)``; time: int ``[E]`` or None.
        walk_length: nodes per walk (>= 1); walks_per_node: >= 1; seed: the RNG seed.

    Returns:
        int64 ``[W, walk_length]`` node ids, ``-1`` after a walk stopped.

    Raises:
        ValueError: mismatched lengths, ids out of range, non-positive walk length or count.
    """
    src, dst = np.asarray(src), np.asarray(dst)
    for name, a in (("src", src), ("dst", dst)):
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must hold integer node ids, got {a.dtype}")
    src, dst = src.astype(np.int64), dst.astype(np.int64)
    if src.shape != dst.shape or src.ndim != 1:
        raise ValueError(f"src and dst must be 1-D of one length, got {src.shape} and {dst.shape}")
    if walk_length < 1 or walks_per_node < 1:
        raise ValueError(f"walk_length and walks_per_node must be >= 1, got {walk_length}, {walks_per_node}")
    if src.size and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= num_nodes):
        raise ValueError(f"node ids must be in [0, {num_nodes})")
    rank = np.zeros(src.size, dtype=np.int64)
    if time is not None:
        time = np.asarray(time).reshape(-1)
        if time.shape != src.shape:
            raise ValueError(f"time must have shape {src.shape}, got {time.shape}")
        if time.size and np.issubdtype(time.dtype, np.floating) and not np.isfinite(time).all():
            raise ValueError("time holds NaN or Inf")
        _, rank = np.unique(time, return_inverse=True)
        rank = rank.reshape(-1).astype(np.int64)
    levels = int(rank.max()) + 1 if rank.size else 1
    order = np.lexsort((rank, src))  # edges grouped by source, oldest first
    s, d, r = src[order], dst[order], rank[order]
    key = s * levels + r
    row_end = np.searchsorted(s, np.arange(num_nodes) + 1, side="left")
    starts = np.flatnonzero(np.bincount(s, minlength=num_nodes) > 0)
    rng = np.random.default_rng(seed)
    cur = np.repeat(starts, walks_per_node)
    walks = np.full((cur.size, walk_length), -1, dtype=np.int64)
    walks[:, 0] = cur
    now = np.zeros(cur.size, dtype=np.int64)  # time rank reached (0: any edge)
    alive = np.arange(cur.size)
    for step in range(1, walk_length):
        u = walks[alive, step - 1]
        lo = np.searchsorted(key, u * levels + now[alive], side="left")
        hi = row_end[u]
        ok = lo < hi
        alive, lo, hi = alive[ok], lo[ok], hi[ok]
        if alive.size == 0:
            break
        pick = lo + (rng.random(alive.size) * (hi - lo)).astype(np.int64)
        walks[alive, step] = d[pick]
        now[alive] = r[pick]
    return walks


def skipgram_embeddings(walks: np.ndarray, num_nodes: int, dim: int, *, window: int = 5, negatives: int = 5,
                        epochs: int = 1, batch_size: int = 8192, lr: float = 0.01, seed: int = 0) -> torch.Tensor:
    """Skip-gram with negative sampling (word2vec) over random walks.

    Pairs ``(center, context)`` are the nodes at most ``window`` steps apart in a walk, both
    directions; ``negatives`` noise nodes per pair are drawn from the context frequency ^ 0.75.
    Trained with Adam on ``-log σ(e_c·o_x) - Σ log σ(-e_c·o_n)``.

    Args:
        walks: int ``[W, L]`` with ``-1`` padding (:func:`temporal_walks`); num_nodes; dim (>= 1).

    Returns:
        float32 ``[num_nodes, dim]`` input embeddings; nodes in no walk pair get zeros.

    Raises:
        ValueError: ``dim``, ``window``, ``negatives`` or ``epochs`` < 1.
    """
    if min(dim, window, negatives, epochs) < 1:
        raise ValueError(f"dim, window, negatives and epochs must be >= 1, got {dim}, {window}, {negatives}, {epochs}")
    walks = np.asarray(walks)
    if walks.ndim != 2 or not np.issubdtype(walks.dtype, np.integer):
        raise ValueError(f"walks must be a 2-D integer array [W, L], got {walks.dtype} of shape {walks.shape}")
    walks = walks.astype(np.int64, copy=False)
    if walks.size and (walks.min() < -1 or walks.max() >= num_nodes):
        raise ValueError(f"walk entries must be node ids in [0, {num_nodes}) or -1 (padding)")
    pairs = []
    for off in range(1, min(window, walks.shape[1] - 1) + 1):
        a, b = walks[:, :-off].reshape(-1), walks[:, off:].reshape(-1)
        ok = (a >= 0) & (b >= 0)
        pairs.append(np.stack((a[ok], b[ok])))
        pairs.append(np.stack((b[ok], a[ok])))
    gen = torch.Generator().manual_seed(seed)
    emb_in = torch.zeros(num_nodes, dim)
    if not pairs or sum(p.shape[1] for p in pairs) == 0:
        return emb_in
    pairs = torch.from_numpy(np.concatenate(pairs, axis=1))
    emb_in = nn.Parameter((torch.rand(num_nodes, dim, generator=gen) - 0.5) / dim)
    emb_out = nn.Parameter(torch.zeros(num_nodes, dim))
    noise = torch.bincount(pairs[1], minlength=num_nodes).double().pow(0.75)
    opt = torch.optim.Adam([emb_in, emb_out], lr=lr)
    for _ in range(epochs):
        perm = torch.randperm(pairs.shape[1], generator=gen)
        for i in range(0, perm.numel(), batch_size):
            c, x = pairs[:, perm[i:i + batch_size]]
            neg = torch.multinomial(noise, c.numel() * negatives, replacement=True, generator=gen).view(-1, negatives)
            e = emb_in[c]
            pos = F.logsigmoid((e * emb_out[x]).sum(-1))
            negl = F.logsigmoid(-(e.unsqueeze(1) * emb_out[neg]).sum(-1)).sum(-1)
            loss = -(pos + negl).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    out = emb_in.detach().clone()
    used = torch.zeros(num_nodes, dtype=torch.bool)
    used[pairs[0]] = True
    out[~used] = 0.0
    return out


def graph_embeddings(src, dst, time, num_nodes: int, dim: int, seed: int = 0, **walk_kw) -> torch.Tensor:
    """:func:`temporal_walks` over both directions of the given edges, then
    :func:`skipgram_embeddings`: float32 ``[num_nodes, dim]``."""
    src, dst = np.asarray(src), np.asarray(dst)
    t = None if time is None else np.concatenate((np.asarray(time), np.asarray(time)))
    walks = temporal_walks(np.concatenate((src, dst)), np.concatenate((dst, src)), t, num_nodes, seed=seed, **walk_kw)
    return skipgram_embeddings(walks, num_nodes, dim, seed=seed)


class PaperLinkMLP(nn.Module):
    """The paper's link model: ``[e_u, e_v]`` (16) -> 128 -> 1 logit, ReLU, on fixed embeddings.

    Same interface as :class:`gnnsparse.models.LinkModel`: ``encoder(features, adj, seen)``
    returns the embedding table ``[N, 8]`` (inputs ignored), ``decode(z, pairs [2, P])`` the
    logits ``[P]``.
    """

    def __init__(self, embeddings: torch.Tensor, hidden: int = 128):
        super().__init__()
        self.register_buffer("embeddings", embeddings.float())
        d = embeddings.shape[1]
        self.mlp = nn.Sequential(nn.Linear(2 * d, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def encoder(self, features=None, adj=None, seen=None) -> torch.Tensor:
        return self.embeddings

    def decode(self, z: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat((z[pairs[0]], z[pairs[1]]), 1)).squeeze(-1)

    def forward(self, features, adj, pairs, seen=None) -> torch.Tensor:
        return self.decode(self.embeddings, pairs)


class PaperNodeMLP(nn.Module):
    """The paper's node model: embedding (64) -> 256 -> 128 -> ``num_classes`` logits, ReLU, no
    biases, on fixed embeddings. ``forward(features, adj, seen)`` returns ``[N, num_classes]``."""

    def __init__(self, embeddings: torch.Tensor, num_classes: int):
        super().__init__()
        self.register_buffer("embeddings", embeddings.float())
        d = embeddings.shape[1]
        self.mlp = nn.Sequential(nn.Linear(d, 256, bias=False), nn.ReLU(), nn.Linear(256, 128, bias=False),
                                 nn.ReLU(), nn.Linear(128, num_classes, bias=False))

    def forward(self, features=None, adj=None, seen=None) -> torch.Tensor:
        return self.mlp(self.embeddings)
