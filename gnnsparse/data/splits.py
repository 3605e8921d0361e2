"""Task data objects consumed by training: :class:`LinkData` and :class:`NodeData`.

Both expose ``name``, ``task`` (``"link"`` or ``"node"``), ``num_nodes``,
``note`` (``""`` unless the data is e.g. an offline stand-in), ``stats`` and
``describe()`` (one line), an ``adjacency(normalize)`` method returning a
cached float32 ``torch.sparse_csr_tensor`` and ``node_features()``.
"""

from __future__ import annotations

import abc

from typing import Dict, Optional

import numpy as np
import torch

from .errors import DataError
from .graph import csr_adjacency, undirected_pairs
from .readers import TemporalEdges

__all__ = [
    "LinkData",
    "NodeData",
    "TRAIN_FRACTION",
    "VAL_FRACTION",
    "TEST_FRACTION",
    "split_sizes",
    "sample_negative_pairs",
    "stratified_split",
]

TRAIN_FRACTION = 0.70
VAL_FRACTION = 0.15
TEST_FRACTION = 0.15

#: Graphs with at most this many unordered node pairs sample negatives by
#: enumerating every candidate pair instead of rejection sampling.
_ENUMERATE_LIMIT = 2_000_000
_MAX_ROUNDS = 200


def split_sizes(n: int):
    """``(n_train, n_val, n_test)`` for ``n`` items: 70/15/15.

    ``n_val = n_test = floor(0.15 * n)`` (integer arithmetic ``15 * n // 100``)
    and training gets the rest, so rounding always favours training and the
    three sizes add up to ``n``.
    """
    n_val = (15 * int(n)) // 100
    n_test = n_val
    return int(n) - n_val - n_test, n_val, n_test


