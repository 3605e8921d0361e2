"""Vectorized readers for SNAP and Network Repository graph files.

All readers decompress the whole file (``.gz`` is detected by its magic
bytes), locate tokens and line breaks with numpy on the raw bytes, and parse
the tokens column by column with ``np.array(tokens, dtype=np.int64)``; no
Python loop runs per line except in the error path, which scans tokens one by
one only to name the offending line.

Formats
-------
SNAP edge list
    ``src dst`` or ``src dst t`` per line, whitespace separated, ``#`` comment
    lines allowed anywhere (a comment line is one whose first non-blank
    character is ``#``).  Blank lines are skipped.
Network Repository ``.edges``
    ``%`` comment lines, then 2 to 4 columns: ``src dst``, ``src dst weight``,
    ``src dst weight time``.  In signed files (``soc-wiki-elec``) the third
    column is a sign (+1/-1) instead of a weight.  The weight column may hold
    non-integer numbers (kept as float64); every other column must be integer.
SNAP labels
    ``node label`` per line (``email-Eu-core-department-labels``).

Every data line of a file must have the same number of columns.  Node ids
(and labels) must be non-negative integers.  Integers are plain decimal
(``[+-]?[0-9]+``; ``1_0`` is refused) within int64.  Files must be regular
files holding ASCII/UTF-8 text (NUL bytes, UTF-16 and undecodable bytes
outside comment lines are refused); a corrupt or truncated ``.gz`` is
refused as such. A ``.zip`` archive holding exactly one ``.edges``/``.txt`` member (as Network
Repository distributes ``ia-enron-email-dynamic``) is read as that member.  Violations raise
:class:`~gnnsparse.data.errors.DataError` naming the file and the 1-based line
number; a file without any data line raises ``DataError`` naming the file.
"""

from __future__ import annotations

import contextlib

import gzip
import os
import re
import stat
import zipfile
import zlib
from itertools import compress
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from .errors import DataError

__all__ = [
    "TemporalEdges",
    "IntTable",
    "read_table",
    "read_snap_edges",
    "read_network_repository_edges",
    "read_snap_labels",
    "read_edges",
    "compact_ids",
    "check_regular_file",
]

PathLike = Union[str, os.PathLike]

# Bytes that bytes.split() treats as whitespace: space \t \n \v \f \r.
_BLANK = np.zeros(256, dtype=bool)
_BLANK[[9, 10, 11, 12, 13, 32]] = True


# --------------------------------------------------------------------------
# raw table parsing
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class IntTable:
    """Columns parsed from a whitespace separated numeric text file.

    ``columns[j]`` is int64 (float64 only for a column listed in
    ``float_ok`` that holds non-integer numbers); ``line_numbers`` gives the
    1-based line of each row in the file.
    """

    columns: tuple
    line_numbers: np.ndarray
    path: Path

    @property
    def num_columns(self) -> int:
        return len(self.columns)

    @property
    def num_rows(self) -> int:
        return int(self.line_numbers.shape[0])


