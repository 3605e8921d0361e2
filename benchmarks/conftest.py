"""Benchmarks run only on request: ``pytest --benchmark`` (the flag is defined in the
repository's ``conftest.py``, which also points a bare ``pytest --benchmark`` here) or
``pytest benchmarks/ --benchmark-only``.

Plain ``pytest`` (testpaths = tests) never collects this directory; ``pytest benchmarks``
without ``--benchmark`` collects and skips every item here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_RESULTS_KEY = pytest.StashKey[list]()


def pytest_configure(config):
    config.stash[_RESULTS_KEY] = []


def pytest_collection_modifyitems(config, items):
    # `pytest --benchmark` (ours) or pytest-benchmark's `pytest benchmarks/ --benchmark-only`
    if config.getoption("--benchmark") or config.getoption("benchmark_only", default=False):
        return
    skip = pytest.mark.skip(reason="benchmarks run only with `pytest --benchmark`")
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(item.path).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def speed_results(request):
    """List of dicts the benchmarks append to; printed as a table at the end of the session."""
    return request.config.stash[_RESULTS_KEY]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rows = config.stash.get(_RESULTS_KEY, [])
    if not rows:
        return
    tr = terminalreporter
    tr.section("gnnsparse CSR layer vs dense F.linear and torch.sparse CSR (median s, interleaved)")
    header = (f"{'mode':<8} {'sparsity':>8} {'dense':>9} {'torch.sparse':>12} {'gnnsparse':>10} "
              f"{'speed-up':>9} {'vs t.sparse':>12} {'limit':>9} {'dense/limit':>11}")
    tr.write_line(header)
    tr.write_line("-" * len(header))
    for r in sorted(rows, key=lambda r: (r["mode"], r["sparsity"])):
        tr.write_line(f"{r['mode']:<8} {r['sparsity']:>8.2f} {r['dense_s']:>9.4f} "
                      f"{r['torch_sparse_s']:>12.4f} {r['gnnsparse_s']:>10.4f} "
                      f"{1 / r['ratio_vs_dense']:>8.2f}x {1 / r['ratio_vs_torch_sparse']:>11.2f}x "
                      + (f"{r['limit_s']:>9.4f} {r['limit_ratio']:>11.2f}" if "limit_s" in r
                         else f"{'-':>9} {'-':>11}"))
    tr.write_line(f"shape: X {rows[0]['shape_x']}, W {rows[0]['shape_w']}, float32, "
                  f"{rows[0]['threads']} threads; speed-up = dense time / gnnsparse time and "
                  f"vs t.sparse = torch.sparse time / gnnsparse time (> 1: gnnsparse is faster; "
                  f"pytest-benchmark's own table above times the gnnsparse call only)")
    if "copy_GBps" in rows[0]:
        tr.write_line(f"limit: bytes that must move (X, Y, CSR weight; fwdbwd also dY, dX) / copy "
                      f"bandwidth {rows[0]['copy_GBps']:.1f} GB/s (same process); dense/limit = the "
                      f"largest speed-up over dense any kernel could reach")
