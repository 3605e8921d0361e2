"""The C++ kernels under AddressSanitizer + UndefinedBehaviorSanitizer (tools/sanitize.py).

``test_kernels_and_fuzzers_under_sanitizers`` builds the sanitized CPU extension (cached in
build/sanitize/, rebuilt when csrc/ or the flags change; about 1 minute on 2 cores) and runs the
randomized kernel tests (tests/test_ops.py, tests/test_bsr_ops.py), the ingest parser tests
(tests/test_ingest.py) and the fuzz targets of tests/test_fuzz.py with 10,000 inputs each in a
subprocess that loads it (``LD_PRELOAD`` of the ASan/UBSan runtimes, ``GNNSPARSE_EXTENSION``).
It requires zero sanitizer reports, a passing pytest and >= 10,000 executed inputs per fuzz target.

``test_harness_reports_*`` prove that this harness can fail: a use-after-free, a heap overflow and a
signed integer overflow compiled with the same flags and run under the same environment are reported.

Without a compiler or the sanitizer runtimes the tests skip with the reason, except in CI
(``CI`` set to true/1), where that is a failure. ``GNNSPARSE_SANITIZE=0`` skips them on purpose.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FUZZ_EXAMPLES = 10_000

_spec = importlib.util.spec_from_file_location("gnnsparse_sanitize_tool", ROOT / "tools" / "sanitize.py")
sanitize = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sanitize)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def toolchain():
    """Skip (locally) or fail (CI) when the sanitized build is impossible here."""
    if os.environ.get("GNNSPARSE_SANITIZE", "").strip() == "0":
        pytest.skip("GNNSPARSE_SANITIZE=0")
    problem = sanitize.toolchain_problem()
    if problem:
        if _in_ci():
            pytest.fail(f"CI must run the sanitizer tests, but: {problem}")
        pytest.skip(problem)
    return sanitize.compiler()


def _run_snippet(tmp_path: Path, cxx: str, code: str, call: str) -> tuple[int, str]:
    """Compile ``code`` with the sanitizer flags into a shared library and call ``call`` on it
    (ctypes) in a Python subprocess with the sanitized tests' environment."""
    src = tmp_path / "snippet.cpp"
    lib = tmp_path / "libsnippet.so"
    src.write_text(code)
    subprocess.run([cxx, "-shared", "-fPIC", *sanitize.SANITIZE_FLAGS, str(src), "-o", str(lib)], check=True)
    script = f"import ctypes, sys; lib = ctypes.CDLL({str(lib)!r}); print('value', {call}); sys.stdout.flush()"
    res = subprocess.run([sys.executable, "-c", script], env=sanitize.sanitizer_env(None),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    return res.returncode, res.stdout


def test_harness_reports_heap_misuse(tmp_path, toolchain):
    code = ('extern "C" int read_back(int freed) { int* p = new int[4]; for (int k = 0; k < 4; ++k) p[k] = k;'
            ' if (freed) delete[] p; int v = p[3]; if (!freed) delete[] p; return v; }\n'
            'extern "C" int read_past(int i) { int* p = new int[4]; for (int k = 0; k < 4; ++k) p[k] = k;'
            ' int v = p[i]; delete[] p; return v; }\n')
    rc, out = _run_snippet(tmp_path, toolchain, code, "lib.read_back(0) + lib.read_past(3)")
    assert rc == 0 and "value 6" in out and not sanitize.find_reports(out), out  # correct code: silent
    rc, out = _run_snippet(tmp_path, toolchain, code, "lib.read_back(1)")
    assert rc != 0 and "ERROR: AddressSanitizer: heap-use-after-free" in out and sanitize.find_reports(out), out
    rc, out = _run_snippet(tmp_path, toolchain, code, "lib.read_past(4)")  # UBSan's object-size check or ASan
    assert rc != 0 and sanitize.find_reports(out), out


def test_harness_reports_signed_overflow(tmp_path, toolchain):
    code = 'extern "C" long long add(long long a, long long b) { return a + b; }\n'
    rc, out = _run_snippet(tmp_path, toolchain, code, "lib.add(ctypes.c_longlong(2**63 - 1), ctypes.c_longlong(1))")
    assert rc != 0 and "runtime error: signed integer overflow" in out and sanitize.find_reports(out), out


def test_kernels_and_fuzzers_under_sanitizers(tmp_path, toolchain):
    t0 = time.monotonic()
    lib = sanitize.build()
    t_build = time.monotonic() - t0
    counts = tmp_path / "counts"
    counts.mkdir()
    t1 = time.monotonic()
    rc, out = sanitize.run_tests(lib, fuzz_examples=FUZZ_EXAMPLES, count_dir=counts, timeout=25 * 60)  # CI as a whole must stay under 45 minutes
    t_run = time.monotonic() - t1
    reports = sanitize.find_reports(out)
    tail = "\n".join(out.splitlines()[-60:])
    assert not reports, f"{len(reports)} sanitizer report lines, first: {reports[:5]}\n{tail}"
    assert rc == 0, f"sanitized pytest failed (exit {rc}):\n{tail}"
    ran = {f.stem: json.loads(f.read_text()) for f in counts.glob("*.json")}
    assert set(ran) == {"ops_direct", "edge_list_loader"}, ran
    for target, info in ran.items():
        assert info["examples"] >= FUZZ_EXAMPLES, (target, info)
        assert Path(info["extension"]) == lib, (target, info)  # the sanitized build was the one loaded
    print(f"sanitizers: build {t_build:.0f} s, run {t_run:.0f} s, fuzz inputs "
          + ", ".join(f"{k} {v['examples']}" for k, v in sorted(ran.items())))


def test_extension_override_env_var(tmp_path):
    """GNNSPARSE_EXTENSION loads the named file as gnnsparse._C (how the sanitized build is used),
    and a missing file is an ImportError naming it (never a silent fallback to the package's build)."""
    from kernel_support import require_extension

    require_extension()
    from gnnsparse import _ext

    own = _ext.library_paths()["_C"]
    probe = ("from gnnsparse import _ext\n"
             "try:\n    _ext.load()\nexcept ImportError as e:\n    print('ImportError', e)\n"
             "else:\n    import torch; print('loaded', _ext.library_paths()['_C'], hasattr(torch.ops.gnnsparse, 'csr_linear'))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    missing = tmp_path / "nope.so"
    out = subprocess.run([sys.executable, "-c", probe], env=dict(env, GNNSPARSE_EXTENSION=str(missing)),
                         capture_output=True, text=True, cwd=tmp_path, timeout=300).stdout
    assert out.startswith("ImportError") and f"GNNSPARSE_EXTENSION={missing} is not a file" in out, out
    out = subprocess.run([sys.executable, "-c", probe], env=dict(env, GNNSPARSE_EXTENSION=own),
                         capture_output=True, text=True, cwd=tmp_path, timeout=300).stdout
    assert out.strip() == f"loaded {own} True", out
