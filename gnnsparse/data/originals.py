"""The paper's four datasets in their original formats, and where to find them under a data root.

"Towards Sparsification of Graph Neural Networks" (Peng et al., ICCD 2022) uses

* ``ia-email``: Network Repository ``ia-enron-email-dynamic`` (a zip holding one ``.edges`` file,
  ``src dst weight time``), read by :func:`gnnsparse.data.readers.read_network_repository_edges`
  (zip archives are read as their member);
* ``wiki-talk``: SNAP ``wiki-talk-temporal.txt.gz`` (``src dst unix_seconds``);
* ``stackoverflow``: SNAP ``sx-stackoverflow.txt.gz`` (same format);
* ``brain``: STAR's ``Brain.npz`` (Xu et al., IJCAI 2019), read by :func:`read_brain_npz`.

:data:`ORIGINALS` says which file each one is and where under a data root it is looked for
(``<root>/<folder>/<file>`` or ``<root>/<file>``); :func:`find_original` returns the first that
exists. Without it the registry loads an offline stand-in (see ``../shared/data/README.md``).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from .errors import DataError
from .readers import TemporalEdges, check_regular_file

__all__ = ["Original", "ORIGINALS", "find_original", "BrainData", "read_brain_npz"]


@dataclass(frozen=True)
class Original:
    """One of the paper's datasets in its original form.

    ``file`` is the original file name, ``folder`` the data-root sub-folder it is looked for in
    first, ``reader`` ``"networkrepository"``, ``"snap"`` or ``"brain"``, ``task`` ``"link"`` or
    ``"node"``.
    """

    name: str
    file: str
    folder: str
    reader: str
    task: str
    source: str


ORIGINALS: Dict[str, Original] = {
    o.name: o
    for o in (
        Original("ia-email", "ia-enron-email-dynamic.zip", "networkrepository", "networkrepository", "link",
                 "Network Repository ia-enron-email-dynamic (~87K nodes, 1.15M temporal edges)"),
        Original("wiki-talk", "wiki-talk-temporal.txt.gz", "snap", "snap", "link",
                 "SNAP wiki-talk-temporal (1.14M nodes, 7.8M temporal edges)"),
        Original("stackoverflow", "sx-stackoverflow.txt.gz", "snap", "snap", "link",
                 "SNAP sx-stackoverflow (2.6M nodes, 63.5M temporal edges)"),
        Original("brain", "Brain.npz", "star", "brain", "node",
                 "STAR Brain.npz (5,000 nodes, 12 snapshots, 10 classes)"),
    )
}


def find_original(name: str, root: Path) -> Optional[Path]:
    """Path of the original file of paper dataset ``name`` under ``root``, or None if absent."""
    o = ORIGINALS[name]
    for p in (root / o.folder / o.file, root / o.file):
        if p.exists():
            return p
    return None


@dataclass
class BrainData:
    """STAR's Brain dataset as arrays.

    ``edges``: the union of the snapshots as a temporal edge list (``t`` = snapshot index
    ``0..T-1``, node ids ``0..N-1`` kept as they are); ``label_ids`` int64 ``[N]`` (``0..N-1``),
    ``labels`` int64 ``[N]`` (the one-hot rows' argmax); ``features`` float32 ``[N, T*F]``
    (``attmats`` flattened per node).
    """

    edges: TemporalEdges
    label_ids: np.ndarray
    labels: np.ndarray
    features: np.ndarray


def _shape_error(path: Path, key: str, want: str, got) -> DataError:
    return DataError(f"{path}: array {key!r} must have shape {want}, got {tuple(got)}")


def read_brain_npz(path) -> BrainData:
    """Read STAR's ``Brain.npz``: ``adjs`` [T, N, N] per-snapshot adjacency (nonzero = edge),
    ``attmats`` [N, T, F] node attributes, ``labels`` [N, C] one-hot.

    Returns:
        :class:`BrainData`.

    Raises:
        DataError: not a readable ``.npz``, a missing key (all missing ones named), shapes that
            do not fit each other, labels that are not one-hot (row named), non-finite
            attributes.
    """
    path = Path(path)
    check_regular_file(path, "an .npz file")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] != b"PK" and head != b"\x93NUM":  # np.load would try a pickle and talk about allow_pickle
        raise DataError(f"{path}: not a readable .npz file (no zip signature at the start; first bytes {head!r}); "
                        f"expected a zip of arrays adjs, attmats, labels")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: not an .npz archive (a single array); expected arrays adjs, attmats, labels")
        with z:
            missing = [k for k in ("adjs", "attmats", "labels") if k not in z.files]
            if missing:
                raise DataError(f"{path}: missing array(s) {', '.join(repr(k) for k in missing)} "
                                f"(found: {', '.join(z.files) or 'none'}); expected adjs [T, N, N], "
                                f"attmats [N, T, F], labels [N, C]")
            adjs, att, lab = z["adjs"], z["attmats"], z["labels"]
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if adjs.ndim != 3 or adjs.shape[1] != adjs.shape[2]:
        raise _shape_error(path, "adjs", "[T, N, N]", adjs.shape)
    T, N = adjs.shape[0], adjs.shape[1]
    if att.ndim != 3 or att.shape[0] != N or att.shape[1] != T:
        raise _shape_error(path, "attmats", f"[N={N}, T={T}, F]", att.shape)
    if lab.ndim != 2 or lab.shape[0] != N:
        raise _shape_error(path, "labels", f"[N={N}, C]", lab.shape)
    if N == 0:
        raise DataError(f"{path}: no nodes (adjs has shape {tuple(adjs.shape)})")
    for key, arr in (("adjs", adjs), ("attmats", att), ("labels", lab)):
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise DataError(f"{path}: array {key!r} must be numeric, got dtype {arr.dtype}")
    if not np.isfinite(adjs).all():
        raise DataError(f"{path}: adjs holds NaN or Inf")
    zero_one = (lab == 0) | (lab == 1)
    row_sums = (lab == 1).sum(axis=1)
    bad = np.flatnonzero(~zero_one.all(axis=1) | (row_sums != 1))
    if bad.size:
        raise DataError(f"{path}: labels must be one-hot (0/1 with one 1 per row), but row {int(bad[0])} is "
                        f"{lab[bad[0]].tolist()[:12]}")
    with np.errstate(over="ignore"):  # values beyond float32 become inf and are refused just below
        att = att.astype(np.float32)
    if not np.isfinite(att).all():
        raise DataError(f"{path}: attmats holds NaN or Inf (in float32)")
    t_idx, src, dst = np.nonzero(adjs)
    if src.size == 0:
        raise DataError(f"{path}: adjs has no edges")
    order = np.lexsort((dst, src, t_idx))  # by snapshot, then node ids
    edges = TemporalEdges(src=src[order].astype(np.int64), dst=dst[order].astype(np.int64),
                          t=t_idx[order].astype(np.int64), weight=None, sign=None,
                          node_ids=np.arange(N, dtype=np.int64), path=path)
    return BrainData(edges=edges, label_ids=np.arange(N, dtype=np.int64),
                     labels=lab.argmax(axis=1).astype(np.int64),
                     features=att.reshape(N, -1))


def original_names() -> Tuple[str, ...]:
    """The paper's dataset names."""
    return tuple(ORIGINALS)
