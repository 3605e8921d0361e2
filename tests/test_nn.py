"""SparseLinear and sparsify: equal to the masked dense layer, drop-in for nn.Linear / PyG Linear."""

import io

import pytest
import torch
from torch import nn
import torch.nn.functional as F
from torch_geometric.nn import GCNConv, SAGEConv
from torch_geometric.nn.dense.linear import Linear as PygLinear

import gnnsparse
from gnnsparse import SparseLinear, sparsify
from gnnsparse.nn import MIN_SPARSE_NUMEL


BACKENDS = ["cpu", "torch"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(5, 3, 17), (0, 17), (1, 17), (4, 17)])
def test_equals_masked_dense(backend, dtype, shape):
    torch.manual_seed(0)
    layer = SparseLinear(17, 9, sparsity=0.7, backend=backend, dtype=dtype)
    x = torch.randn(*shape, dtype=dtype, requires_grad=True)
    y = layer(x)
    w = layer.dense_weight().detach().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    ref = F.linear(x, w, b)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    assert y.shape == (*shape[:-1], 9)
    torch.testing.assert_close(y, ref, **tol)
    g = torch.randn_like(y)
    gx, gv, gb = torch.autograd.grad(y, (x, layer.values, layer.bias), g)
    rx, rw, rb = torch.autograd.grad(ref, (x, w, b), g)
    torch.testing.assert_close(gx, rx, **tol)
    torch.testing.assert_close(gb, rb, **tol)
    # weight gradient only at stored positions (SDDMM)
    mask = layer.mask()
    torch.testing.assert_close(gv, rw[mask], **tol)


def test_non_contiguous_input():
    layer = SparseLinear(16, 8, sparsity=0.5)
    x = torch.randn(16, 10).t()  # [10, 16], non-contiguous
    assert not x.is_contiguous()
    torch.testing.assert_close(layer(x), F.linear(x, layer.dense_weight().detach(), layer.bias.detach()),
                               rtol=1e-5, atol=1e-5)


def test_structural_sparsity_and_repr():
    layer = SparseLinear(100, 50, sparsity=0.9)
    assert layer.nnz == 500
    assert layer.sparsity == pytest.approx(0.9)
    r = repr(layer)
    assert "sparsity=0.9000" in r and "nnz=500" in r
    # a stored weight equal to 0.0 still counts as stored
    with torch.no_grad():
        layer.values[:10] = 0.0
    assert layer.nnz == 500 and layer.sparsity == pytest.approx(0.9)


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan")])
def test_bad_sparsity_raises(bad):
    with pytest.raises(ValueError, match="sparsity"):
        SparseLinear(4, 4, sparsity=bad)
    with pytest.raises(ValueError, match="sparsity"):
        sparsify(nn.Sequential(nn.Linear(64, 64)), bad)


def test_bad_mask_shape():
    with pytest.raises(ValueError, match="shape"):
        SparseLinear(4, 3, mask=torch.ones(4, 3, dtype=torch.bool))


def test_input_last_dim_mismatch_names_shapes():
    layer = SparseLinear(8, 4, sparsity=0.5)
    with pytest.raises((RuntimeError, ValueError), match="8"):
        layer(torch.randn(3, 7))


def test_from_dense_keeps_largest_and_to_dense_roundtrip():
    torch.manual_seed(1)
    lin = nn.Linear(20, 10)
    sp = SparseLinear.from_dense(lin, sparsity=0.75)
    assert sp.nnz == 50
    kept = sp.dense_weight().detach().abs()
    thresh = kept[kept > 0].min()
    dropped = lin.weight.detach().abs()[~sp.mask()]
    assert (dropped <= thresh).all()
    back = sp.to_dense()
    assert isinstance(back, nn.Linear)
    torch.testing.assert_close(back.weight, lin.weight.detach() * sp.mask())
    torch.testing.assert_close(back.bias, lin.bias.detach())
    # explicit mask
    mask = torch.zeros(10, 20, dtype=torch.bool)
    mask[0, :3] = True
    sp2 = SparseLinear.from_dense(lin, mask=mask)
    assert sp2.nnz == 3
    torch.testing.assert_close(sp2.values.detach(), lin.weight.detach()[0, :3])


def test_from_pyg_linear():
    lin = PygLinear(32, 16)
    sp = SparseLinear.from_dense(lin, sparsity=0.5)
    x = torch.randn(5, 32)
    torch.testing.assert_close(sp(x), F.linear(x, lin.weight.detach() * sp.mask(), lin.bias.detach()),
                               rtol=1e-5, atol=1e-5)


