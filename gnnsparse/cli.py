"""The ``gnnsparse`` command.

``gnnsparse compare`` trains, on one real graph, the dense model, dense train-and-prune and
sparse training (RigL by default) at each requested sparsity, and prints accuracy, measured
sparsity, executed training FLOPs and wall-clock side by side.
``gnnsparse datasets`` lists the registered datasets.

Bad input (unknown dataset, missing data root, malformed file, bad option) exits with status 2
and a one-line ``gnnsparse: error: ...`` message, without a traceback.

``gnnsparse compare`` launched by ``torchrun`` (``WORLD_SIZE`` > 1) trains data-parallel (see
:mod:`gnnsparse.distributed`): rank 0 prints and writes the JSON, the plot and the checkpoints; a
lost rank (died, or silent for ``--dist-timeout`` seconds) or ranks holding different masks exit
with status 3 and ``gnnsparse: error: rank R: ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys

__all__ = ["main", "build_parser"]


def _sparsity(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"sparsity must be a number in [0, 1), got {text!r}") from None
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"sparsity must be in [0, 1) (fraction of zero weights), got {v}")
    return v


def _int_in(lo: int, hi: int, what: str):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{what} must be in [{lo}, {hi}], got {v}")
        return v
    return parse


def _positive(text: str) -> int:
    return _int_in(1, 2**31 - 1, "value")(text)


def _float_in(lo: float, hi: float, what: str, hi_open: bool = False, lo_open: bool = False):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        ok = (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)
        if not ok:
            raise argparse.ArgumentTypeError(
                f"{what} must be in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}, got {text}")
        return v
    return parse


def build_parser() -> argparse.ArgumentParser:
    from .data import DEFAULT_DATASET
    from .train import TrainConfig

    d = TrainConfig()
    p = argparse.ArgumentParser(prog="gnnsparse", description=__doc__.split("\n\n")[1])
    fmt = argparse.ArgumentDefaultsHelpFormatter
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compare", help="dense vs train-and-prune vs sparse training on one graph",
                       formatter_class=fmt,
                       description="Train dense, dense train-and-prune and sparse training on a real graph "
                                   "and report metrics, measured sparsity, executed FLOPs and seconds.")
    c.add_argument("--dataset", default=DEFAULT_DATASET,
                   help="registered name (see `gnnsparse datasets`) or a path to an edge file")
    c.add_argument("--root", default=None, help="data root; unset: $GNNSPARSE_DATA, else ../shared/data")
    c.add_argument("--task", choices=("link", "node"), default=None, help="override the dataset's task")
    c.add_argument("--sparsity", type=_sparsity, nargs="+", default=[0.5, 0.9, 0.99],
                   help="target sparsities (fractions of zero weights)")
    c.add_argument("--model", choices=("sage", "gcn", "paper-mlp"), default=d.model,
                   help="GraphSAGE (mean) or GCN encoder, or paper-mlp: the paper's MLP on temporal-walk skip-gram "
                        "embeddings of the training graph (8-dim per node for links, 64 for nodes)")
    c.add_argument("--epochs", type=_positive, default=d.epochs, help="E: epochs of dense and sparse training")
    c.add_argument("--finetune-epochs", type=_int_in(0, 2**31 - 1, "--finetune-epochs"), default=None,
                   help="train-and-prune fine-tuning epochs; unset: E // 2")
    c.add_argument("--batch-size", type=_positive, default=d.batch_size,
                   help="supervision items per step (positive pairs, plus as many negatives; or nodes)")
    c.add_argument("--lr", type=_float_in(0.0, 10.0, "--lr", lo_open=True), default=d.lr,
                   help="Adam learning rate")
    c.add_argument("--hidden", type=_int_in(3, 65536, "--hidden"), default=d.hidden, help="width of every layer")
    c.add_argument("--seed", type=_int_in(0, 2**63 - 1, "--seed"), nargs="+", default=[d.seed],
                   help="seed(s): model init, batch order, training negatives and the evaluation negatives; "
                        "with several seeds the table shows mean±std")
    c.add_argument("--distribution", choices=("uniform", "erk"), default=d.distribution,
                   help="per-layer sparsity distribution, both regimes")
    c.add_argument("--pruning", choices=("layer", "global"), default=d.pruning,
                   help="magnitude ranking per layer or global, both regimes (pruning threshold; "
                        "drop/grow ranking of sparse training)")
    c.add_argument("--prune-schedule", choices=("gradual", "oneshot"), default=d.prune_schedule,
                   help="train-and-prune: Zhu & Gupta cubic schedule, or one shot at the end of the dense phase")
    c.add_argument("--grow", choices=("rigl", "set"), default=d.grow, help="sparse-training grow criterion")
    c.add_argument("--update-interval", type=_positive, default=d.update_interval,
                   help="ΔT: steps between mask updates")
    c.add_argument("--drop-fraction", type=_float_in(0.0, 1.0, "--drop-fraction", hi_open=True),
                   default=d.drop_fraction, help="α, initial drop fraction")
    c.add_argument("--layout", choices=("csr", "bsr"), default=d.layout,
                   help="sparse weight layout, both regimes: csr (single weights) or bsr (whole blocks: "
                        "block magnitude pruning, block drop-and-grow, block-sparse kernels)")
    c.add_argument("--blocksize", type=_int_in(1, 4096, "--blocksize"), default=None,
                   help="block edge for --layout bsr; must divide the layer sizes (4, 8, 16 or 32 have "
                        "fast kernels); unset with --layout bsr: 16")
    c.add_argument("--executor", choices=("auto", "sparse", "dense"), default=d.executor,
                   help="auto: per layer, the kernel measured fastest (sparse or dense; cached on disk); "
                        "layers run dense are counted with dense FLOPs and named in the output")
    c.add_argument("--backend", choices=("cpu", "torch"), default=None,
                   help="sparse op backend; unset: C++ kernels when built")
    c.add_argument("--loss-chunk", type=_positive, default=None,
                   help="link tasks: decode each batch's pairs this many at a time, with the encoder run once "
                        "per step (same loss and gradients; memory independent of --batch-size, so a batch may "
                        "hold all training pairs on a large graph); unset: one decode per batch")
    c.add_argument("--max-steps-per-epoch", type=_positive, default=None,
                   help="stop each epoch after this many batches (a fresh random subset each epoch); "
                        "unset: every batch")
    c.add_argument("--threads", type=_int_in(1, 1024, "--threads"), default=None,
                   help="torch.set_num_threads; unset: torch's default")
    c.add_argument("--checkpoint-dir", default=None,
                   help="save checkpoints of every run in this folder (atomically: after every epoch's "
                        "evaluation, and every --checkpoint-every steps); a killed run continues with --resume")
    c.add_argument("--checkpoint-every", type=_positive, default=None,
                   help="also checkpoint every this many optimizer steps (mid-epoch); unset: at epoch ends only")
    c.add_argument("--resume", action="store_true",
                   help="continue the job saved in --checkpoint-dir (finished runs are not trained again; the "
                        "run in progress ends bit-identical to an uninterrupted one, timings aside); same "
                        "options required")
    c.add_argument("--json", default=None, help="write all result rows to this JSON file")
    c.add_argument("--plot", default=None,
                   help="write a PNG (.png is appended if missing): metric vs sparsity and vs training FLOPs")
    c.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    c.add_argument("--dist-timeout", type=_float_in(0.0, 86400.0, "--dist-timeout", lo_open=True), default=300.0,
                   help="under torchrun (several processes): seconds a rank waits for the others in a collective "
                        "before it gives up (a rank that died is usually noticed at once)")

    from .reproduce import GRID_MODELS, PAPER_DATASETS, PAPER_SPARSITIES, PRESETS

    r = sub.add_parser("reproduce", help="the paper's grid on every paper dataset under the data root",
                       formatter_class=fmt,
                       description="Run the paper's experiment (dense train-and-prune vs sparse training at "
                                   "each sparsity, several seeds, a GNN and the paper's MLP) on each of "
                                   "ia-email, wiki-talk, stackoverflow and brain found under the data root "
                                   "(the original file, else its offline stand-in), and write JSON, a markdown "
                                   "table with mean±std and verdicts on the paper's claims, and plots. Rows are "
                                   "saved after every run and kept: re-running continues, reusing every run "
                                   "with the same data and configuration (other options train anew; their "
                                   "rows stay in the JSON but only the current grid is reported).")
    r.add_argument("--root", default=None,
                   help="data root; unset: $GNNSPARSE_DATA, else ../shared/data beside the repository")
    r.add_argument("--out", default="results", help="output folder (not inside the data root)")
    r.add_argument("--datasets", nargs="+", choices=PAPER_DATASETS, default=list(PAPER_DATASETS),
                   help="paper datasets to run (those not under the root are skipped)")
    r.add_argument("--models", nargs="+", choices=tuple(PRESETS), default=list(GRID_MODELS),
                   help="models: GNN encoders (sage, gcn) and/or paper-mlp")
    r.add_argument("--seeds", type=_int_in(0, 2**63 - 1, "--seeds"), nargs="+", default=[0, 1, 2],
                   help="seeds (model init, batch order, negatives, evaluation negatives); verdicts need >= 2")
    r.add_argument("--sparsity", type=_sparsity, nargs="+", default=list(PAPER_SPARSITIES),
                   help="target sparsities in (0, 1) (fractions of zero weights)")
    r.add_argument("--epochs", type=_positive, default=None,
                   help="E for every model; unset: the preset (" + ", ".join(
                       f"{m} {p.epochs}" for m, p in PRESETS.items()) + ")")
    r.add_argument("--steps-per-epoch", type=_positive, default=None,
                   help="batch size = ceil(training pairs or nodes / this), at least 32; unset: the preset (" + ", ".join(
                       f"{m} {p.steps_per_epoch}" for m, p in PRESETS.items()) + ")")
    r.add_argument("--executor", choices=("auto", "sparse", "dense"), default="sparse",
                   help="sparse: every sparsified layer runs the sparse kernels, so the executed FLOPs are the "
                        "sparse ones (the paper's FLOPs claims); auto: per layer the kernel measured faster "
                        "(small graphs often run dense, counted with dense FLOPs)")
    r.add_argument("--threads", type=_int_in(1, 1024, "--threads"), default=None,
                   help="torch.set_num_threads; unset: torch's default")
    r.add_argument("--no-progress", action="store_true", help="no tqdm bar")

    ds = sub.add_parser("datasets", help="list registered datasets")
    ds.add_argument("--root", default=None)

    dl = sub.add_parser("download", help="download one of the paper's full datasets (needs network)",
                        formatter_class=fmt,
                        description="Download the paper's original graph (ia-email, wiki-talk, stackoverflow, "
                                    "brain) into a download cache, resuming interrupted downloads; prints the "
                                    "file and its sha256 (`unverified` when no checksum is known).")
    dl.add_argument("name", help="ia-email, wiki-talk, stackoverflow or brain")
    dl.add_argument("--root", default=None,
                    help="also link/copy the finished file into this (writable) data root, under "
                         "snap/, networkrepository/ or star/")
    dl.add_argument("--cache-dir", default=None,
                    help="download directory; unset: $GNNSPARSE_DOWNLOAD_DIR, else ~/.cache/gnnsparse/downloads")
    dl.add_argument("--url", default=None, help="download from this URL instead (required for brain)")
    dl.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p


def _output_path(path: str | None, suffix: str | None = None) -> str | None:
    """Check an output path before training (so a bad one fails in seconds, not after the run)."""
    import os

    if path is None:
        return None
    if not path.strip():
        raise ValueError("output path is empty")
    if suffix and os.path.splitext(path)[1].lower() != suffix:
        path += suffix  # what matplotlib would write anyway
    if os.path.isdir(path):
        raise ValueError(f"output path {path} is a directory; give a file name")
    parent = os.path.dirname(os.path.abspath(path)) or "."
    probe = parent
    while not os.path.exists(probe):  # the nearest existing ancestor must be a writable directory
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK):
        raise ValueError(f"cannot write {path}: {probe} is not a writable directory")
    return path


def _output_dir(path: str) -> str:
    """Check an output folder before the grid starts: not a file, and creatable/writable."""
    import os

    if not path.strip():
        raise ValueError("output folder is empty")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"output folder {path} is a file; give a folder")
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK):
        raise ValueError(f"cannot write under {path}: {probe} is not a writable directory")
    return path


def _check_outputs_distinct(dataset, root, *outputs) -> None:
    """Refuse to overwrite the input data or to write two outputs to one file."""
    import os

    paths = [os.path.realpath(p) for p in outputs if p]
    if len(set(paths)) != len(paths):
        raise ValueError(f"--json and --plot name the same file: {paths[0]}")
    candidates = [dataset] + ([os.path.join(root, dataset)] if root else [])
    inputs = {os.path.realpath(c) for c in candidates if os.path.exists(c)}
    for p in paths:
        if p in inputs:
            raise ValueError(f"refusing to overwrite the input data file {p} with an output")


def _check_outputs_not_checkpoint(directory: str, *outputs) -> None:
    """Refuse a result file that would replace one of the checkpoint folder's own files (its
    checkpoint, its lock, a run's final state): the job's next --resume would find it corrupt."""
    import fnmatch
    import os

    from .checkpoint import CHECKPOINT_NAME, LOCK_NAME

    folder = os.path.realpath(directory)
    for p in outputs:
        if p and os.path.dirname(os.path.realpath(p)) == folder:
            name = os.path.basename(p)
            if name in (CHECKPOINT_NAME, LOCK_NAME) or fnmatch.fnmatch(name, "final-*.pt") \
                    or fnmatch.fnmatch(name, ".tmp-*.pt"):
                raise ValueError(f"refusing to write a result to {p}: it is a file of the checkpoint folder "
                                 f"{directory}; choose another name")


def _compare(args) -> int:
    import os

    import torch

    from .train import TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(epochs=args.epochs, finetune_epochs=args.finetune_epochs, batch_size=args.batch_size,
                      lr=args.lr, hidden=args.hidden, model=args.model, seed=args.seed[0],
                      distribution=args.distribution, pruning=args.pruning, prune_schedule=args.prune_schedule,
                      grow=args.grow, update_interval=args.update_interval, drop_fraction=args.drop_fraction,
                      backend=args.backend, layout=args.layout, executor=args.executor,
                      blocksize=(args.blocksize or 16) if args.layout == "bsr" else None,
                      loss_chunk=args.loss_chunk, max_steps_per_epoch=args.max_steps_per_epoch)
    if args.blocksize is not None and args.layout != "bsr":
        raise ValueError("--blocksize is only used with --layout bsr")
    cfg.validate()
    if args.resume and not args.checkpoint_dir:
        raise ValueError("--resume needs --checkpoint-dir (the folder of the checkpoints to continue)")
    if args.checkpoint_every is not None and not args.checkpoint_dir:
        raise ValueError("--checkpoint-every needs --checkpoint-dir")
    if args.checkpoint_dir:
        _output_dir(args.checkpoint_dir)
        from .checkpoint import CHECKPOINT_NAME

        if not args.resume and os.path.exists(os.path.join(args.checkpoint_dir, CHECKPOINT_NAME)):
            raise ValueError(f"{args.checkpoint_dir} already holds a checkpoint; continue it with --resume or "
                             f"choose another --checkpoint-dir")
    json_path, plot_path = _output_path(args.json), _output_path(args.plot, ".png")
    _check_outputs_distinct(args.dataset, args.root, json_path, plot_path)
    if args.checkpoint_dir:
        _check_outputs_not_checkpoint(args.checkpoint_dir, json_path, plot_path)
    isa = os.environ.get("GNNSPARSE_CPU_ISA", "").strip().lower()
    if isa not in ("", "auto", "generic", "avx2", "avx512"):
        raise ValueError(f"GNNSPARSE_CPU_ISA={isa!r} is not one of auto, generic, avx2, avx512")
    from . import distributed

    distributed.init_from_env(args.dist_timeout)  # under torchrun: data-parallel over its processes
    if not distributed.is_main():  # rank 0 alone prints the table and writes the files
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            return _compare_run(args, cfg, json_path, plot_path, main=False)
    return _compare_run(args, cfg, json_path, plot_path, main=True)


def _compare_run(args, cfg, json_path, plot_path, main: bool) -> int:
    import torch
    from tqdm import tqdm

    from . import distributed, report
    from .data import load_dataset
    from .regimes import candidate_layers
    from .train import make_task, run_dense, run_sparse_training, run_train_and_prune

    seeds = list(dict.fromkeys(args.seed))
    sparsities = sorted(set(args.sparsity))
    total_epochs = len(seeds) * (cfg.epochs + len(sparsities) * (cfg.epochs + cfg.finetune + cfg.epochs))
    rows = []
    bar = None
    checkpoint = None
    try:
        for seed in seeds:
            data = load_dataset(args.dataset, root=args.root, task=args.task, seed=seed)
            task = make_task(data, cfg)
            if bar is None:
                print(data.describe())
                if getattr(data, "note", ""):
                    print(f"note: {data.note}")
                shapes, _ = candidate_layers(task.build_model(cfg), cfg.min_numel)
                if sparsities and not shapes:
                    raise ValueError(f"no layer can be sparsified: every Linear layer of this model has fewer "
                                     f"than {cfg.min_numel} weights (raise --hidden)")
                if sparsities and cfg.layout == "bsr":
                    b = cfg.blocksize
                    if all(o % b or i % b for o, i in shapes.values()):
                        sizes = ", ".join(sorted({f"{o}x{i}" for o, i in shapes.values()}))
                        raise ValueError(f"--blocksize {b} divides no sparsifiable layer ({sizes}); "
                                         f"use a block size that divides --hidden = {cfg.hidden}")
                if args.checkpoint_dir:
                    from .checkpoint import Checkpointer

                    shared = dataclasses.asdict(cfg)
                    del shared["seed"]  # per run (the runs' own checks include it)
                    from .checkpoint import data_fingerprint

                    # the data's content (a file edited in place keeps its name, size and counts) and
                    # the thread count (torch's dense kernels are bit-reproducible only at the same one)
                    checkpoint = Checkpointer(args.checkpoint_dir, every=args.checkpoint_every, resume=args.resume,
                                              writer=main, meta={"dataset": data.name, "task": task.kind,
                                                    "describe": data.describe(), "data_sha256": data_fingerprint(data),
                                                    "threads": torch.get_num_threads(), "seeds": seeds,
                                                    "sparsities": sparsities, "config": shared})
                    if checkpoint.resumed:
                        print(f"resuming from {checkpoint.path} ({len(checkpoint.finished_rows)} runs finished)")
                bar = tqdm(total=total_epochs, unit="epoch", disable=args.no_progress or not main,
                           dynamic_ncols=True)
            run_cfg = dataclasses.replace(cfg, seed=seed)
            bar.set_description(f"seed {seed} dense")
            rows.append(run_dense(task, run_cfg, bar, checkpoint=checkpoint))
            for s in sparsities:
                bar.set_description(f"seed {seed} train-and-prune {s:g}")
                rows.append(run_train_and_prune(task, run_cfg, s, bar, checkpoint=checkpoint))
                bar.set_description(f"seed {seed} sparse-training {s:g}")
                rows.append(run_sparse_training(task, run_cfg, s, bar, checkpoint=checkpoint))
    finally:
        if bar is not None:
            bar.close()  # so an error message starts on its own line
        if checkpoint is not None:
            checkpoint.close()  # the folder's lock: another job may use it now
    grow = "RigL" if cfg.grow == "rigl" else "SET"
    print(f"\n{data.name}: {task.kind} prediction, model={cfg.model}, seeds={','.join(map(str, seeds))}, "
          f"E={cfg.epochs}, fine-tune={cfg.finetune}, distribution={cfg.distribution}, pruning={cfg.pruning} "
          f"({cfg.prune_schedule}), sparse training={grow}")
    print(report.format_table(rows, task.kind))
    kept = {f"{layer['name']} ({layer['kind'].split(': ', 1)[1].rstrip(')')})" for r in rows
            for layer in r["layers"] if layer["kind"].startswith("dense (kept")}
    print("measured = structural sparsity over the sparsified Linear weights; "
          "FLOPs executed in training (multiply+add = 2); seconds = training steps only; "
          "best ep = selected epoch (0-based, counted over all phases)"
          + ("; mean±std over seeds." if len(seeds) > 1 else "."))
    if distributed.world_size() > 1:
        print(f"data-parallel over {distributed.world_size()} processes: FLOPs summed over the processes "
              f"(each encodes the full graph every step), seconds of the slowest process")
    if kept:
        print(f"kept dense, not counted in measured: {', '.join(sorted(kept))}")
    ran_dense: dict[tuple, set] = {}
    for r in rows:
        names = {layer["name"] for layer in r["layers"]
                 if layer.get("executor") == "dense" and not layer["kind"].startswith("dense")}
        if names:
            ran_dense.setdefault((r["regime"], r["target_sparsity"]), set()).update(names)
    layout = cfg.layout if cfg.layout == "csr" else f"bsr (blocksize {cfg.blocksize})"
    print(f"sparse layout: {layout}; executor: {cfg.executor}")
    why = "measured faster" if cfg.executor == "auto" else "--executor dense"
    for (regime, target), names in sorted(ran_dense.items()):
        print(f"  {regime} {target:g}: ran dense ({why}; dense FLOPs counted): {', '.join(sorted(names))}")
    payload = {"dataset": data.name, "task": task.kind, "describe": data.describe(), "seeds": seeds,
               "note": getattr(data, "note", ""), "config": rows[0]["config"], "rows": rows}
    if json_path and main:
        report.write_json(json_path, payload)
        print(f"wrote {json_path}")
    if plot_path and main:
        report.plot(plot_path, rows, task.kind,
                    title=f"{data.name} ({cfg.model}, seeds {','.join(map(str, seeds))})")
        print(f"wrote {plot_path}")
    return 0


def _reproduce(args) -> int:
    import os

    import torch

    from .reproduce import run_grid

    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ValueError("gnnsparse reproduce runs on one process; launch `gnnsparse compare` with torchrun for "
                         "data-parallel training")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = _output_dir(args.out)
    summary = run_grid(args.root, out, datasets=args.datasets, models=args.models, seeds=args.seeds,
                       sparsities=args.sparsity, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                       progress=not args.no_progress, executor=args.executor)
    v = summary["verdicts"]
    print(f"grid finished in {summary['elapsed_seconds'] / 60:.1f} min: "
          f"{', '.join(d['name'] + ' (' + d['source'] + ')' for d in summary['datasets'])}")
    for key, title in (("links", "claim 1 (links)"), ("nodes", "claim 2 (node classification)")):
        d = v[key]
        extra = f" ({d['cells_supporting']} of {d['cells']} cells support it)" if d["cells"] else ""
        if d.get("reason"):
            extra += f"; {d['reason']}"
        print(f"  {title}: {d['verdict']}{extra}")
    print(f"wrote {os.path.join(out, 'results.md')}, {os.path.join(out, 'summary.json')} and per-dataset JSON "
          f"and plots under {out}")
    return 0


def _datasets(args) -> int:
    from .data import REGISTRY, ALIASES, resolve_root

    root = resolve_root(args.root)  # DataError (exit 2) when it does not exist
    print(f"data root: {root}")
    for name, spec in REGISTRY.items():
        print(f"  {name:20s} {spec.task:5s} {spec.description}")
    for alias, (target, original) in ALIASES.items():
        print(f"  {alias:20s} -> {target} (offline stand-in for the paper's {original})")
    return 0


def _download(args) -> int:
    from .data.download import SOURCES, download_dataset

    def log(msg: str) -> None:
        print(f"gnnsparse: {msg}", file=sys.stderr)

    res = download_dataset(args.name, cache_dir=args.cache_dir, root=args.root, url=args.url,
                           progress=False if args.no_progress else None, log=log)
    print(f"{'already downloaded' if res.cached else 'downloaded'} {res.name} from {res.url}")
    print(f"  file:   {res.path}")
    print(f"  size:   {res.size} bytes")
    if res.verified:
        print(f"  sha256: {res.sha256} (verified)")
    else:
        print(f"  sha256: {res.sha256} (unverified: no known checksum for {res.name})")
    if res.linked is not None:
        print(f"  linked: {res.linked}")
    if res.url == SOURCES[res.name].url:
        print(f"  source: {SOURCES[res.name].description}")
    return 0


def _configure_runtime() -> None:
    # OpenMP threads that spin while waiting collapse when the machine has any other load (measured
    # here: one fwd+bwd of a 986x128 layer went from 1 ms to 60 ms with 2 threads and a busy core).
    # Passive waiting avoids that; it only takes effect when torch is not imported yet.
    import os
    import warnings

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Large outputs reuse freed memory instead of fresh page-faulting mmaps (gnnsparse.memory);
    # applies to dense and sparse layers alike. GNNSPARSE_RETAIN_MEMORY=0 keeps glibc's defaults.
    from .memory import env_setting, retain_freed_memory

    if env_setting(True):
        retain_freed_memory(True)
    # the table uses "±" and "ΔT"; never crash on a terminal that cannot encode them
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            with contextlib.suppress(ValueError, OSError):  # a stream that cannot be reconfigured
                stream.reconfigure(errors="replace")
    # torch_geometric 2.8 imports torch.jit.script-decorated code: a deprecation notice, not ours
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)


_OOM = "out of memory (try a smaller --hidden or --batch-size, or a smaller graph)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gnnsparse`` command; returns the exit status (130 after Ctrl-C, at any
    point: also while torch and the data are still being imported, before a run starts)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("gnnsparse: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    try:
        _configure_runtime()
    except ValueError as e:  # a bad environment variable
        print(f"gnnsparse: error: {e}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    from .distributed import DistributedError, shutdown

    try:
        if args.command == "compare":
            return _compare(args)
        if args.command == "download":
            return _download(args)
        if args.command == "reproduce":
            return _reproduce(args)
        return _datasets(args)
    except DistributedError as e:  # a lost rank, a timeout, ranks that disagree: never hang
        print(f"gnnsparse: error: {_first_line(e)}", file=sys.stderr)
        return 3
    except MemoryError:
        print(f"gnnsparse: error: {_OOM}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # torch's allocator reports exhaustion as RuntimeError
        if "alloc" not in str(e).lower():
            raise
        print(f"gnnsparse: error: {_OOM}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:  # DataError is a ValueError
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"gnnsparse: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = ""
        if getattr(args, "checkpoint_dir", None):
            hint = f" (continue it: the same command with --resume; checkpoints in {args.checkpoint_dir})"
        print(f"gnnsparse: interrupted{hint}", file=sys.stderr)
        return 130
    finally:
        shutdown()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
