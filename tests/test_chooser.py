"""Tests of the measured backend chooser (gnnsparse.chooser).

Measurements are kept small (threads=1, small layers, few rows) so the file runs in a few seconds on
a busy 2-core machine. threads=1 also keeps OpenMP spin-waiting out of the timings.
"""

from __future__ import annotations

import json
import os
import stat
import time
import warnings

import pytest
import torch

from gnnsparse import chooser, ops

SMALL = dict(threads=1, n_rows=256)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GNNSPARSE_CHOOSER_CACHE", str(tmp_path / "cache" / "chooser.json"))
    monkeypatch.delenv("GNNSPARSE_EXECUTOR", raising=False)
    chooser.set_override(None)
    chooser.clear_cache(memory_only=True)
    yield
    chooser.set_override(None)
    chooser.clear_cache(memory_only=True)


@pytest.fixture
def measure_calls(monkeypatch):
    """Counts calls of the measurement function (each one is a full check + benchmark)."""
    calls = []
    real = chooser._measure

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(chooser, "_measure", counting)
    return calls


# ---------------------------------------------------------------------------------------------
def test_choose_measures_then_caches_in_memory_and_on_disk(measure_calls, tmp_path):
    first = chooser.choose(32, 48, 0.1, **SMALL)
    assert first.executor in ("dense", "csr")
    assert first.layout == "csr" and first.reason == "measured"
    assert set(first.timings) == {"dense", "csr"} and all(t > 0 for t in first.timings.values())
    assert first.failed == {} and first.n_rows == 256
    for part in ("threads=1", "dtype=float32", "layout=csr", "shape=32x48", "density=0.1", torch.__version__):
        assert part in first.key
    assert len(measure_calls) == 1

    second = chooser.choose(32, 48, 0.1, **SMALL)
    assert second.reason == "cached" and second.executor == first.executor
    assert second.key == first.key and dict(second.timings) == dict(first.timings)
    assert len(measure_calls) == 1

    path = tmp_path / "cache" / "chooser.json"
    data = json.loads(path.read_text())
    assert data["entries"][first.key]["executor"] == first.executor

    chooser.clear_cache(memory_only=True)  # a fresh process: only the disk cache is left
    third = chooser.choose(32, 48, 0.1, **SMALL)
    assert third.reason == "cached" and third.executor == first.executor
    assert dict(third.timings) == pytest.approx(dict(first.timings))
    assert len(measure_calls) == 1

    chooser.clear_cache()  # removes the file too
    assert not path.exists()
    assert chooser.choose(32, 48, 0.1, **SMALL).reason == "measured"
    assert len(measure_calls) == 2


def test_similar_densities_share_a_bucket_and_key_parts_separate(measure_calls, monkeypatch):
    a = chooser.choose(32, 32, 0.1, **SMALL)
    b = chooser.choose(32, 32, 0.105, **SMALL)
    assert b.reason == "cached" and a.key == b.key
    assert chooser.choose(32, 32, 0.2, **SMALL).key != a.key
    assert chooser.choose(32, 32, 0.1, threads=2, n_rows=256).key != a.key
    monkeypatch.setenv("GNNSPARSE_CPU_ISA", "generic")
    assert "isa=generic" in chooser.choose(32, 32, 0.1, **SMALL).key
    assert len(measure_calls) == 4


def test_density_bucket():
    assert chooser.density_bucket(0.01) == 0.01
    assert chooser.density_bucket(0.0105) == 0.01
    assert chooser.density_bucket(0.1) == 0.1
    assert chooser.density_bucket(1.0) == 1.0
    assert chooser.density_bucket(0.0) == 0.001
    assert chooser.density_bucket(0.5) == pytest.approx(0.501)
    with pytest.raises(ValueError, match="density"):
        chooser.density_bucket(1.5)


