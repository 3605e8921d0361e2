"""Regimes: exact target sparsity, ERK, cubic schedule, drop-and-grow invariants, optimizer state."""

import math

import pytest
import torch
from torch import nn

from gnnsparse import SparseLinear, sparsify
from gnnsparse.regimes import (DynamicSparseTraining, MagnitudePruner, cosine_drop_fraction, cubic_sparsity,
                               layer_sparsities)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(64, 128)
        self.b = nn.Linear(128, 96)
        self.c = nn.Linear(96, 40)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def _stored(model):
    return sum(m.nnz for m in model.modules() if isinstance(m, SparseLinear))


def _numel(model):
    return sum(m.numel_dense for m in model.modules() if isinstance(m, SparseLinear))


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_distribution_hits_global_target(distribution, sparsity):
    shapes = {"a": (128, 64), "b": (96, 128), "c": (40, 96)}
    per_layer = layer_sparsities(shapes, sparsity, distribution)
    total = sum(o * i for o, i in shapes.values())
    stored = sum(round((1 - per_layer[n]) * o * i) for n, (o, i) in shapes.items())
    assert abs(stored / total - (1 - sparsity)) < 3 / total
    if distribution == "erk":
        # ERK: the smaller layer (fewer weights per unit) is denser
        assert per_layer["c"] < per_layer["b"]


def test_erk_makes_overfull_layers_dense():
    shapes = {"tiny": (4, 4), "big": (512, 512)}
    per_layer = layer_sparsities(shapes, 0.5, "erk")
    assert per_layer["tiny"] == 0.0
    total = 16 + 512 * 512
    stored = 16 + (1 - per_layer["big"]) * 512 * 512
    assert stored / total == pytest.approx(0.5, abs=1e-9)


def test_sparsify_exact_nnz_per_layer():
    model = MLP()
    targets = layer_sparsities({"a": (128, 64), "b": (96, 128), "c": (40, 96)}, 0.9, "uniform")
    sparsify(model, targets, init="random", generator=torch.Generator().manual_seed(0))
    for name, m in model.named_modules():
        if isinstance(m, SparseLinear):
            assert m.nnz == int(0.1 * m.numel_dense + 0.5)
    assert 1 - _stored(model) / _numel(model) == pytest.approx(0.9, abs=1e-4)


def test_cubic_schedule():
    assert cubic_sparsity(0, 0.9, 10, 110) == 0.0
    assert cubic_sparsity(10, 0.9, 10, 110) == 0.0
    assert cubic_sparsity(110, 0.9, 10, 110) == 0.9
    assert cubic_sparsity(60, 0.9, 10, 110) == pytest.approx(0.9 * (1 - 0.5 ** 3))
    vals = [cubic_sparsity(t, 0.9, 10, 110) for t in range(0, 120, 5)]
    assert vals == sorted(vals)