def test_weight_view_writes_through():
    layer = SparseLinear(32, 16, sparsity=0.8)
    w = layer.weight
    assert w.shape == (16, 32)
    before = layer.values.detach().clone()
    nn.init.kaiming_uniform_(layer.weight)
    assert not torch.equal(before, layer.values.detach())
    assert layer.nnz == int(0.2 * 512 + 0.5)
    layer.weight.data.zero_()
    assert torch.count_nonzero(layer.values) == 0
    r, c = int(layer.row_indices()[0]), int(layer.col_indices[0])
    w = layer.weight
    w[r, c] = 5.0
    assert layer.values[0].item() == 5.0
    # reading behaves like a plain dense tensor
    assert type(layer.weight + 1) is torch.Tensor
    # assigning a dense tensor writes the stored positions
    layer.weight = torch.full((16, 32), 2.0)
    assert torch.all(layer.values == 2.0)


def test_state_dict_roundtrip_exact():
    torch.manual_seed(2)
    a = SparseLinear(30, 20, sparsity=0.9)
    b = SparseLinear(30, 20, sparsity=0.5)  # different nnz: the structure must be adopted
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf))
    assert torch.equal(a.crow_indices, b.crow_indices)
    assert torch.equal(a.col_indices, b.col_indices)
    assert torch.equal(a.values, b.values)
    x = torch.randn(4, 30)
    assert torch.equal(a(x), b(x))


def test_state_dict_rejects_invalid_structure():
    a = SparseLinear(6, 4, sparsity=0.5)
    sd = a.state_dict()
    sd["col_indices"] = sd["col_indices"].clone()
    sd["col_indices"][0] = 99
    with pytest.raises(RuntimeError, match="col_indices"):
        a.load_state_dict(sd)


def test_sparsify_swaps_pyg_conv_layers_in_place():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.sage = SAGEConv(64, 64)
            self.gcn = GCNConv(64, 64)
            self.head = nn.Linear(64, 64)
            self.out = nn.Linear(64, 1)

    net = Net()
    with pytest.warns(UserWarning, match=r"out \(1x64\)"):
        swapped = sparsify(net, 0.9)
    assert set(swapped) == {"sage.lin_l", "sage.lin_r", "gcn.lin", "head"}
    assert isinstance(net.sage.lin_l, SparseLinear) and isinstance(net.gcn.lin, SparseLinear)
    assert isinstance(net.out, nn.Linear)  # 64 weights < MIN_SPARSE_NUMEL: kept dense
    assert 64 < MIN_SPARSE_NUMEL
    for layer in swapped.values():
        assert layer.sparsity == pytest.approx(0.9, abs=1 / 4096)
    # include / exclude
    net2 = Net()
    assert set(sparsify(net2, 0.5, include=["sage.*"], exclude=["sage.lin_r"])) == {"sage.lin_l"}
    assert "out" in sparsify(Net(), 0.5, min_numel=0)
    # the conv still runs and reset_parameters works on the sparse layers
    net.sage.reset_parameters()
    ei = torch.randint(0, 10, (2, 30))
    assert net.sage(torch.randn(10, 64), ei).shape == (10, 64)


def test_sparsify_magnitude_keeps_forward_close_at_zero_sparsity():
    lin = nn.Sequential(nn.Linear(40, 40))
    x = torch.randn(3, 40)
    ref = lin(x)
    sparsify(lin, 0.0)
    torch.testing.assert_close(lin(x), ref, rtol=1e-5, atol=1e-5)


def test_public_api():
    assert gnnsparse.SparseLinear is SparseLinear
    assert gnnsparse.sparsify is sparsify


def test_weight_views_write_through():
    layer = SparseLinear(8, 6, sparsity=0.0)
    nn.init.zeros_(layer.weight[:, :3])
    w = layer.dense_weight()
    assert torch.all(w[:, :3] == 0) and torch.all(w[:, 3:] != 0)
    layer.weight[0].fill_(1.0)
    assert torch.all(layer.dense_weight()[0] == 1)
    layer.weight.data[1].zero_()
    assert torch.all(layer.dense_weight()[1] == 0)
    layer.weight.t().zero_()
    assert torch.all(layer.values == 0)
    w = layer.weight
    w[2][3] = 7.0
    assert layer.dense_weight()[2, 3] == 7.0
    with torch.no_grad():
        w = layer.weight
        torch.add(w, 1.0, out=w)
    assert layer.dense_weight()[2, 3] == 8.0