def test_corrupt_cache_warns_and_remeasures(tmp_path, measure_calls):
    path = tmp_path / "cache" / "chooser.json"
    path.parent.mkdir(parents=True)
    path.write_text("{ this is not json")
    with pytest.warns(RuntimeWarning, match="cannot read the cache"):
        c = chooser.choose(32, 32, 0.1, **SMALL)
    assert c.reason == "measured" and len(measure_calls) == 1
    assert c.key in json.loads(path.read_text())["entries"]  # rewritten as valid JSON

    chooser.clear_cache(memory_only=True)
    path.write_text("[1, 2, 3]")  # valid JSON, wrong structure
    with pytest.warns(RuntimeWarning, match="corrupt"):
        assert chooser.choose(32, 32, 0.1, **SMALL).reason == "measured"

    chooser.clear_cache(memory_only=True)
    path.write_text(json.dumps({"entries": {c.key: {"executor": "nonsense", "layout": "csr"}}}))
    assert chooser.choose(32, 32, 0.1, **SMALL).reason == "measured"  # a bad entry is re-measured


def test_unwritable_cache_location_keeps_memory_cache(tmp_path, monkeypatch, measure_calls):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("GNNSPARSE_CHOOSER_CACHE", str(blocker / "sub" / "chooser.json"))  # parent is a file
    with pytest.warns(RuntimeWarning, match="cannot write the cache"):
        c = chooser.choose(32, 32, 0.1, **SMALL)
    assert c.reason == "measured"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert chooser.choose(32, 32, 0.1, **SMALL).reason == "cached"
    assert len(measure_calls) == 1


# ---------------------------------------------------------------------------------------------
def test_env_override(monkeypatch, measure_calls):
    monkeypatch.setenv("GNNSPARSE_EXECUTOR", "dense")
    c = chooser.choose(256, 256, 0.01)
    assert (c.executor, c.reason) == ("dense", "forced-by-env")
    monkeypatch.setenv("GNNSPARSE_EXECUTOR", "sparse")
    assert chooser.choose(256, 256, 0.9).executor == "csr"
    monkeypatch.setenv("GNNSPARSE_EXECUTOR", "bogus")
    with pytest.raises(ValueError, match="'auto', 'dense', 'sparse'"):
        chooser.choose(32, 32, 0.1)
    monkeypatch.setenv("GNNSPARSE_EXECUTOR", "auto")
    assert chooser.choose(32, 32, 0.1, **SMALL).reason == "measured"
    assert len(measure_calls) == 1


def test_programmatic_override_beats_env_and_restores(monkeypatch, measure_calls):
    monkeypatch.setenv("GNNSPARSE_EXECUTOR", "dense")
    with chooser.override("sparse"):
        c = chooser.choose(32, 32, 0.5)
        assert (c.executor, c.reason) == ("csr", "override")
        with chooser.override("dense"):
            assert chooser.choose(32, 32, 0.5).executor == "dense"
        assert chooser.get_override() == "sparse"
    assert chooser.get_override() is None
    assert chooser.choose(32, 32, 0.5).reason == "forced-by-env"
    chooser.set_override("sparse")
    assert chooser.choose(32, 32, 0.5).reason == "override"
    chooser.set_override(None)
    assert chooser.get_override() is None
    for bad in ("csr", "fast", ""):
        with pytest.raises(ValueError, match="'auto', 'dense', 'sparse'"):
            chooser.set_override(bad)
        with pytest.raises(ValueError, match="'auto', 'dense', 'sparse'"):
            with chooser.override(bad):
                pass
    assert measure_calls == []


def test_no_extension_chooses_dense(monkeypatch, measure_calls):
    monkeypatch.setattr(chooser._ext, "available", lambda: False)
    c = chooser.choose(256, 256, 0.01)
    assert (c.executor, c.reason) == ("dense", "no-extension")
    assert measure_calls == []


# ---------------------------------------------------------------------------------------------
def _wrong_output(x, s, values, bias):
    return chooser._run_csr(x, s, values, bias) * 1.001


def _wrong_values_grad(x, s, values, bias):
    y = chooser._run_csr(x, s, values.detach(), bias)  # no gradient reaches the values
    return y + 0.0 * values.sum()                        # present but zero


def _raises(x, s, values, bias):
    raise RuntimeError("kernel exploded")


@pytest.mark.parametrize("broken,match", [(_wrong_output, "output differs"),
                                          (_wrong_values_grad, "grad of values differs"),
                                          (_raises, "kernel exploded")])
