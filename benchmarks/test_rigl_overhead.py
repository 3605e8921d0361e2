"""RigL mask-update overhead amortized over ΔT = 100 steps (target: ≤ 5 % of sparse training time).

Run with ``pytest --benchmark`` or ``pytest benchmarks/ --benchmark-only``; see rigl_overhead.py for
what is measured. Both step kinds are timed interleaved in one process.
"""

from __future__ import annotations

import pytest

import rigl_overhead  # benchmarks/rigl_overhead.py


@pytest.mark.parametrize("layout,blocksize", [("csr", None), ("bsr", 16)])
def test_rigl_update_overhead(benchmark, layout, blocksize):
    result = benchmark.pedantic(rigl_overhead.measure, kwargs=dict(layout=layout, blocksize=blocksize,
                                                                   repeats=5), rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    print(f"\n{layout}: step {result['step_s'] * 1e3:.1f} ms, update extra {result['update_extra_s'] * 1e3:.1f} ms, "
          f"overhead at ΔT=100: {100 * result['overhead']:.2f} %")
    assert result["overhead"] <= 0.05
