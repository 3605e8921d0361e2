"""Checkpoints and resume: a run killed (SIGKILL, real subprocess) and resumed ends bit-identical to an
uninterrupted one; bad checkpoints and mismatched resumes fail with clear errors; result files are
written atomically."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gnnsparse import checkpoint as ck
from gnnsparse import report
from gnnsparse.cli import main

REPO = Path(__file__).resolve().parents[1]
# small and fast: 5 capped steps per epoch, RigL updates every 2 steps (5 per run), gradual pruning
# every 2 steps, one fine-tuning epoch, a checkpoint every 2 steps and after every evaluation
ARGS = ["compare", "--dataset", "ia-enron-employees", "--sparsity", "0.9", "--epochs", "3", "--batch-size", "64",
        "--hidden", "32", "--update-interval", "2", "--max-steps-per-epoch", "5", "--executor", "sparse",
        "--threads", "1", "--no-progress"]
TIMING = {"train_seconds", "seconds_by_phase", "eval_seconds", "elapsed_seconds"}


@pytest.fixture(autouse=True)
def _keep_thread_count():
    """``main([... "--threads", "1"])`` sets torch's thread count for the whole test process."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _untimed(obj):
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _cli(ckdir, json_path, failpoint=None, resume=False, extra=()):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("GNNSPARSE_FAILPOINT", None)
    if failpoint:
        env["GNNSPARSE_FAILPOINT"] = failpoint
    cmd = [sys.executable, "-m", "gnnsparse", *ARGS, "--checkpoint-every", "2", "--checkpoint-dir", str(ckdir),
           "--json", str(json_path), *extra] + (["--resume"] if resume else [])
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=str(REPO))


def _final_states(ckdir):
    out = {}
    for f in sorted(Path(ckdir).glob("final-*.pt")):
        out[f.name] = ck.load_file(str(f))["model"]
    return out


def _assert_same_states(a, b):
    assert a.keys() == b.keys()
    for name in a:
        sa, sb = a[name], b[name]
        assert sa.keys() == sb.keys(), name
        for k in sa:
            if torch.is_tensor(sa[k]):
                assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), f"{name}: {k} differs"
            else:
                assert sa[k] == sb[k], f"{name}: {k} differs"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run with checkpoints: its JSON and final model states."""
    d = tmp_path_factory.mktemp("reference")
    p = _cli(d / "ck", d / "r.json")
    assert p.returncode == 0, p.stderr
    return {"dir": d / "ck", "json": json.loads((d / "r.json").read_text())}


def test_checkpointing_does_not_change_results(reference, tmp_path, monkeypatch, capsys):
    writes = []
    orig = report._atomic_write

    def spy(path, write, suffix):
        writes.append(os.path.basename(path))
        orig(path, write, suffix)

    monkeypatch.setattr(report, "_atomic_write", spy)
    js = tmp_path / "plain.json"
    assert main(ARGS + ["--json", str(js), "--plot", str(tmp_path / "p.png")]) == 0, capsys.readouterr().err
    # compare's result files go through the atomic writer
    assert writes == ["plain.json", "p.png"]
    assert _untimed(json.loads(js.read_text())) == _untimed(reference["json"])
    rows = reference["json"]["rows"]
    assert [r["regime"] for r in rows] == ["dense", "train-and-prune", "sparse-training"]
    assert rows[2]["mask_updates"] >= 4  # several mask updates, so a kill can land between and inside them
    assert sorted(_final_states(reference["dir"])) == [
        "final-dense-0.0-seed0.pt", "final-sparse-training-0.9-seed0.pt", "final-train-and-prune-0.9-seed0.pt"]


# (failpoint, run in progress at the last checkpoint before the kill, its phase)
KILLS = [
    ("step-dense:7", "dense-0.0-seed0", "dense"),                         # mid-epoch, after a step
    ("prune:2", "train-and-prune-0.9-seed0", "dense-prune"),             # inside a pruning-mask update
    ("step-finetune:2", "train-and-prune-0.9-seed0", "finetune"),        # fine-tuning the sparsified model
    ("dst-update:3", "sparse-training-0.9-seed0", "sparse"),             # inside a RigL drop-and-grow
    ("checkpoint-write:2", "sparse-training-0.9-seed0", "sparse"),       # inside a checkpoint write
    ("evaluate:2", "sparse-training-0.9-seed0", "sparse"),               # inside an epoch's evaluation
]


def test_killed_and_resumed_run_is_bit_identical(reference, tmp_path, capsys):
    """Kill the job (SIGKILL) at each point in turn, resuming after every kill; the finished job's
    results (timings aside) and final weights and masks equal the uninterrupted run's."""
    d, js = tmp_path / "ck", tmp_path / "r.json"
    for i, (point, key, phase) in enumerate(KILLS):
        p = _cli(d, js, failpoint=point, resume=i > 0)
        assert p.returncode == -signal.SIGKILL, f"{point}: rc {p.returncode}\n{p.stderr[-2000:]}"
        assert not js.exists()  # killed before the results
        saved = ck.load_file(str(d / ck.CHECKPOINT_NAME))  # the last complete checkpoint is readable
        assert saved["current"]["key"] == key and saved["current"]["phase"] == phase, point
        tmp = list(d.glob(".tmp-*"))
        if point.startswith("checkpoint-write"):
            assert len(tmp) == 1 and tmp[0].stat().st_size > 0  # the half-written file, never renamed
        else:
            assert tmp == []
    p = _cli(d, js, resume=True)
    assert p.returncode == 0, p.stderr
    assert "resuming from" in p.stdout
    assert list(d.glob(".tmp-*")) == []  # the crash's leftover was removed
    assert _untimed(json.loads(js.read_text())) == _untimed(reference["json"])
    _assert_same_states(_final_states(d), _final_states(reference["dir"]))
    # resuming a finished job trains nothing and gives the same results again
    js.unlink()
    assert main(ARGS + ["--checkpoint-dir", str(d), "--resume", "--json", str(js)]) == 0
    assert "3 runs finished" in capsys.readouterr().out
    assert _untimed(json.loads(js.read_text())) == _untimed(reference["json"])


