"""Tests of the data layer (gnnsparse.data) on the real files in ../shared/data.

The data is required: if it is missing these tests fail (they never skip).
"""

from __future__ import annotations

import gzip
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:  # plain `pytest` without an installed package
    sys.path.insert(0, str(_REPO))

from gnnsparse.data import (  # noqa: E402
    ALIASES,
    DEFAULT_DATASET,
    REGISTRY,
    DataError,
    LinkData,
    NodeData,
    known_names,
    load_dataset,
    read_edges,
    read_network_repository_edges,
    read_snap_edges,
    read_snap_labels,
    resolve_root,
    split_sizes,
)

# Facts from ../shared/data/README.md ("Facts counted from the files"):
# file -> (lines of data, distinct node ids, time-sorted as stored, self-loop lines,
#          distinct directed pairs)
README_FACTS = {
    "snap/email-Eu-core-temporal.txt.gz": (332_334, 986, False, 0, 24_929),
    "snap/CollegeMsg.txt.gz": (59_835, 1_899, True, 0, 20_296),
    "snap/sx-mathoverflow.txt.gz": (506_550, 24_818, False, 116_109, 239_978),
    "snap/email-Eu-core.txt.gz": (25_571, 1_005, None, 642, 25_571),
    "networkrepository/ia-enron-employees.edges": (50_572, 151, True, 3_484, 2_235),
    "networkrepository/soc-wiki-elec.edges": (107_071, 7_118, False, 58, 103_738),
}
LABELS_FILE = "snap/email-Eu-core-department-labels.txt.gz"  # 1,005 labels, ids 0..1004, 42 classes

LINK_DATASETS = ["email-eu-temporal", "collegemsg", "mathoverflow", "ia-enron-employees", "soc-wiki-elec"]

LOAD_TIMES: dict = {}


@pytest.fixture(scope="module")
def root() -> Path:
    # Raises DataError (a test failure, not a skip) when the data is missing.
    r = resolve_root()
    assert (r / "README.md").is_file(), f"no README.md in data root {r}"
    return r


_LINK_CACHE: dict = {}


def link(name: str, seed: int = 0) -> LinkData:
    key = (name, seed)
    if key not in _LINK_CACHE:
        t0 = time.perf_counter()
        _LINK_CACHE[key] = load_dataset(name, seed=seed)
        LOAD_TIMES[key] = time.perf_counter() - t0
    return _LINK_CACHE[key]


def codes_of(pairs: torch.Tensor, n: int) -> np.ndarray:
    p = pairs.numpy()
    return np.minimum(p[0], p[1]) * n + np.maximum(p[0], p[1])


# --------------------------------------------------------------------------
# readers against the README's counted facts
# --------------------------------------------------------------------------


