"""One epoch of sparse-training GraphSAGE (90 % sparse weights) on a SYNTHETIC sx-stackoverflow-sized graph.

Target: the whole run (data, split, adjacency, model, one training epoch, validation and test
evaluation) within a peak RSS of 20 GB on CPU.

The graph is SYNTHETIC: :func:`gnnsparse.data.synthetic.synthetic_sx_arrays` (the edges
:func:`~gnnsparse.data.synthetic.write_synthetic_sx` would write, generated in memory instead of
through a 63.5M-line gzip file; ``--edge-file`` parses such a file with
:func:`gnnsparse.data.ingest.load_edge_list` instead). Default size: sx-stackoverflow's
2,601,977 nodes and 63,497,050 temporal edges; ``--edges N`` for a smaller graph (nodes scaled in
proportion unless ``--nodes``).

The run goes through the library's own code: :class:`gnnsparse.data.splits.LinkData` (temporal
70/15/15 split, evaluation negatives), :func:`gnnsparse.train.make_task` (features, mean-normalized
CSR adjacency and its transpose) and :func:`gnnsparse.train.run_sparse_training` with
``epochs=1`` (model build, random 90 % masks, executor choice, the epoch, validation, test).

Epoch definition (defaults): ``batch_size = n_train`` ("full batch": every training pair and as
many fresh negatives in ONE optimizer step), the loss decoded ``loss_chunk = 65536`` pairs at a
time (:attr:`gnnsparse.train.TrainConfig.loss_chunk`), no step cap; ``--batch-size`` and
``--max-steps`` change it and the JSON states what ran.

Measurement: everything runs in ONE fresh child process; each phase's seconds and its own peak
RSS (``VmHWM`` of ``/proc/self/status``, reset at the start of the phase by writing ``5`` to
``/proc/self/clear_refs``) are recorded, plus the process's overall ``ru_maxrss``. A watchdog
thread ends the child (exit code 3) if its RSS passes ``--rss-limit-gb`` or the machine's
``MemAvailable`` falls under 0.5 GB, so an oversized run fails instead of swapping or OOM-killing.
The child runs with ``MALLOC_MMAP_THRESHOLD_=1048576`` (``--malloc-mmap-threshold``): freed
buffers of 1 MiB or more go back to the OS at once instead of staying in glibc's heap as RSS.

Usage::

    python benchmarks/epoch_bench.py --edges 1000000 --out /tmp/epoch_1M.json
    flock /tmp/gnnsparse-bigrun.lock python benchmarks/epoch_bench.py --out /tmp/epoch_full.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gnnsparse.data.synthetic import SX_STACKOVERFLOW_EDGES, SX_STACKOVERFLOW_NODES  # noqa: E402

TARGET_GB = 20.0
GB = 1e9


# ------------------------------------------------------------------------------ child process
def _proc_kb(path: str, field: str) -> int | None:
    """``field`` of a ``/proc`` key-value file (``/proc/self/status``, ``/proc/meminfo``) in kB."""
    with contextlib.suppress(OSError):  # no /proc: no figure
        with open(path) as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    return None


def _status_kb(field: str) -> int | None:
    return _proc_kb("/proc/self/status", field)


def _meminfo_kb(field: str) -> int | None:
    return _proc_kb("/proc/meminfo", field)


class _Probe:
    """Per-phase wall seconds and peak RSS (VmHWM reset per phase where the kernel allows it)."""

    def __init__(self):
        import resource

        self.resource = resource
        self.phases: dict[str, dict] = {}
        self.can_reset = self._reset()
        self.t = time.perf_counter()

    @staticmethod
    def _reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            return True
        except OSError:
            return False

    def mark(self, name: str) -> None:
        """Close the segment since the previous mark and book it under ``name``."""
        now = time.perf_counter()
        hwm = _status_kb("VmHWM")
        ph = self.phases.setdefault(name, {"seconds": 0.0, "peak_rss_gb": 0.0, "rss_end_gb": 0.0})
        ph["seconds"] += now - self.t
        if hwm is not None and self.can_reset:
            ph["peak_rss_gb"] = max(ph["peak_rss_gb"], hwm * 1024 / GB)
        else:
            ph["peak_rss_gb"] = None
        rss = _status_kb("VmRSS")
        ph["rss_end_gb"] = rss * 1024 / GB if rss is not None else None
        print(f"[epoch_bench] {name}: {now - self.t:.1f} s, peak {ph['peak_rss_gb']} GB, "
              f"rss now {ph['rss_end_gb']} GB", file=sys.stderr, flush=True)
        self._reset()
        self.t = time.perf_counter()

    def max_rss_gb(self) -> float:
        """Peak RSS of the whole run: the largest phase peak (resetting VmHWM also resets what
        ``ru_maxrss`` reports for the live process), and ``ru_maxrss`` itself."""
        peaks = [p["peak_rss_gb"] for p in self.phases.values() if p["peak_rss_gb"] is not None]
        ru = self.resource.getrusage(self.resource.RUSAGE_SELF).ru_maxrss * 1024 / GB
        return max(peaks + [ru])


def _watchdog(limit_gb: float) -> None:
    import threading

    def run():
        while True:
            rss = _status_kb("VmRSS") or 0
            avail = _meminfo_kb("MemAvailable")
            if rss * 1024 > limit_gb * GB or (avail is not None and avail < 512 * 1024):
                print(f"[epoch_bench] WATCHDOG: RSS {rss * 1024 / GB:.2f} GB (limit {limit_gb} GB), "
                      f"MemAvailable {avail and avail * 1024 / GB:.2f} GB: aborting", file=sys.stderr, flush=True)
                os._exit(3)
            time.sleep(0.25)

    threading.Thread(target=run, daemon=True).start()


def child(args) -> dict:
    import numpy as np
    import torch

    from gnnsparse import train
    from gnnsparse.data.readers import TemporalEdges
    from gnnsparse.data.splits import LinkData
    from gnnsparse.data.synthetic import synthetic_sx_arrays

    _watchdog(args.rss_limit_gb)
    if args.threads:
        torch.set_num_threads(args.threads)
    probe = _Probe()
    probe.mark("startup")

    # --- load
    if args.edge_file:
        from gnnsparse.data.ingest import load_edge_list

        g = load_edge_list(args.edge_file, cache_dir=args.cache_dir)
        src, dst, t, node_ids, source = g.src, g.dst, g.t, g.node_ids, f"file {args.edge_file}"
    else:
        src, dst, t, node_ids = synthetic_sx_arrays(args.nodes, args.edges, seed=args.seed)
        source = "synthetic_sx_arrays (in memory)"
    edges = TemporalEdges(src=src, dst=dst, t=t, weight=None, sign=None, node_ids=node_ids,
                          path=Path(args.edge_file or f"SYNTHETIC-sx-n{args.nodes}-e{args.edges}-s{args.seed}"))
    probe.mark("load")

    # --- split
    data = LinkData(edges, name="SYNTHETIC-sx-stackoverflow", seed=args.seed,
                    note="SYNTHETIC graph (gnnsparse.data.synthetic), not real data", keep_edges=False)
    del edges, src, dst, t
    probe.mark("split")

    # --- adjacency (task: features + mean-normalized CSR and its transpose)
    n_train = int(data.train_pos.shape[1])
    batch_size = n_train if args.batch_size in (None, 0) else args.batch_size
    cfg = train.TrainConfig(epochs=1, batch_size=batch_size, hidden=args.hidden, model="sage",
                            seed=args.seed, loss_chunk=args.loss_chunk, max_steps_per_epoch=args.max_steps)
    task = train.make_task(data, cfg)
    probe.mark("adjacency")

    # --- instrument the phases inside run_sparse_training (timing only; behaviour unchanged)
    steps = train._steps_per_epoch(task, cfg)
    orig_batches, orig_eval, orig_measure = task.epoch_batches, task.evaluate, train.measure_flops
    state = {"first_batch": True}

    def epoch_batches(gen, **kw):
        probe.mark("model")  # build, random masks, executor choice, optimizer
        return orig_batches(gen, **kw)

    def evaluate(model, split):
        probe.mark("epoch")
        out = orig_eval(model, split)
        probe.mark(f"eval_{split}")
        return out

    def measure_flops(fn):
        probe.mark("epoch")
        out = orig_measure(fn)
        probe.mark("flop_count")
        return out

    task.epoch_batches, task.evaluate = epoch_batches, evaluate
    train.measure_flops = measure_flops
    try:
        row = train.run_sparse_training(task, cfg, args.sparsity)
    finally:
        train.measure_flops = orig_measure
    probe.mark("finish")
    del state

    peak = probe.max_rss_gb()
    s = data.stats
    res = {
        "synthetic": True,
        "graph": f"SYNTHETIC sx-stackoverflow-sized graph from {source}; not real data",
        "nodes": int(data.num_nodes),
        "edges": int(s["lines"]),
        "unique_pairs": s["unique_pairs"],
        "train_pairs": s["n_train"],
        "val_pairs": s["n_val"],
        "test_pairs": s["n_test"],
        "message_passing_nnz": int(task.adj._gnnsparse_adjacency.nnz),
        "model": "sage",
        "hidden": cfg.hidden,
        "num_layers": cfg.num_layers,
        "regime": "sparse-training",
        "target_sparsity": args.sparsity,
        "measured_sparsity": row["measured_sparsity"],
        "epoch": {
            "definition": (f"one pass over {'a capped subset of ' if steps * batch_size < n_train else ''}"
                           f"the {n_train} training pairs: batch_size={batch_size} positives + as many fresh "
                           f"negatives per step, {steps} step(s), "
                           f"{'capped at max_steps_per_epoch=' + str(args.max_steps) if args.max_steps else 'not capped'}, "
                           f"loss decoded in chunks of {args.loss_chunk} pairs"),
            "batch_size": batch_size,
            "steps": row["steps"],
            "capped": bool(args.max_steps and steps < -(-n_train // batch_size)),
            "loss_chunk": args.loss_chunk,
            "train_seconds": row["train_seconds"],
            "mask_updates": row["mask_updates"],
            "loss": row["curve"][-1]["loss"] if row["curve"] else None,
        },
        "val_auc": row["metrics"]["val"]["auc"] if row["metrics"]["val"] else None,
        "test_auc": row["metrics"]["test"]["auc"],
        "train_flops": row["train_flops"],
        "phases": probe.phases,
        "phase_peak_rss_method": ("VmHWM reset per phase via /proc/self/clear_refs" if probe.can_reset
                                  else "unavailable (clear_refs not writable); see peak_rss_gb"),
        "peak_rss_gb": peak,
        "target_rss_gb": TARGET_GB,
        "verdict": "PASS" if peak <= TARGET_GB else "FAIL",
        "threads": torch.get_num_threads(),
        "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
        "seed": args.seed,
    }
    return res


# ------------------------------------------------------------------------------ parent
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edges", type=int, default=SX_STACKOVERFLOW_EDGES)
    ap.add_argument("--nodes", type=int, default=None, help="default: 2,601,977 scaled by edges / 63,497,050")
    ap.add_argument("--edge-file", type=Path, default=None,
                    help="parse this (synthetic) SNAP edge list with load_edge_list instead of generating arrays")
    ap.add_argument("--cache-dir", type=Path, default=None, help="load_edge_list cache (with --edge-file)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--batch-size", type=int, default=None, help="default (or 0): all training pairs, one step")
    ap.add_argument("--loss-chunk", type=int, default=65536)
    ap.add_argument("--max-steps", type=int, default=None, help="max_steps_per_epoch (default: no cap)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rss-limit-gb", type=float, default=21.0, help="watchdog: abort the child above this RSS")
    ap.add_argument("--malloc-mmap-threshold", type=int, default=1 << 20,
                    help="MALLOC_MMAP_THRESHOLD_ for the child (glibc; 0: leave malloc alone)")
    ap.add_argument("--out", type=Path, default=None, help="JSON output (default: print only)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.nodes is None:
        args.nodes = max(2, round(SX_STACKOVERFLOW_NODES * args.edges / SX_STACKOVERFLOW_EDGES))

    if args.child:
        res = child(args)
        print("RESULT " + json.dumps(res), flush=True)
        return 0

    cmd = [sys.executable, str(Path(__file__).resolve()), "--child"] + list(argv if argv is not None else sys.argv[1:])
    t0 = time.perf_counter()
    env = dict(os.environ)
    if args.malloc_mmap_threshold:
        # glibc: serve every allocation of at least this size with its own mmap, so a freed numpy /
        # torch buffer goes back to the OS at once instead of staying in the heap as RSS
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(args.malloc_mmap_threshold))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False, env=env)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        print(f"epoch_bench: child failed with exit code {proc.returncode}"
              f"{' (watchdog: RSS limit or low memory)' if proc.returncode == 3 else ''}", file=sys.stderr)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"synthetic": True, "edges": args.edges, "nodes": args.nodes,
                                            "verdict": "FAIL", "exit_code": proc.returncode,
                                            "wall_seconds": wall}, indent=1) + "\n")
        return 1
    res = json.loads(lines[-1][len("RESULT "):])
    res["wall_seconds"] = wall
    text = json.dumps(res, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