# ------------------------------------------------------------------------------------ Python API
class _Snapshotting(ck.Checkpointer):
    """Copies its checkpoint file aside after the ``at``-th save: what a crash right then leaves."""

    def __init__(self, *args, at, snapshot, **kw):
        super().__init__(*args, **kw)
        self.at, self.snapshot, self.saves = at, snapshot, 0

    def save_run(self, key, config, state):
        super().save_run(key, config, state)
        self.saves += 1
        if self.saves == self.at:
            os.makedirs(self.snapshot, exist_ok=True)
            shutil.copy(self.path, os.path.join(self.snapshot, ck.CHECKPOINT_NAME))


@pytest.fixture(scope="module")
def link_task():
    from gnnsparse.data import load_dataset
    from gnnsparse.train import TrainConfig, make_task

    cfg = TrainConfig(epochs=3, batch_size=64, hidden=32, max_steps_per_epoch=4, update_interval=2,
                      dropout=0.3, grow="set", pruning="global", executor="sparse", seed=3)
    return make_task(load_dataset("ia-enron-employees", seed=3), cfg), cfg


@pytest.mark.parametrize("at", [3, 6])  # mid-epoch (step 3), and right after the second evaluation
def test_api_resume_with_dropout_set_and_global_scope(link_task, tmp_path, at):
    """Dropout (torch's global RNG), SET growth (the mask generator) and global drop-and-grow (per-layer
    nnz changes): a run continued from an intermediate checkpoint equals the uninterrupted one."""
    from gnnsparse.train import run_sparse_training

    task, cfg = link_task
    full = _Snapshotting(str(tmp_path / "a"), every=3, at=at, snapshot=str(tmp_path / "b"))
    row = run_sparse_training(task, cfg, 0.9, checkpoint=full)
    # global scope moved connections between layers: per-layer nnz differs from a fresh model's
    assert any(abs(layer["sparsity"] - 0.9) > 1e-3 for layer in row["layers"] if layer["kind"] == "csr")
    saved = ck.load_file(str(tmp_path / "b" / ck.CHECKPOINT_NAME))["current"]
    assert saved["key"] == "sparse-training-0.9-seed3"
    resumed = ck.Checkpointer(str(tmp_path / "b"), every=3, resume=True)
    again = run_sparse_training(task, cfg, 0.9, checkpoint=resumed)
    assert _untimed(again) == _untimed(row)
    a = _final_states(tmp_path / "a")
    assert list(a) == ["final-sparse-training-0.9-seed3.pt"]
    _assert_same_states(_final_states(tmp_path / "b"), a)
    # the resumed run really continued (no step before the checkpoint was trained again)
    assert again["steps"] == row["steps"] and saved["run"]["step"] > 0


