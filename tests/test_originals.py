"""The paper's datasets in their original formats: Network Repository zip, STAR Brain.npz, and the
registry preferring an original file under the data root over its offline stand-in."""

from __future__ import annotations

import gzip
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from gnnsparse.data import DataError, load_dataset
from gnnsparse.data.originals import ORIGINALS, find_original, read_brain_npz
from gnnsparse.data.readers import read_network_repository_edges

DATA = Path(os.environ.get("GNNSPARSE_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
ENRON = DATA / "networkrepository" / "ia-enron-employees.edges"


def _brain(path, T=3, N=40, F=5, C=4, seed=0, **override):
    g = np.random.default_rng(seed)
    arrays = dict(adjs=(g.random((T, N, N)) < 0.1).astype(np.float32),
                  attmats=g.standard_normal((N, T, F)).astype(np.float32),
                  labels=np.eye(C, dtype=np.float32)[np.arange(N) % C])
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return arrays


def test_network_repository_zip_reads_its_member(tmp_path):
    z = tmp_path / "ia-enron-email-dynamic.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(ENRON, "ia-enron-email-dynamic.edges")
    a, b = read_network_repository_edges(z), read_network_repository_edges(ENRON)
    assert (a.num_nodes, a.num_lines) == (151, 50_572)
    assert np.array_equal(a.src, b.src) and np.array_equal(a.t, b.t)
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a.edges", "1 2\n")
        zf.writestr("b.edges", "1 2\n")
    with pytest.raises(DataError, match="expected exactly one .edges/.txt member.*a.edges, b.edges"):
        read_network_repository_edges(two)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(z.read_bytes()[: 2000])
    with pytest.raises(DataError, match="not a valid zip file"):
        read_network_repository_edges(bad)


def test_brain_npz_reader(tmp_path):
    p = tmp_path / "Brain.npz"
    arrays = _brain(p)
    b = read_brain_npz(p)
    t, s, d = np.nonzero(arrays["adjs"])
    assert b.edges.num_lines == t.size and set(np.unique(b.edges.t)) <= {0, 1, 2}
    assert b.features.shape == (40, 15) and b.features.dtype == np.float32
    assert np.array_equal(b.labels, np.arange(40) % 4)


@pytest.mark.parametrize("override, message", [
    (dict(attmats=None, labels=None), "missing array\\(s\\) 'attmats', 'labels'"),
    (dict(adjs=np.zeros((3, 40, 39), np.float32)), "'adjs' must have shape \\[T, N, N\\]"),
    (dict(attmats=np.zeros((40, 2, 5), np.float32)), "'attmats' must have shape \\[N=40, T=3, F\\]"),
    (dict(labels=np.zeros((39, 4), np.float32)), "'labels' must have shape \\[N=40, C\\]"),
    (dict(labels=np.zeros((40, 4), np.float32)), r"labels must be one-hot \(0/1 with one 1 per row\), but row 0"),
    (dict(adjs=np.zeros((3, 40, 40), np.float32)), "adjs has no edges"),
])
def test_brain_npz_bad_input(tmp_path, override, message):
    p = tmp_path / "Brain.npz"
    _brain(p, **override)
    with pytest.raises(DataError, match=message):
        read_brain_npz(p)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not an npz")
    with pytest.raises(DataError, match="not a readable .npz"):
        read_brain_npz(junk)


def test_registry_prefers_originals_under_the_root(tmp_path):
    root = tmp_path / "data"
    (root / "star").mkdir(parents=True)
    (root / "snap").mkdir()
    assert find_original("brain", root) is None
    stand_in = load_dataset("stackoverflow", root=DATA)
    assert "stand-in" in stand_in.note
    _brain(root / "star" / "Brain.npz", T=2, N=60, F=3, C=3)
    node = load_dataset("brain", root=root)
    assert node.task == "node" and node.num_nodes == 60 and node.num_classes == 3
    assert tuple(node.node_features().shape) == (60, 6) and not node.note
    # SNAP original: a (small) file in sx-stackoverflow's format under the original's name
    with gzip.open(DATA / "snap" / "CollegeMsg.txt.gz") as src, \
            gzip.open(root / "snap" / ORIGINALS["stackoverflow"].file, "wb") as dst:
        shutil.copyfileobj(src, dst)
    link = load_dataset("stackoverflow", root=root)
    # streamed by the chunked parser (cached as .npy), per-line arrays not kept
    assert link.task == "link" and link.edges is None and not link.note
    assert link.num_nodes == 1_899 and "from 59835 lines" in link.describe()
    same = load_dataset("collegemsg", root=DATA)
    assert torch.equal(link.train_pos, same.train_pos) and torch.equal(link.test_neg, same.test_neg)
    with pytest.raises(DataError, match="task='node' needs node labels"):
        load_dataset("stackoverflow", root=root, task="node")


def test_link_evaluation_decodes_in_chunks(monkeypatch):
    """Chunked decoding of evaluation pairs gives the same metrics as one call."""
    import torch

    from gnnsparse import train

    data = load_dataset("collegemsg", root=DATA)
    cfg = train.TrainConfig(epochs=1, hidden=16)
    task = train.make_task(data, cfg)
    torch.manual_seed(0)
    model = task.build_model(cfg)
    whole = task.evaluate(model, "val")
    calls = []
    real = model.decode
    monkeypatch.setattr(model, "decode", lambda z, p: calls.append(p.shape[1]) or real(z, p))
    monkeypatch.setattr(train, "DECODE_CHUNK", 1000)
    chunked = task.evaluate(model, "val")
    assert len(calls) > 1 and max(calls) <= 1000 and sum(calls) == whole["pairs"]
    for k in ("auc", "ap", "acc"):
        assert abs(chunked[k] - whole[k]) < 1e-3  # float32 matmuls round differently per batch size


def test_adversarial_originals_inputs(tmp_path):
    p = tmp_path / "Brain.npz"
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 3)))
    os.replace(tmp_path / "x.npy", p)
    with pytest.raises(DataError, match="not an .npz archive"):
        read_brain_npz(p)
    _brain(p, attmats=np.full((40, 3, 5), "x"))
    with pytest.raises(DataError, match="'attmats' must be numeric"):
        read_brain_npz(p)
    adj = (np.random.default_rng(0).random((3, 40, 40)) < 0.1).astype(np.float32)
    adj[0, 0, 1] = np.nan
    _brain(p, adjs=adj)
    with pytest.raises(DataError, match="adjs holds NaN"):
        read_brain_npz(p)
    lab = np.eye(4, dtype=np.float32)[np.arange(40) % 4]
    lab[3] = [0, 0.5, 0.5, 0]
    _brain(p, labels=lab)
    with pytest.raises(DataError, match="labels must be one-hot .* row 3"):
        read_brain_npz(p)
    _brain(p, attmats=np.full((40, 3, 5), 1e300))
    with pytest.raises(DataError, match="attmats holds NaN or Inf"):
        read_brain_npz(p)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w"):
        pass
    with pytest.raises(DataError, match="expected exactly one .edges/.txt member"):
        read_network_repository_edges(empty)
