"""Data layer: readers for SNAP / Network Repository files, the dataset
registry and the task data objects training consumes.

Quick use::

    from gnnsparse.data import load_dataset, DEFAULT_DATASET
    data = load_dataset(DEFAULT_DATASET)      # LinkData
    print(data.describe())
    A = data.adjacency("gcn")                  # torch.sparse_csr_tensor

Data root: ``root=`` / ``--root``, else ``$GNNSPARSE_DATA``, else
``<repo>/../shared/data`` (see :func:`resolve_root`).
"""

from .errors import DataError
from .graph import NORMALIZATIONS, csr_adjacency
from .readers import (
    TemporalEdges,
    read_edges,
    read_network_repository_edges,
    read_snap_edges,
    read_snap_labels,
    read_table,
)
from .registry import (
    ALIASES,
    DEFAULT_DATASET,
    ENV_VAR,
    REGISTRY,
    DatasetSpec,
    dataset_files,
    get_spec,
    known_names,
    load_dataset,
    resolve_root,
)
from .splits import LinkData, NodeData, sample_negative_pairs, split_sizes, stratified_split

__all__ = [
    "DataError",
    "TemporalEdges",
    "read_table",
    "read_edges",
    "read_snap_edges",
    "read_network_repository_edges",
    "read_snap_labels",
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
    "LinkData",
    "NodeData",
    "split_sizes",
    "stratified_split",
    "sample_negative_pairs",
    "NORMALIZATIONS",
    "csr_adjacency",
]