def test_api_resume_restores_auto_executor_without_measuring(link_task, tmp_path, monkeypatch):
    from gnnsparse import chooser
    from gnnsparse.train import run_sparse_training

    monkeypatch.setenv("GNNSPARSE_EXECUTOR", "auto")
    monkeypatch.setenv("GNNSPARSE_CHOOSER_CACHE", str(tmp_path / "chooser.json"))
    task, cfg = link_task
    import dataclasses

    cfg = dataclasses.replace(cfg, executor="auto", pruning="layer", epochs=2)
    full = _Snapshotting(str(tmp_path / "a"), every=2, at=2, snapshot=str(tmp_path / "b"))
    row = run_sparse_training(task, cfg, 0.9, checkpoint=full)
    saved = ck.load_file(str(tmp_path / "b" / ck.CHECKPOINT_NAME))["current"]
    assert all(e["choice"] is not None for e in saved["executors"].values())

    def no_measuring(*a, **k):
        raise AssertionError("a resumed run measured an executor decision again")

    monkeypatch.setattr(chooser, "choose", no_measuring)
    again = run_sparse_training(task, cfg, 0.9, checkpoint=ck.Checkpointer(str(tmp_path / "b"), every=2,
                                                                           resume=True))
    assert _untimed(again) == _untimed(row)
    assert [layer["executor"] for layer in again["layers"]] == [layer["executor"] for layer in row["layers"]]


def _interrupted_checkpoint(link_task, tmp_path):
    from gnnsparse.train import run_sparse_training

    task, cfg = link_task
    run_sparse_training(task, cfg, 0.9, checkpoint=_Snapshotting(str(tmp_path / "a"), every=2, at=1,
                                                                 snapshot=str(tmp_path / "b")))
    return str(tmp_path / "b" / ck.CHECKPOINT_NAME)


def _edit_current(path, edit):
    payload = torch.load(path, weights_only=True)
    edit(payload["current"])
    ck.atomic_save(path, payload)


def test_unavailable_backend_executor_or_other_model_is_refused(link_task, tmp_path):
    from gnnsparse.train import run_sparse_training

    task, cfg = link_task
    path = _interrupted_checkpoint(link_task, tmp_path)
    shutil.copy(path, str(tmp_path / "orig.pt"))

    def cuda_backend(cur):
        cur["backend"] = "cuda"

    _edit_current(path, cuda_backend)
    with pytest.raises(ValueError, match="backend 'cuda'.*cannot run now"):
        run_sparse_training(task, cfg, 0.9, checkpoint=ck.Checkpointer(str(tmp_path / "b"), resume=True))

    def bsr_executor(cur):
        for e in cur["executors"].values():
            e["pinned"] = "bsr"

    shutil.copy(str(tmp_path / "orig.pt"), path)
    _edit_current(path, bsr_executor)
    with pytest.raises(ValueError, match="executor 'bsr'"):
        run_sparse_training(task, cfg, 0.9, checkpoint=ck.Checkpointer(str(tmp_path / "b"), resume=True))

    def other_model(cur):
        cur["model"] = {k.replace("encoder", "enc"): v for k, v in cur["model"].items()}

    shutil.copy(str(tmp_path / "orig.pt"), path)
    _edit_current(path, other_model)
    with pytest.raises(ValueError, match="saved state of run sparse-training-0.9-seed3 does not fit this run"):
        run_sparse_training(task, cfg, 0.9, checkpoint=ck.Checkpointer(str(tmp_path / "b"), resume=True))


def test_api_resume_of_another_run_or_config_is_refused(link_task, tmp_path):
    import dataclasses

    from gnnsparse.train import run_sparse_training, run_train_and_prune

    task, cfg = link_task
    _interrupted_checkpoint(link_task, tmp_path)
    b = str(tmp_path / "b")
    with pytest.raises(ValueError, match="unfinished run sparse-training-0.9-seed3, not train-and-prune"):
        run_train_and_prune(task, cfg, 0.9, checkpoint=ck.Checkpointer(b, resume=True))
    with pytest.raises(ValueError, match=r"config\.lr \(checkpoint 0.005, now 0.01\)"):
        run_sparse_training(task, dataclasses.replace(cfg, lr=0.01), 0.9, checkpoint=ck.Checkpointer(b, resume=True))
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        ck.Checkpointer(b)


