"""AddressSanitizer + UndefinedBehaviorSanitizer build and run of gnnsparse's CPU extension.

Builds csrc/ops.cpp, csrc/cpu/*.cpp and csrc/io/*.cpp (no CUDA) with

    -fsanitize=address,undefined -fno-sanitize=vptr -fno-sanitize-recover=undefined
    -fno-omit-frame-pointer -g -O1

into ``build/sanitize/_C_sanitize-<key>.so`` (never into the package folder; the normal
``gnnsparse/_C*.so`` is left alone). ``<key>`` is a hash of the sources, the flags, the compiler
and torch, so the library is rebuilt exactly when one of them changes.

Torch and Python are not instrumented, so the ASan runtime is preloaded (``LD_PRELOAD``: libasan
first, then libubsan and libstdc++, whose ``__cxa_throw`` ASan intercepts), leak detection is off
(``detect_leaks=0``: Python and torch keep memory until exit) and ``-fno-sanitize=vptr`` avoids
UBSan's type checks against torch's uninstrumented RTTI. The test process loads the sanitized
library instead of ``gnnsparse._C`` through ``GNNSPARSE_EXTENSION`` (see gnnsparse/_ext.py).

OpenMP: the kernels' ``#pragma omp`` regions run on libgomp threads; ASan intercepts their
``pthread_create``, so the per-thread scratch buffers are checked like any other heap memory.

Command line (from the repository root)::

    python tools/sanitize.py                 # build, then run the default sanitized tests
    python tools/sanitize.py --build-only    # print the library path
    python tools/sanitize.py -- tests/test_ops.py -k csr_linear   # other pytest arguments

Exit status: pytest's, or 1 when the output holds a sanitizer report although pytest passed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = ROOT / "build" / "sanitize"

SANITIZE_FLAGS = [
    "-fsanitize=address,undefined",
    "-fno-sanitize=vptr",
    "-fno-sanitize-recover=undefined",
    "-fno-omit-frame-pointer",
    "-g",
    "-O1",
]
CXX_FLAGS = ["-std=c++20", "-fPIC", "-fopenmp", "-Wall", "-Wno-unknown-pragmas",
             "-DGNNSPARSE_PYTHON_MODULE", "-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C"]

#: ASan: leaks are not checked (uninstrumented Python/torch), stop at the first error with exit
#: status 1 (no core dump), let allocation requests over 4 GiB return NULL so torch raises its own
#: out-of-memory error (a fuzzed "huge out_features" must become an exception, not an abort, and
#: never a multi-GB allocation on a shared CI machine).
ASAN_OPTIONS = ("detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=1:verify_asan_link_order=0:"
                "allocator_may_return_null=1:max_allocation_size_mb=4096:protect_shadow_gap=0:"
                "detect_odr_violation=0")
UBSAN_OPTIONS = "halt_on_error=1:print_stacktrace=1:exitcode=1"

#: The randomized kernel tests and the fuzz tests run under the sanitizers by default.
DEFAULT_TESTS = ["tests/test_ops.py", "tests/test_bsr_ops.py", "tests/test_ingest.py", "tests/test_fuzz.py"]

#: Lines that only a sanitizer prints.
REPORT_PATTERNS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "SUMMARY: AddressSanitizer", "SUMMARY: UndefinedBehaviorSanitizer",
                   "AddressSanitizer:DEADLYSIGNAL", "ERROR: UndefinedBehaviorSanitizer")


def compiler() -> str:
    """The C++ compiler (``$CXX``, else ``c++``/``g++`` on PATH); '' when there is none."""
    for name in (os.environ.get("CXX", ""), "c++", "g++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return ""


def runtime_library(name: str, cxx: str | None = None) -> str:
    """Absolute path of a compiler runtime library (``libasan.so``...), '' when not found."""
    cxx = cxx or compiler()
    if not cxx:
        return ""
    try:
        out = subprocess.run([cxx, f"-print-file-name={name}"], capture_output=True, text=True,
                             check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return os.path.realpath(out) if os.path.isabs(out) and os.path.exists(out) else ""


def toolchain_problem() -> str:
    """Why a sanitized build is impossible here ('' when it is possible)."""
    cxx = compiler()
    if not cxx:
        return "no C++ compiler (set CXX or install g++)"
    missing = [lib for lib in ("libasan.so", "libubsan.so") if not runtime_library(lib, cxx)]
    if missing:
        return f"{cxx} has no {' / '.join(missing)} (install the compiler's sanitizer runtimes)"
    return ""


def sources() -> list[Path]:
    """The CPU extension's sources, as setup.py builds them."""
    csrc = ROOT / "csrc"
    return [csrc / "ops.cpp"] + sorted((csrc / "cpu").glob("*.cpp")) + sorted((csrc / "io").glob("*.cpp"))


def _headers() -> list[Path]:
    csrc = ROOT / "csrc"
    return sorted(p for d in ("cpu", "io") for p in (csrc / d).iterdir()
                  if p.suffix in (".h", ".inc", ".hpp"))


def _torch_flags() -> tuple[list[str], list[str]]:
    import torch
    from torch.utils.cpp_extension import include_paths, library_paths

    inc = [f"-I{p}" for p in include_paths()] + [f"-I{ROOT / 'csrc'}", f"-I{sysconfig.get_paths()['include']}"]
    abi = int(bool(torch._C._GLIBCXX_USE_CXX11_ABI))
    inc.append(f"-D_GLIBCXX_USE_CXX11_ABI={abi}")
    libs = []
    for d in library_paths():
        libs += [f"-L{d}", f"-Wl,-rpath,{d}"]
    libs += ["-lc10", "-ltorch", "-ltorch_cpu", "-ltorch_python"]
    return inc, libs


