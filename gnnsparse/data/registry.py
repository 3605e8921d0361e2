"""Dataset registry, data-root resolution and :func:`load_dataset`.

Data files are never copied into the repository; they are read from a data
root holding ``snap/`` and ``networkrepository/`` (see
``../shared/data/README.md``).  Credit: SNAP (Leskovec & Krevl, "SNAP
Datasets", 2014) and Network Repository (Rossi & Ahmed, AAAI 2015).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from .errors import DataError
from .readers import (
    TemporalEdges,
    check_regular_file,
    read_edges,
    read_network_repository_edges,
    read_snap_edges,
    read_snap_labels,
)
from .originals import ORIGINALS, find_original, read_brain_npz
from .splits import LinkData, NodeData

__all__ = [
    "DatasetSpec",
    "REGISTRY",
    "ALIASES",
    "DEFAULT_DATASET",
    "ENV_VAR",
    "resolve_root",
    "known_names",
    "get_spec",
    "dataset_files",
    "load_dataset",
]

#: Environment variable naming the data root.
ENV_VAR = "GNNSPARSE_DATA"

#: The demo's default dataset: SNAP email-Eu-core-temporal (986 nodes, 332,334 temporal edges),
#: an email network like the paper's ia-email and small enough for a minutes-long comparison.
DEFAULT_DATASET = "email-eu-temporal"

_ROOT_HINT = f"pass --root DIR or set {ENV_VAR}=DIR (the folder holding snap/ and networkrepository/)"


@dataclass(frozen=True)
class DatasetSpec:
    """One registry entry.

    ``file`` is relative to the data root; ``reader`` is ``"snap"`` or
    ``"networkrepository"``; ``labels`` (node task only) is the label file;
    ``value`` says what a Network Repository third column holds.
    """

    name: str
    file: str
    reader: str
    task: str
    description: str
    labels: Optional[str] = None
    value: str = "weight"

    @property
    def files(self) -> Tuple[str, ...]:
        return (self.file,) if self.labels is None else (self.file, self.labels)


REGISTRY: Dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        DatasetSpec(
            "email-eu-temporal", "snap/email-Eu-core-temporal.txt.gz", "snap", "link",
            "SNAP email-Eu-core-temporal: e-mails in a European research institution "
            "(986 nodes, 332k timestamped edges)",
        ),
        DatasetSpec(
            "collegemsg", "snap/CollegeMsg.txt.gz", "snap", "link",
            "SNAP CollegeMsg: private messages on a UC Irvine social network "
            "(1,899 nodes, 59.8k timestamped edges)",
        ),
        DatasetSpec(
            "mathoverflow", "snap/sx-mathoverflow.txt.gz", "snap", "link",
            "SNAP sx-mathoverflow: answers/comments on MathOverflow "
            "(24.8k nodes, 507k timestamped edges)",
        ),
        DatasetSpec(
            "ia-enron-employees", "networkrepository/ia-enron-employees.edges",
            "networkrepository", "link",
            "Network Repository ia-enron-employees: Enron e-mails between employees "
            "(151 nodes, 50.6k timestamped edges)",
        ),
        DatasetSpec(
            "soc-wiki-elec", "networkrepository/soc-wiki-elec.edges",
            "networkrepository", "link",
            "Network Repository soc-wiki-elec: Wikipedia admin election votes, signed "
            "(7,118 nodes, 107k timestamped edges; both signs are edges)",
            value="sign",
        ),
        DatasetSpec(
            "email-eu", "snap/email-Eu-core.txt.gz", "snap", "node",
            "SNAP email-Eu-core (static) with department labels "
            "(1,005 nodes, 42 classes)",
            labels="snap/email-Eu-core-department-labels.txt.gz",
        ),
    )
}

#: Paper dataset names -> (registry name, what the paper used).
ALIASES: Dict[str, Tuple[str, str]] = {
    "ia-email": ("ia-enron-employees", "Network Repository ia-enron-email-dynamic"),
    "wiki-talk": ("soc-wiki-elec", "SNAP wiki-talk-temporal"),
    "stackoverflow": ("mathoverflow", "SNAP sx-stackoverflow"),
    "brain": ("email-eu", "STAR Brain.npz"),
}


def known_names() -> List[str]:
    """Registry names followed by the paper aliases."""
    return list(REGISTRY) + list(ALIASES)


def _repo_root() -> Path:
    # gnnsparse/data/registry.py -> repo root is the parent of gnnsparse/
    return Path(__file__).resolve().parent.parent.parent


def resolve_root(root: Union[str, os.PathLike, None] = None) -> Path:
    """Find the data root.

    Order: explicit ``root``; else ``$GNNSPARSE_DATA``; else
    ``<repo root>/../shared/data`` and, if that does not exist,
    ``./../shared/data`` relative to the working directory.  Raises
    :class:`DataError` (one line: where it looked, how to set it) if the
    chosen directory does not exist.
    """
    if root is not None:
        p = Path(root).expanduser()
        if not p.is_dir():
            raise DataError(f"data root not found: {p.resolve()} (from --root/root=); {_ROOT_HINT}")
        return p.resolve()
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise DataError(f"data root not found: {p.resolve()} (from {ENV_VAR}); {_ROOT_HINT}")
        return p.resolve()
    candidates = [_repo_root().parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for p in candidates:
        if p.is_dir():
            return p.resolve()
    looked = " and ".join(str(c.resolve()) for c in candidates)
    raise DataError(f"data root not found: looked at {looked}; {_ROOT_HINT}")


def get_spec(name: str) -> Tuple[DatasetSpec, str]:
    """Look up a registry name or paper alias; returns ``(spec, note)``."""
    key = name.strip().lower()
    if key in REGISTRY:
        return REGISTRY[key], ""
    if key in ALIASES:
        target, original = ALIASES[key]
        note = (
            f"'{key}' is an offline stand-in: the paper's {original} is not available "
            f"offline, loaded '{target}' ({REGISTRY[target].file}) instead"
        )
        return REGISTRY[target], note
    raise DataError(f"unknown dataset {name!r}; known names: {', '.join(known_names())}")


def dataset_files(name: str, root=None) -> Tuple[Path, ...]:
    """Full paths of a registry dataset's files (existence checked)."""
    spec, _ = get_spec(name)
    base = resolve_root(root)
    paths = tuple(base / f for f in spec.files)
    for i, p in enumerate(paths):
        if _missing(p):
            raise DataError(f"dataset {spec.name!r}: file not found: {p} (data root {base}); {_ROOT_HINT}")
        check_regular_file(p, "an edge file" if i == 0 else "a label file")
    return paths