def test_broken_candidate_is_excluded(monkeypatch, broken, match):
    monkeypatch.setitem(chooser._EXECUTORS, "csr", broken)
    with pytest.warns(RuntimeWarning, match=match):
        c = chooser.choose(128, 128, 0.01, threads=1, n_rows=512)  # csr would win if it were correct
    assert c.executor == "dense" and c.reason == "measured"
    assert "csr" in c.failed and match in c.failed["csr"]
    assert set(c.timings) == {"dense"}
    assert chooser.choose(128, 128, 0.01, threads=1, n_rows=512).executor == "dense"  # cached: still excluded


def test_slow_candidate_is_not_chosen(monkeypatch):
    def slow_csr(x, s, values, bias):
        time.sleep(0.004)
        return chooser._run_csr(x, s, values, bias)

    monkeypatch.setitem(chooser._EXECUTORS, "csr", slow_csr)
    c = chooser.choose(32, 32, 0.01, **SMALL)
    assert c.executor == "dense" and c.failed == {}
    assert c.timings["csr"] > c.timings["dense"]


def test_pick_rule_prefers_dense_unless_sparse_is_not_slower():
    assert chooser._pick({"dense": 1.0, "csr": 1.0}) == "csr"
    assert chooser._pick({"dense": 1.0, "csr": 1.0001}) == "dense"
    assert chooser._pick({"dense": 1.0, "csr": 0.3}) == "csr"
    assert chooser._pick({"csr": 2.0}) == "csr"
    assert chooser._pick({}) is None


def test_all_candidates_failing_falls_back_to_dense(monkeypatch):
    monkeypatch.setitem(chooser._EXECUTORS, "csr", _raises)
    monkeypatch.setitem(chooser._EXECUTORS, "dense", _raises)
    with pytest.warns(RuntimeWarning):
        c = chooser.choose(32, 32, 0.1, **SMALL)
    assert (c.executor, c.reason) == ("dense", "all-failed") and set(c.failed) == {"dense", "csr"}


def test_low_density_large_layer_picks_csr():
    # Measured margin on a 2-core box: csr ~3-4x faster than dense here, so this is robust to noise.
    c = chooser.choose(256, 256, 0.01, threads=1, n_rows=4096)
    assert c.failed == {}
    assert c.executor == "csr", c.timings


def test_measurement_leaves_global_state_alone():
    rng = torch.get_rng_state()
    threads = torch.get_num_threads()
    with torch.no_grad():
        assert chooser.choose(32, 32, 0.1, threads=1, n_rows=256, dtype=torch.float64).failed == {}
    with torch.inference_mode():
        assert chooser.choose(32, 32, 0.2, threads=1, n_rows=256).failed == {}
    assert torch.equal(rng, torch.get_rng_state())
    assert torch.get_num_threads() == threads


# ---------------------------------------------------------------------------------------------
def test_argument_validation():
    with pytest.raises(ValueError, match="layout"):
        chooser.choose(32, 32, 0.1, layout="coo")
    with pytest.raises(ValueError, match="blocksize"):
        chooser.choose(32, 32, 0.1, layout="bsr")
    with pytest.raises(ValueError, match="divisible"):
        chooser.choose(30, 32, 0.1, layout="bsr", blocksize=4)
    with pytest.raises(ValueError, match="blocksize must be None"):
        chooser.choose(32, 32, 0.1, blocksize=4)
    with pytest.raises(ValueError, match="dtype"):
        chooser.choose(32, 32, 0.1, dtype=torch.float16)
    with pytest.raises(ValueError, match="density"):
        chooser.choose(32, 32, -0.1)
    with pytest.raises(ValueError, match="out_features"):
        chooser.choose(0, 32, 0.1)
    with pytest.raises(ValueError, match="threads"):
        chooser.choose(32, 32, 0.1, threads=0)


def test_bsr_dense_expansion_matches_blocks():
    b = 4
    crow = torch.tensor([0, 2, 3])          # 2 block rows, 3 block columns
    col = torch.tensor([0, 2, 1])
    values = torch.arange(3 * b * b, dtype=torch.float64).reshape(3, b, b)
    s = chooser._Structure("bsr", crow, col, b, 2 * b, 3 * b)
    w = chooser._dense_weight(s, values)
    expected = torch.zeros(2 * b, 3 * b, dtype=torch.float64)
    expected[0:b, 0:b] = values[0]
    expected[0:b, 2 * b:3 * b] = values[1]
    expected[b:2 * b, b:2 * b] = values[2]
    assert torch.equal(w, expected)


