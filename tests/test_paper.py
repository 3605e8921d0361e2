"""Paper mode (gnnsparse.paper): temporal random walks, skip-gram embeddings, the paper's MLPs, and
both regimes on them through the training API."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gnnsparse import paper, train
from gnnsparse.data import load_dataset

DATA = Path(os.environ.get("GNNSPARSE_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def test_walks_respect_time_and_edges():
    # 0 -> 1 at t=5, 1 -> 2 at t=3 (too old after arriving at t=5), 1 -> 3 at t=7
    src, dst, t = np.array([0, 1, 1]), np.array([1, 2, 3]), np.array([5, 3, 7])
    w = paper.temporal_walks(src, dst, t, 4, walk_length=4, walks_per_node=50, seed=1)
    from_0 = w[w[:, 0] == 0]
    assert (from_0[:, 1] == 1).all() and (from_0[:, 2] == 3).all() and (from_0[:, 3] == -1).all()
    from_1 = w[w[:, 0] == 1]
    assert set(from_1[:, 1]) == {2, 3}  # the first step may take any edge
    assert set(w[:, 0]) == {0, 1}  # nodes without out-edges start no walk
    edges = set(zip(src.tolist(), dst.tolist()))
    for row in w:
        for a, b in zip(row[:-1], row[1:]):
            assert b == -1 or (a, b) in edges
    with pytest.raises(ValueError, match="node ids must be in"):
        paper.temporal_walks(np.array([0]), np.array([9]), None, 4)


def test_skipgram_puts_walk_neighbours_closer():
    # two cliques joined by nothing: embeddings of a clique agree more with each other
    u, v = np.triu_indices(6, 1)
    src = np.concatenate((u, u + 6))
    dst = np.concatenate((v, v + 6))
    emb = paper.graph_embeddings(src, dst, None, 13, 8, seed=0)
    assert emb.shape == (13, 8) and torch.all(emb[12] == 0)  # node 12 is in no walk
    e = torch.nn.functional.normalize(emb[:12], dim=1)
    sim = e @ e.t()
    same = torch.block_diag(torch.ones(6, 6), torch.ones(6, 6)).bool() & ~torch.eye(12, dtype=torch.bool)
    assert sim[same].mean() > sim[~same & ~torch.eye(12, dtype=torch.bool)].mean() + 0.3


def test_paper_mlp_shapes_and_both_regimes():
    data = load_dataset("collegemsg", root=DATA)
    cfg = train.TrainConfig(epochs=2, model="paper-mlp", batch_size=4096, update_interval=2)
    task = train.make_task(data, cfg)
    model = task.build_model(cfg)
    assert isinstance(model, paper.PaperLinkMLP) and model.embeddings.shape == (data.num_nodes, 8)
    assert [m.in_features for m in model.mlp if isinstance(m, torch.nn.Linear)] == [16, 128]
    res = train.run_sparse_training(task, cfg, 0.9)
    assert 0.0 <= res["metrics"]["test"]["auc"] <= 1.0
    assert res["train_flops"] > 0 and abs(res["measured_sparsity"] - 0.9) < 0.01
    assert isinstance(model.mlp[0], torch.nn.Linear)  # the task built a fresh model for the run
    node = load_dataset("email-eu", root=DATA)
    ncfg = train.TrainConfig(epochs=1, model="paper-mlp", batch_size=512)
    ntask = train.make_task(node, ncfg)
    nmodel = ntask.build_model(ncfg)
    dims = [(m.in_features, m.out_features, m.bias is None) for m in nmodel.mlp if isinstance(m, torch.nn.Linear)]
    assert dims == [(64, 256, True), (256, 128, True), (128, node.num_classes, True)]
    out = train.run_train_and_prune(ntask, ncfg, 0.9)
    assert 0.0 <= out["metrics"]["test"]["accuracy"] <= 1.0 and abs(out["measured_sparsity"] - 0.9) < 0.01
    with pytest.raises(ValueError, match="model must be one of"):
        train.TrainConfig(model="mlp").validate()


def test_bad_walk_and_edge_inputs():
    with pytest.raises(ValueError, match="walk entries must be node ids"):
        paper.skipgram_embeddings(np.array([[0, 7]]), 3, 4)
    with pytest.raises(ValueError, match="2-D integer array"):
        paper.skipgram_embeddings(np.array([0, 1]), 3, 4)
    with pytest.raises(ValueError, match="integer node ids"):
        paper.temporal_walks(np.array([0.7]), np.array([1.2]), None, 3)
    with pytest.raises(ValueError, match="NaN"):
        paper.temporal_walks(np.array([0]), np.array([1]), np.array([np.nan]), 3)