def _oneline(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def check_regular_file(path: Path, kind: str = "a data file") -> None:
    """Raise :class:`DataError` unless ``path`` is an existing regular file.

    ``kind`` names what was expected (``"an edge file"``, ``"a label file"``);
    a directory, FIFO or device is refused before it is opened (reading a
    FIFO or ``/dev/zero`` would hang).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read file ({_oneline(exc)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{path} is a directory, not {kind}")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path} is not a regular file (expected {kind})")


def _read_zip_member(path: Path, fh) -> bytes:
    """The one data member of a zip archive (Network Repository ships ``.edges`` files zipped)."""
    try:
        with zipfile.ZipFile(fh) as zf:
            members = [i for i in zf.infolist() if not i.is_dir()]
            data = [i for i in members if i.filename.lower().endswith((".edges", ".txt", ".csv", ".tsv"))]
            if len(data) != 1:
                names = ", ".join(i.filename for i in members) or "none"
                raise DataError(f"{path}: expected exactly one .edges/.txt member in the zip archive, found: {names}")
            return zf.read(data[0])
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a valid zip file (corrupt or truncated: {_oneline(exc)})") from None
    except (RuntimeError, NotImplementedError) as exc:  # encrypted member, unsupported compression
        raise DataError(f"{path}: cannot read the zip member ({_oneline(exc)})") from None


def _read_bytes(path: Path, kind: str = "a data file") -> bytes:
    check_regular_file(path, kind)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
            fh.seek(0)
            if head in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip archive (the second: empty)
                return _read_zip_member(path, fh)
            if path.name.lower().endswith(".zip"):  # named as an archive but not one: say so
                raise DataError(f"{path}: not a valid zip file (no zip signature at the start; "
                                f"first bytes {head!r})")
            if head[:2] == b"\x1f\x8b":
                try:
                    with gzip.open(fh) as gz:
                        return gz.read()
                except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                    raise DataError(
                        f"{path}: not a valid gzip file (corrupt or truncated gzip data: {_oneline(exc)})"
                    ) from None
            return fh.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:  # permission, I/O error, ...
        raise DataError(f"{path}: cannot read file ({_oneline(exc)})") from None


def _check_text(data: bytes, arr: np.ndarray, newlines: np.ndarray, path: Path,
                comment: bytes, kind: str, line0: int = 0) -> None:
    """Refuse binary / non-UTF-8 input (UTF-16, compressed, ...), naming the line
    (``line0``: lines of the file before ``data``, for chunked readers).

    Fast path: no NUL byte and the bytes are ASCII or valid UTF-8.  Otherwise
    (error path) the first offending line is located: a NUL byte anywhere, or
    bytes that do not decode as UTF-8 outside comment lines (a Latin-1 comment
    is tolerated).
    """
    nul = data.find(b"\x00")
    if nul < 0 and data.isascii():
        return
    bad_line, what = None, ""
    if nul >= 0:
        bad_line, what = int(np.searchsorted(newlines, nul)), "NUL byte"
    try:
        data.decode("utf-8")
        utf8_ok = True
    except UnicodeDecodeError:
        utf8_ok = False
    if not utf8_ok:
        lines = np.unique(np.searchsorted(newlines, np.flatnonzero(arr >= 0x80)))
        if bad_line is not None:
            lines = lines[lines < bad_line]
        for ln in lines.tolist():
            lo = int(newlines[ln - 1]) + 1 if ln > 0 else 0
            hi = int(newlines[ln]) if ln < newlines.size else len(data)
            line = data[lo:hi]
            try:
                line.decode("utf-8")
                continue
            except UnicodeDecodeError as exc:
                stripped = line.lstrip(b" \t\n\v\f\r")
                if stripped and stripped[0] in comment:
                    continue
                bad_line, what = ln, f"undecodable byte 0x{line[exc.start]:02x}"
                break
    if bad_line is not None:
        noun = kind.split(" ", 1)[-1]
        raise DataError(f"{path}: line {line0 + bad_line + 1}: {what}; not a UTF-8/ASCII text {noun}")


def _first_bad_token(tokens: Sequence[bytes], parse) -> int:
    """Index of the first token ``parse`` rejects (error path only)."""
    for i, tok in enumerate(tokens):
        try:
            parse(tok)
        except (ValueError, OverflowError):
            return i
    return -1


def _parse_int(tok: bytes) -> int:
    if not _INT_RE.fullmatch(tok):  # int() would also take "1_0"
        raise ValueError(tok)
    v = int(tok)
    if not -(2**63) <= v < 2**63:
        raise OverflowError(tok)
    return v


_INT_RE = re.compile(rb"[+-]?[0-9]+")


def read_table(
    path: PathLike,
    *,
    comment: bytes = b"#",
    ncols: Sequence[int] = (2, 3),
    float_ok: Sequence[int] = (),
    nonneg: Sequence[int] = (0, 1),
    kind: str = "a data file",
) -> IntTable:
    """Parse a whitespace separated numeric table, vectorized.

    Parameters
    ----------
    comment:
        Characters that start a comment line (as first non-blank character).
    ncols:
        Allowed column counts; the first data line fixes the count for the
        whole file.
    float_ok:
        Columns that may hold non-integer numbers (parsed as float64 then).
    nonneg:
        Columns that must be non-negative (node ids, labels).
    kind:
        What the file should be, for messages (``"an edge file"``).

    Integers are plain decimal (``[+-]?[0-9]+``, no ``_`` separators) within
    int64; the file must be ASCII/UTF-8 text (no NUL bytes).
    """
    path = Path(path)
    data = _read_bytes(path, kind)
    arr = np.frombuffer(data, dtype=np.uint8)
    if arr.size == 0:
        raise DataError(f"{path}: empty file (no data lines)")
    newlines = np.flatnonzero(arr == 10)
    _check_text(data, arr, newlines, path, comment, kind)

    # Token starts: a non-blank byte preceded by a blank (or at offset 0).
    # "Blank" is exactly what bytes.split() splits on, so the i-th token of
    # data.split() starts at tok_pos[i].
    blank = _BLANK[arr]
    start = np.empty(arr.shape, dtype=bool)
    start[0] = not blank[0]
    np.greater(blank[:-1], blank[1:], out=start[1:])
    tok_pos = np.flatnonzero(start)
    tok_line = np.searchsorted(newlines, tok_pos)  # 0-based line of token
    n_lines = newlines.size + 1
    tokens = data.split()
    assert len(tokens) == tok_pos.size, "token bookkeeping mismatch"
    # Tokens holding "_" (Python's int()/float() would accept "1_0" as 10).
    tok_underscore = None
    if b"_" in data:
        tok_underscore = np.zeros(tok_pos.size, dtype=bool)
        tok_underscore[np.searchsorted(tok_pos, np.flatnonzero(arr == 95), side="right") - 1] = True

    # Comment lines: first token of the line starts with a comment character.
    if tok_pos.size and any(c in data for c in comment):
        first = np.empty(tok_pos.shape, dtype=bool)
        first[0] = True
        np.not_equal(tok_line[1:], tok_line[:-1], out=first[1:])
        lead = arr[tok_pos[first]]
        is_comment_first = np.isin(lead, np.frombuffer(comment, dtype=np.uint8))
        if is_comment_first.any():
            line_is_comment = np.zeros(n_lines, dtype=bool)
            line_is_comment[tok_line[first][is_comment_first]] = True
            keep_tok = ~line_is_comment[tok_line]
            tokens = list(compress(tokens, keep_tok.tolist()))
            tok_line = tok_line[keep_tok]
            if tok_underscore is not None:
                tok_underscore = tok_underscore[keep_tok]

    if tok_line.size == 0:
        raise DataError(f"{path}: empty file (no data lines)")

    # Column count check, per line, vectorized.
    counts = np.bincount(tok_line, minlength=n_lines)
    data_lines = np.flatnonzero(counts)
    line_counts = counts[data_lines]
    k = int(line_counts[0])
    if k not in ncols:
        allowed = " or ".join(str(c) for c in ncols)
        raise DataError(
            f"{path}: line {data_lines[0] + 1}: expected {allowed} columns, got {k}"
        )
    bad = np.flatnonzero(line_counts != k)
    if bad.size:
        ln = data_lines[bad[0]]
        raise DataError(
            f"{path}: line {ln + 1}: expected {k} columns "
            f"(as on line {data_lines[0] + 1}), got {int(counts[ln])}"
        )

    line_numbers = data_lines.astype(np.int64) + 1

    columns = []
    errors = []  # (row, message)
    for j in range(k):
        col_tokens = tokens[j::k]
        if tok_underscore is not None:
            under = tok_underscore[j::k]
            if under.any():
                row = int(np.argmax(under))
                noun = "a number" if j in float_ok else "an integer"
                errors.append((row, f"not {noun}: {_tok(col_tokens[row])} ('_' separators are not allowed)"))
        col, err = _parse_column(col_tokens, allow_float=j in float_ok)
        if err is not None:
            errors.append(err)
            columns.append(None)
            continue
        if j in nonneg:
            neg = col < 0
            if neg.any():
                row = int(np.argmax(neg))
                errors.append((row, f"negative value {_tok(col_tokens[row])} in column {j + 1}"))
        columns.append(col)
    if errors:
        row, msg = min(errors, key=lambda e: e[0])
        raise DataError(f"{path}: line {int(line_numbers[row])}: {msg}")
    return IntTable(columns=tuple(columns), line_numbers=line_numbers, path=path)


_BOM = b"\xef\xbb\xbf"


def _tok(tok: bytes) -> str:
    """The token for a message, quoted; long tokens are shortened. A token that starts with a UTF-8
    byte-order mark (files saved by some Windows editors) says so: its bytes alone are cryptic."""
    hint = " (the file starts with a UTF-8 byte-order mark, BOM: save it as plain UTF-8/ASCII)" \
        if tok.startswith(_BOM) else ""
    if len(tok) > 40:
        return repr(tok[:30].decode("ascii", "backslashreplace")) + f"... ({len(tok)} characters){hint}"
    return repr(tok.decode("ascii", "backslashreplace")) + hint


def _parse_column(col_tokens, allow_float: bool):
    """Parse one column; returns ``(array, None)`` or ``(None, (row, msg))``."""
    with contextlib.suppress(ValueError, OverflowError):  # not all int64: diagnose below
        return np.array(col_tokens, dtype=np.int64), None
    if allow_float:
        try:
            col = np.array(col_tokens, dtype=np.float64)
        except ValueError:
            row = _first_bad_token(col_tokens, float)
            return None, (row, f"not a number: {_tok(col_tokens[row])}")
        finite = np.isfinite(col)
        if not finite.all():
            row = int(np.argmin(finite))
            return None, (row, f"not a finite number: {_tok(col_tokens[row])}")
        return col, None
    row = max(_first_bad_token(col_tokens, _parse_int), 0)
    tok = col_tokens[row]
    if _INT_RE.fullmatch(tok):
        return None, (row, f"integer {_tok(tok)} is out of the int64 range")
    return None, (row, f"not an integer: {_tok(tok)}")


# --------------------------------------------------------------------------
# edge lists
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TemporalEdges:
    """A (possibly timestamped) edge list with compacted node ids.

    ``src``/``dst`` are int64 arrays of compacted ids ``0..num_nodes-1`` (the
    inverse of ``np.unique`` over all ids in the file), ``node_ids[i]`` is the
    original id of compacted node ``i``.  Rows keep file order.  ``t`` holds
    timestamps (int64) or ``None``; ``weight`` (int64 or float64) and ``sign``
    (int64, +1/-1) hold the optional value column (at most one is set).
    """

    src: np.ndarray
    dst: np.ndarray
    t: Optional[np.ndarray]
    weight: Optional[np.ndarray]
    sign: Optional[np.ndarray]
    node_ids: np.ndarray
    path: Path
    line_numbers: Optional[np.ndarray] = None

    @property
    def num_nodes(self) -> int:
        return int(self.node_ids.shape[0])

    @property
    def num_lines(self) -> int:
        """Number of data lines (edges, self-loops and repeats included)."""
        return int(self.src.shape[0])

    def __len__(self) -> int:
        return self.num_lines

    @property
    def values(self) -> Optional[np.ndarray]:
        """The sign or weight column, whichever the file has (else None)."""
        return self.sign if self.sign is not None else self.weight

    def self_loop_count(self) -> int:
        return int(np.count_nonzero(self.src == self.dst))

    def distinct_directed_pairs(self) -> int:
        """Distinct ordered ``(src, dst)`` pairs, self-loops included."""
        codes = self.src * np.int64(self.num_nodes) + self.dst
        return int(np.unique(codes).size)

    def is_time_sorted(self) -> Optional[bool]:
        """Whether the rows are stored in non-decreasing time (None: no time)."""
        if self.t is None:
            return None
        return bool(np.all(self.t[1:] >= self.t[:-1]))

    def original_src(self) -> np.ndarray:
        return self.node_ids[self.src]

    def original_dst(self) -> np.ndarray:
        return self.node_ids[self.dst]


def compact_ids(src: np.ndarray, dst: np.ndarray):
    """Map ids to ``0..n-1``; returns ``(src, dst, node_ids)``."""
    m = src.shape[0]
    node_ids, inv = np.unique(np.concatenate((src, dst)), return_inverse=True)
    inv = inv.reshape(-1).astype(np.int64, copy=False)
    return inv[:m], inv[m:], node_ids.astype(np.int64, copy=False)


def _edges_from_columns(table: IntTable, *, t, weight, sign) -> TemporalEdges:
    src, dst, node_ids = compact_ids(table.columns[0], table.columns[1])
    return TemporalEdges(
        src=src, dst=dst, t=t, weight=weight, sign=sign, node_ids=node_ids,
        path=table.path, line_numbers=table.line_numbers,
    )


def read_snap_edges(path: PathLike) -> TemporalEdges:
    """Read a SNAP edge list ``src dst [t]`` (plain or gzip, ``#`` comments)."""
    table = read_table(path, comment=b"#", ncols=(2, 3), kind="an edge file")
    t = table.columns[2] if table.num_columns == 3 else None
    return _edges_from_columns(table, t=t, weight=None, sign=None)


def read_network_repository_edges(path: PathLike, value: str = "auto") -> TemporalEdges:
    """Read a Network Repository ``.edges`` file (``%`` comments, 2-4 columns).

    Column layouts: ``src dst``, ``src dst weight``, ``src dst weight time``.
    ``value`` says what the third column is: ``"weight"``, ``"sign"`` or
    ``"auto"`` (a sign if it holds -1 and only the values -1/+1, as in
    ``soc-wiki-elec``; otherwise a weight).  A sign column must hold only
    -1/+1.
    """
    if value not in ("auto", "weight", "sign"):
        raise ValueError(f"value must be 'auto', 'weight' or 'sign', got {value!r}")
    table = read_table(path, comment=b"%", ncols=(2, 3, 4), float_ok=(2,), kind="an edge file")
    k = table.num_columns
    third = table.columns[2] if k >= 3 else None
    t = table.columns[3] if k == 4 else None
    weight = sign = None
    if third is not None:
        is_pm1 = (third == 1) | (third == -1)
        if value == "sign" or (value == "auto" and is_pm1.all() and (third == -1).any()):
            if not is_pm1.all():
                row = int(np.argmax(~is_pm1))
                raise DataError(
                    f"{table.path}: line {int(table.line_numbers[row])}: "
                    f"sign column must be -1 or +1, got {third[row]}"
                )
            sign = third.astype(np.int64)
        else:
            weight = third
    return _edges_from_columns(table, t=t, weight=weight, sign=sign)


def read_snap_labels(path: PathLike):
    """Read SNAP node labels ``node label``; returns ``(node_ids, labels)``.

    Both are int64 arrays in file order with the original ids; ids and labels
    must be non-negative and each id may appear only once.
    """
    table = read_table(path, comment=b"#", ncols=(2,), nonneg=(0, 1), kind="a label file")
    ids, labels = table.columns
    uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][0]
        rows = np.flatnonzero(ids == dup)
        raise DataError(
            f"{table.path}: line {int(table.line_numbers[rows[1]])}: node {dup} "
            f"labelled twice (first on line {int(table.line_numbers[rows[0]])})"
        )
    return ids, labels


def read_edges(path: PathLike, value: str = "auto") -> TemporalEdges:
    """Read an edge list, format inferred from the suffix.

    ``.edges`` (optionally ``.edges.gz``) is Network Repository, anything
    else SNAP.
    """
    name = Path(path).name.lower()
    if name.endswith(".edges") or name.endswith(".edges.gz"):
        return read_network_repository_edges(path, value=value)
    return read_snap_edges(path)