@pytest.mark.skipif(not hasattr(ops, "bsr_linear"), reason="gnnsparse.ops.bsr_linear not built yet")
def test_bsr_layout_measures_dense_and_bsr():
    assert chooser.candidates("bsr") == ("dense", "bsr")
    c = chooser.choose(64, 64, 0.1, layout="bsr", blocksize=8, **SMALL)
    assert c.failed == {}, c.failed
    assert c.executor in ("dense", "bsr") and set(c.timings) == {"dense", "bsr"}
    assert "blocksize=8" in c.key and "layout=bsr" in c.key


def test_bsr_layout_without_kernel_is_dense(monkeypatch):
    monkeypatch.setattr(chooser, "_bsr_available", lambda: False)  # a build without the BSR kernels
    assert chooser.candidates("bsr") == ("dense",)
    c = chooser.choose(64, 64, 0.1, layout="bsr", blocksize=8, **SMALL)
    assert c.executor == "dense" and set(c.timings) == {"dense"} and c.failed == {}
    with chooser.override("sparse"), pytest.warns(RuntimeWarning, match="not available"):
        assert chooser.choose(64, 64, 0.1, layout="bsr", blocksize=8).reason == "unavailable"


def test_bsr_plumbing_with_a_stand_in_kernel(monkeypatch):
    """The BSR branch (block structure, values [nnzb, b, b], check, timing) with a pure-torch
    stand-in for gnnsparse.ops.bsr_linear(x, crow, col, values, bias, out_features), so it is
    covered before the real kernel lands."""
    seen = []

    def fake_bsr_linear(x, crow, col, values, bias, out_features):
        b = values.shape[-1]
        seen.append((tuple(values.shape[1:]), crow.numel()))
        s = chooser._Structure("bsr", crow, col, b, out_features, x.shape[-1])
        return torch.nn.functional.linear(x, chooser._dense_weight(s, values), bias)

    monkeypatch.setattr(ops, "bsr_linear", fake_bsr_linear, raising=False)
    assert chooser.candidates("bsr") == ("dense", "bsr")
    c = chooser.choose(32, 64, 0.25, layout="bsr", blocksize=8, threads=1, n_rows=300)
    assert c.failed == {} and set(c.timings) == {"dense", "bsr"} and c.executor in ("dense", "bsr")
    assert seen[0] == ((8, 8), 32 // 8 + 1)

    chooser.clear_cache(memory_only=True)
    monkeypatch.setattr(ops, "bsr_linear", lambda x, crow, col, v, bias, out: fake_bsr_linear(x, crow, col, v, None, out),
                        raising=False)  # drops the bias
    with pytest.warns(RuntimeWarning, match="output differs"):
        c = chooser.choose(32, 64, 0.25, layout="bsr", blocksize=8, **SMALL)
    assert c.executor == "dense" and "bsr" in c.failed


def test_cache_path_that_is_not_a_regular_file_is_never_replaced(tmp_path, monkeypatch, measure_calls):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # reading would block, replacing would destroy it
    monkeypatch.setenv("GNNSPARSE_CHOOSER_CACHE", str(fifo))
    with pytest.warns(RuntimeWarning, match="not a regular file"):
        c = chooser.choose(16, 16, 0.5, **SMALL)
    assert c.reason == "measured"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


@pytest.mark.parametrize("entry", [{"executor": "csr", "layout": {}}, {"executor": "csr", "layout": "csr",
                                                                       "n_rows": float("inf")},
                                   {"executor": ["csr"], "layout": "csr"}])
def test_corrupt_cache_entry_is_ignored(tmp_path, measure_calls, entry):
    c = chooser.choose(16, 16, 0.5, **SMALL)
    path = chooser.cache_path()
    data = json.loads(open(path).read())
    data["entries"][c.key] = entry
    with open(path, "w") as f:
        json.dump(data, f)
    chooser.clear_cache(memory_only=True)
    again = chooser.choose(16, 16, 0.5, **SMALL)
    assert again.reason == "measured" and len(measure_calls) == 2
