"""benchmarks/gpu_check.py runs end to end in --dry-run mode (CPU, tiny shapes, Triton interpreted):
the script that checks a GPU is itself checked in CI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run(tmp_path):
    pytest.importorskip("triton")
    out = tmp_path / "check.json"
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["backends"] == ["cpu", "triton"] and data["dry_run"] is True
    assert data["environment"]["libraries"]["_C"].startswith(str(ROOT))
    checks = data["checks"]
    ops = {c["op"] for c in checks}
    assert ops == {"csr_linear", "csr_linear_backward_input", "csr_sddmm", "bsr_linear",
                   "bsr_linear_backward_input", "bsr_sddmm"}
    assert checks and all(c["pass"] for c in checks), [c for c in checks if not c["pass"]]
    methods = {t["method"] for t in data["timings"]}
    assert {"dense", "torch_sparse_csr", "cpu_csr", "cpu_bsr16", "triton_csr", "triton_bsr16"} <= methods
    for t in data["timings"]:
        if t["method"] != "dense" and "forward_ms" in t:
            assert t["forward_speedup_vs_dense"] > 0
    assert data["targets"][-1]["verdict"] == "met"


def test_gpu_check_without_gpu_says_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "no CUDA GPU visible" in proc.stderr
    assert not out.exists()  # an earlier GPU result is never overwritten by this


@pytest.mark.parametrize("args, message", [
    (["--budget", "nan"], "--budget must be a finite"),
    (["--budget", "0"], "--budget must be a finite"),
    (["--out", "/nonexistent-dir/x.json"], "does not exist or is not writable"),
    (["--out", "/tmp"], "--out must name a JSON file"),
])
def test_gpu_check_bad_arguments(args, message):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
