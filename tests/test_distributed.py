"""Data-parallel training over torch.distributed (gloo, CPU), with real processes.

Two ranks (a real ``torchrun`` launch, and processes given torchrun's environment by the test) train
the same small job as one process with the same global batch: masks and weights must stay identical
on both ranks (checked after every mask update), metrics within 0.005 of one process; a rank killed
or hung makes the other exit 3 with a clear message within its timeout; a checkpoint written by two
ranks resumes on one and the other way round; a mask made to diverge is caught."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gnnsparse import checkpoint as ck
from gnnsparse import distributed
from gnnsparse.nn import SparseLinear

REPO = Path(__file__).resolve().parents[1]
# the small job of tests/test_checkpoint.py: 5 capped steps per epoch, RigL updates every 2 steps,
# gradual pruning every 2 steps, one fine-tuning epoch
ARGS = ["compare", "--dataset", "ia-enron-employees", "--sparsity", "0.9", "--epochs", "3", "--batch-size", "64",
        "--hidden", "32", "--update-interval", "2", "--max-steps-per-epoch", "5", "--executor", "sparse",
        "--threads", "1", "--no-progress"]
TOL = 0.005  # 0.5 points of the metric
TIMEOUT = 20  # --dist-timeout of the failure tests (seconds)


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    for k in ("GNNSPARSE_FAILPOINT", "GNNSPARSE_FAILPOINT_RANK", "GNNSPARSE_PERTURB", "GNNSPARSE_FAILPOINT_SIGNAL",
              distributed.RANK_DUMP_ENV, "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one(extra=(), **env):
    """One process (no torchrun)."""
    return subprocess.run([sys.executable, "-m", "gnnsparse", *ARGS, *extra], capture_output=True, text=True,
                          env=_env(**env), timeout=300, cwd=str(REPO))


def _torchrun(extra=(), **env):
    """A real ``torchrun --standalone --nproc-per-node 2`` launch."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "gnnsparse", *ARGS, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(**env), timeout=300, cwd=str(REPO))


def _spawn(extra=(), env_by_rank=None, world=2):
    """``world`` ranks given torchrun's environment by hand (so one rank can have its own failpoint)."""
    port = _free_port()
    procs = []
    for r in range(world):
        env = _env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=r, WORLD_SIZE=world, LOCAL_RANK=r,
                   **(env_by_rank or {}).get(r, {}))
        procs.append(subprocess.Popen([sys.executable, "-m", "gnnsparse", *ARGS, *extra], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO)))
    return procs


def _rows(path):
    return json.loads(Path(path).read_text())["rows"]


def _assert_close_rows(rows, ref):
    assert [(r["regime"], r["target_sparsity"]) for r in rows] == [(r["regime"], r["target_sparsity"]) for r in ref]
    for r, q in zip(rows, ref):
        assert r["steps"] == q["steps"]
        for split in ("val", "test"):
            for name in ("auc", "ap", "acc"):
                a, b = r["metrics"][split][name], q["metrics"][split][name]
                assert abs(a - b) <= TOL, f"{r['regime']} {split} {name}: {a} vs {b}"


# ------------------------------------------------------------------------------- fingerprints
def test_fingerprint_sees_every_change():
    torch.manual_seed(0)
    layer = SparseLinear(16, 8, sparsity=0.5)
    fp = distributed.fingerprint((layer.crow_indices, layer.col_indices))
    assert fp == distributed.fingerprint((layer.crow_indices.clone(), layer.col_indices.clone()))
    assert -2**63 <= fp < 2**63
    col = layer.col_indices.clone()
    col[0] = (col[0] + 1) % 16
    assert distributed.fingerprint((layer.crow_indices, col)) != fp  # one moved position
    assert distributed.fingerprint((layer.col_indices, layer.crow_indices)) != fp  # order
    assert distributed.fingerprint((layer.crow_indices, layer.col_indices.int())) != fp  # dtype
    m = torch.zeros(4, 4, dtype=torch.bool)
    assert distributed.fingerprint((m,)) != distributed.fingerprint((m.reshape(2, 8),))  # shape
    m2 = m.clone()
    m2[3, 3] = True
    assert distributed.fingerprint((m2,)) != distributed.fingerprint((m,))
    model = torch.nn.Sequential(layer, torch.nn.ReLU(), SparseLinear(8, 4, sparsity=0.5))
    fps = distributed.mask_fingerprints(model, {"2": m})
    assert list(fps) == ["0", "2", "mask:2"] and fps["0"] == fp
    # without a process group of several ranks there is nothing to compare
    assert distributed.world_size() == 1 and distributed.is_main()
    assert distributed.check_masks(model, "a test") is False
    batch, n = distributed.shard_batch((torch.arange(10).view(2, 5), torch.arange(5)))
    assert n == 5 and torch.equal(batch[1], torch.arange(5))