@pytest.mark.parametrize("mode", ["layer", "global"])
@pytest.mark.parametrize("schedule", ["gradual", "oneshot"])
def test_magnitude_pruner_reaches_exact_target(mode, schedule):
    torch.manual_seed(0)
    model = MLP()
    targets = {"a": 0.9, "b": 0.9, "c": 0.9}
    pruner = MagnitudePruner(model, targets, mode, schedule, start=2, end=10, interval=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(32, 64)
    for step in range(1, 13):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        pruner.step(step)
        if schedule == "gradual" and step == 6:
            assert 0 < pruner.sparsity() < 0.9
    masks = pruner.masks()
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    assert 1 - kept / total == pytest.approx(0.9, abs=1 / total + 1e-9)
    if mode == "layer":
        for n, m in masks.items():
            assert int(m.sum()) == int(0.1 * m.numel() + 0.5)
    # pruned weights are zero in the dense model and the kept ones are the largest
    for n, m in masks.items():
        w = model.get_submodule(n).weight.detach()
        assert torch.all(w[~m] == 0)
    sparsify(model, targets, masks=masks)
    assert 1 - _stored(model) / _numel(model) == pytest.approx(0.9, abs=1 / total + 1e-9)


def test_cosine_drop_fraction():
    assert cosine_drop_fraction(0, 0.3, 100) == pytest.approx(0.3)
    assert cosine_drop_fraction(50, 0.3, 100) == pytest.approx(0.15)
    assert cosine_drop_fraction(100, 0.3, 100) == 0.0


def _dst_setup(grow, seed=0):
    torch.manual_seed(seed)
    model = MLP()
    sparsify(model, 0.8, init="random", generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    dst = DynamicSparseTraining(model, opt, update_interval=3, end_step=30, drop_fraction=0.3, grow=grow,
                                generator=torch.Generator().manual_seed(seed))
    return model, opt, dst


@pytest.mark.parametrize("grow", ["rigl", "set"])
def test_dst_keeps_nnz_and_optimizer_state(grow):
    model, opt, dst = _dst_setup(grow)
    x, y = torch.randn(64, 64), torch.randn(64, 40)
    nnz0 = {n: m.nnz for n, m in model.named_modules() if isinstance(m, SparseLinear)}
    flops_total = 0
    for step in range(1, 7):
        dst.before_forward(step)
        opt.zero_grad()
        (model(x) - y).pow(2).mean().backward()
        opt.step()
        if dst.is_update_step(step):
            layer = model.b
            keys_before = (layer.row_indices() * layer.in_features + layer.col_indices).clone()
            vals_before = layer.values.detach().clone()
            st = opt.state[layer.values]
            avg_before, sq_before = st["exp_avg"].clone(), st["exp_avg_sq"].clone()
        flops = dst.after_step(step)
        flops_total += flops
        if dst.is_update_step(step):
            if grow == "rigl":
                # dense gradient dYᵀX for every sparse layer: 2·N·in·out
                assert flops == 2 * 64 * (64 * 128 + 128 * 96 + 96 * 40)
            else:
                assert flops == 0
            keys_after = layer.row_indices() * layer.in_features + layer.col_indices
            assert layer.nnz == nnz0["b"]
            assert not torch.equal(keys_before, keys_after), "no connection changed"
            survived = torch.isin(keys_after, keys_before)
            grown = ~survived
            assert grown.any()
            # grown weights start at zero with zero optimizer state
            st = opt.state[layer.values]
            assert torch.all(layer.values.detach()[grown] == 0)
            assert torch.all(st["exp_avg"][grown] == 0) and torch.all(st["exp_avg_sq"][grown] == 0)
            # survivors keep value and state at the same (row, col)
            old_pos = torch.searchsorted(keys_before, keys_after[survived])
            torch.testing.assert_close(layer.values.detach()[survived], vals_before[old_pos])
            torch.testing.assert_close(st["exp_avg"][survived], avg_before[old_pos])
            torch.testing.assert_close(st["exp_avg_sq"][survived], sq_before[old_pos])
            # every removed position was among the k smallest magnitudes (the drop set)
            k = int(round(cosine_drop_fraction(step, 0.3, 30) * nnz0["b"]))
            dropped = ~torch.isin(keys_before, keys_after)
            assert 0 < int(dropped.sum()) <= k
            kth = torch.sort(vals_before.abs()).values[k - 1]
            assert vals_before[dropped].abs().max() <= kth
        for n, m in model.named_modules():
            if isinstance(m, SparseLinear):
                assert m.nnz == nnz0[n]
    assert dst.updates == 2


def test_rigl_grows_largest_dense_gradient():
    model, opt, dst = _dst_setup("rigl", seed=3)
    x, y = torch.randn(64, 64), torch.randn(64, 40)
    for step in range(1, 4):
        dst.before_forward(step)
        opt.zero_grad()
        out = model(x)
        loss = (out - y).pow(2).mean()
        loss.backward()
        if step == 3:
            # reference dense gradient of layer c, computed independently
            layer = model.c
            h = torch.relu(model.b(torch.relu(model.a(x)))).detach().requires_grad_(False)
            w = layer.dense_weight().detach().requires_grad_(True)
            ref_loss = (torch.nn.functional.linear(h, w, layer.bias.detach()) - y).pow(2).mean()
            (gref,) = torch.autograd.grad(ref_loss, w)
            keys_before = (layer.row_indices() * layer.in_features + layer.col_indices).clone()
        opt.step()
        dst.after_step(step)
    layer = model.c
    keys_after = layer.row_indices() * layer.in_features + layer.col_indices
    new = keys_after[~torch.isin(keys_after, keys_before)]
    assert new.numel() > 0
    # every newly grown position has a dense-gradient magnitude >= any non-stored, non-grown one
    score = gref.abs().reshape(-1).clone()
    free = torch.ones_like(score, dtype=torch.bool)
    free[keys_after] = False
    assert score[new].min() >= score[free].max() - 1e-7


def test_dst_bad_arguments():
    model = MLP()
    opt = torch.optim.Adam(model.parameters())
    with pytest.raises(ValueError, match="SparseLinear"):
        DynamicSparseTraining(model, opt, 5, 50)
    sparsify(model, 0.5)
    with pytest.raises(ValueError, match="grow"):
        DynamicSparseTraining(model, opt, 5, 50, grow="magic")
    with pytest.raises(ValueError, match="update_interval"):
        DynamicSparseTraining(model, opt, 0, 50)
    with pytest.raises(ValueError, match="drop_fraction"):
        DynamicSparseTraining(model, opt, 5, 50, drop_fraction=1.0)
    with pytest.raises(ValueError, match="pruning mode"):
        MagnitudePruner(MLP(), {"a": 0.5}, mode="weird")
    with pytest.raises(ValueError, match="distribution"):
        layer_sparsities({"a": (4, 4)}, 0.5, "normal")


@pytest.mark.parametrize("grow", ["rigl", "set"])
def test_dst_global_scope_keeps_total_nnz(grow):
    torch.manual_seed(0)
    model = MLP()
    sparsify(model, 0.8, init="random", generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    dst = DynamicSparseTraining(model, opt, update_interval=2, end_step=20, drop_fraction=0.3, grow=grow,
                                generator=torch.Generator().manual_seed(0), scope="global")
    x, y = torch.randn(64, 64), torch.randn(64, 40)
    total0 = _stored(model)
    per_layer = []
    for step in range(1, 9):
        dst.before_forward(step)
        opt.zero_grad(set_to_none=True)
        (model(x) - y).pow(2).mean().backward()
        opt.step()
        dst.after_step(step)
        assert _stored(model) == total0
        per_layer.append(tuple(m.nnz for m in model.modules() if isinstance(m, SparseLinear)))
        for m in model.modules():
            if isinstance(m, SparseLinear):
                st = opt.state[m.values]
                assert st["exp_avg"].shape == m.values.shape
    assert dst.updates == 4
    assert len(set(per_layer)) > 1, "global drop/grow never moved connections between layers"
    with pytest.raises(ValueError, match="scope"):
        DynamicSparseTraining(model, opt, 2, 20, scope="everywhere")
