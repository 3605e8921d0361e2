"""Sustained memory bandwidth of this process and the bandwidth lower bound of a sparse layer call.

Used by ``benchmarks/sweep.py`` (and the ``pytest --benchmark`` table) to put a physical floor
under the measured times: a sparse-weight linear layer on N rows has to read ``X`` and write
``Y`` at least once, however few weights it stores, so no kernel can be faster than
``bytes moved / memory bandwidth``.

Conventions (as in STREAM):

* bandwidth is in **GB/s = 1e9 bytes per second** (not GiB/s);
* a copy of ``nbytes`` bytes moves ``2·nbytes`` bytes (read + write; write-allocate traffic is
  not counted), so :func:`limit_seconds` divides the read + written bytes of the layer by the
  *copy* bandwidth measured the same way.

Run it directly for a quick look: ``python benchmarks/bandwidth.py --threads 1 2``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

__all__ = ["measure_bandwidth", "limit_seconds", "layer_bytes", "csr_weight_bytes",
           "bsr_weight_bytes", "make_copy_probe", "MIB"]

MIB = 1 << 20
_F32 = 4  # bytes per float32 element
_I64 = 8  # bytes per int64 index


def measure_bandwidth(threads: int, nbytes: int = 64 * MIB, repeats: int = 15,
                      warmup: int = 2) -> dict:
    """Measure the sustained memory bandwidth at ``threads`` torch threads, in this process.

    Three float32 kernels on a buffer of ``nbytes`` bytes (much larger than the caches), each
    timed ``repeats`` times after ``warmup`` untimed calls, interleaved (read, copy, write in
    each round) so that machine load affects them alike; the median is reported:

    * ``read``: ``x.sum()`` -- reads ``nbytes`` (the add is far cheaper than the load);
    * ``copy``: ``y.copy_(x)`` into a preallocated ``y`` -- reads ``nbytes``, writes ``nbytes``;
      counted as ``2·nbytes`` moved;
    * ``write``: ``y.fill_(1.0)`` -- writes ``nbytes``.

    The torch thread count is set to ``threads`` for the measurement and restored afterwards.

    Args:
        threads: torch intra-op thread count (``>= 1``).
        nbytes: size of one buffer in bytes (rounded down to a multiple of 4; ``>= 1 MiB``).
            Two buffers are allocated.
        repeats: timed repetitions per kernel (``>= 10``).
        warmup: untimed calls per kernel before timing (touches the pages, lazy init).

    Returns:
        dict with ``threads``, ``nbytes`` (bytes per buffer), ``repeats``,
        ``read_GBps`` / ``copy_GBps`` / ``write_GBps`` (median bandwidth, GB/s = 1e9 B/s),
        ``read_s`` / ``copy_s`` / ``write_s`` (median seconds per call),
        ``copy_GBps_max`` (bandwidth of the fastest copy, GB/s) and ``samples_s``
        (every timed call, seconds, per kernel).

    Raises:
        ValueError: ``threads < 1``, ``nbytes < 1 MiB`` or ``repeats < 10``.
    """
    if int(threads) < 1:
        raise ValueError(f"measure_bandwidth: threads must be >= 1, got {threads}")
    if int(nbytes) < MIB:
        raise ValueError(f"measure_bandwidth: nbytes must be >= 1 MiB ({MIB} bytes), got {nbytes}")
    if int(repeats) < 10:
        raise ValueError(f"measure_bandwidth: repeats must be >= 10, got {repeats}")
    numel = int(nbytes) // _F32
    nbytes = numel * _F32
    old = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        x = torch.rand(numel, dtype=torch.float32)
        y = torch.empty_like(x)
        y.zero_()
        kernels = {
            "read": lambda: x.sum(),
            "copy": lambda: y.copy_(x),
            "write": lambda: y.fill_(1.0),
        }
        for _ in range(max(0, int(warmup))):
            for f in kernels.values():
                f()
        samples: dict[str, list[float]] = {k: [] for k in kernels}
        names = list(kernels)
        for r in range(int(repeats)):
            order = names[r % len(names):] + names[:r % len(names)]
            for k in order:
                t0 = time.perf_counter()
                kernels[k]()
                samples[k].append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    moved = {"read": nbytes, "copy": 2 * nbytes, "write": nbytes}
    out = {"threads": int(threads), "nbytes": nbytes, "repeats": int(repeats)}
    for k in names:
        med = statistics.median(samples[k])
        out[f"{k}_s"] = med
        out[f"{k}_GBps"] = moved[k] / med / 1e9
    out["copy_GBps_max"] = moved["copy"] / min(samples["copy"]) / 1e9
    out["samples_s"] = samples
    return out


def make_copy_probe(src: torch.Tensor):
    """``(fn, bytes_moved)``: ``fn()`` copies ``src`` into a preallocated buffer of its size.

    For timing interleaved with the calls it bounds (``benchmarks/sweep.py`` runs it in every round
    of every cell), so the bandwidth comes from the same moment, load and working-set size as those
    calls. ``bytes_moved = 2·src.nbytes`` (read + write, as in :func:`measure_bandwidth`); GB/s =
    ``bytes_moved / seconds / 1e9``.
    """
    src = src.detach()
    dst = torch.empty_like(src, memory_format=torch.contiguous_format)
    dst.copy_(src)
    return (lambda: dst.copy_(src)), 2 * src.numel() * src.element_size()


def csr_weight_bytes(out_features: int, nnz: int, value_bytes: int = _F32, index_bytes: int = _I64) -> int:
    """Bytes of a CSR weight: ``nnz`` values + ``nnz`` column indices + ``out+1`` row pointers."""
    return nnz * (value_bytes + index_bytes) + (out_features + 1) * index_bytes


def bsr_weight_bytes(out_features: int, nnzb: int, blocksize: int = 16, value_bytes: int = _F32,
                     index_bytes: int = _I64) -> int:
    """Bytes of a BSR weight: ``nnzb·b²`` values + ``nnzb`` block-column indices + row pointers."""
    return nnzb * (blocksize * blocksize * value_bytes + index_bytes) + \
        (out_features // blocksize + 1) * index_bytes


def layer_bytes(n: int, in_features: int, out_features: int, weight_bytes: int = 0,
                mode: str = "fwd", elem_bytes: int = _F32) -> int:
    """Bytes a sparse linear layer call must move at least (each tensor touched once).

    * ``"fwd"``: read ``X`` (``n·in``), write ``Y`` (``n·out``), read the weight once:
      ``(n·in + n·out)·elem_bytes + weight_bytes``.
    * ``"fwdbwd"``: the forward plus a backward that reads ``dY`` (``n·out``) and ``X`` again
      (``n·in``, for the weight gradient), writes ``dX`` (``n·in``), reads the weight and writes
      its gradient: ``(3·n·in + 2·n·out)·elem_bytes + 3·weight_bytes``. (The bias gradient can be
      fused into the pass over ``dY``; it is not counted.)

    ``weight_bytes`` is the stored weight in bytes (e.g. :func:`csr_weight_bytes`); pass 0 to
    count only the activations. Returns bytes (int).
    """
    if mode == "fwd":
        return (n * in_features + n * out_features) * elem_bytes + weight_bytes
    if mode == "fwdbwd":
        return (3 * n * in_features + 2 * n * out_features) * elem_bytes + 3 * weight_bytes
    raise ValueError(f"layer_bytes: mode must be 'fwd' or 'fwdbwd', got {mode!r}")


def limit_seconds(n: int, in_features: int, out_features: int, bandwidth: float | dict,
                  weight_bytes: int = 0, mode: str = "fwd") -> float:
    """Physical lower bound, in seconds, for one sparse-layer call on ``n`` rows.

    ``layer_bytes(n, in_features, out_features, weight_bytes, mode)`` bytes (at least: read
    ``X``, ``n·in·4`` bytes, write ``Y``, ``n·out·4`` bytes, plus the stored sparse weight; see
    :func:`layer_bytes` for ``"fwdbwd"``) divided by the copy bandwidth.

    Args:
        n, in_features, out_features: the layer call ``Y[n, out] = X[n, in] · Wᵀ``.
        bandwidth: copy bandwidth in GB/s (1e9 bytes/s, read + write bytes counted), or the dict
            returned by :func:`measure_bandwidth` (its ``copy_GBps`` is used).
        weight_bytes: bytes of the stored weight (0 to count only ``X`` and ``Y``).
        mode: ``"fwd"`` or ``"fwdbwd"``.

    Returns:
        seconds (float). A measured time divided by this is how far the call is from the memory
        bandwidth bound (>= 1, up to measurement noise).
    """
    gbps = bandwidth["copy_GBps"] if isinstance(bandwidth, dict) else float(bandwidth)
    if not gbps > 0:
        raise ValueError(f"limit_seconds: bandwidth must be > 0 GB/s, got {gbps}")
    return layer_bytes(n, in_features, out_features, weight_bytes, mode) / (gbps * 1e9)


def _main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Measure sustained memory bandwidth (GB/s = 1e9 B/s).")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--mib", type=int, default=64, help="buffer size in MiB (default 64)")
    p.add_argument("--repeats", type=int, default=15)
    a = p.parse_args(argv)
    for t in a.threads:
        r = measure_bandwidth(t, a.mib * MIB, repeats=a.repeats)
        print(f"threads={t}: read {r['read_GBps']:.1f} GB/s, copy {r['copy_GBps']:.1f} GB/s "
              f"(max {r['copy_GBps_max']:.1f}), write {r['write_GBps']:.1f} GB/s")


if __name__ == "__main__":
    _main()
