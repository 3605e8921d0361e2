"""Block-sparse layout (layout="bsr") of SparseLinear, block pruning and block drop-and-grow, and
the executor choice (dense vs sparse kernel) of SparseLinear."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gnnsparse import SparseLinear, chooser, formats, sparsify
from gnnsparse.regimes import DynamicSparseTraining, MagnitudePruner, cosine_drop_fraction


def _aligned(layer: SparseLinear) -> bool:
    return formats.first_partial_block(layer.mask(), layer.blocksize) is None


# ------------------------------------------------------------------------------ structure
@pytest.mark.parametrize("b,sparsity", [(4, 0.5), (8, 0.9), (16, 0.75), (2, 0.0)])
def test_bsr_random_structure_is_block_aligned_with_exact_block_count(b, sparsity):
    layer = SparseLinear(64, 32, sparsity=sparsity, layout="bsr", blocksize=b,
                         generator=torch.Generator().manual_seed(1))
    blocks = (64 // b) * (32 // b)
    assert _aligned(layer)
    assert int(layer.block_mask().sum()) == formats.nnz_for_density(blocks, 1.0 - sparsity)
    assert layer.nnz == int(layer.block_mask().sum()) * b * b


@pytest.mark.filterwarnings("ignore:Sparse BSR tensor support is in beta")
def test_csr_to_bsr_structure_matches_torch_bsr():
    layer = SparseLinear(48, 32, sparsity=0.6, layout="bsr", blocksize=8, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(2))
    bcrow, bcol, perm = formats.csr_to_bsr_structure(layer.crow_indices, layer.col_indices, (32, 48), 8)
    ref = layer.dense_weight().detach().to_sparse_bsr((8, 8))
    assert torch.equal(bcrow, ref.crow_indices()) and torch.equal(bcol, ref.col_indices())
    torch.testing.assert_close(layer.values.detach()[perm].view(-1, 8, 8), ref.values())


@pytest.mark.parametrize("kwargs,match", [
    (dict(layout="bsr", blocksize=5), "must divide"),
    (dict(layout="bsr", blocksize=0), "blocksize >= 1"),
    (dict(layout="bsr"), "blocksize >= 1"),
    (dict(layout="csr", blocksize=4), "only used with layout='bsr'"),
    (dict(layout="coo"), "layout must be one of"),
    (dict(executor="fast"), "executor must be one of"),
])
def test_bad_layout_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparseLinear(32, 16, sparsity=0.5, **kwargs)


def test_bsr_rejects_partial_blocks():
    mask = torch.zeros(16, 32, dtype=torch.bool)
    mask[:4, :4] = True
    mask[5, 9] = True  # one entry of block (1, 2)
    with pytest.raises(ValueError, match=r"block \(row 1, col 2\)"):
        SparseLinear(32, 16, mask=mask, layout="bsr", blocksize=4)
    layer = SparseLinear(32, 16, mask=formats.expand_block_mask(torch.eye(4, 8, dtype=torch.bool), 4),
                         layout="bsr", blocksize=4)
    with pytest.raises(ValueError, match="partly set"):
        layer.set_mask(mask)


def test_from_dense_bsr_keeps_blocks_of_largest_norm():
    torch.manual_seed(0)
    lin = nn.Linear(32, 16)
    with torch.no_grad():
        lin.weight.mul_(0.01)
        lin.weight[4:8, 8:12] = 5.0   # block (1, 2)
        lin.weight[12:16, 0:4] = -4.0  # block (3, 0)
    layer = SparseLinear.from_dense(lin, sparsity=1 - 2 / 32, layout="bsr", blocksize=4)
    expected = torch.zeros(4, 8, dtype=torch.bool)
    expected[1, 2] = expected[3, 0] = True
    assert torch.equal(layer.block_mask(), expected)
    torch.testing.assert_close(layer.dense_weight(), lin.weight * formats.expand_block_mask(expected, 4))


def test_sparsify_bsr_keeps_non_divisible_layers_dense():
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 30))
    with pytest.warns(UserWarning, match="blocksize 16 does not divide"):
        swapped = sparsify(model, 0.5, layout="bsr", blocksize=16, min_numel=0)
    assert list(swapped) == ["0"] and swapped["0"].layout == "bsr" and _aligned(swapped["0"])
    assert isinstance(model[2], nn.Linear)


# ------------------------------------------------------------------------------ regimes
@pytest.mark.parametrize("mode", ["layer", "global"])
def test_block_magnitude_pruning_gives_block_aligned_masks(mode):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32))
    pruner = MagnitudePruner(model, {"0": 0.75, "2": 0.75}, mode=mode, schedule="oneshot", end=0, blocksize=8)
    masks = pruner.masks()
    for n, m in masks.items():
        assert formats.first_partial_block(m, 8) is None
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == formats.nnz_for_density(2 * 32, 0.25) * 64  # whole blocks, exact overall target
    if mode == "layer":
        w = model[0].weight.detach()
        norms = formats.block_norms(w, 8)
        bm = formats.block_any(masks["0"], 8)
        assert norms[bm].min() >= norms[~bm].max()
    with pytest.raises(ValueError, match="does not divide"):
        MagnitudePruner(model, {"0": 0.5}, blocksize=5)


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(32, 64), nn.Linear(64, 32)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


@pytest.mark.parametrize("grow", ["rigl", "set"])
def test_block_drop_and_grow_keeps_blocks_values_and_state(grow):
    torch.manual_seed(0)
    model = _MLP()
    sparsify(model, 0.75, init="random", layout="bsr", blocksize=8, min_numel=0,
             generator=torch.Generator().manual_seed(0), executor="dense")
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    dst = DynamicSparseTraining(model, opt, update_interval=2, end_step=20, drop_fraction=0.5, grow=grow,
                                generator=torch.Generator().manual_seed(0))
    x, y = torch.randn(40, 32), torch.randn(40, 32)
    layer = model.b
    nnz0 = layer.nnz
    for step in range(1, 3):
        dst.before_forward(step)
        opt.zero_grad()
        (model(x) - y).pow(2).mean().backward()
        if step == 2:
            bm_before = layer.block_mask().clone()
            keys_before = formats.csr_keys(layer.crow_indices, layer.col_indices, layer.in_features).clone()
            opt.step()
            vals_before = layer.values.detach().clone()
            avg_before = opt.state[layer.values]["exp_avg"].clone()
            norms_before = formats.block_norms(layer.dense_weight().detach(), 8)
        else:
            opt.step()
        dst.after_step(step)
    assert layer.nnz == nnz0 and _aligned(layer) and _aligned(model.a)
    bm = layer.block_mask()
    assert not torch.equal(bm, bm_before)
    dropped = bm_before & ~bm
    k = int(round(cosine_drop_fraction(2, 0.5, 20) * int(bm_before.sum())))
    assert 0 < int(dropped.sum()) <= k
    assert norms_before[dropped].max() <= torch.sort(norms_before[bm_before]).values[k - 1]
    keys = formats.csr_keys(layer.crow_indices, layer.col_indices, layer.in_features)
    survived = torch.isin(keys, keys_before)
    old_pos = torch.searchsorted(keys_before, keys[survived])
    torch.testing.assert_close(layer.values.detach()[survived], vals_before[old_pos])
    torch.testing.assert_close(opt.state[layer.values]["exp_avg"][survived], avg_before[old_pos])
    assert torch.all(layer.values.detach()[~survived] == 0)


# ------------------------------------------------------------------------------ executor
def test_dense_executor_matches_sparse_kernel_and_counts_dense_flops():
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    a = SparseLinear(24, 16, sparsity=0.7, dtype=torch.float64, executor="sparse")
    b = SparseLinear(24, 16, sparsity=0.7, dtype=torch.float64, executor="dense")
    b.load_state_dict({**a.state_dict(), "_extra_state": {**a.state_dict()["_extra_state"], "executor": "dense"}})
    x = torch.randn(10, 24, dtype=torch.float64)
    torch.testing.assert_close(a(x), b(x))
    assert (a.last_executor, b.last_executor) == ("csr", "dense")
    with FlopCounterMode(display=False) as fc:
        b(x)
    assert fc.get_total_flops() == 2 * 10 * 24 * 16


def test_auto_executor_uses_the_chooser_and_checkpoint_pins_it(monkeypatch):
    monkeypatch.delenv("GNNSPARSE_EXECUTOR", raising=False)
    calls = []

    def fake_choose(out_f, in_f, density, **kw):
        calls.append((out_f, in_f, round(density, 3), kw["layout"]))
        return chooser.Choice(executor="dense", layout=kw["layout"], reason="measured")

    monkeypatch.setattr(chooser, "choose", fake_choose)
    layer = SparseLinear(32, 16, sparsity=0.5)
    x = torch.randn(4, 32)
    layer(x)
    layer(x)
    assert calls == [(16, 32, 0.5, "csr")]  # cached per configuration
    assert layer.last_executor == "dense" and layer.choice.reason == "measured"
    assert "executor=auto -> dense" in repr(layer)
    state = layer.state_dict()
    assert state["_extra_state"]["chosen_executor"] == "dense"
    other = SparseLinear(32, 16, sparsity=0.9)
    other.load_state_dict(state)
    other(x)
    assert other.last_executor == "dense" and len(calls) == 1  # restored, not measured again
    bsr = SparseLinear(32, 16, sparsity=0.5, layout="bsr", blocksize=4)
    before = bsr.state_dict()
    with pytest.raises((RuntimeError, ValueError), match="layout"):
        bsr.load_state_dict(state)
    for k, v in bsr.state_dict().items():  # nothing was half-loaded
        assert k == "_extra_state" or torch.equal(v, before[k])
    bsr(x)
    # the overrides still win over a choice restored from a checkpoint
    with chooser.override("sparse"):
        other(x)
        assert other.last_executor == "csr"
    monkeypatch.setenv("GNNSPARSE_EXECUTOR", "sparse")
    other(x)
    assert other.last_executor == "csr"


def test_bsr_layer_rejects_unaligned_checkpoint_without_extra_state():
    a = SparseLinear(16, 16, sparsity=0.5)
    b = SparseLinear(16, 16, sparsity=0.5, layout="bsr", blocksize=4)
    sd = a.state_dict()
    del sd["_extra_state"]
    with pytest.raises(RuntimeError, match="not block-aligned"):
        b.load_state_dict(sd, strict=False)
    b(torch.randn(3, 16))


def test_bsr_layer_torch_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    layer = SparseLinear(32, 16, sparsity=0.5, layout="bsr", blocksize=8, executor="sparse")
    x = torch.randn(20, 32, requires_grad=True)
    y_eager = layer(x)
    y_comp = torch.compile(layer, fullgraph=True)(x)
    torch.testing.assert_close(y_comp, y_eager)


def test_numpy_integer_blocksize_is_accepted():
    import numpy as np

    layer = SparseLinear(32, 16, sparsity=0.5, layout="bsr", blocksize=np.int64(8))
    assert layer.blocksize == 8 and type(layer.blocksize) is int


def test_explicit_executor_wins_over_a_restored_choice():
    src = SparseLinear(32, 64, sparsity=0.9)
    sd = src.state_dict()
    sd["_extra_state"] = dict(sd["_extra_state"], chosen_executor="dense")
    layer = SparseLinear(32, 64, sparsity=0.9, executor="sparse")
    layer.load_state_dict(sd)
    layer(torch.randn(8, 32))
    assert (layer.executor, layer.last_executor) == ("sparse", "csr")
