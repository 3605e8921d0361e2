"""Fuzz tests (hypothesis) of the C++ extension's entry points.

Two targets, each run for ``GNNSPARSE_FUZZ_EXAMPLES`` inputs (default 200 in the ordinary test run;
tests/test_sanitizers.py runs them with 10,000 each in the AddressSanitizer/UBSan process):

* ``test_fuzz_ops_direct``: every CPU op of ``torch.ops.gnnsparse`` called directly with a valid
  problem, or with one argument made malformed (non-monotone / out-of-range / negative / wrong-length
  indices, wrong dtypes incl. int32, int16, float16 and bool, non-contiguous and 0-size tensors,
  huge or negative size claims, stale transposes, bad block sizes, ...). The call must either raise a
  Python exception or return; a returned result must come from arguments that a Python validator
  finds valid and must equal the dense reference (gnnsparse/reference.py). Valid inputs must not be
  refused.
* ``test_fuzz_edge_list_loader``: the edge-list loader on random and mutated text (binary junk,
  truncated lines, huge numbers, signs, tabs, comments, CRLF, non-UTF-8): the C++ chunk parser
  (``parse_edge_chunk``, ``parse_edge_chunk_into``) against a Python model of its fast grammar, and
  ``load_edge_list`` / ``read_snap_edges`` against a line-by-line Python reference parse: equal
  arrays, or a ``DataError`` naming a line that really is bad.

``GNNSPARSE_FUZZ_COUNT_DIR``, when set, receives ``<target>.json`` with the number of inputs run.
The hypothesis example database is off (nothing is written into the repository); inputs are
derandomized (the same every run) unless ``GNNSPARSE_FUZZ_DERANDOMIZE=0``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gnnsparse import reference as ref  # noqa: E402
from gnnsparse.data import ingest  # noqa: E402
from gnnsparse.data.errors import DataError  # noqa: E402
from gnnsparse.data.readers import read_snap_edges  # noqa: E402
from kernel_support import cpu_has_avx2_fma, require_extension  # noqa: E402

EXAMPLES = int(os.environ.get("GNNSPARSE_FUZZ_EXAMPLES", "200"))
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=os.environ.get("GNNSPARSE_FUZZ_DERANDOMIZE", "1") != "0",
    suppress_health_check=list(HealthCheck),
    print_blob=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # no "explain" (slow, imports libcst)
)
#: What a refused call may raise (torch's own errors are RuntimeError subclasses).
REFUSALS = (RuntimeError, ValueError, TypeError, IndexError, OverflowError)
ISAS = ["auto", "generic"] + (["avx2"] if cpu_has_avx2_fma() else [])
HUGE = [2**31, 2**40, 2**62, 2**63 - 1]  # index values
#: Size claims: too large to allocate (fails at once, never a multi-GB allocation that succeeds).
HUGE_SIZES = [2**40, 2**62, 2**63 - 1]
_COUNTS: dict = {}


def _record(target: str) -> None:
    """Count one executed input of ``target`` and write the count where the sanitizer run reads it."""
    _COUNTS[target] = _COUNTS.get(target, 0) + 1
    folder = os.environ.get("GNNSPARSE_FUZZ_COUNT_DIR")
    if folder and (_COUNTS[target] % 500 == 0 or _COUNTS[target] >= EXAMPLES):
        from gnnsparse import _ext

        info = {"examples": _COUNTS[target], "extension": _ext.library_paths()["_C"]}
        Path(folder, f"{target}.json").write_text(json.dumps(info))


@pytest.fixture(autouse=True)
def _isa_restored():
    """The ops read GNNSPARSE_CPU_ISA at every call; the fuzzer sets it per input."""
    old = os.environ.get("GNNSPARSE_CPU_ISA")
    yield
    if old is None:
        os.environ.pop("GNNSPARSE_CPU_ISA", None)
    else:
        os.environ["GNNSPARSE_CPU_ISA"] = old


# ---------------------------------------------------------------------------------------------
# target (a): torch.ops.gnnsparse.* called directly
# ---------------------------------------------------------------------------------------------

class Invalid(Exception):
    """The Python validator's verdict: these arguments are malformed."""


def _need(cond, what):
    if not cond:
        raise Invalid(what)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _tensor(t, name):
    _need(isinstance(t, torch.Tensor), f"{name} is not a tensor")
    return t


def _valid_csr(crow, col, rows, cols, ctx="csr"):
    _tensor(crow, "crow"), _tensor(col, "col")
    _need(_is_int(rows) and _is_int(cols) and rows >= 0 and cols >= 0, f"{ctx}: negative size")
    _need(crow.dtype == torch.int64 and col.dtype == torch.int64, f"{ctx}: index dtype")
    _need(crow.dim() == 1 and crow.numel() == rows + 1, f"{ctx}: crow shape")
    _need(col.dim() == 1, f"{ctx}: col shape")
    c = crow.tolist()
    _need(c[0] == 0 and all(a <= b for a, b in zip(c, c[1:])) and c[-1] == col.numel(), f"{ctx}: crow values")
    _need(all(0 <= v < cols for v in col.tolist()), f"{ctx}: col range")


def _valid_float(t, name, like=None):
    _tensor(t, name)
    _need(t.dtype in (torch.float32, torch.float64), f"{name} dtype")
    if like is not None:
        _need(t.dtype == like.dtype, f"{name} dtype differs")


def _valid_bias(bias, out_f, x):
    if bias is not None:
        _valid_float(bias, "bias", x)
        _need(bias.dim() == 1 and bias.numel() == out_f, "bias shape")