def _codes_to_pairs(codes: np.ndarray, n: int) -> torch.Tensor:
    codes = np.asarray(codes, dtype=np.int64)
    out = np.stack((codes // n, codes % n)) if codes.size else np.zeros((2, 0), np.int64)
    return torch.from_numpy(np.ascontiguousarray(out))


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique(a)`` by sorting (numpy >= 2.3 answers a plain ``np.unique`` with a hash table,
    minutes for tens of millions of int64 codes); no copy when ``a`` is already strictly increasing."""
    if a.size < 2 or bool(np.all(a[1:] > a[:-1])):
        return a
    a = np.sort(a)
    keep = np.empty(a.size, dtype=bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def _in_sorted(codes: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``np.isin(codes, ref)`` for a sorted ``ref`` by binary search: ``O(k log n)``, no copy of
    ``ref`` (``np.isin`` re-uniques ``ref`` on every call)."""
    if ref.size == 0:
        return np.zeros(codes.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(ref, codes), ref.size - 1)
    return ref[pos] == codes


def sample_negative_pairs(
    num_nodes: int, k: int, exclude_codes: np.ndarray, rng: np.random.Generator, *, source: str = ""
) -> np.ndarray:
    """Sample ``k`` distinct unordered non-self pairs, uniformly, not excluded.

    Pairs are codes ``u * num_nodes + v`` with ``u < v``; ``exclude_codes``
    must use the same encoding.  Small graphs (at most ~2M pairs) enumerate
    all candidates and draw without replacement; larger ones use vectorized
    rejection sampling (``u, v`` i.i.d. uniform, reject ``u == v``,
    canonicalize, reject excluded and repeated codes; only the rounds loop).
    Raises :class:`DataError` (prefixed with ``source``, e.g. the file) if
    fewer than ``k`` candidates exist.
    """
    where = f"{source}: " if source else ""
    n = int(num_nodes)
    k = int(k)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    exclude = _sorted_unique(np.asarray(exclude_codes, dtype=np.int64))
    total = n * (n - 1) // 2
    available = total - exclude.size
    if available < k:
        raise DataError(
            f"{where}graph too small/dense for negative sampling: need {k} non-edge pairs, "
            f"only {max(available, 0)} exist among {n} nodes"
        )
    if total <= _ENUMERATE_LIMIT:
        iu, iv = np.triu_indices(n, 1)
        cand = iu.astype(np.int64) * n + iv
        cand = cand[~np.isin(cand, exclude, assume_unique=True)]
        return cand[rng.choice(cand.size, size=k, replace=False)]
    accept = available / total
    got = np.zeros(0, dtype=np.int64)
    for _ in range(_MAX_ROUNDS):
        need = k - got.size
        batch = int(need * 1.25 / accept) + 64
        uv = rng.integers(0, n, size=(2, batch), dtype=np.int64)
        uv = uv[:, uv[0] != uv[1]]
        codes = np.minimum(uv[0], uv[1]) * n + np.maximum(uv[0], uv[1])
        codes = codes[~_in_sorted(codes, exclude)]
        merged = np.concatenate((got, codes))
        _, first = np.unique(merged, return_index=True)
        got = merged[np.sort(first)]
        if got.size >= k:
            return got[:k]
    raise DataError(f"{where}negative sampling did not converge after {_MAX_ROUNDS} rounds")


def _as_pairs_tensor(pairs) -> torch.Tensor:
    if isinstance(pairs, np.ndarray):
        pairs = torch.from_numpy(pairs)
    pairs = torch.as_tensor(pairs, dtype=torch.long)
    if pairs.dim() != 2 or pairs.shape[0] != 2:
        raise ValueError(f"pairs must have shape [2, k], got {tuple(pairs.shape)}")
    return pairs


class _GraphData(abc.ABC):
    """Shared bits: adjacency cache, describe()."""

    name: str
    task: str
    num_nodes: int
    note: str
    stats: dict

    def _one_line(self, text: str) -> str:
        """``text`` plus the note (if any), whitespace collapsed to one line."""
        if self.note:
            text += f"; {self.note}"
        return " ".join(text.split())

    @abc.abstractmethod
    def _message_edge_index(self) -> np.ndarray:
        """Message-passing edges ``[2, E]`` (both directions) that ``adjacency`` is built from."""

    def adjacency(self, normalize: str = "gcn") -> torch.Tensor:
        """Message-passing adjacency as a float32 ``torch.sparse_csr_tensor``.

        ``normalize``: ``"sum"`` (values 1.0), ``"mean"`` (``1/deg(row)``,
        isolated rows empty) or ``"gcn"`` (``D^-1/2 (A+I) D^-1/2`` with
        self-loops added).  Cached per mode; treat the result as read-only.
        """
        cache: Dict[str, torch.Tensor] = self.__dict__.setdefault("_adj_cache", {})
        if normalize not in cache:
            cache[normalize] = csr_adjacency(self._message_edge_index(), self.num_nodes, normalize)
        return cache[normalize]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class LinkData(_GraphData):
    """Temporal link prediction data built from an edge list.

    Policy
    ------
    * Self-loop lines are dropped (count in ``stats["self_loops_dropped"]``).
    * Weights and signs are ignored for structure: in a signed graph
      (``soc-wiki-elec``) a ``-1`` vote is an interaction just like a ``+1``,
      so both signs give an edge.
    * The graph is undirected: a pair is unordered, ``(u, v) == (v, u)``,
      stored canonically with ``u < v``.
    * Lines are stable-sorted by timestamp (``np.argsort(kind="stable")``;
      files without a time column keep file order) and each unordered pair
      counts once, at its first occurrence.
    * Pairs in first-occurrence order are split 70/15/15: the earliest
      ``n_train`` train, the next ``n_val`` validate, the last ``n_test`` test,
      with ``n_val = n_test = floor(0.15 * n_pairs)`` (see :func:`split_sizes`).
    * The message-passing graph is the training pairs only, in both
      directions (``train_edge_index`` ``[2, 2 * n_train]``: all ``(u, v)``
      then all ``(v, u)``); val/test pairs never enter it.
    * ``val_neg``/``test_neg`` have as many pairs as ``val_pos``/``test_pos``
      and are drawn uniformly (seeded by ``seed``) among unordered non-self
      pairs that are not a positive pair anywhere in the dataset (train, val
      or test); they are distinct and the two sets are disjoint.  They are
      fixed by the data object, hence identical for every training regime.
    * Training negatives come from :meth:`sample_train_negatives`, which only
      excludes *training* positives (no peeking at val/test).

    Attributes
    ----------
    name, task (``"link"``), num_nodes, note, seed, stats, edges (the
    :class:`TemporalEdges` read; None with ``keep_edges=False``, which saves
    their ``16-32`` bytes per line on a large graph), node_ids (original ids of nodes
    ``0..num_nodes-1``), train_pos / val_pos / test_pos / val_neg / test_neg
    (LongTensor ``[2, k]``, ``u < v``), train_time / val_time / test_time
    (LongTensor ``[k]``: each pair's first-occurrence timestamp, or its line
    position in the file when there is no time column), train_edge_index,
    seen_mask, train_degree.
    """

    task = "link"

    def __init__(self, edges: TemporalEdges, *, name: str = "", seed: int = 0, note: str = "",
                 keep_edges: bool = True):
        self.edges = edges if keep_edges else None
        self.name = name or edges.path.name
        self.note = note
        self.seed = int(seed)
        self.num_nodes = n = edges.num_nodes
        self.node_ids = edges.node_ids

        src, dst, t = edges.src, edges.dst, edges.t
        keep = src != dst
        self_loops = int(keep.size - np.count_nonzero(keep))
        key = t[keep] if t is not None else np.flatnonzero(keep)
        src, dst = src[keep], dst[keep]
        order = np.argsort(key, kind="stable")
        codes = undirected_pairs(src[order], dst[order], n)
        key = key[order]
        uniq, first = np.unique(codes, return_index=True)
        by_time = np.argsort(first, kind="stable")
        pair_codes = uniq[by_time]
        pair_time = key[first[by_time]].astype(np.int64)

        n_pairs = pair_codes.size
        n_train, n_val, n_test = split_sizes(n_pairs)
        if n_val == 0:
            raise DataError(
                f"{edges.path}: only {n_pairs} distinct non-self pairs; need at least 7 "
                "for a 70/15/15 split (validation/test would be empty)"
            )
        tr, va, te = np.split(pair_codes, [n_train, n_train + n_val])
        all_pos_codes = np.sort(pair_codes)  # only for the evaluation negatives below: not kept
        self._train_codes = np.sort(tr)
        self._train_codes_t = torch.from_numpy(self._train_codes)

        self.train_pos = _codes_to_pairs(tr, n)
        self.val_pos = _codes_to_pairs(va, n)
        self.test_pos = _codes_to_pairs(te, n)
        tt, vt, tet = np.split(pair_time, [n_train, n_train + n_val])
        self.train_time = torch.from_numpy(np.ascontiguousarray(tt))
        self.val_time = torch.from_numpy(np.ascontiguousarray(vt))
        self.test_time = torch.from_numpy(np.ascontiguousarray(tet))

        rng = np.random.default_rng(self.seed)
        neg = sample_negative_pairs(n, n_val + n_test, all_pos_codes, rng, source=str(edges.path))
        del all_pos_codes
        self.val_neg = _codes_to_pairs(neg[:n_val], n)
        self.test_neg = _codes_to_pairs(neg[n_val:], n)

        u, v = self.train_pos.numpy()
        deg = np.bincount(u, minlength=n) + np.bincount(v, minlength=n)
        del u, v
        self.train_degree = torch.from_numpy(deg.astype(np.int64))
        self.seen_mask = self.train_degree > 0

        self.stats = {
            "lines": edges.num_lines,
            "self_loops_dropped": self_loops,
            "unique_pairs": int(n_pairs),
            "n_train": int(n_train),
            "n_val": int(n_val),
            "n_test": int(n_test),
            "num_nodes": int(n),
            "seen_nodes": int(self.seen_mask.sum()),
            "has_time": t is not None,
        }

    # ------------------------------------------------------------------
    @property
    def train_edge_index(self) -> torch.Tensor:
        """LongTensor ``[2, 2 * n_train]``: all training ``(u, v)`` then all ``(v, u)``.

        Built on each access from ``train_pos`` (not stored: ``32 * n_train`` bytes, 1.2 GB
        for a stackoverflow-sized graph, that only the adjacency build needs).
        """
        u, v = self.train_pos
        return torch.stack((torch.cat((u, v)), torch.cat((v, u))))

    def _message_edge_index(self) -> np.ndarray:
        return self.train_edge_index.numpy()

    def node_features(self) -> torch.Tensor:
        """FloatTensor ``[num_nodes, 2]``: ``[log1p(train degree), seen]``.

        The degree counts distinct training neighbours in the undirected
        training graph; ``seen`` is 1.0 for nodes that appear in a training
        pair, else 0.0.  The files carry no node features; these two
        structural columns are all the data layer provides (models add a
        learned embedding on top).
        """
        deg = self.train_degree.to(torch.float32)
        return torch.stack((torch.log1p(deg), self.seen_mask.to(torch.float32)), dim=1)

    def pairs_both_seen(self, pairs) -> torch.Tensor:
        """BoolTensor ``[k]``: both endpoints of each pair appear in training."""
        p = _as_pairs_tensor(pairs)
        return self.seen_mask[p[0]] & self.seen_mask[p[1]]

    def is_train_positive(self, pairs) -> torch.Tensor:
        """BoolTensor ``[k]``: the unordered pair is a training positive."""
        p = _as_pairs_tensor(pairs)
        codes = torch.minimum(p[0], p[1]) * self.num_nodes + torch.maximum(p[0], p[1])
        return self._is_train_code(codes)

    def _is_train_code(self, codes: torch.Tensor) -> torch.Tensor:
        """``torch.isin(codes, train codes)`` by binary search in the sorted training codes:
        ``O(k log n_train)`` time and ``O(k)`` memory (``isin`` sorts both sides on every call)."""
        ref = self._train_codes_t
        if ref.numel() == 0:
            return torch.zeros(codes.shape, dtype=torch.bool)
        pos = torch.searchsorted(ref, codes).clamp_max_(ref.numel() - 1)
        return ref[pos] == codes

    def sample_train_negatives(self, num: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Fresh training negatives, LongTensor ``[2, num]`` with ``u < v``.

        Uniform over unordered non-self pairs that are not *training*
        positives (val/test pairs are not excluded: training must not peek at
        them).  Draws come from ``generator`` (vectorized rejection rounds);
        repeats across the ``num`` pairs are possible.
        """
        num = int(num)
        n = self.num_nodes
        if num <= 0:
            return torch.zeros((2, 0), dtype=torch.long)
        available = n * (n - 1) // 2 - self._train_codes.size
        if available <= 0:
            raise DataError(f"{self.name}: no non-training pair left to sample as a negative")
        accept = available / (n * (n - 1) // 2)
        parts = []
        have = 0
        for _ in range(_MAX_ROUNDS):
            batch = int((num - have) * 1.25 / accept) + 64
            uv = torch.randint(0, n, (2, batch), generator=generator, dtype=torch.long)
            uv = uv[:, uv[0] != uv[1]]
            lo = torch.minimum(uv[0], uv[1])
            hi = torch.maximum(uv[0], uv[1])
            ok = ~self._is_train_code(lo * n + hi)
            parts.append(torch.stack((lo[ok], hi[ok])))
            have += int(ok.sum())
            if have >= num:
                return torch.cat(parts, dim=1)[:, :num].contiguous()
        raise DataError(f"{self.name}: training negative sampling did not converge")

    def describe(self) -> str:
        s = self.stats
        text = (
            f"{self.name} [link]: {s['num_nodes']} nodes, {s['unique_pairs']} pairs "
            f"(train {s['n_train']} / val {s['n_val']} / test {s['n_test']}) from "
            f"{s['lines']} lines, {s['self_loops_dropped']} self-loops dropped"
        )
        return self._one_line(text)


def stratified_split(y: np.ndarray, seed: int = 0):
    """Per-class 70/15/15 split of labelled nodes (``y >= 0``).

    For each class (ascending label) with ``c >= 3`` members: shuffle its
    members with ``np.random.default_rng(seed)`` (one generator shared in
    class order), ``n_val = n_test = max(1, round(0.15 * c))`` (Python
    ``round``: ties to even), the rest train.  Classes with ``c < 3`` go to
    train entirely.  Returns three sorted int64 index arrays.
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for cls in np.unique(y[y >= 0]):
        members = np.flatnonzero(y == cls)
        c = members.size
        if c < 3:
            train.append(members)
            continue
        members = rng.permutation(members)
        n_val = max(1, round(0.15 * c))
        n_test = max(1, round(0.15 * c))
        val.append(members[:n_val])
        test.append(members[n_val:n_val + n_test])
        train.append(members[n_val + n_test:])
    cat = lambda xs: np.sort(np.concatenate(xs)) if xs else np.zeros(0, np.int64)  # noqa: E731
    return cat(train), cat(val), cat(test)


def _integer_array(values, what: str, source: str) -> np.ndarray:
    """``values`` as a 1-D int64 array; :class:`DataError` (naming ``source`` and the first bad
    position) for non-integer or non-finite numbers, instead of truncating ``0.5`` to ``0``."""
    arr = np.asarray(values).reshape(-1)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"{source}: {what} must be integers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr) | (arr != np.round(arr)) | (np.abs(arr) >= 2.0 ** 63)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{source}: {what} must be integers, but entry {i} is {float(arr[i])!r}")
    return arr.astype(np.int64, copy=False)


class NodeData(_GraphData):
    """Node classification on a static graph with node labels (email-Eu-core).

    Node ids are compacted over the edges and the labels together: node ``i``
    is original id ``node_ids[i]`` (sorted), ``num_nodes`` the number of
    distinct ids, so ids ``0..n-1`` that all occur (email-Eu-core: 0..1004)
    keep their value, and huge or sparse ids cost no memory.  Labels are
    compacted the same way: class ``c`` is original label ``label_values[c]``
    and ``num_classes`` the number of distinct labels.  Self-loops are
    dropped, the graph is made undirected and deduplicated (``edge_index``
    holds both directions).  Nodes without a label get ``y = -1`` and are in
    no mask.  The split is :func:`stratified_split` with ``seed``; a
    :class:`DataError` is raised if no class has the 3 members needed for a
    validation and a test node.

    Attributes
    ----------
    name, task (``"node"``), num_nodes, num_classes, note, seed, stats,
    node_ids, label_values (int64 numpy arrays), edge_index (LongTensor
    ``[2, 2 * E]``), y (LongTensor ``[num_nodes]``), train_mask / val_mask /
    test_mask (BoolTensor ``[num_nodes]``), degree.
    """

    task = "node"

    def __init__(
        self,
        edges: TemporalEdges,
        label_ids: np.ndarray,
        labels: np.ndarray,
        *,
        name: str = "",
        seed: int = 0,
        note: str = "",
        labels_path=None,
        features: Optional[np.ndarray] = None,
    ):
        self.edges = edges
        self.name = name or edges.path.name
        self.note = note
        self.seed = int(seed)
        labels_src = str(labels_path) if labels_path is not None else f"the labels of {self.name}"
        label_ids = _integer_array(label_ids, "node ids", labels_src)
        labels = _integer_array(labels, "labels", labels_src)
        if label_ids.shape != labels.shape:
            raise DataError(
                f"{labels_src}: {label_ids.size} node ids but {labels.size} labels"
            )

        m = edges.node_ids.shape[0]
        node_ids, inv = np.unique(np.concatenate((edges.node_ids, label_ids)), return_inverse=True)
        inv = inv.reshape(-1).astype(np.int64, copy=False)
        self.node_ids = node_ids.astype(np.int64, copy=False)
        self.num_nodes = n = int(node_ids.size)
        src = inv[:m][edges.src]
        dst = inv[:m][edges.dst]
        label_nodes = inv[m:]

        keep = src != dst
        self_loops = int(keep.size - np.count_nonzero(keep))
        codes = np.unique(undirected_pairs(src[keep], dst[keep], n))
        u, v = codes // n, codes % n
        self.edge_index = torch.from_numpy(np.stack((np.concatenate((u, v)), np.concatenate((v, u)))))
        deg = np.bincount(self.edge_index[0].numpy(), minlength=n)
        self.degree = torch.from_numpy(deg.astype(np.int64))

        label_values, y_lab = np.unique(labels, return_inverse=True)
        self.label_values = label_values.astype(np.int64, copy=False)
        y = np.full(n, -1, dtype=np.int64)
        y[label_nodes] = y_lab.reshape(-1)
        self.y = torch.from_numpy(y)
        classes = label_values
        self.num_classes = int(label_values.size)

        tr, va, te = stratified_split(y, self.seed)
        if va.size == 0 or te.size == 0:
            raise DataError(
                f"no class of {labels_src} has >= 3 members: validation/test would be empty"
            )
        self.train_mask = torch.zeros(n, dtype=torch.bool)
        self.val_mask = torch.zeros(n, dtype=torch.bool)
        self.test_mask = torch.zeros(n, dtype=torch.bool)
        self.train_mask[torch.from_numpy(tr)] = True
        self.val_mask[torch.from_numpy(va)] = True
        self.test_mask[torch.from_numpy(te)] = True

        self._features = None
        if features is not None:  # per original node id (label_ids order), as Brain.npz's attmats
            features = np.asarray(features, dtype=np.float32)
            if features.ndim != 2 or features.shape[0] != label_ids.size:
                raise DataError(f"{labels_src}: features must have shape [{label_ids.size}, F] (one row per "
                                f"labelled node), got {tuple(features.shape)}")
            full = np.zeros((n, features.shape[1]), dtype=np.float32)
            full[label_nodes] = features
            self._features = torch.from_numpy(full)

        self.stats = {
            "lines": edges.num_lines,
            "self_loops_dropped": self_loops,
            "unique_edges": int(codes.size),
            "num_nodes": int(n),
            "num_classes": self.num_classes,
            "classes_present": int(classes.size),
            "labelled": int(label_ids.size),
            "n_train": int(tr.size),
            "n_val": int(va.size),
            "n_test": int(te.size),
        }

    def _message_edge_index(self) -> np.ndarray:
        return self.edge_index.numpy()

    def node_features(self) -> torch.Tensor:
        """FloatTensor ``[num_nodes, F]``: the dataset's own node attributes when it has them
        (Brain: ``attmats`` flattened, ``F = 12 * 20``), else ``[log1p(degree), 1.0]`` (``F = 2``).

        Degree is the number of distinct neighbours in the undirected,
        self-loop-free graph; the constant column acts as a bias input.
        """
        if self._features is not None:
            return self._features
        deg = self.degree.to(torch.float32)
        return torch.stack((torch.log1p(deg), torch.ones_like(deg)), dim=1)

    def describe(self) -> str:
        s = self.stats
        text = (
            f"{self.name} [node]: {s['num_nodes']} nodes, {s['unique_edges']} undirected edges, "
            f"{s['num_classes']} classes (train {s['n_train']} / val {s['n_val']} / "
            f"test {s['n_test']}), {s['self_loops_dropped']} self-loops dropped"
        )
        return self._one_line(text)
