"""The bad-input table (issue 7): every row is one bad input at one public entry point, with the
exact error it must give (exception type + a regex of the message naming the problem: the
argument, its shape/dtype/device/index for tensors; the file and line for data), or, for inputs
with a documented handling (duplicate columns, NaN/Inf with the check off, duplicate edges,
self-loops, unlabelled nodes), a check of that handling.

Levels: ``op`` = the raw C++ ops ``torch.ops.gnnsparse.*`` (TORCH_CHECK messages); ``api`` = the
Python API (``gnnsparse.ops``, ``gnnsparse.formats``, ``SparseLinear``, ``sparsify``, the
training entry points); ``data`` = the data loaders (``gnnsparse.data``: readers, the streaming
ingest with its C++ and numpy parsers, labels, ``.npz``); ``cli`` = ``gnnsparse compare`` (exit
status 2 and one ``gnnsparse: error: ...`` line, no traceback).

``docs/bad_input.md`` is generated from :data:`ROWS` (``python tests/test_bad_input.py
--write-doc``) and a test checks that it is current, so the table and the documentation cannot
drift apart.

Not covered on a CPU-only machine: CUDA tensors (the device rows use the ``meta`` device, which
goes through the same device checks; the CUDA kernels' own messages are tested in
test_backends.py when a GPU is present).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import torch
from torch import nn

from gnnsparse import formats, ops, reference
from gnnsparse.data import ingest
from gnnsparse.data.errors import DataError
from gnnsparse.data.ingest import load_edge_list
from gnnsparse.data.originals import read_brain_npz
from gnnsparse.data.readers import read_snap_edges, read_snap_labels
from gnnsparse.data.registry import load_dataset
from gnnsparse.data.splits import NodeData
from gnnsparse.nn import SparseLinear, sparsify
from gnnsparse.train import TrainConfig, run_sparse_training, run_train_and_prune

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_input.md"


@dataclass(frozen=True)
class Row:
    """One bad input. ``run(tmp)`` performs the call (``tmp``: an empty per-row folder for files).
    ``exc`` is the exception it must raise, with ``match`` a regex searched in its message
    (``{tmp}`` stands for the escaped folder); ``exc=None`` means a documented handling, which
    ``run`` asserts itself, described by ``handling``."""

    id: str
    level: str
    entry: str
    bad: str
    run: Callable[[Path], object]
    exc: Optional[type] = None
    match: str = ""
    handling: str = ""


class CliExit(Exception):
    """``gnnsparse`` exited with a non-zero status; the message is ``exit <code>: <stderr>``."""


def _cli(*argv: str) -> int:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = _main()(list(argv))
        except SystemExit as e:  # argparse errors
            code = e.code
    if code != 0:
        raise CliExit(f"exit {code}: {err.getvalue().strip()}")
    return code


def _main():
    from gnnsparse.cli import main

    return main


# ------------------------------------------------------------------------------- fixtures of the rows
G = None  # torch.ops.gnnsparse, set when the extension is loaded


def _g():
    from gnnsparse import _ext

    _ext.load()
    return torch.ops.gnnsparse


def X(n=4, f=6, dtype=torch.float32):
    return torch.arange(n * f, dtype=dtype).reshape(n, f) / 7.0


CROW = torch.tensor([0, 2, 3, 5])  # W: 3 x 6, 5 stored entries
COL = torch.tensor([0, 3, 1, 2, 5])
VAL = torch.tensor([0.5, -1.0, 2.0, 0.25, 1.5])
BCROW = torch.tensor([0, 1, 2])  # W: 4 x 4 in 2 x 2 blocks, 2 stored blocks
BCOL = torch.tensor([1, 0])
BVAL = torch.arange(8, dtype=torch.float32).reshape(2, 2, 2) - 3.0


def t(*v, dtype=torch.int64):
    return torch.tensor(v, dtype=dtype)


def _write(tmp: Path, name: str, data) -> Path:
    p = tmp / name
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    return p


GOOD = "".join(f"{i} {i + 1} {100 + i}\n" for i in range(20))  # 20 valid lines, 21 nodes


def _ingest_both(path: Path):
    """The streaming ingest with the C++ parser and with the numpy parser, with the default chunk
    size and with 7-byte chunks that cut lines: both parsers must raise the same message for a
    chunk size (a truncated gzip is noticed after as many lines as the chunks let through, so
    that number may differ between chunk sizes; line errors name the same line for all). The
    default chunk size's message is raised again."""
    msgs = {}
    saved = ingest._CXX
    try:
        for cxx in (None, False):  # None: probe the extension (C++ parser); False: numpy parser
            ingest._CXX = cxx
            if cxx is None:
                assert ingest._cxx_parser() is not None, "the C++ edge-list parser did not load"
            for chunk in (7, 4 << 20):
                try:
                    load_edge_list(path, cache=False, chunk_bytes=chunk)
                except DataError as e:
                    msgs[cxx, chunk] = str(e)
                else:
                    msgs[cxx, chunk] = "<no error>"
    finally:
        ingest._CXX = saved
    for chunk in (7, 4 << 20):
        assert msgs[None, chunk] == msgs[False, chunk], msgs
    if "gzip" not in msgs[None, 4 << 20]:
        assert msgs[None, 7] == msgs[None, 4 << 20], msgs
    raise DataError(msgs[None, 4 << 20])


def _gather_reference(x, crow, col, values, bias, out_f):
    """y[:, o] = sum over the stored entries p of row o of values[p] * x[:, col[p]] (+ bias): only
    stored entries are multiplied (what the sparse kernels compute, NaN/Inf included)."""
    rows = formats.csr_row_indices(crow)
    y = torch.zeros(x.shape[0], out_f, dtype=x.dtype).index_add_(1, rows, x[:, col] * values)
    return y + bias if bias is not None else y


def _assert_same_nonfinite(y, ref):
    assert torch.equal(y.isnan(), ref.isnan()), "NaN positions differ"
    assert torch.equal(y.isinf(), ref.isinf()) and torch.equal(y[y.isinf()], ref[ref.isinf()]), "Inf differs"
    torch.testing.assert_close(y.nan_to_num(0.0, 0.0, 0.0), ref.nan_to_num(0.0, 0.0, 0.0))


def _nan_inputs(dtype=torch.float32):
    torch.manual_seed(0)
    out_f, in_f, n = 40, 24, 37
    crow, col, _ = formats.mask_to_csr(torch.rand(out_f, in_f) < 0.3)
    values = torch.randn(col.numel(), dtype=dtype)
    x = torch.randn(n, in_f, dtype=dtype)
    x[1, 3], x[2, 5], x[3, 7], x[36, 23] = math.nan, math.inf, -math.inf, math.inf
    values[2], values[9] = math.nan, math.inf
    bias = torch.randn(out_f, dtype=dtype)
    bias[7] = math.nan
    return x, crow, col, values, bias, out_f


def _op_nan_propagates(tmp):
    x, crow, col, values, bias, out_f = _nan_inputs()
    for isa in ("generic", "auto"):
        with _env("GNNSPARSE_CPU_ISA", isa):
            y = _g().csr_linear(x, crow, col, values, bias, out_f)
        _assert_same_nonfinite(y, _gather_reference(x, crow, col, values, bias, out_f))


def _op_bsr_nan_propagates(tmp):
    torch.manual_seed(1)
    b, out_f, in_f = 4, 16, 24
    crow, col, values = formats.dense_to_bsr(torch.randn(out_f, in_f), b,
                                             mask=torch.rand(out_f // b, in_f // b) < 0.4)
    x = torch.randn(9, in_f)
    x[0, 0], x[4, 13], x[8, 23] = math.nan, math.inf, -math.inf
    values[0, 1, 2] = math.nan
    y = _g().bsr_linear(x, crow, col, values, None, out_f)
    rows, cols = reference._bsr_element_index(crow, col, b)  # every element of a stored block
    ref = torch.zeros(9, out_f).index_add_(1, rows.reshape(-1), x[:, cols.reshape(-1)] * values.reshape(-1))
    _assert_same_nonfinite(y, ref)


def _api_torch_nan_like_dense(tmp):
    x, crow, col, values, bias, out_f = _nan_inputs(torch.float64)
    y = ops.csr_linear(x, crow, col, values, bias, out_f, backend="torch")
    w = formats.csr_to_dense(crow, col, values, (out_f, x.shape[1]))
    _assert_same_nonfinite(y, nn.functional.linear(x, w, bias))


def _nn_nan_by_executor(tmp):
    x, crow, col, values, bias, out_f = _nan_inputs()
    mask = formats.csr_to_mask(crow, col, (out_f, x.shape[1]))
    layer = SparseLinear(x.shape[1], out_f, mask=mask, executor="sparse")
    layer.set_csr(crow, col, values)
    with torch.no_grad():
        layer.bias.copy_(bias)
        sparse = layer(x)
        layer.executor = "dense"
        dense = layer(x)
    _assert_same_nonfinite(sparse, _gather_reference(x, crow, col, values, bias, out_f))
    _assert_same_nonfinite(dense, nn.functional.linear(x, layer.dense_weight(), bias))
    assert layer.last_executor == "dense"


@contextlib.contextmanager
def _env(name, value):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _checked(fn):
    """Run ``fn`` with the NaN/Inf check on."""
    def run(tmp):
        with ops.check_finite():
            return fn(tmp)
    return run


def _with_nan(tensor, index, value=math.nan):
    tensor = tensor.clone()
    tensor[index] = value
    return tensor


def _op_unsorted_columns(tmp):
    col = t(3, 0, 1, 2, 5)  # row 0 holds columns 3, 0
    y = _g().csr_linear(X(), CROW, col, VAL, None, 3)
    torch.testing.assert_close(y, X() @ formats.csr_to_dense(CROW, col, VAL, (3, 6)).T)


def _op_duplicate_columns(tmp):
    col = t(0, 0, 1, 2, 5)  # row 0 stores column 0 twice
    y = _g().csr_linear(X(), CROW, col, VAL, None, 3)
    w = torch.zeros(3, 6)
    w[0, 0] = VAL[0] + VAL[1]
    w[1, 1], w[2, 2], w[2, 5] = VAL[2], VAL[3], VAL[4]
    torch.testing.assert_close(y, X() @ w.T)
    torch.testing.assert_close(formats.csr_to_dense(CROW, col, VAL, (3, 6)), w)  # summed there too
    torch.testing.assert_close(ops.csr_linear(X(), CROW, col, VAL, None, 3, backend="torch"), X() @ w.T)


def _fmt_bsr_duplicate_blocks(tmp):
    crow, col = t(0, 2, 2), t(1, 1)  # block row 0 stores block column 1 twice
    dense = formats.bsr_to_dense(crow, col, BVAL, (4, 4))
    torch.testing.assert_close(dense[:2, 2:], BVAL[0] + BVAL[1])
    y = _g().bsr_linear(X(4, 4), crow, col, BVAL, None, 4)
    torch.testing.assert_close(y, X(4, 4) @ dense.T)


def _layer():
    torch.manual_seed(0)
    return SparseLinear(6, 3, sparsity=0.5, executor="sparse")


def _state_dict_bad_col(tmp):
    layer = _layer()
    sd = layer.state_dict()
    sd["col_indices"] = sd["col_indices"].clone()
    sd["col_indices"][0] = 9
    layer.load_state_dict(sd)


def _model():
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))