# ------------------------------------------------------------------------------------ bad input
def test_resume_with_another_config_names_the_field(reference, tmp_path, capsys):
    d = tmp_path / "ck"
    shutil.copytree(reference["dir"], d)
    argv = ARGS + ["--checkpoint-dir", str(d), "--resume"]
    code = main([a if a != "32" else "64" for a in argv])  # --hidden 64
    err = capsys.readouterr().err
    assert code == 2 and "different job" in err and "config.hidden (checkpoint 32, now 64)" in err
    code = main(argv + ["--lr", "0.01"])
    err = capsys.readouterr().err
    assert code == 2 and "config.lr (checkpoint 0.005, now 0.01)" in err
    code = main([a if a != "0.9" else "0.5" for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and "sparsities (checkpoint [0.9], now [0.5])" in err
    code = main([a if a != "ia-enron-employees" else "email-eu" for a in argv] + ["--task", "link"])
    err = capsys.readouterr().err
    assert code == 2 and "dataset" in err


def test_corrupt_checkpoint_is_a_clear_error_naming_the_file(reference, tmp_path, capsys):
    d = tmp_path / "ck"
    shutil.copytree(reference["dir"], d)
    f = d / ck.CHECKPOINT_NAME
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])  # truncated
    code = main(ARGS + ["--checkpoint-dir", str(d), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and str(f) in err and "corrupt or truncated" in err
    f.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        ck.load_file(str(f))
    torch.save({"something": torch.zeros(2)}, str(f))
    with pytest.raises(ValueError, match="is not a gnnsparse checkpoint"):
        ck.load_file(str(f))
    torch.save({"format": "gnnsparse-checkpoint", "version": 999}, str(f))
    with pytest.raises(ValueError, match="format version 999"):
        ck.load_file(str(f))
    with pytest.raises(ValueError, match="does not exist"):
        ck.load_file(str(d / "missing.pt"))


def test_checkpoint_flags_need_a_folder_and_refuse_to_overwrite(reference, tmp_path, capsys):
    code = main(ARGS + ["--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "--resume needs --checkpoint-dir" in err
    code = main(ARGS + ["--checkpoint-every", "3"])
    assert code == 2 and "--checkpoint-every needs --checkpoint-dir" in capsys.readouterr().err
    code = main(ARGS + ["--checkpoint-dir", str(reference["dir"])])  # no --resume
    err = capsys.readouterr().err
    assert code == 2 and "already holds a checkpoint" in err
    (tmp_path / "file").write_text("x")
    code = main(ARGS + ["--checkpoint-dir", str(tmp_path / "file")])
    assert code == 2 and "is a file" in capsys.readouterr().err


def test_failpoint_spec_is_validated(monkeypatch):
    from gnnsparse._failpoints import failpoint

    monkeypatch.setenv("GNNSPARSE_FAILPOINT", "x:zero")
    with pytest.raises(ValueError, match="must be an integer"):
        failpoint("x")
    monkeypatch.setenv("GNNSPARSE_FAILPOINT", "x:0")
    with pytest.raises(ValueError, match=">= 1"):
        failpoint("x")
    monkeypatch.setenv("GNNSPARSE_FAILPOINT", "other:1")
    failpoint("x")  # another point: returns


# ------------------------------------------------------------------------------------ atomic writes
def test_failed_result_writes_leave_the_old_file(tmp_path, monkeypatch):
    js = tmp_path / "r.json"
    report.write_json(str(js), {"a": 1})
    old = js.read_bytes()

    class Unserializable:
        def __float__(self):
            raise TypeError("cannot serialize")

    with pytest.raises(TypeError):  # fails after a large part was written to the temporary file
        report.write_json(str(js), {"a": "x" * 200000, "z": Unserializable()})
    assert js.read_bytes() == old
    md = tmp_path / "results.md"
    report.write_text(str(md), "old table\n")

    def half_then_fail(tmp):
        with open(tmp, "w") as f:
            f.write("| new | table |\n")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        report._atomic_write(str(md), half_then_fail, ".tmp")
    assert md.read_text() == "old table\n"
    png = tmp_path / "p.png"
    rows = [{"regime": "dense", "target_sparsity": 0.0, "measured_sparsity": 0.0, "train_flops": 1,
             "train_seconds": 1.0, "seed": 0,
             "metrics": {"val": {"auc": 0.5}, "test": {"auc": 0.5, "ap": 0.5, "auc_seen": 0.5}}}]
    report.plot(str(png), rows, "link")
    old_png = png.read_bytes()
    from matplotlib.figure import Figure

    def broken_savefig(self, fname, **kw):
        with open(fname, "wb") as f:
            f.write(old_png[:100])
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        report.plot(str(png), rows, "link")
    assert png.read_bytes() == old_png
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png", "r.json", "results.md"]  # no temp files


def test_checkpoint_write_is_atomic_and_loads_weights_only(tmp_path):
    path = str(tmp_path / "x.pt")
    payload = {"format": "gnnsparse-checkpoint", "version": ck.FORMAT_VERSION, "t": torch.arange(5),
               "nested": {"l": [1, 2.5, "s", None, True]}}
    ck.atomic_save(path, payload)
    got = ck.load_file(path)
    assert torch.equal(got["t"], payload["t"]) and got["nested"] == payload["nested"]
    with pytest.raises(Exception):
        ck.atomic_save(path, {"format": "gnnsparse-checkpoint", "version": ck.FORMAT_VERSION, "bad": lambda: 0})
    assert torch.equal(ck.load_file(path)["t"], payload["t"])  # the old file is intact
    assert os.listdir(tmp_path) == ["x.pt"]


@pytest.mark.parametrize("dataset", ["ia-enron-employees", "email-eu"])
def test_epoch_batches_resume_mid_epoch(dataset):
    """``start=i`` (with or without the generator's state after batch i - 1) yields exactly the
    remaining batches of the uninterrupted epoch and leaves the generator where it would be."""
    from gnnsparse.data import load_dataset
    from gnnsparse.train import TrainConfig, make_task

    task = make_task(load_dataset(dataset), TrainConfig(batch_size=128))
    gen = torch.Generator().manual_seed(5)
    epoch_start = gen.get_state()
    batches, states = [], []
    for b in task.epoch_batches(gen):
        batches.append(b)
        states.append(gen.get_state())
    end = gen.get_state()
    assert len(batches) >= 4
    for i in (1, 3, len(batches)):
        for with_state in (True, False):
            gen.set_state(epoch_start)
            rest = list(task.epoch_batches(gen, start=i, gen_state=states[i - 1] if with_state else None))
            assert len(rest) == len(batches) - i
            for got, want in zip(rest, batches[i:]):
                assert all(torch.equal(x, y) for x, y in zip(got, want))
            assert torch.equal(gen.get_state(), end)


# (saves before the snapshot, phase, epoch, next batch): mid-epoch in the dense phase; after an epoch's last
# capped step, before its evaluation; at the phase's end (the resume redoes the switch to sparse layers);
# mid-epoch in fine-tuning
@pytest.mark.parametrize("at,phase,epoch,batch", [(1, "dense-prune", 0, 2), (4, "dense-prune", 1, 3),
                                                  (5, "dense-prune", 2, 0), (6, "finetune", 0, 2)])
def test_api_resume_train_and_prune_on_a_node_task(tmp_path, at, phase, epoch, batch):
    """Node classification, global one-shot pruning: resumed in the dense phase (pruner state) and in
    fine-tuning (the sparsified model rebuilt from the saved masks before its state is loaded)."""
    from gnnsparse.data import load_dataset
    from gnnsparse.train import TrainConfig, make_task, run_train_and_prune

    cfg = TrainConfig(epochs=2, finetune_epochs=2, batch_size=64, hidden=32, max_steps_per_epoch=3, dropout=0.2,
                      pruning="global", prune_schedule="oneshot", executor="sparse", seed=1)
    task = make_task(load_dataset("email-eu", seed=1), cfg)
    full = _Snapshotting(str(tmp_path / "a"), every=2, at=at, snapshot=str(tmp_path / "b"))
    row = run_train_and_prune(task, cfg, 0.75, checkpoint=full)
    saved = ck.load_file(str(tmp_path / "b" / ck.CHECKPOINT_NAME))["current"]
    assert (saved["phase"], saved["epoch"], saved["batch"]) == (phase, epoch, batch)
    again = run_train_and_prune(task, cfg, 0.75, checkpoint=ck.Checkpointer(str(tmp_path / "b"), every=2,
                                                                            resume=True))
    assert _untimed(again) == _untimed(row)
    _assert_same_states(_final_states(tmp_path / "b"), _final_states(tmp_path / "a"))


# ------------------------------------------------------------------------------ damaged checkpoints
def _after_first_evaluation(link_task, tmp_path):
    """A checkpoint saved right after the first epoch's evaluation (a selected state is held)."""
    from gnnsparse.train import run_sparse_training

    task, cfg = link_task
    run_sparse_training(task, cfg, 0.9, checkpoint=_Snapshotting(str(tmp_path / "a"), every=2, at=3,
                                                                 snapshot=str(tmp_path / "b")))
    path = str(tmp_path / "b" / ck.CHECKPOINT_NAME)
    assert ck.load_file(path)["current"]["run"]["best_state"] is not None
    return path


def _first_sparse_prefix(state):
    return next(k for k in state if k.endswith("crow_indices"))[: -len("crow_indices")]


def _crow_not_monotone(cur):
    p = _first_sparse_prefix(cur["model"])
    crow = cur["model"][p + "crow_indices"].clone()
    crow[1], crow[2] = crow[2] + 5, crow[1]
    cur["model"][p + "crow_indices"] = crow


def _values_short(cur):
    p = _first_sparse_prefix(cur["model"])
    cur["model"][p + "values"] = cur["model"][p + "values"][:-1]


def _selected_col_out_of_range(cur):
    best = cur["run"]["best_state"]
    p = _first_sparse_prefix(best)
    col = best[p + "col_indices"].clone()
    col[0] = 10 ** 6
    best[p + "col_indices"] = col


def _adam_moment_of_other_nnz(cur):
    for st in cur["optimizer"]["state"].values():
        st["exp_avg"] = st["exp_avg"].flatten()[:-1]
        return


def _torch_rng_short(cur):
    cur["rng"]["torch"] = torch.zeros(3, dtype=torch.uint8)


def _batch_rng_not_a_tensor(cur):
    cur["rng"]["batch"] = "x"


def _epoch_past_the_phase(cur):
    cur["epoch"] = 10 ** 9


def _negative_batch(cur):
    cur["batch"] = -5


def _unknown_phase(cur):
    cur["phase"] = "nope"


def _unknown_backend(cur):
    cur["backend"] = "zzz"


def _executor_choice_without_nnz(cur):
    name = next(iter(cur["executors"]))
    cur["executors"][name] = {"pinned": None, "choice": {"executor": "dense"}}


def _curve_not_a_list(cur):
    cur["run"]["curve"] = 5


def _loss_not_a_number(cur):
    cur["loss"] = "a"


@pytest.mark.parametrize("edit,reason", [
    (_crow_not_monotone, "crow_indices decreases"),
    (_values_short, "values must have shape"),
    (_selected_col_out_of_range, "outside"),
    (_adam_moment_of_other_nnz, "optimizer state exp_avg of parameter"),
    (_torch_rng_short, "RNG state size"),
    (_batch_rng_not_a_tensor, "ByteTensor"),
    (_epoch_past_the_phase, "not a position of this phase"),
    (_negative_batch, "not a position of this phase"),
    (_unknown_phase, "phase 'nope', which is not a phase of sparse-training"),
    (_unknown_backend, "saved backend 'zzz'"),
    (_executor_choice_without_nnz, "field 'nnz' is missing"),
    (_curve_not_a_list, "does not fit this run"),
    (_loss_not_a_number, "loss 'a' is not a number"),
])
def test_damaged_saved_state_is_refused_before_training(link_task, tmp_path, edit, reason):
    """A hand-edited or damaged run state (tensors of the wrong shape, an invalid CSR structure in the
    model or in the selected state, Adam moments of another nnz, bad random states, a position outside
    the phase, an unknown phase or backend, a missing field) is a ValueError naming the file and the
    reason, raised before any step: never a raw TypeError/KeyError/RuntimeError, a kernel crash, or a
    silent restart from scratch (the unknown phase) or from a wrong batch (the negative position)."""
    from gnnsparse.train import run_sparse_training

    task, cfg = link_task
    path = _after_first_evaluation(link_task, tmp_path)
    _edit_current(path, edit)
    with pytest.raises(ValueError) as info:
        run_sparse_training(task, cfg, 0.9, checkpoint=ck.Checkpointer(str(tmp_path / "b"), resume=True))
    msg = str(info.value)
    assert path in msg and reason in msg and "\n" not in msg, msg


@pytest.mark.parametrize("edit,reason", [
    (lambda p: p.pop("meta"), "field meta is missing"),
    (lambda p: p.__setitem__("finished", ["x"]), "field finished is missing or not a dict"),
    (lambda p: p["finished"].__setitem__("dense-0.0-seed3", "{not json"), "'dense-0.0-seed3' is not a JSON"),
    (lambda p: p.__setitem__("current", "x"), "field current"),
    (lambda p: p["current"].pop("key"), "field current"),
    (lambda p: p["current"].pop("config"), "field current"),
])
def test_damaged_job_fields_are_refused_naming_the_file(link_task, tmp_path, edit, reason):
    path = _after_first_evaluation(link_task, tmp_path)
    payload = torch.load(path, weights_only=True)
    edit(payload)
    ck.atomic_save(path, payload)
    with pytest.raises(ValueError, match="is damaged") as info:
        ck.Checkpointer(str(tmp_path / "b"), resume=True)
    assert path in str(info.value) and reason in str(info.value)


def test_invalid_structure_reason_reaches_the_command_line(tmp_path, capsys):
    """load_state_dict puts the reason on its second line; the CLI prints one line: it must hold it."""
    d = tmp_path / "ck"
    p = _cli(d, tmp_path / "r.json", failpoint="step-sparse:3")
    assert p.returncode == -signal.SIGKILL, p.stderr
    path = str(d / ck.CHECKPOINT_NAME)
    assert ck.load_file(path)["current"]["phase"] == "sparse"
    _edit_current(path, _values_short)
    code = main(ARGS + ["--checkpoint-dir", str(d), "--resume", "--checkpoint-every", "2"])
    err = capsys.readouterr().err
    assert code == 2 and path in err and "values must have shape" in err, err


# ------------------------------------------------------------------------------ one job per folder
def test_second_job_on_a_folder_is_refused_and_keeps_the_first_ones_files(tmp_path):
    """A job holds its folder locked: a second process (two --resume started by accident) is refused
    instead of deleting the first one's temporary file mid-write and interleaving checkpoints; the
    same process may open the folder again, and the lock goes with the holder."""
    d = tmp_path / "ck"
    d.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from gnnsparse import checkpoint as ck; "
         "c = ck.Checkpointer(sys.argv[1]); print('ready', flush=True); time.sleep(120)", str(d)],
        stdout=subprocess.PIPE, text=True, cwd=str(REPO),
        env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert holder.stdout.readline().strip() == "ready"
        tmp = d / ".tmp-inflight.pt"
        tmp.write_bytes(b"partial")  # the holder's write in progress
        with pytest.raises(ValueError, match="in use by another running gnnsparse job"):
            ck.Checkpointer(str(d), resume=True)
        assert tmp.exists()
    finally:
        holder.kill()
        holder.wait()
    first = ck.Checkpointer(str(d), resume=True)  # the holder is gone: the folder is free
    assert not tmp.exists()  # a crash's leftover, removed now
    second = ck.Checkpointer(str(d), resume=True)  # same process: shares the lock
    first.close()
    second.close()
    code = subprocess.run([sys.executable, "-c", "import sys; from gnnsparse import checkpoint as ck; "
                           "ck.Checkpointer(sys.argv[1], resume=True)", str(d)], cwd=str(REPO),
                          env=dict(os.environ, PYTHONPATH=str(REPO))).returncode
    assert code == 0  # closed: another process may use it


def test_resume_with_other_threads_or_edited_data_is_refused(tmp_path, capsys):
    """The thread count (torch's dense kernels are bit-reproducible only at the same one) and the data's
    content (an edge file edited in place keeps its name, size and counts) are part of the job."""
    src = Path(os.environ.get("GNNSPARSE_DATA", REPO.parent / "shared" / "data"))
    src = src / "networkrepository" / "ia-enron-employees.edges"
    data = tmp_path / "ia-enron-employees.edges"
    shutil.copy(src, data)
    data.chmod(0o644)
    d = tmp_path / "ck"
    argv = [a if a != "ia-enron-employees" else str(data) for a in ARGS] + [
        "--checkpoint-dir", str(d), "--epochs", "1", "--finetune-epochs", "0"]
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    code = main(argv + ["--resume", "--threads", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "threads (checkpoint 1, now 2)" in err, err
    text = data.read_text()
    first, rest = text.split("\n", 1)
    edited = first[:-1] + str((int(first[-1]) + 1) % 10)  # one timestamp digit: same size, same counts
    data.write_text(edited + "\n" + rest)
    assert data.stat().st_size == src.stat().st_size
    code = main(argv + ["--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "different job: data_sha256" in err, err
    data.write_text(text)
    assert main(argv + ["--resume"]) == 0, capsys.readouterr().err  # the same data again: resumes


class _FullDisk:
    """A file whose writes fail with ENOSPC once ``room`` bytes are written (a full disk or quota)."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, data):
        import errno

        if self.room < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_full_disk_during_a_checkpoint_write_is_a_clear_error(tmp_path, monkeypatch, capsys):
    """torch.save turns a failed write into "RuntimeError: [enforce fail ...] unexpected pos": the
    command must say which file could not be written and why, keep the previous checkpoint and leave
    no temporary file; the JSON writer names its file too."""
    d = tmp_path / "ck"
    real_fdopen = os.fdopen
    full = {"on": False}

    def fdopen(fd, *a, **k):
        f = real_fdopen(fd, *a, **k)
        target = os.readlink(f"/proc/self/fd/{fd}")
        return _FullDisk(f, 2000) if full["on"] and target.startswith(str(d)) else f

    monkeypatch.setattr(ck.os, "fdopen", fdopen)
    ck.atomic_save(str(d / "x.pt"), {"a": torch.arange(4)})
    full["on"] = True
    with pytest.raises(OSError) as info:
        ck.atomic_save(str(d / "x.pt"), {"a": torch.zeros(100000)})
    assert info.value.errno == 28 and f"cannot write checkpoint {d / 'x.pt'}: No space left" in str(info.value)
    assert torch.equal(torch.load(str(d / "x.pt"), weights_only=True)["a"], torch.arange(4))  # previous file
    assert sorted(p.name for p in d.iterdir()) == ["x.pt"]
    code = main(ARGS + ["--checkpoint-dir", str(d)])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot write checkpoint {d / ck.CHECKPOINT_NAME}: No space left on device" in err, err
    assert "Traceback" not in err and not list(d.glob(".tmp-*"))


def test_full_disk_during_the_json_write_names_the_file(tmp_path, monkeypatch):
    import errno

    def write(tmp):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    out = tmp_path / "r.json"
    with pytest.raises(OSError, match=f"cannot write {out}: No space left on device"):
        report._atomic_write(str(out), write, ".json")
    assert list(tmp_path.iterdir()) == []


class _RunsCode:
    """Unpickling it would call ``os.system``: weights_only must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_checkpoint_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / ck.CHECKPOINT_NAME
    torch.save({"format": "gnnsparse-checkpoint", "version": ck.FORMAT_VERSION, "meta": {}, "finished": {},
                "current": _RunsCode(marker)}, str(path))
    with pytest.raises(ValueError, match="holds Python objects other than tensors and plain data") as info:
        ck.Checkpointer(str(tmp_path), resume=True)
    assert str(path) in str(info.value) and not marker.exists()


def test_resume_with_another_executor_override_is_refused(link_task, tmp_path, monkeypatch):
    """GNNSPARSE_EXECUTOR (and chooser.set_override) win over restored "auto" decisions: set at the
    resume only, it switched the kernels silently and the run ended with other metrics; it is refused."""
    import dataclasses

    from gnnsparse import chooser
    from gnnsparse.train import run_sparse_training

    monkeypatch.delenv("GNNSPARSE_EXECUTOR", raising=False)
    monkeypatch.setenv("GNNSPARSE_CHOOSER_CACHE", str(tmp_path / "chooser.json"))
    task, cfg = link_task
    cfg = dataclasses.replace(cfg, executor="auto", pruning="layer", epochs=2)
    run_sparse_training(task, cfg, 0.9, checkpoint=_Snapshotting(str(tmp_path / "a"), every=2, at=1,
                                                                 snapshot=str(tmp_path / "b")))
    b = str(tmp_path / "b")
    monkeypatch.setenv("GNNSPARSE_EXECUTOR", "sparse")
    with pytest.raises(ValueError, match="ran with executor override 'auto', now 'sparse'"):
        run_sparse_training(task, cfg, 0.9, checkpoint=ck.Checkpointer(b, resume=True))
    monkeypatch.delenv("GNNSPARSE_EXECUTOR")
    with chooser.override("dense"), pytest.raises(ValueError, match="override 'auto', now 'dense'"):
        run_sparse_training(task, cfg, 0.9, checkpoint=ck.Checkpointer(b, resume=True))
    row = run_sparse_training(task, cfg, 0.9, checkpoint=ck.Checkpointer(b, resume=True))  # same setting
    assert row["regime"] == "sparse-training"


@pytest.mark.parametrize("name", [ck.CHECKPOINT_NAME, ck.LOCK_NAME, "final-dense-0.0-seed0.pt"])
def test_result_file_over_a_checkpoint_file_is_refused(tmp_path, capsys, name):
    """--json ckpt/checkpoint.pt replaced the checkpoint with JSON at the end of the job (the next
    --resume called it corrupt); refused up front, before any training."""
    d = tmp_path / "ck"
    code = main(ARGS + ["--checkpoint-dir", str(d), "--json", str(d / name)])
    err = capsys.readouterr().err
    assert code == 2 and f"refusing to write a result to {d / name}" in err, err
    assert not (d / ck.CHECKPOINT_NAME).exists()


def test_ctrl_c_while_starting_up_is_not_a_traceback(monkeypatch, capsys):
    """Ctrl-C while torch is still being imported (build_parser imports the training module) printed a
    KeyboardInterrupt traceback; it is "gnnsparse: interrupted", status 130, like Ctrl-C in a run."""
    from gnnsparse import cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["compare"]) == 130
    assert capsys.readouterr().err.strip() == "gnnsparse: interrupted"


def test_describe_difference_wording():
    assert ck.describe_difference({"a": 1}, {}) == "a (only in the checkpoint)"
    assert ck.describe_difference({}, {"b": {"c": 2}}) == "b (only in this run)"
    assert ck.describe_difference({"b": {"c": 2}}, {"b": {"c": 3}}) == "b.c (checkpoint 2, now 3)"
    assert ck.describe_difference({"x": float("nan")}, {"x": float("nan")}) is None