def _missing(p: Path) -> bool:
    """True when nothing is at ``p``; other stat problems are left to
    :func:`check_regular_file`, which names them."""
    try:
        os.stat(p)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except (OSError, ValueError):
        return False
    return False


def _looks_like_path(s: str) -> bool:
    return (
        os.sep in s
        or (os.altsep is not None and os.altsep in s)
        or s.lower().endswith((".gz", ".txt", ".edges", ".csv", ".tsv"))
        or os.path.exists(s)
    )


def load_dataset(
    name_or_path: Union[str, os.PathLike],
    root: Union[str, os.PathLike, None] = None,
    task: Optional[str] = None,
    seed: int = 0,
):
    """Load a registry dataset (or paper alias) or an edge-list file.

    A paper name (``ia-email``, ``wiki-talk``, ``stackoverflow``, ``brain``) loads the paper's
    original file when it is under the data root (:data:`gnnsparse.data.originals.ORIGINALS`:
    ``<root>/<folder>/<file>`` or ``<root>/<file>``), else its offline stand-in with a note.

    Returns a :class:`LinkData` or :class:`NodeData`.  ``task`` defaults to
    the dataset's own task; ``"link"`` on ``email-eu`` builds link prediction
    on its static edges (file order, no time).  A path is read as Network
    Repository if it ends in ``.edges`` and as SNAP otherwise, and only
    supports ``task="link"``.  ``seed`` fixes the evaluation negatives (link)
    or the stratified split (node).
    """
    if task not in (None, "link", "node"):
        raise DataError(f"task must be 'link' or 'node', got {task!r}")
    is_path = isinstance(name_or_path, os.PathLike)
    s = os.fspath(name_or_path)
    key = s.strip().lower()
    if not is_path and key in ORIGINALS:
        original = find_original(key, resolve_root(root))
        if original is not None:  # the paper's own file is under the data root: use it
            return _load_original(key, original, task, seed)
    if not is_path and (key in REGISTRY or key in ALIASES or not _looks_like_path(s)):
        spec, note = get_spec(s)
        paths = dataset_files(spec.name, root)
        task = task or spec.task
        display = key if key in ALIASES else spec.name
        if spec.reader == "networkrepository":
            edges = read_network_repository_edges(paths[0], value=spec.value)
        else:
            edges = read_snap_edges(paths[0])
        if task == "link":
            return LinkData(edges, name=display, seed=seed, note=note)
        if spec.labels is None:
            raise DataError(f"dataset {spec.name!r} has no node labels; task='node' needs email-eu")
        ids, labels = read_snap_labels(paths[1])
        return NodeData(edges, ids, labels, name=display, seed=seed, note=note, labels_path=paths[1])

    path = Path(s).expanduser()
    if _missing(path):
        raise DataError(f"file not found: {path.resolve()} (give a registry name: {', '.join(known_names())})")
    check_regular_file(path, "an edge file")
    if task == "node":
        raise DataError(f"{path}: task='node' needs node labels; only the registry dataset 'email-eu' has them")
    name = path.name
    for suffix in (".gz", ".txt", ".edges"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return LinkData(read_edges(path), name=name or path.name, seed=seed)


def _load_original(name: str, path: Path, task: Optional[str], seed: int):
    """Load paper dataset ``name`` from its original file ``path`` (see :mod:`.originals`)."""
    o = ORIGINALS[name]
    check_regular_file(path, "a data file")
    task = task or o.task
    if o.reader == "brain":
        brain = read_brain_npz(path)
        if task == "link":
            return LinkData(brain.edges, name=name, seed=seed)
        return NodeData(brain.edges, brain.label_ids, brain.labels, name=name, seed=seed, labels_path=path,
                        features=brain.features)
    if task == "node":
        raise DataError(f"{path}: task='node' needs node labels; {name} is a link-prediction dataset")
    if o.reader == "networkrepository":
        return LinkData(read_network_repository_edges(path), name=name, seed=seed)
    # SNAP originals are large (sx-stackoverflow: 63.5M lines): streamed by the chunked parser into
    # int32 ids and cached as .npy (GNNSPARSE_CACHE_DIR), and the per-line arrays are not kept
    from .ingest import load_edge_list

    g = load_edge_list(path)
    edges = TemporalEdges(src=g.src, dst=g.dst, t=g.t, weight=None, sign=None, node_ids=g.node_ids, path=path)
    return LinkData(edges, name=name, seed=seed, keep_edges=False)
