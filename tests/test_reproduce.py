"""`gnnsparse reproduce`: dataset discovery, a small grid end to end, resume, verdict rules, bad input."""

import gzip
import json
import shutil

import pytest

from gnnsparse import reproduce
from gnnsparse.cli import main
from gnnsparse.data import DataError, resolve_root
from gnnsparse.reproduce import (PAPER_DATASETS, PAPER_SPARSITIES, find_datasets, grid_config, run_grid,
                                 verdicts)


def test_paper_grid_constants():
    assert PAPER_SPARSITIES == (0.5, 0.75, 0.875, 0.9375, 0.96875, 0.984375)
    # density halves at each step: 1/2 ... 1/64
    assert [round(1 / (1 - s)) for s in PAPER_SPARSITIES] == [2, 4, 8, 16, 32, 64]
    assert PAPER_DATASETS == ("ia-email", "wiki-talk", "stackoverflow", "brain")


def test_find_datasets_stand_ins_and_originals(tmp_path):
    found, missing = find_datasets(None)
    assert [d.name for d in found] == list(PAPER_DATASETS) and not missing
    assert {d.source for d in found} == {"stand-in"}
    # a root holding only an original of stackoverflow (a small file in its exact format)
    (tmp_path / "snap").mkdir()
    src = resolve_root(None) / "snap" / "CollegeMsg.txt.gz"
    shutil.copy(src, tmp_path / "snap" / "sx-stackoverflow.txt.gz")
    found, missing = find_datasets(tmp_path)
    assert [(d.name, d.source) for d in found] == [("stackoverflow", "original")]
    assert missing == ["ia-email", "wiki-talk", "brain"]
    with pytest.raises(DataError, match="not one of the paper's datasets"):
        find_datasets(tmp_path, ["cora"])


def test_grid_config_batch_from_steps_per_epoch():
    cfg = grid_config("sage", 1000, seed=3)
    assert cfg.batch_size == 63 and cfg.seed == 3 and cfg.epochs == reproduce.PRESETS["sage"].epochs
    assert grid_config("paper-mlp", 10, seed=0).batch_size == reproduce.PRESETS["paper-mlp"].min_batch
    short = grid_config("sage", 1000, 0, epochs=2, steps_per_epoch=4)
    assert short.batch_size == 250
    # a shortened run keeps >= 8 mask updates' worth of ΔT (8 steps in all -> ΔT 1); the preset is kept
    assert short.update_interval == 1 and cfg.update_interval == reproduce.PRESETS["sage"].update_interval
    assert grid_config("paper-mlp", 1000, 0).update_interval == reproduce.PRESETS["paper-mlp"].update_interval


def _small_grid(out, **kw):
    return run_grid(None, out, datasets=["ia-email", "brain"], models=["sage", "paper-mlp"], seeds=[0, 1],
                    sparsities=[0.5, 0.984375], epochs=1, steps_per_epoch=2, progress=False, log=lambda m: None,
                    **kw)


def test_small_grid_end_to_end_and_resume(tmp_path, monkeypatch):
    out = tmp_path / "results"
    summary = _small_grid(out)
    for ds in ("ia-email", "brain"):
        for model in ("sage", "paper-mlp"):
            payload = json.loads((out / ds / f"{model}.json").read_text())
            rows = payload["rows"]
            # 2 seeds x (dense + 2 sparsities x 2 regimes)
            assert len(rows) == 10
            assert {(r["seed"], r["regime"], r["target_sparsity"]) for r in rows} == {
                (s, reg, t) for s in (0, 1) for reg, t in
                [("dense", 0.0)] + [(g, t) for t in (0.5, 0.984375) for g in ("train-and-prune", "sparse-training")]}
            for r in rows:
                assert r["config"]["executor"] == "sparse"
                if r["regime"] != "dense":
                    assert r["measured_sparsity"] == pytest.approx(r["target_sparsity"], abs=2e-3)
            assert (out / f"{ds}-{model}.png").stat().st_size > 1000
    md = (out / "results.md").read_text()
    assert "## ia-email (stand-in), sage" in md and "## brain (stand-in), paper-mlp" in md
    assert "Claim 1 (links)" in md and "Claim 2 (node classification)" in md
    assert summary["verdicts"]["links"]["cells"] == 4  # 2 models x 2 sparsities
    assert summary["verdicts"]["nodes"]["cells"] == 2  # only 0.984375 is extreme
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["verdicts"]["links"]["verdict"] == summary["verdicts"]["links"]["verdict"]

    # a second call trains nothing: every row is reused
    def boom(*a, **k):
        raise AssertionError("a finished run was trained again")
    for name in ("run_dense", "run_train_and_prune", "run_sparse_training"):
        monkeypatch.setattr(f"gnnsparse.train.{name}", boom)
    again = _small_grid(out)
    assert again["verdicts"]["links"]["detail"] == summary["verdicts"]["links"]["detail"]


