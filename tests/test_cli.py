"""`gnnsparse compare` end to end on real graphs, and its bad-input behaviour."""

import json
import os
import subprocess
import sys

import pytest

from gnnsparse.cli import main


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_compare_link_end_to_end(tmp_path, capsys):
    js, png = tmp_path / "r.json", tmp_path / "r.png"
    code, out, err = _run(["compare", "--dataset", "ia-enron-employees", "--sparsity", "0.9", "--epochs", "3",
                           "--batch-size", "128", "--update-interval", "4", "--json", str(js), "--plot", str(png),
                           "--no-progress"], capsys)
    assert code == 0, err
    rows = json.loads(js.read_text())["rows"]
    assert [r["regime"] for r in rows] == ["dense", "train-and-prune", "sparse-training"]
    dense, tap, st = rows
    for r in rows:
        for key in ("regime", "target_sparsity", "measured_sparsity", "train_flops", "train_seconds", "metrics"):
            assert key in r
        assert 0.0 <= r["metrics"]["test"]["auc"] <= 1.0
        assert r["train_flops"] > 0 and r["train_seconds"] > 0
    assert tap["measured_sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert st["measured_sparsity"] == pytest.approx(0.9, abs=1e-3)
    # sparse training executes fewer FLOPs than dense training with the same epochs
    assert st["train_flops"] < dense["train_flops"]
    # train-and-prune includes its dense phase (E dense epochs) plus fine-tuning
    assert tap["train_flops"] > dense["train_flops"] * 0.99
    assert set(tap["flops_by_phase"]) == {"dense-prune", "finetune"}
    assert st["mask_updates"] > 0
    assert "train-and-prune" in out and "sparse-training" in out and "FLOPs/dense" in out
    assert png.stat().st_size > 1000


def test_compare_node_task(capsys):
    code, out, err = _run(["compare", "--dataset", "email-eu", "--sparsity", "0.5", "--epochs", "2",
                           "--model", "gcn", "--distribution", "erk", "--pruning", "global", "--grow", "set",
                           "--no-progress"], capsys)
    assert code == 0, err
    assert "macro-F1" in out


def test_unknown_dataset_lists_known(capsys):
    code, out, err = _run(["compare", "--dataset", "no-such-graph", "--no-progress"], capsys)
    assert code == 2
    assert "no-such-graph" in err and "ia-enron-employees" in err
    assert len(err.strip().splitlines()) == 1


def test_missing_root_says_where(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    code, out, err = _run(["compare", "--root", str(missing), "--no-progress"], capsys)
    assert code == 2
    assert str(missing) in err and "GNNSPARSE_DATA" in err


def test_malformed_file_names_line(tmp_path, capsys):
    f = tmp_path / "bad.txt"
    f.write_text("0 1 10\n1 2 11\n2 3 x\n")
    code, out, err = _run(["compare", "--dataset", str(f), "--no-progress"], capsys)
    assert code == 2
    assert "bad.txt" in err and "line 3" in err


def test_bad_sparsity_is_a_clean_error():
    # through a real process: exit 2, one-line message, no traceback
    env = dict(os.environ)
    p = subprocess.run([sys.executable, "-m", "gnnsparse", "compare", "--sparsity", "1.5"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.returncode == 2
    assert "sparsity" in p.stderr and "Traceback" not in p.stderr


def test_compare_several_seeds_reports_spread(tmp_path, capsys):
    js = tmp_path / "s.json"
    code, out, err = _run(["compare", "--dataset", "ia-enron-employees", "--sparsity", "0.5", "--epochs", "2",
                           "--batch-size", "256", "--seed", "0", "1", "--json", str(js), "--no-progress"], capsys)
    assert code == 0, err
    payload = json.loads(js.read_text())
    assert payload["seeds"] == [0, 1]
    assert sorted({r["seed"] for r in payload["rows"]}) == [0, 1]
    assert len(payload["rows"]) == 6
    assert "±" in out and "mean±std over seeds" in out


def test_output_layer_stays_dense_and_json_is_readable(tmp_path, capsys):
    js = tmp_path / "n.json"
    code, out, err = _run(["compare", "--dataset", "email-eu", "--sparsity", "0.99", "--epochs", "1",
                           "--json", str(js), "--no-progress"], capsys)
    assert code == 0, err
    rows = json.loads(js.read_text())["rows"]
    for r in rows[1:]:
        kinds = {layer["name"]: layer["kind"] for layer in r["layers"]}
        assert kinds["classifier"] == "dense (kept: output layer)"
        assert r["measured_sparsity"] == pytest.approx(0.99, abs=1e-4)
    assert "classifier (output layer)" in out
    assert oct(js.stat().st_mode & 0o777) != oct(0o600)


@pytest.mark.parametrize("argv, needle", [
    (["--seed", "-1"], "--seed"),
    (["--lr", "inf"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--threads", "30000"], "--threads"),
    (["--hidden", "3000000"], "--hidden"),
    (["--drop-fraction", "1.5"], "--drop-fraction"),
    (["--epochs", "0"], "must be in"),
    (["--sparsity", "nan"], "sparsity"),
])
def test_bad_options_exit_2_naming_the_option(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(["compare", "--no-progress", *argv])
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


def test_bad_output_paths_fail_before_training(tmp_path, capsys):
    code, out, err = _run(["compare", "--dataset", "ia-enron-employees", "--json", str(tmp_path),
                           "--no-progress"], capsys)
    assert code == 2 and "is a directory" in err and "train" not in out
    f = tmp_path / "file"
    f.write_text("x")
    code, out, err = _run(["compare", "--dataset", "ia-enron-employees", "--json", str(f / "r.json"),
                           "--no-progress"], capsys)
    assert code == 2 and "not a writable directory" in err


def test_plot_suffix_appended(tmp_path, capsys):
    code, out, err = _run(["compare", "--dataset", "ia-enron-employees", "--sparsity", "0.5", "--epochs", "1",
                           "--plot", str(tmp_path / "fig"), "--no-progress"], capsys)
    assert code == 0, err
    assert (tmp_path / "fig.png").is_file() and f"wrote {tmp_path / 'fig.png'}" in out


def test_too_small_model_fails_early(capsys):
    code, out, err = _run(["compare", "--dataset", "ia-enron-employees", "--hidden", "16", "--no-progress"],
                          capsys)
    assert code == 2 and "--hidden" in err and "regime" not in out


def test_divergence_is_a_clear_error():
    from gnnsparse.data import load_dataset
    from gnnsparse.train import LinkTask, TrainConfig, run_sparse_training

    class Diverging(LinkTask):
        def loss(self, model, batch):
            return super().loss(model, batch) * float("nan")

    cfg = TrainConfig(epochs=1, batch_size=256)
    task = Diverging(load_dataset("ia-enron-employees"), cfg.batch_size, "mean")
    with pytest.raises(ValueError, match="diverged in phase 'sparse' at step 1"):
        run_sparse_training(task, cfg, 0.5)


def test_datasets_missing_root_exit_2(tmp_path, capsys):
    code, out, err = _run(["datasets", "--root", str(tmp_path / "nope")], capsys)
    assert code == 2 and "nope" in err


def test_output_paths_never_overwrite_inputs_or_each_other(tmp_path, capsys):
    edges = tmp_path / "g.txt"
    edges.write_text("".join(f"{i} {j} {i * 10 + j}\n" for i in range(8) for j in range(i + 1, 8)))
    before = edges.read_text()
    code, out, err = _run(["compare", "--dataset", str(edges), "--json", str(edges), "--no-progress"], capsys)
    assert code == 2 and "refusing to overwrite" in err and edges.read_text() == before
    same = tmp_path / "same.png"
    code, out, err = _run(["compare", "--dataset", str(edges), "--json", str(same), "--plot", str(same),
                           "--no-progress"], capsys)
    assert code == 2 and "same file" in err
    code, out, err = _run(["compare", "--dataset", str(edges), "--json", "", "--no-progress"], capsys)
    assert code == 2 and "empty" in err


def test_bad_isa_env_is_a_clean_error(monkeypatch, capsys):
    monkeypatch.setenv("GNNSPARSE_CPU_ISA", "sse")
    code, out, err = _run(["compare", "--dataset", "ia-enron-employees", "--no-progress"], capsys)
    assert code == 2 and "GNNSPARSE_CPU_ISA" in err


def test_compare_bsr_layout_and_auto_executor(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GNNSPARSE_CHOOSER_CACHE", str(tmp_path / "chooser.json"))
    monkeypatch.setenv("GNNSPARSE_EXECUTOR", "auto")
    js = tmp_path / "r.json"
    code, out, err = _run(["compare", "--dataset", "ia-enron-employees", "--sparsity", "0.75", "--epochs", "2",
                           "--batch-size", "128", "--update-interval", "4", "--hidden", "64", "--layout", "bsr",
                           "--blocksize", "8", "--executor", "auto", "--json", str(js), "--no-progress"], capsys)
    assert code == 0, err
    assert "sparse layout: bsr (blocksize 8); executor: auto" in out
    rows = json.loads(js.read_text())["rows"]
    st = rows[2]
    assert st["measured_sparsity"] == pytest.approx(0.75, abs=0.02)
    layers = [layer for layer in st["layers"] if layer["kind"].startswith("bsr8")]
    assert layers and all(layer["executor"] in ("bsr", "dense") for layer in layers)
    for layer in layers:  # a layer run dense is named as such (and counted with dense FLOPs)
        assert (layer["executor"] == "dense") == ("ran dense" in layer["kind"])
    assert (tmp_path / "chooser.json").exists()  # the measurement was cached on disk


def test_blocksize_without_bsr_layout_is_a_clean_error(capsys):
    code, out, err = _run(["compare", "--no-progress", "--blocksize", "8", "--epochs", "1"], capsys)
    assert code == 2 and "--blocksize is only used with --layout bsr" in err


def test_blocksize_dividing_no_layer_is_a_clean_error(capsys):
    code, out, err = _run(["compare", "--no-progress", "--layout", "bsr", "--blocksize", "7", "--epochs", "1",
                           "--sparsity", "0.9"], capsys)
    assert code == 2 and "--blocksize 7 divides no sparsifiable layer" in err


def test_global_drop_and_grow_moving_nnz_between_layers_trains(capsys):
    # global scope moves connections between layers (their nnz changes) on every step
    code, out, err = _run(["compare", "--dataset", "email-eu", "--sparsity", "0.9", "--epochs", "2", "--model", "gcn",
                           "--pruning", "global", "--grow", "rigl", "--update-interval", "1", "--hidden", "32",
                           "--no-progress", "--executor", "sparse"], capsys)
    assert code == 0, err


def test_compare_loss_chunk_and_step_cap(tmp_path, capsys):
    js = tmp_path / "r.json"
    code, out, err = _run(["compare", "--dataset", "ia-enron-employees", "--sparsity", "0.9", "--epochs", "2",
                           "--batch-size", "100000", "--loss-chunk", "256", "--max-steps-per-epoch", "1",
                           "--hidden", "32", "--json", str(js), "--no-progress"], capsys)
    assert code == 0, err
    rows = json.loads(js.read_text())["rows"]
    assert {r["config"]["loss_chunk"] for r in rows} == {256}
    # one step per epoch (the whole training set in one batch, decoded 256 pairs at a time)
    assert [r["steps"] for r in rows] == [2, 3, 2]
