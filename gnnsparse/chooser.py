"""A measured backend chooser: which executor runs a sparse-weight linear layer fastest.

A layer ``y = x · Wᵀ + b`` with ``W`` ``(out_features, in_features)`` stored sparse can be executed
by several *executors*:

* ``"dense"``: ``torch.nn.functional.linear(x, W_dense, b)`` with ``W_dense`` materialized from the
  sparse storage at every call (differentiable w.r.t. the stored values); dense FLOPs.
* ``"csr"``: :func:`gnnsparse.ops.csr_linear` (layout ``"csr"``).
* ``"bsr"``: ``gnnsparse.ops.bsr_linear(x, crow, col, values[nnzb, b, b], bias, out_features)``
  (layout ``"bsr"``, block indices in ``crow``/``col``), used only when that op exists.

Candidates per layout: ``"csr"`` → ``("dense", "csr")``, ``"bsr"`` → ``("dense", "bsr")``.

:func:`choose` picks, per (layer shape, density bucket, layout, blocksize, dtype, thread count), the
executor with the smallest measured forward+backward time. Every candidate is first checked against
the dense reference (:mod:`gnnsparse.reference`, forward output and the gradients of ``x``, the stored
values and the bias); one that fails is excluded and never chosen. A sparse executor is chosen only if
its median time is ``<=`` the dense one, so a layer is never slower than dense by the chooser's
choice (up to measurement noise).

Results are cached in memory for the process and on disk as JSON at ``$GNNSPARSE_CHOOSER_CACHE`` or
``~/.cache/gnnsparse/chooser.json``. The cache key contains the torch version, the gnnsparse version,
a fingerprint of the compiled extension, the CPU model, ``GNNSPARSE_CPU_ISA``, the thread count,
dtype, layout, blocksize, shape, density bucket and benchmark row count, so a rebuilt kernel, another
machine or another thread count is measured afresh.

Overrides (first match wins): :func:`set_override` / :func:`override` in this process, then the
environment variable ``GNNSPARSE_EXECUTOR`` (read at every call), each one of ``"auto"`` (measure;
the default), ``"dense"`` or ``"sparse"`` (the layout's kernel).

Measurements run on the CPU, with ``torch.set_num_threads(threads)`` for their duration, with a
private random generator (the global RNG state is not touched), and take about 0.3 s per key for
layers up to a few hundred features (``n_rows`` is reduced to fit; very large layers take longer).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import statistics
import tempfile
import threading
import time
import warnings
from typing import Callable, Iterator, Mapping, NamedTuple

import torch

from . import _ext, ops, reference
from .formats import keys_to_csr, nnz_for_density, random_keys

__all__ = [
    "Choice",
    "choose",
    "candidates",
    "density_bucket",
    "set_override",
    "get_override",
    "override",
    "clear_cache",
    "cache_path",
    "VALID_OVERRIDES",
    "LAYOUTS",
]

#: Valid values of :func:`set_override` / :func:`override` / ``GNNSPARSE_EXECUTOR``.
VALID_OVERRIDES = ("auto", "dense", "sparse")
#: Supported weight layouts and their sparse executor.
LAYOUTS = {"csr": "csr", "bsr": "bsr"}

_CACHE_FORMAT = 1
_DEFAULT_ROWS = 4096
_MIN_ROWS = 256          # the benchmark never shrinks below this many rows
_CHECK_ROWS = 256        # rows used for the correctness check
_CAL_ROWS = 1024         # rows of the calibration call that sizes the benchmark
_BUDGET_S = 0.3          # target wall-clock of one measurement (seconds)
_MIN_REPEATS = 5
_MAX_REPEATS = 15
_BUCKETS_PER_DECADE = 10
_MIN_DENSITY = 1e-3
_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-9}


@dataclasses.dataclass(frozen=True)
class Choice:
    """The executor picked for one layer configuration.

    Attributes:
        executor: ``"dense"``, ``"csr"`` or ``"bsr"``.
        layout: ``"csr"`` or ``"bsr"`` (the storage of the weight).
        reason: ``"measured"`` (measured now), ``"cached"`` (from the in-memory or disk cache),
            ``"override"`` (:func:`set_override` / :func:`override`), ``"forced-by-env"``
            (``GNNSPARSE_EXECUTOR``), ``"no-extension"`` (``gnnsparse._C`` not available: dense),
            ``"unavailable"`` (a forced sparse executor does not exist: dense),
            ``"all-failed"`` (every candidate failed its check: dense) or ``"restored"`` (a decision
            put back from a training checkpoint by :mod:`gnnsparse.train`, not measured again).
        timings: executor → median seconds per forward+backward call at ``n_rows`` rows, for the
            candidates that passed the correctness check (empty without a measurement).
        key: the cache key string ("" when nothing was measured or looked up).
        failed: executor → why it was excluded (wrong output/gradient, or the exception raised).
        n_rows: benchmark row count actually timed (None without a measurement).
    """

    executor: str
    layout: str
    reason: str
    timings: Mapping[str, float] = dataclasses.field(default_factory=dict, hash=False)
    key: str = ""
    failed: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False)
    n_rows: int | None = None


# ---------------------------------------------------------------------------------------------
# Executors: adapters with one signature fn(x, structure, values, bias) -> y.
class _Structure(NamedTuple):
    layout: str
    crow: torch.Tensor
    col: torch.Tensor
    blocksize: int | None
    out_features: int
    in_features: int


def _dense_weight(s: _Structure, values: torch.Tensor) -> torch.Tensor:
    """Dense ``[out, in]`` weight of the structure (differentiable w.r.t. ``values``)."""
    if s.layout == "csr":
        return reference.dense_weight(s.crow, s.col, values, s.out_features, s.in_features)
    b = s.blocksize
    nbr, nbc = s.out_features // b, s.in_features // b
    brow = torch.repeat_interleave(torch.arange(nbr), s.crow[1:] - s.crow[:-1], output_size=s.col.numel())
    blocks = values.new_zeros((nbr, nbc, b, b)).index_put((brow, s.col), values, accumulate=True)
    return blocks.permute(0, 2, 1, 3).reshape(s.out_features, s.in_features)


def _run_dense(x, s: _Structure, values, bias):
    return torch.nn.functional.linear(x, _dense_weight(s, values), bias)


def _run_csr(x, s: _Structure, values, bias):
    return ops.csr_linear(x, s.crow, s.col, values, bias, s.out_features)


def _run_bsr(x, s: _Structure, values, bias):
    # same argument order as csr_linear; the blocksize is values.shape[-1] (as benchmarks/sweep.py calls it)
    return ops.bsr_linear(x, s.crow, s.col, values, bias, s.out_features)  # type: ignore[attr-defined]


def _reference(x, s: _Structure, values, bias):
    if s.layout == "csr":
        return reference.csr_linear(x, s.crow, s.col, values, bias, s.out_features)
    y = x @ _dense_weight(s, values).t()
    return y if bias is None else y + bias


#: executor name → adapter. Tests replace entries (monkeypatch.setitem) to inject fakes.
_EXECUTORS: dict[str, Callable] = {"dense": _run_dense, "csr": _run_csr, "bsr": _run_bsr}


def _bsr_available() -> bool:
    return hasattr(ops, "bsr_linear")


def candidates(layout: str = "csr") -> tuple[str, ...]:
    """Executors considered for ``layout``: ``("dense", "csr")`` or ``("dense", "bsr")``.

    ``"bsr"`` is left out while ``gnnsparse.ops.bsr_linear`` does not exist.

    Raises:
        ValueError: unknown layout.
    """
    _check_layout(layout)
    sparse = LAYOUTS[layout]
    if sparse == "bsr" and not _bsr_available():
        return ("dense",)
    return ("dense", sparse)


# ---------------------------------------------------------------------------------------------
# Argument checks
def _check_layout(layout) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid layouts: "
                         + ", ".join(repr(k) for k in LAYOUTS))
    return layout


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def density_bucket(density: float) -> float:
    """The density a measurement is made at: ``density`` rounded to 10 buckets per decade in log
    space (steps of about 26 %: ..., 0.01, 0.0126, 0.0158, 0.02, 0.0251, ...) and clamped to
    ``[0.001, 1]``.

    Raises:
        ValueError: ``density`` is not a number in ``[0, 1]``.
    """
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be a number in [0, 1], got {density!r}")
    d = max(float(density), _MIN_DENSITY)
    e = round(math.log10(d) * _BUCKETS_PER_DECADE) / _BUCKETS_PER_DECADE
    return float(f"{min(10.0 ** e, 1.0):.3g}")


# ---------------------------------------------------------------------------------------------
# Overrides
_override: str | None = None
_override_lock = threading.Lock()


def _check_override(value, source: str) -> str:
    if value is None:
        return "auto"
    if value not in VALID_OVERRIDES:
        raise ValueError(f"invalid {source} {value!r}; valid values: "
                         + ", ".join(repr(v) for v in VALID_OVERRIDES) + " (or None for 'auto')")
    return value


def set_override(executor: str | None) -> None:
    """Force every later :func:`choose` in this process: ``"dense"``, ``"sparse"`` (the layout's
    kernel), or ``"auto"`` / ``None`` (measure; clears the override). Takes precedence over
    ``GNNSPARSE_EXECUTOR``.

    Raises:
        ValueError: any other value (the message lists the valid ones).
    """
    global _override
    value = _check_override(executor, "executor override")
    with _override_lock:
        _override = None if value == "auto" else value


def get_override() -> str | None:
    """The current :func:`set_override` value (``None`` when none is set)."""
    return _override


@contextlib.contextmanager
def override(executor: str | None) -> Iterator[None]:
    """Context manager: :func:`set_override` ``executor`` for the block, then restore the previous
    override (nests). Raises ``ValueError`` on entry for an invalid value."""
    global _override
    value = _check_override(executor, "executor override")
    previous = _override
    set_override(value)
    try:
        yield
    finally:
        with _override_lock:
            _override = previous


def _env_override() -> str:
    raw = os.environ.get("GNNSPARSE_EXECUTOR", "")
    return "auto" if raw.strip() == "" else _check_override(raw.strip(), "GNNSPARSE_EXECUTOR")


# ---------------------------------------------------------------------------------------------
# Cache key
_fingerprints: dict[str, str] = {}


def _cpu_model() -> str:
    if "cpu" not in _fingerprints:
        model = ""
        with contextlib.suppress(OSError):  # no /proc: fall back to platform below
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.lower().startswith(("model name", "hardware", "cpu model")):
                        model = line.split(":", 1)[1].strip()
                        break
        _fingerprints["cpu"] = " ".join((model or platform.processor() or platform.machine() or "unknown").split())
    return _fingerprints["cpu"]


def _ext_fingerprint() -> str:
    """Short hash of the compiled extension file, so a rebuilt kernel is measured afresh."""
    if "ext" not in _fingerprints:
        fp = "none"
        with contextlib.suppress(OSError, ImportError, ValueError):  # unknown build: "none"
            import importlib.util

            spec = importlib.util.find_spec("gnnsparse._C")
            if spec is not None and spec.origin:
                h = hashlib.sha1()
                with open(spec.origin, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                fp = h.hexdigest()[:12]
        _fingerprints["ext"] = fp
    return _fingerprints["ext"]


def _make_key(out_features, in_features, bucket, layout, blocksize, dtype, threads, n_rows) -> str:
    from . import __version__

    isa = os.environ.get("GNNSPARSE_CPU_ISA", "").strip() or "auto"
    parts = [
        f"v{_CACHE_FORMAT}",
        f"torch={torch.__version__}",
        f"gnnsparse={__version__}",
        f"ext={_ext_fingerprint()}",
        f"cpu={_cpu_model()}",
        f"isa={isa}",
        f"threads={threads}",
        f"dtype={str(dtype).replace('torch.', '')}",
        f"layout={layout}",
        f"blocksize={blocksize if blocksize is not None else '-'}",
        f"shape={out_features}x{in_features}",
        f"density={bucket:g}",
        f"rows={n_rows}",
    ]
    return "|".join(parts)


# ---------------------------------------------------------------------------------------------
# Cache (memory + disk)
_memory: dict[str, Choice] = {}
_disk: dict[str, dict[str, dict]] = {}   # cache path -> {key: entry}, loaded once per path
_warned: set[str] = set()
_cache_lock = threading.RLock()


def cache_path() -> str:
    """The disk cache file: ``$GNNSPARSE_CHOOSER_CACHE`` if set and non-empty, else
    ``~/.cache/gnnsparse/chooser.json``."""
    env = os.environ.get("GNNSPARSE_CHOOSER_CACHE", "").strip()
    return os.path.abspath(os.path.expanduser(env or os.path.join("~", ".cache", "gnnsparse", "chooser.json")))


def _warn_once(tag: str, message: str) -> None:
    if tag not in _warned:
        _warned.add(tag)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _read_file(path: str) -> dict[str, dict]:
    """Entries of the cache file; {} when missing. Unreadable/corrupt → warn once, {}."""
    if os.path.lexists(path) and not os.path.isfile(path):  # a FIFO would block, a device lies
        _warn_once(f"read:{path}", f"gnnsparse chooser: the cache {path} is not a regular file; "
                                   "ignoring it and keeping measurements in memory only")
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except (OSError, ValueError, UnicodeDecodeError) as e:
        _warn_once(f"read:{path}", f"gnnsparse chooser: cannot read the cache {path} ({e}); "
                                   "ignoring it and measuring again")
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        _warn_once(f"read:{path}", f"gnnsparse chooser: the cache {path} is corrupt (no 'entries' "
                                   "mapping); ignoring it and measuring again")
        return {}
    return {k: v for k, v in entries.items() if isinstance(k, str) and isinstance(v, dict)}


def _write_file(path: str, entries: dict[str, dict]) -> None:
    """Merge ``entries`` into the file (atomic replace). Failure → warn once, memory only."""
    tmp = None
    try:
        directory = os.path.dirname(path)
        if os.path.lexists(path) and not os.path.isfile(path):
            # never replace a device, FIFO, directory or dangling link (e.g. /dev/null)
            raise OSError(f"{path} exists and is not a regular file")
        os.makedirs(directory, exist_ok=True)
        merged = {**_read_file(path), **entries} if os.path.exists(path) else dict(entries)
        fd, tmp = tempfile.mkstemp(prefix=".chooser-", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"format": _CACHE_FORMAT, "entries": merged}, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        _warn_once(f"write:{path}", f"gnnsparse chooser: cannot write the cache {path} ({e}); "
                                    "keeping measurements in memory only")
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _entry_to_choice(key: str, entry: dict, valid: tuple[str, ...]) -> Choice | None:
    try:
        executor, layout = entry["executor"], entry["layout"]
        timings = {str(k): float(v) for k, v in entry.get("timings", {}).items()}
        failed = {str(k): str(v) for k, v in entry.get("failed", {}).items()}
        n_rows = entry.get("n_rows")
        n_rows = None if n_rows is None else int(n_rows)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        return None
    if not isinstance(executor, str) or not isinstance(layout, str) or executor not in valid \
            or layout not in LAYOUTS:
        return None
    return Choice(executor, layout, "cached", timings, key, failed, n_rows)


def clear_cache(memory_only: bool = False) -> None:
    """Forget cached choices: the in-memory cache always (and the once-per-file warnings), the disk
    cache file at :func:`cache_path` too unless ``memory_only`` (a missing file is fine; one that
    cannot be removed gives a warning)."""
    with _cache_lock:
        _memory.clear()
        _disk.clear()
        _warned.clear()
        if not memory_only:
            path = cache_path()
            try:
                if os.path.lexists(path):
                    os.unlink(path)
            except OSError as e:
                warnings.warn(f"gnnsparse chooser: cannot remove the cache {path} ({e})", RuntimeWarning,
                              stacklevel=2)


# ---------------------------------------------------------------------------------------------
# Measurement
def _time_call(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes (``time.perf_counter``)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _random_problem(out_features, in_features, density, layout, blocksize, dtype, n_rows, gen):
    if layout == "csr":
        k = nnz_for_density(out_features * in_features, density)
        crow, col = keys_to_csr(random_keys(out_features * in_features, k, gen), out_features, in_features)
        values = torch.randn(k, generator=gen, dtype=dtype)
    else:
        b = blocksize
        nbr, nbc = out_features // b, in_features // b
        k = nnz_for_density(nbr * nbc, density)
        crow, col = keys_to_csr(random_keys(nbr * nbc, k, gen), nbr, nbc)
        values = torch.randn((k, b, b), generator=gen, dtype=dtype)
    s = _Structure(layout, crow, col, blocksize, out_features, in_features)
    values = (values / math.sqrt(max(1.0, density * in_features))).requires_grad_()
    bias = torch.randn(out_features, generator=gen, dtype=dtype).requires_grad_()
    x = torch.randn(n_rows, in_features, generator=gen, dtype=dtype).requires_grad_()
    grad_out = torch.randn(n_rows, out_features, generator=gen, dtype=dtype)
    return s, values, bias, x, grad_out


def _forward_backward(fn, x, s, values, bias, grad_out):
    y = fn(x, s, values, bias)
    grads = torch.autograd.grad(y, (x, values, bias), grad_out, allow_unused=True)
    return y, grads


def _close(name: str, got, ref, tol: float) -> str | None:
    if got is None:
        return f"{name} is missing (not differentiable)"
    if got.shape != ref.shape:
        return f"{name} has shape {tuple(got.shape)}, expected {tuple(ref.shape)}"
    got = got.detach().to(torch.float64)
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    if not torch.isfinite(got).all():
        return f"{name} has non-finite entries"
    err = (got - ref).abs()
    bad = err > tol * ref.abs() + tol * max(scale, 1e-30)
    if bool(bad.any()):
        return f"{name} differs from the dense reference (max abs error {float(err.max()):.3g}, scale {scale:.3g})"
    return None


def _check_candidate(fn, x, s, values, bias, grad_out) -> str | None:
    """None if ``fn`` matches the float64 reference in output and all gradients, else why not."""
    tol = _TOLERANCE[x.dtype]
    try:
        y, (gx, gv, gb) = _forward_backward(fn, x, s, values, bias, grad_out)
    except Exception as e:  # noqa: BLE001 - any failure excludes the candidate
        return f"raised {type(e).__name__}: {e}"
    x64 = x.detach().double().requires_grad_()
    v64 = values.detach().double().requires_grad_()
    b64 = bias.detach().double().requires_grad_()
    ry, (rgx, rgv, rgb) = _forward_backward(_reference, x64, s, v64, b64, grad_out.double())
    for name, got, ref in (("output", y, ry), ("grad of x", gx, rgx), ("grad of values", gv, rgv),
                           ("grad of bias", gb, rgb)):
        problem = _close(name, got, ref.detach(), tol)
        if problem:
            return problem
    return None


def _measure(out_features, in_features, density, layout, blocksize, dtype, threads, n_rows,
             names: tuple[str, ...]) -> tuple[dict[str, float], dict[str, str], int]:
    """Check and time ``names``; returns (median seconds per executor, failures, rows timed)."""
    previous_threads = torch.get_num_threads()
    failed: dict[str, str] = {}
    try:
        if threads != previous_threads:
            torch.set_num_threads(threads)
        # works when called under torch.no_grad() / torch.inference_mode() too
        with torch.inference_mode(False), torch.enable_grad():
            gen = torch.Generator().manual_seed(0)
            s, values, bias, x_full, go_full = _random_problem(out_features, in_features, density, layout,
                                                               blocksize, dtype, n_rows, gen)
            # 1. correctness on a slice of the rows
            nc = min(n_rows, _CHECK_ROWS)
            xc = x_full.detach()[:nc].requires_grad_()
            for name in names:
                problem = _check_candidate(_EXECUTORS[name], xc, s, values, bias, go_full[:nc])
                if problem:
                    failed[name] = problem
                    warnings.warn(f"gnnsparse chooser: executor {name!r} excluded for "
                                  f"{out_features}x{in_features} {layout} density {density:g}: {problem}",
                                  RuntimeWarning, stacklevel=3)
            good = [n for n in names if n not in failed]
            if not good:
                return {}, failed, n_rows

            def step(name, x, go):
                fn = _EXECUTORS[name]
                return lambda: _forward_backward(fn, x, s, values, bias, go)

            # 2. calibration (the check above was the first call, i.e. the cold start): one call
            # each at up to _CAL_ROWS rows sizes the benchmark so that calibration, warm-up and
            # the timed rounds fit _BUDGET_S (the check is not counted)
            t0 = time.perf_counter()
            ncal = min(n_rows, _CAL_ROWS)
            xcal = x_full.detach()[:ncal].requires_grad_()
            t_cal = sum(_time_call(step(nm, xcal, go_full[:ncal])) for nm in good)
            per_round = _BUDGET_S / (_MIN_REPEATS + 2)   # calibration + warm-up + rounds
            n = n_rows
            if t_cal > per_round or n_rows > ncal:
                n = int(ncal * per_round / max(t_cal, 1e-9))
                if n < n_rows:
                    n = max(n - n % 64, min(_MIN_ROWS, n_rows))
                n = min(n, n_rows)
            x = x_full.detach()[:n].requires_grad_()
            go = go_full[:n]
            fns = {nm: step(nm, x, go) for nm in good}
            # 3. warm-up at the final size (the calibration was it if the size is the same), then
            # interleaved timed rounds, the order rotated every round
            t_round = t_cal if n == ncal else sum(_time_call(fns[nm]) for nm in good)
            left = _BUDGET_S - (time.perf_counter() - t0)
            repeats = max(_MIN_REPEATS, min(_MAX_REPEATS, int(left / max(t_round, 1e-9))))
            times: dict[str, list[float]] = {nm: [] for nm in good}
            for r in range(repeats):
                shift = r % len(good)
                for nm in good[shift:] + good[:shift]:
                    times[nm].append(_time_call(fns[nm]))
    finally:
        if torch.get_num_threads() != previous_threads:
            torch.set_num_threads(previous_threads)
    return {nm: statistics.median(ts) for nm, ts in times.items()}, failed, n


def _pick(timings: Mapping[str, float]) -> str | None:
    """Fastest executor; a sparse one only if its median is <= the dense median."""
    if not timings:
        return None
    if "dense" not in timings:
        return min(timings, key=lambda k: timings[k])
    sparse = {k: t for k, t in timings.items() if k != "dense"}
    if sparse:
        best = min(sparse, key=lambda k: sparse[k])
        if sparse[best] <= timings["dense"]:
            return best
    return "dense"


# ---------------------------------------------------------------------------------------------
# Public entry point
def choose(out_features: int, in_features: int, density: float, *, layout: str = "csr",
           blocksize: int | None = None, dtype: torch.dtype = torch.float32, threads: int | None = None,
           n_rows: int | None = None) -> Choice:
    """Pick the executor for a layer ``y = x·Wᵀ + b``, ``W`` ``(out_features, in_features)``.

    Args:
        out_features, in_features: positive ints, the shape of ``W``.
        density: fraction of stored weights in ``[0, 1]`` (for BSR: of stored blocks); measured at
            :func:`density_bucket` ``(density)``.
        layout: ``"csr"`` (candidates ``dense``/``csr``) or ``"bsr"`` (``dense``/``bsr``).
        blocksize: BSR block edge; required for ``"bsr"`` and must divide both dimensions; must be
            ``None`` for ``"csr"``.
        dtype: ``torch.float32`` or ``torch.float64``.
        threads: thread count the layer runs with (default ``torch.get_num_threads()``); the
            measurement runs with it.
        n_rows: rows of the benchmark input ``x`` (default 4096); reduced during the measurement
            (not below 256) so that it takes about 0.3 s. Part of the cache key.

    Returns:
        A :class:`Choice`. ``reason`` tells where it came from; ``"cached"`` choices were measured
        earlier (this process or the disk cache), and no measurement runs for them.

    Raises:
        ValueError: invalid shape, density, layout, blocksize, dtype, threads, n_rows, or an invalid
            override / ``GNNSPARSE_EXECUTOR`` value (the message lists the valid ones).

    Warns:
        RuntimeWarning: a candidate failed its correctness check (it is excluded); the cache file
            is unreadable/corrupt (ignored, measured again) or unwritable (memory only) — once
            per file.
    """
    _check_positive_int("out_features", out_features)
    _check_positive_int("in_features", in_features)
    bucket = density_bucket(density)
    _check_layout(layout)
    if layout == "csr":
        if blocksize is not None:
            raise ValueError(f"blocksize must be None for layout 'csr', got {blocksize!r}")
    else:
        _check_positive_int("blocksize", blocksize)
        if out_features % blocksize or in_features % blocksize:
            raise ValueError(f"layout 'bsr' needs out_features and in_features divisible by blocksize "
                             f"{blocksize}, got {out_features}x{in_features}")
    if dtype not in _TOLERANCE:
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    threads = torch.get_num_threads() if threads is None else _check_positive_int("threads", threads)
    n_rows = _DEFAULT_ROWS if n_rows is None else _check_positive_int("n_rows", n_rows)

    sparse = LAYOUTS[layout]
    forced, reason = _override, "override"
    if forced is None:
        forced, reason = _env_override(), "forced-by-env"
    if forced == "dense":
        return Choice("dense", layout, reason)
    if forced == "sparse":
        if sparse not in candidates(layout):
            warnings.warn(f"gnnsparse chooser: executor {sparse!r} forced but not available "
                          f"(gnnsparse.ops.{sparse}_linear missing); using 'dense'", RuntimeWarning,
                          stacklevel=2)
            return Choice("dense", layout, "unavailable")
        return Choice(sparse, layout, reason)
    if not _ext.available():
        return Choice("dense", layout, "no-extension")

    names = candidates(layout)
    key = _make_key(out_features, in_features, bucket, layout, blocksize, dtype, threads, n_rows)
    with _cache_lock:
        hit = _memory.get(key)
        if hit is not None and hit.executor in names:
            return dataclasses.replace(hit, reason="cached")
        path = cache_path()
        if path not in _disk:
            _disk[path] = _read_file(path)
        entry = _disk[path].get(key)
        if entry is not None:
            hit = _entry_to_choice(key, entry, names)
            if hit is not None:
                _memory[key] = hit
                return hit

    timings, failed, rows = _measure(out_features, in_features, bucket, layout, blocksize, dtype,
                                     threads, n_rows, names)
    executor = _pick(timings)
    result = Choice(executor or "dense", layout, "measured" if executor else "all-failed",
                    timings, key, failed, rows)
    entry = {"executor": result.executor, "layout": layout, "timings": timings, "failed": failed,
             "n_rows": rows, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with _cache_lock:
        _memory[key] = result
        if executor is not None:
            _disk.setdefault(path, {})[key] = entry
            _write_file(path, {key: entry})
    return result