def _valid_transpose(crow, col, t_crow, t_col, t_perm, in_f):
    for t in (t_crow, t_col, t_perm):
        _tensor(t, "transpose")
        _need(t.dtype == torch.int64 and t.dim() == 1, "transpose dtype/dim")
    want = torch.ops.gnnsparse.csr_transpose(crow, col, in_f)
    _need(all(torch.equal(a, b) for a, b in zip((t_crow, t_col, t_perm), want)), "stale transpose")


_BIG = 2**20  # a dimension above this: the dense reference would not fit, compare shapes only


class Shape(tuple):
    """Expected result shape where the dense reference is too large to compute (a huge but empty
    tensor dimension, e.g. x of shape [0, 2^40])."""


def _dims(*tensors):
    return max((d for t in tensors if isinstance(t, torch.Tensor) for d in t.shape), default=0)


def _validate_and_reference(op, a):
    """Raise Invalid for malformed arguments ``a`` of ``op``, else return the reference result
    (a :class:`Shape` where it is too large to compute)."""
    g = torch.ops.gnnsparse
    if op == "csr_linear":
        x = _tensor(a["x"], "x")
        _valid_float(x, "x")
        _need(x.dim() == 2, "x dim")
        _valid_float(a["values"], "values", x)
        _valid_csr(a["crow"], a["col"], a["out"], x.shape[1])
        _need(a["values"].dim() == 1 and a["values"].numel() == a["col"].numel(), "values shape")
        _valid_bias(a["bias"], a["out"], x)
        if a["t"] is not None:
            _need(all(t.is_contiguous() for t in a["t"]), "transpose not contiguous")
            _valid_transpose(a["crow"], a["col"], *a["t"], x.shape[1])
        if _dims(x) > _BIG or a["out"] > _BIG:
            return Shape((x.shape[0], a["out"]))
        return ref.csr_linear(x, a["crow"], a["col"], a["values"], a["bias"], a["out"])
    if op == "csr_transpose":
        _valid_csr(a["crow"], a["col"], a["crow"].numel() - 1, a["in"])
        return g.csr_transpose(a["crow"].contiguous(), a["col"].contiguous(), a["in"])  # validated below
    if op == "csr_linear_backward_input":
        go = _tensor(a["grad_out"], "grad_out")
        _valid_float(go, "grad_out")
        _need(go.dim() == 2, "grad_out dim")
        _valid_float(a["values"], "values", go)
        _valid_csr(a["crow"], a["col"], go.shape[1], a["in"])
        _need(a["values"].dim() == 1 and a["values"].numel() == a["col"].numel(), "values shape")
        if _dims(go) > _BIG or a["in"] > _BIG:
            return Shape((go.shape[0], a["in"]))
        return ref.csr_linear_backward_input(go, a["crow"], a["col"], a["values"], a["in"])
    if op in ("csr_sddmm", "csr_linear_backward"):
        go, x = _tensor(a["grad_out"], "grad_out"), _tensor(a["x"], "x")
        _valid_float(x, "x")
        _valid_float(go, "grad_out", x)
        _need(go.dim() == 2 and x.dim() == 2 and go.shape[0] == x.shape[0], "grad_out/x shapes")
        _valid_csr(a["crow"], a["col"], go.shape[1], x.shape[1])
        big = _dims(go, x) > _BIG
        sddmm = Shape((a["col"].numel(),)) if big else ref.csr_sddmm(go, x, a["crow"], a["col"])
        if op == "csr_sddmm":
            return sddmm
        _valid_float(a["values"], "values", go)
        _need(a["values"].dim() == 1 and a["values"].numel() == a["col"].numel(), "values shape")
        _valid_transpose(a["crow"], a["col"], *a["t"], x.shape[1])
        dx = Shape(tuple(x.shape)) if big else ref.csr_linear_backward_input(go, a["crow"], a["col"], a["values"], x.shape[1])
        db = Shape((go.shape[1],)) if big else ref.bias_grad(go)
        return (dx if a["need"][0] else None, sddmm if a["need"][1] else None, db if a["need"][2] else None)
    if op == "bias_grad":
        go = _tensor(a["grad_out"], "grad_out")
        _valid_float(go, "grad_out")
        _need(go.dim() == 2, "grad_out dim")
        return Shape((go.shape[1],)) if _dims(go) > _BIG else ref.bias_grad(go)
    if op in ("bsr_linear", "bsr_linear_backward_input"):
        lead = _tensor(a["x"] if op == "bsr_linear" else a["grad_out"], "x/grad_out")
        _valid_float(lead, "x/grad_out")
        _need(lead.dim() == 2, "x/grad_out dim")
        v = a["values"]
        _valid_float(v, "values", lead)
        _need(v.dim() == 3 and v.shape[1] == v.shape[2] and v.shape[1] >= 1, "values shape")
        b = v.shape[1]
        out_f = a["out"] if op == "bsr_linear" else lead.shape[1]
        in_f = lead.shape[1] if op == "bsr_linear" else a["in"]
        _need(_is_int(out_f) and _is_int(in_f) and out_f >= 0 and in_f >= 0, "negative size")
        _need(out_f % b == 0 and in_f % b == 0, "blocksize does not divide")
        _valid_csr(a["crow"], a["col"], out_f // b, in_f // b, "bsr")
        _need(v.shape[0] == a["col"].numel(), "values nnzb")
        if op == "bsr_linear":
            _valid_bias(a["bias"], out_f, lead)
        if max(_dims(lead), out_f, in_f) > _BIG:
            return Shape((lead.shape[0], out_f if op == "bsr_linear" else in_f))
        if op == "bsr_linear":
            return ref.bsr_linear(lead, a["crow"], a["col"], v, a["bias"], out_f)
        return ref.bsr_linear_backward_input(lead, a["crow"], a["col"], v, in_f)
    if op == "bsr_sddmm":
        go, x = _tensor(a["grad_out"], "grad_out"), _tensor(a["x"], "x")
        _valid_float(x, "x")
        _valid_float(go, "grad_out", x)
        _need(go.dim() == 2 and x.dim() == 2 and go.shape[0] == x.shape[0], "grad_out/x shapes")
        b = a["b"]
        _need(_is_int(b) and b >= 1 and go.shape[1] % b == 0 and x.shape[1] % b == 0, "blocksize")
        _valid_csr(a["crow"], a["col"], go.shape[1] // b, x.shape[1] // b, "bsr")
        if _dims(go, x) > _BIG:
            return Shape((a["col"].numel(), b, b))
        return ref.bsr_sddmm(go, x, a["crow"], a["col"], b)
    if op == "compact_edge_ids_":
        s, d, m = a["src"], a["dst"], a["max_id"]
        for t in (s, d):
            _tensor(t, "ids")
            _need(t.dtype == torch.int32 and t.dim() == 1 and t.is_contiguous(), "ids dtype/shape")
        _need(_is_int(m) and 0 <= m < 2**31, "max_id")
        both = np.concatenate([a["src_before"], a["dst_before"]])
        _need(bool(((both >= 0) & (both <= m)).all()), "id out of range")
        node_ids = np.unique(both)
        return (torch.from_numpy(node_ids.astype(np.int64)),
                torch.from_numpy(np.searchsorted(node_ids, a["src_before"]).astype(np.int32)),
                torch.from_numpy(np.searchsorted(node_ids, a["dst_before"]).astype(np.int32)))
    raise AssertionError(op)


def _close(got, want, what):
    """``got`` equals the reference ``want``; where ``want`` is not finite (inf/NaN inputs), only
    the positions the dense reference computes without touching them are compared (the dense
    reference multiplies inf by the zeros of the weight, the sparse kernels do not)."""
    if isinstance(want, Shape):
        assert tuple(got.shape) == tuple(want), (what, got.shape, want)
        return
    assert got.dtype == want.dtype and got.shape == want.shape, (what, got.dtype, got.shape, want.dtype, want.shape)
    tol = 1e-4 if got.dtype == torch.float32 else 1e-10
    finite = torch.isfinite(want)
    if not bool(finite.all()):
        got, want = got[finite], want[finite]
    torch.testing.assert_close(got, want, rtol=tol, atol=tol, msg=what)


@st.composite
def _csr_structure(draw, rows, cols, max_per_row=6):
    crow, col = [0], []
    for _ in range(rows):
        k = draw(st.integers(0, max_per_row if cols else 0))
        col += [draw(st.integers(0, cols - 1)) for _ in range(k)]
        crow.append(len(col))
    return torch.tensor(crow, dtype=torch.int64), torch.tensor(col, dtype=torch.int64)


def _floats(draw, shape, dtype):
    n = int(np.prod(shape)) if len(shape) else 1
    seed = draw(st.integers(0, 2**32 - 1))
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=gen, dtype=dtype).reshape(shape)


def _noncontig(t):
    """A non-contiguous tensor with the same values (every other element of a bigger one)."""
    if t.dim() == 0:
        return t
    big = torch.empty((t.shape[0] * 2,) + tuple(t.shape[1:]), dtype=t.dtype)
    big[::2] = t
    return big[::2]


INDEX_MUTATIONS = ["dtype_int32", "dtype_int16", "dtype_float", "dtype_bool", "noncontig", "empty",
                   "longer", "shorter", "negative", "too_big", "huge", "swap", "first_nonzero", "2d"]
FLOAT_MUTATIONS = ["dtype_float16", "dtype_other", "dtype_int64", "dtype_bool", "noncontig", "empty",
                   "longer", "shorter", "2d", "1d", "nan", "huge_empty"]
SIZE_MUTATIONS = ["minus_one", "plus_one", "negative", "huge", "zero"]


def _mutate_index(t, how, bound, draw):
    if how == "dtype_int32":
        return t.to(torch.int32)
    if how == "dtype_int16":
        return t.to(torch.int16)
    if how == "dtype_float":
        return t.to(torch.float32)
    if how == "dtype_bool":
        return t.to(torch.bool)
    if how == "noncontig":
        return _noncontig(t)
    if how == "empty":
        return t[:0].clone()
    if how == "longer":
        return torch.cat([t, t.new_tensor([draw(st.integers(0, max(bound, 0)))])])
    if how == "shorter":
        return t[:-1].clone()
    if how == "2d":
        return t.reshape(1, -1).clone()
    t = t.clone()
    if t.numel() == 0:
        return t
    i = draw(st.integers(0, t.numel() - 1))
    if how == "negative":
        t[i] = -draw(st.integers(1, 2**63 - 1))
    elif how == "too_big":
        t[i] = bound + draw(st.integers(0, 3))
    elif how == "huge":
        t[i] = draw(st.sampled_from(HUGE))
    elif how == "swap":
        j = draw(st.integers(0, t.numel() - 1))
        t[i], t[j] = t[j].clone(), t[i].clone()
    elif how == "first_nonzero":
        t[0] = draw(st.integers(1, 5))
    return t


def _mutate_float(t, how, draw):
    if how == "dtype_float16":
        return t.to(torch.float16)
    if how == "dtype_other":
        return t.to(torch.float64 if t.dtype == torch.float32 else torch.float32)
    if how == "dtype_int64":
        return t.to(torch.int64)
    if how == "dtype_bool":
        return t.to(torch.bool)
    if how == "noncontig":
        return _noncontig(t)
    if how == "empty":
        return t.reshape(-1)[:0].clone()
    if how == "longer":
        return torch.cat([t, t[:1] if t.numel() else torch.zeros((1,) + tuple(t.shape[1:]), dtype=t.dtype)])
    if how == "shorter":
        return t[:-1].clone() if t.dim() else t
    if how == "2d":
        return t.reshape(1, -1).clone()
    if how == "1d":
        return t.reshape(-1).clone()
    if how == "huge_empty":  # 0 rows, a huge second dimension (numel 0: a real tensor)
        return torch.empty((0, draw(st.sampled_from(HUGE_SIZES))), dtype=t.dtype)
    if how == "nan":
        t = t.clone()
        if t.numel():
            t.view(-1)[draw(st.integers(0, t.numel() - 1))] = float(draw(st.sampled_from(["nan", "inf", "-inf"])))
        return t
    raise AssertionError(how)


def _mutate_size(v, how, draw):
    return {"minus_one": v - 1, "plus_one": v + 1, "negative": -draw(st.integers(1, 2**63 - 1)),
            "huge": draw(st.sampled_from(HUGE_SIZES)), "zero": 0}[how]


OPS = ["csr_linear", "csr_transpose", "csr_linear_backward_input", "csr_linear_backward", "csr_sddmm",
       "bias_grad", "bsr_linear", "bsr_linear_backward_input", "bsr_sddmm", "compact_edge_ids_",
       "parse_edge_chunk", "parse_edge_chunk_into"]


def _draw_problem(draw, op):
    """A valid argument dict for ``op`` plus the names of its index/float/size arguments."""
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    N = draw(st.integers(0, 70))
    if op.startswith("bsr"):
        b = draw(st.sampled_from([1, 2, 3, 4, 8, 16, 32]))
        rb, cb = draw(st.integers(0, 4)), draw(st.integers(0, 4))
        out_f, in_f = rb * b, cb * b
        crow, col = draw(_csr_structure(rb, cb, 3))
        values = _floats(draw, (col.numel(), b, b), dtype)
    else:
        out_f, in_f = draw(st.integers(0, 40)), draw(st.integers(0, 40))
        crow, col = draw(_csr_structure(out_f, in_f))
        values = _floats(draw, (col.numel(),), dtype)
        b = 1
    x = _floats(draw, (N, in_f), dtype)
    go = _floats(draw, (N, out_f), dtype)
    bias = _floats(draw, (out_f,), dtype) if draw(st.booleans()) else None
    a = {"crow": crow, "col": col, "values": values, "x": x, "grad_out": go, "bias": bias,
         "out": out_f, "in": in_f, "b": b}
    if op in ("csr_linear", "csr_linear_backward"):
        a["t"] = list(torch.ops.gnnsparse.csr_transpose(crow, col, in_f)) if (
            op == "csr_linear_backward" or draw(st.booleans())) else None
        a["need"] = [draw(st.booleans()) for _ in range(3)]
    return a


def _call(op, a):
    g = torch.ops.gnnsparse
    if op == "csr_linear":
        t = a["t"] or [None, None, None]
        return g.csr_linear(a["x"], a["crow"], a["col"], a["values"], a["bias"], a["out"], *t)
    if op == "csr_transpose":
        return g.csr_transpose(a["crow"], a["col"], a["in"])
    if op == "csr_linear_backward_input":
        return g.csr_linear_backward_input(a["grad_out"], a["crow"], a["col"], a["values"], a["in"])
    if op == "csr_linear_backward":
        return g.csr_linear_backward(a["grad_out"], a["x"], a["crow"], a["col"], a["values"], *a["t"], *a["need"])
    if op == "csr_sddmm":
        return g.csr_sddmm(a["grad_out"], a["x"], a["crow"], a["col"])
    if op == "bias_grad":
        return g.bias_grad(a["grad_out"])
    if op == "bsr_linear":
        return g.bsr_linear(a["x"], a["crow"], a["col"], a["values"], a["bias"], a["out"])
    if op == "bsr_linear_backward_input":
        return g.bsr_linear_backward_input(a["grad_out"], a["crow"], a["col"], a["values"], a["in"])
    if op == "bsr_sddmm":
        return g.bsr_sddmm(a["grad_out"], a["x"], a["crow"], a["col"], a["b"])
    if op == "compact_edge_ids_":
        return g.compact_edge_ids_(a["src"], a["dst"], a["max_id"])
    raise AssertionError(op)


def _check_result(op, a, got):
    want = _validate_and_reference(op, a)  # raises Invalid: the op accepted malformed arguments
    if op == "csr_transpose":
        crow, col, in_f = a["crow"], a["col"], a["in"]
        t_crow, t_col, perm = got
        rows = ref._row_indices(crow, col.numel())
        assert t_crow.tolist() == [0] + np.cumsum(np.bincount(col.numpy(), minlength=in_f)).tolist()
        assert sorted(perm.tolist()) == list(range(col.numel()))
        assert torch.equal(col[perm], torch.repeat_interleave(torch.arange(in_f), t_crow.diff()))
        assert torch.equal(rows[perm], t_col)
    elif op == "csr_linear_backward":
        for name, g_, w, need in zip(("dx", "dvalues", "dbias"), got, want, a["need"]):
            if need:
                _close(g_, w, name)
            else:
                assert g_.numel() == 0, name
    elif op == "compact_edge_ids_":
        node_ids, s, d = want
        assert torch.equal(got, node_ids) and torch.equal(a["src"], s) and torch.equal(a["dst"], d)
    else:
        _close(got, want, op)


def _draw_ingest_op_args(draw, op):
    """Direct (possibly malformed) arguments of parse_edge_chunk(_into)."""
    text = draw(st.binary(max_size=40)) if draw(st.booleans()) else b"1 2\n3 4\n"
    buf = torch.frombuffer(bytearray(text), dtype=torch.uint8) if text else torch.empty(0, dtype=torch.uint8)
    how = draw(st.sampled_from(["none", "int8", "float", "2d", "noncontig", "ncols"]))
    if how == "int8":
        buf = buf.view(torch.int8)
    elif how == "float":
        buf = buf.float()
    elif how == "2d":
        buf = buf.reshape(1, -1)
    elif how == "noncontig":
        buf = _noncontig(buf)
    ncols = draw(st.sampled_from([0, 2, 3])) if how != "ncols" else draw(st.integers(-2**63, 2**63 - 1))
    args = [buf, ncols]
    if op == "parse_edge_chunk_into":
        n = draw(st.integers(0, 12))
        idt = draw(st.sampled_from([torch.int32, torch.int64, torch.int16, torch.float32]))
        src = torch.zeros(n, dtype=idt)
        dst = torch.zeros(draw(st.sampled_from([n, n, max(n - 1, 0), n + 1])), dtype=draw(st.sampled_from([idt, torch.int64])))
        t = torch.zeros(draw(st.integers(0, 12)), dtype=draw(st.sampled_from([torch.int64, torch.int64, torch.int32])))
        if draw(st.booleans()):
            src = _noncontig(src)
        offset = draw(st.one_of(st.integers(-3, 14), st.sampled_from([-2**63, 2**63 - 1])))
        args += [src, dst, t, offset]
    return args, how


@FUZZ_SETTINGS
@given(data=st.data())
def test_fuzz_ops_direct(data):
    """Every CPU op, called directly with valid or malformed arguments: returns a correct result
    for valid ones, raises (never crashes, never returns garbage) for malformed ones."""
    require_extension()
    draw = data.draw
    _record("ops_direct")
    os.environ["GNNSPARSE_CPU_ISA"] = draw(st.sampled_from(ISAS))
    op = draw(st.sampled_from(OPS))
    if op in ("parse_edge_chunk", "parse_edge_chunk_into"):
        args, how = _draw_ingest_op_args(draw, op)
        try:
            res = getattr(torch.ops.gnnsparse, op)(*args)
        except REFUSALS:
            return
        buf = args[0]
        assert buf.dtype == torch.uint8 and buf.dim() == 1 and buf.is_contiguous() and args[1] in (0, 2, 3), (
            f"{op} accepted a malformed call ({how}): {buf.dtype} {tuple(buf.shape)} ncols={args[1]}")
        if op == "parse_edge_chunk_into":
            src, dst, t, off = args[2:]
            assert src.dtype == dst.dtype and src.dtype in (torch.int32, torch.int64) and t.dtype == torch.int64
            assert src.is_contiguous() and 0 <= off <= src.numel() == dst.numel(), (src.shape, dst.shape, off)
            k, rows = res[0], res[1]
            if k > 0:
                assert off + rows <= src.numel() and (k == 2 or off + rows <= t.numel())
        return
    if op == "compact_edge_ids_":
        n_s, n_d = draw(st.integers(0, 30)), draw(st.integers(0, 30))
        max_id = draw(st.one_of(st.integers(0, 200), st.integers(0, 2**20),
                                st.sampled_from([-1, 2**31, 2**63 - 1, -2**63])))
        hi = max(min(max_id, 2**31 - 1), 0)
        s = np.array([draw(st.integers(0, hi)) for _ in range(n_s)], dtype=np.int64)
        d = np.array([draw(st.integers(0, hi)) for _ in range(n_d)], dtype=np.int64)
        if draw(st.booleans()) and n_s:  # an id outside 0..max_id (negative or too big)
            s[draw(st.integers(0, n_s - 1))] = draw(st.sampled_from([-1, hi + 1, -2**31, 2**31 - 1]))
        s32, d32 = torch.from_numpy(s.astype(np.int32)), torch.from_numpy(d.astype(np.int32))
        how = draw(st.sampled_from(["none", "none", "int64", "int16", "noncontig", "2d"]))
        if how == "int64":
            s32 = s32.long()
        elif how == "int16":
            d32 = d32.to(torch.int16)
        elif how == "noncontig":
            s32 = _noncontig(s32)
        elif how == "2d":
            d32 = d32.reshape(1, -1)
        a = {"src": s32, "dst": d32, "max_id": max_id, "src_before": s.astype(np.int32).astype(np.int64),
             "dst_before": d.astype(np.int32).astype(np.int64)}
        try:
            got = _call(op, a)
        except REFUSALS:
            with pytest.raises(Invalid):
                _validate_and_reference(op, a)
            return
        _check_result(op, a, got)
        return
    a = _draw_problem(draw, op)
    mutated = draw(st.integers(0, 2)) > 0  # two thirds of the inputs are malformed
    if mutated:
        names = {"csr_linear": ["crow", "col", "values", "x", "bias", "out", "t"],
                 "csr_transpose": ["crow", "col", "in"],
                 "csr_linear_backward_input": ["crow", "col", "values", "grad_out", "in"],
                 "csr_linear_backward": ["crow", "col", "values", "x", "grad_out", "t"],
                 "csr_sddmm": ["crow", "col", "x", "grad_out"],
                 "bias_grad": ["grad_out"],
                 "bsr_linear": ["crow", "col", "values", "x", "bias", "out"],
                 "bsr_linear_backward_input": ["crow", "col", "values", "grad_out", "in"],
                 "bsr_sddmm": ["crow", "col", "x", "grad_out", "b"]}[op]
        name = draw(st.sampled_from(names))
        if name in ("crow", "col"):
            bound = a["in"] if name == "col" else a["col"].numel()
            if op.startswith("bsr"):
                bound = a["in"] // a["b"] if name == "col" else bound
            a[name] = _mutate_index(a[name], draw(st.sampled_from(INDEX_MUTATIONS)), bound, draw)
        elif name in ("values", "x", "grad_out", "bias"):
            if a[name] is None:
                a[name] = _floats(draw, (draw(st.integers(0, 5)),), torch.float32)
            else:
                a[name] = _mutate_float(a[name], draw(st.sampled_from(FLOAT_MUTATIONS)), draw)
        elif name in ("out", "in", "b"):
            a[name] = _mutate_size(a[name], draw(st.sampled_from(SIZE_MUTATIONS)), draw)
        elif name == "t":
            if a["t"] is None:
                a["t"] = list(torch.ops.gnnsparse.csr_transpose(a["crow"], a["col"], a["in"]))
            i = draw(st.integers(0, 2))
            a["t"][i] = _mutate_index(a["t"][i], draw(st.sampled_from(INDEX_MUTATIONS)), a["col"].numel(), draw)
    try:
        got = _call(op, a)
    except REFUSALS as exc:
        if not mutated:
            raise AssertionError(f"{op} refused a valid input: {exc}") from exc
        return
    try:
        _check_result(op, a, got)
    except Invalid as why:
        raise AssertionError(f"{op} accepted malformed arguments ({why}) and returned a result") from None


# ---------------------------------------------------------------------------------------------
# target (b): the edge-list loader
# ---------------------------------------------------------------------------------------------

_WS = b" \t\v\f\r"
_INT = re.compile(rb"[+-]?[0-9]+")


def fast_grammar_reference(data: bytes, ncols: int):
    """Python model of the C++ chunk parser's accepted grammar (csrc/io/edge_list.cpp).

    Returns ``None`` where the C++ parser must fall back, else ``(src, dst, t, k, lines, first)``.
    """
    k, rows, first = ncols, [], -1
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        s = line.lstrip(_WS)
        if not s:
            continue
        if s[:1] == b"#":
            if b"\0" in s:
                return None
            continue
        toks = s.split()  # bytes.split: the same whitespace set plus \n (not present here)
        if any(not t.isdigit() or len(t) > 18 for t in toks):
            return None
        if k == 0:
            if len(toks) not in (2, 3):
                return None
            k = len(toks)
        elif len(toks) != k:
            return None
        if first < 0:
            first = i
        rows.append([int(t) for t in toks])
    return rows, k, data.count(b"\n"), first


def _check_chunk_parser(data: bytes, ncols: int, into_dtype, capacity: int, offset: int):
    want = fast_grammar_reference(data, ncols)
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
    src, dst, t, k, lines, first = torch.ops.gnnsparse.parse_edge_chunk(buf, ncols)
    if want is None:
        assert k == -1, (data, ncols)  # fall back (the other outputs are documented as meaningless)
    else:
        assert lines == data.count(b"\n")
        rows, wk, _, wfirst = want
        assert (k, first) == (wk, wfirst), (data, ncols)
        arr = np.array(rows, dtype=np.uint64).reshape(-1, max(wk, 2)) if rows else np.zeros((0, max(wk, 2)), np.uint64)
        for j, col in enumerate((src, dst)):
            exp = arr[:, j].astype(np.int64)
            assert col.dtype == (torch.int32 if (exp.size == 0 or exp.max() < 2**31) else torch.int64)
            np.testing.assert_array_equal(col.numpy(), exp)
        if wk == 3:
            np.testing.assert_array_equal(t.numpy(), arr[:, 2].astype(np.int64))
        else:
            assert t.numel() == 0
    # the in-place variant, with growth and widening as gnnsparse.data.ingest._Columns does it
    offset = min(offset, capacity)
    s_arr = torch.zeros(capacity, dtype=into_dtype)
    d_arr = torch.zeros(capacity, dtype=into_dtype)
    t_arr = torch.zeros(capacity, dtype=torch.int64)
    for _ in range(4):
        k2, rows2, lines2, first2 = torch.ops.gnnsparse.parse_edge_chunk_into(buf, ncols, s_arr, d_arr, t_arr, offset)
        assert lines2 == data.count(b"\n")
        if k2 == -3:
            assert rows2 > s_arr.numel() - offset or rows2 > t_arr.numel() - offset
            s_arr, d_arr = (torch.cat([x, torch.zeros(rows2 - x.numel(), dtype=x.dtype)]) for x in (s_arr, d_arr))
            t_arr = torch.cat([t_arr, torch.zeros(max(rows2 - t_arr.numel(), 0), dtype=torch.int64)])
        elif k2 == -2:
            assert s_arr.dtype == torch.int32
            s_arr, d_arr = s_arr.long(), d_arr.long()
        else:
            break
    if want is None:
        assert k2 == -1
        return
    rows, wk, _, wfirst = want
    assert (k2, rows2, first2) == (wk, len(rows), wfirst)
    if rows:
        arr = np.array(rows, dtype=np.uint64).astype(np.int64)
        np.testing.assert_array_equal(s_arr[offset:offset + len(rows)].numpy(), arr[:, 0])
        np.testing.assert_array_equal(d_arr[offset:offset + len(rows)].numpy(), arr[:, 1])
        if wk == 3:
            np.testing.assert_array_equal(t_arr[offset:offset + len(rows)].numpy(), arr[:, 2])


def loader_reference(data: bytes):
    """Line-by-line reference of ``read_snap_edges`` / ``load_edge_list``.

    Returns ``("ok", src, dst, t)`` (raw ids; ``t`` None for 2 columns), ``("empty",)`` for a file
    without data lines, or ``("bad", lines)``: the set of 1-based line numbers that are malformed
    (any of them may be the one reported).
    """
    lines = data.split(b"\n")
    if lines and lines[-1] == b"" and data:
        lines = lines[:-1]
    bad, rows, k = set(), [], None
    first_data = None
    parsed = []
    for i, line in enumerate(lines, 1):
        s = line.lstrip(b" \t\n\v\f\r")
        comment = s[:1] == b"#"
        if b"\0" in line:
            bad.add(i)
        else:
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                if not comment:
                    bad.add(i)
        toks = line.split()
        if comment or not toks:
            continue
        if k is None:
            k, first_data = len(toks), i
            if k not in (2, 3):  # refused at once; only text errors (checked first) compete
                bad.add(i)
        if k not in (2, 3):
            continue
        if len(toks) != k:
            bad.add(i)
            continue
        vals = []
        for j, tok in enumerate(toks):
            if not _INT.fullmatch(tok) or len(tok.lstrip(b"+-")) > 19 or not -(2**63) <= int(tok) < 2**63:
                bad.add(i)
                break
            if j < 2 and int(tok) < 0:
                bad.add(i)
                break
            vals.append(int(tok))
        else:
            parsed.append(vals)
    if bad:
        return ("bad", bad)
    if first_data is None:
        return ("empty",)
    arr = np.array(parsed, dtype=np.int64).reshape(-1, k)
    return ("ok", arr[:, 0], arr[:, 1], arr[:, 2] if k == 3 else None)


_LINE_RE = re.compile(r": line (\d+): ")


def _check_loader(path: Path, data: bytes, chunk_bytes: int):
    path.write_bytes(data)
    want = loader_reference(data)
    special = data[:2] == b"\x1f\x8b" or data[:4] in (b"PK\x03\x04", b"PK\x05\x06")  # gzip / zip magic
    for name, load in (("load_edge_list", lambda: ingest.load_edge_list(path, cache=False, chunk_bytes=chunk_bytes)),
                       ("read_snap_edges", lambda: read_snap_edges(path))):
        try:
            g = load()
        except DataError as exc:
            msg = str(exc)
            assert msg.startswith(str(path)), (name, msg)
            if special:
                continue
            if want[0] == "empty":
                assert "no data lines" in msg, (name, msg, data)
                continue
            assert want[0] == "bad", (name, msg, data)
            m = _LINE_RE.search(msg)
            assert m and int(m.group(1)) in want[1], (name, msg, sorted(want[1]), data)
            continue
        assert not special or want[0] == "ok", (name, data)
        assert want[0] == "ok", (name, want, data)
        _, s, d, t = want
        node_ids = np.unique(np.concatenate([s, d]))
        np.testing.assert_array_equal(g.node_ids, node_ids)
        np.testing.assert_array_equal(np.asarray(g.src), np.searchsorted(node_ids, s))
        np.testing.assert_array_equal(np.asarray(g.dst), np.searchsorted(node_ids, d))
        if t is None:
            assert g.t is None, name
        else:
            np.testing.assert_array_equal(np.asarray(g.t), t)


_TOKENS = st.one_of(
    st.integers(0, 2**31 + 5).map(lambda v: str(v).encode()),
    st.integers(0, 10**18 - 1).map(lambda v: str(v).encode()),
    st.integers(-2**63 - 2, 2**63 + 2).map(lambda v: str(v).encode()),
    st.sampled_from([b"007", b"+5", b"-0", b"-1", b"9" * 18, b"9" * 19, b"9" * 25, b"9223372036854775807",
                     b"9223372036854775808", b"1_0", b"0x1f", b"1.5", b"1e3", b"\xc3\xa9", b"\xff", b"\x00",
                     b"#", b"12#", b"\xef\xbb\xbf1", b"\xd9\xa1", b"nan", b""]),
)
_SEPS = st.sampled_from([b" ", b"\t", b"  ", b" \t ", b"\v", b"\f", b"\r", b"\xa0", b","])
_ENDS = st.sampled_from([b"\n", b"\n", b"\r\n", b" \n", b"\t\r\n"])


@st.composite
def _edge_line(draw, k):
    ntok = k if draw(st.integers(0, 9)) else draw(st.integers(0, 5))
    toks = [draw(_TOKENS) if draw(st.integers(0, 5)) == 0 else str(draw(st.integers(0, 3000))).encode()
            for _ in range(ntok)]
    sep = draw(_SEPS) if draw(st.integers(0, 7)) == 0 else b" "
    lead = draw(st.sampled_from([b"", b"", b" ", b"\t"]))
    return lead + sep.join(toks)


@st.composite
def _edge_text(draw):
    kind = draw(st.integers(0, 9))
    if kind == 0:  # binary junk
        return draw(st.binary(max_size=200))
    k = draw(st.sampled_from([2, 3]))
    parts = []
    for _ in range(draw(st.integers(0, 25))):
        r = draw(st.integers(0, 12))
        if r == 0:
            line = b"#" + draw(st.binary(max_size=20)).replace(b"\n", b" ")
        elif r == 1:
            line = draw(st.sampled_from([b"", b"   ", b"\t", b"\r"]))
        else:
            line = draw(_edge_line(k))
        parts.append(line + draw(_ENDS))
    text = b"".join(parts)
    if text and draw(st.integers(0, 3)) == 0:  # truncate (a last line without '\n', or mid-token)
        text = text[: draw(st.integers(0, len(text)))]
    if text and draw(st.integers(0, 3)) == 0:  # mutate bytes
        b = bytearray(text)
        for _ in range(draw(st.integers(1, 4))):
            b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        text = bytes(b)
    return text


@FUZZ_SETTINGS
@given(data=st.data())
def test_fuzz_edge_list_loader(data, tmp_path_factory):
    """The edge-list loader on random/mutated text: parsed output equals the Python reference, or
    a DataError names a line the reference also finds malformed; the C++ chunk parser accepts
    exactly its fast grammar and reproduces it."""
    require_extension()
    _record("edge_list_loader")
    text = data.draw(_edge_text())
    _check_chunk_parser(text, data.draw(st.sampled_from([0, 0, 2, 3])),
                        data.draw(st.sampled_from([torch.int32, torch.int64])),
                        data.draw(st.integers(0, 40)), data.draw(st.integers(0, 3)))
    _check_loader(_tmp_folder(tmp_path_factory) / "edges.txt", text, data.draw(st.sampled_from([1, 7, 64, 4096])))


_TMP: dict = {}


def _tmp_folder(factory) -> Path:
    """One temporary folder for the whole run (hypothesis calls the test many times)."""
    if "dir" not in _TMP:
        _TMP["dir"] = factory.mktemp("fuzz")
    return _TMP["dir"]


def test_fuzz_references_are_not_vacuous():
    """The Python references used by the fuzzers judge known inputs correctly (a reference that
    accepted everything, or nothing, would make the fuzz targets unable to fail)."""
    assert fast_grammar_reference(b"# c\n1 2\n\n3 4", 0) == ([[1, 2], [3, 4]], 2, 3, 1)
    for bad in (b"1 -2\n", b"+1 2\n", b"1 2 3 4\n", b"1 2\n3 4 5\n", b"1 2 # c\n", b"# c\x00\n",
                b"1 " + b"9" * 19 + b"\n", b"1 2 3\n"):
        assert fast_grammar_reference(bad, 0 if bad != b"1 2 3\n" else 2) is None, bad
    assert loader_reference(b"5 7 -3\n#\xff\n") [0] == "ok"
    assert loader_reference(b"1 2\n3 -4\n\xff 1\n") == ("bad", {2, 3})
    assert loader_reference(b"1 2 3 4\n") == ("bad", {1})
    assert loader_reference(b"# only\n\n") == ("empty",)
    with pytest.raises(Invalid):
        _validate_and_reference("csr_linear", {"x": torch.zeros(2, 3), "crow": torch.tensor([0, 1]),
                                               "col": torch.tensor([3]), "values": torch.ones(1),
                                               "bias": None, "out": 1, "t": None})


# ---------------------------------------------------------------------------------------------
# regressions: what the sanitizers found (each was a UBSan "signed integer overflow" abort in the
# sanitized run; the ordinary build, compiled with -fwrapv, happened to raise)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("huge", [2**63 - 1, 2**62])
def test_regression_huge_size_claims_raise(huge):
    """out_features / in_features = INT64_MAX overflowed ``rows + 1`` in check_csr (csr_linear,
    bsr_linear, ...), ``in_features + 1`` in csr_transpose, and ``cols + 1`` in the transposed-cache
    check for an x of shape [0, INT64_MAX]."""
    require_extension()
    g = torch.ops.gnnsparse
    crow, col, v, x = torch.tensor([0, 1]), torch.tensor([0]), torch.ones(1), torch.ones(2, 3)
    with pytest.raises(RuntimeError, match=r"crow_indices to have shape \[out_features \+ 1\] = \[%d\]" % (huge + 1)):
        g.csr_linear(x, crow, col, v, None, huge)
    with pytest.raises(RuntimeError, match=r"out_features / blocksize \+ 1\] = \[%d\]" % (huge + 1)):
        g.bsr_linear(x, crow, col, torch.ones(1, 1, 1), None, huge)
    with pytest.raises(RuntimeError):  # too large (INT64_MAX) or too large to allocate
        g.csr_transpose(crow, col, huge)
    t = g.csr_transpose(crow, col, 3)
    empty = torch.empty(0, huge)
    with pytest.raises(RuntimeError, match="out of range|transposed structure"):
        g.csr_linear(empty, crow, col, v, None, 1, *t)
    with pytest.raises(RuntimeError, match="out of range|transposed structure"):
        g.csr_linear_backward(torch.ones(0, 1), empty, crow, col, v, *t, True, True, True)
