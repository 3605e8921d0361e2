"""The ``gnnsparse`` command.

``gnnsparse compare`` trains, on one real graph, the dense model, dense train-and-prune and
sparse training (RigL by default) at each requested sparsity, and prints accuracy, measured
sparsity, executed training FLOPs and wall-clock side by side.
``gnnsparse datasets`` lists the registered datasets.

Bad input (unknown dataset, missing data root, malformed file, bad option) exits with status 2
and a one-line ``gnnsparse: error: ...`` message, without a traceback.
"""

from __future__ import annotations

import argparse
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


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


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
    c.add_argument("--model", choices=("sage", "gcn"), default=d.model, help="GraphSAGE (mean) or GCN encoder")
    c.add_argument("--epochs", type=_positive, default=d.epochs, help="E: epochs of dense and sparse training")
    c.add_argument("--finetune-epochs", type=int, default=None,
                   help="train-and-prune fine-tuning epochs; unset: E // 2")
    c.add_argument("--batch-size", type=_positive, default=d.batch_size,
                   help="supervision items per step (positive pairs, plus as many negatives; or nodes)")
    c.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    c.add_argument("--hidden", type=_positive, default=d.hidden, help="width of every layer")
    c.add_argument("--seed", type=int, nargs="+", default=[d.seed],
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
    c.add_argument("--drop-fraction", type=float, default=d.drop_fraction, help="α, initial drop fraction")
    c.add_argument("--backend", choices=("cpu", "torch"), default=None,
                   help="sparse op backend; unset: C++ kernels when built")
    c.add_argument("--threads", type=_positive, default=None, help="torch.set_num_threads; unset: torch's default")
    c.add_argument("--json", default=None, help="write all result rows to this JSON file")
    c.add_argument("--plot", default=None, help="write a PNG: metric vs sparsity and vs training FLOPs")
    c.add_argument("--no-progress", action="store_true", help="no tqdm bar")

    ds = sub.add_parser("datasets", help="list registered datasets")
    ds.add_argument("--root", default=None)
    return p


def _compare(args) -> int:
    import torch
    from tqdm import tqdm

    from . import report
    from .data import load_dataset
    from .train import TrainConfig, make_task, run_dense, run_sparse_training, run_train_and_prune

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(epochs=args.epochs, finetune_epochs=args.finetune_epochs, batch_size=args.batch_size,
                      lr=args.lr, hidden=args.hidden, model=args.model, seed=args.seed[0],
                      distribution=args.distribution, pruning=args.pruning, prune_schedule=args.prune_schedule,
                      grow=args.grow, update_interval=args.update_interval, drop_fraction=args.drop_fraction,
                      backend=args.backend)
    cfg.validate()
    seeds = list(dict.fromkeys(args.seed))
    sparsities = sorted(set(args.sparsity))
    total_epochs = len(seeds) * (cfg.epochs + len(sparsities) * (cfg.epochs + cfg.finetune + cfg.epochs))
    rows = []
    bar = None
    for seed in seeds:
        data = load_dataset(args.dataset, root=args.root, task=args.task, seed=seed)
        if bar is None:
            print(data.describe())
            if getattr(data, "note", ""):
                print(f"note: {data.note}")
            bar = tqdm(total=total_epochs, unit="epoch", disable=args.no_progress, dynamic_ncols=True)
        task = make_task(data, cfg)
        run_cfg = dataclasses.replace(cfg, seed=seed)
        bar.set_description(f"seed {seed} dense")
        rows.append(run_dense(task, run_cfg, bar))
        for s in sparsities:
            bar.set_description(f"seed {seed} train-and-prune {s:g}")
            rows.append(run_train_and_prune(task, run_cfg, s, bar))
            bar.set_description(f"seed {seed} sparse-training {s:g}")
            rows.append(run_sparse_training(task, run_cfg, s, bar))
    bar.close()
    grow = "RigL" if cfg.grow == "rigl" else "SET"
    print(f"\n{data.name}: {task.kind} prediction, model={cfg.model}, seeds={','.join(map(str, seeds))}, "
          f"E={cfg.epochs}, fine-tune={cfg.finetune}, distribution={cfg.distribution}, pruning={cfg.pruning} "
          f"({cfg.prune_schedule}), sparse training={grow}")
    print(report.format_table(rows, task.kind))
    kept = {f"{layer['name']} ({layer['kind'].split(': ', 1)[1].rstrip(')')})" for r in rows
            for layer in r["layers"] if layer["kind"].startswith("dense (kept")}
    print("measured = structural sparsity over the sparsified Linear weights; "
          "FLOPs executed in training (multiply+add = 2); seconds = training steps only"
          + ("; mean±std over seeds." if len(seeds) > 1 else "."))
    if kept:
        print(f"kept dense, not counted in measured: {', '.join(sorted(kept))}")
    payload = {"dataset": data.name, "task": task.kind, "describe": data.describe(), "seeds": seeds,
               "note": getattr(data, "note", ""), "config": rows[0]["config"], "rows": rows}
    if args.json:
        report.write_json(args.json, payload)
        print(f"wrote {args.json}")
    if args.plot:
        report.plot(args.plot, rows, task.kind,
                    title=f"{data.name} ({cfg.model}, seeds {','.join(map(str, seeds))})")
        print(f"wrote {args.plot}")
    return 0


def _datasets(args) -> int:
    from .data import REGISTRY, ALIASES, resolve_root

    try:
        root = resolve_root(args.root)
    except ValueError as e:
        root = f"(not found: {e})"
    print(f"data root: {root}")
    for name, spec in REGISTRY.items():
        print(f"  {name:20s} {spec.task:5s} {spec.description}")
    for alias, (target, original) in ALIASES.items():
        print(f"  {alias:20s} -> {target} (offline stand-in for the paper's {original})")
    return 0


def _configure_runtime() -> None:
    # OpenMP threads that spin while waiting collapse when the machine has any other load (measured
    # here: one fwd+bwd of a 986x128 layer went from 1 ms to 60 ms with 2 threads and a busy core).
    # Passive waiting avoids that; it only takes effect when torch is not imported yet.
    import os
    import warnings

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # torch_geometric 2.8 imports torch.jit.script-decorated code: a deprecation notice, not ours
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gnnsparse`` command; returns the exit status."""
    _configure_runtime()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "compare":
            return _compare(args)
        return _datasets(args)
    except (ValueError, OSError) as e:  # DataError is a ValueError
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"gnnsparse: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gnnsparse: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
