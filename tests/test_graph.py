"""The message-passing SpMM op: correctness, gradients, opcheck, FLOPs and bad input."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from gnnsparse.graph import Adjacency, aggregate


def _adj(n=30, e=120, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, e), generator=g)
    a = torch.sparse_coo_tensor(ei, torch.rand(e, generator=g, dtype=dtype), (n, n)).coalesce()
    return Adjacency.from_sparse_csr(a.to_sparse_csr(), "sum"), a.to_dense()


def test_aggregate_matches_dense_and_gradcheck():
    adj, dense = _adj()
    x = torch.randn(30, 5, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(aggregate(adj, x), dense @ x)
    assert torch.autograd.gradcheck(lambda t: aggregate(adj, t), (x,))


def test_opcheck_and_flops():
    adj, _ = _adj()
    x = torch.randn(30, 4, dtype=torch.float64, requires_grad=True)
    args = (adj.crow, adj.col, adj.values, adj.crow_t, adj.col_t, adj.values_t, x)
    torch.library.opcheck(torch.ops.gnnsparse.adj_spmm, args)
    with FlopCounterMode(display=False) as fc:
        aggregate(adj, x).sum().backward()
    assert fc.get_total_flops() == 2 * 2 * adj.nnz * 4  # forward and the transposed backward


@pytest.mark.parametrize("bad_col", [[0, 1, 10**9, 3], [0, 1, 2, 4], [0, -1, 2, 3]])
def test_bad_structure_raises_instead_of_reading_out_of_bounds(bad_col):
    c = torch.tensor([0, 1, 2, 3, 4])
    v = torch.ones(4)
    with pytest.raises(ValueError, match="col_indices"):
        torch.ops.gnnsparse.adj_spmm(c, torch.tensor(bad_col), v, c, torch.arange(4), v, torch.randn(4, 3))


def test_wrong_feature_rows():
    adj, _ = _adj()
    with pytest.raises(ValueError, match=r"\[30, d\]"):
        aggregate(adj, torch.randn(29, 4, dtype=torch.float64))


def test_invalid_csr_tensor_is_rejected_before_use():
    crow = torch.tensor([0, 1, 2, 3, 4])
    bad = torch.sparse_csr_tensor(crow, torch.tensor([0, 1, 2, 10**8]), torch.ones(4), (4, 4))
    with pytest.raises(ValueError, match="col_indices"):
        Adjacency.from_sparse_csr(bad, "sum")
