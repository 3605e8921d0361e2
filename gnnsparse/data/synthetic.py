"""Synthetic stand-in for SNAP ``sx-stackoverflow`` (for ingestion benchmarks).

The real file (63,497,050 lines ``src dst unix_seconds``, 2,601,977 nodes) is
not available offline; :func:`write_synthetic_sx` writes a gzip file in the
same line format and of the same size so the streaming reader
(:mod:`gnnsparse.data.ingest`) can be measured at full scale.  The file always
starts with a ``# SYNTHETIC ...`` comment line so it can never be mistaken for
real data.  It is *not* a model of stackoverflow beyond: the node/edge counts,
heavy-tailed (Zipf-like) degrees, self-loops, repeated pairs, gaps in the id
space and non-decreasing timestamps over the real file's time span.

Generation (streaming, memory ~ ``chunk`` x 60 bytes + 24 bytes per node):

* node ``r`` (rank) gets original id ``ids[r]``, a sorted random sample of
  ``num_nodes`` ids from ``0..~2.3*num_nodes`` (SNAP ids have gaps);
  ranks are assigned to ids by a random permutation, so degree does not follow
  the id.
* each endpoint is drawn from ``P(rank r) ~ (r + 1) ** -alpha`` by inverse CDF
  (``np.searchsorted`` on the cumulative weights);
* exact node count: endpoint slot ``s`` (``2 * edge + {0: src, 1: dst}``) with
  ``s % stride == 0`` and ``s // stride < num_nodes`` is overwritten by node
  ``cover[s // stride]`` (``cover`` a random permutation), ``stride =
  (2 * num_edges) // num_nodes``, so every node appears at least once;
* timestamps of chunk ``[e0, e1)`` are sorted uniform draws in
  ``[T0 + span * e0 / E, T0 + span * e1 / E)``, hence non-decreasing over the
  file;
* lines are formatted with numpy digit arithmetic into a fixed-width byte
  matrix whose padding is dropped by a boolean mask (no Python loop per line),
  and compressed with ``gzip`` (level ``compresslevel``) to a temporary file
  renamed into place at the end.
"""

from __future__ import annotations

import gzip
import contextlib
import os
import uuid
from pathlib import Path
from typing import Union

import numpy as np

__all__ = ["write_synthetic_sx", "synthetic_sx_arrays", "SX_STACKOVERFLOW_NODES", "SX_STACKOVERFLOW_EDGES"]

SX_STACKOVERFLOW_NODES = 2_601_977
SX_STACKOVERFLOW_EDGES = 63_497_050
# time span of sx-stackoverflow (2008-07-31 .. 2016-03-06), unix seconds
_T0 = 1_217_567_877
_T1 = 1_457_273_428


def _digits(v: np.ndarray, width: int) -> np.ndarray:
    """Right-aligned ASCII digits of non-negative ints; (n, width) uint8, '\\0' pad."""
    out = np.zeros((v.size, width), dtype=np.uint8)
    nd = np.ones(v.size, dtype=np.int64)  # number of digits (0 has one)
    tmp = v.astype(np.int64) // 10
    for _ in range(1, width):
        nd += tmp > 0
        tmp //= 10
    x = v.astype(np.int64, copy=True)
    for q in range(width - 1, -1, -1):
        col = (x % 10).astype(np.uint8) + 48
        out[:, q] = np.where(width - q <= nd, col, 0)
        x //= 10
    return out


def _format_lines(src: np.ndarray, dst: np.ndarray, t: np.ndarray) -> bytes:
    """``b"src dst t\\n" * n`` with single spaces, vectorized."""
    parts = []
    for col in (src, dst, t):
        w = max(1, len(str(int(col.max())))) if col.size else 1
        parts.append(_digits(col, w))
    n = src.size
    sep = np.full((n, 1), 32, dtype=np.uint8)
    nlc = np.full((n, 1), 10, dtype=np.uint8)
    mat = np.hstack([parts[0], sep, parts[1], sep, parts[2], nlc])
    return mat[mat != 0].tobytes()