def test_meta_layer_with_cpu_input_raises():
    layer = SparseLinear(6, 8).to("meta")
    with pytest.raises(RuntimeError, match="one device"):
        layer(torch.ones(3, 6))


def test_sparsify_input_checks_and_sharing():
    # a single pattern string is one pattern, not a list of characters
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(64, 64)
            self.b = nn.Linear(64, 64)

    assert set(sparsify(Net(), 0.5, include="a")) == {"a"}
    with pytest.raises(TypeError, match="include"):
        sparsify(Net(), 0.5, include=[1])
    with pytest.raises(ValueError, match="nope"):
        sparsify(Net(), {"nope": 0.5})
    with pytest.raises(ValueError, match="nope"):
        sparsify(Net(), 0.5, masks={"nope": torch.ones(64, 64, dtype=torch.bool)})
    with pytest.raises(ValueError, match="from_dense"):
        sparsify(nn.Linear(64, 64), 0.5)
    shared = nn.Linear(64, 64)
    seq = nn.Sequential(shared, nn.ReLU(), shared)
    swapped = sparsify(seq, 0.5)
    assert set(swapped) == {"0", "2"} and seq[0] is seq[2] and isinstance(seq[0], SparseLinear)


@pytest.mark.parametrize("kwargs, err", [
    (dict(in_features=3.7, out_features=4), TypeError),
    (dict(in_features="3", out_features=4), TypeError),
    (dict(in_features=4, out_features=4, dtype=torch.int32), TypeError),
    (dict(in_features=4, out_features=4, sparsity="0.5"), TypeError),
])
def test_constructor_rejects_bad_arguments(kwargs, err):
    with pytest.raises(err):
        SparseLinear(**kwargs)


def test_numpy_sparsity_and_bad_forward_input():
    import numpy as np

    layer = SparseLinear(4, 4, sparsity=np.float32(0.5))
    assert layer.nnz == 8
    with pytest.raises(TypeError, match="torch.Tensor"):
        layer(np.ones((2, 4), dtype=np.float32))


def test_torch_backend_validates_structure():
    layer = SparseLinear(8, 4, sparsity=0.5, backend="torch")
    layer.col_indices[0] = -1
    with pytest.raises(ValueError, match="col_indices"):
        layer(torch.randn(2, 8))


def test_stale_weight_view_writes_only_what_it_changed():
    layer = SparseLinear(8, 6, sparsity=0.5)
    w = layer.weight
    with torch.no_grad():
        layer.values.add_(1.0)  # e.g. an optimizer step after the view was taken
    after_step = layer.values.detach().clone()
    r, c = int(layer.row_indices()[0]), int(layer.col_indices[0])
    w[r, c] = 123.0
    assert layer.values[0].item() == 123.0
    torch.testing.assert_close(layer.values.detach()[1:], after_step[1:])
    # a view taken before the structure changed refuses to write
    w = layer.weight
    layer.set_mask(torch.ones(6, 8, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="stale"):
        w.mul_(2.0)


def test_sparse_linear_caches_transpose_and_rebuilds_after_structure_change():
    torch.manual_seed(0)
    layer = SparseLinear(12, 8, sparsity=0.6, dtype=torch.float64)
    x = torch.randn(5, 12, dtype=torch.float64, requires_grad=True)

    def dx():
        x.grad = None
        layer(x).square().sum().backward()
        ref = x.detach().clone().requires_grad_()
        torch.nn.functional.linear(ref, layer.dense_weight().detach(), layer.bias.detach()).square().sum().backward()
        torch.testing.assert_close(x.grad, ref.grad)

    dx()
    first = layer._transpose_cache
    dx()
    assert layer._transpose_cache is first  # reused, not rebuilt
    mask = torch.zeros(8, 12, dtype=torch.bool)
    mask[::2, 1::3] = True
    layer.set_mask(mask)
    dx()  # rebuilt for the new structure
    assert layer._transpose_cache is not first
    with torch.no_grad():  # in-place edit of the index buffer is noticed through its version
        layer.col_indices[0] = 0
    dx()
    cached = layer._transpose_cache
    with torch.no_grad():
        layer.col_indices[1] = 1
        layer(x)  # no gradient needed: nothing is rebuilt
    assert layer._transpose_cache is cached