# ------------------------------------------------------------------------------- data fixtures
def _dup_self_loops(tmp):
    lines = "".join(f"{i} {i + 1} {i}\n" for i in range(20))
    p = _write(tmp, "dup.txt", lines + "3 4 50\n4 3 51\n3 4 52\n5 5 53\n7 7 54\n")
    data = load_dataset(str(p))
    s = data.stats
    assert (s["lines"], s["self_loops_dropped"], s["unique_pairs"]) == (25, 2, 20), s
    assert "2 self-loops dropped" in data.describe() and "20 pairs" in data.describe()
    assert bool((data.train_pos[0] < data.train_pos[1]).all())  # canonical u < v, no self pair
    g = load_edge_list(p, cache=False)  # the ingest keeps every line (policy is LinkData's)
    assert g.num_edges == 25


def _edges(tmp):
    return read_snap_edges(_write(tmp, "e.txt", GOOD))


def _labels_missing(tmp):
    e = _edges(tmp)
    d = NodeData(e, np.arange(15), np.arange(15) % 3)  # nodes 15..20 have no label
    assert d.num_nodes == 21 and int((d.y < 0).sum()) == 6
    masked = d.train_mask | d.val_mask | d.test_mask
    assert not bool(masked[d.y < 0].any())  # unlabelled nodes are in no split


def _labels_crlf(tmp):
    plain = read_snap_labels(_write(tmp, "plain.txt", "0 1\n1 2\n2 0\n"))
    crlf = read_snap_labels(_write(tmp, "crlf.txt", "0 1\r\n1 2 \t\r\n2 0  \r\n"))
    assert all(np.array_equal(a, b) for a, b in zip(plain, crlf)) and len(plain) == len(crlf) == 2
    assert plain[0].tolist() == [0, 1, 2] and plain[1].tolist() == [1, 2, 0]


def _ingest_cache_same_size_mtime(tmp):
    p = _write(tmp, "e.txt", "0 1 5\n1 2 6\n2 3 7\n")
    first = load_edge_list(p, cache_dir=tmp / "cache")
    assert first.node_ids.tolist() == [0, 1, 2, 3]
    st = os.stat(p)
    p.write_text("0 1 5\n1 2 6\n2 9 7\n")  # same size
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(p).st_size == st.st_size and os.stat(p).st_mtime_ns == st.st_mtime_ns
    again = load_edge_list(p, cache_dir=tmp / "cache")
    assert again.node_ids.tolist() == [0, 1, 2, 9]
    assert load_edge_list(p, cache_dir=tmp / "cache").node_ids.tolist() == [0, 1, 2, 9]  # cached now


def _labels_extra(tmp):
    e = _edges(tmp)
    d = NodeData(e, np.arange(30), np.arange(30) % 3)  # ids 21..29 are in no edge
    assert d.num_nodes == 30 and int(d.degree[21:].sum()) == 0 and int((d.y >= 0).sum()) == 30


def _not_gzip_named_gz(tmp):
    p = _write(tmp, "plain.txt.gz", GOOD)  # plain text under a .gz name: read by content
    e = read_snap_edges(p)
    assert e.num_lines == 20
    assert load_edge_list(p, cache=False).num_edges == 20


def _npz_missing_keys(tmp):
    p = tmp / "Brain.npz"
    np.savez(p, adjs=np.zeros((2, 3, 3)))
    read_brain_npz(p)


TRUNC_GZ = gzip.compress(GOOD.encode())[:-20]