def test_changed_config_is_not_reused(tmp_path, monkeypatch):
    out = tmp_path / "r"
    run_grid(None, out, datasets=["ia-email"], models=["paper-mlp"], seeds=[0], sparsities=[0.5], epochs=1,
             steps_per_epoch=2, progress=False)
    calls = []
    import gnnsparse.train as train
    real = train.run_dense

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(train, "run_dense", counting)
    run_grid(None, out, datasets=["ia-email"], models=["paper-mlp"], seeds=[0], sparsities=[0.5], epochs=2,
             steps_per_epoch=2, progress=False)
    assert calls == [1]
    # the earlier configuration's rows are kept in the JSON (not reported, not lost)
    rows = json.loads((out / "ia-email" / "paper-mlp.json").read_text())["rows"]
    assert len(rows) == 6 and sorted(r["config"]["epochs"] for r in rows) == [1, 1, 1, 2, 2, 2]
    assert "E=2, batch size" in (out / "results.md").read_text()


def _tiny_root(tmp_path, name, shift=0):
    """A root with an 'original' ia-email: the stand-in's edges zipped under the original name."""
    import zipfile
    root = tmp_path / name
    (root / "networkrepository").mkdir(parents=True)
    lines = (resolve_root(None) / "networkrepository" / "ia-enron-employees.edges").read_text().splitlines()
    if shift:  # same counts, other timestamps: another split
        lines = [" ".join(ln.split()[:3] + [str(int(ln.split()[3]) * (1 + shift) % 10**9)]) for ln in lines]
    with zipfile.ZipFile(root / "networkrepository" / "ia-enron-email-dynamic.zip", "w") as z:
        z.writestr("ia-enron-email-dynamic.edges", "\n".join(lines) + "\n")
    return root


def test_rows_from_other_data_are_not_reused(tmp_path):
    out = tmp_path / "o"
    kw = dict(datasets=["ia-email"], models=["paper-mlp"], seeds=[0], sparsities=[0.5], epochs=1,
              steps_per_epoch=2, progress=False)
    logs = []
    a = run_grid(_tiny_root(tmp_path, "a"), out, **kw)
    b = run_grid(_tiny_root(tmp_path, "b", shift=7), out, log=logs.append, **kw)
    assert any("not reusing" in m and "other data" in m for m in logs)
    payload = json.loads((out / "ia-email" / "paper-mlp.json").read_text())
    assert payload["data"]["path"].startswith(str(tmp_path / "b"))
    assert len(payload["rows"]) == 3
    assert a["datasets"][0]["path"] != b["datasets"][0]["path"]


def test_malformed_results_file_is_ignored(tmp_path):
    out = tmp_path / "o"
    (out / "brain").mkdir(parents=True)
    logs = []
    for bad in ("[]", '{"rows": [{"seed": 0, "regime": "dense", "target_sparsity": 0.0, "config": null}]}', "{"):
        (out / "brain" / "paper-mlp.json").write_text(bad)
        run_grid(None, out, datasets=["brain"], models=["paper-mlp"], seeds=[0], sparsities=[0.96875], epochs=1,
                 steps_per_epoch=2, progress=False, log=logs.append)
        assert len(json.loads((out / "brain" / "paper-mlp.json").read_text())["rows"]) == 3
    assert any("not a gnnsparse reproduce results file" in m for m in logs)


