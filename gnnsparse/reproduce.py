"""``gnnsparse reproduce``: the paper's experiment grid on every paper dataset under a data root.

"Towards Sparsification of Graph Neural Networks" (Peng et al., ICCD 2022) compares dense
train-and-prune with sparse training at sparsities 0.5, 0.75, 0.875, 0.9375, 0.96875 and 0.984375
(1/2 ... 1/64 of the weights kept) on link prediction (ia-email, wiki-talk, stackoverflow) and node
classification (brain), and makes two claims:

1. links: sparse training reaches accuracy comparable to train-and-prune with fewer training FLOPs;
2. node classification: at extreme sparsity sparse training needs < 1/7 of the training FLOPs and
   reaches *better* accuracy.

:func:`run_grid` runs, for each dataset found under the root (the paper's original file if present,
else its offline stand-in, see :mod:`gnnsparse.data.registry`), each model (a GNN — GraphSAGE by
default — and the paper's own MLP on walk embeddings, ``paper-mlp``), each seed: the dense model,
and train-and-prune and sparse training (RigL) at each sparsity. Rows go to
``<out>/<dataset>/<model>.json`` after every run (atomically), so an interrupted grid continues
where it stopped; then ``<out>/results.md`` (mean ± sample std over seeds, and the verdicts of
:func:`verdicts`), ``<out>/summary.json`` and one plot per dataset and model.

Epochs are fixed per model (:data:`PRESETS`) and the batch size is derived from a fixed number of
steps per epoch, so the grid's cost does not grow with the number of training pairs; the presets
were chosen so the grid on the offline stand-ins finishes within 2 hours on a 2-core machine.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

__all__ = ["PAPER_SPARSITIES", "PAPER_DATASETS", "GRID_MODELS", "Preset", "PRESETS", "GridDataset",
           "find_datasets", "grid_config", "run_grid", "verdicts", "markdown_report", "EXTREME_SPARSITY",
           "COMPARABLE_AUC"]

#: The paper's sparsity grid: fraction of zero weights (density 1/2, 1/4, ..., 1/64).
PAPER_SPARSITIES = (0.5, 0.75, 0.875, 0.9375, 0.96875, 0.984375)
#: The paper's datasets, by the names the CLI accepts.
PAPER_DATASETS = ("ia-email", "wiki-talk", "stackoverflow", "brain")
#: Models of the grid: a message-passing GNN and the paper's MLP on walk embeddings.
GRID_MODELS = ("sage", "paper-mlp")
#: Claim 2's "extreme sparsity": the grid's sparsities at or above this.
EXTREME_SPARSITY = 0.96875
#: Claim 1's tolerance: a test ROC-AUC this far (or two standard errors) below train-and-prune
#: still counts as comparable.
COMPARABLE_AUC = 0.01


@dataclass(frozen=True)
class Preset:
    """Fixed training length of one model in the grid.

    Attributes:
        epochs: E (dense and sparse training; train-and-prune: E dense + E // 2 fine-tuning).
        steps_per_epoch: the batch size is ``ceil(training items / steps_per_epoch)`` (at least
            ``min_batch``), so every epoch has about this many optimizer steps.
        update_interval: ΔT, steps between mask updates (pruning and drop-and-grow); a run shortened
            by ``--epochs`` / ``--steps-per-epoch`` uses ``min(ΔT, total steps // 8)`` (at least 1).
        min_batch: smallest batch size.
    """

    epochs: int
    steps_per_epoch: int
    update_interval: int
    min_batch: int = 32


#: Per-model presets (see :class:`Preset`); ``--epochs`` / ``--steps-per-epoch`` override them.
PRESETS = {
    "sage": Preset(epochs=8, steps_per_epoch=16, update_interval=8),
    "gcn": Preset(epochs=8, steps_per_epoch=16, update_interval=8),
    "paper-mlp": Preset(epochs=20, steps_per_epoch=16, update_interval=16),
}


@dataclass(frozen=True)
class GridDataset:
    """A paper dataset found under the root: ``source`` is ``"original"`` or ``"stand-in"``,
    ``path`` the file loaded (the edge file for a stand-in)."""

    name: str
    source: str
    path: str


def find_datasets(root, names: Iterable[str] = PAPER_DATASETS) -> tuple[list[GridDataset], list[str]]:
    """The paper datasets present under ``root``: ``(found, missing)``.

    For each name, the original file (:func:`gnnsparse.data.originals.find_original`) wins over the
    offline stand-in; a name with neither is listed in ``missing``. Raises
    :class:`~gnnsparse.data.DataError` if the root does not exist or a name is not a paper dataset.
    """
    from .data import DataError, dataset_files, resolve_root
    from .data.originals import ORIGINALS, find_original

    base = resolve_root(root)
    found, missing = [], []
    for name in names:
        if name not in ORIGINALS:
            raise DataError(f"{name!r} is not one of the paper's datasets ({', '.join(PAPER_DATASETS)})")
        original = find_original(name, base)
        if original is not None:
            found.append(GridDataset(name, "original", str(original)))
            continue
        try:
            found.append(GridDataset(name, "stand-in", str(dataset_files(name, base)[0])))
        except DataError:
            missing.append(name)
    return found, missing


def grid_config(model: str, train_items: int, seed: int, epochs: int | None = None,
                steps_per_epoch: int | None = None, **overrides):
    """The :class:`~gnnsparse.train.TrainConfig` of one grid run (preset of ``model``, batch size
    from ``train_items`` training pairs or nodes)."""
    from .train import TrainConfig

    p = PRESETS[model]
    spe = steps_per_epoch or p.steps_per_epoch
    e = epochs or p.epochs
    batch = max(p.min_batch, math.ceil(train_items / spe))
    return TrainConfig(epochs=e, batch_size=batch, model=model, seed=seed,
                       update_interval=_update_interval(p, e, spe), **overrides)


def _update_interval(p: Preset, epochs: int, steps_per_epoch: int) -> int:
    """ΔT: the preset's, shortened when a shorter run would leave fewer than 8 mask updates
    (``max(1, min(ΔT, epochs * steps_per_epoch // 8))``); the presets themselves are unchanged."""
    return max(1, min(p.update_interval, epochs * steps_per_epoch // 8))


def _key(row: dict) -> tuple:
    return (row["seed"], row["regime"], float(row["target_sparsity"]))


_ROW_FIELDS = ("seed", "regime", "target_sparsity", "config", "metrics", "train_flops")


def _config_matches(saved: dict, want: dict) -> bool:
    """Same training configuration. A field missing from a saved row (added to
    :class:`~gnnsparse.train.TrainConfig` after the row was written) counts as its default, which
    by the library's rule keeps the earlier behaviour."""
    from .train import TrainConfig

    defaults = dataclasses.asdict(TrainConfig())
    if set(saved) - set(want):
        return False
    return all(saved.get(k, defaults.get(k)) == v for k, v in want.items())


def _data_identity(ds: GridDataset, data) -> dict:
    """What a results file's rows were computed on: source, file, its size and mtime, and the
    loaded data's description (counts). Rows are reused only on the same identity."""
    st = os.stat(ds.path)
    return {"source": ds.source, "path": ds.path, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "describe": data.describe()}


def _saved_rows(path: Path, identity: dict, log: Callable[[str], None]) -> list[dict]:
    """Rows of an existing results file computed on the same data (any configuration); a file
    from other data or of an unknown structure is not reused (and is replaced when written)."""
    import json

    if not path.exists():
        return []
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log(f"ignoring unreadable {path} ({type(e).__name__}); its runs are computed again")
        return []
    if not isinstance(payload, dict) or not isinstance(payload.get("rows"), list):
        log(f"ignoring {path}: not a gnnsparse reproduce results file")
        return []
    saved = payload.get("data")
    if saved is None:  # written before the identity was recorded: compare what it holds
        saved = {k: payload.get(k) for k in ("source", "path", "describe")}
    if any(saved.get(k) != v for k, v in identity.items() if k in saved):
        log(f"not reusing {path}: its runs were computed on other data ({saved.get('path')})")
        return []
    return [r for r in payload["rows"] if isinstance(r, dict) and all(k in r for k in _ROW_FIELDS)
            and isinstance(r["config"], dict) and isinstance(r["metrics"], dict)]


def run_grid(root, out_dir, *, datasets: Sequence[str] = PAPER_DATASETS, models: Sequence[str] = GRID_MODELS,
             seeds: Sequence[int] = (0, 1, 2), sparsities: Sequence[float] = PAPER_SPARSITIES,
             epochs: int | None = None, steps_per_epoch: int | None = None, progress: bool = True,
             log: Callable[[str], None] = print, **overrides) -> dict:
    """Run the grid and write the results under ``out_dir``; returns the summary dict.

    Args:
        root: data root (None: ``$GNNSPARSE_DATA``, else ``../shared/data``).
        out_dir: output folder (created): ``<dataset>/<model>.json``, ``<dataset>-<model>.png``,
            ``results.md``, ``summary.json``.
        datasets, models, seeds, sparsities: the grid (defaults: the paper's).
        epochs, steps_per_epoch: override the :data:`PRESETS`.
        progress: tqdm bar over runs.
        overrides: further :class:`~gnnsparse.train.TrainConfig` fields; ``executor`` defaults to
            ``"sparse"`` here (every sparsified layer runs the sparse kernels, so executed FLOPs are
            the sparse ones, which the paper's claims are about).

    Rows already present in ``<dataset>/<model>.json`` with the same configuration are reused,
    so a grid that was interrupted continues. Wall-clock seconds of the whole call are in the
    summary (``grid_seconds``). Raises ``ValueError`` for a bad grid and
    :class:`~gnnsparse.data.DataError` for missing or malformed data.
    """
    from tqdm import tqdm

    from . import report
    from .data import load_dataset, resolve_root
    from .nn import _check_sparsity
    from .train import make_task, run_dense, run_sparse_training, run_train_and_prune

    overrides.setdefault("executor", "sparse")
    sparsities = sorted({_check_sparsity(s) for s in sparsities})
    if sparsities and sparsities[0] == 0.0:
        raise ValueError("sparsity 0 is the dense model (already in the grid); give sparsities in (0, 1)")
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    datasets, models = list(dict.fromkeys(datasets)), list(dict.fromkeys(models))
    for m in models:
        if m not in PRESETS:
            raise ValueError(f"model must be one of {tuple(PRESETS)}, got {m!r}")
    if not seeds or not models or not sparsities:
        raise ValueError("the grid needs at least one seed, one model and one sparsity")
    found, missing = find_datasets(root, datasets)
    if not found:
        raise ValueError(f"none of {', '.join(datasets)} found under the data root (originals or stand-ins)")
    out = Path(out_dir)
    data_root = resolve_root(root)
    if out.resolve() == data_root or data_root in out.resolve().parents:
        raise ValueError(f"refusing to write results inside the data root {data_root}; give another --out")
    for name in missing:
        log(f"skipped {name}: neither the original nor the stand-in is under the data root")
    # load every dataset once before training anything: a broken file fails in seconds, not hours
    identities = {}
    for ds in found:
        identities[ds.name] = _data_identity(ds, load_dataset(ds.name, root=root, seed=seeds[0]))
    out.mkdir(parents=True, exist_ok=True)
    runs_per = len(seeds) * (1 + 2 * len(sparsities))
    bar = tqdm(total=len(found) * len(models) * runs_per, unit="run", disable=not progress, dynamic_ncols=True)
    t_start = time.perf_counter()
    groups = []
    try:
        for ds in found:
            saved: dict[str, list] = {}
            payloads: dict[str, dict] = {}
            wanted: dict[str, list] = {m: [] for m in models}
            for seed in seeds:
                data = load_dataset(ds.name, root=root, seed=seed)
                items = (data.train_pos.shape[1] if data.task == "link" else int(data.train_mask.sum()))
                for model in models:
                    cfg = grid_config(model, items, seed, epochs, steps_per_epoch, **overrides)
                    cfg.validate()
                    want = dataclasses.asdict(cfg)
                    path = out / ds.name / f"{model}.json"
                    if model not in payloads:
                        payloads[model] = {"dataset": ds.name, "source": ds.source, "path": ds.path,
                                           "data": identities[ds.name], "task": data.task,
                                           "describe": data.describe(), "note": getattr(data, "note", ""),
                                           "model": model, "preset": dataclasses.asdict(PRESETS[model]), "rows": []}
                        saved[model] = _saved_rows(path, identities[ds.name], log)
                    reusable: dict = {}
                    for r in saved[model]:  # the first run of a key wins
                        if _config_matches(r["config"], want):
                            reusable.setdefault(_key(r), r)
                    task = make_task(data, cfg)
                    todo = [("dense", 0.0)] + [(reg, s) for s in sparsities
                                               for reg in ("train-and-prune", "sparse-training")]
                    for regime, s in todo:
                        bar.set_description(f"{ds.name} {model} seed {seed} {regime} {s:g}")
                        row = reusable.get((seed, regime, s))
                        if row is None:
                            t0 = time.perf_counter()
                            if regime == "dense":
                                row = run_dense(task, cfg)
                            elif regime == "train-and-prune":
                                row = run_train_and_prune(task, cfg, s)
                            else:
                                row = run_sparse_training(task, cfg, s)
                            row.pop("curve", None)
                            row["wall_seconds"] = time.perf_counter() - t0
                            saved[model].append(row)
                            # every row computed on this data is kept (other configurations too)
                            payloads[model]["rows"] = saved[model]
                            report.write_json(str(path), payloads[model])
                        wanted[model].append(row)
                        bar.update(1)
            for model in models:
                payloads[model]["rows"] = saved[model]
                report.write_json(str(out / ds.name / f"{model}.json"), payloads[model])
                group = dict(payloads[model], rows=wanted[model])
                report.plot(str(out / f"{ds.name}-{model}.png"), wanted[model], group["task"],
                            title=f"{ds.name} ({ds.source}; {model}; seeds {','.join(map(str, seeds))})")
                groups.append(group)
    finally:
        bar.close()
    walls = [r.get("wall_seconds") for g in groups for r in g["rows"]]
    summary = {
        "elapsed_seconds": time.perf_counter() - t_start,
        "grid_seconds": sum(w for w in walls if w is not None),
        "rows_without_wall_seconds": sum(w is None for w in walls),
        "datasets": [dataclasses.asdict(d) for d in found],
        "missing": missing,
        "models": list(models),
        "seeds": seeds,
        "sparsities": sparsities,
        "presets": {m: dataclasses.asdict(PRESETS[m]) for m in models},
        "used": {m: {"epochs": epochs or PRESETS[m].epochs,
                     "steps_per_epoch": steps_per_epoch or PRESETS[m].steps_per_epoch,
                     "update_interval": _update_interval(PRESETS[m], epochs or PRESETS[m].epochs,
                                                         steps_per_epoch or PRESETS[m].steps_per_epoch)}
                 for m in models},
        "overrides": {"epochs": epochs, "steps_per_epoch": steps_per_epoch, **overrides},
        "verdicts": verdicts(groups),
    }
    report.write_json(str(out / "summary.json"), summary)
    report.write_text(str(out / "results.md"), markdown_report(groups, summary))
    return summary


# ------------------------------------------------------------------------------------- verdicts
def _stats(values: list[float]) -> tuple[float, float, int]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan"), float("nan"), 0
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, sd, len(vals)


def compare_cells(group: dict) -> list[dict]:
    """Sparse training vs train-and-prune at each sparsity of one (dataset, model) group.

    Each cell: sparsity, test metric mean/std of both regimes, ``delta`` (sparse training minus
    train-and-prune), ``se`` (standard error of the difference, sample std over seeds),
    ``flops_ratio`` (mean sparse-training training FLOPs / mean train-and-prune training FLOPs)
    and ``flops_vs_dense``.
    """
    rows = group["rows"]
    key = "auc" if group["task"] == "link" else "accuracy"
    dense = _stats([r["train_flops"] for r in rows if r["regime"] == "dense"])[0]
    cells = []
    for s in sorted({r["target_sparsity"] for r in rows if r["regime"] != "dense"}):
        st = [r for r in rows if r["regime"] == "sparse-training" and r["target_sparsity"] == s]
        tp = [r for r in rows if r["regime"] == "train-and-prune" and r["target_sparsity"] == s]
        if not st or not tp:
            continue
        m1, sd1, n1 = _stats([r["metrics"]["test"][key] for r in st])
        m2, sd2, n2 = _stats([r["metrics"]["test"][key] for r in tp])
        f1, f2 = _stats([r["train_flops"] for r in st])[0], _stats([r["train_flops"] for r in tp])[0]
        se = math.sqrt((sd1 ** 2 / n1 if n1 else 0.0) + (sd2 ** 2 / n2 if n2 else 0.0))
        cells.append({"sparsity": s, "metric": key, "sparse_training": m1, "sparse_training_std": sd1,
                      "train_and_prune": m2, "train_and_prune_std": sd2, "delta": m1 - m2, "se": se,
                      "seeds": min(n1, n2), "flops_ratio": f1 / f2 if f2 else float("nan"),
                      "flops_vs_dense": f1 / dense if dense else float("nan")})
    return cells


def verdicts(groups: list[dict]) -> dict:
    """The paper's two claims judged on the grid's results.

    * Claim 1 (links): a cell (dataset, model, sparsity) supports it when sparse training used fewer
      training FLOPs than train-and-prune (``flops_ratio < 1``) and its mean test ROC-AUC is no more
      than ``max(COMPARABLE_AUC, 2 se)`` below train-and-prune's. Verdict: ``supported`` when at
      least 90 % of the cells do, ``not supported`` when fewer than half do, else ``inconclusive``.
    * Claim 2 (node classification, sparsity >= ``EXTREME_SPARSITY``): a cell supports it when
      ``flops_ratio < 1/7`` and sparse training's mean test accuracy is higher by more than ``2 se``;
      it contradicts it when ``flops_ratio >= 1/7`` or accuracy is lower by more than ``2 se``;
      otherwise (accuracy within ``2 se``) it is a tie. Verdict: ``supported`` when every cell
      supports it, ``not supported`` when at least half contradict it, else ``inconclusive``.

    ``se`` is the standard error of the difference of means (sample std over seeds). A cell with
    fewer than 2 seeds per regime has no spread: the verdict is then ``inconclusive`` whatever the
    cells say. A cell without a finite metric (e.g. ROC-AUC of a one-class split) is reported as
    ``no data`` and left out of the counts.

    Returns ``{"links": {...}, "nodes": {...}}`` with the verdict, the counts and every cell
    (``outcome``: ``supports``, ``does not support``, ``contradicts``, ``tie`` or ``no data``).
    """
    eps = 1e-12  # a difference exactly on a threshold is not lost to rounding
    out = {}
    link_cells, node_cells = [], []
    for g in groups:
        for c in compare_cells(g):
            c = dict(c, dataset=g["dataset"], model=g["model"], source=g.get("source", ""))
            if g["task"] != "link" and c["sparsity"] < EXTREME_SPARSITY:
                continue
            if not (math.isfinite(c["delta"]) and math.isfinite(c["flops_ratio"])):
                c.update(ok=False, contradicts=False, outcome="no data")
            elif g["task"] == "link":
                c["ok"] = bool(c["flops_ratio"] < 1 and c["delta"] >= -max(COMPARABLE_AUC, 2 * c["se"]) - eps)
                c["contradicts"] = not c["ok"]
                c["outcome"] = "supports" if c["ok"] else "does not support"
            else:
                better = c["delta"] > 2 * c["se"] + eps
                worse = c["delta"] < -2 * c["se"] - eps
                cheap = c["flops_ratio"] < 1 / 7
                c["ok"] = bool(cheap and better)
                c["contradicts"] = bool(not cheap or worse)
                c["outcome"] = "supports" if c["ok"] else "contradicts" if c["contradicts"] else "tie"
            (link_cells if g["task"] == "link" else node_cells).append(c)
    claims = {
        "links": ("sparse training reaches accuracy comparable to dense train-and-prune with fewer training "
                  "FLOPs (link prediction)", link_cells, "no link dataset in the grid"),
        "nodes": ("at extreme sparsity sparse training needs < 1/7 of train-and-prune's training FLOPs and "
                  "reaches better accuracy (node classification)", node_cells,
                  f"no node-classification dataset or no sparsity >= {EXTREME_SPARSITY:g} in the grid"),
    }
    for key, (claim, cells, why_not) in claims.items():
        judged = [c for c in cells if c["outcome"] != "no data"]
        if not judged:
            out[key] = {"claim": claim, "verdict": f"not tested ({why_not if not cells else 'no finite metrics'})",
                        "cells": 0, "cells_supporting": 0, "cells_contradicting": 0, "detail": cells}
            continue
        n, k = len(judged), sum(c["ok"] for c in judged)
        bad = sum(c["contradicts"] for c in judged)
        if key == "links":
            v = "supported" if k >= 0.9 * n - eps else "not supported" if k < 0.5 * n else "inconclusive"
        else:
            v = "supported" if k == n else "not supported" if bad >= 0.5 * n else "inconclusive"
        reason = ""
        if min(c["seeds"] for c in judged) < 2:
            v, reason = "inconclusive", "fewer than 2 seeds per cell: no spread to judge differences against"
        out[key] = {"claim": claim, "verdict": v, "reason": reason, "cells_supporting": k,
                    "cells_contradicting": bad, "cells": n, "detail": cells}
    return out


# ------------------------------------------------------------------------------------- markdown
def markdown_report(groups: list[dict], summary: dict) -> str:
    """The grid as markdown: one table per (dataset, model) with mean ± sample std over seeds of
    the test metric, measured sparsity, training FLOPs (multiply+add = 2) relative to dense and to
    train-and-prune, and training seconds; then the verdicts with the cells behind them."""
    from .report import table_cells

    lines = [
        "# gnnsparse reproduce: results",
        "",
        f"Grid: sparsities {', '.join(f'{s:g}' for s in summary['sparsities'])}; seeds "
        f"{', '.join(map(str, summary['seeds']))}; models {', '.join(summary['models'])}; "
        f"grid compute {summary['grid_seconds'] / 60:.1f} min (sum of the runs' wall-clock, training and "
        f"evaluation; {summary['rows_without_wall_seconds']} runs without a recorded time).",
        "Training length (epochs, steps per epoch, ΔT): "
        + "; ".join(f"{m}: E={p['epochs']}, {p['steps_per_epoch']} steps/epoch, ΔT={p['update_interval']}"
                    for m, p in summary["used"].items())
        + ". Train-and-prune: E dense epochs with gradual magnitude pruning + E//2 fine-tuning epochs; "
          "sparse training: E epochs of RigL. Model selection on validation; test metrics of the "
          "selected epoch. FLOPs are executed training FLOPs (multiply+add = 2).",
        "",
    ]
    if summary.get("missing"):
        lines += [f"Not found under the data root: {', '.join(summary['missing'])}.", ""]
    for g in groups:
        metric = "ROC-AUC" if g["task"] == "link" else "accuracy"
        cfg = g["rows"][0]["config"] if g["rows"] else {}
        lines += [f"## {g['dataset']} ({g['source']}), {g['model']}", "", g["describe"], "",
                  f"E={cfg.get('epochs')}, batch size {cfg.get('batch_size')}, ΔT={cfg.get('update_interval')}, "
                  f"executor {cfg.get('executor')}.", ""]
        header, body = table_cells(g["rows"], g["task"], markdown=True)
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join("---" for _ in header) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in body]
        cells = compare_cells(g)
        if cells:
            lines += ["", f"Sparse training − train-and-prune, test {metric} (± standard error) and FLOPs ratio:",
                      "", "| sparsity | Δ | ST/T&P FLOPs | ST/dense FLOPs |", "|---|---|---|---|"]
            lines += [f"| {c['sparsity']:g} | {c['delta']:+.4f} ± {c['se']:.4f} | {c['flops_ratio']:.3f} | "
                      f"{c['flops_vs_dense']:.3f} |" for c in cells]
        lines.append("")
    v = summary["verdicts"]
    lines += ["## Verdicts on the paper's claims", ""]
    for key, title in (("links", "Claim 1 (links)"), ("nodes", "Claim 2 (node classification)")):
        d = v[key]
        if not d["cells"]:
            lines += [f"- **{title}**: {d['verdict']}", ""]
            continue
        counts = f"{d['cells_supporting']} of {d['cells']} cells support it"
        if key == "nodes":
            ties = d["cells"] - d["cells_supporting"] - d["cells_contradicting"]
            counts += f", {d['cells_contradicting']} contradict it, {ties} tie{'s' if ties != 1 else ''}"
        if d.get("reason"):
            counts += f"; {d['reason']}"
        lines += [f"- **{title}** — {d['claim']}: **{d['verdict']}** ({counts}; rules in "
                  "`gnnsparse.reproduce.verdicts`)."]
        lines += [f"  - {c['dataset']} {c['model']} {c['sparsity']:g}: Δ {c['delta']:+.4f} ± {c['se']:.4f} "
                  f"(n={c['seeds']}), FLOPs ST/T&P {c['flops_ratio']:.3f}, ST/dense {c['flops_vs_dense']:.3f} "
                  f"→ {c['outcome']}" for c in d["detail"]]
        lines.append("")
    return "\n".join(lines) + "\n"