# ------------------------------------------------------------------------------- the table
def _rows() -> list[Row]:
    R = Row
    rows = [
        # ---- raw ops: malformed CSR
        R("op-csr-crow-not-monotone", "op", "torch.ops.gnnsparse.csr_linear", "crow_indices [0, 3, 2, 5]",
          lambda tmp: _g().csr_linear(X(), t(0, 3, 2, 5), COL, VAL, None, 3), RuntimeError,
          r"gnnsparse::csr_linear: crow_indices must be non-decreasing, but crow_indices\[2\] = 2 < "
          r"crow_indices\[1\] = 3"),
        R("op-csr-crow-first-nonzero", "op", "torch.ops.gnnsparse.csr_linear", "crow_indices[0] = 1",
          lambda tmp: _g().csr_linear(X(), t(1, 2, 3, 5), COL, VAL, None, 3), RuntimeError,
          r"gnnsparse::csr_linear: expected crow_indices\[0\] == 0, got 1"),
        R("op-csr-crow-last-not-nnz", "op", "torch.ops.gnnsparse.csr_linear", "crow_indices[-1] = 4, nnz = 5",
          lambda tmp: _g().csr_linear(X(), t(0, 2, 3, 4), COL, VAL, None, 3), RuntimeError,
          r"expected crow_indices\[3\] \(last\) == nnz = len\(col_indices\) = 5, got 4"),
        R("op-csr-crow-wrong-length", "op", "torch.ops.gnnsparse.csr_linear", "crow_indices of length 3 for 3 rows",
          lambda tmp: _g().csr_linear(X(), t(0, 2, 5), COL, VAL, None, 3), RuntimeError,
          r"expected crow_indices to have shape \[out_features \+ 1\] = \[4\], got \[3\]"),
        R("op-csr-crow-2d", "op", "torch.ops.gnnsparse.csr_linear", "crow_indices of shape [1, 4]",
          lambda tmp: _g().csr_linear(X(), CROW[None], COL, VAL, None, 3), RuntimeError,
          r"expected crow_indices to have shape \[out_features \+ 1\] = \[4\], got \[1, 4\]"),
        R("op-csr-col-2d", "op", "torch.ops.gnnsparse.csr_linear", "col_indices of shape [1, 5]",
          lambda tmp: _g().csr_linear(X(), CROW, COL[None], VAL, None, 3), RuntimeError,
          r"expected col_indices to be 1-D \[nnz\], got shape \[1, 5\]"),
        R("op-csr-col-out-of-range", "op", "torch.ops.gnnsparse.csr_linear", "col_indices[4] = 6, in_features 6",
          lambda tmp: _g().csr_linear(X(), CROW, t(0, 3, 1, 2, 6), VAL, None, 3), RuntimeError,
          r"col_indices\[4\] = 6 is out of range \[0, 6\) \(in_features = x.size\(1\) = 6\)"),
        R("op-csr-col-negative", "op", "torch.ops.gnnsparse.csr_linear", "col_indices[4] = -1",
          lambda tmp: _g().csr_linear(X(), CROW, t(0, 3, 1, 2, -1), VAL, None, 3), RuntimeError,
          r"col_indices\[4\] = -1 is out of range \[0, 6\)"),
        R("op-csr-values-wrong-length", "op", "torch.ops.gnnsparse.csr_linear", "values [4] for nnz 5",
          lambda tmp: _g().csr_linear(X(), CROW, COL, VAL[:4], None, 3), RuntimeError,
          r"expected values to have shape \[nnz\] = \[5\] \(nnz = len\(col_indices\)\), got \[4\]"),
        R("op-csr-crow-int32", "op", "torch.ops.gnnsparse.csr_linear", "crow_indices int32, col_indices int64",
          lambda tmp: _g().csr_linear(X(), CROW.int(), COL, VAL, None, 3), RuntimeError,
          r"expected crow_indices to have dtype int64, got Int"),
        R("op-csr-col-int32", "op", "torch.ops.gnnsparse.csr_linear", "crow_indices int64, col_indices int32",
          lambda tmp: _g().csr_linear(X(), CROW, COL.int(), VAL, None, 3), RuntimeError,
          r"expected col_indices to have dtype int64, got Int"),
        R("op-csr-unsorted-columns", "op", "torch.ops.gnnsparse.csr_linear", "columns (3, 0) in row 0",
          _op_unsorted_columns, None, "",
          "accepted on the CPU ops (the kernels do not need sorted columns): result equals x @ W.T; "
          "the CUDA backend and gnnsparse.formats.validate_csr / SparseLinear refuse them"),
        R("op-csr-duplicate-columns", "op", "torch.ops.gnnsparse.csr_linear", "column 0 twice in row 0",
          _op_duplicate_columns, None, "",
          "summed (CPU ops, the torch backend and formats.csr_to_dense alike); "
          "formats.validate_csr / SparseLinear refuse them"),
        # ---- raw ops: x / values / bias of the wrong width, dtype, device
        R("op-x-width", "op", "torch.ops.gnnsparse.csr_linear", "x [4, 5] for W [3, 6] (column 5 stored)",
          lambda tmp: _g().csr_linear(X(4, 5), CROW, COL, VAL, None, 3), RuntimeError,
          r"col_indices\[4\] = 5 is out of range \[0, 5\) \(in_features = x.size\(1\) = 5\)"),
        R("op-x-1d", "op", "torch.ops.gnnsparse.csr_linear", "x of shape [6]",
          lambda tmp: _g().csr_linear(X()[0], CROW, COL, VAL, None, 3), RuntimeError,
          r"gnnsparse::csr_linear: expected x to be 2-D, got shape \[6\]"),
        R("op-x-int64", "op", "torch.ops.gnnsparse.csr_linear", "x int64",
          lambda tmp: _g().csr_linear(X().long(), CROW, COL, VAL.long(), None, 3), RuntimeError,
          r"expected x to have dtype float32 or float64, got Long"),
        R("op-x-float16", "op", "torch.ops.gnnsparse.csr_linear", "x float16 (CPU)",
          lambda tmp: _g().csr_linear(X().half(), CROW, COL, VAL.half(), None, 3), RuntimeError,
          r"expected x to have dtype float32 or float64, got Half"),
        R("op-values-dtype", "op", "torch.ops.gnnsparse.csr_linear", "x float32, values float64",
          lambda tmp: _g().csr_linear(X(), CROW, COL, VAL.double(), None, 3), RuntimeError,
          r"expected values to have dtype Float \(same as x\), got Double"),
        R("op-bias-shape", "op", "torch.ops.gnnsparse.csr_linear", "bias [4] for out_features 3",
          lambda tmp: _g().csr_linear(X(), CROW, COL, VAL, torch.zeros(4), 3), RuntimeError,
          r"expected bias to have shape \[out_features\] = \[3\], got \[4\]"),
        R("op-bias-dtype", "op", "torch.ops.gnnsparse.csr_linear", "bias float64, x float32",
          lambda tmp: _g().csr_linear(X(), CROW, COL, VAL, torch.zeros(3, dtype=torch.float64), 3), RuntimeError,
          r"expected bias to have dtype Float \(same as x\), got Double"),
        R("op-x-device", "op", "torch.ops.gnnsparse.csr_linear", "x on meta, W on cpu",
          lambda tmp: _g().csr_linear(X().to("meta"), CROW, COL, VAL, None, 3), RuntimeError,
          r"csr_linear: all tensors must be on one device, got x=meta, crow_indices=cpu, col_indices=cpu, "
          r"values=cpu"),
        R("op-values-device", "op", "torch.ops.gnnsparse.bsr_linear", "values on meta, x on cpu",
          lambda tmp: _g().bsr_linear(X(4, 4), BCROW, BCOL, BVAL.to("meta"), None, 4), RuntimeError,
          r"bsr_linear: all tensors must be on one device, got x=cpu, crow_indices=cpu, col_indices=cpu, "
          r"values=meta"),
        R("op-out-features-negative", "op", "torch.ops.gnnsparse.csr_linear", "out_features = -1",
          lambda tmp: _g().csr_linear(X(), CROW, COL, VAL, None, -1), RuntimeError,
          r"expected out_features >= 0, got -1"),
        # ---- raw ops: the backward ops, transpose, bias_grad
        R("op-bwi-crow-not-monotone", "op", "torch.ops.gnnsparse.csr_linear_backward_input",
          "crow_indices [0, 3, 2, 5]",
          lambda tmp: _g().csr_linear_backward_input(X(4, 3), t(0, 3, 2, 5), COL, VAL, 6), RuntimeError,
          r"gnnsparse::csr_linear_backward_input: crow_indices must be non-decreasing"),
        R("op-bwi-in-features-small", "op", "torch.ops.gnnsparse.csr_linear_backward_input",
          "in_features 5 with column 5 stored",
          lambda tmp: _g().csr_linear_backward_input(X(4, 3), CROW, COL, VAL, 5), RuntimeError,
          r"col_indices\[4\] = 5 is out of range \[0, 5\) \(in_features = 5\)"),
        R("op-bwi-grad-width", "op", "torch.ops.gnnsparse.csr_linear_backward_input", "grad_out [4, 2] for W [3, 6]",
          lambda tmp: _g().csr_linear_backward_input(X(4, 2), CROW, COL, VAL, 6), RuntimeError,
          r"expected crow_indices to have shape \[out_features = grad_out.size\(1\) \+ 1\] = \[3\], got \[4\]"),
        R("op-bwi-values-dtype", "op", "torch.ops.gnnsparse.csr_linear_backward_input", "values float64",
          lambda tmp: _g().csr_linear_backward_input(X(4, 3), CROW, COL, VAL.double(), 6), RuntimeError,
          r"expected values to have dtype Float \(same as grad_out\), got Double"),
        R("op-sddmm-rows", "op", "torch.ops.gnnsparse.csr_sddmm", "grad_out [3, 3], x [4, 6]",
          lambda tmp: _g().csr_sddmm(X(3, 3), X(), CROW, COL), RuntimeError,
          r"expected grad_out and x to have the same number of rows \(nodes\), got grad_out \[3, 3\] and x \[4, 6\]"),
        R("op-sddmm-dtype", "op", "torch.ops.gnnsparse.csr_sddmm", "grad_out float64, x float32",
          lambda tmp: _g().csr_sddmm(X(4, 3).double(), X(), CROW, COL), RuntimeError,
          r"expected grad_out to have dtype Float \(same as x\), got Double"),
        R("op-sddmm-col-range", "op", "torch.ops.gnnsparse.csr_sddmm", "x [4, 3] with column 5 stored",
          lambda tmp: _g().csr_sddmm(X(4, 3), X(4, 3), CROW, COL), RuntimeError,
          r"gnnsparse::csr_sddmm: col_indices\[1\] = 3 is out of range \[0, 3\)"),
        R("op-transpose-col-range", "op", "torch.ops.gnnsparse.csr_transpose", "col_indices[4] = 6, in_features 6",
          lambda tmp: _g().csr_transpose(CROW, t(0, 3, 1, 2, 6), 6), RuntimeError,
          r"gnnsparse::csr_transpose: col_indices\[4\] = 6 is out of range \[0, 6\) \(in_features = 6\)"),
        R("op-transpose-empty-crow", "op", "torch.ops.gnnsparse.csr_transpose", "crow_indices of length 0",
          lambda tmp: _g().csr_transpose(t(), t(), 6), RuntimeError,
          r"expected crow_indices of shape \[out_features \+ 1\], got \[0\]"),
        R("op-transpose-stale", "op", "torch.ops.gnnsparse.csr_linear", "cached transpose of another structure",
          lambda tmp: _g().csr_linear(X(), CROW, COL, VAL, None, 3, *_g().csr_transpose(CROW, t(0, 3, 1, 2, 4), 6)),
          RuntimeError, r"does not match W at entry \d+ \(stale cache after a structure change\?\)"),
        R("op-bias-grad-1d", "op", "torch.ops.gnnsparse.bias_grad", "grad_out of shape [4]",
          lambda tmp: _g().bias_grad(torch.ones(4)), RuntimeError,
          r"gnnsparse::bias_grad: expected grad_out to be 2-D, got shape \[4\]"),
        R("op-bias-grad-int", "op", "torch.ops.gnnsparse.bias_grad", "grad_out int64",
          lambda tmp: _g().bias_grad(torch.ones(4, 3, dtype=torch.long)), RuntimeError,
          r"expected grad_out to have dtype float32 or float64, got Long"),
        # ---- raw ops: BSR
        R("op-bsr-out-not-divisible", "op", "torch.ops.gnnsparse.bsr_linear", "out_features 5, blocksize 2",
          lambda tmp: _g().bsr_linear(X(4, 4), BCROW, BCOL, BVAL, None, 5), RuntimeError,
          r"gnnsparse::bsr_linear: out_features = 5 is not divisible by blocksize 2"),
        R("op-bsr-in-not-divisible", "op", "torch.ops.gnnsparse.bsr_linear", "x [4, 5], blocksize 2",
          lambda tmp: _g().bsr_linear(X(4, 5), BCROW, BCOL, BVAL, None, 4), RuntimeError,
          r"in_features = x.size\(1\) = 5 is not divisible by blocksize 2"),
        R("op-bsr-nonsquare-blocks", "op", "torch.ops.gnnsparse.bsr_linear", "values [2, 2, 1]",
          lambda tmp: _g().bsr_linear(X(4, 4), BCROW, BCOL, torch.ones(2, 2, 1), None, 4), RuntimeError,
          r"expected values to hold square blocks \[nnzb, b, b\], got shape \[2, 2, 1\]"),
        R("op-bsr-values-2d", "op", "torch.ops.gnnsparse.bsr_linear", "values [2, 4]",
          lambda tmp: _g().bsr_linear(X(4, 4), BCROW, BCOL, torch.ones(2, 4), None, 4), RuntimeError,
          r"expected values to be 3-D \[nnzb, blocksize, blocksize\], got shape \[2, 4\]"),
        R("op-bsr-blocksize-0", "op", "torch.ops.gnnsparse.bsr_linear", "values [2, 0, 0]",
          lambda tmp: _g().bsr_linear(X(4, 4), BCROW, BCOL, torch.ones(2, 0, 0), None, 4), RuntimeError,
          r"expected blocksize >= 1, got values of shape \[2, 0, 0\]"),
        R("op-bsr-col-out-of-range", "op", "torch.ops.gnnsparse.bsr_linear", "block column 2 of 2",
          lambda tmp: _g().bsr_linear(X(4, 4), BCROW, t(2, 0), BVAL, None, 4), RuntimeError,
          r"col_indices\[0\] = 2 is out of range \[0, 2\) \(in_features / blocksize = 2\)"),
        R("op-bsr-crow-not-monotone", "op", "torch.ops.gnnsparse.bsr_linear", "crow_indices [0, 2, 1]",
          lambda tmp: _g().bsr_linear(X(4, 4), t(0, 2, 1), BCOL, BVAL, None, 4), RuntimeError,
          r"crow_indices must be non-decreasing, but crow_indices\[2\] = 1 < crow_indices\[1\] = 2"),
        R("op-bsr-nnzb-mismatch", "op", "torch.ops.gnnsparse.bsr_linear", "values [3, 2, 2] for 2 blocks",
          lambda tmp: _g().bsr_linear(X(4, 4), BCROW, BCOL, torch.ones(3, 2, 2), None, 4), RuntimeError,
          r"expected values to have shape \[nnzb, blocksize, blocksize\] = \[2, 2, 2\] \(nnzb = len\(col_indices\)\), "
          r"got \[3, 2, 2\]"),
        R("op-bsr-mixed-index-dtypes", "op", "torch.ops.gnnsparse.bsr_linear", "crow_indices int32",
          lambda tmp: _g().bsr_linear(X(4, 4), BCROW.int(), BCOL, BVAL, None, 4), RuntimeError,
          r"gnnsparse::bsr_linear: expected crow_indices to have dtype int64, got Int"),
        R("op-bsr-bwi-not-divisible", "op", "torch.ops.gnnsparse.bsr_linear_backward_input", "in_features 5, blocksize 2",
          lambda tmp: _g().bsr_linear_backward_input(X(4, 4), BCROW, BCOL, BVAL, 5), RuntimeError,
          r"gnnsparse::bsr_linear_backward_input: in_features = 5 is not divisible by blocksize 2"),
        R("op-bsr-sddmm-blocksize-0", "op", "torch.ops.gnnsparse.bsr_sddmm", "blocksize 0",
          lambda tmp: _g().bsr_sddmm(X(4, 4), X(4, 4), BCROW, BCOL, 0), RuntimeError,
          r"gnnsparse::bsr_sddmm: expected blocksize >= 1, got 0"),
        R("op-bsr-sddmm-not-divisible", "op", "torch.ops.gnnsparse.bsr_sddmm", "blocksize 3 for a 4 x 4 weight",
          lambda tmp: _g().bsr_sddmm(X(4, 4), X(4, 4), BCROW, BCOL, 3), RuntimeError,
          r"out_features = grad_out.size\(1\) = 4 is not divisible by blocksize 3"),
        R("op-bsr-duplicate-blocks", "op", "torch.ops.gnnsparse.bsr_linear", "block column 1 twice in block row 0",
          _fmt_bsr_duplicate_blocks, None, "", "summed (kernel and formats.bsr_to_dense alike)"),
        # ---- NaN / Inf
        R("op-nan-inf-propagate", "op", "torch.ops.gnnsparse.csr_linear", "NaN/Inf in x, values and bias",
          _op_nan_propagates, None, "",
          "propagated as IEEE arithmetic over the stored entries only: y[n, o] is NaN/Inf exactly as "
          "sum_p values[p]·x[n, col[p]] + bias[o] (a NaN in x[n, j] does not reach outputs whose row "
          "does not store column j); generic and SIMD paths alike"),
        R("op-bsr-nan-inf-propagate", "op", "torch.ops.gnnsparse.bsr_linear", "NaN/Inf in x and values",
          _op_bsr_nan_propagates, None, "",
          "propagated over every element of the stored blocks (zeros inside a stored block are multiplied)"),
        R("api-torch-nan-like-dense", "api", "gnnsparse.ops.csr_linear(backend='torch')", "NaN/Inf in x, values, bias",
          _api_torch_nan_like_dense, None, "",
          "the reference multiplies the dense weight: same NaN/Inf as F.linear(x, W_dense, bias) "
          "(0·NaN = NaN spreads a NaN in x[n, j] to all of row n)"),
        R("nn-nan-by-executor", "api", "SparseLinear (executor 'sparse' / 'dense')", "NaN/Inf in x",
          _nn_nan_by_executor, None, "",
          "sparse executor as the kernels, dense executor as F.linear; with non-finite inputs the two "
          "differ, so turn the check on (next rows) to catch them"),
        R("api-check-finite-x", "api", "gnnsparse.ops.csr_linear (check on)", "NaN at x[1, 3]",
          _checked(lambda tmp: ops.csr_linear(_with_nan(X(), (1, 3)), CROW, COL, VAL, None, 3)), ValueError,
          r"^csr_linear: x holds a non-finite value nan at index \[1, 3\] \(shape \[4, 6\]\); the NaN/Inf check "
          r"is on"),
        R("api-check-finite-values", "api", "gnnsparse.ops.csr_linear (check on)", "Inf at values[2]",
          _checked(lambda tmp: ops.csr_linear(X(), CROW, COL, _with_nan(VAL, 2, math.inf), None, 3)), ValueError,
          r"^csr_linear: values holds a non-finite value inf at index \[2\] \(shape \[5\]\)"),
        R("api-check-finite-bias", "api", "gnnsparse.ops.bsr_linear (check on)", "-Inf at bias[1]",
          _checked(lambda tmp: ops.bsr_linear(X(4, 4), BCROW, BCOL, BVAL, _with_nan(torch.zeros(4), 1, -math.inf),
                                              4)), ValueError,
          r"^bsr_linear: bias holds a non-finite value -inf at index \[1\] \(shape \[4\]\)"),
        R("api-check-finite-bsr-values", "api", "gnnsparse.ops.bsr_linear (check on)", "NaN at values[1, 0, 1]",
          _checked(lambda tmp: ops.bsr_linear(X(4, 4), BCROW, BCOL, _with_nan(BVAL, (1, 0, 1)), None, 4)),
          ValueError, r"^bsr_linear: values holds a non-finite value nan at index \[1, 0, 1\]"),
        R("nn-check-finite-dense-executor", "api", "SparseLinear(executor='dense') (check on)", "NaN at x[0, 2]",
          _checked(lambda tmp: SparseLinear(6, 3, executor="dense")(_with_nan(X(), (0, 2)))), ValueError,
          r"^SparseLinear: x holds a non-finite value nan at index \[0, 2\]"),
        R("nn-check-finite-sparse-executor", "api", "SparseLinear(executor='sparse') (check on)", "NaN at x[3, 5]",
          _checked(lambda tmp: SparseLinear(6, 3, executor="sparse")(_with_nan(X(), (3, 5)))), ValueError,
          r"^csr_linear: x holds a non-finite value nan at index \[3, 5\]"),
        R("api-check-finite-env", "api", "gnnsparse.ops.csr_linear with GNNSPARSE_CHECK_FINITE=1", "NaN at x[2, 0]",
          lambda tmp: _run_env_check(), ValueError,
          r"^csr_linear: x holds a non-finite value nan at index \[2, 0\]"),
        R("api-check-finite-env-bad", "api", "gnnsparse.ops.csr_linear", "GNNSPARSE_CHECK_FINITE=maybe",
          lambda tmp: _run_env_check("maybe"), ValueError,
          r"environment variable GNNSPARSE_CHECK_FINITE='maybe' must be 1/true/on/yes or 0/false/off/no"),
        R("api-set-check-finite-type", "api", "gnnsparse.ops.set_check_finite", "'yes' (a string)",
          lambda tmp: ops.set_check_finite("yes"), TypeError,
          r"set_check_finite expects True, False or None, got str"),
        # ---- Python API: gnnsparse.ops
        R("api-x-not-tensor", "api", "gnnsparse.ops.csr_linear", "x a list",
          lambda tmp: ops.csr_linear(X().tolist(), CROW, COL, VAL, None, 3), TypeError,
          r"csr_linear: expected x to be a torch.Tensor, got list"),
        R("api-values-not-tensor", "api", "gnnsparse.ops.bsr_linear", "values a numpy array",
          lambda tmp: ops.bsr_linear(X(4, 4), BCROW, BCOL, BVAL.numpy(), None, 4), TypeError,
          r"bsr_linear: expected values to be a torch.Tensor, got ndarray"),
        R("api-mixed-devices-torch-backend", "api", "gnnsparse.ops.csr_linear(backend='torch')", "x on meta, W on cpu",
          lambda tmp: ops.csr_linear(X().to("meta"), CROW, COL, VAL, None, 3, backend="torch"), RuntimeError,
          r"csr_linear: all tensors must be on one device, got x=meta, crow_indices=cpu, col_indices=cpu, "
          r"values=cpu"),
        R("api-cpu-backend-on-meta", "api", "gnnsparse.ops.csr_linear(backend='cpu')", "all tensors on meta",
          lambda tmp: ops.csr_linear(X().to("meta"), CROW.to("meta"), COL.to("meta"), VAL.to("meta"), None, 3,
                                     backend="cpu"), RuntimeError,
          r"backend 'cpu' runs on CPU tensors, got tensors on meta"),
        R("api-cpu-backend-float16", "api", "gnnsparse.ops.csr_linear(backend='cpu')", "x float16",
          lambda tmp: ops.csr_linear(X().half(), CROW, COL, VAL.half(), None, 3, backend="cpu"), RuntimeError,
          r"backend 'cpu' supports float32 and float64, got torch.float16; use backend='torch'"),
        R("api-x-width-in-features", "api", "gnnsparse.ops.csr_linear(in_features=7)", "x [4, 6]",
          lambda tmp: ops.csr_linear(X(), CROW, COL, VAL, None, 3, in_features=7), RuntimeError,
          r"x has shape \(4, 6\) but W has shape \(3, 7\): the last dim of x must equal in_features = 7"),
        R("api-x-0d", "api", "gnnsparse.ops.csr_linear", "x a 0-D tensor",
          lambda tmp: ops.csr_linear(torch.tensor(1.0), CROW, COL, VAL, None, 3), RuntimeError,
          r"csr_linear: expected x of shape \[\*, in_features\], got a 0-D tensor"),
        R("api-bad-backend", "api", "gnnsparse.ops.csr_linear", "backend='gpu'",
          lambda tmp: ops.csr_linear(X(), CROW, COL, VAL, None, 3, backend="gpu"), ValueError,
          r"unknown backend 'gpu'; valid backends: 'cpu', 'cuda', 'triton', 'torch'"),
        R("api-torch-values-dtype", "api", "gnnsparse.ops.csr_linear(backend='torch')", "values float64, x float32",
          lambda tmp: ops.csr_linear(X(), CROW, COL, VAL.double(), None, 3, backend="torch"), RuntimeError,
          r"csr_linear: expected values to have dtype torch.float32 \(same as x\), got torch.float64"),
        R("api-torch-x-int", "api", "gnnsparse.ops.csr_linear(backend='torch')", "x int64",
          lambda tmp: ops.csr_linear(X().long(), CROW, COL, VAL, None, 3, backend="torch"), RuntimeError,
          r"csr_linear: expected x to have a floating dtype, got torch.int64"),
        R("api-torch-bias-shape", "api", "gnnsparse.ops.csr_linear(backend='torch')", "bias [4] for 3 outputs",
          lambda tmp: ops.csr_linear(X(), CROW, COL, VAL, torch.zeros(4), 3, backend="torch"), RuntimeError,
          r"csr_linear: expected bias to have shape \[out_features\] = \[3\], got \(4,\)"),
        R("api-torch-col-out-of-range", "api", "gnnsparse.ops.csr_linear(backend='torch')", "col_indices[4] = 6",
          lambda tmp: ops.csr_linear(X(), CROW, t(0, 3, 1, 2, 6), VAL, None, 3, backend="torch"), ValueError,
          r"csr_linear: col_indices\[4\]=6 outside \[0, 6\)"),
        R("api-torch-bsr-not-divisible", "api", "gnnsparse.ops.bsr_linear(backend='torch')", "x [4, 5], blocksize 2",
          lambda tmp: ops.bsr_linear(X(4, 5), BCROW, BCOL, BVAL, None, 4, backend="torch"), ValueError,
          r"bsr_linear: shape \(4, 5\) is not divisible by blocksize 2"),
        R("api-csr-transpose-col-range", "api", "gnnsparse.ops.csr_transpose", "col_indices[4] = 6",
          lambda tmp: ops.csr_transpose(CROW, t(0, 3, 1, 2, 6), 6), RuntimeError,
          r"col_indices\[4\] = 6 is out of range \[0, 6\)"),
        # ---- Python API: gnnsparse.formats
        R("fmt-unsorted-columns", "api", "gnnsparse.formats.validate_csr", "columns (3, 0) in row 0",
          lambda tmp: formats.validate_csr(CROW, t(3, 0, 1, 2, 5), VAL, (3, 6)), ValueError,
          r"weight: columns not sorted/unique within a row at entry 1"),
        R("fmt-duplicate-columns", "api", "gnnsparse.formats.validate_csr", "column 0 twice in row 0",
          lambda tmp: formats.validate_csr(CROW, t(0, 0, 1, 2, 5), VAL, (3, 6)), ValueError,
          r"weight: columns not sorted/unique within a row at entry 1"),
        R("fmt-mixed-index-dtypes", "api", "gnnsparse.formats.validate_csr", "crow int32, col int64",
          lambda tmp: formats.validate_csr(CROW.int(), COL, VAL, (3, 6)), ValueError,
          r"weight: crow_indices/col_indices must be int64, got torch.int32/torch.int64"),
        R("fmt-crow-out-of-bounds", "api", "gnnsparse.formats.validate_csr", "crow_indices[1] = 7 > nnz",
          lambda tmp: formats.validate_csr(t(0, 7, 3, 5), COL, VAL, (3, 6)), ValueError,
          r"weight: crow_indices\[1\]=7 outside \[0, nnz=5\]"),
        R("fmt-crow-decreasing", "api", "gnnsparse.formats.validate_csr", "crow_indices [0, 3, 2, 5]",
          lambda tmp: formats.validate_csr(t(0, 3, 2, 5), COL, VAL, (3, 6)), ValueError,
          r"weight: crow_indices decreases at row 1"),
        R("fmt-values-wrong-length", "api", "gnnsparse.formats.validate_csr", "values [4] for nnz 5",
          lambda tmp: formats.validate_csr(CROW, COL, VAL[:4], (3, 6)), ValueError,
          r"weight: values must have shape \[5\], got \(4,\)"),
        R("fmt-bsr-not-divisible", "api", "gnnsparse.formats.validate_bsr", "shape (4, 5), blocks 2 x 2",
          lambda tmp: formats.validate_bsr(BCROW, BCOL, BVAL, (4, 5)), ValueError,
          r"weight: shape \(4, 5\) is not divisible by blocksize 2"),
        R("fmt-bsr-blocksize-mismatch", "api", "gnnsparse.formats.validate_bsr", "blocksize=4, values 2 x 2 blocks",
          lambda tmp: formats.validate_bsr(BCROW, BCOL, BVAL, (4, 4), blocksize=4), ValueError,
          r"weight: blocksize 4 != values block size 2"),
        R("fmt-dense-to-bsr-not-divisible", "api", "gnnsparse.formats.dense_to_bsr", "[4, 6] with blocksize 4",
          lambda tmp: formats.dense_to_bsr(torch.ones(4, 6), 4), ValueError,
          r"shape \(4, 6\) is not divisible by blocksize 4"),
        R("fmt-dense-to-bsr-blocksize-0", "api", "gnnsparse.formats.dense_to_bsr", "blocksize 0",
          lambda tmp: formats.dense_to_bsr(torch.ones(4, 6), 0), ValueError,
          r"blocksize must be a positive int, got 0"),
        R("fmt-dense-to-bsr-blocksize-float", "api", "gnnsparse.formats.dense_to_bsr", "blocksize 2.0",
          lambda tmp: formats.dense_to_bsr(torch.ones(4, 6), 2.0), ValueError,
          r"blocksize must be a positive int, got 2.0"),
        R("fmt-mask-not-bool", "api", "gnnsparse.formats.mask_to_csr", "float mask",
          lambda tmp: formats.mask_to_csr(torch.ones(3, 3)), TypeError, r"mask must be torch.bool, got torch.float32"),
        R("fmt-density-nan", "api", "gnnsparse.formats.nnz_for_density", "density NaN",
          lambda tmp: formats.nnz_for_density(10, math.nan), ValueError, r"density must be in \[0, 1\], got nan"),
        # ---- Python API: SparseLinear
        R("nn-input-width", "api", "SparseLinear(6, 3)", "x [4, 5]",
          lambda tmp: _layer()(X(4, 5)), ValueError, r"SparseLinear expects input \[\*, 6\], got shape \(4, 5\)"),
        R("nn-input-dtype", "api", "SparseLinear(6, 3) (float32)", "x float64",
          lambda tmp: _layer()(X().double()), RuntimeError,
          r"SparseLinear: expected input of dtype torch.float32 \(the layer's dtype\), got torch.float64"),
        R("nn-input-int", "api", "SparseLinear(6, 3) (float32)", "x int64",
          lambda tmp: SparseLinear(6, 3, executor="dense")(X().long()), RuntimeError,
          r"SparseLinear: expected input of dtype torch.float32 \(the layer's dtype\), got torch.int64"),
        R("nn-input-device", "api", "SparseLinear(6, 3) (cpu)", "x on meta",
          lambda tmp: _layer()(X().to("meta")), RuntimeError,
          r"SparseLinear: all tensors must be on one device, got input on meta and the layer's values on cpu"),
        R("nn-input-not-tensor", "api", "SparseLinear(6, 3)", "x a list",
          lambda tmp: _layer()(X().tolist()), TypeError, r"SparseLinear expects a torch.Tensor input, got list"),
        R("nn-set-csr-unsorted", "api", "SparseLinear.set_csr", "columns (3, 0) in row 0",
          lambda tmp: _layer().set_csr(CROW, t(3, 0, 1, 2, 5), VAL), ValueError,
          r"weight: columns not sorted/unique within a row at entry 1"),
        R("nn-set-csr-col-range", "api", "SparseLinear.set_csr", "col_indices[4] = 6",
          lambda tmp: _layer().set_csr(CROW, t(0, 3, 1, 2, 6), VAL), ValueError,
          r"weight: col_indices\[4\]=6 outside \[0, 6\)"),
        R("nn-load-state-dict-bad-structure", "api", "SparseLinear.load_state_dict", "col_indices[0] = 9",
          _state_dict_bad_col, RuntimeError, r"Error\(s\) in loading state_dict for SparseLinear:\s+weight: "
          r"col_indices\[0\]=9 outside \[0, 6\)"),
        R("nn-mask-shape", "api", "SparseLinear(6, 3, mask=...)", "mask [3, 5]",
          lambda tmp: SparseLinear(6, 3, mask=torch.ones(3, 5, dtype=torch.bool)), ValueError,
          r"mask must have shape \[3, 6\] \(out_features, in_features\), got \(3, 5\)"),
        R("nn-bsr-blocksize-not-dividing", "api", "SparseLinear(6, 3, layout='bsr', blocksize=2)", "blocksize 2",
          lambda tmp: SparseLinear(6, 3, layout="bsr", blocksize=2), ValueError,
          r"layout='bsr': blocksize 2 must divide out_features=3 and in_features=6"),
        R("nn-bsr-blocksize-0", "api", "SparseLinear(8, 4, layout='bsr', blocksize=0)", "blocksize 0",
          lambda tmp: SparseLinear(8, 4, layout="bsr", blocksize=0), ValueError,
          r"layout='bsr' needs an int blocksize >= 1"),
        R("nn-bsr-mask-partial-block", "api", "SparseLinear(4, 4, layout='bsr', blocksize=2, mask=...)",
          "mask with a partly set block",
          lambda tmp: SparseLinear(4, 4, layout="bsr", blocksize=2, mask=torch.eye(4, dtype=torch.bool)), ValueError,
          r"block \(row 0, col 0\) of the mask is partly set"),
        R("nn-negative-size", "api", "SparseLinear(-1, 3)", "in_features -1",
          lambda tmp: SparseLinear(-1, 3), ValueError, r"in_features and out_features must be >= 0, got -1, 3"),
        R("nn-dtype-int", "api", "SparseLinear(6, 3, dtype=torch.int64)", "integer dtype",
          lambda tmp: SparseLinear(6, 3, dtype=torch.int64), TypeError,
          r"SparseLinear supports float32, float64, float16 and bfloat16 values, got torch.int64"),
    ]
    # ---- sparsity: 1.0 (an all-zero weight: nothing to train) and other values outside [0, 1)
    bad_range = r"sparsity must be in \[0, 1\) \(fraction of zero weights\), got {}"
    for label, value, exc, match in [
        ("1.0", 1.0, ValueError, bad_range.format("1.0")),
        ("1.5", 1.5, ValueError, bad_range.format("1.5")),
        ("negative", -0.1, ValueError, bad_range.format("-0.1")),
        ("nan", math.nan, ValueError, bad_range.format("nan")),
        ("inf", math.inf, ValueError, bad_range.format("inf")),
        ("bool", True, TypeError, r"sparsity must be a float in \[0, 1\), got bool"),
        ("string", "0.5", TypeError, r"sparsity must be a float in \[0, 1\), got str"),
        ("none", None, TypeError, r"sparsity must be a float in \[0, 1\), got NoneType"),
    ]:
        rows.append(R(f"sparsity-{label}-sparsify", "api", "gnnsparse.sparsify", f"sparsity={value!r}",
                      lambda tmp, v=value: sparsify(_model(), v), exc, match))
    for label, value in (("1.0", 1.0), ("nan", math.nan)):
        m = bad_range.format(repr(value))
        rows += [
            R(f"sparsity-{label}-layer", "api", "SparseLinear(64, 64, sparsity=...)", f"sparsity={value!r}",
              lambda tmp, v=value: SparseLinear(64, 64, sparsity=v), ValueError, m),
            R(f"sparsity-{label}-from-dense", "api", "SparseLinear.from_dense", f"sparsity={value!r}",
              lambda tmp, v=value: SparseLinear.from_dense(nn.Linear(64, 64), sparsity=v), ValueError, m),
            R(f"sparsity-{label}-run-sparse-training", "api", "gnnsparse.train.run_sparse_training",
              f"sparsity={value!r}", lambda tmp, v=value: run_sparse_training(None, TrainConfig(), v), ValueError, m),
            R(f"sparsity-{label}-run-train-and-prune", "api", "gnnsparse.train.run_train_and_prune",
              f"sparsity={value!r}", lambda tmp, v=value: run_train_and_prune(None, TrainConfig(), v), ValueError, m),
        ]
    rows += [
        R("sparsity-sparsify-mapping", "api", "gnnsparse.sparsify", "{'0': 1.0} (per-layer mapping)",
          lambda tmp: sparsify(_model(), {"0": 1.0}), ValueError, bad_range.format("1.0")),
        R("sparsity-near-one", "api", "SparseLinear(64, 64, sparsity=0.9999999)", "sparsity just below 1",
          lambda tmp: _near_one(), None, "", "allowed: keeps at least one weight per layer (nnz = 1), never 0"),
    ]
    # ---- data files (readers and load_dataset)
    tmp_ = "{tmp}"
    data = [
        ("empty", "empty.txt", b"", r"{tmp}/empty\.txt: empty file \(no data lines\)"),
        ("header-only", "header.txt", b"# src dst t\n  # another comment\n",
         r"{tmp}/header\.txt: empty file \(no data lines\)"),
        ("blank-lines-only", "blank.txt", b"  \n\n\t\n", r"{tmp}/blank\.txt: empty file \(no data lines\)"),
        ("truncated-gzip", "trunc.txt.gz", TRUNC_GZ,
         r"{tmp}/trunc\.txt\.gz: not a valid gzip file \(corrupt or truncated gzip data"),
        ("corrupt-gzip", "corrupt.txt.gz", b"\x1f\x8b\x08\x00" + bytes(range(7, 107)),
         r"{tmp}/corrupt\.txt\.gz: not a valid gzip file"),
        ("wrong-column-count", "cols.txt", GOOD + "1 2\n", r"{tmp}/cols\.txt: line 21: expected 3 columns \(as on line 1\), got 2"),
        ("one-column", "onecol.txt", "1\n2\n", r"{tmp}/onecol\.txt: line 1: expected 2 or 3 columns, got 1"),
        ("four-columns", "fourcol.txt", "1 2 3 4\n", r"{tmp}/fourcol\.txt: line 1: expected 2 or 3 columns, got 4"),
        ("non-numeric", "nonnum.txt", GOOD + "1 abc 5\n", r"{tmp}/nonnum\.txt: line 21: not an integer: 'abc'"),
        ("float-id", "float.txt", GOOD + "1 2.5 5\n", r"{tmp}/float\.txt: line 21: not an integer: '2\.5'"),
        ("negative-id", "neg.txt", GOOD + "-1 2 5\n", r"{tmp}/neg\.txt: line 21: negative value '-1' in column 1"),
        ("id-overflow-int64", "ovf.txt", GOOD + "1 9223372036854775808 5\n",
         r"{tmp}/ovf\.txt: line 21: integer '9223372036854775808' is out of the int64 range"),
        ("underscore-digits", "under.txt", GOOD + "1 1_0 5\n",
         r"{tmp}/under\.txt: line 21: not an integer: '1_0' \('_' separators are not allowed\)"),
        ("nul-byte", "nul.txt", GOOD + "1 2\x00 5\n", r"{tmp}/nul\.txt: line 21: NUL byte; not a UTF-8/ASCII text edge file"),
        ("utf16", "utf16.txt", "1 2 3\n".encode("utf-16"), r"{tmp}/utf16\.txt: line 1: "),
        ("utf8-bom", "bom.txt", b"\xef\xbb\xbf" + GOOD.encode(),
         r"{tmp}/bom\.txt: line 1: not an integer: .* \(the file starts with a UTF-8 byte-order mark, BOM: save "
         r"it as plain UTF-8/ASCII\)"),
    ]
    for label, name, content, match in data:
        rows.append(R(f"data-{label}", "data", "gnnsparse.data.load_dataset(path)", f"{name}: {_describe(content)}",
                      lambda tmp, n=name, c=content: load_dataset(str(_write(tmp, n, c))), DataError, match))
    for label, name, content, match in data:
        rows.append(R(f"ingest-{label}", "data", "gnnsparse.data.ingest.load_edge_list (C++ and numpy parsers)",
                      f"{name}: {_describe(content)}",
                      lambda tmp, n=name, c=content: _ingest_both(_write(tmp, n, c)), DataError, match))
    rows += [
        R("data-not-gzip-named-gz", "data", "read_snap_edges / load_edge_list", "plain text named .txt.gz",
          _not_gzip_named_gz, None, "", "read as plain text: gzip is detected by its magic bytes, not the name"),
        R("data-duplicate-edges-self-loops", "data", "gnnsparse.data.load_dataset(path) (LinkData)",
          "repeated pairs (both directions) and 2 self-loops", _dup_self_loops, None, "",
          "self-loop lines dropped and counted (stats['self_loops_dropped'], describe()); each unordered pair "
          "counted once at its first occurrence (stats['unique_pairs']); the ingest keeps every line"),
        R("ingest-replaced-same-size-and-mtime", "data", "gnnsparse.data.ingest.load_edge_list (cache)",
          "file rewritten with other edges, same size, old mtime restored (cp -p, rsync -t, tar x)",
          _ingest_cache_same_size_mtime, None, "",
          "re-parsed: the cache entry also records the file's ctime and inode, which such a rewrite changes "
          "(it served the old edges before)"),
        R("data-directory", "data", "gnnsparse.data.load_dataset(path)", "a directory",
          lambda tmp: load_dataset(str(tmp)), DataError, r"{tmp} is a directory, not an edge file"),
        R("data-missing-file", "data", "gnnsparse.data.load_dataset(path)", "a file that does not exist",
          lambda tmp: load_dataset(str(tmp / "nope.txt")), DataError, r"file not found: {tmp}/nope\.txt"),
        # labels
        R("labels-utf8-bom", "data", "gnnsparse.data.read_snap_labels", "file starting with a UTF-8 BOM",
          lambda tmp: read_snap_labels(_write(tmp, "lab.txt", b"\xef\xbb\xbf0 1\n1 2\n")), DataError,
          r"{tmp}/lab\.txt: line 1: not an integer: .* \(the file starts with a UTF-8 byte-order mark"),
        R("labels-crlf-trailing-space", "data", "gnnsparse.data.read_snap_labels",
          "CRLF line ends, trailing spaces and tabs", _labels_crlf, None, "",
          "accepted: any whitespace separates columns, so CRLF files and trailing blanks read as the same labels"),
        R("labels-non-integer", "data", "gnnsparse.data.read_snap_labels", "label 'x' on line 2",
          lambda tmp: read_snap_labels(_write(tmp, "lab.txt", "0 1\n1 x\n")), DataError,
          r"{tmp}/lab\.txt: line 2: not an integer: 'x'"),
        R("labels-float", "data", "gnnsparse.data.read_snap_labels", "label '2.0' on line 2",
          lambda tmp: read_snap_labels(_write(tmp, "lab.txt", "0 1\n1 2.0\n")), DataError,
          r"{tmp}/lab\.txt: line 2: not an integer: '2\.0'"),
        R("labels-negative", "data", "gnnsparse.data.read_snap_labels", "label -2 on line 2",
          lambda tmp: read_snap_labels(_write(tmp, "lab.txt", "0 1\n1 -2\n")), DataError,
          r"{tmp}/lab\.txt: line 2: negative value '-2' in column 2"),
        R("labels-duplicate-node", "data", "gnnsparse.data.read_snap_labels", "node 0 labelled twice",
          lambda tmp: read_snap_labels(_write(tmp, "lab.txt", "0 1\n0 2\n")), DataError,
          r"{tmp}/lab\.txt: line 2: node 0 labelled twice \(first on line 1\)"),
        R("labels-three-columns", "data", "gnnsparse.data.read_snap_labels", "3 columns",
          lambda tmp: read_snap_labels(_write(tmp, "lab.txt", "0 1 4\n")), DataError,
          r"{tmp}/lab\.txt: line 1: expected 2 columns, got 3"),
        R("labels-non-integer-array", "data", "gnnsparse.data.NodeData", "labels [0.5, 1, 2, 0, 1] (floats)",
          lambda tmp: NodeData(_edges(tmp), np.arange(5), np.array([0.5, 1, 2, 0, 1])), DataError,
          r"the labels of e\.txt: labels must be integers, but entry 0 is 0\.5"),
        R("labels-length-mismatch", "data", "gnnsparse.data.NodeData", "5 node ids, 4 labels",
          lambda tmp: NodeData(_edges(tmp), np.arange(5), np.arange(4)), DataError,
          r"the labels of e\.txt: 5 node ids but 4 labels"),
        R("labels-missing-ids", "data", "gnnsparse.data.NodeData", "labels for 15 of 21 nodes",
          _labels_missing, None, "", "unlabelled nodes get y = -1 and are in no train/val/test mask"),
        R("labels-extra-ids", "data", "gnnsparse.data.NodeData", "labels for 9 ids that are in no edge",
          _labels_extra, None, "", "kept as isolated labelled nodes (degree 0), num_nodes counts them"),
        R("labels-bad-line-registry", "data", "gnnsparse.data.load_dataset('email-eu', root=...)",
          "department labels file with 'x' on line 3", lambda tmp: load_dataset("email-eu", root=_email_eu_root(tmp)),
          DataError, r"^{tmp}/snap/email-Eu-core-department-labels\.txt\.gz: line 3: not an integer: 'x'$"),
        R("labels-too-few-per-class", "data", "gnnsparse.data.NodeData", "every class with fewer than 3 nodes",
          lambda tmp: NodeData(_edges(tmp), np.arange(6), np.array([0, 0, 1, 1, 2, 2])), DataError,
          r"no class of the labels of e\.txt has >= 3 members: validation/test would be empty"),
        R("data-fifo", "data", "gnnsparse.data.load_dataset(path)", "a named pipe (reading would block)",
          lambda tmp: load_dataset(str(_fifo(tmp))), DataError,
          r"^{tmp}/pipe\.txt is not a regular file \(expected an edge file\)$"),
        R("ingest-device-file", "data", "gnnsparse.data.ingest.load_edge_list", "/dev/zero (endless)",
          lambda tmp: load_edge_list("/dev/zero", cache=False), DataError,
          r"^/dev/zero is not a regular file \(expected an edge file\)$"),
        # npz
        R("npz-missing-keys", "data", "gnnsparse.data.originals.read_brain_npz", "npz with adjs only",
          _npz_missing_keys, DataError,
          r"^{tmp}/Brain\.npz: missing array\(s\) 'attmats', 'labels' \(found: adjs\)"),
        R("npz-not-zip", "data", "gnnsparse.data.originals.read_brain_npz", "text file named .npz",
          lambda tmp: read_brain_npz(_write(tmp, "Brain.npz", "not an npz")), DataError,
          r"{tmp}/Brain\.npz: not a readable \.npz file \(no zip signature at the start"),
        R("zip-no-member", "data", "gnnsparse.data.read_network_repository_edges", "empty zip archive",
          lambda tmp: _empty_zip(tmp), DataError,
          r"{tmp}/e\.edges\.zip: expected exactly one \.edges/\.txt member in the zip archive, found: none"),
    ]
    # ---- the command line: exit 2, one 'gnnsparse: error:' line naming the file and line
    cli = [
        ("bad-line", "bad.txt", "0 1 10\n1 2 11\n2 3 x\n", r"^exit 2: gnnsparse: error: {tmp}/bad\.txt: line 3: not an integer: 'x'$"),
        ("empty", "empty.txt", "", r"^exit 2: gnnsparse: error: {tmp}/empty\.txt: empty file \(no data lines\)$"),
        ("truncated-gzip", "trunc.txt.gz", TRUNC_GZ,
         r"^exit 2: gnnsparse: error: {tmp}/trunc\.txt\.gz: not a valid gzip file \(corrupt or truncated"),
        ("wrong-column-count", "cols.txt", GOOD + "1 2\n",
         r"^exit 2: gnnsparse: error: {tmp}/cols\.txt: line 21: expected 3 columns \(as on line 1\), got 2$"),
        ("negative-id", "neg.txt", GOOD + "-1 2 5\n",
         r"^exit 2: gnnsparse: error: {tmp}/neg\.txt: line 21: negative value '-1' in column 1$"),
        ("too-few-pairs", "few.txt", "0 1\n1 2\n", r"^exit 2: gnnsparse: error: {tmp}/few\.txt: only 2 distinct "
         r"non-self pairs; need at least 7"),
    ]
    for label, name, content, match in cli:
        rows.append(R(f"cli-dataset-{label}", "cli", "gnnsparse compare --dataset FILE", f"{name}: {_describe(content)}",
                      lambda tmp, n=name, c=content: _cli("compare", "--no-progress", "--dataset",
                                                          str(_write(tmp, n, c))), CliExit, match))
    for value, match in [("1.0", r"sparsity must be in \[0, 1\) \(fraction of zero weights\), got 1\.0"),
                         ("nan", r"sparsity must be in \[0, 1\) \(fraction of zero weights\), got nan"),
                         ("-0.1", r"sparsity must be in \[0, 1\) \(fraction of zero weights\), got -0\.1"),
                         ("abc", r"sparsity must be a number in \[0, 1\), got 'abc'")]:
        rows.append(R(f"cli-sparsity-{value}", "cli", "gnnsparse compare --sparsity S", f"--sparsity {value}",
                      lambda tmp, v=value: _cli("compare", "--no-progress", "--sparsity", v), CliExit,
                      r"^exit 2: .*gnnsparse compare: error: argument --sparsity: " + match))
    rows.append(R("cli-labels-bad-line", "cli", "gnnsparse compare --root DIR --dataset email-eu",
                  "department labels file with 'x' on line 3",
                  lambda tmp: _cli("compare", "--no-progress", "--root", str(_email_eu_root(tmp)), "--dataset",
                                   "email-eu"), CliExit,
                  r"^exit 2: gnnsparse: error: {tmp}/snap/email-Eu-core-department-labels\.txt\.gz: line 3: "
                  r"not an integer: 'x'$"))
    rows.append(R("cli-missing-dataset-file", "cli", "gnnsparse compare --dataset FILE", "a file that does not exist",
                  lambda tmp: _cli("compare", "--no-progress", "--dataset", str(tmp / "nope.txt")), CliExit,
                  r"^exit 2: gnnsparse: error: file not found: {tmp}/nope\.txt"))
    return rows


