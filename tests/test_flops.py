"""Executed-FLOPs counting checked against the analytic formula on a known model."""

import pytest
import torch

from gnnsparse import SparseLinear, sparsify
from gnnsparse.flops import StepFlops, measure_flops
from gnnsparse.graph import Adjacency
from gnnsparse.models import LinkModel


def _graph(n=40, e=150, seed=0):
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, e), generator=g)
    ei = ei[:, ei[0] != ei[1]]
    ei = torch.cat([ei, ei.flip(0)], 1)
    a = torch.sparse_coo_tensor(ei, torch.ones(ei.shape[1]), (n, n)).coalesce()
    deg = torch.zeros(n).index_add_(0, a.indices()[0], a.values())
    a = torch.sparse_coo_tensor(a.indices(), a.values() / deg[a.indices()[0]], (n, n)).coalesce()
    return Adjacency.from_sparse_csr(a.to_sparse_csr(), "mean")


@pytest.mark.parametrize("sparsity", [None, 0.9])
def test_step_flops_match_analytic_formula(sparsity):
    n, h, p = 40, 32, 24
    adj = _graph(n)
    torch.manual_seed(0)
    model = LinkModel(n, 2, hidden=h)
    if sparsity is not None:
        sparsify(model, sparsity, min_numel=0, exclude=["decoder.2"])
    feats = torch.randn(n, 2)
    pairs = torch.randint(0, n, (2, p))
    flops = measure_flops(lambda: model(feats, adj.to_sparse_csr(), pairs).sum().backward())

    def w(name):  # stored weights of a layer (h*h when dense)
        m = model.get_submodule(name)
        return m.nnz if isinstance(m, SparseLinear) else m.weight.numel()

    expected = 0
    for i in range(2):
        # forward: aggregation + lin_l + lin_r; backward: the same aggregation (dX) and, per linear,
        # dX and dW (SDDMM at stored positions when sparse): 2 multiply-adds per stored weight and row
        expected += 2 * adj.nnz * h * 2
        for lin in ("lin_l", "lin_r"):
            expected += 2 * n * w(f"encoder.convs.{i}.{lin}") * 3
    expected += 2 * p * w("decoder.0") * 3
    expected += 2 * p * h * 3  # dense 32 -> 1 output layer
    assert flops == expected
    # nothing was trained by the measurement
    assert all(prm.grad is not None for prm in model.parameters())


def test_measurement_restores_rng():
    torch.manual_seed(5)
    a = torch.rand(3)
    torch.manual_seed(5)
    measure_flops(lambda: torch.nn.functional.dropout(torch.ones(100), 0.5))
    b = torch.rand(3)
    assert torch.equal(a, b)


def test_step_cache_measures_once():
    calls = []
    sf = StepFlops()
    for _ in range(3):
        sf.add("x", sf.per_step(("x", 1), lambda: calls.append(1) or 10))
    assert calls == [1] and sf.total == 30 and sf.by_phase["x"] == 30