def test_init_from_env_checks_the_environment(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    assert distributed.init_from_env() is False  # not launched by torchrun: one process
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.init_from_env() is False  # one rank: nothing to synchronize
    with pytest.raises(ValueError, match="timeout must be > 0"):
        distributed.init_from_env(0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match=r"RANK=2 must be in \[0, WORLD_SIZE=2\)"):
        distributed.init_from_env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="must be integers"):
        distributed.init_from_env()
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ValueError, match="MASTER_ADDR, MASTER_PORT unset: launch with torchrun"):
        distributed.init_from_env()
    with pytest.raises(ValueError, match="'gloo' or 'nccl'"):
        monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
        monkeypatch.setenv("MASTER_PORT", "1")
        distributed.init_from_env(backend="mpi")
    assert distributed.world_size() == 1  # nothing was initialized


def test_reproduce_refuses_torchrun(monkeypatch, tmp_path, capsys):
    from gnnsparse.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["reproduce", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "launch `gnnsparse compare` with torchrun" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- two ranks
@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    d = tmp_path_factory.mktemp("one")
    p = _one(["--json", str(d / "r.json")])
    assert p.returncode == 0, p.stderr
    return _rows(d / "r.json")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """A torchrun launch of 2 ranks with checkpoints and per-rank dumps of the final states."""
    d = tmp_path_factory.mktemp("two")
    p = _torchrun(["--json", str(d / "r.json"), "--checkpoint-dir", str(d / "ck"), "--checkpoint-every", "2"],
                  **{distributed.RANK_DUMP_ENV: d / "dump"})
    assert p.returncode == 0, p.stderr[-3000:]
    return {"dir": d, "rows": _rows(d / "r.json"), "stdout": p.stdout}


def test_two_ranks_hold_identical_masks_and_weights(two_ranks):
    rows, dump = two_ranks["rows"], two_ranks["dir"] / "dump"
    keys = sorted(f.name[len("rank0-"):] for f in dump.glob("rank0-*.pt"))
    assert keys == ["dense-0.0-seed0.pt", "sparse-training-0.9-seed0.pt", "train-and-prune-0.9-seed0.pt"]
    for key in keys:
        a, b = (torch.load(dump / f"rank{r}-{key}", weights_only=False) for r in (0, 1))
        for part in ("last", "selected"):
            assert a[part].keys() == b[part].keys()
            for name, t in a[part].items():
                if torch.is_tensor(t):  # structures (crow/col), values, biases, dense weights
                    assert torch.equal(t, b[part][name]), f"{key} {part}: {name} differs between the ranks"
        assert a["mask_checks"] == b["mask_checks"]
    by_regime = {r["regime"]: r for r in rows}
    st, tap = by_regime["sparse-training"], by_regime["train-and-prune"]
    # a cross-rank mask check after every mask update, and several updates
    assert st["distributed"]["mask_checks"] == st["mask_updates"] >= 4
    assert tap["distributed"]["mask_checks"] == tap["prune_updates"] >= 4
    assert by_regime["dense"]["distributed"]["mask_checks"] == 0
    assert all(r["world_size"] == 2 for r in rows)
    # rank 0 alone printed the table and wrote the checkpoints
    assert two_ranks["stdout"].count("sparse-training    0.90") == 1
    assert sorted(f.name for f in (two_ranks["dir"] / "ck").glob("final-*.pt")) == [
        "final-dense-0.0-seed0.pt", "final-sparse-training-0.9-seed0.pt", "final-train-and-prune-0.9-seed0.pt"]


def test_two_ranks_match_one_process(two_ranks, one_process):
    rows = two_ranks["rows"]
    _assert_close_rows(rows, one_process)
    for r, q in zip(rows, one_process):
        per_rank = r["distributed"]["flops_by_rank"]
        assert sum(per_rank) == r["train_flops"] == sum(r["flops_by_phase"].values())
        # every rank encodes the whole graph each step and decodes half of the batch: each rank
        # executes at most what one process does, together at least that and at most twice that
        assert max(per_rank) <= q["train_flops"] < r["train_flops"] <= 2 * q["train_flops"]
        assert r["train_seconds"] == pytest.approx(max(r["distributed"]["train_seconds_by_rank"]))


# ------------------------------------------------------------------------- failures and resume
def _wait_dead_and_survivor(procs, dead, deadline_s):
    """Wait for rank ``dead`` to die, then return (survivor's returncode, stderr, seconds from the
    death to the survivor's exit)."""
    survivor = procs[1 - dead]
    try:
        procs[dead].wait(timeout=deadline_s)
        t_dead = time.monotonic()
        survivor.wait(timeout=TIMEOUT + 30)
        return survivor.returncode, survivor.stderr.read(), time.monotonic() - t_dead
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def test_killed_rank_stops_the_other_and_job_resumes_on_one_process(tmp_path, one_process):
    d = tmp_path / "ck"
    extra = ["--checkpoint-dir", str(d), "--checkpoint-every", "2", "--dist-timeout", str(TIMEOUT)]
    procs = _spawn(extra, {1: {"GNNSPARSE_FAILPOINT": "step-sparse:3"}})  # rank 1 killed in sparse training
    code, err, waited = _wait_dead_and_survivor(procs, 1, 300)
    assert procs[1].returncode == -signal.SIGKILL
    assert code == 3, err[-2000:]
    assert "gnnsparse: error: rank 0: lost contact with another rank" in err
    assert waited < TIMEOUT + 10, waited
    saved = ck.load_file(str(d / ck.CHECKPOINT_NAME))  # rank 0's checkpoint of the two-rank run
    assert saved["current"]["key"] == "sparse-training-0.9-seed0" and saved["current"]["world_size"] == 2
    # the same job continues on one process
    p = _one([*extra[:4], "--resume", "--json", str(tmp_path / "r.json")])
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resuming from" in p.stdout
    _assert_close_rows(_rows(tmp_path / "r.json"), one_process)


def _stopped(pid: int) -> bool:
    """True when process ``pid`` is stopped (state ``T`` in /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def test_hung_rank_times_out():
    """Rank 1 stops (SIGSTOP) inside a step: rank 0 gives up after --dist-timeout, exit 3."""
    timeout = 6
    procs = _spawn(["--dist-timeout", str(timeout)], {1: {"GNNSPARSE_FAILPOINT": "step-dense:3",
                                                           "GNNSPARSE_FAILPOINT_SIGNAL": "STOP"}})
    try:
        t0, deadline = None, time.monotonic() + 300
        while procs[0].poll() is None and time.monotonic() < deadline:
            if t0 is None and _stopped(procs[1].pid):
                t0 = time.monotonic()
            time.sleep(0.05)
        assert t0 is not None, "rank 1 never stopped"
        procs[0].wait(timeout=timeout + 60)
        waited = time.monotonic() - t0
        err = procs[0].stderr.read()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    assert procs[0].returncode == 3, err[-2000:]
    assert "gnnsparse: error: rank 0: lost contact with another rank" in err
    assert timeout - 1 <= waited < timeout + 15, waited


def test_one_process_checkpoint_resumes_on_two_ranks(tmp_path, one_process):
    d = tmp_path / "ck"
    extra = ["--checkpoint-dir", str(d), "--checkpoint-every", "2"]
    p = _one(extra, GNNSPARSE_FAILPOINT="dst-update:3")  # killed inside a RigL update
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    p = _torchrun([*extra, "--resume", "--json", str(tmp_path / "r.json")])
    assert p.returncode == 0, p.stderr[-3000:]
    rows = _rows(tmp_path / "r.json")
    _assert_close_rows(rows, one_process)
    assert [r["world_size"] for r in rows] == [1, 1, 2]  # dense and train-and-prune finished on one


@pytest.mark.parametrize("hit, where, layer", [(2, "pruning update 2 (step", "mask:encoder."),
                                               (8, "mask update 2 (step", "encoder.")])
def test_diverged_mask_is_caught(hit, where, layer):
    """Rank 1 flips one position of a mask before the ``hit``-th check: 2 is train-and-prune's 2nd
    pruning update (a pruning mask flipped); train-and-prune checks 4 updates and its sparsified
    structure, sparse training its initial masks, so 8 is sparse training's 2nd drop-and-grow (a
    SparseLinear structure changed). Both ranks stop with the error naming the update and layer."""
    procs = _spawn(["--dist-timeout", str(TIMEOUT)], {1: {"GNNSPARSE_PERTURB": f"mask-check:{hit}"}})
    outs = [p.communicate(timeout=300) for p in procs]
    for r, (p, (_, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 3, err[-2000:]
        assert f"gnnsparse: error: rank {r}: ranks hold different masks after {where}" in err
        assert f"layer {layer}" in err and "on rank(s) 1 differs from rank 0" in err