def _describe(content) -> str:
    if isinstance(content, str):
        content = content.encode()
    if not content:
        return "0 bytes"
    if content[:2] == b"\x1f\x8b":
        return f"{len(content)} bytes of gzip"
    text = content.decode("utf-8", "backslashreplace")
    lines = text.splitlines()
    last = lines[-1] if lines else text
    shown = repr(last)[1:-1].replace("|", "\\|")
    return f"{len(lines)} lines, last {shown!r}" if len(lines) > 3 else repr(text)[1:-1].replace("|", "\\|")


def _email_eu_root(tmp: Path) -> Path:
    """A data root holding email-eu's two files: a valid edge list and a labels file with a
    non-integer label on line 3."""
    (tmp / "snap").mkdir()
    edges = "".join(f"{i} {(i * 7 + 1) % 30}\n" for i in range(30))
    (tmp / "snap" / "email-Eu-core.txt.gz").write_bytes(gzip.compress(edges.encode()))
    (tmp / "snap" / "email-Eu-core-department-labels.txt.gz").write_bytes(gzip.compress(b"0 1\n1 2\n2 x\n"))
    return tmp


def _fifo(tmp: Path) -> Path:
    p = tmp / "pipe.txt"
    os.mkfifo(p)
    return p


def _near_one():
    layer = SparseLinear(64, 64, sparsity=0.9999999)
    assert layer.nnz == 1