def build_key(cxx: str | None = None) -> str:
    """Hash of everything the sanitized library depends on (sources, headers, flags, compiler, torch)."""
    import torch

    cxx = cxx or compiler()
    h = hashlib.sha256()
    for p in sources() + _headers():
        h.update(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes() + b"\0")
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    h.update(json.dumps([SANITIZE_FLAGS, CXX_FLAGS, version, torch.__version__, sys.version]).encode())
    return h.hexdigest()[:16]


def build(jobs: int | None = None, verbose: bool = False) -> Path:
    """Build (or reuse) the sanitized library; returns its path.

    Raises:
        RuntimeError: no usable toolchain, or a compile/link step failed (with its output).
    """
    problem = toolchain_problem()
    if problem:
        raise RuntimeError(f"cannot build the sanitized extension: {problem}")
    cxx = compiler()
    key = build_key(cxx)
    lib = BUILD_DIR / f"_C_sanitize-{key}.so"
    if lib.exists():
        return lib
    inc, libs = _torch_flags()
    obj_dir = BUILD_DIR / f"obj-{key}"
    obj_dir.mkdir(parents=True, exist_ok=True)
    jobs = jobs or int(os.environ.get("MAX_JOBS", "0") or 0) or min(os.cpu_count() or 1, 4)

    def compile_one(src: Path) -> Path:
        obj = obj_dir / (str(src.relative_to(ROOT / "csrc")).replace(os.sep, "_") + ".o")
        cmd = [cxx, *CXX_FLAGS, *SANITIZE_FLAGS, *inc, "-c", str(src), "-o", str(obj)]
        if verbose:
            print(" ".join(cmd), flush=True)
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"compiling {src} failed:\n{res.stderr[-4000:]}")
        return obj

    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        objs = list(pool.map(compile_one, sources()))
    tmp = lib.with_name(lib.name + f".tmp{os.getpid()}")
    cmd = [cxx, "-shared", *SANITIZE_FLAGS, "-fopenmp", *map(str, objs), *libs, "-o", str(tmp)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"linking the sanitized extension failed:\n{res.stderr[-4000:]}")
    os.replace(tmp, lib)
    shutil.rmtree(obj_dir, ignore_errors=True)
    for old in BUILD_DIR.glob("_C_sanitize-*.so"):  # keep only the current build
        if old != lib:
            old.unlink(missing_ok=True)
    return lib


def preload() -> str:
    """``LD_PRELOAD`` value: libasan first (it must precede every other library), then libubsan
    and libstdc++ (loaded before ASan looks up the real ``__cxa_throw``)."""
    libs = [runtime_library(n) for n in ("libasan.so", "libubsan.so", "libstdc++.so")]
    return ":".join(p for p in libs if p)


def sanitizer_env(lib: Path | None, base: dict | None = None) -> dict:
    """Environment of a sanitized process; ``lib``: the sanitized extension to load (or None)."""
    env = dict(os.environ if base is None else base)
    env["LD_PRELOAD"] = preload()
    env["ASAN_OPTIONS"] = ASAN_OPTIONS
    env["UBSAN_OPTIONS"] = UBSAN_OPTIONS
    if lib is not None:
        env["GNNSPARSE_EXTENSION"] = str(lib)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.pop("PYTEST_ADDOPTS", None)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def find_reports(output: str) -> list[str]:
    """Lines of ``output`` that are sanitizer reports."""
    return [line for line in output.splitlines() if any(p in line for p in REPORT_PATTERNS)]


def run_tests(lib: Path, pytest_args: list[str] | None = None, fuzz_examples: int = 10_000,
              count_dir: Path | None = None, timeout: float | None = None) -> tuple[int, str]:
    """Run pytest in a sanitized subprocess; returns ``(returncode, combined output)``.

    ``fuzz_examples`` becomes ``GNNSPARSE_FUZZ_EXAMPLES`` (inputs per fuzz target) and
    ``count_dir`` ``GNNSPARSE_FUZZ_COUNT_DIR`` (where tests/test_fuzz.py writes what it ran).
    """
    env = sanitizer_env(lib)
    env["GNNSPARSE_FUZZ_EXAMPLES"] = str(fuzz_examples)
    if count_dir is not None:
        env["GNNSPARSE_FUZZ_COUNT_DIR"] = str(count_dir)
    # --capture=sys: a sanitizer report is written to fd 2 just before the process exits; with
    # pytest's default fd capture it would vanish with the capture file.
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--capture=sys",
           *(pytest_args or DEFAULT_TESTS)]
    res = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, errors="replace", timeout=timeout)
    return res.returncode, res.stdout


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-only", action="store_true", help="build (or reuse) the library, print its path")
    ap.add_argument("--examples", type=int, default=10_000, help="fuzz inputs per fuzz target (default 10000)")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("pytest_args", nargs="*", help="pytest arguments (default: the kernel, ingest and fuzz tests)")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    lib = build(verbose=args.verbose)
    print(f"sanitize: library {lib} ({time.monotonic() - t0:.0f} s)", flush=True)
    if args.build_only:
        return 0
    with tempfile.TemporaryDirectory(prefix="gnnsparse-fuzz-") as counts:
        t1 = time.monotonic()
        rc, out = run_tests(lib, args.pytest_args or None, args.examples, Path(counts))
        print(out)
        for f in sorted(Path(counts).glob("*.json")):
            print(f"sanitize: fuzz {f.stem}: {json.loads(f.read_text())['examples']} inputs")
    reports = find_reports(out)
    print(f"sanitize: pytest exit {rc}, {len(reports)} sanitizer report lines, {time.monotonic() - t1:.0f} s")
    return rc if rc else (1 if reports else 0)


if __name__ == "__main__":
    sys.exit(main())