def _synthetic_chunks(n: int, m: int, seed: int, chunk: int, alpha: float):
    """The synthetic graph's random stream: yields ``ids`` (int64 sorted original ids) first,
    then per chunk ``(e0, e1, ends, t)`` with ``ends`` the ``2 * (e1 - e0)`` endpoint *ranks'
    compacted ids* (int32, ``ends[0::2]`` sources, ``ends[1::2]`` destinations) and ``t`` the
    chunk's sorted timestamps. One stream for :func:`write_synthetic_sx` and
    :func:`synthetic_sx_arrays`, so both give the same graph."""
    if n < 1 or 2 * m < n:
        raise ValueError(f"need 2 * num_edges >= num_nodes >= 1, got nodes={n}, edges={m}")
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    if n > np.iinfo(np.int32).max:
        raise ValueError(f"num_nodes {n} does not fit int32 ids")
    rng = np.random.default_rng(seed)
    id_space = max(n, int(n * 2.3))
    ids = np.sort(rng.choice(id_space, size=n, replace=False)).astype(np.int64)
    yield ids
    # node of rank r is compacted id rank_to_node[r] (original id ids[rank_to_node[r]])
    rank_to_node = rng.permutation(n).astype(np.int32)
    w = (np.arange(1, n + 1, dtype=np.float64)) ** (-float(alpha))
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    del w
    cover = rng.permutation(n)
    stride = (2 * m) // n
    span = _T1 - _T0
    for e0 in range(0, m, chunk):
        e1 = min(m, e0 + chunk)
        c = e1 - e0
        ranks = np.searchsorted(cdf, rng.random(2 * c), side="right")
        np.minimum(ranks, n - 1, out=ranks)
        ends = rank_to_node[ranks]
        # coverage slots (every node appears at least once): s = 2 * edge + side
        s_lo, s_hi = 2 * e0, 2 * e1
        first = -(-s_lo // stride) * stride
        slots = np.arange(first, min(s_hi, n * stride), stride, dtype=np.int64)
        if slots.size:
            ends[slots - s_lo] = rank_to_node[cover[slots // stride]]
        lo = _T0 + (span * e0) // m
        hi = _T0 + (span * e1) // m
        yield e0, e1, ends, np.sort(rng.integers(lo, max(hi, lo + 1), size=c, dtype=np.int64))


def write_synthetic_sx(
    path: Union[str, os.PathLike],
    num_nodes: int = SX_STACKOVERFLOW_NODES,
    num_edges: int = SX_STACKOVERFLOW_EDGES,
    seed: int = 0,
    chunk: int = 1_000_000,
    alpha: float = 0.8,
    compresslevel: int = 1,
) -> Path:
    """Write a synthetic ``sx-stackoverflow``-like gzip edge list; returns its path.

    Parameters
    ----------
    path:
        Output file (gzip).  Written to a temporary name in the same directory
        and renamed into place.
    num_nodes, num_edges:
        Exact number of distinct node ids and of data lines.  Needs
        ``2 * num_edges >= num_nodes >= 1``.
    seed:
        RNG seed (``np.random.default_rng``); same arguments, same file.
    chunk:
        Lines generated and formatted per step (bounds memory).
    alpha:
        Zipf exponent of the endpoint distribution over node ranks.
    compresslevel:
        gzip level (1 = fastest).

    Line format: ``src dst unix_seconds`` (decimal, single spaces, ``\\n``),
    after one first line ``# SYNTHETIC sx-stackoverflow-like edge list ...``.
    """
    path = Path(path)
    n, m = int(num_nodes), int(num_edges)
    chunks = _synthetic_chunks(n, m, seed, chunk, alpha)
    ids = next(chunks)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    header = (
        f"# SYNTHETIC sx-stackoverflow-like edge list (NOT real data): nodes={n} edges={m} "
        f"seed={seed} alpha={alpha} generator=gnnsparse.data.synthetic.write_synthetic_sx\n"
        "# src dst unix_seconds\n"
    ).encode()
    try:
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=compresslevel, mtime=0) as gz:
            gz.write(header)
            for _, _, ends, t in chunks:
                ends = ids[ends]  # compacted -> original ids
                gz.write(_format_lines(ends[0::2], ends[1::2], t))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # best-effort cleanup; the original error is raised
            os.unlink(tmp)
        raise
    return path


def synthetic_sx_arrays(
    num_nodes: int = SX_STACKOVERFLOW_NODES,
    num_edges: int = SX_STACKOVERFLOW_EDGES,
    seed: int = 0,
    chunk: int = 1_000_000,
    alpha: float = 0.8,
):
    """The edges :func:`write_synthetic_sx` writes, as arrays, without going through text.

    Same arguments and the same random stream, so the result equals what
    :func:`gnnsparse.data.ingest.load_edge_list` parses back from the file written
    with the same arguments: ``(src, dst, t, node_ids)`` with int32 compacted ids
    ``0..num_nodes-1`` (file order), int64 timestamps and the int64 sorted original ids.
    SYNTHETIC data (see the module docstring). Memory: ``16 * num_edges`` bytes for
    the result plus ``~60 * chunk`` transient.
    """
    n, m = int(num_nodes), int(num_edges)
    chunks = _synthetic_chunks(n, m, seed, chunk, alpha)
    ids = next(chunks)
    src = np.empty(m, dtype=np.int32)
    dst = np.empty(m, dtype=np.int32)
    t = np.empty(m, dtype=np.int64)
    for e0, e1, ends, tc in chunks:
        t[e0:e1] = tc
        src[e0:e1] = ends[0::2]
        dst[e0:e1] = ends[1::2]
    return src, dst, t, ids