def _empty_zip(tmp):
    p = tmp / "e.edges.zip"
    with zipfile.ZipFile(p, "w"):
        pass
    from gnnsparse.data.readers import read_network_repository_edges

    return read_network_repository_edges(p)


def _run_env_check(value="1"):
    previous = ops.set_check_finite(None)  # follow the environment
    try:
        with _env("GNNSPARSE_CHECK_FINITE", value):
            return ops.csr_linear(_with_nan(X(), (2, 0)), CROW, COL, VAL, None, 3)
    finally:
        ops.set_check_finite(previous)


ROWS = _rows()
IDS = [r.id for r in ROWS]


# ------------------------------------------------------------------------------- the tests
def test_table_is_well_formed():
    assert len(IDS) == len(set(IDS)), "duplicate row ids"
    assert len(ROWS) >= 40
    for r in ROWS:
        assert r.level in ("op", "api", "data", "cli"), r.id
        assert (r.exc is None) == (r.match == "") == bool(r.handling), r.id
        if r.match:
            re.compile(r.match)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_bad_input(row, tmp_path):
    if row.level == "op" or row.id.startswith("ingest-"):
        from kernel_support import require_extension

        require_extension()
    assert ops.check_finite_enabled() is False  # rows turn the check on themselves
    if row.exc is None:
        row.run(tmp_path)  # asserts the documented handling
        return
    with pytest.raises(row.exc) as info:
        row.run(tmp_path)
    msg = str(info.value)
    pattern = row.match.replace("{tmp}", re.escape(str(tmp_path)))
    assert re.search(pattern, msg, flags=re.S), f"message {msg!r} does not match {pattern!r}"
    assert "Traceback" not in msg
    if row.level == "cli":  # one error line (argparse errors: after the usage text)
        last = re.sub(r"^exit \d+: ", "", msg).splitlines()[-1]
        assert last.startswith(("gnnsparse: error: ", "gnnsparse compare: error: ")), msg
    assert ops.check_finite_enabled() is False  # the check is restored after the row


