"""Reporting for ``gnnsparse compare``: a text table, a JSON file and a PNG plot."""

from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
from typing import Callable

__all__ = ["format_table", "table_cells", "write_json", "write_text", "plot"]

_METRIC_COLUMNS = {
    "link": [("val", "auc", "val AUC"), ("test", "auc", "test AUC"), ("test", "ap", "test AP"),
             ("test", "auc_seen", "test AUC seen")],
    "node": [("val", "accuracy", "val acc"), ("test", "accuracy", "test acc"),
             ("test", "macro_f1", "test macro-F1")],
}


def _fmt(v, spec=".4f"):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def _agg(values, spec):
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return "-"
    if len(values) == 1:
        return format(vals[0], spec)
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    if max(vals) == min(vals):  # deterministic across seeds (FLOPs, measured sparsity)
        return format(mean, spec)
    return f"{format(mean, spec)}±{format(std, spec)}"


def table_cells(rows: list[dict], task: str, markdown: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the result table, one row per (regime, target sparsity).

    Columns: regime, target and measured sparsity (structural, over sparsified layers), the task's
    validation/test metrics, executed training FLOPs (GFLOPs, multiply+add = 2), FLOPs relative to
    the dense run of the same seed, training seconds (steps only) and best epoch. With several seeds
    each cell is ``mean±std`` (sample standard deviation) over the seeds (`` ± `` in markdown).
    """
    dense_flops = {r["seed"]: r["train_flops"] for r in rows if r["regime"] == "dense"}
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["regime"], r["target_sparsity"]), []).append(r)
    metric_cols = _METRIC_COLUMNS[task]
    header = ["regime", "target", "measured"] + [c[2] for c in metric_cols] + [
        "train GFLOPs", "FLOPs/dense", "train s", "best ep"]
    sep = " ± " if markdown else "±"

    def agg(values, spec):
        return _agg(values, spec).replace("±", sep)

    body = []
    for (regime, target), rs in groups.items():
        rel = [r["train_flops"] / dense_flops[r["seed"]] if dense_flops.get(r["seed"]) else float("nan")
               for r in rs]
        body.append([
            regime, _fmt(target, ".2f" if not markdown else "g"), agg([r["measured_sparsity"] for r in rs], ".4f"),
            *[agg([r["metrics"][split].get(key) for r in rs], ".4f") for split, key, _ in metric_cols],
            agg([r["train_flops"] / 1e9 for r in rs], ".3f"), agg(rel, ".3f"),
            agg([r["train_seconds"] for r in rs], ".2f"),
            ",".join(str(r["best_epoch"]) for r in rs),
        ])
    return header, body


def format_table(rows: list[dict], task: str) -> str:
    """Plain-text table of result rows (columns: see :func:`table_cells`)."""
    header, body = table_cells(rows, task)
    table = [header] + body
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _atomic_write(path: str, write: Callable[[str], None], suffix: str) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``; a
    crash or an exception in ``write`` never leaves a truncated file under the final name (the old
    file stays; the temporary file is removed on an exception). Raises ``OSError`` naming ``path``."""
    d = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=suffix)
    except OSError as e:
        raise OSError(f"cannot write {path}: {e.strerror}") from None
    try:
        os.close(fd)
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the bytes are on disk before the rename makes them the file
        finally:
            os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except OSError as e:  # a full disk or quota inside write(): Python's message has no file name
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_safe(obj):
    """``obj`` with NaN/inf floats replaced by ``None`` (JSON has no NaN; strict readers reject it)."""
    if isinstance(obj, numbers.Real) and not isinstance(obj, numbers.Integral):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_json(path: str, payload: dict) -> None:
    """Write ``payload`` as JSON atomically (temp file + rename); NaN and inf become ``null``."""
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(_json_safe(payload), f, indent=2, default=float, allow_nan=False)
    _atomic_write(path, write, ".json.tmp")


def write_text(path: str, text: str) -> None:
    """Write ``text`` (UTF-8) atomically (temp file + rename)."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    _atomic_write(path, write, ".tmp")


def plot(path: str, rows: list[dict], task: str, title: str = "") -> None:
    """PNG with three panels: test metric vs target sparsity, vs executed training GFLOPs, and vs
    training seconds. With several seeds, points are means and bars one standard deviation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    key = "auc" if task == "link" else "accuracy"
    label = "test ROC-AUC" if task == "link" else "test accuracy"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    a1, a2, a3 = axes
    styles = {"dense": ("k", "s"), "train-and-prune": ("tab:blue", "o"), "sparse-training": ("tab:red", "^")}

    def stats(values):
        values = [v for v in values if v is not None and math.isfinite(v)]
        if not values:
            return float("nan"), 0.0
        m = sum(values) / len(values)
        sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        return m, sd

    for regime, (color, marker) in styles.items():
        groups: dict = {}
        for r in rows:
            if r["regime"] == regime:
                groups.setdefault(r["target_sparsity"], []).append(r)
        if not groups:
            continue
        targets = sorted(groups)
        ys = [stats([r["metrics"]["test"][key] for r in groups[t]]) for t in targets]
        gflops = [stats([r["train_flops"] / 1e9 for r in groups[t]])[0] for t in targets]
        secs = [stats([r["train_seconds"] for r in groups[t]]) for t in targets]
        if regime == "dense":
            m, sd = ys[0]
            a1.axhline(m, color=color, ls="--", label="dense")
            if sd:
                a1.axhspan(m - sd, m + sd, color=color, alpha=0.08)
        else:
            a1.errorbar(targets, [y[0] for y in ys], yerr=[y[1] for y in ys], color=color, marker=marker,
                        capsize=3, label=regime)
        a2.errorbar(gflops, [y[0] for y in ys], yerr=[y[1] for y in ys], color=color, marker=marker, ls="none",
                    capsize=3, label=regime)
        a3.errorbar([s_[0] for s_ in secs], [y[0] for y in ys], xerr=[s_[1] for s_ in secs],
                    yerr=[y[1] for y in ys], color=color, marker=marker, ls="none", capsize=3, label=regime)
        if regime != "dense":
            for t, x, xs, y in zip(targets, gflops, secs, ys):
                for ax, xv in ((a2, x), (a3, xs[0])):
                    ax.annotate(f"{t:g}", (xv, y[0]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    a1.set_xlabel("target sparsity (fraction of zero weights)")
    a2.set_xlabel("executed training GFLOPs (log)")
    a3.set_xlabel("training seconds (steps only)")
    a2.set_xscale("log")
    a2.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    a2.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    a2.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no overlapping minor labels
    for a in axes:
        a.set_ylabel(label)
        a.margins(x=0.12)  # room for the point labels
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        _atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"), ".png")
    finally:
        plt.close(fig)