def test_bad_grids_fail_before_training(tmp_path, monkeypatch):
    import gnnsparse.train as train

    def boom(*a, **k):
        raise AssertionError("trained before the input was checked")
    monkeypatch.setattr(train, "run_dense", boom)
    with pytest.raises(ValueError, match="sparsity 0 is the dense model"):
        run_grid(None, tmp_path / "o", sparsities=[0.0, 0.5], progress=False)
    with pytest.raises(ValueError, match="inside the data root"):
        run_grid(None, resolve_root(None) / "results", progress=False)
    # a broken second dataset is found before the first one trains
    root = tmp_path / "mixed"
    shutil.copytree(resolve_root(None), root)
    (root / "snap" / "sx-stackoverflow.txt.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match="not a valid gzip file"):
        run_grid(root, tmp_path / "o2", datasets=["ia-email", "stackoverflow"], progress=False)


def test_repeated_names_count_once(tmp_path):
    s = run_grid(None, tmp_path / "o", datasets=["brain", "brain"], models=["paper-mlp", "paper-mlp"], seeds=[0],
                 sparsities=[0.984375], epochs=1, steps_per_epoch=2, progress=False)
    assert s["verdicts"]["nodes"]["cells"] == 1
    assert (tmp_path / "o" / "results.md").read_text().count("## brain") == 1


def _row(regime, s, seed, metric, flops, task="link"):
    key = "auc" if task == "link" else "accuracy"
    return {"regime": regime, "target_sparsity": s, "seed": seed, "train_flops": flops,
            "metrics": {"test": {key: metric}}}


def _group(task, rows, dataset="d", model="m"):
    return {"dataset": dataset, "model": model, "task": task, "rows": rows, "source": "stand-in"}


def test_verdict_rules():
    # links: comparable AUC and fewer FLOPs in every cell -> supported
    rows = [_row("dense", 0.0, s, 0.8, 100) for s in (0, 1, 2)]
    for s in (0, 1, 2):
        rows += [_row("train-and-prune", 0.9, s, 0.80 + 0.001 * s, 150), _row("sparse-training", 0.9, s, 0.795, 20)]
    v = verdicts([_group("link", rows)])
    assert v["links"]["verdict"] == "supported" and v["links"]["cells_supporting"] == 1
    assert v["links"]["detail"][0]["flops_ratio"] == pytest.approx(20 / 150)
    # links: much worse AUC -> not supported
    bad = [r if r["regime"] != "sparse-training" else dict(r, metrics={"test": {"auc": 0.6}}) for r in rows]
    assert verdicts([_group("link", bad)])["links"]["verdict"] == "not supported"
    # nodes: < 1/7 FLOPs and clearly better accuracy at extreme sparsity -> supported
    nodes = [_row("dense", 0.0, s, 0.5, 100, "node") for s in (0, 1, 2)]
    for s in (0, 1, 2):
        nodes += [_row("train-and-prune", 0.984375, s, 0.40 + 0.01 * s, 150, "node"),
                  _row("sparse-training", 0.984375, s, 0.50 + 0.01 * s, 10, "node"),
                  _row("train-and-prune", 0.5, s, 0.5, 150, "node"), _row("sparse-training", 0.5, s, 0.2, 100, "node")]
    v = verdicts([_group("node", nodes)])
    assert v["nodes"]["verdict"] == "supported" and v["nodes"]["cells"] == 1  # 0.5 is not extreme
    # nodes: FLOPs ratio above 1/7 -> contradicts -> not supported
    costly = [dict(r, train_flops=30) if r["regime"] == "sparse-training" else r for r in nodes]
    assert verdicts([_group("node", costly)])["nodes"]["verdict"] == "not supported"
    # nodes: accuracy within noise -> tie -> inconclusive
    tie = [dict(r, metrics={"test": {"accuracy": 0.41 + 0.05 * r["seed"]}})
           if r["regime"] == "sparse-training" and r["target_sparsity"] > 0.9 else r for r in nodes]
    assert verdicts([_group("node", tie)])["nodes"]["verdict"] == "inconclusive"
    assert verdicts([])["links"]["verdict"].startswith("not tested")
    # one seed: no spread, so no firm verdict
    one = [r for r in rows if r["seed"] == 0]
    v = verdicts([_group("link", one)])
    assert v["links"]["verdict"] == "inconclusive" and "fewer than 2 seeds" in v["links"]["reason"]
    # exactly on the tolerance (0.70 - 0.71 in floating point) still counts as comparable
    edge = [dict(r, metrics={"test": {"auc": 0.71 if r["regime"] == "train-and-prune" else 0.70}})
            if r["regime"] != "dense" else r for r in rows]
    edge = [dict(r, metrics={"test": {"auc": r["metrics"]["test"]["auc"]}}) for r in edge]
    assert verdicts([_group("link", edge)])["links"]["verdict"] == "supported"
    # a metric that is NaN for every seed is 'no data', not evidence against the claim
    nan = [dict(r, metrics={"test": {"auc": float("nan")}}) if r["regime"] == "sparse-training" else r for r in rows]
    v = verdicts([_group("link", nan)])
    assert v["links"]["cells"] == 0 and v["links"]["detail"][0]["outcome"] == "no data"
    assert v["links"]["verdict"].startswith("not tested")


def test_reproduce_cli_small(tmp_path, capsys):
    code = main(["reproduce", "--out", str(tmp_path / "o"), "--datasets", "brain", "--models", "paper-mlp",
                 "--seeds", "0", "--sparsity", "0.96875", "--epochs", "1", "--steps-per-epoch", "2",
                 "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "claim 2 (node classification)" in out and "claim 1 (links): not tested" in out
    assert (tmp_path / "o" / "results.md").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--datasets", "cora"], "invalid choice: 'cora'"),
    (["--sparsity", "1.0"], "sparsity must be in [0, 1)"),
    (["--models", "mlp"], "invalid choice: 'mlp'"),
    (["--seeds", "-1"], "--seeds must be in"),
    (["--sparsity", "nan"], "sparsity must be in [0, 1)"),
])
def test_reproduce_bad_options(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(["reproduce"] + argv)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


def test_reproduce_bad_paths(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["reproduce", "--out", str(f), "--no-progress"]) == 2
    assert "is a file" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["reproduce", "--root", str(empty), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "none of ia-email, wiki-talk, stackoverflow, brain found" in capsys.readouterr().err
    assert main(["reproduce", "--sparsity", "0", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "sparsity 0 is the dense model" in capsys.readouterr().err


def test_json_never_holds_nan(tmp_path):
    from gnnsparse import report
    import numpy as np
    report.write_json(str(tmp_path / "x.json"), {"a": float("nan"), "b": [np.float64("inf"), 1.5, 2]})
    text = (tmp_path / "x.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [None, 1.5, 2]}


def test_original_is_preferred_over_stand_in(tmp_path):
    """A root holding the paper's original file name trains on it (source 'original')."""
    root = tmp_path / "root"
    (root / "snap").mkdir(parents=True)
    with gzip.open(resolve_root(None) / "snap" / "CollegeMsg.txt.gz", "rb") as f:
        lines = f.read().splitlines()[:3000]
    with gzip.open(root / "snap" / "sx-stackoverflow.txt.gz", "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    summary = run_grid(root, tmp_path / "o", models=["paper-mlp"], seeds=[0], sparsities=[0.5], epochs=1,
                       steps_per_epoch=2, progress=False)
    assert summary["datasets"] == [{"name": "stackoverflow", "source": "original",
                                    "path": str(root / "snap" / "sx-stackoverflow.txt.gz")}]
    assert summary["missing"] == ["ia-email", "wiki-talk", "brain"]
    payload = json.loads((tmp_path / "o" / "stackoverflow" / "paper-mlp.json").read_text())
    assert payload["source"] == "original" and "stand-in" not in payload["describe"]


def test_rows_written_before_a_config_field_existed_are_reused():
    from dataclasses import asdict

    from gnnsparse.reproduce import _config_matches
    want = asdict(grid_config("sage", 1000, seed=0))
    legacy = {k: v for k, v in want.items() if k not in ("loss_chunk", "max_steps_per_epoch")}
    assert _config_matches(legacy, want)
    assert not _config_matches(dict(legacy, epochs=want["epochs"] + 1), want)
    assert not _config_matches(dict(want, unknown_field=1), want)
    changed = dict(want, loss_chunk=64)
    assert not _config_matches(legacy, changed)