def test_cli_bad_file_in_a_real_process_has_no_traceback(tmp_path):
    bad = _write(tmp_path, "bad.txt", "0 1 10\n1 2 11\n2 3 x\n")
    p = subprocess.run([sys.executable, "-m", "gnnsparse", "compare", "--no-progress", "--dataset", str(bad)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == f"gnnsparse: error: {bad}: line 3: not an integer: 'x'"


def test_check_finite_is_off_by_default_and_restored():
    import gnnsparse

    assert gnnsparse.set_check_finite is ops.set_check_finite and gnnsparse.check_finite is ops.check_finite
    assert ops.check_finite_enabled() is False
    assert ops.set_check_finite(True) is None and ops.check_finite_enabled() is True
    assert ops.set_check_finite(None) is True and ops.check_finite_enabled() is False
    with ops.check_finite():
        assert ops.check_finite_enabled() is True
        with ops.check_finite(False):
            assert ops.check_finite_enabled() is False
        assert ops.check_finite_enabled() is True
    assert ops.check_finite_enabled() is False
    x = _with_nan(X(), (1, 1))
    y = ops.csr_linear(x, CROW, COL, VAL, None, 3)  # off: no error, NaN propagates
    assert bool(y[1].isnan().any()) and not bool(y[0].isnan().any())


# ------------------------------------------------------------------------------- the documentation
def render_doc() -> str:
    """docs/bad_input.md, generated from :data:`ROWS`."""
    head = """# Bad input: what each one gives

One row per test of `tests/test_bad_input.py` (generated from its table by
`python tests/test_bad_input.py --write-doc`; a test fails when this file is out of date).
Each row: the entry point, the bad input, and the exception with the message it gives (the test
matches it with a regular expression; `{tmp}` = the folder of the file, `N` = a number, `...` =
any text, here the usage text of argparse), or the documented handling of inputs that are not
errors. Levels: **op** = the raw C++ ops `torch.ops.gnnsparse.*`, **api** = the Python API,
**data** = the data loaders, **cli** = `gnnsparse compare` (exit status 2, one
`gnnsparse: error: FILE: line N: ...` line on stderr, no traceback).

## Policies

* **Sparsity** must be a real number in `[0, 1)`: `1.0` (an all-zero weight, nothing to train),
  values above 1, negative, NaN and Inf raise `ValueError`; `bool`, strings and `None` raise
  `TypeError`; the CLI's `--sparsity` exits 2. Just below 1 keeps at least one weight per layer.
* **NaN/Inf** are not checked by default (no cost): they propagate by IEEE arithmetic. The CPU
  kernels multiply stored entries only, so a NaN in `x[n, j]` reaches only the outputs whose
  weight row stores column `j` (BSR: every element of a stored block is multiplied); the CUDA
  and Triton kernels are built the same way (sums over stored entries), but that is not tested
  on a machine without a GPU. The `"torch"` backend and `SparseLinear`'s dense executor multiply the dense
  weight, where `0·NaN = NaN` reaches every output of row `n`. To catch them, turn the check on:
  `gnnsparse.set_check_finite(True)`, the context manager `gnnsparse.check_finite()` (both also in
  `gnnsparse.ops`), or
  `GNNSPARSE_CHECK_FINITE=1`; `csr_linear`, `bsr_linear` and `SparseLinear` then raise
  `ValueError` naming the tensor (`x`, `values`, `bias`), the index and the value of the first
  non-finite entry (one extra pass over each tensor; skipped for meta tensors and under
  `torch.compile`).
* **Unsorted or duplicate columns** in a CSR weight: accepted by the CPU ops (duplicates are
  summed, as in `formats.csr_to_dense` and the `"torch"` backend); refused by
  `formats.validate_csr`, `SparseLinear.set_csr` / `load_state_dict` and the CUDA backend.
* **Edge lists**: self-loop lines are dropped and counted; repeated pairs count once (at their
  first occurrence); gzip is recognised by its magic bytes, not the file name.
* **Labels**: nodes without a label get `y = -1` and are in no split; labelled ids that are in no
  edge become isolated nodes; non-integer labels are refused (never truncated).
* **Devices**: a CUDA tensor cannot be made on a CPU-only machine, so the device rows use the
  `meta` device; CPU/CUDA mixes go through the same checks (`test_backends.py` covers the CUDA
  kernels' messages when a GPU is present). The CUDA backend also refuses unsorted columns.

## The table

| id | level | entry point | bad input | result |
|---|---|---|---|---|
"""
    lines = [head.rstrip("\n")]
    for r in ROWS:
        if r.exc is None:
            result = f"handled: {r.handling}"
        elif r.exc is CliExit:
            result = f"exit status 2, stderr: `{_readable(re.sub(r'^.exit 2: ', '', r.match))}`"
        else:
            result = f"`{r.exc.__name__}`: `{_readable(r.match)}`"
        cells = [r.id, r.level, f"`{r.entry}`", r.bad, result]
        lines.append("| " + " | ".join(c.replace("|", "\\|") if i != 4 else _escape_code(c)
                                         for i, c in enumerate(cells)) + " |")
    lines.append("")
    lines.append(f"{len(ROWS)} rows: {sum(r.exc is not None for r in ROWS)} errors, "
                 f"{sum(r.exc is None for r in ROWS)} documented handlings.")
    return "\n".join(lines) + "\n"


def _readable(pattern: str) -> str:
    """The message a row's regex matches, for reading: ``\\d+`` -> ``N``, ``.*`` -> ``...``,
    anchors dropped, escapes removed."""
    text = pattern.replace(r"\d+", "N").replace(r"\s+", " ").replace(".*", "...").strip("^$")
    return re.sub(r"\\(.)", r"\1", text)


def _escape_code(cell: str) -> str:
    return cell.replace("|", "\\|")


def test_doc_is_generated_from_the_table():
    assert DOC.exists(), f"{DOC} missing: run python tests/test_bad_input.py --write-doc"
    text = DOC.read_text()
    assert text == render_doc(), "docs/bad_input.md is out of date: run python tests/test_bad_input.py --write-doc"
    doc_ids = re.findall(r"^\| ([a-z0-9.-]+) \| (?:op|api|data|cli) \|", text, flags=re.M)
    assert doc_ids == IDS


def test_readme_links_the_table():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "docs/bad_input.md" in readme


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-doc"]:
        DOC.write_text(render_doc())
        print(f"wrote {DOC} ({len(ROWS)} rows)")
    else:
        print("usage: python tests/test_bad_input.py --write-doc", file=sys.stderr)
        sys.exit(2)
