"""Repository-level pytest configuration.

``pytest`` runs the tests in ``tests/``; ``pytest --benchmark`` runs the speed suite in
``benchmarks/`` instead (pytest-benchmark has only ``--benchmark-*`` options, so the bare
``--benchmark`` flag is ours). Without the flag, benchmark items are skipped even when their
folder is named explicitly.
"""

import os
from pathlib import Path

import pytest

# OpenMP threads that spin-wait collapse on a loaded machine (2-thread calls 5-10x slower);
# passive waiting must be set before torch is imported. The gnnsparse command does the same.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Sparse layers run their sparse kernels in tests (deterministic, FLOPs as written); the measured
# dense-vs-sparse choice (GNNSPARSE_EXECUTOR=auto, the library default) has its own tests.
os.environ.setdefault("GNNSPARSE_EXECUTOR", "sparse")
# the ingest cache of the test session lives in a temporary folder, not in ~/.cache
if "GNNSPARSE_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["GNNSPARSE_CACHE_DIR"] = tempfile.mkdtemp(prefix="gnnsparse-test-ingest-")
    atexit.register(shutil.rmtree, os.environ["GNNSPARSE_CACHE_DIR"], True)


def _has_cuda_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


# Triton kernels run in Triton's CPU interpreter where there is no GPU (CI); it must be chosen
# before triton is imported. On a GPU machine they are compiled.
if not _has_cuda_gpu():
    os.environ.setdefault("TRITON_INTERPRET", "1")

_ROOT = Path(__file__).resolve().parent


def pytest_addoption(parser):
    parser.addoption("--benchmark", action="store_true", default=False,
                     help="run the gnnsparse speed benchmarks in benchmarks/ (skipped otherwise)")


def pytest_configure(config):
    if config.getoption("--benchmark") and config.args_source == pytest.Config.ArgsSource.TESTPATHS:
        config.args = [str(_ROOT / "benchmarks")]
