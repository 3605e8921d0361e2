"""Reporting for ``gnnsparse compare``: a text table, a JSON file and a PNG plot."""

from __future__ import annotations

import json
import math
import os
import tempfile

__all__ = ["format_table", "write_json", "plot"]

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
    return f"{format(mean, spec)}±{format(std, spec)}"


def format_table(rows: list[dict], task: str) -> str:
    """Plain-text table of result rows, one line per (regime, target sparsity).

    Columns: regime, target and measured sparsity (structural, over sparsified layers), the task's
    validation/test metrics, executed training FLOPs (GFLOPs, multiply+add = 2), FLOPs relative to
    the dense run of the same seed, training seconds (steps only) and best epoch. With several seeds
    each cell is ``mean±std`` (sample standard deviation) over the seeds.
    """
    dense_flops = {r["seed"]: r["train_flops"] for r in rows if r["regime"] == "dense"}
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["regime"], r["target_sparsity"]), []).append(r)
    metric_cols = _METRIC_COLUMNS[task]
    header = ["regime", "target", "measured"] + [c[2] for c in metric_cols] + [
        "train GFLOPs", "FLOPs/dense", "train s", "best ep"]
    table = [header]
    for (regime, target), rs in groups.items():
        rel = [r["train_flops"] / dense_flops[r["seed"]] if dense_flops.get(r["seed"]) else float("nan")
               for r in rs]
        table.append([
            regime, _fmt(target, ".2f"), _agg([r["measured_sparsity"] for r in rs], ".4f"),
            *[_agg([r["metrics"][split].get(key) for r in rs], ".4f") for split, key, _ in metric_cols],
            _agg([r["train_flops"] / 1e9 for r in rs], ".3f"), _agg(rel, ".3f"),
            _agg([r["train_seconds"] for r in rs], ".2f"),
            ",".join(str(r["best_epoch"]) for r in rs),
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def write_json(path: str, payload: dict) -> None:
    """Write ``payload`` as JSON atomically (temp file + rename)."""
    d = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".json.tmp")
    except OSError as e:
        raise OSError(f"cannot write {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, default=float)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def plot(path: str, rows: list[dict], task: str, title: str = "") -> None:
    """PNG with two panels: test metric vs target sparsity, and test metric vs training FLOPs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    key = "auc" if task == "link" else "accuracy"
    label = "test ROC-AUC" if task == "link" else "test accuracy"
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"dense": ("k", "s"), "train-and-prune": ("tab:blue", "o"), "sparse-training": ("tab:red", "^")}
    for regime, (color, marker) in styles.items():
        rs = sorted((r for r in rows if r["regime"] == regime), key=lambda r: (r["target_sparsity"], r["seed"]))
        if not rs:
            continue
        ys = [r["metrics"]["test"][key] for r in rs]
        if regime == "dense":
            a1.axhline(ys[0], color=color, ls="--", label="dense")
        else:
            a1.plot([r["target_sparsity"] for r in rs], ys, color=color, marker=marker, label=regime)
        a2.scatter([r["train_flops"] for r in rs], ys, color=color, marker=marker, label=regime)
        for r, y in zip(rs, ys):
            if regime != "dense":
                a2.annotate(f"{r['target_sparsity']:g}", (r["train_flops"], y), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
    a1.set_xlabel("target sparsity (fraction of zero weights)")
    a1.set_ylabel(label)
    a2.set_xscale("log")
    a2.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no overlapping minor labels
    a2.set_xlabel("executed training FLOPs")
    a2.set_ylabel(label)
    a2.margins(x=0.12)  # room for the point labels
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