@pytest.mark.parametrize("rel", sorted(README_FACTS))
def test_file_matches_readme_facts(root, rel):
    lines, nodes, sorted_, loops, pairs = README_FACTS[rel]
    readme = (root / "README.md").read_text()
    facts = readme[readme.index("## Facts counted"):]
    row = next(line for line in facts.splitlines() if line.startswith(f"| {rel} "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    expected_cells = [f"{lines:,}", f"{nodes:,}", {True: "yes", False: "no", None: "–"}[sorted_],
                      f"{loops:,}", f"{pairs:,}"]
    assert cells[1:] == expected_cells, "hard-coded facts drifted from README"

    t0 = time.perf_counter()
    e = read_edges(root / rel)
    elapsed = time.perf_counter() - t0
    assert e.num_lines == lines
    assert e.num_nodes == nodes
    assert e.self_loop_count() == loops
    assert e.distinct_directed_pairs() == pairs
    assert e.is_time_sorted() is sorted_
    assert e.src.dtype == np.int64 and e.dst.dtype == np.int64
    assert e.src.min() >= 0 and max(e.src.max(), e.dst.max()) == nodes - 1
    assert np.all(np.diff(e.node_ids) > 0)
    if "sx-mathoverflow" in rel:
        assert elapsed < 3.0, f"sx-mathoverflow took {elapsed:.2f}s to read"


def test_value_columns(root):
    wiki = read_network_repository_edges(root / "networkrepository/soc-wiki-elec.edges", value="auto")
    assert wiki.weight is None and wiki.sign is not None
    assert set(np.unique(wiki.sign).tolist()) == {-1, 1}
    assert wiki.t is not None
    enron = read_edges(root / "networkrepository/ia-enron-employees.edges")
    assert enron.sign is None and enron.weight is not None and enron.t is not None
    static = read_snap_edges(root / "snap/email-Eu-core.txt.gz")
    assert static.t is None and static.values is None
    # compacted ids keep the originals
    assert np.array_equal(static.node_ids, np.arange(1005))


def test_labels_file(root):
    ids, labels = read_snap_labels(root / LABELS_FILE)
    assert ids.size == 1005
    assert np.array_equal(np.sort(ids), np.arange(1005))
    assert np.unique(labels).size == 42


def test_mathoverflow_load_time():
    link("mathoverflow")
    assert LOAD_TIMES[("mathoverflow", 0)] < 3.0, LOAD_TIMES


# --------------------------------------------------------------------------
# link prediction data
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", LINK_DATASETS)
def test_link_split_policy(root, name):
    d = link(name)
    spec = REGISTRY[name]
    lines, nodes, _, loops, _ = README_FACTS[spec.file]
    n = d.num_nodes
    s = d.stats
    assert d.task == "link" and d.name == name and d.note == ""
    assert n == nodes and s["lines"] == lines and s["self_loops_dropped"] == loops
    assert s["n_train"] + s["n_val"] + s["n_test"] == s["unique_pairs"]
    assert (s["n_train"], s["n_val"], s["n_test"]) == split_sizes(s["unique_pairs"])
    assert s["n_val"] == s["n_test"] == (15 * s["unique_pairs"]) // 100
    assert d.train_pos.shape == (2, s["n_train"]) and d.val_pos.shape == (2, s["n_val"])
    assert d.test_pos.shape == (2, s["n_test"])
    for p in (d.train_pos, d.val_pos, d.test_pos, d.val_neg, d.test_neg):
        assert p.dtype == torch.long and bool((p[0] < p[1]).all())

    # unique pairs, disjoint splits; all non-self unordered pairs of the file are covered
    tr, va, te = (codes_of(p, n) for p in (d.train_pos, d.val_pos, d.test_pos))
    all_pos = np.concatenate((tr, va, te))
    assert np.unique(all_pos).size == all_pos.size
    e = d.edges
    keep = e.src != e.dst
    file_codes = np.unique(np.minimum(e.src, e.dst)[keep] * n + np.maximum(e.src, e.dst)[keep])
    assert np.array_equal(np.sort(all_pos), file_codes)

    # time order of first occurrences
    times = torch.cat((d.train_time, d.val_time, d.test_time))
    assert bool((times[1:] >= times[:-1]).all())
    assert d.train_time.max() <= d.val_time.min() <= d.val_time.max() <= d.test_time.min()
    # first occurrence time really is the earliest time of that pair
    if e.t is not None:
        codes = np.minimum(e.src, e.dst)[keep] * n + np.maximum(e.src, e.dst)[keep]
        tt = e.t[keep]
        order = np.lexsort((tt, codes))
        uc, first = np.unique(codes[order], return_index=True)
        earliest = dict(zip(uc.tolist(), tt[order][first].tolist()))
        sample = np.linspace(0, all_pos.size - 1, 50).astype(int)
        got = times.numpy()
        assert all(earliest[int(all_pos[i])] == got[i] for i in sample)

    # message passing graph: training pairs only, both directions
    ei = d.train_edge_index
    assert ei.shape == (2, 2 * s["n_train"]) and ei.dtype == torch.long
    assert bool((ei[0] != ei[1]).all())
    directed = ei[0].numpy() * n + ei[1].numpy()
    assert np.unique(directed).size == directed.size
    reverse = ei[1].numpy() * n + ei[0].numpy()
    assert np.array_equal(np.sort(directed), np.sort(reverse))
    assert np.array_equal(np.unique(codes_of(ei, n)), np.sort(tr))
    assert not np.isin(codes_of(ei, n), np.concatenate((va, te))).any()

    # evaluation negatives
    vn, tn = codes_of(d.val_neg, n), codes_of(d.test_neg, n)
    assert vn.size == va.size and tn.size == te.size
    neg = np.concatenate((vn, tn))
    assert np.unique(neg).size == neg.size
    assert not np.isin(neg, all_pos).any()
    assert bool((d.val_neg[0] != d.val_neg[1]).all()) and bool((d.test_neg[0] != d.test_neg[1]).all())
    assert int(torch.cat((d.val_neg, d.test_neg), 1).max()) < n

    # features and seen nodes
    x = d.node_features()
    assert x.shape == (n, 2) and x.dtype == torch.float32
    deg = torch.bincount(ei[0], minlength=n)
    assert torch.allclose(x[:, 0], torch.log1p(deg.float()))
    assert torch.equal(x[:, 1], (deg > 0).float())
    assert torch.equal(d.seen_mask, deg > 0)
    both = d.pairs_both_seen(d.test_pos)
    assert both.shape == (s["n_test"],) and both.dtype == torch.bool
    assert torch.equal(both, (deg[d.test_pos[0]] > 0) & (deg[d.test_pos[1]] > 0))
    assert bool(d.pairs_both_seen(d.train_pos).all())
    line = d.describe()
    assert "\n" not in line and name in line


def test_negatives_fixed_by_seed(root):
    for name in ("ia-enron-employees", "collegemsg"):
        a = link(name, 0)
        b = load_dataset(name)  # fresh load, default seed 0
        assert b is not a
        assert torch.equal(a.val_neg, b.val_neg) and torch.equal(a.test_neg, b.test_neg)
        assert torch.equal(a.train_pos, b.train_pos)
        c = link(name, 1)
        assert not torch.equal(a.val_neg, c.val_neg)
        assert not torch.equal(a.test_neg, c.test_neg)
        assert torch.equal(a.val_pos, c.val_pos)  # positives do not depend on the seed


def test_sample_train_negatives():
    d = link(DEFAULT_DATASET)
    n = d.num_nodes
    g = torch.Generator().manual_seed(3)
    neg = d.sample_train_negatives(20_000, g)
    assert neg.shape == (2, 20_000) and neg.dtype == torch.long
    assert bool((neg[0] < neg[1]).all()) and int(neg.max()) < n
    codes = codes_of(neg, n)
    assert not np.isin(codes, codes_of(d.train_pos, n)).any()
    assert not bool(d.is_train_positive(neg).any())
    # only training positives are excluded: val/test pairs may be drawn
    heldout = np.concatenate((codes_of(d.val_pos, n), codes_of(d.test_pos, n)))
    assert np.isin(codes, heldout).any()
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(d.sample_train_negatives(500, g1), d.sample_train_negatives(500, g2))
    assert d.sample_train_negatives(0, g).shape == (2, 0)
    big = link("mathoverflow")
    negb = big.sample_train_negatives(100_000, torch.Generator().manual_seed(0))
    assert not bool(big.is_train_positive(negb).any())


def _dense(adj: torch.Tensor) -> torch.Tensor:
    return adj.to_dense()


@pytest.mark.parametrize("dataset", ["link", "node"])
def test_adjacency_modes(dataset):
    d = link(DEFAULT_DATASET) if dataset == "link" else load_dataset("email-eu")
    ei = d.train_edge_index if dataset == "link" else d.edge_index
    n = d.num_nodes
    A = torch.zeros(n, n)
    A[ei[0], ei[1]] = 1.0
    assert torch.equal(A, A.T)
    deg = A.sum(1)
    s = d.adjacency("sum")
    assert s.layout == torch.sparse_csr and s.dtype == torch.float32 and s.shape == (n, n)
    assert torch.equal(_dense(s), A)
    assert d.adjacency("sum") is s  # cached
    m = _dense(d.adjacency("mean"))
    expect = A / deg.clamp(min=1).unsqueeze(1)
    assert torch.allclose(m, expect)
    rows = m.sum(1)
    assert torch.allclose(rows[deg > 0], torch.ones(int((deg > 0).sum())))
    assert bool((rows[deg == 0] == 0).all())
    mean_csr = d.adjacency("mean")
    crow = mean_csr.crow_indices()
    assert torch.equal(crow[1:] - crow[:-1], deg.long())  # isolated rows stay empty
    gcn = _dense(d.adjacency("gcn"))
    Ai = A + torch.eye(n)
    dinv = Ai.sum(1).pow(-0.5)
    assert torch.allclose(gcn, dinv[:, None] * Ai * dinv[None, :], atol=1e-6)
    x = torch.randn(n, 3)
    assert torch.allclose(d.adjacency("gcn") @ x, gcn @ x, atol=1e-5)
    with pytest.raises(ValueError):
        d.adjacency("max")


# --------------------------------------------------------------------------
# node classification data
# --------------------------------------------------------------------------


def test_node_data_split(root):
    d = load_dataset("email-eu")
    assert isinstance(d, NodeData) and d.task == "node" and d.note == ""
    n = d.num_nodes
    assert n == 1005 and d.num_classes == 42
    assert d.stats["self_loops_dropped"] == 642 and d.stats["lines"] == 25_571
    ei = d.edge_index
    assert bool((ei[0] != ei[1]).all())
    fwd = ei[0].numpy() * n + ei[1].numpy()
    assert np.array_equal(np.sort(fwd), np.sort(ei[1].numpy() * n + ei[0].numpy()))
    assert np.unique(fwd).size == fwd.size == 2 * d.stats["unique_edges"]
    y = d.y
    assert y.dtype == torch.long and y.shape == (n,) and int(y.min()) >= 0
    ids, labels = read_snap_labels(root / LABELS_FILE)
    assert torch.equal(y[torch.from_numpy(ids)], torch.from_numpy(labels))

    tr, va, te = d.train_mask, d.val_mask, d.test_mask
    assert not bool((tr & va).any() | (tr & te).any() | (va & te).any())
    assert bool((tr | va | te).all())
    assert int(tr.sum()) + int(va.sum()) + int(te.sum()) == n
    for c in range(d.num_classes):
        members = int((y == c).sum())
        nv, nt = int((va & (y == c)).sum()), int((te & (y == c)).sum())
        if members >= 3:
            assert nv == nt == max(1, round(0.15 * members)), (c, members, nv, nt)
            assert nv >= 1 and nt >= 1
        else:
            assert nv == nt == 0
    frac = float(tr.sum()) / n
    assert 0.6 < frac < 0.75

    x = d.node_features()
    assert x.shape == (n, 2) and x.dtype == torch.float32
    assert torch.allclose(x[:, 0], torch.log1p(torch.bincount(ei[0], minlength=n).float()))
    assert bool((x[:, 1] == 1).all())
    assert "\n" not in d.describe()

    same = load_dataset("email-eu", seed=0)
    assert torch.equal(same.val_mask, va) and torch.equal(same.test_mask, te)
    other = load_dataset("email-eu", seed=1)
    assert not torch.equal(other.val_mask, va)
    assert int(other.val_mask.sum()) == int(va.sum())


def test_email_eu_as_link_task():
    d = load_dataset("email-eu", task="link")
    assert isinstance(d, LinkData) and d.stats["has_time"] is False
    assert d.stats["self_loops_dropped"] == 642
    assert d.train_time.max() < d.val_time.min()  # file order
    with pytest.raises(DataError, match="labels"):
        load_dataset("collegemsg", task="node")


# --------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------


def test_registry_and_aliases(root):
    assert DEFAULT_DATASET == "email-eu-temporal"
    d = link(DEFAULT_DATASET)
    assert d.num_nodes == 986
    assert set(REGISTRY) == {"email-eu-temporal", "collegemsg", "mathoverflow",
                             "ia-enron-employees", "soc-wiki-elec", "email-eu"}
    for spec in REGISTRY.values():
        for f in spec.files:
            assert (root / f).is_file(), f
    assert {a: t for a, (t, _) in ALIASES.items()} == {
        "ia-email": "ia-enron-employees", "wiki-talk": "soc-wiki-elec",
        "stackoverflow": "mathoverflow", "brain": "email-eu"}
    a = load_dataset("IA-Email")
    assert "stand-in" in a.note and "ia-enron-employees" in a.note
    assert torch.equal(a.val_neg, link("ia-enron-employees").val_neg)
    b = load_dataset("brain")
    assert isinstance(b, NodeData) and "stand-in" in b.note
    assert "stand-in" in b.describe()


def test_load_by_path(root):
    p = root / "networkrepository/ia-enron-employees.edges"
    d = load_dataset(p)
    assert isinstance(d, LinkData) and d.name == "ia-enron-employees"
    assert torch.equal(d.val_neg, link("ia-enron-employees").val_neg)
    s = load_dataset(str(root / "snap/CollegeMsg.txt.gz"))
    assert s.name == "CollegeMsg" and s.num_nodes == 1899
    with pytest.raises(DataError, match="node"):
        load_dataset(p, task="node")


# --------------------------------------------------------------------------
# bad inputs and missing data
# --------------------------------------------------------------------------


def _write(path: Path, text: str, gz: bool = False) -> Path:
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_wrong_column_count(tmp_path, gz):
    p = _write(tmp_path / ("bad.txt.gz" if gz else "bad.txt"),
               "# header\n1 2 10\n2 3 11\n\n3 4\n4 5 12\n", gz)
    with pytest.raises(DataError) as ei:
        read_edges(p)
    msg = str(ei.value)
    assert str(p) in msg and "line 5" in msg and "\n" not in msg
    p2 = _write(tmp_path / "five.edges", "% c\n1 2 1 5 9\n")
    with pytest.raises(DataError, match="line 2"):
        read_edges(p2)


def test_non_integer_token(tmp_path):
    p = _write(tmp_path / "x.txt", "1 2 3\n4 5 6\n7 eight 9\n")
    with pytest.raises(DataError) as ei:
        load_dataset(p)
    assert str(p) in str(ei.value) and "line 3" in str(ei.value) and "eight" in str(ei.value)
    q = _write(tmp_path / "f.edges", "%\n1 2 0.5 7\n2 3 1 7.5\n")
    with pytest.raises(DataError, match=r"line 3"):
        read_edges(q)
    r = _write(tmp_path / "neg.txt", "1 2\n3 -4\n")
    with pytest.raises(DataError, match=r"neg.txt: line 2: negative"):
        read_edges(r)
    big = _write(tmp_path / "big.txt", "1 2\n3 123456789012345678901234567890\n")
    with pytest.raises(DataError, match="line 2"):
        read_edges(big)


def test_float_weight_allowed(tmp_path):
    p = _write(tmp_path / "w.edges", "% weighted\n1 2 0.5 10\n2 3 1.5 11\n")
    e = read_edges(p)
    assert e.weight.dtype == np.float64 and e.t.tolist() == [10, 11]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(tmp_path, text):
    p = _write(tmp_path / "empty.txt", text)
    with pytest.raises(DataError) as ei:
        read_edges(p)
    assert str(p) in str(ei.value) and "empty" in str(ei.value)


def test_unknown_name_lists_known():
    with pytest.raises(DataError) as ei:
        load_dataset("cora")
    msg = str(ei.value)
    for name in known_names():
        assert name in msg


def test_missing_root(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as ei:
        resolve_root(missing)
    assert str(missing) in str(ei.value) and "GNNSPARSE_DATA" in str(ei.value)
    assert "--root" in str(ei.value) and "\n" not in str(ei.value)
    monkeypatch.setenv("GNNSPARSE_DATA", str(missing))
    with pytest.raises(DataError, match="GNNSPARSE_DATA"):
        load_dataset("collegemsg")
    # explicit root wins over the environment
    assert resolve_root(tmp_path) == tmp_path.resolve()
    # an existing root without the file: full path and how to set the root
    with pytest.raises(DataError) as ei:
        load_dataset("collegemsg", root=tmp_path)
    msg = str(ei.value)
    assert str(tmp_path / "snap" / "CollegeMsg.txt.gz") in msg and "GNNSPARSE_DATA" in msg
    with pytest.raises(DataError, match="file not found"):
        load_dataset(tmp_path / "absent.edges")


def test_env_root(root, monkeypatch):
    monkeypatch.setenv("GNNSPARSE_DATA", str(root))
    assert resolve_root() == root
    monkeypatch.delenv("GNNSPARSE_DATA")
    assert resolve_root() == root


def test_tiny_graphs(tmp_path):
    few = _write(tmp_path / "few.txt", "0 1\n1 2\n2 3\n")
    with pytest.raises(DataError, match="at least 7"):
        load_dataset(few)
    # complete graph K5: 10 pairs, 1 val + 1 test negative needed, none exists
    k5 = "".join(f"{u} {v} {i}\n" for i, (u, v) in enumerate((u, v) for u in range(5) for v in range(u + 1, 5)))
    with pytest.raises(DataError, match="negative"):
        load_dataset(_write(tmp_path / "k5.txt", k5))
    # a sparse small graph works, negatives exhaust nothing
    ring = "".join(f"{i} {(i + 1) % 12} {i}\n" for i in range(12))
    d = load_dataset(_write(tmp_path / "ring.txt", ring))
    assert d.stats["unique_pairs"] == 12 and d.val_neg.shape == (2, 1)
    assert not np.isin(codes_of(d.val_neg, 12), codes_of(torch.cat((d.train_pos, d.val_pos, d.test_pos), 1), 12)).any()


def test_duplicate_and_directed_pairs_count_once(tmp_path):
    text = "5 9 30\n9 5 10\n5 9 20\n7 7 5\n1 2 40\n2 3 50\n3 4 60\n4 5 70\n5 6 80\n6 7 90\n"
    d = load_dataset(_write(tmp_path / "dup.txt", text))
    assert d.stats["self_loops_dropped"] == 1
    assert d.stats["unique_pairs"] == 7
    # (5,9) first occurs at t=10 (the reversed line), so it is the earliest pair
    first = d.train_pos[:, 0]
    assert d.node_ids[first].tolist() == [5, 9] and int(d.train_time[0]) == 10


# --------------------------------------------------------------------------
# property: readers round-trip random edge lists
# --------------------------------------------------------------------------

_edge_rows = st.lists(
    st.tuples(st.integers(0, 10**12), st.integers(0, 10**12), st.integers(-10**9, 10**12)),
    min_size=1, max_size=40,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_edge_rows, gz=st.booleans(), comments=st.booleans(), nr=st.booleans(), sep=st.sampled_from([" ", "\t", "  "]))
def test_roundtrip(rows, gz, comments, nr, sep):
    c = "%" if nr else "#"
    lines = []
    for i, (u, v, t) in enumerate(rows):
        if comments and i % 3 == 0:
            lines.append(f"{c} comment {i}")
        lines.append(sep.join(map(str, (u, v, 1, t) if nr else (u, v, t))))
    text = "\n".join(lines) + ("\n" if len(rows) % 2 else "")
    suffix = ".edges" if nr else ".txt"
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / ("g" + suffix + (".gz" if gz else ""))
        _write(p, text, gz)
        e = read_edges(p)
    src = np.array([r[0] for r in rows])
    dst = np.array([r[1] for r in rows])
    assert np.array_equal(e.node_ids[e.src], src)
    assert np.array_equal(e.node_ids[e.dst], dst)
    assert np.array_equal(e.t, np.array([r[2] for r in rows]))
    assert e.num_nodes == np.unique(np.concatenate((src, dst))).size
    line_of_row = [i + 1 for i, line in enumerate(lines) if not line.startswith(c)]
    assert e.line_numbers.tolist() == line_of_row


# --------------------------------------------------------------------------
# adversarial inputs: one clear DataError each, never another exception type
# --------------------------------------------------------------------------


def _one_line_error(exc_info, *needles) -> str:
    msg = str(exc_info.value)
    assert exc_info.type is DataError and "\n" not in msg, msg
    for needle in needles:
        assert str(needle) in msg, (needle, msg)
    return msg


def _fake_root(tmp_path: Path, edges: bytes, labels: bytes = None, rel: str = "snap/email-Eu-core.txt.gz") -> Path:
    """A data root with the registry's layout; bytes are written as given."""
    root = tmp_path / "root"
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(edges)
    if labels is not None:
        (root / LABELS_FILE).write_bytes(labels)
    return root


_GZ_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def test_corrupt_and_truncated_gzip(tmp_path):
    good = gzip.compress(("".join(f"{i} {i + 1} {i}\n" for i in range(2000))).encode())
    cases = {
        "invalid_block.txt.gz": _GZ_HEADER + b"\xff" * 64,    # zlib.error: invalid block type
        "truncated.txt.gz": good[: len(good) // 2],             # EOFError
        "header_only.txt.gz": _GZ_HEADER,
        "bad_crc.txt.gz": good[:-8] + b"\x00\x00\x00\x00" + good[-4:],
        "bad_method.txt.gz": b"\x1f\x8b\x07" + good[3:],        # unknown compression method
    }
    for fname, blob in cases.items():
        p = tmp_path / fname
        p.write_bytes(blob)
        with pytest.raises(DataError) as ei:
            read_edges(p)
        _one_line_error(ei, p, "not a valid gzip file", "corrupt or truncated gzip")
        with pytest.raises(DataError) as ei:
            load_dataset(p)
        _one_line_error(ei, p, "gzip")
    root = _fake_root(tmp_path, _GZ_HEADER + b"\xff" * 64, gzip.compress(b"0 1\n"))
    with pytest.raises(DataError) as ei:
        load_dataset("email-eu", root=root)
    _one_line_error(ei, root / "snap/email-Eu-core.txt.gz", "gzip")
    root = _fake_root(tmp_path, gzip.compress(b"0 1\n1 2\n"), good[:100])
    with pytest.raises(DataError) as ei:
        load_dataset("email-eu", root=root)
    _one_line_error(ei, root / LABELS_FILE, "gzip")


def _node_files(edges_text: str, labels_text: str):
    return gzip.compress(edges_text.encode()), gzip.compress(labels_text.encode())


def test_node_data_huge_labels_and_ids(tmp_path):
    big = 10**12
    # ring of 12 nodes with one huge id; labels are huge and sparse values
    ids = list(range(11)) + [big]
    edges = "".join(f"{ids[i]} {ids[(i + 1) % 12]}\n" for i in range(12)) + f"{big} {big}\n"
    label_of = {i: (1000000000000 if i % 2 else 7) for i in ids}
    label_of[3] = 5  # a class with a single member
    labels = "".join(f"{i} {label_of[i]}\n" for i in ids)
    root = _fake_root(tmp_path, *_node_files(edges, labels))
    d = load_dataset("email-eu", root=root)
    assert isinstance(d, NodeData)
    assert d.num_nodes == 12 and d.node_ids.tolist() == ids
    assert d.label_values.tolist() == [5, 7, 1000000000000] and d.num_classes == 3
    assert d.y.shape == (12,) and int(d.y.min()) >= 0 and int(d.y.max()) == 2
    assert torch.equal(torch.from_numpy(d.label_values)[d.y], torch.tensor([label_of[i] for i in ids]))
    assert d.stats["self_loops_dropped"] == 1 and d.stats["unique_edges"] == 12
    assert d.edge_index.shape == (2, 24) and int(d.edge_index.max()) == 11
    assert d.adjacency("gcn").shape == (12, 12)
    assert int(d.val_mask.sum()) == int(d.test_mask.sum()) == 2
    # a labelled node absent from the edges is an isolated node; a huge id costs nothing
    labels2 = labels + f"{2**62} 7\n"
    d2 = load_dataset("email-eu", root=_fake_root(tmp_path, *_node_files(edges, labels2)))
    assert d2.num_nodes == 13 and d2.node_ids[-1] == 2**62 and int(d2.degree[-1]) == 0
    assert int(d2.y[-1]) == 1  # label 7 is class 1


def test_email_eu_ids_and_labels_kept(root):
    d = load_dataset("email-eu")
    assert np.array_equal(d.node_ids, np.arange(1005)) and d.num_nodes == 1005
    assert np.array_equal(d.label_values, np.arange(42)) and d.num_classes == 42


def test_integer_token_syntax(tmp_path):
    p = _write(tmp_path / "us.txt", "1 2 3\n1_0 5 6\n")
    with pytest.raises(DataError) as ei:
        read_edges(p)
    _one_line_error(ei, p, "line 2", "'1_0'")
    p = _write(tmp_path / "us_t.txt", "1 2 3\n4 5 6\n7 8 1_000\n")
    with pytest.raises(DataError) as ei:
        load_dataset(p)
    _one_line_error(ei, p, "line 3", "'1_000'")
    p = _write(tmp_path / "us_w.edges", "% c\n1 2 0.5 1\n2 3 1_0.5 2\n")
    with pytest.raises(DataError) as ei:
        read_edges(p)
    _one_line_error(ei, p, "line 3", "not a number")
    # an underscore in a comment is fine
    assert read_edges(_write(tmp_path / "c.txt", "# my_graph\n1 2\n")).num_lines == 1
    for text, line in (("1 2 3\n9223372036854775808 1 4\n", 2),
                       ("1 2 3\n4 5 9223372036854775808\n", 2),
                       ("1 2 -9223372036854775809\n", 1),
                       ("1 2 3\n1 " + "9" * 5000 + " 3\n", 2)):
        p = _write(tmp_path / "range.txt", text)
        with pytest.raises(DataError) as ei:
            read_edges(p)
        msg = _one_line_error(ei, p, f"line {line}", "out of the int64 range")
        assert "not an integer" not in msg and len(msg) < 500
    e = read_edges(_write(tmp_path / "max.txt", f"1 2 {2**63 - 1}\n3 4 {-2**63}\n"))
    assert e.t.tolist() == [2**63 - 1, -2**63]
    p = _write(tmp_path / "neg.txt", "1 2\n-1 2\n")
    with pytest.raises(DataError) as ei:
        read_edges(p)
    _one_line_error(ei, p, "line 2", "negative")
    p = _write(tmp_path / "lab.txt", "0 1\n1 2_0\n")
    with pytest.raises(DataError) as ei:
        read_snap_labels(p)
    _one_line_error(ei, p, "line 2", "'2_0'")


def test_directory_or_special_file_as_dataset(tmp_path):
    d = tmp_path / "graph.txt"
    d.mkdir()
    for call in (lambda: load_dataset(d), lambda: load_dataset(str(d)), lambda: read_edges(d)):
        with pytest.raises(DataError) as ei:
            call()
        msg = _one_line_error(ei, "is a directory, not an edge file")
        assert "not found" not in msg
    root = tmp_path / "root"
    (root / "snap" / "CollegeMsg.txt.gz").mkdir(parents=True)
    with pytest.raises(DataError) as ei:
        load_dataset("collegemsg", root=root)
    _one_line_error(ei, root / "snap" / "CollegeMsg.txt.gz", "is a directory")
    if hasattr(os, "mkfifo"):  # a FIFO would block on open(): refused before
        fifo = tmp_path / "fifo.txt"
        os.mkfifo(fifo)
        with pytest.raises(DataError) as ei:
            load_dataset(fifo)
        _one_line_error(ei, fifo, "not a regular file")


def test_dense_graph_error_names_file(tmp_path):
    k5 = "".join(f"{u} {v}\n" for u in range(5) for v in range(u + 1, 5))
    p = _write(tmp_path / "k5.txt", k5)
    with pytest.raises(DataError) as ei:
        load_dataset(p)
    _one_line_error(ei, p, "negative sampling")


def test_binary_or_utf16_file(tmp_path):
    text = "0 1 5\n1 2 6\n2 3 7\n"
    for enc in ("utf-16", "utf-16-le", "utf-32"):
        p = tmp_path / f"g_{enc}.txt"
        p.write_bytes(text.encode(enc))
        with pytest.raises(DataError) as ei:
            read_edges(p)
        _one_line_error(ei, p, "line 1:", "not a UTF-8/ASCII text")
        pz = tmp_path / f"g_{enc}.txt.gz"
        pz.write_bytes(gzip.compress(text.encode(enc)))
        with pytest.raises(DataError) as ei:
            load_dataset(pz)
        _one_line_error(ei, pz, "line 1:", "UTF-8")
    p = tmp_path / "nul.txt"
    p.write_bytes(b"0 1\n1 2\n2\x003\n")
    with pytest.raises(DataError) as ei:
        read_edges(p)
    _one_line_error(ei, p, "line 3:", "NUL")
    p = tmp_path / "latin1.txt"
    p.write_bytes("# caf\xe9\n0 1\n1 2\xe9\n".encode("latin-1"))
    with pytest.raises(DataError) as ei:
        read_edges(p)
    _one_line_error(ei, p, "line 3:", "0xe9", "UTF-8")
    # non-ASCII comments (UTF-8, or undecodable Latin-1) are tolerated
    p = tmp_path / "comments.txt"
    p.write_bytes("# café\n0 1\n".encode() + "# caf\xe9\n1 2\n".encode("latin-1"))
    assert read_edges(p).num_lines == 2
    root = _fake_root(tmp_path, gzip.compress(b"0 1\n1 2\n"), gzip.compress("0 1\n1 2\n".encode("utf-16")))
    with pytest.raises(DataError) as ei:
        load_dataset("email-eu", root=root)
    _one_line_error(ei, root / LABELS_FILE, "line 1:", "UTF-8")


def test_node_task_needs_a_class_of_three(tmp_path):
    edges = "".join(f"{i} {(i + 1) % 8}\n" for i in range(8))
    labels = "".join(f"{i} {i // 2}\n" for i in range(8))  # 4 classes of 2
    root = _fake_root(tmp_path, *_node_files(edges, labels))
    with pytest.raises(DataError) as ei:
        load_dataset("email-eu", root=root)
    _one_line_error(ei, root / LABELS_FILE, "no class of", "has >= 3 members",
                    "validation/test would be empty")
    labels = "".join(f"{i} {0 if i < 3 else i}\n" for i in range(8))  # one class of 3 suffices
    d = load_dataset("email-eu", root=_fake_root(tmp_path, *_node_files(edges, labels)))
    assert int(d.val_mask.sum()) == int(d.test_mask.sum()) == 1 and int(d.train_mask.sum()) == 6
    with pytest.raises(DataError, match="validation/test would be empty"):
        NodeData(read_snap_edges(_write(tmp_path / "e.txt", edges)), np.arange(2), np.arange(2))


def test_link_task_needs_seven_pairs(tmp_path):
    for n_pairs in range(0, 7):
        text = "".join(f"{i} {i + 1} {i}\n" for i in range(n_pairs)) + "9 9 100\n"
        p = _write(tmp_path / f"p{n_pairs}.txt", text)
        with pytest.raises(DataError) as ei:
            load_dataset(p)
        _one_line_error(ei, p, "at least 7", "validation/test would be empty")
    d = load_dataset(_write(tmp_path / "p7.txt", "".join(f"{i} {i + 1} {i}\n" for i in range(7))))
    assert (d.stats["n_train"], d.stats["n_val"], d.stats["n_test"]) == (5, 1, 1)
    assert d.val_neg.shape == d.test_neg.shape == (2, 1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blob=st.binary(max_size=200), gz=st.sampled_from(["plain", "gzip", "cut"]),
       nr=st.booleans())
def test_arbitrary_bytes_only_raise_data_error(blob, gz, nr):
    if gz == "gzip":
        blob = gzip.compress(blob)
    elif gz == "cut":
        blob = gzip.compress(blob)[: max(2, len(blob) // 2)]
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / ("g.edges" if nr else "g.txt")
        p.write_bytes(blob)
        for call in (lambda: read_edges(p), lambda: load_dataset(p), lambda: read_snap_labels(p)):
            try:
                call()
            except DataError as exc:
                assert "\n" not in str(exc) and str(p) in str(exc), str(exc)
