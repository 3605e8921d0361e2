"""GNN models for the paper's tasks, built from PyTorch Geometric convolutions.

* :class:`SAGEConv` / :class:`GCNConv`: PyG's convolutions with the aggregation routed through
  :func:`gnnsparse.graph.aggregate` (CSR SpMM whose FLOPs are counted); their ``lin_l``,
  ``lin_r`` and ``lin`` layers are ordinary PyG ``Linear`` modules that
  :func:`gnnsparse.sparsify` swaps for :class:`gnnsparse.SparseLinear`.
* :class:`Encoder`: node input = learned embedding ``[N, hidden - F]`` concatenated with
  ``F`` structural features (``[log1p(degree), seen]`` for link prediction), then
  ``num_layers`` convolutions with ReLU between them.
* :class:`LinkModel`: encoder + MLP decoder on ``z_u * z_v`` (Hadamard product) -> one logit.
* :class:`NodeModel`: encoder + linear classifier -> ``num_classes`` logits.

Unseen nodes (no training edge): their learned embedding is multiplied by the ``seen`` flag,
so every unseen node enters the encoder as ``[0, …, 0, log1p(0), 0]``: one shared
representation scored from the model's biases and the structure alone, never from an
untrained random embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch import nn
import torch_geometric.nn as pyg_nn
from torch_geometric.nn.dense.linear import Linear as PygLinear

from .graph import Adjacency, aggregate

__all__ = ["SAGEConv", "GCNConv", "Encoder", "LinkModel", "NodeModel", "build_model", "MODELS"]

MODELS = ("sage", "gcn")


def _adjacency(adj_t, conv, expected: str) -> Adjacency:
    adj = getattr(adj_t, "_gnnsparse_adjacency", None)
    if adj is None:
        raise TypeError(f"{type(conv).__name__} expects the adjacency as Adjacency.to_sparse_csr() "
                        f"(a torch.sparse_csr tensor carrying its transpose and normalization)")
    if adj.normalization != expected:
        raise ValueError(f"{type(conv).__name__} needs a '{expected}'-normalized adjacency, "
                         f"got '{adj.normalization}'")
    return adj


class SAGEConv(pyg_nn.SAGEConv):
    """PyG ``SAGEConv`` (mean aggregation, Hamilton et al. 2017) over an :class:`Adjacency`.

    Input ``x`` float ``[N, in_channels]``, ``edge_index`` = ``Adjacency.to_sparse_csr()`` of a
    ``"mean"``-normalized adjacency ``D⁻¹A``; output ``[N, out_channels]``.
    """

    def propagate(self, edge_index, x, size=None, **kwargs) -> Tensor:  # noqa: D102
        # the whole message-passing step is one SpMM with the mean-normalized adjacency
        x_src = x[0] if isinstance(x, (tuple, list)) else x
        return aggregate(_adjacency(edge_index, self, "mean"), x_src)


class GCNConv(pyg_nn.GCNConv):
    """PyG ``GCNConv`` (Kipf & Welling 2017) over a ``"gcn"``-normalized :class:`Adjacency`.

    The normalization ``D^-1/2 (A + I) D^-1/2`` is precomputed in the adjacency, so the conv is
    built with ``normalize=False``.
    """

    def __init__(self, in_channels: int, out_channels: int, **kwargs):
        super().__init__(in_channels, out_channels, normalize=False, **kwargs)

    def propagate(self, edge_index, x, edge_weight=None, **kwargs) -> Tensor:  # noqa: D102
        if edge_weight is not None:
            raise ValueError("edge weights are part of the Adjacency's values; pass edge_weight=None")
        return aggregate(_adjacency(edge_index, self, "gcn"), x)


class Encoder(nn.Module):
    """Node encoder: learned embedding ++ structural features -> ``num_layers`` convs.

    Args:
        num_nodes: N.
        num_features: F, columns of the structural features passed to ``forward``.
        hidden: width of every layer (embedding width is ``hidden - F``).
        model: ``"sage"`` or ``"gcn"``.
        num_layers: number of convolutions (>= 1).
        dropout: dropout probability between layers.
    """

    def __init__(self, num_nodes: int, num_features: int, hidden: int = 128, model: str = "sage",
                 num_layers: int = 2, dropout: float = 0.0):
        super().__init__()
        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {model!r}")
        if hidden <= num_features:
            raise ValueError(f"hidden ({hidden}) must exceed the number of input features ({num_features})")
        self.model = model
        self.normalization = "mean" if model == "sage" else "gcn"
        self.embedding = nn.Embedding(num_nodes, hidden - num_features)
        nn.init.normal_(self.embedding.weight, std=0.1)
        conv = SAGEConv if model == "sage" else GCNConv
        self.convs = nn.ModuleList([conv(hidden, hidden) for _ in range(num_layers)])
        self.dropout = dropout

    def forward(self, features: torch.Tensor, adj: torch.Tensor, seen: torch.Tensor | None = None) -> torch.Tensor:
        """``features`` float ``[N, F]``, ``adj`` from ``Adjacency.to_sparse_csr()``, ``seen`` bool ``[N]``.

        Returns node embeddings float ``[N, hidden]``.
        """
        emb = self.embedding.weight
        if seen is not None:
            emb = emb * seen.to(emb.dtype).unsqueeze(1)
        h = torch.cat([emb, features.to(emb.dtype)], dim=1)
        for i, conv in enumerate(self.convs):
            h = conv(h, adj)
            if i < len(self.convs) - 1:
                h = F.relu(h)
                h = F.dropout(h, self.dropout, self.training)
        return h


class LinkModel(nn.Module):
    """Link prediction: encoder + MLP decoder ``Linear(h,h) -> ReLU -> Linear(h,1)`` on ``z_u * z_v``.

    ``dense_layers`` names the output layer, which the regimes keep dense (see
    :func:`gnnsparse.regimes.candidate_layers`).
    """

    dense_layers = ("decoder.2",)

    def __init__(self, num_nodes: int, num_features: int, hidden: int = 128, model: str = "sage",
                 num_layers: int = 2, dropout: float = 0.0):
        super().__init__()
        self.encoder = Encoder(num_nodes, num_features, hidden, model, num_layers, dropout)
        self.decoder = nn.Sequential(PygLinear(hidden, hidden), nn.ReLU(), PygLinear(hidden, 1))

    def decode(self, z: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """``z`` ``[N, h]``, ``pairs`` int64 ``[2, B]`` -> logits ``[B]``."""
        return self.decoder(z[pairs[0]] * z[pairs[1]]).squeeze(-1)

    def forward(self, features, adj, pairs, seen=None) -> torch.Tensor:
        return self.decode(self.encoder(features, adj, seen), pairs)


class NodeModel(nn.Module):
    """Node classification: encoder + ``Linear(hidden, num_classes)``; returns logits ``[N, C]``.

    The classifier is the output layer the regimes keep dense (``dense_layers``).
    """

    dense_layers = ("classifier",)

    def __init__(self, num_nodes: int, num_features: int, num_classes: int, hidden: int = 128,
                 model: str = "sage", num_layers: int = 2, dropout: float = 0.0):
        super().__init__()
        self.encoder = Encoder(num_nodes, num_features, hidden, model, num_layers, dropout)
        self.classifier = PygLinear(hidden, num_classes)

    def forward(self, features, adj, seen=None) -> torch.Tensor:
        return self.classifier(F.relu(self.encoder(features, adj, seen)))


def build_model(task: str, num_nodes: int, num_features: int, hidden: int = 128, model: str = "sage",
                num_classes: int | None = None, num_layers: int = 2, dropout: float = 0.0) -> nn.Module:
    """Build the model for ``task`` (``"link"`` or ``"node"``); raises ValueError otherwise."""
    if task == "link":
        return LinkModel(num_nodes, num_features, hidden, model, num_layers, dropout)
    if task == "node":
        if not num_classes:
            raise ValueError("node classification needs num_classes")
        return NodeModel(num_nodes, num_features, num_classes, hidden, model, num_layers, dropout)
    raise ValueError(f"task must be 'link' or 'node', got {task!r}")
